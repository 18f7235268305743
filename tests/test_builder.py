from __future__ import annotations

import copy
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SPACE_NAMES, load_space
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasfw import ArchGraph, Node, OpSpec, RandomChooser, SearchSpace
from nasfw.builder import BuildError, GraphModule, ModelCost, build_model, model_cost

# Fake input shapes per modality (no batch dimension, channels first).
FAKE_INPUTS: dict[str, list[tuple[int, ...]]] = {
    "image": [(1, 8, 8), (3, 16, 16)],
    "tabular": [(13,)],
    "sequence": [(4, 32), (1, 7)],
    "text": [(12,)],  # token ids below VOCAB
}
VOCAB = 30

_SPACES: dict[str, SearchSpace] = {}


def space(name: str, ops: dict[str, OpSpec]) -> SearchSpace:
    if name not in _SPACES:
        _SPACES[name] = load_space(name, ops)
    return _SPACES[name]


def problem(
    input_shape: tuple[int, ...], n_outputs: int = 3, vocab_size: int | None = None
) -> SimpleNamespace:
    return SimpleNamespace(input_shape=input_shape, n_outputs=n_outputs, vocab_size=vocab_size)


def fake_problem(sp: SearchSpace, shape: tuple[int, ...], n_outputs: int = 3) -> SimpleNamespace:
    """A problem of ``shape`` for ``sp``: token ids for a text space."""
    return problem(shape, n_outputs, VOCAB if "text" in sp.modalities else None)


def fake_batch(sp: SearchSpace, shape: tuple[int, ...], n: int = 2) -> torch.Tensor:
    if "text" in sp.modalities:
        return torch.randint(0, VOCAB, (n, *shape))
    return torch.randn(n, *shape)


def fake_inputs(sp: SearchSpace) -> list[tuple[int, ...]]:
    missing = [m for m in sp.modalities if m not in FAKE_INPUTS]
    if missing:
        pytest.fail(f"search space {sp.name!r}: add a fake input for modalities {missing}")
    return [shape for m in sp.modalities for shape in FAKE_INPUTS[m]]


def graph(*nodes: Node, output: str | None = None) -> ArchGraph:
    return ArchGraph(nodes, output=output or nodes[-1].id)


def node_outputs(model: GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and return every node module's output."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _args, out, node_id=node_id: seen.__setitem__(node_id, out)
        )
        for node_id, module in model.node_modules.items()
    ]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


# -- property: every search space's graphs build and run ------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(SPACE_NAMES),
    seed=st.integers(0, 2**32 - 1),
    n_mutations=st.integers(0, 4),
    n_outputs=st.integers(1, 5),
    data=st.data(),
)
def test_sampled_and_mutated_graphs_build_and_run(
    ops: dict[str, OpSpec], name: str, seed: int, n_mutations: int, n_outputs: int, data
) -> None:
    sp = space(name, ops)
    rng = np.random.default_rng(seed)
    g = sp.sample(RandomChooser(rng))
    for _ in range(n_mutations):
        g = sp.mutate(g, rng)
    shape = data.draw(st.sampled_from(fake_inputs(sp)), label="input_shape")
    torch.manual_seed(seed % 2**31)
    model = build_model(g, fake_problem(sp, shape, n_outputs), ops)
    assert set(model.node_modules) == set(model.node_shapes) == {n.id for n in g}
    y = model(fake_batch(sp, shape))
    assert y.shape == (2, n_outputs)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_mutated_graphs_exercise_merges(ops: dict[str, OpSpec], name: str) -> None:
    # Guards the property test against only ever seeing chains.
    sp = space(name, ops)
    if not sp.skip:
        pytest.skip("no skip connections in this space")
    kinds: set[str] = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        g = sp.sample(RandomChooser(rng))
        for _ in range(3):
            g = sp.mutate(g, rng)
        merged = [n for n in g if len(n.inputs) > 1]
        if not merged:
            continue
        kinds.update(n.merge for n in merged)
        for shape in fake_inputs(sp):
            model = build_model(g, fake_problem(sp, shape), ops)
            assert set(model.merges) == {n.id for n in merged}
            assert torch.isfinite(model(fake_batch(sp, shape))).all()
    assert kinds == set(sp.merge)


# -- merges ---------------------------------------------------------------------------------
def test_concat_pools_branches_to_the_smaller_spatial_size(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("c0", "conv2d", {"filters": 4}),
        Node("p0", "maxpool2d", {"pool_size": 2}, inputs=("c0",)),
        Node("c1", "conv2d", {"filters": 6}, inputs=("p0",)),
        Node("m", "identity", inputs=("c0", "c1"), merge="concat"),
    )
    model = build_model(g, problem((3, 16, 16)), ops)
    assert model.node_shapes == {
        "c0": (4, 16, 16),
        "p0": (4, 8, 8),
        "c1": (6, 8, 8),
        "m": (10, 8, 8),
    }
    assert model.head.in_features == 10 * 8 * 8
    outs = node_outputs(model, torch.randn(2, 3, 16, 16))
    expected = torch.cat([F.adaptive_max_pool2d(outs["c0"], (8, 8)), outs["c1"]], dim=1)
    torch.testing.assert_close(outs["m"], expected)


def test_add_projects_inputs_to_the_largest_channel_count(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("c0", "conv2d", {"filters": 4}),
        Node("c1", "conv2d", {"filters": 8}, inputs=("c0",)),
        Node("m", "identity", inputs=("c1", "c0"), merge="add"),
    )
    model = build_model(g, problem((3, 8, 8)), ops)
    assert model.node_shapes["m"] == (8, 8, 8)
    adapters = model.merges["m"].adapters
    assert isinstance(adapters[0], nn.Identity)  # already 8 channels
    (projection,) = adapters[1]
    assert isinstance(projection, nn.Conv2d)
    assert (projection.in_channels, projection.out_channels) == (4, 8)
    assert projection.kernel_size == (1, 1)
    outs = node_outputs(model, torch.randn(2, 3, 8, 8))
    torch.testing.assert_close(outs["m"], outs["c1"] + projection(outs["c0"]))


def test_add_of_feature_vectors_projects_with_linear(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("d0", "dense", {"units": 5}),
        Node("d1", "dense", {"units": 9}, inputs=("d0",)),
        Node("m", "identity", inputs=("d0", "d1"), merge="add"),
    )
    model = build_model(g, problem((13,)), ops)
    assert model.node_shapes["m"] == (9,)
    (projection,) = model.merges["m"].adapters[0]
    assert isinstance(projection, nn.Linear)
    assert (projection.in_features, projection.out_features) == (5, 9)


@pytest.mark.parametrize(("merge", "width"), [("concat", 4 * 8 * 8 + 5), ("add", 4 * 8 * 8)])
def test_conv_branch_merged_with_dense_branch_flattens(
    ops: dict[str, OpSpec], merge: str, width: int
) -> None:
    g = graph(
        Node("c0", "conv2d", {"filters": 4}),
        Node("d0", "dense", {"units": 5}, inputs=("c0",)),
        Node("m", "identity", inputs=("c0", "d0"), merge=merge),
    )
    model = build_model(g, problem((3, 8, 8)), ops)
    assert model.node_shapes["m"] == (width,)
    x = torch.randn(2, 3, 8, 8)
    assert model(x).shape == (2, 3)
    if merge == "concat":
        outs = node_outputs(model, x)
        expected = torch.cat([outs["c0"].flatten(1), outs["d0"]], dim=1)
        torch.testing.assert_close(outs["m"], expected)


def test_dense_after_conv_flattens(ops: dict[str, OpSpec]) -> None:
    g = graph(Node("c0", "conv2d", {"filters": 4}), Node("d0", "dense", {"units": 7}, ("c0",)))
    model = build_model(g, problem((3, 8, 8), n_outputs=2), ops)
    assert isinstance(model.reshapes["d0"], nn.Flatten)
    assert "c0" not in model.reshapes
    linear = model.node_modules["d0"][0]
    assert linear.in_features == 4 * 8 * 8
    assert model.node_shapes["d0"] == (7,)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 2)


def test_node_modules_expose_the_layers_by_node_id(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("conv", "conv2d", {"filters": 5, "kernel_size": 1}),
        Node("bn", "batchnorm", inputs=("conv",)),
    )
    model = build_model(g, problem((2, 4, 4)), ops)
    conv = model.node_modules["conv"][0]
    assert isinstance(conv, nn.Conv2d) and conv.out_channels == 5
    assert isinstance(model.node_modules["bn"], nn.BatchNorm2d)
    assert model.graph is g
    assert model.head.out_features == 3


# -- errors ---------------------------------------------------------------------------------
def test_conv2d_fed_a_feature_vector_names_the_node(ops: dict[str, OpSpec]) -> None:
    g = graph(Node("c0", "conv2d", {"filters": 4}))
    with pytest.raises(BuildError, match=r"node 'c0' \(conv2d\).*rank-3.*\(13,\)"):
        build_model(g, problem((13,)), ops)


def test_conv2d_after_dense_names_the_node(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("d0", "dense", {"units": 16}),
        Node("c1", "conv2d", {"filters": 4}, inputs=("d0",)),
    )
    with pytest.raises(BuildError, match=r"node 'c1' \(conv2d\).*\(16,\) from 'd0'"):
        build_model(g, problem((3, 8, 8)), ops)


def test_failing_op_build_names_the_node(ops: dict[str, OpSpec]) -> None:
    def explode(params: object, shape: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
        raise RuntimeError("kaboom")

    broken = {**ops, "broken": OpSpec("broken", explode)}
    g = graph(Node("d0", "dense", {"units": 4}), Node("b1", "broken", inputs=("d0",)))
    with pytest.raises(BuildError, match=r"node 'b1' \(broken\).*\(4,\).*RuntimeError: kaboom"):
        build_model(g, problem((13,)), broken)


def test_op_reporting_an_empty_shape_names_the_node(ops: dict[str, OpSpec]) -> None:
    shrink = OpSpec("shrink", lambda p, s: (nn.Identity(), (s[0], 0, 0)), input_rank=3)
    g = graph(Node("s0", "shrink"))
    with pytest.raises(BuildError, match=r"node 's0' \(shrink\).*\(3, 0, 0\)"):
        build_model(g, problem((3, 8, 8)), {**ops, "shrink": shrink})


def test_invalid_graph_is_a_build_error(ops: dict[str, OpSpec]) -> None:
    with pytest.raises(BuildError, match=r"node 'x0': unknown op 'conv9d'"):
        build_model(graph(Node("x0", "conv9d")), problem((3, 8, 8)), ops)
    with pytest.raises(BuildError, match=r"node 'c0' \(conv2d\): missing param 'filters'"):
        build_model(graph(Node("c0", "conv2d")), problem((3, 8, 8)), ops)


@pytest.mark.parametrize("node_id", ["a.b", "forward", ""])
def test_node_id_that_cannot_name_a_module(ops: dict[str, OpSpec], node_id: str) -> None:
    with pytest.raises(BuildError, match=rf"node '{node_id}'"):
        build_model(graph(Node(node_id, "identity")), problem((13,)), ops)


@pytest.mark.parametrize(("shape", "n_outputs"), [((), 3), ((3, 0, 8), 3), ((13,), 0)])
def test_bad_problem_shape(ops: dict[str, OpSpec], shape: tuple[int, ...], n_outputs: int) -> None:
    with pytest.raises(BuildError, match=r"input shape|n_outputs"):
        build_model(graph(Node("i0", "identity")), problem(shape, n_outputs), ops)


# -- copies ---------------------------------------------------------------------------------
def test_model_pickles_and_copies(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("c0", "conv2d", {"filters": 4}),
        Node("c1", "conv2d", {"filters": 6}, inputs=("c0",)),
        Node("m", "identity", inputs=("c0", "c1"), merge="add"),
        Node("d0", "dense", {"units": 3}, inputs=("m",)),
    )
    model = build_model(g, problem((3, 8, 8)), ops).eval()
    x = torch.randn(2, 3, 8, 8)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        torch.testing.assert_close(clone(x), model(x))
        assert clone.graph == g


# -- cost model -----------------------------------------------------------------------------
def test_flops_of_a_linear_layer() -> None:
    # FlopCounterMode counts a multiply-add as 2 FLOPs and ignores the bias.
    assert model_cost(nn.Linear(5, 7), (5,)) == ModelCost(flops=2 * 5 * 7, params=5 * 7 + 7)


def test_flops_of_a_conv_layer() -> None:
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
    cost = model_cost(conv, (3, 8, 8))
    assert cost.flops == 2 * (4 * 8 * 8) * (3 * 3 * 3)
    assert cost.params == 4 * 3 * 3 * 3 + 4


def test_flops_and_params_of_a_built_model(ops: dict[str, OpSpec]) -> None:
    g = graph(
        Node("c0", "conv2d", {"filters": 4, "kernel_size": 3}),
        Node("d0", "dense", {"units": 7}, inputs=("c0",)),
    )
    model = build_model(g, problem((3, 8, 8), n_outputs=2), ops)
    cost = model_cost(model, (3, 8, 8))
    conv_flops = 2 * (4 * 8 * 8) * (3 * 3 * 3)
    assert cost.flops == conv_flops + 2 * (4 * 8 * 8) * 7 + 2 * 7 * 2
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.params == (4 * 27 + 4) + (256 * 7 + 7) + (7 * 2 + 2)


def test_model_cost_runs_in_eval_mode_and_restores_modes(ops: dict[str, OpSpec]) -> None:
    # Batch norm refuses a batch of 1 in training mode, so this only passes in eval mode.
    g = graph(
        Node("d0", "dense", {"units": 6}),
        Node("bn", "batchnorm", inputs=("d0",)),
        Node("dr", "dropout", {"rate": 0.5}, inputs=("bn",)),
    )
    model = build_model(g, problem((13,)), ops)
    model.node_modules["dr"].eval()
    running_mean = model.node_modules["bn"].running_mean.clone()
    cost = model_cost(model, (13,))
    assert cost.flops == 2 * 13 * 6 + 2 * 6 * 3
    assert model.training and model.node_modules["bn"].training
    assert not model.node_modules["dr"].training
    torch.testing.assert_close(model.node_modules["bn"].running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())


def test_model_cost_on_the_meta_device_matches(ops: dict[str, OpSpec]) -> None:
    # Costing a candidate built on "meta" allocates no weights, so huge ones fail cheaply.
    g = graph(
        Node("c0", "conv2d", {"filters": 4}),
        Node("d0", "dense", {"units": 9}, inputs=("c0",)),
        Node("m", "identity", inputs=("c0", "d0"), merge="add"),
    )
    with torch.device("meta"):
        meta = build_model(g, problem((3, 8, 8)), ops)
    assert all(p.is_meta for p in meta.parameters())
    real = build_model(g, problem((3, 8, 8)), ops)
    assert model_cost(meta, (3, 8, 8)) == model_cost(real, (3, 8, 8))


@pytest.mark.parametrize(
    ("shape", "to", "layers"),
    [
        ((4, 8, 8), (4, 8, 8), ["Identity"]),
        ((4, 8, 8), (4, 4, 4), ["AdaptiveMaxPool2d"]),
        ((4, 8, 8), (6, 4, 4), ["AdaptiveMaxPool2d", "Conv2d"]),
        ((3, 20), (5, 10), ["AdaptiveMaxPool1d", "Conv1d"]),
        ((2, 3, 3), (7,), ["Flatten", "Linear"]),
        ((18,), (18,), ["Identity"]),
    ],
)
def test_adapter_brings_a_shape_to_another(shape, to, layers):
    from nasfw import adapter

    module = adapter(shape, to)
    found = [type(m).__name__ for m in (module if isinstance(module, nn.Sequential) else [module])]
    assert found == layers
    assert module(torch.randn(2, *shape)).shape == (2, *to)


@pytest.mark.parametrize(("shape", "to"), [((4, 4, 4), (4, 8, 8)), ((5,), (5, 2, 2))])
def test_adapter_never_upsamples_or_unflattens(shape, to):
    from nasfw import adapter

    with pytest.raises(ValueError, match=r"smaller|rank"):
        adapter(shape, to)
