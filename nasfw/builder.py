"""The model builder (ArchGraph → ``torch.nn.Module``) and the cost model (FLOPs, params).

:func:`build_model` turns each graph node into the module its op builds, reconciles shapes where
several inputs merge, flattens before ops that need features (dense) and adds the task head. The
result is a :class:`GraphModule` whose layers are found by node id:

- ``model.node_modules[node_id]``: exactly the module the node's op built (for ``conv2d`` a
  ``Sequential(Conv2d, activation)``, for ``batchnorm`` a ``BatchNorm1d/2d``), so post-processors
  such as MorphNet can find a node's conv or batch-norm layer from the graph alone;
- ``model.merges[node_id]``: a :class:`Merge` for nodes with several inputs (its ``adapters[i]``
  flattens / pools / 1x1-projects input ``i``; projections are layers too);
- ``model.reshapes[node_id]``: an ``nn.Flatten`` applied to the (merged) input before the op;
- ``model.node_shapes[node_id]``: the node's output shape (no batch dimension);
- ``model.head``: ``nn.Linear`` from the flattened output node to ``n_outputs`` (for regression
  its bias starts at the train targets' mean, ``problem.output_bias``: the mean predictor);
- ``model.input_dtype``: ``torch.long`` for a text problem's token ids, else ``None`` (floats).

Shapes never include the batch dimension and put channels first (see :mod:`nasfw.ops`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from nasfw.graph import INPUT, ArchGraph, GraphError, Node
from nasfw.ops import OpSpec, Shape

__all__ = [
    "BuildError",
    "GraphModule",
    "Merge",
    "ModelCost",
    "adapter",
    "build_model",
    "model_cost",
]


class BuildError(ValueError):
    """An ArchGraph cannot become a model for this problem; the message names the node."""


class ProblemShape(Protocol):
    """What the builder needs of a problem (``nasfw.Problem`` has it)."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def n_outputs(self) -> int: ...


# Optional on a problem: ``vocab_size`` (its inputs are token ids) and ``output_bias``.


# Per tensor rank (with channels): the pooling and 1x1 projection layers that reconcile merges.
_ADAPTIVE_POOL: dict[int, type[nn.Module]] = {
    2: nn.AdaptiveMaxPool1d,
    3: nn.AdaptiveMaxPool2d,
    4: nn.AdaptiveMaxPool3d,
}
_CONV: dict[int, type[nn.Module]] = {2: nn.Conv1d, 3: nn.Conv2d, 4: nn.Conv3d}


class Merge(nn.Module):
    """Adapts each input tensor (``adapters[i]``) then concatenates on channels or adds them."""

    def __init__(self, kind: str, adapters: Sequence[nn.Module]) -> None:
        super().__init__()
        self.kind = kind
        self.adapters = nn.ModuleList(adapters)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        ys = [adapt(x) for adapt, x in zip(self.adapters, xs, strict=True)]
        if self.kind == "add":
            out = ys[0]
            for y in ys[1:]:
                out = out + y
            return out
        return torch.cat(ys, dim=1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class GraphModule(nn.Module):
    """The network of an :class:`ArchGraph`: nodes run in topological order, then the head.

    See the module docstring for where each layer lives.
    """

    def __init__(
        self,
        graph: ArchGraph,
        input_shape: Shape,
        n_outputs: int,
        node_modules: Mapping[str, nn.Module],
        node_shapes: Mapping[str, Shape],
        merges: Mapping[str, Merge],
        reshapes: Mapping[str, nn.Module],
        input_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.input_dtype = input_dtype
        self.input_shape = tuple(input_shape)
        self.n_outputs = n_outputs
        self.node_modules = nn.ModuleDict(dict(node_modules))
        self.node_shapes: dict[str, Shape] = dict(node_shapes)
        self.merges = nn.ModuleDict(dict(merges))
        self.reshapes = nn.ModuleDict(dict(reshapes))
        self._plan: list[tuple[str, tuple[str, ...]]] = [
            (node.id, node.inputs) for node in graph.topological_order()
        ]
        self.head = nn.Linear(math.prod(self.node_shapes[graph.output]), n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {INPUT: x}
        for node_id, inputs in self._plan:
            if node_id in self.merges:
                h = self.merges[node_id]([values[i] for i in inputs])
            else:
                h = values[inputs[0]]
            if node_id in self.reshapes:
                h = self.reshapes[node_id](h)
            values[node_id] = self.node_modules[node_id](h)
        return self.head(torch.flatten(values[self.graph.output], 1))


def build_model(
    graph: ArchGraph, problem: ProblemShape, ops: Mapping[str, OpSpec] | None = None
) -> GraphModule:
    """Build the network of ``graph`` for ``problem`` (its ``input_shape`` and ``n_outputs``).

    ``ops`` defaults to the registered ops. Raises :class:`BuildError` naming the node when the
    graph is invalid, an op cannot take its input's rank, an op's build fails, or token ids
    (a problem with a ``vocab_size``) meet an op that is not a token op or the other way round.

    Example:
        >>> model = build_model(graph, problem)  # doctest: +SKIP
        >>> model(torch.zeros(2, *problem.input_shape)).shape  # doctest: +SKIP
        torch.Size([2, problem.n_outputs])
    """
    if ops is None:
        from nasfw import registry

        ops = registry().ops
    input_shape = tuple(int(d) for d in problem.input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise BuildError(f"problem input shape {input_shape} must be non-empty and positive")
    n_outputs = int(problem.n_outputs)
    if n_outputs < 1:
        raise BuildError(f"problem n_outputs={n_outputs} must be at least 1")
    try:
        order = graph.validate(ops).topological_order()
    except GraphError as err:
        # One exception type for "this graph cannot be built", whatever the reason.
        raise BuildError(str(err)) from err

    vocab_size = getattr(problem, "vocab_size", None)
    probe = nn.ModuleDict()
    shapes: dict[str, Shape] = {INPUT: input_shape}
    node_modules: dict[str, nn.Module] = {}
    merges: dict[str, Merge] = {}
    reshapes: dict[str, nn.Module] = {}
    for node in order:
        if not node.id or "." in node.id or hasattr(probe, node.id):
            raise BuildError(
                f"node {node.id!r}: the id cannot name a torch module (no '.', no nn.Module "
                "attribute names)"
            )
        spec = ops[node.op]
        _check_tokens(node, spec, vocab_size)
        in_shapes = [shapes[src] for src in node.inputs]
        if len(in_shapes) > 1:
            merges[node.id], shape = _merge(node, in_shapes)
        else:
            shape = in_shapes[0]
        if spec.input_rank is not None and len(shape) != spec.input_rank:
            if spec.input_rank == 1:
                reshapes[node.id] = nn.Flatten()
                shape = (math.prod(shape),)
            else:
                raise BuildError(
                    f"node {node.id!r} ({node.op}): needs a rank-{spec.input_rank} input, got "
                    f"shape {shape}" + _from(node, in_shapes)
                )
        extra = (vocab_size,) if spec.tokens else ()
        try:
            module, out_shape = spec.build(spec.with_defaults(node.params), shape, *extra)
        except Exception as err:
            raise BuildError(
                f"node {node.id!r} ({node.op}): building for input shape {shape} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        out_shape = tuple(int(d) for d in out_shape)
        if not isinstance(module, nn.Module) or not out_shape or min(out_shape) < 1:
            raise BuildError(
                f"node {node.id!r} ({node.op}): for input shape {shape} the op built "
                f"{type(module).__name__} with output shape {out_shape}"
            )
        node_modules[node.id] = module
        shapes[node.id] = out_shape
    del shapes[INPUT]
    input_dtype = torch.long if vocab_size is not None else None
    model = GraphModule(
        graph, input_shape, n_outputs, node_modules, shapes, merges, reshapes, input_dtype
    )
    bias = getattr(problem, "output_bias", None)
    if bias is not None:
        with torch.no_grad():
            model.head.bias.copy_(torch.as_tensor(bias, dtype=model.head.bias.dtype))
    return model


def _check_tokens(node: Node, spec: OpSpec, vocab_size: int | None) -> None:
    """Token ids go to token ops only, and token ops read nothing but token ids."""
    reads_input = INPUT in node.inputs
    if spec.tokens and (vocab_size is None or node.inputs != (INPUT,)):
        got = "a problem without token inputs" if vocab_size is None else "values of other nodes"
        raise BuildError(
            f"node {node.id!r} ({node.op}): a token op reads the input's token ids only, "
            f"got {got} (inputs {list(node.inputs)})"
        )
    if vocab_size is not None and reads_input and not spec.tokens:
        raise BuildError(
            f"node {node.id!r} ({node.op}): the input holds token ids, which only token ops "
            "(e.g. embedding) can read; put an embedding first"
        )


def _from(node: Node, in_shapes: Sequence[Shape]) -> str:
    if len(in_shapes) == 1:
        return f" from {node.inputs[0]!r}"
    merged = ", ".join(f"{src!r} {s}" for src, s in zip(node.inputs, in_shapes, strict=True))
    return f" after merging ({node.merge}) {merged}"


def _merge(node: Node, in_shapes: Sequence[Shape]) -> tuple[Merge, Shape]:
    """The merge module for ``node``'s inputs, and the merged shape."""
    steps: list[list[nn.Module]] = [[] for _ in in_shapes]
    shapes = list(in_shapes)
    if len({len(s) for s in shapes}) > 1:
        # Feature maps and feature vectors only meet as vectors.
        for i, s in enumerate(shapes):
            if len(s) > 1:
                steps[i].append(nn.Flatten())
                shapes[i] = (math.prod(s),)
    target = tuple(min(dims) for dims in zip(*(s[1:] for s in shapes), strict=True))
    channels = max(s[0] for s in shapes)
    for i, s in enumerate(shapes):
        # concat keeps each input's channels; add projects the narrower ones to the widest.
        wanted = (channels if node.merge == "add" else s[0], *target)
        try:
            steps[i] += _adapter_steps(s, wanted)
        except ValueError as err:
            raise BuildError(
                f"node {node.id!r} ({node.op}): {err}{_from(node, in_shapes)}"
            ) from None
        shapes[i] = wanted
    if node.merge == "add":
        out_shape: Shape = shapes[0]
    else:
        out_shape = (sum(s[0] for s in shapes), *shapes[0][1:])
    adapters = [nn.Sequential(*step) if step else nn.Identity() for step in steps]
    return Merge(node.merge, adapters), out_shape


def adapter(shape: Shape, to: Shape) -> nn.Module:
    """The layers that bring a ``shape`` tensor to ``to`` where branches meet: flatten when
    ``to`` is a feature vector, adaptive max pooling to a smaller image or sequence (max
    pooling keeps the strongest activations, as a strided conv net would), then a 1x1
    projection (``nn.Linear`` for features) to another width. Raises ``ValueError`` when
    ``to`` would need upsampling or a rank the builder has no layers for.
    """
    steps = _adapter_steps(shape, to)
    if not steps:
        return nn.Identity()
    return steps[0] if len(steps) == 1 else nn.Sequential(*steps)


def _adapter_steps(shape: Shape, to: Shape) -> list[nn.Module]:
    shape, to = tuple(shape), tuple(to)
    steps: list[nn.Module] = []
    if len(to) == 1 and len(shape) > 1:
        steps.append(nn.Flatten())
        shape = (math.prod(shape),)
    if len(shape) != len(to):
        raise ValueError(f"cannot bring shape {shape} to rank {len(to)} ({to})")
    rank = len(shape)
    if shape[1:] != to[1:]:
        if any(a < b for a, b in zip(shape[1:], to[1:], strict=True)):
            raise ValueError(f"shape {shape} is smaller than {to}: no upsampling")
        if rank not in _ADAPTIVE_POOL:
            raise ValueError(f"cannot pool rank-{rank} inputs to a common size")
        steps.append(_ADAPTIVE_POOL[rank](to[1:]))
    if shape[0] != to[0]:
        if rank == 1:
            steps.append(nn.Linear(shape[0], to[0]))
        elif rank in _CONV:
            steps.append(_CONV[rank](shape[0], to[0], kernel_size=1))
        else:
            raise ValueError(f"cannot project rank-{rank} inputs to {to[0]} channels")
    return steps


@dataclass(frozen=True)
class ModelCost:
    """Cost of one forward pass at batch size 1: ``flops`` (multiply-add = 2) and ``params``."""

    flops: int
    params: int


def model_cost(
    model: nn.Module, input_shape: Sequence[int], example: torch.Tensor | None = None
) -> ModelCost:
    """FLOPs (``torch.utils.flop_counter`` conventions) of one eval-mode forward at batch 1,
    and the number of parameters.

    Counted on the meta device (a copy of ``model`` when it lives elsewhere): the fused CPU
    kernels of LSTM and of attention in eval mode bypass the counter, which would count 0.
    ``example`` (batch of 1) replaces the zero input (token ids for ``input_dtype=torch.long``).
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    first = next(model.parameters(), None)
    if first is not None and first.device.type != "meta":
        model = copy.deepcopy(model).to("meta")
        first = next(model.parameters())
    dtype = getattr(model, "input_dtype", None)
    if dtype is None and first is not None and first.is_floating_point():
        dtype = first.dtype
    device = first.device if first is not None else None
    if example is not None:
        example = example.to(device) if device is not None else example
    else:
        example = torch.zeros((1, *input_shape), dtype=dtype, device=device)
    # Per-module modes, since a caller may have put only some submodules in eval mode.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for m, mode in modes:
            m.training = mode
    return ModelCost(flops=int(counter.get_total_flops()), params=int(params))
