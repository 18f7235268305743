"""A fixed cell: a DAG whose topology is fixed and whose genes are one op per edge.

Node 0 of the cell takes the network input, the last node is the cell's output, and every other
node is the sum of its incoming edges, each edge an op applied to its source node: the cell
search spaces of NAS-Bench-101/201 and DARTS (Dong and Yang, "NAS-Bench-201: Extending the
Scope of Reproducible Neural Architecture Search", ICLR 2020, arXiv:2001.00326, Figure 1).

As an :class:`nasfw.ArchGraph`, each edge ``s -> d`` is a node ``edge_<s>_<d>`` whose op is the
edge's (params none), fed by cell node ``s`` (``input`` for node 0); each cell node ``d`` >= 1
is a node ``node<d>`` of op ``identity`` adding its incoming edges (``merge="add"``); the output
is the last cell node. The genes are the edges' ops, named as the edge nodes; every edge chooses
among ``search_space.ops``.

``search_space=nasbench201``: 4 nodes, the 6 edges, 5 ops (``none``, ``skip_connect``,
``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``): 15,625 cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import MISSING

from nasfw import (
    INPUT,
    ArchGraph,
    GeneSpace,
    GraphError,
    Node,
    OpSpec,
    SearchSpaceError,
    SpaceConfig,
    setting,
    span_choices,
)

#: The op of the cell's nodes: each adds its incoming edges.
NODE_OP = "identity"


@dataclass
class CellSpaceConfig(SpaceConfig):
    """A fixed cell (see the module): nodes, the edges between them and the ops of an edge."""

    # Cell nodes: node 0 takes the network input, the last is the cell's output.
    nodes: int = setting(4, ge=2)
    # The ops every edge chooses among (its gene's choices), as the table or builder names them.
    ops: list[str] = MISSING
    # The edges as [from, to] node pairs, in gene order. None: every pair from < to, ordered by
    # `to`, then `from` (the order of NAS-Bench-201's architecture strings).
    edges: list[list[int]] | None = None


class CellSpace(GeneSpace):
    """A fixed cell's space (see the module). Raises :class:`nasfw.SearchSpaceError` naming
    the key for edges that leave a node unconnected or point backwards."""

    config_class = CellSpaceConfig
    config: CellSpaceConfig

    def __init__(self, config: CellSpaceConfig, ops: Mapping[str, OpSpec]) -> None:
        super().__init__(config)
        n = config.nodes
        pairs = (
            [(s, d) for d in range(1, n) for s in range(d)]
            if config.edges is None
            else [tuple(e) for e in config.edges]
        )
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not 0 <= pair[0] < pair[1] < n:
                raise SearchSpaceError(
                    f"search_space.edges[{i}]={list(pair)}: an edge is [from, to] with "
                    f"0 <= from < to < search_space.nodes={n}"
                )
        if len(set(pairs)) != len(pairs):
            raise SearchSpaceError("search_space.edges: an edge is listed twice")
        for d in range(1, n):
            if not any(t == d for _, t in pairs):
                raise SearchSpaceError(f"search_space.edges: node {d} has no incoming edge")
        for s in range(n - 1):
            if not any(f == s for f, _ in pairs):
                raise SearchSpaceError(f"search_space.edges: node {s} has no outgoing edge")
        if not config.ops:
            raise SearchSpaceError("search_space.ops is empty: every edge needs an op")
        self.edges: list[tuple[int, int]] = [(int(s), int(d)) for s, d in pairs]
        self._genes = {edge_name(s, d): tuple(config.ops) for s, d in self.edges}
        # The cell's shape, which values() checks each graph against: built once (it was
        # rebuilt for every check, a tenth of nasfw's own cost per lookup).
        self._shape = self.to_graph({name: choices[0] for name, choices in self._genes.items()})

    def genes(self) -> dict[str, tuple[Any, ...]]:
        return dict(self._genes)

    def spanning(self, graphs: Sequence[ArchGraph]) -> CellSpaceConfig:
        """The same cell whose ``ops`` are those the graphs use on any edge (every edge keeps
        one list of choices). Raises :class:`nasfw.GraphError` for a graph outside the space."""
        ops = [op for values in self.used(graphs).values() for op in values]
        return replace(
            self.config, name=f"auto_{self.name}", ops=span_choices(self.config.ops, ops)
        )

    def to_graph(self, values: Mapping[str, Any]) -> ArchGraph:
        nodes = [
            Node(edge_name(s, d), str(values[edge_name(s, d)]), {}, (_cell_node(s),))
            for s, d in self.edges
        ]
        for d in range(1, self.config.nodes):
            into = tuple(edge_name(s, t) for s, t in self.edges if t == d)
            nodes.append(Node(_cell_node(d), NODE_OP, {}, into, "add"))
        return ArchGraph(nodes, _cell_node(self.config.nodes - 1))

    def values(self, graph: ArchGraph) -> dict[str, Any]:
        expected = self._shape
        where = f"the cell of search space {self.name!r}"
        if graph.output != expected.output:
            raise GraphError(f"output {graph.output!r} is not {expected.output}, that of {where}")
        unknown = sorted(set(graph.nodes) - set(expected.nodes))
        missing = sorted(set(expected.nodes) - set(graph.nodes))
        if unknown or missing:
            raise GraphError(
                f"graph is not {where}: "
                + (f"node(s) {unknown} are not in it" if unknown else "")
                + ("; " if unknown and missing else "")
                + (f"its node(s) {missing} are missing" if missing else "")
            )
        if graph.train:
            raise GraphError(f"{where} has no training settings (graph has {sorted(graph.train)})")
        found: dict[str, Any] = {}
        for want in expected:
            node = graph[want.id]
            if node.inputs != want.inputs or node.params:
                raise GraphError(
                    f"node {node.id!r}: inputs {list(node.inputs)} and params "
                    f"{dict(node.params)} leave {where} (its inputs are {list(want.inputs)}, "
                    "its params none)"
                )
            if want.op == NODE_OP:
                if node.op != NODE_OP or (len(node.inputs) > 1 and node.merge != "add"):
                    raise GraphError(
                        f"node {node.id!r}: a cell node adds its edges ({NODE_OP}, merge add), "
                        f"not {node.op} with merge {node.merge}"
                    )
            else:
                found[node.id] = node.op
        return found


def edge_name(source: int, target: int) -> str:
    """The node (and gene) of the edge ``source -> target``."""
    return f"edge_{source}_{target}"


def _cell_node(index: int) -> str:
    return INPUT if index == 0 else f"node{index}"
