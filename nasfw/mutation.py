"""Mutation of a search space's graphs: one random edit that keeps a graph in its space
(:meth:`nasfw.SearchSpace.mutate`), as NEAT's and regularized evolution's mutations do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from nasfw.choosers import Chooser, RandomChooser
from nasfw.graph import INPUT, ArchGraph, Node


class Stage(Protocol):
    name: str
    min_nodes: int


class SearchSpace(Protocol):
    """What a mutation needs of :class:`nasfw.SearchSpace` (which hands itself in)."""

    skip: bool
    merge: Sequence[str]
    max_nodes: int
    stages: Sequence[Any]
    ranges: Mapping[str, Mapping[str, Any]]

    def contains(self, graph: ArchGraph) -> bool: ...
    def stage_of(self, graph: ArchGraph) -> dict[str, int]: ...
    def sample_node(self, chooser: Chooser, stage: Any, node_id: str) -> Node: ...
    def mutate_node(self, node: Node, rng: np.random.Generator, fraction: float) -> Node: ...


def mutate(
    space: SearchSpace, graph: ArchGraph, rng: np.random.Generator, attempts: int = 50
) -> ArchGraph:
    """A different valid graph one random edit away from ``graph``.

    Edits: change a param, change a node's op, insert a node after another, remove a node,
    add or remove a skip connection. Edits that would leave the space are retried.
    """
    edits = [_mutate_param, _mutate_op, _insert_node, _remove_node]
    if space.skip:
        edits += [_add_skip, _remove_skip]
    for _ in range(attempts):
        edit = edits[int(rng.integers(len(edits)))]
        try:
            child = edit(space, graph, rng)
        except _NoEdit:
            continue
        if child is not None and child != graph and space.contains(child):
            return child
    return graph


def _pick(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> Node:
    nodes = list(graph)
    return nodes[int(rng.integers(len(nodes)))]


def _mutate_param(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    node = _pick(space, graph, rng)
    if not space.ranges.get(node.op):
        raise _NoEdit
    return graph.with_node(space.mutate_node(node, rng, fraction=0.0))


def _mutate_op(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    node = _pick(space, graph, rng)
    stage = space.stages[space.stage_of(graph)[node.id]]
    fresh = space.sample_node(RandomChooser(rng), stage, node.id)
    return graph.with_node(replace(node, op=fresh.op, params=fresh.params))


def _fresh_id(space: SearchSpace, graph: ArchGraph, stage: Stage) -> str:
    i = 0
    while f"{stage.name}{i}" in graph:
        i += 1
    return f"{stage.name}{i}"


def _insert_node(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    if len(graph) >= space.max_nodes:
        raise _NoEdit
    anchor = _pick(space, graph, rng)
    stage = space.stages[space.stage_of(graph)[anchor.id]]
    new = space.sample_node(RandomChooser(rng), stage, _fresh_id(space, graph, stage))
    new = replace(new, inputs=(anchor.id,))
    nodes: list[Node] = []
    for n in graph:
        if n.inputs and n.inputs[0] == anchor.id:
            n = replace(n, inputs=(new.id, *n.inputs[1:]))
        nodes.append(n)
        if n.id == anchor.id:
            nodes.append(new)
    output = new.id if graph.output == anchor.id else graph.output
    return ArchGraph(nodes, output)


def _remove_node(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    node = _pick(space, graph, rng)
    stage_index = space.stage_of(graph)[node.id]
    in_stage = sum(1 for s in space.stage_of(graph).values() if s == stage_index)
    if in_stage <= space.stages[stage_index].min_nodes or len(graph) == 1:
        raise _NoEdit
    main = node.inputs[0]
    nodes = []
    for n in graph:
        if n.id == node.id:
            continue
        inputs = tuple(main if i == node.id else i for i in n.inputs)
        inputs = tuple(dict.fromkeys(inputs))  # a skip may now duplicate the main input
        nodes.append(replace(n, inputs=inputs))
    if graph.output == node.id:
        if main == INPUT:
            raise _NoEdit
        return ArchGraph(nodes, main)
    return ArchGraph(nodes, graph.output)


def _add_skip(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    order = graph.topological_order()
    stages = space.stage_of(graph)
    node = _pick(space, graph, rng)
    position = [n.id for n in order].index(node.id)
    sources = [
        n.id
        for n in order[:position]
        if stages[n.id] == stages[node.id] and n.id not in node.inputs
    ]
    if not sources:
        raise _NoEdit
    src = sources[int(rng.integers(len(sources)))]
    merge = space.merge[int(rng.integers(len(space.merge)))]
    return graph.with_node(replace(node, inputs=(*node.inputs, src), merge=merge))


def _remove_skip(space: SearchSpace, graph: ArchGraph, rng: np.random.Generator) -> ArchGraph:
    merged = [n for n in graph if len(n.inputs) > 1]
    if not merged:
        raise _NoEdit
    node = merged[int(rng.integers(len(merged)))]
    drop = 1 + int(rng.integers(len(node.inputs) - 1))
    inputs = node.inputs[:drop] + node.inputs[drop + 1 :]
    return graph.with_node(replace(node, inputs=inputs, merge="concat"))


class _NoEdit(Exception):
    """This edit does not apply to this graph; try another."""
