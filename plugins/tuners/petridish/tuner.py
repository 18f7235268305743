"""The Petridish tuner: grow networks forward from a pool, on the lower convex hull of
(FLOPs, error).

Hu et al., "Efficient Forward Architecture Search" (NeurIPS 2019); reference implementations
microsoft/petridishnn (TensorFlow) and microsoft/archai ``algos/petridish`` (PyTorch). One
**round** is two generations (two launcher batches):

1. *candidates*: for each parent chosen near the hull (:mod:`.hull`), a target node and up to
   ``max_candidates`` (source, op) candidates; the search network (:func:`.grow.search_graph`)
   starts from the parent's stored weights and trains, the parent computing exactly what it
   did while the candidates' alphas learn;
2. *children*: the top-k candidates by |alpha| become layers of a child
   (:func:`.grow.finalize`) that starts from the search network's weights as exactly the
   parent's function, trains, and joins the pool.

The pool, the parents chosen and every pending step are the tuner's state, saved in the study
after every generation, so a killed search resumes; weights live in the study's weight store
(``storage.artifacts``, :mod:`nasfw.weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasfw import (
    ArchGraph,
    Candidate,
    ConfigError,
    RandomChooser,
    Result,
    SearchSpace,
    Tuner,
    TunerConfig,
    check_mode,
    load_arch_in,
    setting,
)

from .grow import CandidateOp, alphas_of, candidate_ops, finalize, growable, search_graph, top_k
from .hull import choose_parents, lower_hull

SEED, CANDIDATES, CHILD = "seed", "candidates", "child"


@dataclass
class PetridishConfig(TunerConfig):
    name: str = "petridish"
    # nas: the pool starts from init_models small networks of the search space (each stage at
    # its min_nodes); adapt: from tuner.init_arch (a graph file or a preset in conf/arch/).
    mode: str = "nas"
    init_arch: str | None = None
    init_models: int = setting(4, ge=1)
    # Rounds of growth (each: a batch of candidate trainings, then a batch of children).
    rounds: int = setting(4, ge=1)
    # Parents grown per round, drawn from the models near the hull (the paper's runs: up to 20).
    max_parents: int = setting(4, ge=1)
    # A model is near the hull when its error <= hull(FLOPs) * (1 + eps).
    eps: float = setting(0.025, ge=0)
    # Candidate (source, op) pairs per parent, drawn from all that fit the target.
    max_candidates: int = setting(12, ge=1)
    # Candidates a child keeps (largest |alpha|).
    top_k: int = setting(3, ge=1)
    # L1 coefficient on the candidates' alphas.
    l1: float = setting(1e-3, ge=0)
    # Candidate ops, used when the search space allows them (identity always): target-width
    # filters/units, these kernel sizes, 3x3 same-size pooling.
    candidate_ops: list[str] = field(
        default_factory=lambda: [
            "sep_conv2d",
            "dil_conv2d",
            "conv2d",
            "maxpool2d",
            "avgpool2d",
            "identity",
            "conv1d",
            "maxpool1d",
            "avgpool1d",
            "gru",
            "lstm",
            "dense",
        ]
    )
    kernel_sizes: list[int] = setting(default_factory=lambda: [3, 5], ge=1, min_items=1)
    # Epochs of the candidate training and of a child's training (None: train.epochs).
    search_epochs: int | None = setting(None, ge=1)
    child_epochs: int | None = setting(None, ge=1)
    # Stop growing models above this many FLOPs (None: no cap), or once the pool is this big.
    max_flops: float | None = setting(None, gt=0)
    max_pool: int | None = setting(None, ge=1)

    def check(self, key: str) -> None:
        check_mode(self, key)


@dataclass
class Member:
    """A trained model of the pool: its evaluation ``key`` names its stored weights."""

    key: str
    graph: ArchGraph
    flops: float
    error: float
    born: int  # the round it was made in (0: a seed)
    chosen: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "graph": self.graph.to_dict(),
            "flops": self.flops,
            "error": self.error,
            "born": self.born,
            "chosen": self.chosen,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Member:
        return cls(d["key"], ArchGraph.from_dict(d["graph"]), **_without(d, "key", "graph"))


def _describe(x: dict[str, Any]) -> str:
    return CandidateOp(x["source"], x["op"], x["params"], tuple(x["shape"])).describe()


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


class Petridish(Tuner):
    """Forward architecture search from a pool of trained models (see the module docstring).

    Needs the problem's shapes to size grown layers: the search loop sets ``self.problem``
    before the first :meth:`ask` (a :class:`nasfw.Problem`, or anything with ``input_shape``
    and ``n_outputs``).
    """

    config_class = PetridishConfig
    # Grows networks node by node: proposals of stages only (never a fixed cell).
    space_kinds = (SearchSpace,)

    config: PetridishConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)  # PetridishConfig.check: mode, init_arch
        self.seed_graphs: list[ArchGraph] | None = None
        if config.mode == "adapt":
            self.seed_graphs = [load_arch_in(config.init_arch, space, structure=False)]
        from nasfw import registry

        self.ops = registry().ops
        self.op_names = [o for o in config.candidate_ops if o in space.op_specs or o == "identity"]
        unknown = [o for o in config.candidate_ops if o not in self.ops]
        if unknown:
            raise ConfigError(f"tuner.candidate_ops: unknown ops {unknown}")
        if not self.op_names:
            raise ConfigError(
                f"tuner.candidate_ops={list(config.candidate_ops)}: none is in search space "
                f"{space.name!r} ({sorted(space.op_specs)})"
            )
        self.rng = np.random.default_rng(seed)
        self.round = 0
        self.phase = SEED
        self.pool: list[Member] = []
        self.pending: list[dict[str, Any]] = []  # the steps the last/next batch belongs to
        self.log: list[dict[str, Any]] = []  # what each round did (for reports)
        self.finished = False

    # -- shapes -------------------------------------------------------------------------
    def _shapes(self, graph: ArchGraph) -> tuple[dict[str, tuple[int, ...]], bool]:
        import torch

        from nasfw import INPUT, build_model

        if getattr(self, "problem", None) is None:
            raise ConfigError("tuner=petridish needs the problem's shapes (tuner.problem unset)")
        with torch.device("meta"):
            model = build_model(graph, self.problem)
        shapes = {INPUT: tuple(model.input_shape), **model.node_shapes}
        return shapes, model.input_dtype is torch.long

    # -- ask ----------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        if self.finished:
            return []
        if self.phase == SEED:
            return self._ask_seeds()
        if self.phase == CANDIDATES:
            return self._ask_candidates()
        return [self._candidate(step["child"], step) for step in self.pending]

    def _ask_seeds(self) -> list[Candidate]:
        if self.seed_graphs is None:
            # Distinct small samples (a few of them may be rejected by _learns).
            graphs: dict[str, ArchGraph] = {}
            for _ in range(50 * self.config.init_models):
                graph = self.space.sample(_Smallest(RandomChooser(self.rng)))
                if self._learns(graph) and self._small_enough(graph):
                    graphs.setdefault(graph.hash, graph)
                if len(graphs) == self.config.init_models:
                    break
            if not graphs:
                # An empty pool would end the search before it began, saying nothing useful.
                raise ConfigError(
                    f"tuner=petridish: none of {50 * self.config.init_models} smallest networks "
                    f"of search_space={self.space.name} both has a layer with a width in each "
                    f"stage that offers one and fits search_space.max_params="
                    f"{self.space.max_params} for this problem; raise search_space.max_params, "
                    "or use a space with pooling (e.g. search_space=petridish_full)"
                )
            self.seed_graphs = list(graphs.values())
        self.pending = [{"kind": SEED, "graph": g.to_dict()} for g in self.seed_graphs]
        return [
            self._candidate(g, step) for g, step in zip(self.seed_graphs, self.pending, strict=True)
        ]

    def _learns(self, graph: ArchGraph) -> bool:
        """Each non-empty stage that offers a layer with a width (filters, units) has one: a
        seed of only pooling and dropout is a linear model whose narrow nodes every child would
        inherit."""
        stage_of = self.space.stage_of(graph)
        for s, stage in enumerate(self.space.stages):
            wide = [
                o for o in stage.ops if {"filters", "units"} & set(self.space.op_specs[o].params)
            ]
            nodes = [n for n in graph if stage_of[n.id] == s]
            if wide and nodes and not any(n.op in wide for n in nodes):
                return False
        return True

    def _small_enough(self, graph: ArchGraph) -> bool:
        """At most ``search_space.max_params`` parameters for this problem (counted on the meta
        device): a minimal seed on 28x28 images can flatten a wide feature map into a dense layer
        of millions of weights, a trial that would only fail as too large."""
        import torch

        from nasfw import BuildError, build_model

        try:
            with torch.device("meta"):
                model = build_model(graph, self.problem)
        except BuildError:
            return False
        return sum(p.numel() for p in model.parameters()) <= self.space.max_params

    def _ask_candidates(self) -> list[Candidate]:
        c = self.config
        if self.round >= c.rounds or (c.max_pool is not None and len(self.pool) >= c.max_pool):
            self.finished = True
            return []
        growing = [
            i for i, m in enumerate(self.pool) if c.max_flops is None or m.flops <= c.max_flops
        ]
        if not growing:
            self.finished = True
            return []
        points = [(self.pool[i].flops, self.pool[i].error) for i in growing]
        picks = choose_parents(
            points, [self.pool[i].chosen for i in growing], c.max_parents, self.rng, c.eps
        )
        hull = [growing[i] for i in lower_hull(points)]
        self.pending = []
        for pick in picks:
            parent = self.pool[growing[pick]]
            parent.chosen += 1
            step = self._grow_step(parent)
            if step is not None:
                self.pending.append(step)
        self.log.append(
            {
                "round": self.round + 1,
                "pool": len(self.pool),
                "hull": [self.pool[i].key for i in hull],
                "parents": [s["parent"] for s in self.pending],
            }
        )
        if not self.pending:
            self.finished = True
            return []
        return [self._candidate(ArchGraph.from_dict(s["graph"]), s) for s in self.pending]

    def _grow_step(self, parent: Member) -> dict[str, Any] | None:
        """The candidate training of ``parent`` at a random growable target, or None."""
        c = self.config
        shapes, tokens = self._shapes(parent.graph)
        options = {}
        for target in growable(parent.graph):
            found = candidate_ops(
                parent.graph, shapes, target, self.ops, self.op_names, c.kernel_sizes, tokens
            )
            if found:
                options[target] = found
        if not options:
            return None
        targets = sorted(options)
        target = targets[int(self.rng.integers(len(targets)))]
        found = options[target]
        if len(found) > c.max_candidates:
            keep = sorted(self.rng.choice(len(found), size=c.max_candidates, replace=False))
            found = [found[int(i)] for i in keep]
        alphas = self.rng.uniform(-0.1, 0.1, size=len(found)).tolist()
        graph = search_graph(parent.graph, target, shapes[target], found, alphas, c.l1)
        return {
            "kind": CANDIDATES,
            "parent": parent.key,
            "target": target,
            "target_shape": list(shapes[target]),
            "candidates": [
                {"source": x.source, "op": x.op, "params": dict(x.params), "shape": list(x.shape)}
                for x in found
            ],
            "graph": graph.to_dict(),
        }

    def _candidate(self, graph: ArchGraph | dict[str, Any], step: dict[str, Any]) -> Candidate:
        graph = graph if isinstance(graph, ArchGraph) else ArchGraph.from_dict(graph)
        kind = step["kind"]
        epochs = {CANDIDATES: self.config.search_epochs, CHILD: self.config.child_epochs}
        train = {"epochs": epochs[kind]} if epochs.get(kind) else {}
        # No params: Petridish grows networks, it samples no variables of a space; the seeds'
        # layers alone made every importance equal on optuna-dashboard.
        params: dict[str, Any] = {}
        distributions: dict[str, Any] = {}
        attrs = {"petridish": kind, "round": self.round + (kind != SEED)}
        if kind != SEED:
            attrs.update(parent=step["parent"], target=step["target"])
        return Candidate(
            graph,
            params,
            distributions,
            train=train,
            attrs=attrs,
            init_from=step.get("init_from", step.get("parent")),
            keep_weights=True,
            # The candidate training is the parent with inert extra layers: not a result.
            exportable=kind != CANDIDATES,
        )

    # -- tell ---------------------------------------------------------------------------
    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        if self.phase == SEED:
            for cand, result in zip(candidates, results, strict=True):
                self._join(cand, result, born=0)
            self.phase, self.pending = CANDIDATES, []
            return
        if self.phase == CANDIDATES:
            children = []
            for step, cand, result in zip(self.pending, candidates, results, strict=True):
                child = self._child_step(step, cand, result)
                if child is not None:
                    children.append(child)
            self.log[-1]["searches"] = [
                {
                    "parent": s["parent"],
                    "target": s["target"],
                    "candidates": [_describe(x) for x in s["candidates"]],
                    "alphas": s.get("alphas"),
                    "chosen": s.get("chosen"),
                }
                for s in self.pending
            ]
            self.pending = children
            self.phase = CHILD if children else CANDIDATES
            if not children:
                self.round += 1
            return
        for cand, result in zip(candidates, results, strict=True):
            self._join(cand, result, born=self.round + 1)
        self.round += 1
        self.phase, self.pending = CANDIDATES, []

    def _child_step(
        self, step: dict[str, Any], cand: Candidate, result: Result
    ) -> dict[str, Any] | None:
        if not result.ok:
            return None
        found = [
            CandidateOp(x["source"], x["op"], x["params"], tuple(x["shape"]))
            for x in step["candidates"]
        ]
        alphas = alphas_of(result.extra, step["target"], len(found))
        if alphas is None:  # a result without alphas (e.g. from a test double): grow nothing
            return None
        chosen = top_k(alphas, self.config.top_k)
        step["alphas"], step["chosen"] = alphas, chosen
        parent = next(m for m in self.pool if m.key == step["parent"])
        child = finalize(parent.graph, step["target"], tuple(step["target_shape"]), found, chosen)
        return {
            "kind": CHILD,
            "parent": step["parent"],
            "target": step["target"],
            "init_from": cand.key,
            "chosen": [found[j].describe() for j in chosen],
            "child": child.to_dict(),
        }

    def _join(self, cand: Candidate, result: Result, born: int) -> None:
        if not result.ok or result.metric is None or result.flops is None:
            return
        error = 1.0 - float(result.metric)  # >= 0 for accuracy, R², MCC and -MAE alike
        self.pool.append(Member(cand.key, cand.graph, float(result.flops), error, born))

    # -- state --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "round": self.round,
            "phase": self.phase,
            "finished": self.finished,
            "pool": [m.to_dict() for m in self.pool],
            "pending": self.pending,
            "log": self.log,
            "seed_graphs": None
            if self.seed_graphs is None
            else [g.to_dict() for g in self.seed_graphs],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.round, self.phase, self.finished = state["round"], state["phase"], state["finished"]
        self.pool = [Member.from_dict(m) for m in state["pool"]]
        self.pending, self.log = state["pending"], state["log"]
        graphs = state["seed_graphs"]
        self.seed_graphs = None if graphs is None else [ArchGraph.from_dict(g) for g in graphs]

    # -- reports ------------------------------------------------------------------------
    def hull(self) -> list[Member]:
        """The pool's lower-hull models, cheapest first."""
        if not self.pool:
            return []
        return [self.pool[i] for i in lower_hull([(m.flops, m.error) for m in self.pool])]

    def generation_artifacts(self) -> dict[str, Any]:
        """``pool.json`` (every pool model, the hull's marked), ``rounds.json`` (per round: the
        pool size, hull, parents, and each candidate training's candidates, alphas and the
        chosen ones), ``hull.png`` (the hull after every round) and, after a candidates
        batch, ``alphas.png``."""
        from .figures import alphas_figure, hull_figure

        if not self.pool:
            return {}
        hull = {m.key for m in self.hull()}
        pool = [{**_without(m.to_dict(), "graph"), "on_hull": m.key in hull} for m in self.pool]
        artifacts: dict[str, Any] = {
            "pool.json": pool,
            "rounds.json": self.log,
            "hull.png": hull_figure(pool),
        }
        if self.phase == CHILD and self.log and self.log[-1].get("searches"):
            artifacts["alphas.png"] = alphas_figure(self.log[-1])
        return artifacts

    def generation_report(self) -> dict[str, float]:
        hull = self.hull()
        report = {"petridish_round": float(self.round), "pool_size": float(len(self.pool))}
        if hull:
            report["hull_size"] = float(len(hull))
            report["hull_best_error"] = min(m.error for m in hull)
            report["hull_area"] = _area(hull)
        return report


def _area(hull: list[Member]) -> float:
    """Area under the hull's error over log10 FLOPs: lower means a better trade-off front."""
    if len(hull) < 2:
        return 0.0
    xs = [math.log10(max(m.flops, 1.0)) for m in hull]
    ys = [m.error for m in hull]
    # The trapezoid rule by hand: np.trapezoid is numpy >= 2 only (we allow 1.26).
    steps = zip(xs, xs[1:], ys, ys[1:], strict=False)
    return float(sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in steps))


class _Smallest:
    """A chooser that takes each stage's fewest nodes ("macro search: a few layers per stage")
    and leaves every other choice to ``inner``."""

    def __init__(self, inner: RandomChooser) -> None:
        self.inner = inner

    def int(self, name: str, low: int, high: int, log: bool = False) -> int:
        if name.endswith(".n_nodes"):
            return low
        return self.inner.int(name, low, high, log)

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.inner.float(name, low, high, log)

    def categorical(self, name: str, choices: Any) -> Any:
        return self.inner.categorical(name, choices)
