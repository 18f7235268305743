from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
from conftest import CONF, SPACE_NAMES, load_space
from omegaconf import OmegaConf

from nasfw import (
    INPUT,
    ArchGraph,
    GraphError,
    Node,
    OpSpec,
    RandomChooser,
    SearchSpace,
    SearchSpaceConfig,
    SearchSpaceError,
)


def sample(name: str, ops: dict[str, OpSpec], seed: int) -> ArchGraph:
    return load_space(name, ops).sample(RandomChooser(np.random.default_rng(seed)))


# -- sampling and mutation ------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_sampled_and_mutated_graphs_stay_in_the_space(ops: dict[str, OpSpec], name: str) -> None:
    space = load_space(name, ops)
    sizes: set[int] = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        graph = space.check(space.sample(RandomChooser(rng)))
        sizes.add(len(graph))
        for _ in range(8):
            child = space.mutate(graph, rng)
            assert space.check(child) is child
            assert child != graph
            graph = child
            sizes.add(len(graph))
    # Mutation both grows and shrinks graphs across the space's range of sizes.
    assert min(sizes) <= sum(s.min_nodes for s in space.stages) + 1
    assert max(sizes) >= space.max_nodes - 1


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_same_seed_same_graph(ops: dict[str, OpSpec], name: str) -> None:
    space = load_space(name, ops)
    for seed in range(10):
        a = RandomChooser(np.random.default_rng(seed))
        b = RandomChooser(np.random.default_rng(seed))
        assert space.sample(a) == space.sample(b)
        assert a.params == b.params
        g = space.sample(RandomChooser(np.random.default_rng(seed)))
        assert space.mutate(g, np.random.default_rng(seed + 1)) == space.mutate(
            g, np.random.default_rng(seed + 1)
        )
    graphs = {sample(name, ops, seed).hash for seed in range(20)}
    assert len(graphs) > 10  # different seeds explore


def test_sample_respects_stages_and_ranges(ops: dict[str, OpSpec]) -> None:
    space = load_space("image_small", ops)
    for seed in range(30):
        graph = sample("image_small", ops, seed)
        stages = space.stage_of(graph)
        order = graph.topological_order()
        assert [stages[n.id] for n in order] == sorted(stages[n.id] for n in order)
        assert order[0].inputs == (INPUT,)
        for node in graph:
            if node.op == "conv2d":
                assert 16 <= node.params["filters"] <= 68
                assert node.params["kernel_size"] in (1, 3, 5)
            if node.op == "dense":
                assert 32 <= node.params["units"] <= 256


def test_sample_records_every_decision(ops: dict[str, OpSpec]) -> None:
    space = load_space("image_small", ops)
    chooser = RandomChooser(np.random.default_rng(3))
    graph = space.sample(chooser)
    assert set(chooser.params) == set(chooser.distributions)
    for node in graph:
        assert chooser.params[f"{node.id}.op"] == node.op
    assert chooser.params["features.n_nodes"] == sum(
        1 for n in graph if n.id.startswith("features")
    )


def test_chooser_distributions_are_accepted_by_optuna(ops: dict[str, OpSpec]) -> None:
    for name in SPACE_NAMES:
        space = load_space(name, ops)
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        for seed in range(10):
            chooser = RandomChooser(np.random.default_rng(seed))
            space.sample(chooser)
            trial = optuna.trial.create_trial(
                params=chooser.params, distributions=chooser.distributions, value=0.5
            )
            # The study also checks that every trial gives a name the same distribution.
            study.add_trial(trial)
            assert study.trials[-1].params == chooser.params
        assert len(study.trials) == 10


# -- check ----------------------------------------------------------------------------------
def test_check_rejects_a_param_outside_the_space(ops: dict[str, OpSpec]) -> None:
    space = load_space("image_small", ops)
    graph = space.sample(RandomChooser(np.random.default_rng(0)))
    conv = next(n for n in graph if n.op == "conv2d")
    outside = graph.with_params(conv.id, filters=100)  # within conv2d's own limits
    outside.validate(ops)
    with pytest.raises(
        GraphError, match=rf"node '{conv.id}' \(conv2d\): param 'filters'=100 is outside"
    ):
        space.check(outside)
    assert not space.contains(outside)
    with pytest.raises(GraphError, match=rf"node '{conv.id}' \(conv2d\): param 'kernel_size'=7"):
        space.check(graph.with_params(conv.id, kernel_size=7))


def test_check_rejects_ops_merges_and_sizes_outside_the_space(ops: dict[str, OpSpec]) -> None:
    space = load_space("image_small", ops)
    chain = [
        Node("features0", "conv2d", {"filters": 16}),
        Node("classifier0", "dense", {"units": 32}, inputs=("features0",)),
    ]
    assert space.contains(ArchGraph(chain, output="classifier0"))
    bad_op = [replace(chain[0], op="avgpool2d", params={}), chain[1]]
    with pytest.raises(GraphError, match=r"node 'features0': op 'avgpool2d' is not in"):
        space.check(ArchGraph(bad_op, output="classifier0"))
    no_classifier = ArchGraph(chain[:1], output="features0")
    with pytest.raises(GraphError, match="does not fit the stages"):
        space.check(no_classifier)
    too_long = [Node(f"f{i}", "conv2d", {"filters": 16}, inputs=(f"f{i - 1}",)) for i in range(8)]
    too_long[0] = replace(too_long[0], inputs=(INPUT,))
    with pytest.raises(GraphError, match="8 nodes, search space allows 7"):
        space.check(ArchGraph(too_long, output="f7"))

    no_skip = load_space("image_small", ops, {"connections": ["sequential"]})
    skipped = [
        *chain[:1],
        Node("features1", "conv2d", {"filters": 16}, inputs=("features0", INPUT), merge="add"),
        replace(chain[1], inputs=("features1",)),
    ]
    assert space.contains(ArchGraph(skipped, output="classifier0"))
    with pytest.raises(GraphError, match="node 'features1': skip connections are not allowed"):
        no_skip.check(ArchGraph(skipped, output="classifier0"))
    only_concat = load_space("image_small", ops, {"merge": ["concat"]})
    with pytest.raises(GraphError, match=r"node 'features1': merge 'add' not allowed"):
        only_concat.check(ArchGraph(skipped, output="classifier0"))


def test_mutate_without_skip_adds_no_skip(ops: dict[str, OpSpec]) -> None:
    space = load_space("image_small", ops, {"connections": ["sequential"]})
    for seed in range(20):
        rng = np.random.default_rng(seed)
        graph = space.sample(RandomChooser(rng))
        for _ in range(5):
            graph = space.mutate(graph, rng)
            assert all(len(n.inputs) == 1 for n in graph)


# -- config errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"ops": {"conv2d": {"filters": {"low": 70, "high": 16}}}},
            r"search_space\.ops\.conv2d\.filters: min > max",
        ),
        (
            {"ops": {"conv2d": {"filters": {"low": "x", "high": 16}}}},
            r"search_space\.ops\.conv2d\.filters\.low: .*'x'",
        ),
        (
            {"ops": {"conv2d": {"filters": {"lo": 1, "high": 16}}}},
            r"search_space\.ops\.conv2d\.filters\.lo: ",
        ),
        (
            {"ops": {"conv2d": {"filters": {"low": 16.5, "high": 17}}}},
            r"search_space\.ops\.conv2d\.filters: an int param needs whole-number bounds",
        ),
        (
            {"ops": {"conv2d": {"filters": {"low": 0, "high": 16}}}},
            r"search_space\.ops\.conv2d\.filters: 0 is below the minimum 1",
        ),
        (
            {"ops": {"conv2d": {"filters": {"low": 16, "high": None}}}},
            r"search_space\.ops\.conv2d\.filters: give both low and high",
        ),
        (
            {"ops": {"conv2d": {"kernel_size": {"choices": []}}}},
            r"search_space\.ops\.conv2d\.kernel_size\.choices is empty",
        ),
        (
            {"ops": {"conv2d": {"activation": {"low": 1, "high": 2}}}},
            r"search_space\.ops\.conv2d\.activation: a categorical param needs 'choices'",
        ),
        (
            {"ops": {"dense": {"units": {"low": 0, "high": 8, "log": True}}}},
            r"search_space\.ops\.dense\.units: a log range needs low > 0",
        ),
        (
            {"ops": {"conv3d": {"filters": {"low": 1, "high": 16}}}},
            r"search_space\.ops\.conv3d: unknown op",
        ),
        (
            {"ops": {"conv2d": {"stride": {"low": 1, "high": 2}}}},
            r"search_space\.ops\.conv2d\.stride: op 'conv2d' has no param 'stride'",
        ),
        (
            {"stages": [{"name": "features", "ops": ["conv2d", "conv3d"]}]},
            r"search_space\.stages\[0\]\.ops: unknown op 'conv3d'",
        ),
        (
            {
                "stages": [
                    {"name": "features", "ops": ["conv2d"]},
                    {"name": "classifier", "ops": ["dense"], "min_nodes": 3, "max_nodes": 2},
                ]
            },
            r"search_space\.stages\[1\]: min_nodes=3 > max_nodes=2",
        ),
        ({"stages": []}, r"search_space\.stages is empty"),
        (
            {"stages": [{"name": "features", "ops": []}]},
            r"search_space\.stages\[0\]\.ops is empty",
        ),
        ({"connections": ["sequential", "teleport"]}, r"search_space\.connections: 'teleport'"),
        ({"merge": ["mul"]}, r"search_space\.merge: 'mul'"),
        ({"merge": []}, r"search_space\.merge is empty"),
        ({"max_nodes": 1}, r"search_space\.max_nodes=1 is below"),
    ],
)
def test_config_errors_name_the_key(
    ops: dict[str, OpSpec], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        load_space("image_small", ops, overrides)


def test_op_without_range_or_default_is_an_error(ops: dict[str, OpSpec]) -> None:
    # OmegaConf merges dicts key by key, so the preset's conv2d ranges are dropped first.
    preset = OmegaConf.load(CONF / "search_space" / "image_small.yaml")
    preset.pop("defaults")  # the schema it extends, merged below
    del preset.ops["conv2d"]
    cfg = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), preset)
    with pytest.raises(
        SearchSpaceError, match=r"search_space\.ops\.conv2d\.filters: no range given"
    ):
        SearchSpace(cfg, ops)


# -- spaces that could produce an invalid graph are refused at start -------------------------
def _min_nodes(name: str, *mins: int) -> dict[str, object]:
    stages = OmegaConf.to_container(OmegaConf.load(CONF / "search_space" / f"{name}.yaml").stages)
    assert isinstance(stages, list)
    return {"stages": [{**stage, "min_nodes": m} for stage, m in zip(stages, mins, strict=True)]}


def test_a_space_whose_stages_may_all_be_empty_is_refused(ops: dict[str, OpSpec]) -> None:
    with pytest.raises(SearchSpaceError, match=r"search_space\.stages.*min_nodes"):
        load_space("tabular_mlp", ops, _min_nodes("tabular_mlp", 0))
    with pytest.raises(SearchSpaceError, match=r"min_nodes"):
        load_space("image_small", ops, _min_nodes("image_small", 0, 0))
    # One empty-able stage is fine while another always has a node.
    space = load_space("image_small", ops, _min_nodes("image_small", 0, 1))
    sizes = set()
    for seed in range(40):
        sizes.add(len(space.check(space.sample(RandomChooser(np.random.default_rng(seed))))))
    assert min(sizes) == 1


def test_sampling_keeps_within_max_nodes(ops: dict[str, OpSpec]) -> None:
    # Stages allow 5 + 2 nodes; the space caps graphs at 3, so later stages keep their room.
    space = load_space("image_small", ops, {"max_nodes": 3})
    sizes = set()
    for seed in range(80):
        graph = space.sample(RandomChooser(np.random.default_rng(seed)))
        assert space.check(graph) is graph
        sizes.add(len(graph))
    assert sizes == {2, 3}


def test_equal_choices_share_one_distribution_but_1_is_not_true() -> None:
    """A chooser's params of the same choices share one CategoricalDistribution (Optuna's
    in-memory storage then copies it once per trial); choices equal in Python but not the
    same values (1 and True) keep their own."""
    from nasfw.choosers import categorical_distribution

    chooser = RandomChooser(np.random.default_rng(0))
    for name in ("a", "b"):
        chooser.categorical(name, ["conv", "pool"])
    assert chooser.distributions["a"] is chooser.distributions["b"]
    assert chooser.distributions["a"].choices == ("conv", "pool")
    assert categorical_distribution([1, 2]).choices == (1, 2)
    assert categorical_distribution([True, 2]).choices[0] is True
