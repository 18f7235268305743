"""Sequence ops: shapes they declare are the shapes they produce, FLOPs as flop_counter counts
them (on the meta device, whatever device the model is on), merges of sequence branches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nasfw import ArchGraph, Node, OpSpec
from nasfw.builder import BuildError, build_model, model_cost

N_OUT = 3


def one_op(
    ops: dict[str, OpSpec], op: str, params: dict, shape: tuple[int, ...], vocab: int | None = None
) -> tuple[nn.Module, int]:
    """A one-node network of ``op`` and the FLOPs of its node alone (the head subtracted)."""
    problem = SimpleNamespace(input_shape=shape, n_outputs=N_OUT, vocab_size=vocab)
    model = build_model(ArchGraph([Node("a", op, params)], output="a"), problem, ops)
    head = 2 * model.head.in_features * N_OUT
    return model, model_cost(model, shape).flops - head


def run(model: nn.Module, shape: tuple[int, ...], vocab: int | None = None) -> torch.Tensor:
    """The node's real output on a CPU batch of 2; checks it has the declared shape."""
    x = torch.randint(0, vocab, (2, *shape)) if vocab else torch.randn(2, *shape)
    seen = {}
    hook = model.node_modules["a"].register_forward_hook(lambda m, i, out: seen.update(a=out))
    assert model(x).shape == (2, N_OUT)
    hook.remove()
    assert seen["a"].shape == (2, *model.node_shapes["a"])
    return seen["a"]


C, L = 4, 20


@pytest.mark.parametrize("kernel", [1, 3, 4, 7])
def test_conv1d_keeps_the_length_and_counts_its_macs(ops, kernel):
    model, flops = one_op(ops, "conv1d", {"filters": 6, "kernel_size": kernel}, (C, L))
    assert model.node_shapes["a"] == (6, L)
    run(model, (C, L))
    assert flops == 2 * C * kernel * 6 * L


@pytest.mark.parametrize("op", ["maxpool1d", "avgpool1d"])
@pytest.mark.parametrize(("size", "length", "out"), [(2, 20, 10), (4, 7, 1), (3, 2, 1), (2, 1, 1)])
def test_pool1d_shapes(ops, op, size, length, out):
    model, flops = one_op(ops, op, {"pool_size": size}, (C, length))
    assert model.node_shapes["a"] == (C, out)
    run(model, (C, length))
    assert flops == 0


@pytest.mark.parametrize("op", ["global_avgpool", "global_maxpool"])
@pytest.mark.parametrize("shape", [(C, L), (3, 5, 6), (2, 3, 4, 5), (9,)])
def test_global_pooling_of_any_rank(ops, op, shape):
    model, flops = one_op(ops, op, {}, shape)
    assert model.node_shapes["a"] == (shape[0],)
    out = run(model, shape)
    assert flops == 0
    if len(shape) > 1:
        x = torch.randn(2, *shape)
        reduce = torch.mean if op == "global_avgpool" else torch.amax
        want = reduce(x.flatten(2), dim=2)
        torch.testing.assert_close(model.node_modules["a"](x), want)
    else:
        assert out.shape == (2, shape[0])


def rnn_macs(kind: str, c: int, h: int, layers: int, directions: int, steps: int) -> int:
    gates = 3 if kind == "gru" else 4
    total, width = 0, c
    for _ in range(layers):
        total += directions * gates * h * (width + h) * steps
        width = h * directions
    return 2 * total


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize(
    ("layers", "bidirectional", "sequences"),
    [(1, False, True), (1, True, True), (2, True, False), (2, False, False)],
)
def test_recurrent_shapes_and_flops(ops, kind, layers, bidirectional, sequences):
    params = {
        "units": 5,
        "layers": layers,
        "bidirectional": bidirectional,
        "return_sequences": sequences,
    }
    model, flops = one_op(ops, kind, params, (C, L))
    width = 5 * (2 if bidirectional else 1)
    assert model.node_shapes["a"] == ((width, L) if sequences else (width,))
    out = run(model, (C, L))
    assert flops == rnn_macs(kind, C, 5, layers, 2 if bidirectional else 1, L)
    if not sequences:
        # The final state: the forward direction's last step (and the backward one's first).
        x = torch.randn(2, C, L)
        full, _ = model.node_modules["a"].rnn(x.transpose(1, 2))
        out = model.node_modules["a"](x)
        torch.testing.assert_close(out[:, :5], full[:, -1, :5])
        if bidirectional:
            torch.testing.assert_close(out[:, 5:], full[:, 0, 5:])


def test_flops_of_recurrent_layers_do_not_depend_on_the_device(ops):
    """The CPU's fused LSTM kernel escapes flop_counter; model_cost counts on meta anyway."""
    for kind in ("gru", "lstm"):
        cpu, flops = one_op(ops, kind, {"units": 8}, (C, L))
        assert next(cpu.parameters()).device.type == "cpu"
        with torch.device("meta"):
            _, meta_flops = one_op(ops, kind, {"units": 8}, (C, L))
        assert flops == meta_flops == rnn_macs(kind, C, 8, 1, 1, L)


def test_sequence_ops_refuse_images_and_features(ops):
    for shape in [(1, 8, 8), (13,)]:
        with pytest.raises(BuildError, match="node 'a' \\(conv1d\\): needs a rank-2 input"):
            one_op(ops, "conv1d", {"filters": 2}, shape)
        with pytest.raises(BuildError, match="node 'a' \\(gru\\): needs a rank-2 input"):
            one_op(ops, "gru", {"units": 2}, shape)


def branches(ops, merge: str, left: list[Node], right: list[Node], shape=(C, L)):
    nodes = [*left, *right, Node("m", "identity", {}, (left[-1].id, right[-1].id), merge)]
    problem = SimpleNamespace(input_shape=shape, n_outputs=N_OUT)
    return build_model(ArchGraph(nodes, "m"), problem, ops)


def test_concat_of_sequences_pools_to_the_shorter_length(ops):
    left = [Node("p", "maxpool1d", {"pool_size": 4})]  # (4, 5)
    right = [Node("g", "gru", {"units": 3})]  # (3, 20)
    model = branches(ops, "concat", left, right)
    assert model.node_shapes["m"] == (7, 5)
    assert model(torch.randn(2, C, L)).shape == (2, N_OUT)


def test_add_of_sequences_projects_to_the_widest(ops):
    left = [Node("c", "conv1d", {"filters": 8})]  # (8, 20)
    right = [Node("l", "lstm", {"units": 3}), Node("p", "avgpool1d", {"pool_size": 2}, ("l",))]
    model = branches(ops, "add", left, right)  # (8, 20) + (3, 10)
    assert model.node_shapes["m"] == (8, 10)
    adapter = model.merges["m"].adapters[1]
    assert any(isinstance(layer, nn.Conv1d) and layer.out_channels == 8 for layer in adapter)
    assert model(torch.randn(2, C, L)).shape == (2, N_OUT)


def test_sequence_merged_with_a_final_state_flattens(ops):
    left = [Node("c", "conv1d", {"filters": 2})]  # (2, 20)
    right = [Node("g", "gru", {"units": 3, "return_sequences": False})]  # (3,)
    model = branches(ops, "concat", left, right)
    assert model.node_shapes["m"] == (43,)
    assert model(torch.randn(2, C, L)).shape == (2, N_OUT)
