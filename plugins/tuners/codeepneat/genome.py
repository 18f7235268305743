"""CoDeepNEAT genomes: modules (small chains of layers), blueprints (DAGs of module species),
historical markings, distances, and the assembly of one network from a blueprint and modules.

Everything here is plain data that round-trips through JSON, so the whole population can be
saved in the Optuna study after every generation and in initial-population files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasfw import INPUT, ArchGraph, Node

# Pseudo nodes of every blueprint: where the network input enters and the output leaves.
BP_INPUT = 0
BP_OUTPUT = 1


@dataclass
class Layer:
    """A DeepNEAT node gene: one layer with its hyper-parameters."""

    gene: int
    op: str
    params: dict[str, Any]


@dataclass
class Module:
    """A chain of layers from one search-space stage; ``merge`` joins several inputs."""

    id: int
    stage: int
    layers: list[Layer]
    merge: str = "concat"
    species: int | None = None
    fitness: float | None = None
    # Generations in a row this module was in no assembled network.
    unused: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Module:
        layers = [Layer(**layer) for layer in data["layers"]]
        return cls(**{**data, "layers": layers})


@dataclass
class Connection:
    gene: int
    src: int
    dst: int
    enabled: bool = True


@dataclass
class Blueprint:
    """A DAG whose nodes point to module species, plus training hyper-parameters."""

    id: int
    # node gene -> module species (BP_INPUT and BP_OUTPUT are implicit and not listed).
    nodes: dict[int, int]
    conns: list[Connection]
    optimizer: str
    lr: float
    species: int | None = None
    fitness: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nodes"] = [[gene, species] for gene, species in sorted(self.nodes.items())]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Blueprint:
        return cls(
            **{
                **data,
                "nodes": {int(g): int(s) for g, s in data["nodes"]},
                "conns": [Connection(**c) for c in data["conns"]],
            }
        )

    def copy(self, new_id: int) -> Blueprint:
        return Blueprint(
            id=new_id,
            nodes=dict(self.nodes),
            conns=[Connection(**asdict(c)) for c in self.conns],
            optimizer=self.optimizer,
            lr=self.lr,
        )

    def enabled(self) -> list[Connection]:
        return [c for c in self.conns if c.enabled]

    def referenced_species(self) -> set[int]:
        return set(self.nodes.values())

    def genes(self) -> set[int]:
        """Node and enabled-connection genes (their historical markings)."""
        return set(self.nodes) | {c.gene for c in self.enabled()}

    def active_order(self) -> list[int]:
        """Nodes on an input→output path over enabled connections, in topological order."""
        succ: dict[int, list[int]] = {}
        pred: dict[int, list[int]] = {}
        for c in self.enabled():
            succ.setdefault(c.src, []).append(c.dst)
            pred.setdefault(c.dst, []).append(c.src)
        forward = _reach(BP_INPUT, succ)
        backward = _reach(BP_OUTPUT, pred)
        active = (forward & backward) - {BP_INPUT, BP_OUTPUT}
        indegree = {n: sum(1 for p in pred.get(n, []) if p in active) for n in active}
        ready = sorted(n for n, d in indegree.items() if d == 0)
        order: list[int] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for m in sorted(succ.get(n, [])):
                if m in indegree:
                    indegree[m] -= 1
                    if indegree[m] == 0:
                        ready.append(m)
            ready.sort()
        if len(order) != len(active):
            raise ValueError(f"blueprint {self.id} has a cycle")
        return order

    def reaches(self, src: int, dst: int) -> bool:
        succ: dict[int, list[int]] = {}
        for c in self.enabled():
            succ.setdefault(c.src, []).append(c.dst)
        return dst in _reach(src, succ)


def _reach(start: int, edges: dict[int, list[int]]) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        for nxt in edges.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


@dataclass
class Innovations:
    """Historical markings: the same structural innovation gets the same gene id everywhere."""

    next_gene: int = 2
    conn: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)
    layer: dict[str, int] = field(default_factory=dict)

    def _get(self, table: dict[str, int], key: str) -> int:
        if key not in table:
            table[key] = self.next_gene
            self.next_gene += 1
        return table[key]

    def connection(self, src: int, dst: int) -> int:
        return self._get(self.conn, f"{src}>{dst}")

    def split_node(self, src: int, dst: int) -> int:
        """The node gene created by splitting the connection ``src → dst``."""
        return self._get(self.split, f"{src}>{dst}")

    def new_layer(self, before: int, after: int, op: str) -> int:
        """The layer gene inserted between layer genes ``before`` and ``after`` (0/-1: ends)."""
        return self._get(self.layer, f"{before}>{after}:{op}")

    def fresh(self) -> int:
        gene = self.next_gene
        self.next_gene += 1
        return gene


# -- distances ---------------------------------------------------------------------------------


def value_distance(a: Any, b: Any) -> float:
    """0 for equal values, 1 for different categories or flags, 1 - min/max for numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        # Flags are categories, never numbers: True vs 1 differ (True == 1 in Python).
        return 0.0 if type(a) is type(b) and a == b else 1.0
    if not isinstance(a, int | float):
        return 0.0 if a == b else 1.0
    if not isinstance(b, int | float):
        return 1.0
    if a == b:
        return 0.0
    lo, hi = sorted((abs(float(a)), abs(float(b))))
    if (a < 0) != (b < 0) or hi == 0:
        return 1.0
    return 1.0 - lo / hi


def module_distance(a: Module, b: Module) -> float:
    """Mean parameter distance over aligned layers; unmatched layers and ops count fully."""
    parts = [value_distance(a.merge, b.merge)]
    for i in range(max(len(a.layers), len(b.layers))):
        if i >= len(a.layers) or i >= len(b.layers) or a.layers[i].op != b.layers[i].op:
            parts.append(1.0)
            continue
        pa, pb = a.layers[i].params, b.layers[i].params
        keys = sorted(set(pa) | set(pb))
        parts.extend(value_distance(pa.get(k), pb.get(k)) for k in keys)
        if not keys:
            parts.append(0.0)
    return float(np.mean(parts))


def blueprint_distance(a: Blueprint, b: Blueprint) -> float:
    """1 - shared genes / all genes (node and enabled-connection historical markings)."""
    ga, gb = a.genes(), b.genes()
    union = ga | gb
    return 1.0 - len(ga & gb) / len(union) if union else 0.0


# -- assembly ----------------------------------------------------------------------------------


def assemble(blueprint: Blueprint, modules: dict[int, Module]) -> ArchGraph:
    """The network of ``blueprint`` with ``modules[species]`` at each node of that species.

    Every blueprint node gets its own copy of its module's layers (no weight sharing); a node
    fed by several nodes merges them with its module's merge kind. Several nodes feeding the
    output are concatenated by an ``identity`` node.
    """
    pred: dict[int, list[int]] = {}
    for c in blueprint.enabled():
        pred.setdefault(c.dst, []).append(c.src)
    order = blueprint.active_order()
    if not order:
        raise ValueError(f"blueprint {blueprint.id} has no path from input to output")
    last: dict[int, str] = {BP_INPUT: INPUT}
    nodes: list[Node] = []
    for n in order:
        module = modules[blueprint.nodes[n]]
        inputs = tuple(last[p] for p in sorted(pred[n]) if p in last)
        for j, layer in enumerate(module.layers):
            node_id = f"n{n}l{j}"
            nodes.append(
                Node(node_id, layer.op, dict(layer.params), inputs=inputs, merge=module.merge)
            )
            inputs = (node_id,)
        last[n] = inputs[0]
    outs = [last[p] for p in sorted(pred.get(BP_OUTPUT, [])) if p in last]
    if len(outs) == 1:
        return ArchGraph(nodes, output=outs[0])
    nodes.append(Node("out", "identity", {}, inputs=tuple(outs), merge="concat"))
    return ArchGraph(nodes, output="out")
