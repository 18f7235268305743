"""Text ops: token embedding, positional encoding and a Transformer self-attention block.

A text problem's input is ``(L,)`` token ids; ``embedding`` (a token op) turns it into the
sequence ``(dim, L)`` that the sequence ops (``nasfw.plugins.ops.sequence``) and ``attention``
take. Attention sees every position, padding included (no mask travels through the graph);
the padding id's embedding is zero, so the network learns to ignore it.

FLOPs follow ``torch.utils.flop_counter`` on the meta device: an embedding lookup counts 0,
the attention block its projections, ``QK^T``, ``AV`` and feed-forward matrix products.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasfw import OpSpec, ParamSpec, Shape, hookimpl

if TYPE_CHECKING:
    from torch import nn


def _embedding(p: Mapping[str, Any], shape: Shape, vocab_size: int) -> tuple[nn.Module, Shape]:
    from nasfw.plugins.ops.layers import TokenEmbedding

    (length,) = shape
    return TokenEmbedding(vocab_size, p["dim"]), (p["dim"], length)


def _positional_encoding(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from nasfw.plugins.ops.layers import PositionalEncoding

    channels, length = shape
    return PositionalEncoding(p["kind"], channels, length), shape


def _heads_divide_width(p: Mapping[str, Any]) -> str | None:
    """The attention op's rule: each head gets an equal share of the width."""
    width, heads = p["width"], p["heads"]
    return f"width {width} is not a multiple of heads {heads}" if width % heads else None


def _attention(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from nasfw.plugins.ops.layers import AttentionBlock

    channels, length = shape
    width, heads = p["width"], p["heads"]
    reason = _heads_divide_width(p)
    if reason:
        raise ValueError(reason)
    return AttentionBlock(channels, width, heads, p["ffn_ratio"]), (width, length)


OPS = (
    OpSpec(
        "embedding",
        _embedding,
        {"dim": ParamSpec("int", low=1, high=4096)},
        tokens=True,
        description="token ids (L,) to learned vectors (dim, L); the vocabulary is the problem's",
    ),
    OpSpec(
        "positional_encoding",
        _positional_encoding,
        {"kind": ParamSpec("categorical", choices=("sinusoidal", "learned"), default="sinusoidal")},
        input_rank=2,
        description="adds each position's code (sinusoids, or a learned table) to a sequence",
    ),
    OpSpec(
        "attention",
        _attention,
        {
            "width": ParamSpec("int", low=1, high=4096),
            "heads": ParamSpec("int", low=1, high=64, default=4),
            "ffn_ratio": ParamSpec("int", low=1, high=8, default=2),
        },
        input_rank=2,
        description="pre-norm Transformer encoder block: multi-head self-attention + feed-forward",
        rule=_heads_divide_width,
    ),
)


@hookimpl
def register_ops(register: Callable[[OpSpec], None]) -> None:
    for spec in OPS:
        register(spec)
