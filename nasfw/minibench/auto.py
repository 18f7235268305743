"""``search_space=auto``: probe a new problem, find what it is like, search in a narrower space.

Two ways, by what the mini-benchmark DB (``minibench.db``) holds for the problem's space family
(:func:`nasfw.minibench.references.family_of`):

- **By reference networks** (a family whose reference networks the DB scores on its problems:
  the tables today). The probe is ``minibench.probe_trials`` of the family's reference networks,
  the most informative for telling the DB's problems apart
  (:func:`nasfw.minibench.references.informative`; all of them when there are no more). The
  ``minibench.donors`` DB problems whose reference ranking is nearest the probe's (Kendall's
  tau-b, :func:`nasfw.minibench.references.nearest`) and at least ``minibench.min_similarity``
  alike give the constraint set: the family's full space narrowed to span their best networks
  (:meth:`nasfw.GeneSpace.spanning`: ranges between the smallest and largest values used, the
  ops used). With no DB problem that alike, the search runs in the family's full space and
  says so (class ``full``, ``fallback`` the reason): a constraint from unlike problems would
  only cost.
- **By classifier** (other families, e.g. trained image or sequence problems): the probe is
  ``minibench.probe_trials`` random networks of the modality's full space
  (``minibench.spaces``); the DB's classifier reads the probe's ``minibench.top_k`` best
  networks and picks a class of the problem's modality, whose constraint set it searches.

Either way the probe's networks are trials of the study, generation ``-1`` (they count in its
evaluations, its time, and may be its best). The choice is stored in the study (a resumed
search keeps it, whatever the DB holds by then), printed, written to ``search_space.yaml`` in
the run's directory and handed to the ``nasfw_search_space_chosen`` hook (MLflow logs it).

Why 0.3 for ``minibench.min_similarity``: ``(1 + tau) / 2`` is the share of reference pairs
both problems order alike, so 0.3 asks for 65 % (against 50 % for unrelated rankings). With
the default 8-network probe (28 pairs) a tau of 0.3 is about 1.1 standard deviations above
what unrelated rankings give (sd ``sqrt(2(2n+5) / (9n(n-1)))`` = 0.29 for n = 8; 0.15 for the
24 references), so unrelated problems pass it about one time in seven with the small probe and
rarely with all references; on all 24 references the three NAS-Bench-201 tables rank alike at
tau 0.74-0.86 and the four FCNet ones at 0.67-0.83 (the DB of ``benchmarks/transfer.py``),
well above it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasfw.config import ConfigError, SearchSpaceConfig
from nasfw.generation import end_generation, evaluate
from nasfw.graph import GraphError
from nasfw.minibench.encoding import ProblemMeta
from nasfw.minibench.references import family_of, informative, nearest, space_config
from nasfw.records import Candidate
from nasfw.registry import preset
from nasfw.search_space import BaseSearchSpace, RandomChooser, SearchSpace

if TYPE_CHECKING:
    from nasfw.ledger import Ledger
    from nasfw.ops import OpSpec
    from nasfw.run import Search
    from nasfw.tuner import Tuner

AUTO = "auto"
PROBE_GENERATION = -1
CHOICE_ATTR = "nasfw:search_space_auto"


def full_space(cfg: Any, modality: str) -> dict[str, Any]:
    """The full (unconstrained) space ``minibench.spaces.<modality>`` names, as a plain
    ``SearchSpaceConfig`` dict.

    Raises:
        ConfigError: naming ``minibench.spaces.<modality>``, when it is missing or no search
            space of that name exists.
    """
    from omegaconf import OmegaConf

    spaces = cfg.minibench.spaces
    if modality not in spaces:
        raise ConfigError(
            f"minibench.spaces has no full search space for {modality} problems "
            f"(set minibench.spaces.{modality}=<search space>)"
        )
    name = spaces[modality]
    node = preset("search_space", str(name))
    if node is None or name == AUTO:
        raise ConfigError(f"minibench.spaces.{modality}={name}: no such search space")
    merged = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), node)
    found = OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
    assert isinstance(found, dict)
    return found


def full_spaces(cfg: Any, modalities: Any = None) -> dict[str, dict[str, Any]]:
    """:func:`full_space` of every modality ``minibench.spaces`` lists (or of ``modalities``)."""
    names = list(modalities) if modalities is not None else list(cfg.minibench.spaces)
    return {m: full_space(cfg, m) for m in names if m in cfg.minibench.spaces}


def _space(
    config: dict[str, Any], ops: Mapping[str, OpSpec], family: str | None = None
) -> BaseSearchSpace:
    """The space of a choice's ``space``: a ``SearchSpaceConfig`` dict, or (``family`` given)
    a config of the kind of ``search_space=<family>``."""
    from omegaconf import OmegaConf

    from nasfw.registry import registry

    if family is not None:
        return registry().space(OmegaConf.merge(space_config(family), config), ops)
    merged = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), config)
    return SearchSpace(OmegaConf.to_object(merged), ops)  # type: ignore[arg-type]


class AutoSpace:
    """``search_space=auto`` as the search's :class:`nasfw.run.SpaceChoice`: what the DB
    holds for the problem's family (its reference scores, or its classes and classifier),
    and the probe (see the module).

    Built before the study exists, so a missing DB or a family the DB does not hold fails
    first (:class:`nasfw.ConfigError` naming ``minibench.db``). The tuner is first built in
    the probe's full space; once the space is chosen (or read back on a resume) it is built
    anew in the chosen one.
    """

    choice: dict[str, Any] | None = None
    ledger: Ledger | None = None
    rebuild: Callable[[BaseSearchSpace], Tuner] | None = None
    op_specs: Mapping[str, OpSpec] = {}

    def __init__(self, cfg: Any, problem: Any, ops: list[str]) -> None:
        from nasfw.minibench.db import BestModelDB

        mb = cfg.minibench
        self.cfg = cfg
        self.meta = ProblemMeta.of(problem)
        self.family = family_of(problem)
        db = BestModelDB(str(mb.db), must_exist=True)
        try:
            self.db_problems = len(db.problems())
            references = db.references(self.family)
            #: The family is probed with its reference networks (else: by classifier). A DB
            #: that holds them but none of the family's problems any more (a resume, or all
            #: removed) still serves: a stored choice, else the full space, said so.
            self.by_references = bool(references)
            if self.by_references:
                self.db_scores = db.reference_scores(self.family)
                self.metas = {p.id: p.meta for p in db.problems()}
                self.models = {pid: db.models(pid) for pid in self.db_scores}
                n = int(mb.probe_trials)
                picked = informative(self.db_scores, n) or list(range(min(n, len(references))))
                self.probe = [(i, references[i]) for i in picked]
                self.probe_config: Any = space_config(self.family)
            else:
                self._classes(db, ops)
        finally:
            db.close()

    def _classes(self, db: Any, ops: list[str]) -> None:
        """The classifier way: the modality's classes and the classifier trained on them."""
        from nasfw.minibench.classes import group_problems
        from nasfw.minibench.classify import train_classifier

        mb = self.cfg.minibench
        db.check_networks()
        self.probe_config = full_space(self.cfg, self.meta.modality)
        classes = group_problems(
            db, full_spaces(self.cfg), int(mb.folding), ops, int(mb.max_classes)
        )
        held = sorted({p.meta.modality for p in db.problems()})
        self.classes = [c for c in classes if c.modality == self.meta.modality]
        if not self.classes:
            raise ConfigError(
                f"minibench.db={mb.db}: the DB holds no {self.meta.modality} problem "
                f"(it holds {', '.join(held) or 'nothing'}); add one with python -m nasfw "
                f"mode=minibench minibench.problems=[...] minibench.db={mb.db}"
            )
        self.model = train_classifier(db, classes, int(mb.folding), ops, int(self.cfg.seed))

    def _space(self, config: Any) -> BaseSearchSpace:
        return _space(config, self.op_specs, self.family if self.by_references else None)

    def initial_space(self, ops: Mapping[str, OpSpec]) -> BaseSearchSpace:
        """The probe's space: the family's (or the modality's) full space."""
        self.op_specs = ops
        return self._space(self.probe_config)

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[BaseSearchSpace], Tuner]
    ) -> tuple[BaseSearchSpace, Tuner] | None:
        """The space and tuner of the choice an earlier run of this study made, if any."""
        self.ledger, self.rebuild = ledger, rebuild
        self.choice = stored_choice(ledger)
        if self.choice is None:
            return None
        space = self._space(self.choice["space"])
        return space, rebuild(space)

    def before_first_generation(self, search: Search) -> None:
        """Without a stored choice, the probe: train its networks as generation -1 of the
        study (finished ones are reused on a resume), choose, keep the choice and build the
        tuner anew in the chosen space. Then ``nasfw_search_space_chosen``, on a resume too."""
        context = search.context
        if self.choice is None:
            assert self.ledger is not None and self.rebuild is not None
            candidates = self.probe_candidates(context.space)
            search.hook.nasfw_generation_start(
                context=context, generation=PROBE_GENERATION, candidates=candidates
            )
            trials = evaluate(search, candidates, PROBE_GENERATION)
            end_generation(search, PROBE_GENERATION, trials, None)
            self.choice = self.choose(trials, context.space)
            store_choice(self.ledger, self.choice, context.output_dir, search.console)
            context.space = self._space(self.choice["space"])
            context.tuner = self.rebuild(context.space)
        search.evaluator = replace(search.evaluator, max_params=context.space.max_params)
        search.hook.nasfw_search_space_chosen(context=context, choice=self.choice)

    def probe_candidates(self, space: Any) -> list[Any]:
        """The probe's networks: the chosen reference networks, or ``minibench.probe_trials``
        random graphs of the full space seeded by the search's seed (the same on a resume).
        They carry no tuner parameters: the study's later trials are described in the chosen
        space, whose narrower choices Optuna's storage would refuse under the same names."""
        if self.by_references:
            return [Candidate(graph) for _, graph in self.probe]
        seed = int(self.cfg.seed)
        return [
            Candidate(space.sample(RandomChooser(np.random.default_rng([seed, 7919, i]))))
            for i in range(int(self.cfg.minibench.probe_trials))
        ]

    def choose(self, probe: list[Any], space: Any) -> dict[str, Any]:
        """The constraint set from the probe's trials (``TrialRecord``, in the order of
        :meth:`probe_candidates`), as the choice :func:`nasfw.hookspecs.nasfw_search_space_chosen`
        describes; ``space`` is the probe's (full) space. With no probe network trained, the
        full space (class ``full``, confidence 0)."""
        ok = sorted((t for t in probe if t.result.ok), key=lambda t: t.rank, reverse=True)
        top = ok[: int(self.cfg.minibench.top_k)]
        common = {
            "probe_trials": [t.number for t in probe],
            "probe_best": top[0].result.metric if top else None,
            "db": str(self.cfg.minibench.db),
            "db_problems": self.db_problems,
            "family": self.family if self.by_references else None,
            "nearest": [],
            "fallback": None,
        }
        full = _plain(self.probe_config)
        if not top:
            why = "no probe network was trained"
            return _full(full, {**common, "fallback": why})
        if self.by_references:
            return self._by_references(probe, space, full, common)
        choice = self.model.choose([t.graph for t in top], self.meta)
        chosen = next(c for c in self.classes if c.name == choice.name)
        return {
            "class": choice.name,
            "confidence": choice.confidence,
            "probabilities": choice.probabilities,
            "problems": chosen.problems,
            "space": chosen.space,
            **common,
        }

    def _by_references(
        self, probe: list[Any], space: Any, full: dict[str, Any], common: dict[str, Any]
    ) -> dict[str, Any]:
        mb = self.cfg.minibench
        scores = {
            index: float(t.result.metric)
            for (index, _), t in zip(self.probe, probe, strict=True)
            if t.result.ok
        }
        near = nearest(scores, self.db_scores, self.metas, self.meta, k=int(mb.donors))
        common["nearest"] = [[n.problem_id, round(n.tau, 4)] for n in near]
        alike = [n for n in near if n.tau >= float(mb.min_similarity)]
        if not alike:
            best = f"; the nearest, {near[0].problem_id}, has tau {near[0].tau:.2f}" if near else ""
            why = (
                f"no {self.family} problem of the DB ranks the probe's {len(scores)} reference "
                f"networks alike (tau >= minibench.min_similarity={float(mb.min_similarity):g}"
                f"{best})"
                if self.db_scores
                else f"the DB holds no {self.family} problem"
            )
            return _full(full, {**common, "fallback": why})
        graphs = []
        for n in alike:
            for model in self.models[n.problem_id]:
                try:
                    graphs.append(space.check(model.graph))
                except GraphError:
                    continue  # a DB network outside the family's full space
        config = _plain(space.spanning(graphs))
        return {
            "class": "nearest",
            "confidence": alike[0].tau,
            "probabilities": {},
            "problems": [n.problem_id for n in alike],
            "space": config,
            **common,
        }


def _plain(config: Any) -> dict[str, Any]:
    """A space config (a dataclass, ``DictConfig`` or dict) as a plain dict."""
    from omegaconf import OmegaConf

    found = OmegaConf.to_container(
        OmegaConf.structured(config) if not isinstance(config, dict) else OmegaConf.create(config),
        resolve=True,
        enum_to_str=True,
    )
    assert isinstance(found, dict)
    return found  # type: ignore[return-value]


def _full(space: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The choice of the full space (class ``full``, confidence 0)."""
    return {
        "class": "full",
        "confidence": 0.0,
        "probabilities": {},
        "problems": [],
        "space": space,
        **common,
    }


def stored_choice(ledger: Any) -> dict[str, Any] | None:
    """The choice an earlier run of this study made (None: none yet)."""
    raw = ledger.attr(CHOICE_ATTR)
    return json.loads(raw) if raw else None


def store_choice(ledger: Any, choice: dict[str, Any], output_dir: Path, console: Any) -> None:
    """Keep ``choice`` in the study, write ``search_space.yaml`` and say it on the console."""
    from omegaconf import OmegaConf
    from rich.markup import escape

    ledger.set_attr(CHOICE_ATTR, json.dumps(choice))
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "search_space.yaml"
    OmegaConf.save(OmegaConf.create(choice["space"]), path)
    odds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(choice["probabilities"].items()))
    near = ", ".join(f"{pid} (tau {tau:.2f})" for pid, tau in choice.get("nearest", []))
    probed = f"from {len(choice['probe_trials'])} probe networks"
    if choice.get("fallback"):
        said = f"the full space: {escape(choice['fallback'])}; {probed}"
    elif choice.get("family"):
        said = (
            f"class [bold]{choice['class']}[/] (tau {choice['confidence']:.2f}): the space "
            f"spanning the best networks of {', '.join(choice['problems'])}; {probed}"
        )
    else:
        said = (
            f"class [bold]{choice['class']}[/] (confidence {choice['confidence']:.2f}"
            + (f"; {odds}" if odds else "")
            + (f"; problems {', '.join(choice['problems'])}" if choice["problems"] else "")
            + f") {probed}"
        )
    console.print(
        f"search_space=auto: {said}"
        + (f"; nearest DB problems {escape(near)}" if near else "")
        + f"; constraint set: {escape(str(path))}"
    )
