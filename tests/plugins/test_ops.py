"""Petridish's image ops (separable and dilated conv, same-size pooling): shapes, FLOPs as
flop_counter counts them, and MorphNet's treatment."""

from __future__ import annotations

import pytest
import torch
from test_morphnet import scaling_gates
from test_sequence_ops import one_op, run

from nasfw import ArchGraph, Node, build_model, model_cost
from nasfw.builder import BuildError
from nasfw.plugins.postprocessing.morphnet.regularizer import FlopRegularizer, add_gates
from nasfw.plugins.postprocessing.morphnet.shrink import carry_weights, shrink

C, H, W = 3, 8, 6


@pytest.mark.parametrize("k", [3, 5])
def test_sep_conv2d_is_depthwise_then_pointwise(ops, k):
    model, flops = one_op(ops, "sep_conv2d", {"filters": 7, "kernel_size": k}, (C, H, W))
    assert model.node_shapes["a"] == (7, H, W)
    run(model, (C, H, W))
    depthwise, pointwise = model.node_modules["a"][0], model.node_modules["a"][1]
    assert depthwise.groups == C and depthwise.weight.shape == (C, 1, k, k)
    assert pointwise.weight.shape == (7, C, 1, 1)
    assert flops == 2 * H * W * C * k * k + 2 * H * W * C * 7


@pytest.mark.parametrize(("k", "dilation"), [(3, 2), (5, 2), (3, 3)])
def test_dil_conv2d_keeps_the_size_and_counts_k_squared_macs(ops, k, dilation):
    params = {"filters": 4, "kernel_size": k, "dilation": dilation}
    model, flops = one_op(ops, "dil_conv2d", params, (C, H, W))
    assert model.node_shapes["a"] == (4, H, W)
    run(model, (C, H, W))
    assert model.node_modules["a"][0].dilation == (dilation, dilation)
    assert flops == 2 * H * W * C * 4 * k * k


@pytest.mark.parametrize("op", ["maxpool2d", "avgpool2d"])
def test_same_size_pooling(ops, op):
    model, flops = one_op(ops, op, {"pool_size": 3, "same": True}, (C, H, W))
    assert model.node_shapes["a"] == (C, H, W) and flops == 0
    run(model, (C, H, W))
    ones = torch.ones(1, C, H, W)
    assert torch.equal(model.node_modules["a"](ones), ones)  # padding is not averaged in
    down, _ = one_op(ops, op, {"pool_size": 3}, (C, H, W))
    assert down.node_shapes["a"] == (C, H // 3, W // 3)  # the default still downsamples
    with pytest.raises(BuildError, match="odd pool_size, got 2"):
        one_op(ops, op, {"pool_size": 2, "same": True}, (C, H, W))


class Image:
    input_shape = (C, H, W)
    n_outputs = 2


def test_morphnet_shrinks_a_separable_conv_with_its_depthwise_group(ops):
    graph = ArchGraph(
        [
            Node("c0", "conv2d", {"filters": 6}),
            Node("s", "sep_conv2d", {"filters": 5, "kernel_size": 3}, ("c0",)),
            Node("g", "dil_conv2d", {"filters": 4}, ("s",)),
        ],
        output="g",
    )
    torch.manual_seed(0)
    model = build_model(add_gates(graph), Image(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    scaling_gates(model, ("c0", "s", "g"))
    with torch.no_grad():
        model.node_modules["c0_gate"].weight[[1, 4]] = 0.0
        model.node_modules["s_gate"].weight[[0]] = 0.0
    small, changes = shrink(graph, reg.alive())
    assert changes == {"c0": (6, 4), "s": (5, 4), "g": (4, 4)}
    shrunk = build_model(small, Image(), ops)
    depthwise = 2 * H * W * 4 * 3 * 3  # its 4 remaining channels, outside the regularizer
    assert model_cost(shrunk, Image.input_shape).flops == reg.flops() + depthwise
    assert carry_weights(reg, shrunk) == 4
    x = torch.randn(4, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(shrunk.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)
