"""Evaluating one candidate: build, check its size, train, score; or, for a problem with a
tabular benchmark (:attr:`nasfw.Problem.table`), look it up. Runs inside a worker."""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nasfw.config import ConfigError, ProblemConfig, TrainConfig
from nasfw.graph import GraphError
from nasfw.problem import DataError, Problem, Table
from nasfw.records import Candidate, Result
from nasfw.registry import registry
from nasfw.weights import WeightStore, load_matching

# (epoch, validation metric) -> stop now? (nasfw.pruning.TrialReporter; see train_model)
Report = Callable[[int, float], bool]

_PROBLEMS: dict[str, Problem] = {}


def load_problem(config: ProblemConfig) -> Problem:
    """The problem ``config`` names, loaded once per process.

    A loader's ``ValueError`` (bad settings or data, in a plugin that did not raise
    :class:`nasfw.DataError` or :class:`nasfw.ConfigError` itself) becomes a ``DataError``
    whose one line names the option and the plugin that registered it.
    """
    key = _problem_key(config)
    if key not in _PROBLEMS:
        reg = registry()
        loader = reg.get("problems", config.name)
        try:
            _PROBLEMS[key] = loader(config)
        except (DataError, ConfigError):
            raise
        except ValueError as err:
            provider = reg.providers.get(("problems", config.name), "its plugin")
            reason = " ".join(str(err).split()) or "(no message)"
            raise DataError(
                f"problem={config.name}: the loader of {provider} refused the problem.* "
                f"settings or its data: {type(err).__name__}: {reason}"
            ) from err
    return _PROBLEMS[key]


def provide_problem(config: ProblemConfig, get: Callable[[], Problem]) -> None:
    """Make ``get()`` this process's loaded problem for ``config``, unless it has one already
    (``get`` is then not called): for launchers that ship the driver's loaded problem to their
    workers once per search (Ray's object store), so that a worker's :func:`load_problem`
    neither reads nor generates the data again."""
    key = _problem_key(config)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = get()


def _problem_key(config: ProblemConfig) -> str:
    # A dataclass's repr names every field's value (asdict and JSON took ~15 us, paid for
    # each evaluation, a lookup's included).
    return repr(config)


def candidate_seed(seed: int, candidate: Candidate) -> int:
    """Seed of one evaluation: depends on the search seed and the network (with its training
    overrides and initial weights), not on ordering."""
    text = f"{seed}:{candidate.graph.hash}:{json.dumps(candidate.train, sort_keys=True)}"
    if candidate.init_from is not None:
        text += f":{candidate.init_from}"
    if candidate.resume_from is not None:
        text += f":resume_from={candidate.resume_from}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass
class Evaluator:
    """Picklable ``Candidate -> Result``: what a launcher runs for each candidate.

    Any failure (a graph that cannot build, a network above ``max_params``, a diverging loss,
    missing initial weights, an exception in training) becomes ``Result.failed(reason)``;
    nothing propagates. ``weights`` is where candidates' weights are kept and found
    (``Candidate.keep_weights``, ``Candidate.init_from``); a kept network's artifact id is
    ``Result.extra["weights"]``. After training, every node module with a ``trial_facts()``
    method adds its numbers to ``Result.extra`` as ``<node>.<fact>`` (e.g. a ``scale`` op's
    learned value). With ``report`` (the search's pruner asking, :mod:`nasfw.pruning`), a
    network it stops is a ``pruned`` result with its last score.
    """

    problem: ProblemConfig
    train: TrainConfig
    seed: int
    max_params: int
    threads: int = 1
    # evaluation.* of the config: ``name`` picks the scorer ("plain" is this module's own).
    scoring: dict[str, Any] = field(default_factory=lambda: {"name": "plain"})
    weights: WeightStore | None = None

    def warm_up(self) -> None:
        """What the first evaluation in a fresh process would pay for, done ahead: import torch,
        load the problem (cached per process), and count FLOPs once (the first count imports
        much of ``torch._dynamo``, about a second). Launchers call it in their workers while
        the driver sets up the study (:meth:`nasfw.Launcher.warm_up`)."""
        if load_problem(self.problem).table is not None:
            return  # looked up: nothing to build or train
        import torch

        from nasfw.builder import model_cost

        torch.set_num_threads(max(1, self.threads))
        with torch.device("meta"):
            model_cost(torch.nn.Linear(2, 2), (2,))

    def __call__(self, candidate: Candidate, report: Report | None = None) -> Result:
        """Evaluate ``candidate``, timed by this machine's clock (``started``, ``finished``,
        ``first_step``: when its first training step began)."""
        started = time.time()
        try:
            table = load_problem(self.problem).table
        except Exception:  # the evaluation below reports it as a failed trial
            table = None
        if table is not None:
            result = self._look_up(table, candidate)
            result.started, result.finished = started, time.time()
            return result
        import nasfw.train as training

        training.first_step_at = None
        result = self._evaluate(candidate, report)
        result.started, result.finished = started, time.time()
        result.first_step = training.first_step_at
        return result

    def _look_up(self, table: Table, candidate: Candidate) -> Result:
        """The table's result for ``candidate`` at the training seed the evaluation's seed
        (:func:`candidate_seed`) picks; a failed result naming why for a candidate the table
        cannot answer (a graph outside it, training overrides, weights to start from or keep,
        a network above ``max_params``)."""
        name = self.problem.name
        if candidate.train or candidate.init_from or candidate.resume_from:
            asked = sorted(candidate.train) or [
                "init_from" if candidate.init_from else "resume_from"
            ]
            return Result.failed(
                f"problem={name} is looked up in a table, not trained: it cannot apply "
                f"{asked} (its networks trained once, offline, with the table's settings)"
            )
        if candidate.keep_weights:
            return Result.failed(
                f"problem={name} is looked up in a table: there are no weights to keep"
            )
        try:
            result = table.lookup(candidate.graph, candidate_seed(self.seed, candidate))
        except GraphError as err:
            return Result.failed(f"not in the table of problem={name}: {err}")
        if result.n_params is not None and result.n_params > self.max_params:
            return Result.failed(
                f"too large: {result.n_params} parameters > search_space.max_params="
                f"{self.max_params}",
                n_params=result.n_params,
            )
        return result

    def _evaluate(self, candidate: Candidate, report: Report | None) -> Result:
        import torch

        from nasfw.builder import build_model, model_cost
        from nasfw.train import train_model

        torch.set_num_threads(max(1, self.threads))
        try:
            problem = load_problem(self.problem)
            seed = candidate_seed(self.seed, candidate)
            # Size it on the meta device first: an oversized network allocates no memory.
            with torch.device("meta"):
                cost = model_cost(build_model(candidate.graph, problem), problem.input_shape)
            if cost.params > self.max_params:
                return Result.failed(
                    f"too large: {cost.params} parameters > search_space.max_params="
                    f"{self.max_params}",
                    flops=cost.flops,
                    n_params=cost.params,
                )
            source = candidate.resume_from or candidate.init_from
            if candidate.resume_from is not None and candidate.init_from is not None:
                return Result.failed("a candidate sets both init_from and resume_from")
            uses_weights = source is not None or candidate.keep_weights
            if uses_weights and self.scoring["name"] != "plain":
                return Result.failed(
                    f"evaluation={self.scoring['name']} cannot start from or keep a network's "
                    "weights (Candidate.init_from / keep_weights need evaluation=plain)"
                )
            if uses_weights and self.weights is None:
                return Result.failed("this evaluation keeps or loads weights, but no store is set")
            torch.manual_seed(seed)
            if self.scoring["name"] != "plain":
                scorer = registry().get("scorers", self.scoring["name"])
                result = scorer(candidate, problem, self.train, seed, self.scoring)
                result.flops = result.flops if result.flops is not None else cost.flops
                result.n_params = result.n_params if result.n_params is not None else cost.params
                return result
            model = build_model(candidate.graph, problem)
            inherited, trained_before = None, 0
            if source is not None:
                assert self.weights is not None
                stored = self.weights.load(source)
                inherited, trained_before = load_matching(model, stored.state), stored.budget
                if candidate.resume_from is not None and inherited != len(model.state_dict()):
                    return Result.failed(
                        f"resume_from={source}: the stored weights fit {inherited} of the "
                        f"network's {len(model.state_dict())} tensors (another network's?)"
                    )
            outcome = train_model(
                model, problem, self.train, seed, overrides=candidate.overrides, report=report
            )
            budget = trained_before + outcome.epochs
            facts_of_nodes = _trial_facts(model)
            if candidate.keep_weights and not outcome.diverged:
                assert self.weights is not None
                facts_of_nodes["weights"] = self.weights.save(candidate.key, model, budget)
            if inherited is not None:
                facts_of_nodes["inherited_tensors"] = inherited
        except Exception as err:  # a broken candidate is a failed trial, never a crashed search
            where = traceback.extract_tb(err.__traceback__)[-1]
            return Result.failed(
                f"{type(err).__name__}: {err} (at {os.path.basename(where.filename)}:"
                f"{where.lineno})"
            )
        facts: dict[str, Any] = {
            "flops": cost.flops,
            "n_params": cost.params,
            "train_seconds": outcome.seconds,
            "epochs": outcome.epochs,
            "budget": budget,
            "loss": outcome.loss,
            "curve": outcome.curve,
            "extra": {
                **device_facts(outcome),
                "score_seconds": outcome.score_seconds,
                **facts_of_nodes,
            },
        }
        if outcome.diverged:
            return Result.failed(outcome.reason or "diverged", **facts)
        status = "pruned" if outcome.pruned else "ok"
        return Result(status=status, metric=outcome.metric, **facts)


def _trial_facts(model: Any) -> dict[str, Any]:
    """``<node>.<fact>`` for every node module that reports ``trial_facts()``."""
    facts: dict[str, Any] = {}
    for node_id, module in getattr(model, "node_modules", {}).items():
        report = getattr(module, "trial_facts", None)
        if callable(report):
            facts.update({f"{node_id}.{k}": v for k, v in report().items()})
    return facts


def device_facts(outcome: Any) -> dict[str, str | int]:
    """Where a :class:`nasfw.TrainOutcome` trained, for ``Result.extra`` (and so the trial):
    the device, its name, the precision, and ``torch_threads``, torch's intra-op threads in
    this process (``train.threads``, or the CPUs it may use shared among the launcher's
    workers: :func:`nasfw.usable_cpus`)."""
    import torch

    return {
        "device": outcome.device,
        "device_name": outcome.device_name,
        "precision": str(outcome.precision),
        "torch_threads": torch.get_num_threads(),
    }
