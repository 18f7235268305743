"""Text ops: the embedding reads token ids (and only it does), positional codes, the attention
block's shapes and FLOPs as flop_counter counts them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_sequence_ops import N_OUT, one_op, run

from nasfw import ArchGraph, Node
from nasfw.builder import BuildError, build_model, model_cost

L, VOCAB = 12, 40


def text_problem(length: int = L) -> SimpleNamespace:
    return SimpleNamespace(input_shape=(length,), n_outputs=N_OUT, vocab_size=VOCAB)


def test_embedding_looks_up_tokens_with_padding_zero(ops):
    model, flops = one_op(ops, "embedding", {"dim": 6}, (L,), vocab=VOCAB)
    assert model.node_shapes["a"] == (6, L)
    assert model.input_dtype == torch.long
    run(model, (L,), vocab=VOCAB)
    embedding = model.node_modules["a"]
    tokens = torch.tensor([[0, 5, 5, 0]])
    out = embedding(tokens)
    assert out.shape == (1, 6, 4)
    assert torch.equal(out[0, :, 0], torch.zeros(6))  # padding
    assert torch.equal(out[0, :, 1], out[0, :, 2])
    assert embedding.embedding.num_embeddings == VOCAB
    assert flops == 0
    # model_cost feeds token ids (an embedding cannot look up floats).
    assert model_cost(model, (L,)).params == VOCAB * 6 + 6 * L * N_OUT + N_OUT


def test_token_ids_reach_only_token_ops(ops):
    graph = ArchGraph([Node("c", "conv1d", {"filters": 4})], output="c")
    with pytest.raises(BuildError, match=r"node 'c' \(conv1d\): the input holds token ids"):
        build_model(graph, text_problem(), ops)
    graph = ArchGraph([Node("d", "dense", {"units": 4})], output="d")
    with pytest.raises(BuildError, match=r"node 'd' \(dense\).*put an embedding first"):
        build_model(graph, text_problem(), ops)


def test_token_ops_read_nothing_but_token_ids(ops):
    chained = ArchGraph(
        [Node("e", "embedding", {"dim": 4}), Node("f", "embedding", {"dim": 4}, ("e",))], "f"
    )
    with pytest.raises(BuildError, match=r"node 'f' \(embedding\): a token op .*values of other"):
        build_model(chained, text_problem(), ops)
    alone = ArchGraph([Node("e", "embedding", {"dim": 4})], "e")
    values = SimpleNamespace(input_shape=(4, L), n_outputs=N_OUT, vocab_size=None)
    with pytest.raises(BuildError, match=r"node 'e' \(embedding\): .*without token inputs"):
        build_model(alone, values, ops)


def test_two_embeddings_of_the_input_merge(ops):
    nodes = [
        Node("e1", "embedding", {"dim": 4}),
        Node("e2", "embedding", {"dim": 6}),
        Node("m", "gru", {"units": 3}, ("e1", "e2"), "concat"),
    ]
    model = build_model(ArchGraph(nodes, "m"), text_problem(), ops)
    assert model.node_shapes["m"] == (3, L)
    assert model(torch.randint(0, VOCAB, (2, L))).shape == (2, N_OUT)


def test_sinusoidal_positional_encoding_is_vaswanis(ops):
    channels = 6
    model, flops = one_op(ops, "positional_encoding", {}, (channels, L))
    assert model.node_shapes["a"] == (channels, L)
    assert flops == 0
    run(model, (channels, L))
    table = model.node_modules["a"](torch.zeros(1, channels, L))[0]
    for pos in (0, 3, 11):
        for i in range(channels // 2):
            angle = pos / 10000 ** (2 * i / channels)
            assert table[2 * i, pos].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[2 * i + 1, pos].item() == pytest.approx(math.cos(angle), abs=1e-5)
    assert not list(model.node_modules["a"].parameters())


def test_learned_positional_encoding_has_a_table_per_position(ops):
    model, _ = one_op(ops, "positional_encoding", {"kind": "learned"}, (5, L))
    assert sum(p.numel() for p in model.node_modules["a"].parameters()) == 5 * L
    run(model, (5, L))


def attention_macs(c: int, width: int, ffn_ratio: int, steps: int) -> int:
    project = c * width * steps if c != width else 0
    qkv, out = 3 * width * width * steps, width * width * steps
    scores, mix = steps * steps * width, steps * steps * width
    ffn = 2 * width * ffn_ratio * width * steps
    return 2 * (project + qkv + out + scores + mix + ffn)


@pytest.mark.parametrize(
    ("c", "width", "heads", "ffn"), [(8, 8, 2, 2), (5, 16, 4, 1), (16, 8, 1, 4)]
)
def test_attention_block_shapes_and_flops(ops, c, width, heads, ffn):
    params = {"width": width, "heads": heads, "ffn_ratio": ffn}
    model, flops = one_op(ops, "attention", params, (c, L))
    assert model.node_shapes["a"] == (width, L)
    run(model, (c, L))
    assert flops == attention_macs(c, width, ffn, L)
    block = model.node_modules["a"].block
    assert block.norm_first and block.self_attn.num_heads == heads


def test_attention_is_order_aware_only_with_positions(ops):
    """Self-attention alone is permutation-equivariant; positional codes break that."""
    nodes = [Node("a", "attention", {"width": 8, "heads": 2})]
    model = build_model(
        ArchGraph(nodes, "a"), SimpleNamespace(input_shape=(8, L), n_outputs=N_OUT), ops
    )
    x = torch.randn(1, 8, L)
    perm = torch.randperm(L)
    block = model.node_modules["a"].eval()
    torch.testing.assert_close(block(x)[..., perm], block(x[..., perm]))
    pe = ops["positional_encoding"].build({"kind": "sinusoidal"}, (8, L))[0]
    assert not torch.allclose(block(pe(x))[..., perm], block(pe(x[..., perm])), atol=1e-4)


def test_attention_width_must_split_into_heads(ops):
    with pytest.raises(BuildError, match=r"node 'a' \(attention\).*width 10 is not a multiple"):
        one_op(ops, "attention", {"width": 10, "heads": 4}, (8, L))
