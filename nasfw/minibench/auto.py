"""``search_space=auto``: probe a new problem, classify it, search in its class's constraint set.

Before the search, ``minibench.probe_trials`` random networks of the modality's full space
(``minibench.spaces``) are trained: they are trials of the study, generation ``-1`` (they count
in its evaluations, its time, and may be its best). The classifier of the mini-benchmark DB
(``minibench.db``) reads the probe's ``minibench.top_k`` best networks and picks a class of the
problem's modality; the search then runs in that class's constraint set. The choice is stored
in the study (a resumed search keeps it, whatever the DB holds by then), printed, written to
``search_space.yaml`` in the run's directory and handed to the ``nasfw_search_space_chosen``
hook (MLflow logs it).
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
from nasfw.minibench.encoding import ProblemMeta
from nasfw.records import Candidate
from nasfw.registry import preset
from nasfw.search_space import RandomChooser, SearchSpace

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


def _space(space_config: dict[str, Any], ops: Mapping[str, OpSpec]) -> SearchSpace:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), space_config)
    return SearchSpace(OmegaConf.to_object(merged), ops)  # type: ignore[arg-type]


class AutoSpace:
    """``search_space=auto`` as the search's :class:`nasfw.run.SpaceChoice`: the DB's
    classes and classifier for one search, and its probe.

    Built before the study exists, so a missing DB or a modality the DB does not hold fails
    first (:class:`nasfw.ConfigError` naming ``minibench.db``). The tuner is first built in
    the probe's full space; once the space is chosen (or read back on a resume) it is built
    anew in the chosen one.
    """

    choice: dict[str, Any] | None = None
    ledger: Ledger | None = None
    rebuild: Callable[[SearchSpace], Tuner] | None = None
    op_specs: Mapping[str, OpSpec] = {}

    def __init__(self, cfg: Any, problem: Any, ops: list[str]) -> None:
        from nasfw.minibench.classes import group_problems
        from nasfw.minibench.classify import train_classifier
        from nasfw.minibench.db import BestModelDB

        mb = cfg.minibench
        self.cfg = cfg
        self.meta = ProblemMeta.of(problem)
        self.probe_space = full_space(cfg, self.meta.modality)
        db = BestModelDB(str(mb.db), must_exist=True)
        try:
            db.check_networks()
            classes = group_problems(
                db, full_spaces(cfg), int(mb.folding), ops, int(mb.max_classes)
            )
            held = sorted({p.meta.modality for p in db.problems()})
            self.classes = [c for c in classes if c.modality == self.meta.modality]
            if not self.classes:
                raise ConfigError(
                    f"minibench.db={mb.db}: the DB holds no {self.meta.modality} problem "
                    f"(it holds {', '.join(held) or 'nothing'}); add one with python -m nasfw "
                    f"mode=minibench minibench.problems=[...] minibench.db={mb.db}"
                )
            self.model = train_classifier(db, classes, int(mb.folding), ops, int(cfg.seed))
            self.db_problems = len(db.problems())
        finally:
            db.close()

    def initial_space(self, ops: Mapping[str, OpSpec]) -> SearchSpace:
        """The probe's space: the modality's full space."""
        self.op_specs = ops
        return _space(self.probe_space, ops)

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[SearchSpace], Tuner]
    ) -> tuple[SearchSpace, Tuner] | None:
        """The space and tuner of the choice an earlier run of this study made, if any."""
        self.ledger, self.rebuild = ledger, rebuild
        self.choice = stored_choice(ledger)
        if self.choice is None:
            return None
        space = _space(self.choice["space"], self.op_specs)
        return space, rebuild(space)

    def before_first_generation(self, search: Search) -> None:
        """Without a stored choice, the probe: train its networks as generation -1 of the
        study (finished ones are reused on a resume), classify, keep the choice and build the
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
            self.choice = self.choose(trials)
            store_choice(self.ledger, self.choice, context.output_dir, search.console)
            context.space = _space(self.choice["space"], self.op_specs)
            context.tuner = self.rebuild(context.space)
        search.evaluator = replace(search.evaluator, max_params=context.space.max_params)
        search.hook.nasfw_search_space_chosen(context=context, choice=self.choice)

    def probe_candidates(self, space: Any) -> list[Any]:
        """The probe's networks: ``minibench.probe_trials`` random graphs of the full space,
        seeded by the search's seed (the same on a resume)."""
        seed = int(self.cfg.seed)
        return [
            Candidate(space.sample(RandomChooser(np.random.default_rng([seed, 7919, i]))))
            for i in range(int(self.cfg.minibench.probe_trials))
        ]

    def choose(self, probe: list[Any]) -> dict[str, Any]:
        """The class of the problem from the probe's trials (``TrialRecord``), as the choice
        :func:`nasfw.hookspecs.nasfw_search_space_chosen` describes. With no probe network
        trained, the full space (class ``full``, confidence 0)."""
        ok = sorted((t for t in probe if t.result.ok), key=lambda t: t.rank, reverse=True)
        top = ok[: int(self.cfg.minibench.top_k)]
        common = {
            "probe_trials": [t.number for t in probe],
            "probe_best": top[0].result.metric if top else None,
            "db": str(self.cfg.minibench.db),
            "db_problems": self.db_problems,
        }
        if not top:
            space = {**self.probe_space}
            return {
                "class": "full",
                "confidence": 0.0,
                "probabilities": {},
                "problems": [],
                "space": space,
                **common,
            }
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


def stored_choice(ledger: Any) -> dict[str, Any] | None:
    """The choice an earlier run of this study made (None: none yet)."""
    raw = ledger.attr(CHOICE_ATTR)
    return json.loads(raw) if raw else None


def store_choice(ledger: Any, choice: dict[str, Any], output_dir: Path, console: Any) -> None:
    """Keep ``choice`` in the study, write ``search_space.yaml`` and say it on the console."""
    from omegaconf import OmegaConf

    ledger.set_attr(CHOICE_ATTR, json.dumps(choice))
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "search_space.yaml"
    OmegaConf.save(OmegaConf.create(choice["space"]), path)
    odds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(choice["probabilities"].items()))
    console.print(
        f"search_space=auto: class [bold]{choice['class']}[/] "
        f"(confidence {choice['confidence']:.2f}"
        + (f"; {odds}" if odds else "")
        + (f"; problems {', '.join(choice['problems'])}" if choice["problems"] else "")
        + f") from {len(choice['probe_trials'])} probe networks; constraint set: {path}"
    )
