"""``minibench.warm_start=true``: a search starts from the best networks of the nearest
mini-benchmark problems (issue 28, parts 2 and 3).

Before the first generation, the problem's space family's reference networks
(:mod:`nasfw.minibench.references`) are evaluated as generation ``-1`` of the study (the
probe: trials that count in its evaluations and time, and may be its best). Every reference
is probed: with 16-32 of them the probe is small next to a search, and all of them give the
most pairs for Kendall's tau. The ``minibench.donors`` DB problems whose reference scores rank
most like the probe's are the donors; their best networks (the DB's ``models``, interleaved
by rank: each donor's best, then each one's second, ...) seed the tuner's first proposals
(:meth:`nasfw.Tuner.seed_with`: evolution's initial population, TPE's enqueued trials, random
search's first trials).

Why a ``minibench`` setting and not ``tuner.warm_start``: ``tuner.warm_start`` names another
study of the same storage whose trials a model-based tuner learns from; this one reads the
mini-benchmark DB (``minibench.db``), like ``search_space=auto``, and gives any seedable tuner
its first networks, so it sits with the DB's other settings.

The choice (probe trials, donors and their tau, the seeds) is stored in the study: a resumed
search seeds the same networks whatever the DB holds by then. It is printed, written to
``warm_start.json`` in the run's directory and handed to ``nasfw_warm_start`` (MLflow logs the
donors). With ``search_space=auto`` on a family probed by references, auto's probe and
nearest problems are used (one probe, one computation): its problems at least
``minibench.min_similarity`` alike are the donors, and where it fell back to the full space
the start is cold. A DB without references or scored problems of the family, or without a
donor with a defined tau, gives a cold start, said on the console (and recorded, so a resume
stays cold).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.config import ConfigError
from nasfw.generation import end_generation, evaluate
from nasfw.graph import ArchGraph, GraphError
from nasfw.minibench.encoding import ProblemMeta
from nasfw.minibench.references import Neighbour, family_of, nearest
from nasfw.records import Candidate

if TYPE_CHECKING:
    from nasfw.ledger import Ledger
    from nasfw.ops import OpSpec
    from nasfw.run import Search, SpaceChoice
    from nasfw.search_space import BaseSearchSpace
    from nasfw.tuner import Tuner

PROBE_GENERATION = -1
CHOICE_ATTR = "nasfw:minibench_warm_start"


class WarmStart:
    """A :class:`nasfw.run.SpaceChoice` around the search's own (``inner``): the same space,
    and before the first generation the probe and the seeds (see the module).

    Built before the study exists: a missing DB fails first (:class:`nasfw.ConfigError`
    naming ``minibench.db``), and so does a tuner that cannot be seeded.
    """

    ledger: Ledger | None = None
    #: The probe's trials, when this warm start probed (not after ``search_space=auto``'s).
    probed: list[Any] = []

    def __init__(self, cfg: Any, problem: Any, inner: SpaceChoice) -> None:
        from nasfw.minibench.db import BestModelDB

        mb = cfg.minibench
        self.cfg, self.inner = cfg, inner
        self.family = family_of(problem)
        self.meta = ProblemMeta.of(problem)
        db = BestModelDB(str(mb.db), must_exist=True)
        try:
            self.references = db.references(self.family)
            self.db_scores = db.reference_scores(self.family)
            self.metas = {p.id: p.meta for p in db.problems()}
            self.models = {pid: db.models(pid) for pid in self.db_scores}
        finally:
            db.close()
        self.cold = (
            f"the DB {mb.db} holds no reference networks of space family {self.family}"
            if not self.references
            else f"the DB {mb.db} holds no problem of space family {self.family}"
            if not self.db_scores
            else None
        )

    def initial_space(self, ops: Mapping[str, OpSpec]) -> BaseSearchSpace:
        return self.inner.initial_space(ops)

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[BaseSearchSpace], Tuner]
    ) -> tuple[BaseSearchSpace, Tuner] | None:
        self.ledger = ledger
        return self.inner.on_resume(ledger, rebuild)

    def before_first_generation(self, search: Search) -> None:
        """The inner choice's step, then (without a stored choice) the probe and the donors;
        then the tuner is seeded (on a resume too) and ``nasfw_warm_start`` called."""
        self.inner.before_first_generation(search)
        assert self.ledger is not None
        raw = self.ledger.attr(CHOICE_ATTR)
        choice = json.loads(raw) if raw else None
        if choice is None:
            choice = self.choose(search)
            store_choice(self.ledger, choice, search.context.output_dir, search.console)
        seeds = [ArchGraph.from_json(g) for g in choice["seeds"]]
        if seeds:
            search.context.tuner.seed_with(seeds)
        search.hook.nasfw_warm_start(context=search.context, choice=choice)

    def choose(self, search: Search) -> dict[str, Any]:
        """Probe, find the donors, pick the seeds that fit the search's space. After
        ``search_space=auto``'s probe of the same references, its nearest problems (those
        ``minibench.min_similarity`` alike) are the donors: no second probe."""
        common = {"db": str(self.cfg.minibench.db), "family": self.family}
        if self.cold is not None:
            return {**common, "cold": self.cold, "probe_trials": [], "donors": [], "seeds": []}
        space = search.context.space
        auto = getattr(self.inner, "choice", None)
        if auto is not None and auto.get("family") == self.family:
            common["probe_trials"] = auto["probe_trials"]
            if auto["fallback"]:
                why = f"search_space=auto found no similar problem: {auto['fallback']}"
                return {**common, "cold": why, "donors": [], "seeds": []}
            alike = set(auto["problems"])
            near = [Neighbour(pid, tau, math.nan) for pid, tau in auto["nearest"] if pid in alike]
        else:
            near = self.probe(search)
            common["probe_trials"] = [t.number for t in self.probed]
        if not near:
            why = "no DB problem's reference ranking is comparable with the probe's"
            return {**common, "cold": why, "donors": [], "seeds": []}
        seeds: list[str] = []
        seen: set[str] = set()
        depth = max(len(self.models[n.problem_id]) for n in near)
        for rank in range(depth):
            for n in near:
                models = self.models[n.problem_id]
                if rank >= len(models) or models[rank].graph.hash in seen:
                    continue
                try:
                    space.check(models[rank].graph)
                except GraphError:
                    continue  # a donor network outside this search's space
                seen.add(models[rank].graph.hash)
                seeds.append(models[rank].graph.to_json())
        donors = [[n.problem_id, round(n.tau, 4)] for n in near]
        return {**common, "cold": None, "donors": donors, "seeds": seeds}

    def probe(self, search: Search) -> list[Neighbour]:
        """Every reference network as generation -1 (kept in :attr:`probed`); the
        ``minibench.donors`` nearest DB problems."""
        space = search.context.space
        candidates = [Candidate(g, *space.describe(g)) for g in self.references]
        search.hook.nasfw_generation_start(
            context=search.context, generation=PROBE_GENERATION, candidates=candidates
        )
        self.probed = evaluate(search, candidates, PROBE_GENERATION)
        end_generation(search, PROBE_GENERATION, self.probed, None)
        scores = {i: float(t.result.metric) for i, t in enumerate(self.probed) if t.result.ok}
        return nearest(
            scores, self.db_scores, self.metas, self.meta, k=int(self.cfg.minibench.donors)
        )


def check(cfg: Any) -> None:
    """What ``minibench.warm_start`` needs, checked before the study exists.

    Raises:
        ConfigError: naming the setting, with a tuner that cannot be seeded
            (:meth:`nasfw.Tuner.seed_with`).
    """
    from nasfw.registry import registry

    tuner = registry().get("tuners", str(cfg.tuner.name))
    if not tuner.seedable:
        raise ConfigError(
            f"minibench.warm_start=true: tuner={cfg.tuner.name} cannot start from given "
            "networks (evolution, tpe and random can; CoDeepNEAT and Petridish later)"
        )


def store_choice(ledger: Any, choice: dict[str, Any], output_dir: Path, console: Any) -> None:
    """Keep ``choice`` in the study, write ``warm_start.json``, say it on the console."""
    from rich.markup import escape

    ledger.set_attr(CHOICE_ATTR, json.dumps(choice))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "warm_start.json").write_text(json.dumps(choice, indent=2))
    if choice["cold"]:
        console.print(escape(f"minibench.warm_start: cold start: {choice['cold']}"))
        return
    console.print(
        escape(
            f"minibench.warm_start: {len(choice['probe_trials'])} reference networks probed; "
            "donors "
            + ", ".join(f"{pid} (tau {tau:.2f})" for pid, tau in choice["donors"])
            + f"; {len(choice['seeds'])} seed networks"
        )
    )
