"""Sequence ops: 1-D convolution and pooling, global pooling, GRU and LSTM.

A sequence is ``(C, L)``: C channels (features per step) by L steps, channels first like images,
so the builder's merges (max-pool to the shortest length, 1x1 projection to the widest) work
unchanged. Recurrent layers run over the steps and give ``(units·directions, L)`` (every step,
``return_sequences=true``) or ``(units·directions,)`` (the final state of each direction).

FLOPs follow ``torch.utils.flop_counter`` (counted on the meta device, see
:func:`nasfw.model_cost`): convolutions and the recurrent layers' matrix products count;
pooling counts 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasfw import OpSpec, ParamSpec, Shape, hookimpl
from nasfw.plugins.ops.image import ACTIVATION, activation_layer

if TYPE_CHECKING:
    from torch import nn


def _conv1d(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    c, length = shape
    conv = nn.Conv1d(c, p["filters"], p["kernel_size"], padding="same")
    return nn.Sequential(conv, activation_layer(p["activation"])), (p["filters"], length)


def _pool1d(kind: str) -> Callable[[Mapping[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        from torch import nn

        c, length = shape
        size = min(p["pool_size"], length)
        if size <= 1:  # a length-1 sequence has nothing left to pool
            return nn.Identity(), shape
        return getattr(nn, kind)(size), (c, length // size)

    return build


def _global_pool(kind: str) -> Callable[[Mapping[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        from torch import nn

        from nasfw.plugins.ops.layers import GlobalPool

        if len(shape) == 1:  # features have no positions to pool over
            return nn.Identity(), shape
        return GlobalPool(kind), (shape[0],)

    return build


def _recurrent(kind: str) -> Callable[[Mapping[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        from nasfw.plugins.ops.layers import Recurrent

        c, length = shape
        module = Recurrent(
            kind, c, p["units"], p["layers"], p["bidirectional"], p["return_sequences"]
        )
        width = p["units"] * (2 if p["bidirectional"] else 1)
        return module, ((width, length) if p["return_sequences"] else (width,))

    return build


POOL = {"pool_size": ParamSpec("int", low=1, high=64, default=2)}
RECURRENT = {
    "units": ParamSpec("int", low=1, high=4096),
    "layers": ParamSpec("int", low=1, high=8, default=1),
    "bidirectional": ParamSpec("bool", default=False),
    "return_sequences": ParamSpec("bool", default=True),
}

OPS = (
    OpSpec(
        "conv1d",
        _conv1d,
        {
            "filters": ParamSpec("int", low=1, high=4096),
            "kernel_size": ParamSpec("int", low=1, high=31, default=3),
            "activation": ACTIVATION,
        },
        input_rank=2,
        description="1-D convolution over the steps, stride 1, same padding, then the activation",
    ),
    OpSpec("maxpool1d", _pool1d("MaxPool1d"), POOL, input_rank=2, description="max pooling"),
    OpSpec("avgpool1d", _pool1d("AvgPool1d"), POOL, input_rank=2, description="average pooling"),
    OpSpec(
        "global_avgpool",
        _global_pool("avg"),
        {},
        description="mean over all positions of a sequence or image: (C, ...) to (C,)",
    ),
    OpSpec(
        "global_maxpool",
        _global_pool("max"),
        {},
        description="max over all positions of a sequence or image: (C, ...) to (C,)",
    ),
    OpSpec(
        "gru",
        _recurrent("gru"),
        RECURRENT,
        input_rank=2,
        description="GRU layers (Cho et al. 2014) over the steps",
    ),
    OpSpec(
        "lstm",
        _recurrent("lstm"),
        RECURRENT,
        input_rank=2,
        description="LSTM layers (Hochreiter & Schmidhuber 1997) over the steps",
    ),
)


@hookimpl
def register_ops(register: Callable[[OpSpec], None]) -> None:
    for spec in OPS:
        register(spec)
