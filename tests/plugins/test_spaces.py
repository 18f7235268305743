"""The kinds of search space beside stages (plugins/spaces): a fixed cell (search_space=
nasbench201) and dense layers on a grid (search_space=fcnet, hpobench_mlp), through what
tuners use: sampling, checking, mutation, crossover and the Optuna distributions."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from nasfw import (
    ArchGraph,
    GeneSpace,
    GraphError,
    Node,
    RandomChooser,
    SearchSpaceError,
    TrialChooser,
    registry,
    span_choices,
)
from nasfw.plugins.spaces import CellSpaceConfig, GridSpaceConfig
from nasfw.testing import load_search_space

SPACES = ["nasbench201", "fcnet", "hpobench_mlp"]


def space(name: str) -> GeneSpace:
    found = load_search_space(name)
    assert isinstance(found, GeneSpace)
    return found


@pytest.mark.parametrize("name", SPACES)
def test_samples_lie_in_the_space_and_cover_every_choice(name: str) -> None:
    s = space(name)
    rng = np.random.default_rng(0)
    seen: dict[str, set[str]] = {}
    for _ in range(300):
        graph = s.sample(RandomChooser(rng))
        assert s.check(graph) is graph
        assert ArchGraph.from_json(graph.to_json()) == graph  # training settings included
        for gene, value in s.values(graph).items():
            seen.setdefault(gene, set()).add(repr(value))
    for gene, choices in s.genes().items():
        assert seen[gene] == {repr(c) for c in choices}, gene


@pytest.mark.parametrize("name", SPACES)
def test_a_mutation_changes_one_gene_and_stays_in_the_space(name: str) -> None:
    s = space(name)
    rng = np.random.default_rng(1)
    for _ in range(200):
        parent = s.sample(RandomChooser(rng))
        child = s.mutate(parent, rng)
        s.check(child)
        before, after = s.values(parent), s.values(child)
        changed = [g for g in after if g in before and before[g] != after[g]]
        if "depth" in changed:  # genes the new depth switches on are drawn, not "changed"
            assert changed == ["depth"]
        else:
            assert len(changed) == 1, (before, after)
            assert set(before) == set(after)


def test_the_cell_mutation_is_one_edge_op_as_nas_bench_201_runs_it() -> None:
    s = space("nasbench201")
    parent = s.sample(RandomChooser(np.random.default_rng(2)))
    child = s.mutate(parent, np.random.default_rng(3))
    differing = [n.id for n in child if n.op != parent[n.id].op]
    assert len(differing) == 1 and differing[0].startswith("edge_")


@pytest.mark.parametrize("name", SPACES)
def test_crossover_children_take_each_gene_from_a_parent(name: str) -> None:
    s = space(name)
    rng = np.random.default_rng(4)
    mixed = 0
    for _ in range(100):
        a, b = s.sample(RandomChooser(rng)), s.sample(RandomChooser(rng))
        child = s.crossover(a, b, rng)
        s.check(child)
        va, vb, vc = s.values(a), s.values(b), s.values(child)
        if "depth" not in vc or vc["depth"] in (va.get("depth"), vb.get("depth")):
            from_parent = [g for g in vc if vc[g] in (va.get(g), vb.get(g))]
            assert from_parent == list(vc)
        mixed += vc not in (va, vb)
    assert mixed > 50  # mostly a mix, not a copy


@pytest.mark.parametrize("name", SPACES)
def test_describe_gives_what_sampling_decided_so_tpe_learns_every_trial(name: str) -> None:
    s = space(name)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    )
    for _ in range(6):
        trial = study.ask()
        graph = s.sample(TrialChooser(trial))
        params, dists = s.describe(graph)
        assert params == trial.params and dists == trial.distributions
        study.tell(trial, float(len(graph.to_json())))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_graph_outside_the_cell_is_refused_saying_where() -> None:
    s = space("nasbench201")
    graph = s.sample(RandomChooser(np.random.default_rng(5)))
    wrong_op = graph.with_node(Node("edge_0_1", "conv2d", {}, ("input",)))
    with pytest.raises(GraphError, match=r"gene 'edge_0_1'='conv2d' is outside.*nasbench201"):
        s.check(wrong_op)
    rewired = graph.with_node(Node("edge_1_2", graph["edge_1_2"].op, {}, ("input",)))
    with pytest.raises(GraphError, match=r"node 'edge_1_2': inputs \['input'\]"):
        s.check(rewired)
    grown = graph.replace([*graph, Node("extra", "identity", {}, ("node3",))])
    with pytest.raises(GraphError, match=r"node\(s\) \['extra'\] are not in it"):
        s.check(grown)
    with pytest.raises(GraphError, match="output 'extra' is not node3"):
        s.check(grown.replace(output="extra"))
    assert not s.contains(
        load_search_space("tabular_mlp").sample(RandomChooser(np.random.default_rng(0)))
    )


def test_a_grid_graph_off_the_grid_is_refused() -> None:
    s = space("fcnet")
    graph = s.sample(RandomChooser(np.random.default_rng(6)))
    with pytest.raises(GraphError, match=r"gene 'l0.units'=100 is outside"):
        s.check(graph.with_params("dense0", units=100))
    other = ArchGraph(list(graph), graph.output, {**graph.train, "lr": 0.3})
    with pytest.raises(GraphError, match=r"gene 'train.lr'=0.3 is outside"):
        s.check(other)
    with pytest.raises(GraphError, match="training settings"):
        s.check(ArchGraph(list(graph), graph.output))
    shared = space("hpobench_mlp")
    deep = shared.to_graph(
        {
            **shared.values(shared.sample(RandomChooser(np.random.default_rng(7)))),
            "depth": 2,
            "units": 16,
        }
    )
    with pytest.raises(GraphError, match="same units"):
        shared.check(deep.with_params("dense1", units=25))


def test_kinds_are_chosen_by_the_option_schema() -> None:
    reg = registry()
    cell = reg.space(CellSpaceConfig(name="tiny_cell", ops=["a", "b"], nodes=3))
    assert type(cell).__name__ == "CellSpace"
    assert list(cell.genes()) == ["edge_0_1", "edge_0_2", "edge_1_2"]
    grid = reg.space(GridSpaceConfig(name="g", depth=[1], units=[8, 16]))
    assert list(grid.genes()) == ["l0.units"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"edges": [[1, 0]]}, r"search_space.edges\[0\]=\[1, 0\]"),
        ({"edges": [[0, 1]]}, "node 2 has no incoming edge"),
        ({"ops": []}, "search_space.ops is empty"),
    ],
)
def test_a_cell_that_cannot_be_built_is_refused_naming_the_key(
    settings: dict[str, object], message: str
) -> None:
    config = CellSpaceConfig(name="bad", ops=["a"], nodes=3)
    for key, value in settings.items():
        setattr(config, key, value)
    with pytest.raises(SearchSpaceError, match=message):
        registry().space(config)


def test_a_grid_with_an_empty_choice_is_refused_naming_the_key() -> None:
    with pytest.raises(SearchSpaceError, match=r"search_space.train.lr is empty"):
        registry().space(GridSpaceConfig(name="g", depth=[1], units=[8], train={"lr": []}))
    with pytest.raises(SearchSpaceError, match=r"search_space.units"):
        registry().space(GridSpaceConfig(name="g", depth=[1], units=[0]))


def test_span_choices_is_a_range_for_numbers_and_the_used_set_otherwise() -> None:
    # Numbers: the used range and one more grid step each side (fewer at an end of the grid).
    assert span_choices([16, 32, 64, 128, 256], [64, 32]) == [16, 32, 64, 128]
    assert span_choices([16, 32, 64, 128, 256], [64]) == [32, 64, 128]  # one value: not a point
    assert span_choices([16, 32, 64, 128], [128]) == [64, 128]
    assert span_choices([16, 32, 64, 128], [64, 16], margin=0) == [16, 32, 64]
    # grid order, by value
    assert span_choices([0.1, 0.01, 0.5, 1.0], [0.1, 0.5], margin=0) == [0.1, 0.5]
    assert span_choices([0.1, 0.01, 0.5, 1.0], [0.1, 0.5]) == [0.1, 0.01, 0.5, 1.0]
    assert span_choices(["relu", "tanh", "gelu"], ["gelu", "relu"]) == ["relu", "gelu"]
    assert span_choices([True, False], [False]) == [False]  # flags are not a range
    assert span_choices([1, 2, 3], []) == [1, 2, 3]


@pytest.mark.parametrize("name", SPACES)
def test_the_spanning_space_holds_the_graphs_and_is_narrower(name: str) -> None:
    s = space(name)
    rng = np.random.default_rng(3)
    graphs = [s.sample(RandomChooser(rng)) for _ in range(2)]
    config = s.spanning(graphs)
    narrowed = registry().space(config)
    assert narrowed.name == f"auto_{name}" and type(narrowed) is type(s)
    for graph in graphs:
        assert narrowed.check(graph) is graph
    full, genes = s.genes(), narrowed.genes()
    assert set(genes) <= set(full)
    assert all(set(map(repr, genes[g])) <= set(map(repr, full[g])) for g in genes)
    assert sum(len(c) for c in genes.values()) < sum(len(c) for c in full.values())
    used = s.used(graphs)
    for gene, choices in genes.items():
        # A config has one list per kind of gene (every edge's ops, every layer's units), so
        # its choices are those span_choices (tested above) keeps for the values any gene of
        # that list uses: the used ones, or the range they span and a grid step each side.
        values = [v for g, vs in used.items() if full[g] == full[gene] for v in vs]
        allowed = span_choices(full[gene], values)
        assert all(c in allowed for c in choices), gene


def test_spanning_refuses_a_graph_outside_the_space() -> None:
    cell = space("nasbench201")
    with pytest.raises(GraphError):
        cell.spanning([space("fcnet").sample(RandomChooser(np.random.default_rng(0)))])
