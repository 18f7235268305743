"""Search spaces: what a tuner samples, checks, mutates, crosses and describes to Optuna.

:class:`BaseSearchSpace` is what every kind of space gives tuners; a kind is a subclass
configured by a :class:`nasfw.SpaceConfig` subclass, which a plugin registers
(``register_search_space_kinds``). :class:`SearchSpace` is the core's own kind, described
below; :class:`nasfw.GeneSpace` is the base of kinds whose graphs are a fixed list of genes
on a grid (a fixed cell, a fixed-depth network).

Graphs of a :class:`SearchSpace` are stages of nodes (e.g. ``features`` then ``classifier``);
each node feeds the next, and with the ``skip`` connection kind a node may also take an earlier
node of its stage (merged by one of the allowed ``merge`` kinds). Sampling is define-by-run
through a :class:`Chooser`, so the same code serves random search (a seeded RNG) and Optuna's
samplers (a trial's ``suggest_*``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from nasfw.choosers import Chooser, RandomChooser, TrialChooser
from nasfw.config import ParamRange, SearchSpaceConfig, SpaceConfig
from nasfw.graph import INPUT, MERGE_KINDS, ArchGraph, GraphError, Node
from nasfw.mutation import mutate
from nasfw.op_rules import unsatisfiable
from nasfw.ops import OpSpec

__all__ = [
    "BaseSearchSpace",
    "Chooser",
    "RandomChooser",
    "SearchSpace",
    "SearchSpaceError",
    "Stage",
    "TrialChooser",
]

CONNECTION_KINDS = ("sequential", "skip")
NO_SKIP = "none"


class SearchSpaceError(ValueError):
    """A search-space config is inconsistent; the message names the ``search_space.*`` key."""


@dataclass(frozen=True)
class Stage:
    name: str
    ops: tuple[str, ...]
    min_nodes: int
    max_nodes: int


class BaseSearchSpace(ABC):
    """What every kind of search space gives tuners: a subclass is one kind.

    ``config`` is the option's schema instance (a :class:`nasfw.SpaceConfig` subclass, the
    kind's ``config_class``); the core reads :attr:`name`, :attr:`modalities` and
    :attr:`max_params` of every kind. Sampling is define-by-run through a :class:`Chooser`
    (random search's RNG, an Optuna trial's ``suggest_*``), with the same names and
    distributions that :meth:`describe` gives a graph, so trials of one study stay
    comparable whatever tuner made them. Subclasses take ``(config, ops)``: the option's
    schema and the op registry.
    """

    #: The kind's schema: the options of ``search_space`` typed by it are of this kind.
    config_class: ClassVar[type[SpaceConfig]] = SpaceConfig

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self.name = config.name
        self.modalities = tuple(config.modalities)
        self.max_params = config.max_params

    @abstractmethod
    def sample(self, chooser: Chooser) -> ArchGraph:
        """A random graph of the space; every decision through ``chooser``, by a stable name."""

    @abstractmethod
    def check(self, graph: ArchGraph, structure: bool = True) -> ArchGraph:
        """``graph``, if it lies in the space; else :class:`nasfw.GraphError` saying where it
        leaves it. ``structure=False`` leaves out the checks of the graph's shape that a
        tuner assembling graphs of its own shape cannot meet (a kind may ignore it)."""

    @abstractmethod
    def mutate(self, graph: ArchGraph, rng: np.random.Generator, attempts: int = 50) -> ArchGraph:
        """A graph of the space one random edit away from ``graph`` (``graph`` itself when
        no edit in ``attempts`` tries stays in the space)."""

    @abstractmethod
    def crossover(self, a: ArchGraph, b: ArchGraph, rng: np.random.Generator) -> ArchGraph:
        """A child of the space made of parts of ``a`` and ``b`` (the fitter parent first: a
        kind that cannot combine them returns a copy of ``a``)."""

    @abstractmethod
    def describe(self, graph: ArchGraph) -> tuple[dict[str, Any], dict[str, Any]]:
        """The graph's decisions as Optuna params and distributions (what a sampler learns)."""

    def contains(self, graph: ArchGraph) -> bool:
        try:
            self.check(graph)
        except GraphError:
            return False
        return True

    def accepts(self, modality: str) -> bool:
        return modality in self.modalities


class SearchSpace(BaseSearchSpace):
    """The core's kind: a validated constraint set of stages over the registered ops.

    Example:
        >>> from nasfw import registry, SearchSpace
        >>> space = SearchSpace(my_search_space_config, registry().ops)  # doctest: +SKIP
        >>> graph = space.sample(RandomChooser(np.random.default_rng(0)))  # doctest: +SKIP
        >>> space.check(space.mutate(graph, np.random.default_rng(1)))  # doctest: +SKIP
    """

    def __init__(self, config: SearchSpaceConfig | DictConfig, ops: Mapping[str, OpSpec]) -> None:
        cfg: SearchSpaceConfig = (
            OmegaConf.to_object(config) if isinstance(config, DictConfig) else config
        )  # type: ignore[assignment]
        super().__init__(cfg)
        self.config: SearchSpaceConfig = cfg
        for kind in cfg.connections:
            if kind not in CONNECTION_KINDS:
                raise SearchSpaceError(
                    f"search_space.connections: {kind!r} is not one of {list(CONNECTION_KINDS)}"
                )
        self.skip = "skip" in cfg.connections
        self.merge = tuple(cfg.merge)
        for kind in self.merge:
            if kind not in ("concat", "add"):
                raise SearchSpaceError(f"search_space.merge: {kind!r} is not concat or add")
        if self.skip and not self.merge:
            raise SearchSpaceError("search_space.merge is empty but skip connections are allowed")
        if not cfg.stages:
            raise SearchSpaceError("search_space.stages is empty")
        self.stages: tuple[Stage, ...] = tuple(
            self._stage(i, s.name, s.ops, s.min_nodes, s.max_nodes, ops)
            for i, s in enumerate(cfg.stages)
        )
        self.max_nodes = (
            cfg.max_nodes if cfg.max_nodes is not None else sum(s.max_nodes for s in self.stages)
        )
        if sum(s.min_nodes for s in self.stages) > self.max_nodes:
            raise SearchSpaceError(
                f"search_space.max_nodes={self.max_nodes} is below the stages' min_nodes total"
            )
        if sum(s.min_nodes for s in self.stages) < 1:
            # Sampling and mutation could then give a graph with no layer at all.
            raise SearchSpaceError(
                "search_space.stages: every stage has min_nodes=0, so a sampled graph could "
                "have no layer at all; give one stage min_nodes >= 1 (e.g. "
                "search_space.stages.0.min_nodes=1)"
            )
        self._all_ops = dict(ops)
        self.op_specs = {name: ops[name] for s in self.stages for name in s.ops}
        self.ranges: dict[str, dict[str, ParamRange]] = {}
        for op_name, params in cfg.ops.items():
            if op_name not in ops:
                raise SearchSpaceError(
                    f"search_space.ops.{op_name}: unknown op (known ops: {sorted(ops)})"
                )
            self.ranges[op_name] = {}
            for param, node in (params or {}).items():
                rng = _param_range(f"search_space.ops.{op_name}.{param}", node)
                self._check_range(op_name, param, rng, ops[op_name])
                self.ranges[op_name][param] = rng
        for op_name, spec in self.op_specs.items():
            for param, pspec in spec.params.items():
                if param not in self.ranges.get(op_name, {}) and pspec.default is None:
                    raise SearchSpaceError(
                        f"search_space.ops.{op_name}.{param}: no range given and the op has "
                        "no default"
                    )
            self._check_rule(op_name, spec)

    @staticmethod
    def _stage(
        index: int, name: str, op_names: Sequence[str], lo: int, hi: int, ops: Mapping[str, Any]
    ) -> Stage:
        key = f"search_space.stages[{index}]"
        if not op_names:
            raise SearchSpaceError(f"{key}.ops is empty")
        for op in op_names:
            if op not in ops:
                raise SearchSpaceError(f"{key}.ops: unknown op {op!r} (known ops: {sorted(ops)})")
        if lo < 0 or hi < lo or hi < 1:
            raise SearchSpaceError(
                f"{key}: min_nodes={lo} > max_nodes={hi}"
                if hi < lo
                else f"{key}: need 0 <= min_nodes <= max_nodes and max_nodes >= 1"
            )
        return Stage(name, tuple(op_names), lo, hi)

    @staticmethod
    def _check_range(op: str, param: str, rng: ParamRange, spec: OpSpec) -> None:
        key = f"search_space.ops.{op}.{param}"
        pspec = spec.params.get(param)
        if pspec is None:
            raise SearchSpaceError(f"{key}: op {op!r} has no param {param!r}")
        if rng.choices is not None:
            if not rng.choices:
                raise SearchSpaceError(f"{key}.choices is empty")
            for value in rng.choices:
                reason = pspec.check(value)
                if reason:
                    raise SearchSpaceError(f"{key}.choices: {reason}")
            return
        if pspec.kind in ("categorical", "bool"):
            raise SearchSpaceError(f"{key}: a {pspec.kind} param needs 'choices'")
        if rng.low is None or rng.high is None:
            raise SearchSpaceError(f"{key}: give both low and high, or choices")
        if rng.low > rng.high:
            raise SearchSpaceError(f"{key}: min > max (low={rng.low:g}, high={rng.high:g})")
        if pspec.kind == "int" and not all(float(b).is_integer() for b in (rng.low, rng.high)):
            # Sampling truncates the bounds, so a fraction would yield values check() rejects.
            raise SearchSpaceError(
                f"{key}: an int param needs whole-number bounds "
                f"(low={rng.low:g}, high={rng.high:g})"
            )
        if rng.log and rng.low <= 0:
            raise SearchSpaceError(f"{key}: a log range needs low > 0")
        for bound in (rng.low, rng.high):
            reason = pspec.check(int(bound) if pspec.kind == "int" else bound)
            if reason:
                raise SearchSpaceError(f"{key}: {reason}")

    def _check_rule(self, op: str, spec: OpSpec) -> None:
        """Each value the space gives a param of ``op`` passes the op's rule with some values of
        the others (:func:`nasfw.op_rules.unsatisfiable`)."""
        problem = unsatisfiable(op, spec, self.ranges.get(op, {}))
        if problem is not None:
            raise SearchSpaceError(problem)

    # -- sampling -------------------------------------------------------------------------
    def _choose_param(self, chooser: Chooser, name: str, op: str, param: str) -> Any:
        pspec = self.op_specs[op].params[param]
        rng = self.ranges.get(op, {}).get(param)
        if rng is None:
            return pspec.default
        if rng.choices is not None:
            return chooser.categorical(name, list(rng.choices))
        assert rng.low is not None and rng.high is not None
        if pspec.kind == "int":
            return chooser.int(name, int(rng.low), int(rng.high), log=rng.log)
        return chooser.float(name, float(rng.low), float(rng.high), log=rng.log)

    def sample_node(self, chooser: Chooser, stage: Stage, node_id: str) -> Node:
        """One node of ``stage``: its op and params chosen through ``chooser``."""
        op = chooser.categorical(f"{node_id}.op", list(stage.ops))
        params = {
            p: self._choose_param(chooser, f"{node_id}.{op}.{p}", op, p)
            for p in self.op_specs[op].params
        }
        return Node(node_id, op, params)

    def sample(self, chooser: Chooser) -> ArchGraph:
        """A random valid graph; every decision goes through ``chooser`` with a stable name."""
        nodes: list[Node] = []
        prev = INPUT
        # Later stages keep room for their min_nodes within max_nodes.
        room = self.max_nodes - sum(s.min_nodes for s in self.stages)
        for stage in self.stages:
            high = min(stage.max_nodes, stage.min_nodes + room)
            n = chooser.int(f"{stage.name}.n_nodes", stage.min_nodes, high)
            room -= n - stage.min_nodes
            for i in range(n):
                node = self.sample_node(chooser, stage, f"{stage.name}{i}")
                inputs = [prev]
                if self.skip and i >= 2:
                    options = [NO_SKIP, *(f"{stage.name}{j}" for j in range(i - 1))]
                    # Choices depend only on i, so each decision's distribution is stable.
                    src = chooser.categorical(f"{node.id}.skip", options)
                    if src != NO_SKIP:
                        inputs.append(src)
                        merge = chooser.categorical(f"{node.id}.merge", list(self.merge))
                        node = replace(node, merge=merge)
                nodes.append(replace(node, inputs=tuple(inputs)))
                prev = node.id
        return ArchGraph(nodes, output=prev)

    # -- checking -------------------------------------------------------------------------
    def stage_of(self, graph: ArchGraph) -> dict[str, int]:
        """Split the nodes (in topological order) into the stages, in order.

        Each stage takes a consecutive run of ``min_nodes..max_nodes`` nodes whose ops it allows;
        an op allowed by several stages (dropout) goes wherever the split works. Raises
        :class:`GraphError` when no split exists.
        """
        order = graph.topological_order()
        n, stages = len(order), self.stages
        # feasible[s][i]: nodes order[i:] can be split among stages s.. (a suffix DP).
        feasible = [[False] * (n + 1) for _ in range(len(stages) + 1)]
        feasible[len(stages)][n] = True
        for s in range(len(stages) - 1, -1, -1):
            stage = stages[s]
            for i in range(n, -1, -1):
                for length in range(stage.min_nodes, stage.max_nodes + 1):
                    j = i + length
                    if j > n or any(node.op not in stage.ops for node in order[i:j]):
                        break
                    if feasible[s + 1][j]:
                        feasible[s][i] = True
                        break
        if not feasible[0][0]:
            raise GraphError(
                f"graph {[f'{x.id}:{x.op}' for x in order]} does not fit the stages of search "
                f"space {self.name!r}: "
                + ", ".join(f"{x.name}={list(x.ops)} x{x.min_nodes}..{x.max_nodes}" for x in stages)
            )
        assignment: dict[str, int] = {}
        i = 0
        for s, stage in enumerate(stages):
            for length in range(stage.min_nodes, stage.max_nodes + 1):
                j = i + length
                if j <= n and all(x.op in stage.ops for x in order[i:j]) and feasible[s + 1][j]:
                    assignment.update((x.id, s) for x in order[i:j])
                    i = j
                    break
        return assignment

    def check(self, graph: ArchGraph, structure: bool = True) -> ArchGraph:
        """Validate ``graph`` and check it lies inside this space; return it.

        ``structure=False`` checks ops, params, merges and connections but not the node count
        and stage order (for tuners such as CoDeepNEAT that assemble graphs of their own shape).
        """
        graph.validate(self._all_ops)
        unknown = [n for n in graph if n.op not in self.op_specs]
        if unknown:
            raise GraphError(
                f"node {unknown[0].id!r}: op {unknown[0].op!r} is not in search space "
                f"{self.name!r} (allowed: {sorted(self.op_specs)})"
            )
        if structure and len(graph) > self.max_nodes:
            raise GraphError(f"graph has {len(graph)} nodes, search space allows {self.max_nodes}")
        for node in graph:
            if len(node.inputs) > 1 and node.merge not in self.merge:
                raise GraphError(
                    f"node {node.id!r}: merge {node.merge!r} not allowed (allowed: "
                    f"{list(self.merge)})"
                )
            if len(node.inputs) > 1 and not self.skip:
                raise GraphError(f"node {node.id!r}: skip connections are not allowed")
            for param, value in node.params.items():
                rng = self.ranges.get(node.op, {}).get(param)
                if rng is None:
                    continue
                if rng.choices is not None:
                    ok = value in list(rng.choices)
                else:
                    assert rng.low is not None and rng.high is not None
                    ok = rng.low <= value <= rng.high
                if not ok:
                    allowed = (
                        list(rng.choices)
                        if rng.choices is not None
                        else f"[{rng.low:g}, {rng.high:g}]"
                    )
                    raise GraphError(
                        f"node {node.id!r} ({node.op}): param {param!r}={value!r} is outside "
                        f"search space {self.name!r} (allowed: {allowed})"
                    )
        if structure:
            self.stage_of(graph)
        return graph

    # -- mutation -------------------------------------------------------------------------
    def mutate(self, graph: ArchGraph, rng: np.random.Generator, attempts: int = 50) -> ArchGraph:
        """A different valid graph one random edit away from ``graph``
        (:func:`nasfw.mutation.mutate`: change a param or a node's op, insert or remove a node,
        add or remove a skip connection; edits that would leave the space are retried)."""
        return mutate(self, graph, rng, attempts)

    def perturb_param(self, op: str, param: str, value: Any, rng: np.random.Generator) -> Any:
        """A new value for one param: a Gaussian step (20 % of the range) for numbers, a
        different choice for categorical and bool params. Params without a range keep ``value``.
        """
        rng_cfg = self.ranges.get(op, {}).get(param)
        if rng_cfg is None:
            return value
        pspec = self.op_specs[op].params[param]
        if rng_cfg.choices is not None:
            others = [c for c in rng_cfg.choices if c != value] or list(rng_cfg.choices)
            return others[int(rng.integers(len(others)))]
        low, high = float(rng_cfg.low), float(rng_cfg.high)  # type: ignore[arg-type]
        # A Gaussian step around the current value explores locally, as NEAT mutations do.
        step = float(value) + rng.normal(0, 0.2 * (high - low) or 1.0)
        step = min(max(step, low), high)
        return round(step) if pspec.kind == "int" else step

    def mutate_node(self, node: Node, rng: np.random.Generator, fraction: float) -> Node:
        """``node`` with each ranged param perturbed with probability ``fraction``.

        At least one param changes.
        """
        names = sorted(self.ranges.get(node.op, {}))
        if not names:
            return node
        chosen = [p for p in names if rng.random() < fraction]
        if not chosen:
            chosen = [names[int(rng.integers(len(names)))]]
        params = dict(node.params)
        for p in chosen:
            params[p] = self.perturb_param(node.op, p, params.get(p), rng)
        return replace(node, params=params)

    def describe(self, graph: ArchGraph) -> tuple[dict[str, Any], dict[str, Any]]:
        """The graph's hyper-parameters as Optuna params and distributions.

        Layers are named by topological position (``l0.op``, ``l0.conv2d.filters``, ...) with
        distributions from this space, so trials of one study stay comparable whatever tuner
        made them. Values outside the space (e.g. an adapted architecture) are left out.
        """
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        params: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        ops = CategoricalDistribution(sorted(self.op_specs))

        def put(name: str, value: Any, dist: Any) -> None:
            if isinstance(dist, CategoricalDistribution):
                ok = value in dist.choices
            else:
                ok = isinstance(value, int | float) and dist.low <= value <= dist.high
            if ok:
                params[name], dists[name] = value, dist

        order = graph.topological_order()
        put("n_layers", len(order), IntDistribution(1, max(self.max_nodes, 64)))
        for i, node in enumerate(order):
            put(f"l{i}.op", node.op, ops)
            for param, rng in sorted(self.ranges.get(node.op, {}).items()):
                if param not in node.params:
                    continue
                if rng.choices is not None:
                    dist: Any = CategoricalDistribution(list(rng.choices))
                elif self.op_specs[node.op].params[param].kind == "int":
                    low, high = int(rng.low), int(rng.high)  # type: ignore[arg-type]
                    dist = IntDistribution(low, high, log=rng.log)
                else:
                    low, high = float(rng.low), float(rng.high)  # type: ignore[arg-type]
                    dist = FloatDistribution(low, high, log=rng.log)
                put(f"l{i}.{node.op}.{param}", node.params[param], dist)
            if len(node.inputs) > 1:
                put(f"l{i}.merge", node.merge, CategoricalDistribution(list(MERGE_KINDS)))
        return params, dists

    def crossover(self, a: ArchGraph, b: ArchGraph, rng: np.random.Generator) -> ArchGraph:
        """Stage-wise uniform crossover: each stage's run of nodes from ``a`` or ``b`` (half
        a chance each), chained in stage order. A child that leaves the space (too many
        nodes, a node id both runs use) is ``a``."""
        runs: list[list[Node]] = []
        for s in range(len(self.stages)):
            parent = a if rng.random() < 0.5 else b
            stages = self.stage_of(parent)
            runs.append([n for n in parent.topological_order() if stages[n.id] == s])
        nodes: list[Node] = []
        prev = INPUT
        for run in runs:
            if not run:
                continue
            local = {n.id for n in run}
            for node in run:
                inputs = tuple(i if i in local else prev for i in node.inputs)
                nodes.append(replace(node, inputs=tuple(dict.fromkeys(inputs))))
            prev = run[-1].id
        try:
            child = ArchGraph(nodes, output=prev)
            return self.check(child)
        except GraphError:
            return a


def _param_range(key: str, node: Any) -> ParamRange:
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(node, ParamRange):
        return node
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ParamRange), node)
    except OmegaConfBaseException as err:
        detail = str(err).splitlines()[0]
        sub = getattr(err, "full_key", None)
        raise SearchSpaceError(f"{key}{'.' + sub if sub else ''}: {detail}") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def load_arch_in(
    name: str | None, space: SearchSpace, *, structure: bool = True, key: str = "tuner.init_arch"
) -> ArchGraph:
    """The architecture a user hands a tuner (θ0: :func:`nasfw.load_arch`, a file or a preset
    of ``conf/arch/``), checked in full against ``space`` (:meth:`SearchSpace.check`: ops,
    every param's type, limits and range, the ops' rules, merges, connections and, with
    ``structure``, node count and stage order) before the search starts.

    Raises:
        ConfigError: naming ``key``, the file, the node and the param.
    """
    from nasfw.config import ConfigError
    from nasfw.graph import load_arch

    graph = load_arch(name)
    try:
        return space.check(graph, structure=structure)
    except GraphError as err:
        raise ConfigError(
            f"{key}={name}: the architecture does not fit search space {space.name!r}: {err}"
        ) from None
