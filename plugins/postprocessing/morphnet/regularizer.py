"""MorphNet's FLOP regularizer on batch-norm gammas, for networks built from an ArchGraph.

After google-research/morph-net (GammaFlopsRegularizer): each conv2d/dil_conv2d/sep_conv2d/
conv1d/dense node gets a gate, a batch-norm node right after it (``<node>_gate``), whose |gamma|
says how alive each output channel is. For every op with per-output-pixel cost ``C``
(2·H_out·W_out·k_h·k_w for conv2d and dil_conv2d, 2·H_out·W_out for sep_conv2d's pointwise
part, 2·L_out·k for conv1d, 2 for dense and the head)::

    cost = C · A_in · A_out
    regularizer = C · (A_in · Σ|gamma_out| + A_out · Σ|gamma_in|)

where ``A`` are alive-channel counts (|gamma| > threshold) taken as constants, and inputs without a
gamma (the image, a projection) count their full width. Channels are grouped one by one, as
morph-net's ``OpRegularizerManager`` groups them: the channels an ``add`` sums position by position
are one group (its gamma is the element-wise max of the members', alive if any member is), through
any nesting of ``add``, ``concat`` (which lays its inputs' channels end to end) and flattening
(which repeats each channel over its pixels). A channel summed with one that has no gamma (the
image) is always alive. Inputs an ``add`` projects (a 1x1 conv the builder inserts when widths
differ) join no group: the projection adapts to any width. Channels are traced from the ArchGraph
and the builder's shapes, never from parameter positions.

A separable conv's depthwise part maps each input channel to one channel of its own (one
group, as morph-net's DepthwiseConvolutionOpHandler groups them): it shrinks with its input, and
its FLOPs (2·H·W·k² per input channel) are not in the regularizer.

Ops in :data:`CHANNELWISE` pass each channel through on its own (pooling, normalisation,
dropout, positional codes): their outputs are their inputs' channels. Every other op that is
not gated (``gru``, ``lstm``, ``embedding``, ``attention``, a plugin's op) is *not regularized*:
its FLOPs are outside the regularizer, and its output channels count as always alive, like the
image's. A gated layer feeding such an op still shrinks; the op takes the narrower input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from nasfw import INPUT, ArchGraph, Node

GATED_OPS = ("conv2d", "dil_conv2d", "sep_conv2d", "conv1d", "dense")
CHANNELWISE = (
    "maxpool2d", "avgpool2d", "maxpool1d", "avgpool1d", "global_avgpool", "global_maxpool",
    "batchnorm", "dropout", "identity", "positional_encoding", "scale", "stop_gradient",
    "stop_forward",
)  # fmt: skip
GATE_SUFFIX = "_gate"


def add_gates(graph: ArchGraph) -> ArchGraph:
    """``graph`` with a batch-norm gate after every conv2d/conv1d/dense node (consumers
    rewired)."""
    gated = {n.id for n in graph if n.op in GATED_OPS}
    nodes: list[Node] = []
    for node in graph:
        inputs = tuple(f"{i}{GATE_SUFFIX}" if i in gated else i for i in node.inputs)
        nodes.append(replace(node, inputs=inputs))
        if node.id in gated:
            nodes.append(Node(f"{node.id}{GATE_SUFFIX}", "batchnorm", {}, inputs=(node.id,)))
    output = f"{graph.output}{GATE_SUFFIX}" if graph.output in gated else graph.output
    return ArchGraph(nodes, output)


@dataclass(frozen=True)
class Segment:
    """A run of channels: ``length`` channels of ``owner``'s gate (None: no gamma, always
    alive), each repeated ``repeat`` times (a flattened feature map)."""

    owner: str | None
    length: int
    repeat: int = 1

    @property
    def width(self) -> int:
        return self.length * self.repeat


@dataclass(frozen=True)
class Term:
    """One op's share of the regularizer: C, its input segments, its own gate (None: head)."""

    node: str
    cost: float
    inputs: tuple[Segment, ...]
    owner: str | None
    out_width: int


def _positions(segments: list[Segment]) -> list[Channel]:
    """The channel behind every position of a (flattened) tensor described by ``segments``."""
    return [
        None if s.owner is None else (s.owner, c)
        for s in segments
        for c in range(s.length)
        for _ in range(s.repeat)
    ]


def _flatten(segments: list[Segment], shape: tuple[int, ...]) -> list[Segment]:
    pixels = math.prod(shape[1:])
    return [replace(s, repeat=s.repeat * pixels) for s in segments]


# One channel of a gate: (owner node, channel index); None is a channel without a gamma.
Channel = tuple[str, int] | None
_PINNED: tuple[str, int] = ("", -1)  # the group of channels without a gamma: always alive


class FlopRegularizer(nn.Module):
    """The MorphNet FLOP regularizer of a model built from :func:`add_gates`'s graph.

    ``model`` is a :class:`nasfw.builder.GraphModule`; ``graph`` the *original* (ungated)
    graph. Calling it returns the regularizer; :meth:`flops` and :meth:`alive` report.
    """

    def __init__(self, model: nn.Module, graph: ArchGraph, threshold: float) -> None:
        super().__init__()
        self.model = model
        self.threshold = threshold
        self.graph = graph
        self._parent: dict[tuple[str, int], tuple[str, int]] = {}
        self.terms = self._trace()
        self._index_groups()

    # -- channel groups ---------------------------------------------------------------------
    def _find(self, channel: tuple[str, int]) -> tuple[str, int]:
        root = channel
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while channel != root:  # path compression
            channel, self._parent[channel] = self._parent[channel], root
        return root

    def _union(self, a: Channel, b: Channel) -> None:
        ra, rb = self._find(a or _PINNED), self._find(b or _PINNED)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)  # _PINNED sorts first: it stays the root

    def _index_groups(self) -> None:
        """Tensors for the per-step gammas: every gate channel's group and pinned flag."""
        owners = self._owners()
        self._slices: dict[str, slice] = {}
        roots: dict[tuple[str, int], int] = {}
        group, pinned, start = [], [], 0
        for owner in owners:
            width = self.model.node_modules[f"{owner}{GATE_SUFFIX}"].num_features
            self._slices[owner] = slice(start, start + width)
            start += width
            for c in range(width):
                root = self._find((owner, c))
                group.append(roots.setdefault(root, len(roots)))
                pinned.append(root == _PINNED)
        self._group = torch.tensor(group, dtype=torch.long)
        self._pinned = torch.tensor(pinned, dtype=torch.bool)
        self._n_groups = len(roots)
        # Without an add every channel is its own group: the gates' gammas are used as they are.
        self._grouped = self._n_groups < len(group) or any(pinned)

    def _trace(self) -> list[Term]:
        model, gated_graph = self.model, self.model.graph
        shapes = {INPUT: tuple(model.input_shape), **model.node_shapes}
        segments: dict[str, list[Segment]] = {INPUT: [Segment(None, shapes[INPUT][0])]}
        terms: list[Term] = []
        for node in gated_graph.topological_order():
            ins = [list(segments[i]) for i in node.inputs]
            in_shapes = [shapes[i] for i in node.inputs]
            merged, merged_shape = self._merge(node, ins, in_shapes)
            if node.id in model.reshapes:
                merged = _flatten(merged, merged_shape)
                merged_shape = (math.prod(merged_shape),)
            if node.op in GATED_OPS:
                out_shape = shapes[node.id]
                # k per spatial axis: k·k for conv2d, k for conv1d, 1 for dense.
                spatial = len(out_shape) - 1
                k = int(self._kernel(node)) if spatial else 1
                cost = 2.0 * math.prod(out_shape[1:]) * k**spatial
                terms.append(Term(node.id, cost, tuple(merged), node.id, out_shape[0]))
                segments[node.id] = [Segment(node.id, out_shape[0])]
            elif node.op in CHANNELWISE:
                segments[node.id] = merged
            else:  # not regularized: new channels, none with a gamma
                segments[node.id] = [Segment(None, shapes[node.id][0])]
        last = gated_graph.output
        head_in = segments[last]
        if len(shapes[last]) > 1:
            head_in = _flatten(head_in, shapes[last])
        terms.append(Term("head", 2.0, tuple(head_in), None, int(model.n_outputs)))
        return terms

    @staticmethod
    def _kernel(node: Node) -> int:
        if node.op == "sep_conv2d":  # the regularized part is the pointwise 1x1 conv
            return 1
        return int(node.params.get("kernel_size", 3))

    def _merge(
        self, node: Node, ins: list[list[Segment]], shapes: list[tuple[int, ...]]
    ) -> tuple[list[Segment], tuple[int, ...]]:
        if len(ins) == 1:
            return ins[0], shapes[0]
        if len({len(s) for s in shapes}) > 1:  # ranks differ: the builder flattens all
            ins = [
                _flatten(seg, s) if len(s) > 1 else seg for seg, s in zip(ins, shapes, strict=True)
            ]
            shapes = [(math.prod(s),) for s in shapes]
        spatial = tuple(min(d) for d in zip(*(s[1:] for s in shapes), strict=True))
        if node.merge == "concat":
            merged = [seg for group in ins for seg in group]
            return merged, (sum(s[0] for s in shapes), *spatial)
        channels = max(s[0] for s in shapes)
        # Inputs narrower than the widest are projected by the builder: they join no group.
        summed = [g for g, s in zip(ins, shapes, strict=True) if s[0] == channels]
        first = _positions(summed[0])
        for other in summed[1:]:
            for a, b in zip(first, _positions(other), strict=True):
                self._union(a, b)
        # Position by position the sum is one group with the first input's channels.
        return summed[0], (channels, *spatial)

    # -- gammas -----------------------------------------------------------------------------
    def _effective(self) -> torch.Tensor:
        """|gamma| of every gate channel raised to its group's max, shape ``(channels,)``."""
        if not self._slices:  # no gated layer: nothing to regularize
            return torch.zeros(0)
        gammas = torch.cat(
            [self.model.node_modules[f"{o}{GATE_SUFFIX}"].weight.abs() for o in self._owners()]
        )
        if not self._grouped:
            return gammas
        group = self._group.to(gammas.device)
        top = gammas.new_zeros(self._n_groups).scatter_reduce(
            0, group, gammas, reduce="amax", include_self=False
        )
        return top[group]

    def gamma(self, owner: str) -> torch.Tensor:
        """|gamma| of ``owner``'s channels, each its group's element-wise max over the gates."""
        if not self._grouped:
            return self.model.node_modules[f"{owner}{GATE_SUFFIX}"].weight.abs()
        return self._effective()[self._slices[owner]]

    def _owners(self) -> list[str]:
        return [t.owner for t in self.terms if t.owner is not None]

    def _alive_mask(self, effective: torch.Tensor) -> torch.Tensor:
        return (effective > self.threshold) | self._pinned.to(effective.device)

    def kept_channels(self) -> dict[str, torch.Tensor]:
        """Indices of the channels a shrunk network keeps, per gated node: the alive
        ones. A node with none keeps its strongest channel's group (as :func:`shrink` keeps
        one channel), for every member of that group, so sums stay aligned."""
        with torch.no_grad():
            effective = self._effective()
            group = self._group.to(effective.device)
            alive_group = torch.zeros(self._n_groups, dtype=torch.bool, device=effective.device)
            alive_group[group[self._alive_mask(effective)]] = True
            for part in self._slices.values():
                if not alive_group[group[part]].any():
                    alive_group[group[part][effective[part].argmax()]] = True
            return {
                owner: torch.nonzero(alive_group[group[part]]).flatten().cpu()
                for owner, part in self._slices.items()
            }

    def alive(self) -> dict[str, int]:
        """Channels a shrunk network keeps, per gated node (:meth:`kept_channels`)."""
        return {owner: len(kept) for owner, kept in self.kept_channels().items()}

    def input_channels(self, term: Term, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """Indices of ``term``'s input features a shrunk network keeps (flattened maps
        channel-major, as ``torch.flatten`` orders them). Inputs without a gamma keep every
        channel (the image; behind a projected ``add`` the shrunk width may differ, which
        callers see as a shape mismatch)."""
        pieces, offset = [], 0
        for s in term.inputs:
            if s.owner is None:
                pieces.append(offset + torch.arange(s.width))
            else:
                pixels = torch.arange(s.repeat)
                pieces.append(offset + (kept[s.owner][:, None] * s.repeat + pixels).flatten())
            offset += s.width
        return torch.cat(pieces)

    def _width(self, segments: tuple[Segment, ...], alive: dict[str, int]) -> float:
        return float(
            sum((s.length if s.owner is None else alive[s.owner]) * s.repeat for s in segments)
        )

    def flops(self) -> float:
        """The cost model's FLOPs of the regularized layers (gated ones and the head) at the
        kept widths (full widths while every gamma is 1); not-regularized ops add their own."""
        alive = self.alive()
        return sum(
            t.cost
            * self._width(t.inputs, alive)
            * (alive[t.owner] if t.owner is not None else t.out_width)
            for t in self.terms
        )

    def forward(self) -> torch.Tensor:
        # Called at every training step, so it never reads a value back from the device: alive
        # counts stay tensors (constants: no gradient). One gather of the group maxima for all
        # gates; pinned channels are alive whatever their gamma, so they are not pushed down.
        zero = torch.zeros((), device=next(self.model.parameters()).device)
        if self._grouped:
            effective = self._effective()
            pinned = self._pinned.to(effective.device)
            free = effective.masked_fill(pinned, 0.0)
            sums = {o: free[part].sum() for o, part in self._slices.items()}
            with torch.no_grad():
                mask = (effective > self.threshold) | pinned
                alive = {o: mask[part].sum().to(zero.dtype) for o, part in self._slices.items()}
        else:  # the common case, no add: per-gate work only
            gammas = {o: self.gamma(o) for o in self._slices}
            sums = {o: g.sum() for o, g in gammas.items()}
            with torch.no_grad():
                alive = {o: (g > self.threshold).sum().to(zero.dtype) for o, g in gammas.items()}
        total = zero
        for t in self.terms:
            a_in = sum(
                ((s.length if s.owner is None else alive[s.owner]) * s.repeat for s in t.inputs),
                zero,
            )
            gamma_in = sum(
                (sums[s.owner] * s.repeat for s in t.inputs if s.owner is not None), zero
            )
            if t.owner is not None:
                total = total + t.cost * (a_in * sums[t.owner] + alive[t.owner] * gamma_in)
            else:
                total = total + t.cost * float(t.out_width) * gamma_in
        return total

    def gate_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for o in self._owners()
            for p in self.model.node_modules[f"{o}{GATE_SUFFIX}"].parameters()
        ]
