"""A network of dense layers whose genes sit on a grid: per layer (or shared by all layers) its
width, activation and dropout rate, the depth where it varies, and training settings.

The spaces of the tabular HPO benchmarks of multi-layer perceptrons: FCNet / NAS-HPO-Bench
(Klein and Hutter, "Tabular Benchmarks for Joint Architecture and Hyperparameter Optimization",
arXiv:1905.04970: two layers, each with its own units, activation and dropout, plus learning
rate, batch size and learning-rate schedule) and HPOBench's MLP (Eggensperger et al., NeurIPS
2021 Datasets and Benchmarks, arXiv:2109.06716: depth 1-3 layers of one width, L2 penalty,
batch size, learning rate).

As an :class:`nasfw.ArchGraph`: ``dense<i>`` (op ``dense``: ``units``, and ``activation``
where the space has it) for each layer ``i``, each followed by ``dropout<i>`` (op ``dropout``,
``rate``) where the space has dropout, chained from the input; the training settings are the
graph's :attr:`nasfw.ArchGraph.train`. Genes: ``depth`` (where it has several choices),
``l<i>.units`` / ``l<i>.activation`` / ``l<i>.dropout`` per layer (``units``, ... when shared),
``train.<setting>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import MISSING

from nasfw import (
    ArchGraph,
    GeneSpace,
    GraphError,
    Node,
    OpSpec,
    SearchSpaceError,
    SpaceConfig,
    span_choices,
)

LAYER_GENES = ("units", "activation", "dropout")


@dataclass
class GridSpaceConfig(SpaceConfig):
    """Dense layers with their genes on a grid (see the module)."""

    # The choices of the number of dense layers (one choice: a fixed depth).
    depth: list[int] = MISSING
    # dense.units choices.
    units: list[int] = MISSING
    # dense.activation choices (None: no activation gene; the op's default, relu).
    activation: list[str] | None = None
    # Rate choices of a dropout layer after each dense one (None: no dropout layers).
    dropout: list[float] | None = None
    # true: each layer has its own genes (FCNet); false: one value of each gene for every layer
    # (HPOBench's width).
    per_layer: bool = True
    # Training settings searched with the layers (the graph's train): name -> its choices.
    # Names of train.* knobs (lr, batch_size, ...) apply where the network trains; a table
    # problem reads the names it knows.
    train: dict[str, list[Any]] = field(default_factory=dict)


class GridSpace(GeneSpace):
    """The space of :class:`GridSpaceConfig` (see the module). Raises
    :class:`nasfw.SearchSpaceError` naming the key for an empty or impossible grid."""

    config_class = GridSpaceConfig
    config: GridSpaceConfig

    def __init__(self, config: GridSpaceConfig, ops: Mapping[str, OpSpec]) -> None:
        super().__init__(config)
        for key in (
            "depth",
            "units",
            *(k for k in ("activation", "dropout") if getattr(config, k) is not None),
        ):
            if not getattr(config, key):
                raise SearchSpaceError(f"search_space.{key} is empty: give its choices")
        if min(config.depth) < 1:
            raise SearchSpaceError(f"search_space.depth={list(config.depth)}: at least 1 layer")
        for name, choices in config.train.items():
            if not choices:
                raise SearchSpaceError(f"search_space.train.{name} is empty: give its choices")
        for op, key, param in (
            ("dense", "units", "units"),
            ("dense", "activation", "activation"),
            ("dropout", "dropout", "rate"),
        ):
            spec = ops.get(op)
            for value in getattr(config, key) or ():
                reason = spec.params[param].check(value) if spec is not None else None
                if reason:
                    raise SearchSpaceError(f"search_space.{key}: {reason}")
        self.layer_genes = tuple(
            g for g in LAYER_GENES if g == "units" or getattr(config, g) is not None
        )
        genes: dict[str, tuple[Any, ...]] = {}
        if len(config.depth) > 1:
            genes["depth"] = tuple(sorted(config.depth))
        layers = range(max(config.depth)) if config.per_layer else [None]
        for i in layers:
            for g in self.layer_genes:
                genes[_gene(i, g)] = tuple(getattr(config, g))
        for name, choices in config.train.items():
            genes[f"train.{name}"] = tuple(choices)
        self._genes = genes

    def genes(self) -> dict[str, tuple[Any, ...]]:
        return dict(self._genes)

    def spanning(self, graphs: Sequence[ArchGraph]) -> GridSpaceConfig:
        """The same grid narrowed to the graphs (:func:`nasfw.span_choices`): the depths
        they use, each layer gene's choices spanning the values any layer uses (a config has
        one list per gene, shared by the layers), each training setting's choices spanning
        theirs. Raises :class:`nasfw.GraphError` for a graph outside the space."""
        used = self.used(graphs)

        def over(key: str) -> list[Any]:
            return [v for name, vs in used.items() if name.split(".")[-1] == key for v in vs]

        config = self.config
        return replace(
            config,
            name=f"auto_{self.name}",
            depth=span_choices(config.depth, used.get("depth", [])),
            units=span_choices(config.units, over("units")),
            activation=None
            if config.activation is None
            else span_choices(config.activation, over("activation")),
            dropout=None
            if config.dropout is None
            else span_choices(config.dropout, over("dropout")),
            train={k: span_choices(c, used.get(f"train.{k}", [])) for k, c in config.train.items()},
        )

    def _depth(self, values: Mapping[str, Any]) -> int:
        return int(values.get("depth", self.config.depth[0]))

    def active(self, values: Mapping[str, Any]) -> list[str]:
        if not self.config.per_layer or "depth" not in self._genes:
            return list(self._genes)
        depth = self._depth(values) if "depth" in values else 0
        return [
            name
            for name in self._genes
            if not name.startswith("l") or int(name[1 : name.index(".")]) < depth
        ]

    def to_graph(self, values: Mapping[str, Any]) -> ArchGraph:
        nodes: list[Node] = []
        prev = "input"
        for i in range(self._depth(values)):
            layer = i if self.config.per_layer else None
            params = {"units": values[_gene(layer, "units")]}
            if "activation" in self.layer_genes:
                params["activation"] = values[_gene(layer, "activation")]
            nodes.append(Node(f"dense{i}", "dense", params, (prev,)))
            prev = f"dense{i}"
            if "dropout" in self.layer_genes:
                rate = values[_gene(layer, "dropout")]
                nodes.append(Node(f"dropout{i}", "dropout", {"rate": rate}, (prev,)))
                prev = f"dropout{i}"
        train = {name: values[f"train.{name}"] for name in self.config.train}
        return ArchGraph(nodes, prev, train)

    def values(self, graph: ArchGraph) -> dict[str, Any]:
        where = f"search space {self.name!r}"
        order = graph.topological_order()
        step = 2 if "dropout" in self.layer_genes else 1
        depth = len(order) // step
        expected = [
            (f"dense{i}", "dense") if k == 0 else (f"dropout{i}", "dropout")
            for i in range(depth)
            for k in range(step)
        ]
        found = [(n.id, n.op) for n in order]
        if len(order) % step or found != expected:
            raise GraphError(
                f"graph {found} is not a network of {where}: dense layers"
                + (", each followed by its dropout," if step == 2 else "")
                + " chained from the input (dense0, ...)"
            )
        prev = "input"
        for node in order:
            if node.inputs != (prev,):
                raise GraphError(f"node {node.id!r}: takes {list(node.inputs)}, not [{prev!r}]")
            prev = node.id
        values: dict[str, Any] = {}
        if "depth" in self._genes:
            values["depth"] = depth
        elif depth != self.config.depth[0]:
            raise GraphError(f"graph has {depth} layers; {where} has {self.config.depth[0]}")
        for i in range(depth):
            dense = graph[f"dense{i}"]
            layer = {"units": dense.params.get("units")}
            if "activation" in self.layer_genes:
                layer["activation"] = dense.params.get("activation")
            if step == 2:
                layer["dropout"] = graph[f"dropout{i}"].params.get("rate")
            extra = sorted(set(dense.params) - {"units", "activation"})
            if extra or ("activation" not in self.layer_genes and "activation" in dense.params):
                raise GraphError(f"node {dense.id!r}: params {sorted(dense.params)} leave {where}")
            for gene, value in layer.items():
                name = _gene(i if self.config.per_layer else None, gene)
                if name in values and values[name] != value:
                    raise GraphError(
                        f"node dense{i}: {gene}={value!r}, but {where} gives every layer the "
                        f"same {gene} ({values[name]!r} in the first)"
                    )
                values[name] = value
        if set(graph.train) != set(self.config.train):
            raise GraphError(
                f"graph's training settings {sorted(graph.train)} are not those of {where} "
                f"({sorted(self.config.train)})"
            )
        values.update({f"train.{k}": v for k, v in graph.train.items()})
        return values


def _gene(layer: int | None, gene: str) -> str:
    return gene if layer is None else f"l{layer}.{gene}"
