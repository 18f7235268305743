"""Petridish's candidates leave the parent untouched; finalization starts the child as the
parent's exact function."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from nasfw import INPUT, ArchGraph, BuildError, Node, build_model
from nasfw.plugins.petridish.candidates import (
    Attached,
    Candidate,
    candidate_layer,
    top_candidates,
)
from nasfw.plugins.petridish.finalize import finalize, inherit_weights

PROBLEM = SimpleNamespace(input_shape=(1, 8, 8), n_outputs=3)
GRAPH = ArchGraph(
    [
        Node("c0", "conv2d", {"filters": 4}),
        Node("p", "maxpool2d", {"pool_size": 2}, ("c0",)),
        Node("c1", "conv2d", {"filters": 6}, ("p",)),
        Node("d", "dense", {"units": 8}, ("c1",)),
    ],
    output="d",
)
CANDIDATES = [
    Candidate(source, op, params)
    for source in (INPUT, "c0", "p")
    for op, params in (
        ("sep_conv2d", {"filters": 3}),
        ("dil_conv2d", {"filters": 3}),
        ("avgpool2d", {"pool_size": 3, "same": True}),
        ("identity", {}),
    )
]


def parent_and_batch(ops):
    torch.manual_seed(0)
    parent = build_model(GRAPH, PROBLEM, ops)
    x = torch.randn(16, *PROBLEM.input_shape)
    y = torch.randint(0, 3, (16,))
    return parent, x, y


def test_candidates_leave_outputs_and_gradients_bit_identical(ops):
    parent, x, y = parent_and_batch(ops)
    bare = copy.deepcopy(parent)
    layer = candidate_layer(parent, "c1", CANDIDATES, ops)
    Attached(parent, "c1", layer)
    loss = torch.nn.functional.cross_entropy(parent(x), y) + 1e-3 * layer.l1()
    bare_loss = torch.nn.functional.cross_entropy(bare(x), y)
    assert torch.equal(parent(x), bare(x))
    loss.backward()
    bare_loss.backward()
    for (name, p), (_, q) in zip(parent.named_parameters(), bare.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    # ... while every candidate learns from the parent's loss.
    assert layer.alpha.grad is not None and bool((layer.alpha.grad != 0).all())
    trainable = [p for p in layer.branches.parameters()]
    assert trainable and all(p.grad is not None for p in trainable)


def test_detached_candidates_are_gone(ops):
    parent, x, _ = parent_and_batch(ops)
    before = parent(x)
    attached = Attached(parent, "c1", candidate_layer(parent, "c1", CANDIDATES, ops))
    attached.remove()
    assert torch.equal(parent(x), before)


def test_candidates_must_come_before_the_target_and_fit_it(ops):
    parent, _, _ = parent_and_batch(ops)
    with pytest.raises(BuildError, match="must be the input or a node before 'c1'"):
        candidate_layer(parent, "c1", [Candidate("d", "identity", {})], ops)
    # c0 (8x8) cannot grow from p (4x4): a candidate is never upsampled
    with pytest.raises(BuildError, match="for 'c0'"):
        candidate_layer(parent, "c0", [Candidate(INPUT, "maxpool2d", {"pool_size": 4})], ops)


def test_top_candidates_by_absolute_alpha(ops):
    parent, _, _ = parent_and_batch(ops)
    layer = candidate_layer(parent, "c1", CANDIDATES[:4], ops)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.01, -0.5, 0.2, 0.0]))
    assert top_candidates(layer, 2) == [CANDIDATES[1], CANDIDATES[2]]


@pytest.mark.parametrize("k", [1, 3])
def test_finalized_child_starts_as_the_parent(ops, k):
    parent, x, _ = parent_and_batch(ops)
    layer = candidate_layer(parent, "c1", CANDIDATES, ops)
    chosen = top_candidates(layer, k)
    child_graph = finalize(GRAPH, "c1", chosen, parent.node_shapes["c1"])
    assert child_graph["d"].inputs == ("c1_pdsum",)
    assert sum(n.id.startswith("c1_pd") and n.op not in ("identity",) for n in child_graph) >= k
    torch.manual_seed(1)
    child = build_model(child_graph, PROBLEM, ops)
    assert inherit_weights(child, parent) == len(parent.state_dict())
    for mode in (False, True):
        child.train(mode)
        parent.train(mode)
        assert torch.equal(child(x), parent(x))
    with torch.no_grad():
        child.node_modules["c1_pdscale"].scale.fill_(1.0)
    assert not torch.allclose(child(x), parent(x))  # the grown layers are really there
    with pytest.raises(BuildError, match="grown before"):
        finalize(child_graph, "c1", chosen, parent.node_shapes["c1"])
