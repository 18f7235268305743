"""The two co-evolving populations: speciation, selection and variation.

Follows the CoDeepNEAT of Miikkulainen et al. as TFNE implements it: species by parameter
distance (modules) or gene overlap (blueprints) with a threshold adapted toward a target number
of species; elitism per species; parents from the top fraction; offspring shares proportional
to species fitness; extinction of stagnant species (never the best ``species_elitism``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from nasfw import SearchSpace

from .genome import (
    BP_INPUT,
    BP_OUTPUT,
    Blueprint,
    Connection,
    Innovations,
    Layer,
    Module,
)

T = TypeVar("T", Module, Blueprint)


@dataclass
class Species:
    """Members of one species, its representative and its fitness history."""

    id: int
    stage: int  # the stage of its modules (always 0 for blueprint species)
    representative: dict[str, Any]
    history: list[float] = field(default_factory=list)


@dataclass
class Speciation:
    """Species bookkeeping shared by both populations."""

    threshold: float
    target: int
    species: dict[int, Species] = field(default_factory=dict)
    next_id: int = 1

    def new_species(self, stage: int, representative: dict[str, Any]) -> int:
        sid = self.next_id
        self.next_id += 1
        self.species[sid] = Species(sid, stage, representative)
        return sid


def choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def crossover_parents(rng: np.random.Generator, parents: Sequence[T]) -> tuple[T, T]:
    """Two distinct parents drawn at random, the fitter first (crossover keeps its genes)."""
    i, j = rng.choice(len(parents), size=2, replace=False)
    a, b = sorted((parents[i], parents[j]), key=lambda g: -(g.fitness or 0.0))
    return a, b


def speciate(
    members: list[T],
    spec: Speciation,
    distance: Callable[[T, T], float],
    decode: Callable[[dict[str, Any]], T],
    stage_of: Callable[[T], int],
    max_species: int,
) -> None:
    """Put every member without a species into the nearest one of its stage, or a new one,
    then move the threshold toward the target number of species (TFNE's dynamic variant)."""
    for member in members:
        if member.species is not None and member.species in spec.species:
            continue
        stage = stage_of(member)
        candidates = sorted(
            (distance(decode(s.representative), member), sid)
            for sid, s in spec.species.items()
            if s.stage == stage
        )
        if candidates and (candidates[0][0] <= spec.threshold or len(spec.species) >= max_species):
            member.species = candidates[0][1]
        else:
            member.species = spec.new_species(stage, _encode(member))
    count = len(spec.species)
    if count < spec.target:
        spec.threshold *= 0.95
    elif count > spec.target:
        reps = [decode(s.representative) for s in spec.species.values()]
        optimal = []
        for i, rep in enumerate(reps):
            others = sorted(distance(rep, o) for j, o in enumerate(reps) if j != i)
            optimal.append(others[min(spec.target, len(others)) - 1])
        spec.threshold = float(np.mean(optimal))


def _encode(member: Module | Blueprint) -> dict[str, Any]:
    from dataclasses import asdict

    return member.to_dict() if isinstance(member, Blueprint) else asdict(member)


def species_fitness(members: list[T]) -> dict[int, float | None]:
    """Mean fitness of each species' evaluated members (None when none was evaluated)."""
    values: dict[int, list[float]] = {}
    seen: set[int] = set()
    for m in members:
        assert m.species is not None
        seen.add(m.species)
        if m.fitness is not None:
            values.setdefault(m.species, []).append(m.fitness)
    return {sid: (float(np.mean(values[sid])) if sid in values else None) for sid in sorted(seen)}


@dataclass
class Selection:
    """What selection decided for one population."""

    survivors: list[Any]  # carried unchanged into the next generation (elites, unevaluated)
    parents: dict[int, list[Any]]
    offspring: dict[int, int]
    extinct: set[int]


def select(
    members: list[T],
    spec: Speciation,
    size: int,
    elitism: int,
    parent_fraction: float,
    min_offspring: int,
    max_stagnation: int,
    species_elitism: int,
) -> Selection:
    fitness = species_fitness(members)
    for sid, value in fitness.items():
        if value is not None:
            spec.species[sid].history.append(value)
    # Species nobody belongs to any more (all members gone) are dropped.
    for sid in [s for s in spec.species if s not in fitness]:
        del spec.species[sid]

    ranked = sorted(fitness, key=lambda s: (fitness[s] if fitness[s] is not None else -1.0, -s))
    protected = set(ranked[-species_elitism:]) if species_elitism > 0 else set()
    per_stage: dict[int, int] = {}
    for sid in fitness:
        per_stage[spec.species[sid].stage] = per_stage.get(spec.species[sid].stage, 0) + 1
    extinct: set[int] = set()
    for sid in ranked:
        history = spec.species[sid].history
        if sid in protected or len(history) <= max_stagnation:
            continue
        if per_stage[spec.species[sid].stage] <= 1:
            continue  # the last species of a stage keeps the stage alive
        if history[-1 - max_stagnation] >= max(history[-max_stagnation:]):
            extinct.add(sid)
            per_stage[spec.species[sid].stage] -= 1
    for sid in extinct:
        del spec.species[sid]

    survivors: list[T] = []
    parents: dict[int, list[T]] = {}
    for sid in sorted(spec.species):
        group = [m for m in members if m.species == sid]
        evaluated = sorted(
            (m for m in group if m.fitness is not None), key=lambda m: (-m.fitness, m.id)
        )
        elites = evaluated[:elitism]
        if evaluated:
            # The representative follows the species' best member (TFNE's rebasing), so the
            # species does not drift away from a founder long gone.
            spec.species[sid].representative = _encode(evaluated[0])
        cut = max(1, math.ceil(len(evaluated) * parent_fraction))
        parents[sid] = evaluated[:cut] or group
        survivors.extend(elites)
        survivors.extend(m for m in group if m.fitness is None and getattr(m, "unused", 0) < 2)

    # Offspring shares by species fitness, least fit first, as TFNE does.
    slots = max(size - len(survivors), 0)
    alive = [sid for sid in ranked if sid in spec.species]
    total = sum(max(fitness[s] or 0.0, 0.0) for s in alive)
    offspring: dict[int, int] = {}
    if slots < len(alive) * min_offspring:
        # Too few slots for every species' minimum: the fittest species get them.
        for sid in reversed(alive):
            offspring[sid] = min(min_offspring, slots)
            slots -= offspring[sid]
        return Selection(survivors, parents, offspring, extinct)  # type: ignore[arg-type]
    for k, sid in enumerate(alive):
        # Equal shares of what is left when no species scored (e.g. every network failed).
        share = (max(fitness[sid] or 0.0, 0.0) / total) if total > 0 else 1.0 / (len(alive) - k)
        want = max(min_offspring, round(share * slots))
        offspring[sid] = min(want, slots)
        slots -= offspring[sid]
        total -= max(fitness[sid] or 0.0, 0.0)
    return Selection(survivors, parents, offspring, extinct)  # type: ignore[arg-type]


# -- variation ---------------------------------------------------------------------------------


@dataclass
class Variation:
    """Rates of the variation operators (probabilities, normalised where they compete)."""

    module_crossover: float
    module_add_layer: float
    module_remove_layer: float
    module_param_fraction: float
    module_max_layers: int
    bp_add_node: float
    bp_add_conn: float
    bp_remove_conn: float
    bp_remove_node: float
    bp_species: float
    bp_hyper: float
    bp_crossover: float
    bp_max_nodes: int
    optimizers: list[str]
    lr_min: float
    lr_max: float
    # Per search-space stage: at most this many blueprint nodes of the stage, and layers in a
    # module of it (e.g. a text network's single embedding).
    stage_max_nodes: list[int] = field(default_factory=list)


def mutate_module(
    parent: Module,
    new_id: int,
    space: SearchSpace,
    inn: Innovations,
    var: Variation,
    rng: np.random.Generator,
) -> Module:
    layers = [Layer(layer.gene, layer.op, dict(layer.params)) for layer in parent.layers]
    merge = parent.merge
    roll = rng.random()
    stage = space.stages[parent.stage]
    from nasfw import RandomChooser

    max_layers = min(var.module_max_layers, stage.max_nodes)
    if roll < var.module_add_layer and len(layers) < max_layers:
        at = int(rng.integers(len(layers) + 1))
        node = space.sample_node(RandomChooser(rng), stage, "x")
        before = layers[at - 1].gene if at > 0 else 0
        after = layers[at].gene if at < len(layers) else -1
        layers.insert(at, Layer(inn.new_layer(before, after, node.op), node.op, dict(node.params)))
    elif roll < var.module_add_layer + var.module_remove_layer and len(layers) > 1:
        del layers[int(rng.integers(len(layers)))]
    else:
        i = int(rng.integers(len(layers)))
        from nasfw import Node

        node = space.mutate_node(
            Node("x", layers[i].op, layers[i].params), rng, var.module_param_fraction
        )
        layers[i] = Layer(layers[i].gene, layers[i].op, dict(node.params))
        if len(space.merge) > 1 and rng.random() < var.module_param_fraction:
            merge = choice(rng, [m for m in space.merge if m != merge])
    return Module(new_id, parent.stage, layers, merge)


def crossover_modules(
    fitter: Module, other: Module, new_id: int, rng: np.random.Generator
) -> Module:
    """Layers matched by gene: params from either parent at random; the rest from the fitter."""
    theirs = {layer.gene: layer for layer in other.layers}
    layers = []
    for layer in fitter.layers:
        match = theirs.get(layer.gene)
        if match is not None and match.op == layer.op and rng.random() < 0.5:
            layers.append(Layer(layer.gene, layer.op, dict(match.params)))
        else:
            layers.append(Layer(layer.gene, layer.op, dict(layer.params)))
    merge = fitter.merge if rng.random() < 0.5 else other.merge
    return Module(new_id, fitter.stage, layers, merge)


def _stage_of_node(bp: Blueprint, node: int, species_stage: dict[int, int], last: int) -> int:
    if node == BP_INPUT:
        return 0
    if node == BP_OUTPUT:
        return last
    return species_stage[bp.nodes[node]]


def mutate_blueprint(
    parent: Blueprint,
    new_id: int,
    species_by_stage: dict[int, list[int]],
    inn: Innovations,
    var: Variation,
    rng: np.random.Generator,
    allow_skip: bool,
) -> Blueprint:
    """One mutation of ``parent`` that keeps the blueprint a valid stage-ordered DAG."""
    species_stage = {s: stage for stage, ids in species_by_stage.items() for s in ids}
    last = max(species_by_stage)
    ops = [
        (var.bp_add_node, _add_node),
        (var.bp_add_conn if allow_skip else 0.0, _add_conn),
        (var.bp_remove_conn, _remove_conn),
        (var.bp_remove_node, _remove_node),
        (var.bp_species, _change_species),
        (var.bp_hyper, _change_hyper),
    ]
    weights = np.array([w for w, _ in ops], dtype=float)
    for _ in range(10):
        child = parent.copy(new_id)
        pick = int(rng.choice(len(ops), p=weights / weights.sum()))
        if ops[pick][1](child, species_by_stage, species_stage, last, inn, var, rng):
            return child
    child = parent.copy(new_id)
    _change_hyper(child, species_by_stage, species_stage, last, inn, var, rng)
    return child


def _add_node(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    if len(bp.nodes) >= var.bp_max_nodes:
        return False
    conn = choice(rng, bp.enabled())
    lo = _stage_of_node(bp, conn.src, species_stage, last)
    hi = _stage_of_node(bp, conn.dst, species_stage, last)
    counts = [0] * (last + 1)
    for sid in bp.nodes.values():
        counts[species_stage[sid]] += 1
    room = [
        s
        for s in range(lo, hi + 1)
        if not var.stage_max_nodes or counts[s] < var.stage_max_nodes[s]
    ]
    if not room:
        return False
    stage = choice(rng, room)
    node = inn.split_node(conn.src, conn.dst)
    if node in bp.nodes:
        return False
    conn.enabled = False
    bp.nodes[node] = choice(rng, species_by_stage[stage])
    bp.conns.append(Connection(inn.connection(conn.src, node), conn.src, node))
    bp.conns.append(Connection(inn.connection(node, conn.dst), node, conn.dst))
    return True


def _add_conn(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    nodes = [BP_INPUT, *sorted(bp.nodes)]
    src = choice(rng, nodes)
    stage = _stage_of_node(bp, src, species_stage, last)
    existing = {(c.src, c.dst) for c in bp.enabled()}
    targets = [
        n
        for n in [*sorted(bp.nodes), BP_OUTPUT]
        if n != src
        and (src, n) not in existing
        and (src, n) != (BP_INPUT, BP_OUTPUT)  # a path through no module would be no network
        and _stage_of_node(bp, n, species_stage, last) >= stage
        # The input feeds the first stage only (a text network's embedding reads the tokens).
        and (src != BP_INPUT or _stage_of_node(bp, n, species_stage, last) == 0)
        and not bp.reaches(n, src)
    ]
    if not targets:
        return False
    dst = choice(rng, targets)
    for c in bp.conns:
        if (c.src, c.dst) == (src, dst):
            c.enabled = True
            return True
    bp.conns.append(Connection(inn.connection(src, dst), src, dst))
    return True


def _remove_conn(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    out_deg: dict[int, int] = {}
    in_deg: dict[int, int] = {}
    for c in bp.enabled():
        out_deg[c.src] = out_deg.get(c.src, 0) + 1
        in_deg[c.dst] = in_deg.get(c.dst, 0) + 1
    removable = [c for c in bp.enabled() if out_deg[c.src] > 1 and in_deg[c.dst] > 1]
    if not removable:
        return False
    choice(rng, removable).enabled = False
    return bool(bp.active_order())


def _remove_node(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    if len(bp.nodes) <= 1:
        return False
    node = choice(rng, sorted(bp.nodes))
    preds = sorted({c.src for c in bp.enabled() if c.dst == node})
    succs = sorted({c.dst for c in bp.enabled() if c.src == node})
    stages_left = {species_stage[s] for n, s in bp.nodes.items() if n != node}
    if species_stage[bp.nodes[node]] not in stages_left:
        return False  # every stage keeps at least one node
    if BP_INPUT in preds and any(_stage_of_node(bp, s, species_stage, last) > 0 for s in succs):
        return False  # bridging it would feed the input past the first stage
    del bp.nodes[node]
    bp.conns = [c for c in bp.conns if node not in (c.src, c.dst)]
    existing = {(c.src, c.dst) for c in bp.conns}
    for p in preds:
        for s in succs:
            if (p, s) in existing:
                for c in bp.conns:
                    if (c.src, c.dst) == (p, s):
                        c.enabled = True
            else:
                bp.conns.append(Connection(inn.connection(p, s), p, s))
    return bool(bp.active_order())


def _change_species(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    node = choice(rng, sorted(bp.nodes))
    options = [s for s in species_by_stage[species_stage[bp.nodes[node]]] if s != bp.nodes[node]]
    if not options:
        return False
    bp.nodes[node] = choice(rng, options)
    return True


def _change_hyper(bp, species_by_stage, species_stage, last, inn, var, rng) -> bool:
    if len(var.optimizers) > 1 and rng.random() < 0.3:
        bp.optimizer = choice(rng, [o for o in var.optimizers if o != bp.optimizer])
    else:
        # A log-normal step keeps the learning rate positive and scale-free.
        lr = bp.lr * math.exp(rng.normal(0, 0.5))
        bp.lr = float(min(max(lr, var.lr_min), var.lr_max))
    return True


def crossover_blueprints(
    fitter: Blueprint,
    other: Blueprint,
    new_id: int,
    rng: np.random.Generator,
    species_stage: dict[int, int],
) -> Blueprint:
    """Genes matched by historical marking: node species from either parent at random; the
    structure of the fitter parent (its disjoint and excess genes).

    ``species_stage`` (module species -> stage): a node takes the other parent's species only
    when it is of the same stage (the same split gene may sit in different stages in the two
    parents), and a connection is enabled only when that closes no cycle.
    """
    child = fitter.copy(new_id)
    for node in child.nodes:
        if (
            node in other.nodes
            and rng.random() < 0.5
            and species_stage[other.nodes[node]] == species_stage[child.nodes[node]]
        ):
            child.nodes[node] = other.nodes[node]
    theirs = {c.gene: c for c in other.conns}
    for c in child.conns:
        match = theirs.get(c.gene)
        if match is not None and rng.random() < 0.5:
            if match.enabled and not c.enabled and child.reaches(c.dst, c.src):
                continue  # the fitter disabled it and wired the other way round since
            c.enabled = match.enabled
    if not child.active_order():  # a disabled gene cut every path: keep the fitter's wiring
        child = fitter.copy(new_id)
    if rng.random() < 0.5:
        child.optimizer, child.lr = other.optimizer, other.lr
    return child


def minimal_blueprint(
    new_id: int, species: list[int], inn: Innovations, optimizer: str, lr: float
) -> Blueprint:
    """input → one node per stage (given species) → output: θ0 = 0 in NAS mode."""
    nodes: dict[int, int] = {}
    conns: list[Connection] = []
    prev = BP_INPUT
    for stage, sid in enumerate(species):
        node = inn.split_node(-1, stage)  # the same first-node gene in every blueprint
        nodes[node] = sid
        conns.append(Connection(inn.connection(prev, node), prev, node))
        prev = node
    conns.append(Connection(inn.connection(prev, BP_OUTPUT), prev, BP_OUTPUT))
    return Blueprint(new_id, nodes, conns, optimizer, lr)
