"""TPE: Optuna's TPESampler drives the architecture choices, define-by-run.

The sampler works on a private in-memory study holding what this tuner was told; the search's
persistent study stays the ledger. Each generation gets a sampler seeded from (seed, generation),
so a resumed search proposes exactly what an uninterrupted one would. A network the search's
pruner stopped is told as a PRUNED trial with its learning curve, which TPE ranks below the
finished ones by how far it got (Optuna's own treatment); ``tuner.warm_start=<study>`` adds
another study's finished trials to the private study before the first proposal.

Two settings change what TPE models (both off by default, where the tuner is Optuna's own TPE
on the space's categorical decisions):

- ``tuner.ordered=true``: a decision among three or more numbers (a grid: FCNet's units,
  learning rates, batch sizes, dropout rates) is suggested as its position in the sorted
  choices, an ``IntDistribution``, instead of an unordered category, so TPE's kernel spreads
  what it learned about a value to its neighbours (Bergstra et al., NeurIPS 2011, model
  ordinal hyper-parameters as numbers; FCNet's authors list these as ordinal, Klein and Hutter,
  arXiv:1905.04970). The study then records the position under the decision's name.
- ``tuner.unique=true``: a proposal whose decisions the tuner was told before is not
  evaluated again. The private study is told the earlier result for it and TPE asks again
  (up to ``UNIQUE_TRIES`` times), so every evaluation is a new network; without it, TPE's
  repeats of its best networks take 13-17 % of the first 100 evaluations on the tabular
  benchmarks (counted in benchmarks/results/tabular/raw/), each a reused result that teaches
  it nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasfw import (
    AsynchronousTunerConfig,
    Candidate,
    Result,
    TrialChooser,
    Tuner,
    hookimpl,
    setting,
)
from nasfw.plugins.tuners._optuna_study import (
    frozen_trial,
    private_study,
    result_entry,
    tpe_sampler,
    warm_entries,
)

# Optuna is imported where a tuner uses it: registering the plugin (every `python -m nasfw`,
# --help included) must not pay for importing it.
if TYPE_CHECKING:
    import optuna


@dataclass
class TPEConfig(AsynchronousTunerConfig):
    name: str = "tpe"
    # Total evaluations.
    n_trials: int = setting(20, ge=1)
    # Evaluations per generation (one batch for the launcher); pending ones are "lied" about.
    batch_size: int = setting(4, ge=1)
    # Random trials before TPE starts modelling.
    n_startup_trials: int = setting(8, ge=0)
    multivariate: bool = True
    # Conditional spaces (params that exist only for some ops) need grouped multivariate TPE.
    group: bool = True
    # Evaluate asynchronously: a new network is asked for as soon as a worker frees up
    # (docs/tuners.md, "Asynchronous evaluation"); a generation: batch_size finished evaluations.
    asynchronous: bool = False
    # Numeric decisions with 3+ choices as ordered (their sorted position, an IntDistribution)
    # instead of unordered categories (see the module).
    ordered: bool = False
    # Never evaluate a network the tuner was told before: TPE is told the earlier result and
    # asks again (see the module).
    unique: bool = False


#: How often ``tuner.unique`` asks again for a network not told before; then it takes the repeat
#: (a space whose every network was told cannot give a new one).
UNIQUE_TRIES = 100


class TPETuner(Tuner):
    config_class = TPEConfig
    asynchronous = True
    appended_state = ("told",)  # every result told, in order

    config: TPEConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        self.generation = 0
        # What the private study holds, as JSON entries (nasfw.plugins.tuners._optuna_study),
        # in its order; tuner.unique's repeats (never evaluated) are marked "repeat".
        self.told: list[dict[str, Any]] = []
        # tuner.unique: the entry told for each proposal's decisions (_decisions).
        self.known: dict[str, dict[str, Any]] = {}
        # tuner.unique: the current batch in the private study's order: a repeat's entry, or
        # None where a candidate is pending (so a resume rebuilds the study in that order).
        self.asked: list[dict[str, Any] | None] = []
        self.warm: list[dict[str, Any]] = []  # another study's trials (tuner.warm_start)
        self.study = private_study([])
        self.pending: list[optuna.Trial] = []
        # Asynchronous evaluation: the private study's trial of each candidate being evaluated.
        self.running: list[tuple[Candidate, optuna.Trial]] = []

    def _sampler(self, draw: int | None = None) -> optuna.samplers.TPESampler:
        return tpe_sampler(
            self.seed,
            self.generation if draw is None else draw,
            self.config.n_startup_trials,
            multivariate=self.config.multivariate,
            group=self.config.group,
            previous=self.study.sampler,
        )

    def evaluated(self) -> int:
        """How many evaluations the tuner was told (``tuner.unique``'s repeats are none)."""
        return sum(not e.get("repeat") for e in self.told)

    def ask(self) -> list[Candidate]:
        count = min(self.config.batch_size, self.config.n_trials - self.evaluated())
        self.study.sampler = self._sampler()
        self.pending = []
        self.asked = []
        candidates = []
        for _ in range(max(count, 0)):
            candidate, trial = self._propose(self.asked)
            self.pending.append(trial)
            self.asked.append(None)
            candidates.append(candidate)
        return candidates

    seedable = True

    def _propose(self, repeats: list[Any]) -> tuple[Candidate, optuna.Trial]:
        """A network the private study's sampler asks for, with the trial it asked in. While a
        seed (``minibench.warm_start``) is left for this proposal's index, the seed's params
        are enqueued first, so the trial is the seed. With ``tuner.unique``, one whose
        decisions were not told before (each repeat on the way is told its earlier result and
        appended to ``repeats``)."""
        at = self.evaluated() + len(self.pending) + len(self.running)
        if at < len(self.seeds):
            self.study.enqueue_trial(self._seed_params(self.seeds[at]))
        for _ in range(UNIQUE_TRIES if self.config.unique else 1):
            trial = self.study.ask()
            chooser = OrderedTrialChooser(trial) if self.config.ordered else TrialChooser(trial)
            graph = self.space.sample(chooser)
            known = self.known.get(_decisions(trial.params)) if self.config.unique else None
            if known is None:
                break
            repeat = {**known, "repeat": True}
            _tell(self.study, trial, repeat)
            repeats.append(repeat)
        return Candidate(graph, dict(trial.params), dict(trial.distributions)), trial

    def _seed_params(self, graph: Any) -> dict[str, Any]:
        """A seed's decisions as this tuner suggests them: with ``tuner.ordered``, a choice
        among three or more numbers as its position in the sorted choices."""
        from optuna.distributions import CategoricalDistribution

        params, distributions = self.space.describe(graph)
        if not self.config.ordered:
            return params
        for name, dist in distributions.items():
            choices = dist.choices if isinstance(dist, CategoricalDistribution) else ()
            numbers = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
            if numbers and len(choices) >= 3:
                params[name] = sorted(choices).index(params[name])
        return params

    def _told(self, entry: dict[str, Any]) -> None:
        self.known.setdefault(_decisions(entry["params"]), entry)

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        entries = [
            result_entry(candidate.params, candidate.distributions, result)
            for candidate, result in zip(candidates, results, strict=True)
        ]
        for trial, entry in zip(self.pending, entries, strict=True):
            _tell(self.study, trial, entry)
            self._told(entry)
        # The private study's order: each repeat where it was asked, then its candidate.
        told = iter(entries)
        self.told += [slot if slot is not None else next(told) for slot in self.asked]
        self.pending, self.asked = [], []
        self.generation += 1

    def ask_one(self, pending: int) -> Candidate | None:
        """One proposal from everything told so far; the ``pending`` evaluations are lied
        about (Optuna's constant liar). Each draw has its own seed (seed, number of trials in
        the private study)."""
        if self.evaluated() + pending >= self.config.n_trials:
            return None
        self.study.sampler = self._sampler(draw=len(self.study.trials))
        candidate, trial = self._propose(self.told)
        self.running.append((candidate, trial))
        return candidate

    def tell_one(self, candidate: Candidate, result: Result) -> None:
        entry = result_entry(candidate.params, candidate.distributions, result)
        trial = next((t for c, t in self.running if c is candidate), None)
        if trial is None:  # asked by a process that was killed: told again on the resume
            self.study.add_trial(frozen_trial(entry))
        else:
            self.running = [(c, t) for c, t in self.running if t is not trial]
            _tell(self.study, trial, entry)
        self.told.append(entry)
        self._told(entry)

    def warm_start(self, trials: list[Any]) -> None:
        """Learn from another study's finished trials (``tuner.warm_start``): those with
        params join the private study, and so shape every proposal (failed ones as FAIL
        trials, which TPE ignores)."""
        self.warm = warm_entries(trials, keep_failed=True)
        self._rebuild()

    def state(self) -> dict[str, Any]:
        return {"generation": self.generation, "told": self.told, "warm": self.warm}

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.told = list(state["told"])
        self.warm = list(state.get("warm", []))
        self._rebuild()

    def _rebuild(self) -> None:
        self.study = private_study([*self.warm, *self.told])
        self.running = []
        self.known = {}
        for entry in self.told:
            if not entry.get("repeat"):
                self._told(entry)


class OrderedTrialChooser(TrialChooser):
    """:class:`nasfw.TrialChooser` whose choice among three or more numbers is the position in
    the sorted choices, suggested as an ``IntDistribution`` (``tuner.ordered``); other choices
    stay categorical."""

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        numbers = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
        if not numbers or len(choices) < 3:
            return super().categorical(name, choices)
        grid = sorted(choices)
        return grid[self.trial.suggest_int(name, 0, len(grid) - 1)]


def _decisions(params: dict[str, Any]) -> str:
    """A proposal's identity for ``tuner.unique``: its decisions as canonical JSON."""
    return json.dumps(params, sort_keys=True)


def _tell(study: optuna.Study, trial: optuna.Trial, entry: dict[str, Any]) -> None:
    """Tell the private study how ``trial`` (one of its asks) ended."""
    from optuna.trial import TrialState

    if entry["state"] == "PRUNED":
        for step, value in entry["curve"].items():
            trial.report(value, int(step))
    state = TrialState[entry["state"]]
    # Optuna takes a value with COMPLETE only; PRUNED keeps its last reported one.
    study.tell(trial, entry["value"] if state == TrialState.COMPLETE else None, state=state)


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(TPETuner)
