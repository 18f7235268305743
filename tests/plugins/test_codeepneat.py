from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CONF, load_space

from nasfw import ArchGraph, ConfigError, Result, build_model
from nasfw.plugins.tuners.codeepneat import CoDeepNEAT, CoDeepNEATConfig
from nasfw.plugins.tuners.codeepneat.genome import (
    BP_INPUT,
    BP_OUTPUT,
    Blueprint,
    Connection,
    Innovations,
    Layer,
    Module,
    assemble,
    blueprint_distance,
    module_distance,
    value_distance,
)
from nasfw.plugins.tuners.codeepneat.population import (
    Speciation,
    Species,
    crossover_blueprints,
    crossover_modules,
    minimal_blueprint,
    mutate_blueprint,
    mutate_module,
    select,
    speciate,
)
from nasfw.testing import TunerContract, fake_results

SMALL = {
    "generations": 3,
    "blueprint_population": 4,
    "module_population": 8,
    "genomes_per_blueprint": 2,
}
IMAGE = SimpleNamespace(input_shape=(1, 16, 16), n_outputs=3)
TABULAR = SimpleNamespace(input_shape=(6,), n_outputs=2)
SEQUENCE = SimpleNamespace(input_shape=(2, 24), n_outputs=1)
TEXT = SimpleNamespace(input_shape=(12,), n_outputs=2, vocab_size=30)
PROBLEMS = {
    "image_small": IMAGE,
    "tabular_mlp": TABULAR,
    "sequence_small": SEQUENCE,
    "text_small": TEXT,
}


@pytest.fixture(params=sorted(PROBLEMS))
def space(request, ops):
    return load_space(request.param, ops)


@pytest.fixture
def image(ops):
    return load_space("image_small", ops)


@pytest.fixture
def tabular(ops):
    return load_space("tabular_mlp", ops)


def make(space, seed=0, **config):
    return CoDeepNEAT(CoDeepNEATConfig(**{**SMALL, **config}), space, seed)


def problem_for(space):
    return PROBLEMS[space.name]


def example(problem, n=2):
    if getattr(problem, "vocab_size", None):
        return torch.randint(0, problem.vocab_size, (n, *problem.input_shape))
    return torch.randn(n, *problem.input_shape)


def dense(gene=1, units=64, activation="relu", merge="concat", mid=1, species=None, stage=0):
    layer = Layer(gene, "dense", {"units": units, "activation": activation})
    return Module(mid, stage, [layer], merge, species=species)


def conv(mid=1, filters=16, kernel=3, merge="concat", species=None):
    layer = Layer(1, "conv2d", {"filters": filters, "kernel_size": kernel, "activation": "relu"})
    return Module(mid, 0, [layer], merge, species=species)


def blueprint(nodes, edges, inn=None):
    """A blueprint with ``nodes`` (gene -> species) and enabled ``edges`` (src, dst)."""
    inn = inn or Innovations(next_gene=100)
    conns = [Connection(inn.connection(s, d), s, d) for s, d in edges]
    return Blueprint(1, dict(nodes), conns, "adam", 1e-3)


def add_species(tuner, stage, count=2):
    """A new module species of ``stage`` with ``count`` random members; its id."""
    sid = None
    for _ in range(count):
        module = tuner._random_module(stage)
        if sid is None:
            sid = tuner.mod_spec.new_species(stage, asdict(module))
        module.species = sid
        tuner.modules.append(module)
    return sid


def species_stage_of(tuner):
    return {sid: stage for stage, ids in tuner._species_by_stage().items() for sid in ids}


# -- 1. the tuner contract ---------------------------------------------------------------------


class TestCoDeepNEAT(TunerContract):
    @pytest.fixture
    def make_tuner(self, space):
        return lambda seed: make(space, seed)

    def test_generations_are_blueprints_times_genomes(self, make_tuner):
        assert [len(g) for g in self.run(make_tuner(0))] == [8, 8, 8]

    def test_same_seed_same_populations_after_restore(self, make_tuner):
        a, b = make_tuner(4), make_tuner(4)
        for tuner in (a, b):
            candidates = tuner.ask()
            tuner.tell(candidates, fake_results(candidates))
        assert a._population() == b._population()
        resumed = make_tuner(4)
        resumed.restore(json.loads(json.dumps(a.state())))
        assert resumed._population() == a._population()
        for tuner in (a, resumed):
            candidates = tuner.ask()
            tuner.tell(candidates, fake_results(candidates))
        assert resumed._population() == a._population()
        assert resumed.state() == a.state()

    def test_candidates_carry_training_hyperparameters(self, make_tuner):
        tuner = make_tuner(0)
        by_id = {bp.id: bp for bp in tuner.blueprints}
        for c in tuner.ask():
            bp = by_id[c.attrs["blueprint"]]
            assert c.train == {"optimizer": bp.optimizer, "lr": bp.lr}
            # Only what the tuner samples: importances over layer positions would mean nothing.
            assert c.params == {"optimizer": bp.optimizer, "lr": bp.lr}
            assert set(c.params) == set(c.distributions)


# -- 2. distances ------------------------------------------------------------------------------


def test_value_distance():
    assert value_distance(16, 32) == 0.5
    assert value_distance(32, 16) == 0.5
    assert value_distance(0.25, 0.5) == 0.5
    assert value_distance(7, 7) == 0.0
    assert value_distance(0.1, 0.1) == 0.0
    assert value_distance("relu", "gelu") == 1.0
    assert value_distance("relu", "relu") == 0.0
    assert value_distance(True, False) == 1.0
    assert value_distance(True, True) == 0.0
    # A flag is never a number, although True == 1 and False == 0 in Python.
    assert value_distance(True, 1) == 1.0
    assert value_distance(1, True) == 1.0
    assert value_distance(False, 0) == 1.0
    assert value_distance(0.0, False) == 1.0
    assert value_distance(-4, 4) == 1.0
    assert value_distance(0, 5) == 1.0


def test_module_distance():
    a = dense(units=64)
    assert module_distance(a, dense(units=64)) == 0.0
    # merge, units, activation: only units differs, by 1 - 32/64.
    near = module_distance(a, dense(units=32))
    assert near == pytest.approx(0.5 / 3)
    assert module_distance(a, dense(units=64, activation="gelu")) == pytest.approx(1 / 3)
    other_op = Module(2, 0, [Layer(1, "dropout", {"rate": 0.2})])
    assert module_distance(a, other_op) > near
    assert module_distance(a, other_op) == pytest.approx(0.5)  # merge equal, op differs
    longer = Module(3, 0, [*a.layers, Layer(2, "dropout", {"rate": 0.2})])
    assert 0 < module_distance(a, longer) < 1
    assert module_distance(a, longer) == module_distance(longer, a)


def test_blueprint_distance_is_gene_overlap():
    inn = Innovations()
    a = minimal_blueprint(1, [5], inn, "adam", 1e-3)
    b = minimal_blueprint(2, [6], inn, "sgd", 1e-2)
    # The same genes (node + 2 connections); species and training knobs do not count.
    assert a.genes() == b.genes() and len(a.genes()) == 3
    assert blueprint_distance(a, b) == 0.0
    (node,) = b.nodes
    out = next(c for c in b.conns if c.dst == BP_OUTPUT)
    out.enabled = False
    split = inn.split_node(node, BP_OUTPUT)
    b.nodes[split] = 6
    b.conns += [
        Connection(inn.connection(node, split), node, split),
        Connection(inn.connection(split, BP_OUTPUT), split, BP_OUTPUT),
    ]
    # Shared: node, input->node. a only: node->out (disabled in b). b only: split + 2 conns.
    assert blueprint_distance(a, b) == pytest.approx(1 - 2 / 6)
    assert blueprint_distance(b, a) == blueprint_distance(a, b)
    far = blueprint({500: 5}, [(BP_INPUT, 500), (500, BP_OUTPUT)], Innovations(next_gene=400))
    assert blueprint_distance(a, far) == 1.0


# -- 3. speciation -----------------------------------------------------------------------------


def module_speciation(members, threshold=0.3, target=4, max_species=100):
    spec = Speciation(threshold, target)
    first = members[0]
    first.species = spec.new_species(first.stage, asdict(first))
    speciate(members, spec, module_distance, Module.from_dict, lambda m: m.stage, max_species)
    return spec


def test_speciate_close_joins_distant_founds():
    base = dense(units=64, mid=1)
    close = dense(units=60, mid=2)
    distant = Module(3, 0, [Layer(2, "dropout", {"rate": 0.2})])
    other_stage = dense(units=64, mid=4, stage=1)  # distance 0, but another stage
    spec = module_speciation([base, close, distant, other_stage])
    assert close.species == base.species
    assert distant.species not in (None, base.species)
    assert other_stage.species not in (base.species, distant.species)
    assert spec.species[other_stage.species].stage == 1
    assert len(spec.species) == 3
    for m in (base, close, distant, other_stage):
        rep = Module.from_dict(spec.species[m.species].representative)
        assert rep.stage == m.stage
    # Three species, target 4: the threshold comes down.
    assert spec.threshold == pytest.approx(0.3 * 0.95)


def test_speciate_caps_the_number_of_species():
    members = [dense(units=64, mid=1), Module(2, 0, [Layer(2, "dropout", {"rate": 0.2})])]
    spec = module_speciation(members, max_species=1)
    assert members[1].species == members[0].species and len(spec.species) == 1


def test_speciate_recomputes_the_threshold_when_too_many():
    members = [
        dense(units=64, mid=1),
        Module(2, 0, [Layer(2, "dropout", {"rate": 0.2})]),
        Module(3, 0, [Layer(3, "batchnorm", {})], merge="add"),
        dense(units=8, activation="tanh", mid=4, merge="add"),
    ]
    spec = module_speciation(members, threshold=0.1, target=2)
    assert len(spec.species) == 4
    reps = [Module.from_dict(s.representative) for s in spec.species.values()]
    second_nearest = [sorted(module_distance(r, o) for o in reps if o is not r)[1] for r in reps]
    assert spec.threshold == pytest.approx(statistics.fmean(second_nearest))
    assert spec.threshold > 0.1
    # At the target the threshold stays.
    spec.target = 4
    before = spec.threshold
    speciate(members, spec, module_distance, Module.from_dict, lambda m: m.stage, 100)
    assert spec.threshold == before


def test_tuner_species_have_representatives(space):
    tuner = make(space, seed=2)
    for _ in range(2):
        candidates = tuner.ask()
        tuner.tell(candidates, fake_results(candidates))
        for m in tuner.modules:
            assert m.species in tuner.mod_spec.species
            rep = Module.from_dict(tuner.mod_spec.species[m.species].representative)
            assert rep.stage == m.stage == tuner.mod_spec.species[m.species].stage
        for bp in tuner.blueprints:
            assert bp.species in tuner.bp_spec.species
            Blueprint.from_dict(tuner.bp_spec.species[bp.species].representative)


# -- 4. assembly -------------------------------------------------------------------------------


def test_same_species_twice_is_the_same_module_with_separate_weights(ops):
    module = conv(filters=16, species=7)
    bp = blueprint({10: 7, 11: 7}, [(BP_INPUT, 10), (10, 11), (11, BP_OUTPUT)])
    graph = assemble(bp, {7: module})
    first, second = graph.topological_order()
    assert first.id != second.id
    assert (first.op, dict(first.params)) == (second.op, dict(second.params))
    assert (first.op, dict(first.params)) == ("conv2d", module.layers[0].params)
    assert second.inputs == (first.id,) and graph.output == second.id
    model = build_model(graph, IMAGE, ops)
    a, b = model.node_modules[first.id], model.node_modules[second.id]
    assert a is not b
    assert not {id(p) for p in a.parameters()} & {id(p) for p in b.parameters()}
    weight_b = b[0].weight.detach().clone()
    with torch.no_grad():
        a[0].weight.add_(1.0)
    assert torch.equal(b[0].weight, weight_b)
    assert model(torch.zeros(2, *IMAGE.input_shape)).shape == (2, 3)


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_several_predecessors_use_the_module_merge(ops, merge):
    left, right = conv(mid=1, filters=16, species=1), conv(mid=2, filters=24, species=2)
    join = Module(
        3,
        0,
        [
            Layer(1, "conv2d", {"filters": 8, "kernel_size": 1, "activation": "relu"}),
            Layer(2, "maxpool2d", {"pool_size": 2}),
        ],
        merge,
        species=3,
    )
    bp = blueprint(
        {10: 1, 11: 2, 12: 3},
        [(BP_INPUT, 10), (BP_INPUT, 11), (10, 12), (11, 12), (12, BP_OUTPUT)],
    )
    graph = assemble(bp, {1: left, 2: right, 3: join})
    joined = graph["n12l0"]
    assert sorted(joined.inputs) == ["n10l0", "n11l0"]
    assert joined.merge == merge
    assert graph["n12l1"].inputs == ("n12l0",)
    assert graph.output == "n12l1"
    model = build_model(graph, IMAGE, ops)
    assert model.merges["n12l0"].kind == merge
    assert model(torch.zeros(2, *IMAGE.input_shape)).shape == (2, 3)


def test_several_outputs_are_merged_by_one_identity_node(ops):
    modules = {1: conv(mid=1, species=1), 2: dense(mid=2, units=32, species=2, stage=1)}
    bp = blueprint(
        {10: 1, 11: 2},
        [(BP_INPUT, 10), (10, 11), (10, BP_OUTPUT), (11, BP_OUTPUT)],
    )
    graph = assemble(bp, modules)
    out = graph[graph.output]
    assert out.op == "identity" and sorted(out.inputs) == ["n10l0", "n11l0"]
    assert sum(1 for n in graph if n.op == "identity") == 1
    model = build_model(graph, IMAGE, ops)
    assert model(torch.zeros(2, *IMAGE.input_shape)).shape == (2, 3)


def test_inactive_nodes_are_left_out():
    modules = {1: dense(mid=1, species=1)}
    # 11 is fed by nothing, 12 feeds nothing: neither is on an input -> output path.
    bp = blueprint(
        {10: 1, 11: 1, 12: 1},
        [(BP_INPUT, 10), (11, 10), (10, 12), (10, BP_OUTPUT)],
    )
    assert bp.active_order() == [10]
    assert [n.id for n in assemble(bp, modules)] == ["n10l0"]


def test_ask_puts_one_module_per_species_at_every_node(space):
    tuner = make(space, seed=3, genomes_per_blueprint=3)
    for _ in range(3):
        by_bp = {bp.id: bp for bp in tuner.blueprints}
        by_module = {m.id: m for m in tuner.modules}
        candidates = tuner.ask()
        assert len(candidates) == len(tuner.blueprints) * 3
        for c in candidates:
            bp = by_bp[c.attrs["blueprint"]]
            chosen = {by_module[mid].species: by_module[mid] for mid in c.attrs["modules"]}
            assert sorted(chosen) == sorted(bp.referenced_species()) == c.attrs["module_species"]
            assert len(chosen) == len(c.attrs["modules"])  # one module per species
            expected = []
            for node in bp.active_order():
                module = chosen[bp.nodes[node]]
                for j, layer in enumerate(module.layers):
                    graph_node = c.graph[f"n{node}l{j}"]
                    assert (graph_node.op, dict(graph_node.params)) == (layer.op, layer.params)
                    expected.append(graph_node.id)
            assert sorted(expected) == sorted(n.id for n in c.graph if n.id != "out")
        tuner.tell(candidates, fake_results(candidates))


def test_every_assembled_graph_builds_and_runs(space, ops):
    problem = problem_for(space)
    tuner = make(space, seed=5, generations=4, genomes_per_blueprint=1)
    x = example(problem)
    seen = 0
    while candidates := tuner.ask():
        for c in candidates:
            model = build_model(c.graph, problem, ops)
            model.eval()
            assert model(x).shape == (2, problem.n_outputs)
            space.check(_without_out(c.graph), structure=False)
            seen += 1
        tuner.tell(candidates, fake_results(candidates))
    assert seen == 4 * 4


def _without_out(graph: ArchGraph) -> ArchGraph:
    """The graph with the output ``identity`` join (an op of no search space, which may also
    take the network input itself) as a no-op dropout, which both spaces allow."""
    out = graph[graph.output]
    if out.op != "identity":
        return graph
    return graph.with_node(replace(out, op="dropout", params={"rate": 0.0}))


# -- 5. fitness --------------------------------------------------------------------------------


def controlled_results(n):
    """Metrics 0.1 .. with every 4th network failed and one NaN (both count as 0)."""
    results, scores = [], []
    for i in range(n):
        if i % 4 == 3:
            results.append(Result.failed("boom"))
            scores.append(0.0)
        elif i == 1:
            results.append(Result(status="ok", metric=math.nan))
            scores.append(0.0)
        else:
            results.append(Result(status="ok", metric=0.1 * (i % 7 + 1)))
            scores.append(0.1 * (i % 7 + 1))
    return results, scores


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_fitness_flows_back_to_blueprints_and_modules(tabular, aggregation):
    agg = statistics.fmean if aggregation == "mean" else max
    tuner = make(
        tabular,
        seed=1,
        blueprint_population=2,
        genomes_per_blueprint=3,
        module_population=12,
        fitness_aggregation=aggregation,
    )
    candidates = tuner.ask()
    results, scores = controlled_results(len(candidates))
    tuner.assign_fitness(results)
    bp_scores, mod_scores = {}, {}
    for c, score in zip(candidates, scores, strict=True):
        bp_scores.setdefault(c.attrs["blueprint"], []).append(score)
        for mid in c.attrs["modules"]:
            mod_scores.setdefault(mid, []).append(score)
    assert sorted(bp_scores) == sorted(bp.id for bp in tuner.blueprints)
    for bp in tuner.blueprints:
        assert bp.fitness == pytest.approx(agg(bp_scores[bp.id]))
        assert len(bp_scores[bp.id]) == 3
    # 6 networks of one stage use at most 6 of the 12 modules.
    unused = [m for m in tuner.modules if m.id not in mod_scores]
    assert unused
    for m in tuner.modules:
        if m.id in mod_scores:
            assert m.fitness == pytest.approx(agg(mod_scores[m.id]))
            assert m.unused == 0
        else:
            assert m.fitness is None and m.unused == 1
    # The scores are the trackers' (generation_mean_val_<metric>): not repeated by the tuner.
    assert not {"mean_fitness", "best_fitness"} & set(tuner.generation_report())


def test_unused_modules_are_not_ranked_as_zero(tabular):
    tuner = make(tabular, seed=1, blueprint_population=2, genomes_per_blueprint=1)
    candidates = tuner.ask()
    tuner.assign_fitness([Result(status="ok", metric=0.0) for _ in candidates])
    used = {m.id for m in tuner.modules if m.fitness is not None}
    selection = select(tuner.modules, tuner.mod_spec, 8, 1, 1.0, 1, 5, 2)
    # Only evaluated modules are elites or parents, even when everyone scored 0.
    assert all(p.id in used for ps in selection.parents.values() for p in ps)
    elites = [m for m in selection.survivors if m.fitness is not None]
    assert {m.id for m in elites} <= used


def test_failed_networks_never_outrank_ones_that_trained(tabular):
    """Metrics below 0 (R², -MAE, MCC): a failure scores as the worst trained network does."""
    tuner = make(tabular, seed=1, blueprint_population=2, genomes_per_blueprint=1)
    candidates = tuner.ask()
    results = [Result(status="ok", metric=-30.0), Result.failed("too large")]
    tuner.assign_fitness(results)
    by_id = {bp.id: bp.fitness for bp in tuner.blueprints}
    ok, failed = (by_id[c.attrs["blueprint"]] for c in candidates)
    assert ok == failed == -30.0
    tuner = make(tabular, seed=1, blueprint_population=2, genomes_per_blueprint=1)
    candidates = tuner.ask()
    tuner.assign_fitness([Result(status="ok", metric=0.7), Result.failed("too large")])
    assert sorted(bp.fitness for bp in tuner.blueprints) == [0.0, 0.7]  # accuracy: as before


def test_stage_max_nodes_caps_modules_and_blueprints(ops):
    """text_small's embed stage allows one node: no module or blueprint ever chains two
    embeddings (the second would read vectors, not token ids)."""
    text = load_space("text_small", ops)
    tuner = make(text, seed=3, generations=6, blueprint_population=6, module_population=12)
    while candidates := tuner.ask():
        for c in candidates:
            embeddings = [n for n in c.graph if n.op == "embedding"]
            assert len(embeddings) == 1 and embeddings[0].inputs == ("input",)
            build_model(c.graph, TEXT, ops)
        tuner.tell(candidates, fake_results(candidates))
    assert all(len(m.layers) == 1 for m in tuner.modules if m.stage == 0)


# -- 6. selection ------------------------------------------------------------------------------


def population(fitness_by_species, stages=None, histories=None):
    """Synthetic modules (one per fitness value) and their speciation."""
    stages = stages or {}
    spec = Speciation(0.3, 3)
    members, mid = [], 1
    for sid, values in fitness_by_species.items():
        stage = stages.get(sid, 0)
        spec.species[sid] = Species(sid, stage, {}, list((histories or {}).get(sid, [])))
        for value in values:
            members.append(dense(gene=mid, units=8 + mid, mid=mid, species=sid, stage=stage))
            members[-1].fitness = value
            mid += 1
    return members, spec


def run_select(members, spec, size=16, elitism=1, min_offspring=1, stagnation=5, keep=2):
    return select(members, spec, size, elitism, 0.5, min_offspring, stagnation, keep)


def test_elites_survive_unchanged_and_parents_are_the_top_fraction():
    members, spec = population({1: [0.2, 0.1, 0.15, 0.05], 2: [0.5, 0.4], 3: [0.9, 0.8]})
    before = {m.id: asdict(m) for m in members}
    selection = run_select(members, spec, elitism=1)
    assert sorted(m.id for m in selection.survivors) == [1, 5, 7]
    for m in selection.survivors:
        assert asdict(m) == before[m.id]
    assert [m.id for m in selection.parents[1]] == [1, 3]
    assert [m.id for m in selection.parents[3]] == [7]
    selection = run_select(*population({1: [0.2, 0.1, 0.15]}), elitism=2)
    assert [m.id for m in selection.survivors] == [1, 3]


@pytest.mark.parametrize(
    "fitness",
    [
        {1: [0.2, 0.1], 2: [0.5, 0.4], 3: [0.9, 0.8]},
        {1: [0.0, 0.0, 0.0], 2: [0.0, 0.0, 0.0], 3: [0.0, 0.0, 0.0]},  # every network failed
        {1: [None, None], 2: [0.5, 0.4], 3: [0.9, 0.8]},
        {1: [0.3], 2: [0.31], 3: [0.29], 4: [0.0], 5: [0.7]},
    ],
)
@pytest.mark.parametrize("min_offspring", [1, 2])
def test_offspring_fill_the_free_slots(fitness, min_offspring):
    members, spec = population(fitness)
    selection = run_select(members, spec, size=20, min_offspring=min_offspring)
    free = 20 - len(selection.survivors)
    assert sum(selection.offspring.values()) == free
    assert sorted(selection.offspring) == sorted(fitness)
    assert all(n >= min_offspring for n in selection.offspring.values())
    means = {sid: statistics.fmean(v) if None not in v else -1.0 for sid, v in fitness.items()}
    by_fitness = sorted(selection.offspring, key=lambda s: means[s])
    counts = [selection.offspring[s] for s in by_fitness]
    if len(set(means.values())) == len(means) and min(means.values()) > 0:
        # Shares grow with species fitness (rounding aside).
        assert counts[-1] == max(counts) and counts[0] == min(counts)


def test_stagnant_species_go_extinct_except_the_best():
    flat = [0.5] * 6
    members, spec = population(
        {1: [0.3], 2: [0.2], 3: [0.8], 4: [0.9], 5: [0.1], 6: [0.25]},
        stages={5: 1},
        histories={1: [0.3] * 6, 2: [0.1] * 6, 3: flat, 4: flat, 5: [0.4] * 9, 6: [0.3] * 3},
    )
    selection = run_select(members, spec, size=12, stagnation=5, keep=2)
    # 1: no better than 5 generations ago -> extinct. 2: improved. 3 and 4: stagnant but the
    # best two. 5: stagnant and worst, but the last species of stage 1. 6: too young.
    assert selection.extinct == {1}
    assert sorted(spec.species) == [2, 3, 4, 5, 6]
    assert 1 not in selection.offspring and 1 not in selection.parents
    assert all(m.species != 1 for m in selection.survivors)
    assert spec.species[2].history[-1] == 0.2
    selection = run_select(*population({1: [0.3], 2: [0.2]}, histories={1: [0.3] * 6}), keep=0)
    assert selection.extinct == {1}
    # The last species of a stage survives even unprotected.
    selection = run_select(*population({1: [0.3]}, histories={1: [0.3] * 9}), keep=0)
    assert selection.extinct == set()


@pytest.mark.parametrize("outcome", ["fake", "failed"])
def test_population_sizes_are_kept(space, outcome):
    tuner = make(space, seed=11, generations=5)
    while candidates := tuner.ask():
        if outcome == "failed":  # every network failed: no species scored
            results = [Result.failed("diverged") for _ in candidates]
        else:
            results = fake_results(candidates)
        tuner.tell(candidates, results)
        assert len(tuner.modules) == SMALL["module_population"]
        assert len(tuner.blueprints) == SMALL["blueprint_population"]
        assert len({m.id for m in tuner.modules}) == len(tuner.modules)


def test_tuner_carries_the_best_of_every_species(space):
    tuner = make(space, seed=12)
    candidates = tuner.ask()
    tuner.tell(candidates, fake_results(candidates))
    candidates = tuner.ask()
    tuner.assign_fitness(fake_results(candidates))
    best: dict[int, Module] = {}
    for m in sorted(tuner.modules, key=lambda m: m.id):
        if m.fitness is not None and (m.species not in best or m.fitness > best[m.species].fitness):
            best[m.species] = m
    best_bp: dict[int, Blueprint] = {}
    for bp in sorted(tuner.blueprints, key=lambda b: b.id):
        if bp.species not in best_bp or bp.fitness > best_bp[bp.species].fitness:
            best_bp[bp.species] = bp
    modules = {m.id: (m.stage, m.merge, asdict(m)["layers"]) for m in best.values()}
    blueprints = {b.id: ([asdict(c) for c in b.conns], b.optimizer, b.lr) for b in best_bp.values()}
    tuner._evolve()
    after = {m.id: (m.stage, m.merge, asdict(m)["layers"]) for m in tuner.modules}
    for m in best.values():
        if m.species in tuner.mod_spec.species:
            assert after[m.id] == modules[m.id]
    after_bp = {b.id: ([asdict(c) for c in b.conns], b.optimizer, b.lr) for b in tuner.blueprints}
    for b in best_bp.values():
        if b.species in tuner.bp_spec.species:
            assert after_bp[b.id] == blueprints[b.id]
    assert any(m.species in tuner.mod_spec.species for m in best.values())


def test_empty_species_are_dropped():
    members, spec = population({1: [0.3], 2: [0.5]})
    spec.species[9] = Species(9, 0, {})
    run_select(members, spec)
    assert sorted(spec.species) == [1, 2]


# -- 7. variation ------------------------------------------------------------------------------


def variation(tuner, **changes):
    return replace(tuner.var, **changes)


def assert_valid_blueprint(bp, species_stage, max_nodes, stage_max=None):
    assert bp.active_order()
    assert 1 <= len(bp.nodes) <= max_nodes
    last = max(species_stage.values())
    for stage_index, most in enumerate(stage_max or []):
        assert sum(species_stage[s] == stage_index for s in bp.nodes.values()) <= most

    def stage(node):
        if node == BP_INPUT:
            return 0
        if node == BP_OUTPUT:
            return last
        return species_stage[bp.nodes[node]]

    assert all(s in species_stage for s in bp.nodes.values())
    succ = {}
    for c in bp.enabled():
        assert c.src in bp.nodes or c.src == BP_INPUT, c
        assert c.dst in bp.nodes or c.dst == BP_OUTPUT, c
        assert stage(c.src) <= stage(c.dst), (c, bp)
        assert c.src != BP_INPUT or stage(c.dst) == 0, (c, bp)  # the input feeds stage 0
        succ.setdefault(c.src, set()).add(c.dst)
    # No cycle over all enabled connections, active or not (Kahn).
    indegree = {n: 0 for n in [BP_INPUT, BP_OUTPUT, *bp.nodes]}
    for targets in succ.values():
        for t in targets:
            indegree[t] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    done = 0
    while ready:
        n = ready.pop()
        done += 1
        for t in succ.get(n, ()):
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    assert done == len(indegree), f"cycle in {bp}"
    genes = [c.gene for c in bp.conns]
    assert len(genes) == len(set(genes))


def test_blueprint_variation_keeps_blueprints_valid(space):
    tuner = make(space, seed=6, blueprint_max_nodes=6)
    for stage in range(len(space.stages)):
        add_species(tuner, stage)
        add_species(tuner, stage)
    by_stage = tuner._species_by_stage()
    species_stage = species_stage_of(tuner)
    rng = np.random.default_rng(0)
    pool = list(tuner.blueprints)
    grew = 0
    for i in range(1500):
        if i % 4 == 3:
            a, b = rng.choice(len(pool), size=2, replace=False)
            child = crossover_blueprints(pool[a], pool[b], 1000 + i, rng, species_stage)
            assert set(child.nodes) == set(pool[a].nodes)
        else:
            parent = pool[int(rng.integers(len(pool)))]
            child = mutate_blueprint(
                parent, 1000 + i, by_stage, tuner.inn, tuner.var, rng, space.skip
            )
        assert_valid_blueprint(child, species_stage, 6, tuner.var.stage_max_nodes)
        grew = max(grew, len(child.nodes))
        pool.append(child)
        if len(pool) > 40:
            pool.pop(int(rng.integers(len(pool))))
    # add-node ran into the limit: blueprint_max_nodes, or the stages' max_nodes in all.
    assert grew == min(6, sum(tuner.var.stage_max_nodes))


def test_every_blueprint_mutation_keeps_blueprints_valid(image):
    tuner = make(image, seed=8, blueprint_max_nodes=7)
    add_species(tuner, 0)
    add_species(tuner, 1)
    by_stage = tuner._species_by_stage()
    species_stage = species_stage_of(tuner)
    names = ["bp_add_node", "bp_add_conn", "bp_remove_conn", "bp_remove_node", "bp_species"]
    rng = np.random.default_rng(1)
    pool = list(tuner.blueprints)
    grow = variation(tuner, **{n: 0.0 for n in names[1:]}, bp_hyper=0.0)
    for i in range(40):  # grow them first so every mutation has something to act on
        pool.append(mutate_blueprint(pool[i % 4], 100 + i, by_stage, tuner.inn, grow, rng, True))
    for name in names:
        only = variation(tuner, **{n: 0.0 for n in names if n != name}, bp_hyper=0.0)
        changed = 0
        for i in range(60):
            parent = pool[int(rng.integers(len(pool)))]
            child = mutate_blueprint(parent, 200 + i, by_stage, tuner.inn, only, rng, True)
            assert_valid_blueprint(child, species_stage, 7)
            changed += (child.nodes, child.conns) != (parent.nodes, parent.conns)
            pool.append(child)
        assert changed > 10, name
    hyper = variation(tuner, **{n: 0.0 for n in names})
    for parent in pool[:30]:
        child = mutate_blueprint(parent, 999, by_stage, tuner.inn, hyper, rng, True)
        assert (child.nodes, child.conns) == (parent.nodes, parent.conns)
        assert (child.optimizer, child.lr) != (parent.optimizer, parent.lr)
        assert tuner.config.lr_min <= child.lr <= tuner.config.lr_max
        assert child.optimizer in tuner.config.optimizers


def test_crossover_keeps_stages_and_acyclicity():
    """Regressions: the same split gene in two stages; a gene the fitter had disabled and then
    wired the other way round."""
    stage = {10: 0, 20: 1}
    inn = Innovations()
    a = minimal_blueprint(1, [10, 20], inn, "adam", 1e-3)
    b = minimal_blueprint(2, [10, 20], inn, "adam", 1e-3)
    first, second = sorted(a.nodes)

    def split(bp, src, dst, species):
        for c in bp.conns:
            if (c.src, c.dst) == (src, dst):
                c.enabled = False
        node = inn.split_node(src, dst)
        bp.nodes[node] = species
        bp.conns += [
            Connection(inn.connection(src, node), src, node),
            Connection(inn.connection(node, dst), node, dst),
        ]
        return node

    # The same split (same gene) lands in stage 0 in a, in stage 1 in b.
    node = split(a, first, second, 10)
    assert split(b, first, second, 20) == node
    split(a, node, second, 10)  # in a, node feeds a stage-0 node
    for seed in range(40):
        child = crossover_blueprints(a, b, 3, np.random.default_rng(seed), stage)
        assert_valid_blueprint(child, stage, 10)
        child = crossover_blueprints(b, a, 3, np.random.default_rng(seed), stage)
        assert_valid_blueprint(child, stage, 10)

    inn = Innovations()
    p = minimal_blueprint(1, [10], inn, "adam", 1e-3)
    q = minimal_blueprint(2, [10], inn, "adam", 1e-3)
    (n,) = p.nodes
    m = split(p, n, BP_OUTPUT, 10)
    assert split(q, n, BP_OUTPUT, 10) == m
    # p: n -> m disabled, then input -> m -> n -> output.
    for c in p.conns:
        c.enabled = (c.src, c.dst) != (n, m)
    p.conns += [
        Connection(inn.connection(BP_INPUT, m), BP_INPUT, m),
        Connection(inn.connection(m, n), m, n),
    ]
    assert_valid_blueprint(p, stage, 10)
    for seed in range(40):
        assert_valid_blueprint(
            crossover_blueprints(p, q, 3, np.random.default_rng(seed), stage), stage, 10
        )


def test_splitting_the_same_connection_gives_the_same_genes(tabular):
    tuner = make(tabular, seed=0)
    by_stage = tuner._species_by_stage()
    inn = tuner.inn
    a, b = tuner.blueprints[0], tuner.blueprints[1]
    assert set(a.nodes) == set(b.nodes)  # the minimal blueprints share their genes
    add_only = variation(
        tuner,
        bp_add_conn=0.0,
        bp_remove_conn=0.0,
        bp_remove_node=0.0,
        bp_species=0.0,
        bp_hyper=0.0,
    )
    rng = np.random.default_rng(2)
    seen: dict[tuple[int, int], set[tuple]] = {}
    split_in: dict[tuple[int, int], set[int]] = {}
    for i in range(40):
        parent = a if i % 2 else b
        child = mutate_blueprint(parent, 50 + i, by_stage, inn, add_only, rng, True)
        split = next(c for c in child.conns if not c.enabled)
        (new,) = set(child.nodes) - set(parent.nodes)
        new_conns = {c.gene for c in child.conns} - {c.gene for c in parent.conns}
        seen.setdefault((split.src, split.dst), set()).add((new, frozenset(new_conns)))
        split_in.setdefault((split.src, split.dst), set()).add(parent.id)
    # Both connections got split, in both blueprints ...
    assert len(seen) == 2 and all(ids == {a.id, b.id} for ids in split_in.values())
    for genes in seen.values():
        assert len(genes) == 1  # ... always into the same node and connection genes
    (g1,), (g2,) = seen.values()
    assert g1[0] != g2[0]
    assert inn.split_node(3, 4) == inn.split_node(3, 4) != inn.split_node(4, 3)


def test_module_variation_stays_in_the_space(space):
    tuner = make(space, seed=9, module_max_layers=3)
    rng = np.random.default_rng(3)
    pool = list(tuner.modules)
    grew = changed = 0
    for i in range(400):
        parent = pool[int(rng.integers(len(pool)))]
        if i % 5 == 4:
            others = [m for m in pool if m.stage == parent.stage and m is not parent]
            child = crossover_modules(parent, others[int(rng.integers(len(others)))], 500 + i, rng)
        else:
            child = mutate_module(parent, 500 + i, space, tuner.inn, tuner.var, rng)
            changed += (child.layers, child.merge) != (parent.layers, parent.merge)
        assert child.stage == parent.stage and child.id == 500 + i
        assert 1 <= len(child.layers) <= 3
        stage = space.stages[child.stage]
        assert all(layer.op in stage.ops for layer in child.layers)
        assert child.merge in space.merge
        bp = blueprint({10: 1}, [(BP_INPUT, 10), (10, BP_OUTPUT)])
        space.check(assemble(bp, {1: child}), structure=False)
        grew = max(grew, len(child.layers))
        pool.append(child)
    assert grew == 3
    # Layers without a mutable param (maxpool2d, batchnorm) can make a mutation a no-op.
    assert changed > 200


def test_module_param_mutation_perturbs_params_only(tabular):
    tuner = make(tabular, seed=0)
    var = variation(tuner, module_add_layer=0.0, module_remove_layer=0.0)
    parent = dense(units=64, activation="relu")
    rng = np.random.default_rng(0)
    units = set()
    for i in range(100):
        child = mutate_module(parent, 2 + i, tabular, tuner.inn, var, rng)
        (layer,) = child.layers
        assert layer.gene == 1 and layer.op == "dense"
        assert 8 <= layer.params["units"] <= 256
        assert layer.params["activation"] in ("relu", "gelu", "tanh")
        assert layer.params != parent.layers[0].params or child.merge != parent.merge
        units.add(layer.params["units"])
    assert len(units) > 10  # Gaussian steps, not a few fixed values


# -- 8. population files -----------------------------------------------------------------------


def test_population_file_round_trip(space, tmp_path):
    path = tmp_path / "sub" / "pop.json"
    saved = make(space, seed=0, save_init_population=str(path))
    assert json.loads(path.read_text())["format"] == "nasfw.codeepneat.population"
    loaded = make(space, seed=7, init_population=str(path))
    assert loaded._population() == saved._population()
    assert make(space, seed=7)._population() != saved._population()
    # Paired runs from the file evolve on: both seeds work from the same start.
    for tuner in (saved, loaded):
        candidates = tuner.ask()
        tuner.tell(candidates, fake_results(candidates))
        assert len(tuner.modules) == SMALL["module_population"]


def test_population_file_in_adapt_mode(image, tmp_path):
    path = tmp_path / "pop.json"
    saved = make(image, mode="adapt", init_arch="lenet_small", save_init_population=str(path))
    loaded = make(image, seed=3, mode="adapt", init_population=str(path))
    assert loaded._population() == saved._population()


def test_population_file_errors(ops, tmp_path):
    image, tabular = load_space("image_small", ops), load_space("tabular_mlp", ops)
    make(image, save_init_population=str(tmp_path / "image.json"))
    good = json.loads((tmp_path / "image.json").read_text())
    (tmp_path / "text.json").write_text("not json {")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text(json.dumps({**good, "format": "something.else"}))
    broken = {k: v for k, v in good.items() if k != "modules"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    cases = [
        (tabular, "missing.json", "cannot read"),
        (tabular, "text.json", "not a JSON"),
        (tabular, "binary.json", "not a JSON"),
        (tabular, "list.json", "not a CoDeepNEAT population"),
        (tabular, "other.json", "not a CoDeepNEAT population"),
        (tabular, "image.json", "stages"),
        (image, "broken.json", "malformed"),
    ]
    for space, name, detail in cases:
        with pytest.raises(ConfigError, match=r"tuner\.init_population") as info:
            make(space, init_population=str(tmp_path / name))
        assert detail in str(info.value), (name, str(info.value))


def _corrupt(good, part, index, **changes):
    document = json.loads(json.dumps(good))
    document[part][index].update(changes)
    return document


def test_population_file_contents_are_validated_in_full(ops, tmp_path):
    image = load_space("image_small", ops)
    make(image, save_init_population=str(tmp_path / "good.json"))
    good = json.loads((tmp_path / "good.json").read_text())
    conv = next(i for i, m in enumerate(good["modules"]) if m["layers"][0]["op"] == "conv2d")
    layer = good["modules"][conv]["layers"][0]
    cases = {
        "stage 99": (_corrupt(good, "modules", 0, stage=99), "has stage 99"),
        "stage text": (_corrupt(good, "modules", 0, stage="x"), "has stage 'x'"),
        "unknown species": (
            _corrupt(good, "blueprints", 0, nodes=[[5, 999]]),
            "names module species [999]",
        ),
        "species off record": (_corrupt(good, "modules", 0, species=77), "species 77"),
        "param outside the space": (
            _corrupt(
                good,
                "modules",
                conv,
                layers=[{**layer, "params": {**layer["params"], "filters": 100}}],
            ),
            "'filters'=100 is outside",
        ),
        "unknown op": (
            _corrupt(good, "modules", conv, layers=[{**layer, "op": "conv9d"}]),
            "conv9d",
        ),
        "no layers": (_corrupt(good, "modules", 0, layers=[]), "has no layers"),
        "optimizer": (_corrupt(good, "blueprints", 0, optimizer="rmsprop"), "rmsprop"),
        "lr": (_corrupt(good, "blueprints", 0, lr=5.0), "lr 5.0 is outside"),
        "cycle": (
            _corrupt(
                good,
                "blueprints",
                0,
                conns=[
                    *good["blueprints"][0]["conns"],
                    {
                        "gene": 900,
                        "src": good["blueprints"][0]["nodes"][-1][0],
                        "dst": good["blueprints"][0]["nodes"][0][0],
                    },
                ],
            ),
            "cycle",
        ),
        "layers not a list": (_corrupt(good, "modules", 0, layers=7), "malformed"),
    }
    for name, (document, detail) in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(document))
        with pytest.raises(ConfigError, match=r"tuner\.init_population") as info:
            make(image, init_population=str(path))
        assert detail in str(info.value), (name, str(info.value))


# -- 9. adapt mode -----------------------------------------------------------------------------


def preset(name):
    return ArchGraph.from_json((CONF / "arch" / f"{name}.json").read_text())


def originals(tuner):
    """The first (original) module of every species."""
    first = {}
    for m in sorted(tuner.modules, key=lambda m: m.id):
        first.setdefault(m.species, m)
    return first


def layer_sequence(graph):
    """Ops, params, merges and wiring (inputs by topological position), whatever the node ids."""
    order = graph.topological_order()
    position = {"input": -1, **{n.id: i for i, n in enumerate(order)}}
    return [
        (n.op, dict(n.params), n.merge, sorted(position[i] for i in n.inputs)) for n in order
    ] + [position[graph.output]]


def test_adapt_starts_from_the_preset(image, ops):
    arch = preset("lenet_small")
    tuner = make(image, mode="adapt", init_arch="lenet_small", module_population=12)
    first = originals(tuner)
    original = tuner.blueprints[0]
    graph = assemble(original, first)
    assert layer_sequence(graph) == layer_sequence(arch)
    # One species (of the right stage) per original layer.
    stages = image.stage_of(arch)
    order = original.active_order()
    assert len(order) == len(original.nodes) == len(arch)
    for node, gene in zip(arch.topological_order(), order, strict=True):
        module = first[original.nodes[gene]]
        assert module.stage == stages[node.id]
        assert [(x.op, x.params) for x in module.layers] == [(node.op, dict(node.params))]
    # The other blueprints are mutations of it.

    def genome(bp):
        return bp.nodes, [asdict(c) for c in bp.conns], bp.optimizer, bp.lr

    assert len(tuner.blueprints) == SMALL["blueprint_population"]
    for bp in tuner.blueprints[1:]:
        assert genome(bp) != genome(original)
        assert_valid_blueprint(bp, species_stage_of(tuner), tuner.config.blueprint_max_nodes)
    # The module population holds every original layer, and mutations of them.
    assert len(tuner.modules) == 12
    layers = [(m.layers[0].op, m.layers[0].params) for m in tuner.modules if len(m.layers) == 1]
    for node in arch:
        assert (node.op, dict(node.params)) in layers
    assert sum(m not in first.values() for m in tuner.modules) == 12 - len(arch)
    model = build_model(graph, IMAGE, ops)
    assert model(torch.zeros(2, *IMAGE.input_shape)).shape == (2, 3)
    # The search runs on from there.
    candidates = tuner.ask()
    tuner.tell(candidates, fake_results(candidates))
    assert tuner.ask()


def test_adapt_from_a_graph_file(tabular, tmp_path):
    arch = preset("mlp_small")
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json())
    no_suffix = tmp_path / "arch"
    no_suffix.write_text(arch.to_json())
    for name in (str(path), str(no_suffix), "mlp_small"):
        tuner = make(tabular, mode="adapt", init_arch=name)
        graph = assemble(tuner.blueprints[0], originals(tuner))
        assert layer_sequence(graph) == layer_sequence(arch)


def test_adapt_errors(image, tabular, tmp_path):
    with pytest.raises(ConfigError, match=r"tuner\.init_arch") as info:
        make(image, mode="adapt", init_arch="no_such_preset")
    assert "lenet_small" in str(info.value) and "mlp_small" in str(info.value)
    with pytest.raises(ConfigError, match=r"tuner\.init_arch"):
        make(image, mode="adapt", init_arch="mlp_small")
    with pytest.raises(ConfigError, match=r"tuner\.init_arch"):
        make(tabular, mode="adapt", init_arch="lenet_small")
    with pytest.raises(ConfigError, match=r"tuner\.init_arch"):
        make(image, mode="adapt")
    with pytest.raises(ConfigError, match=r"tuner\.init_arch"):
        make(image, mode="adapt", init_arch=str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"nodes": 3}')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    for name in ("bad.json", "binary.json"):
        with pytest.raises(ConfigError, match=r"tuner\.init_arch"):
            make(image, mode="adapt", init_arch=str(tmp_path / name))
    with pytest.raises(ConfigError, match=r"tuner\.mode"):
        make(image, mode="grow")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"blueprint_population": 0}, "tuner.blueprint_population"),
        ({"genomes_per_blueprint": 0}, "tuner.genomes_per_blueprint"),
        ({"fitness_aggregation": "median"}, "tuner.fitness_aggregation"),
        ({"optimizers": ["rmsprop"]}, "tuner.optimizers"),
        ({"lr_min": 0.1, "lr_max": 0.01}, "tuner.lr_min"),
        ({"parent_fraction": 0.0}, "tuner.parent_fraction"),
        ({"module_population": 1}, "tuner.module_population"),
    ],
)
def test_bad_config_names_the_key(image, config, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make(image, **config)


# -- 10. extinct species -----------------------------------------------------------------------


def test_references_to_extinct_module_species_are_repaired(image):
    # species_elitism=0: stagnation alone decides, so the doomed species may score best and
    # the blueprints that point at it survive as elites (and must be repaired).
    tuner = make(image, seed=4, module_population=12, species_elitism=0)
    doomed = add_species(tuner, 0)
    add_species(tuner, 0)
    # A long history no better than today's: stagnant.
    tuner.mod_spec.species[doomed].history = [1.0] * 10
    pointing = {}
    for bp in tuner.blueprints[:2]:
        first = min(bp.nodes)  # the stage-0 node of a minimal blueprint
        bp.nodes[first] = doomed
        pointing[bp.id] = first
    candidates = tuner.ask()
    uses = [doomed in c.attrs["module_species"] for c in candidates]
    assert sum(uses) == 2 * SMALL["genomes_per_blueprint"]
    results = [Result(status="ok", metric=0.9 if u else 0.1) for u in uses]
    tuner.tell(candidates, results)
    assert doomed not in tuner.mod_spec.species
    assert all(m.species != doomed for m in tuner.modules)
    members = {m.species for m in tuner.modules}
    stage = {sid: s.stage for sid, s in tuner.mod_spec.species.items()}
    for bp in tuner.blueprints:
        assert bp.referenced_species() <= members
        assert_valid_blueprint(bp, stage, tuner.config.blueprint_max_nodes)
    # The elites that pointed at it now point at a living species of the same stage.
    repaired = [bp for bp in tuner.blueprints if bp.id in pointing]
    assert repaired
    for bp in repaired:
        assert stage[bp.nodes[pointing[bp.id]]] == 0
    candidates = tuner.ask()
    assert all(doomed not in c.attrs["module_species"] for c in candidates)


def test_a_pruned_network_scores_its_last_value(tabular):
    """What the pruner stopped keeps the credit of its last score, below the networks that
    finished above it and above failures (documented in nasfw.pruning)."""
    tuner = make(tabular, seed=1, blueprint_population=2, genomes_per_blueprint=1)
    tuner.ask()
    tuner.assign_fitness([Result(status="pruned", metric=0.4, epochs=1), Result.failed("x")])
    assert sorted(bp.fitness for bp in tuner.blueprints) == [0.0, 0.4]
