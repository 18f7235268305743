"""Built-in ops: image (conv, separable and dilated conv, pooling, batch norm) and dense layers,
plus dropout and identity.

``sep_conv2d``, ``dil_conv2d`` and same-size pooling (``same=true``) are Petridish's candidate
ops (Hu et al. 2019, §4; the DARTS operation set), usable by every tuner; ``stop_gradient``,
``stop_forward`` and ``scale`` (with ``l1``) are what its candidate layers are made of.

Activation is part of conv2d and dense (``relu`` by default), as in the seeds' search spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasfw import OpSpec, ParamSpec, Shape, hookimpl

if TYPE_CHECKING:
    from torch import nn

# torch.nn class names; torch is imported when a model is built, not when plugins load.
ACTIVATIONS = {
    "relu": "ReLU",
    "gelu": "GELU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "linear": "Identity",
}
ACTIVATION = ParamSpec("categorical", choices=tuple(ACTIVATIONS), default="relu")


def activation_layer(name: str) -> nn.Module:
    """The ``torch.nn`` module of an ``activation`` param value (shared by the sequence ops)."""
    from torch import nn

    return getattr(nn, ACTIVATIONS[name])()


def _conv2d(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    c, h, w = shape
    k = p["kernel_size"]
    # "same" padding keeps the spatial size, so branches merge without cropping.
    conv = nn.Conv2d(c, p["filters"], k, padding="same")
    return nn.Sequential(conv, activation_layer(p["activation"])), (p["filters"], h, w)


def _sep_conv2d(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    c, h, w = shape
    k = p["kernel_size"]
    # Depthwise (one k x k filter per input channel), then pointwise (1x1) to the filters.
    depthwise = nn.Conv2d(c, c, k, padding="same", groups=c)
    pointwise = nn.Conv2d(c, p["filters"], 1)
    module = nn.Sequential(depthwise, pointwise, activation_layer(p["activation"]))
    return module, (p["filters"], h, w)


def _dil_conv2d(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    c, h, w = shape
    k, dilation = p["kernel_size"], p["dilation"]
    conv = nn.Conv2d(c, p["filters"], k, padding="same", dilation=dilation)
    return nn.Sequential(conv, activation_layer(p["activation"])), (p["filters"], h, w)


def _pool2d(kind: str) -> Callable[[Mapping[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        from torch import nn

        c, h, w = shape
        if p["same"]:  # stride 1, padded: the size stays (Petridish's and DARTS' 3x3 pools)
            size = p["pool_size"]
            if size % 2 == 0:
                raise ValueError(f"same-size pooling needs an odd pool_size, got {size}")
            if kind == "AvgPool2d":  # the padding is not averaged in
                return nn.AvgPool2d(size, 1, size // 2, count_include_pad=False), shape
            return nn.MaxPool2d(size, 1, size // 2), shape
        size = min(p["pool_size"], h, w)
        if size <= 1:  # nothing left to pool: the node is a no-op rather than a failure
            return nn.Identity(), shape
        return getattr(nn, kind)(size), (c, h // size, w // size)

    return build


def _batchnorm(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    norm = nn.BatchNorm1d if len(shape) in (1, 2) else nn.BatchNorm2d
    return norm(shape[0]), shape


def _dropout(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    return nn.Dropout(p["rate"]), shape


def _dense(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    (features,) = shape
    layer = nn.Linear(features, p["units"])
    return nn.Sequential(layer, activation_layer(p["activation"])), (p["units"],)


def _scale(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from nasfw.plugins.ops.layers import Scale

    return Scale(p["init"], p["l1"]), shape


def _stop(kind: str) -> Callable[[Mapping[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        from nasfw.plugins.ops import layers

        return getattr(layers, kind)(), shape

    return build


def _identity(p: Mapping[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    from torch import nn

    return nn.Identity(), shape


POOL = {
    "pool_size": ParamSpec("int", low=1, high=64, default=2),
    # false: stride = pool_size (downsampling); true: stride 1, same padding (odd sizes).
    "same": ParamSpec("bool", default=False),
}
CONV = {
    "filters": ParamSpec("int", low=1, high=4096),
    "kernel_size": ParamSpec("int", low=1, high=15, default=3),
}

OPS = (
    OpSpec(
        "conv2d",
        _conv2d,
        {**CONV, "activation": ACTIVATION},
        input_rank=3,
        description="2-D convolution, stride 1, same padding, then the activation",
    ),
    OpSpec(
        "sep_conv2d",
        _sep_conv2d,
        {**CONV, "activation": ACTIVATION},
        input_rank=3,
        description="depthwise-separable conv: a k x k filter per channel, then 1x1 to filters",
    ),
    OpSpec(
        "dil_conv2d",
        _dil_conv2d,
        {**CONV, "dilation": ParamSpec("int", low=1, high=8, default=2), "activation": ACTIVATION},
        input_rank=3,
        description="dilated 2-D convolution, stride 1, same padding, then the activation",
    ),
    OpSpec("maxpool2d", _pool2d("MaxPool2d"), POOL, input_rank=3, description="max pooling"),
    OpSpec("avgpool2d", _pool2d("AvgPool2d"), POOL, input_rank=3, description="average pooling"),
    OpSpec("batchnorm", _batchnorm, {}, description="batch normalisation over channels"),
    OpSpec(
        "dropout",
        _dropout,
        {"rate": ParamSpec("float", low=0.0, high=0.95, default=0.0)},
        description="dropout",
    ),
    OpSpec(
        "dense",
        _dense,
        {"units": ParamSpec("int", low=1, high=65536), "activation": ACTIVATION},
        input_rank=1,
        description="fully connected layer (the input is flattened), then the activation",
    ),
    OpSpec("identity", _identity, {}, description="passes its (merged) input through"),
    OpSpec(
        "scale",
        _scale,
        {
            "init": ParamSpec("float", low=-10.0, high=10.0, default=0.0),
            # L1 penalty coefficient on the scalar (Petridish's sparsity on candidates' alpha).
            "l1": ParamSpec("float", low=0.0, high=10.0, default=0.0),
        },
        description="multiplies by one learnable scalar (0 at first: a grown branch starts off)",
    ),
    OpSpec(
        "stop_gradient",
        _stop("StopGradient"),
        {},
        description="forward identity, backward zero: what follows cannot train what precedes",
    ),
    OpSpec(
        "stop_forward",
        _stop("StopForward"),
        {},
        description="forward zero, backward identity: trains what precedes, adds nothing",
    ),
)


@hookimpl
def register_ops(register: Callable[[OpSpec], None]) -> None:
    for spec in OPS:
        register(spec)
