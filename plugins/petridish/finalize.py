"""Petridish's finalization: the chosen candidates become real layers of a child network.

Hu et al. 2019, §3.2: the top-k (input, op) candidates lose their stop-gradient and
stop-forward, are concatenated, projected (1x1) to the target's width and batch-normalised,
then added to the target node through a learnable scale that starts at 0, so the child at
initialisation computes exactly its parent's function; with the parent's weights inherited
(:func:`inherit_weights`) it goes on training from where the parent stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from nasfw import ArchGraph, BuildError, Node

from .candidates import Candidate


def finalize(
    graph: ArchGraph, target: str, chosen: Sequence[Candidate], target_shape: Sequence[int]
) -> ArchGraph:
    """``graph`` with ``chosen`` grown onto ``target`` (whose output shape is
    ``target_shape``); the new nodes are named ``<target>_pd<k>``, ``<target>_pdcat``,
    ``_pdproj``, ``_pdbn``, ``_pdscale`` and ``_pdsum`` (the node the target's consumers now
    read). Raises :class:`BuildError` for no candidates or a name already taken."""
    if not chosen:
        raise BuildError(f"no candidates to grow onto {target!r}")
    prefix = f"{target}_pd"
    if any(node.id.startswith(prefix) for node in graph):
        raise BuildError(f"{target!r} was grown before: nodes named {prefix}* exist")
    grown = [
        Node(f"{prefix}{k}", c.op, dict(c.params), inputs=(c.source,)) for k, c in enumerate(chosen)
    ]
    last = grown[0].id
    if len(grown) > 1:
        grown.append(Node(f"{prefix}cat", "identity", {}, tuple(n.id for n in grown), "concat"))
        last = f"{prefix}cat"
    rank, width = len(target_shape), int(target_shape[0])
    linear = {"activation": "linear"}
    projection = (
        Node(f"{prefix}proj", "conv2d", {"filters": width, "kernel_size": 1, **linear}, (last,))
        if rank == 3
        else Node(
            f"{prefix}proj", "conv1d", {"filters": width, "kernel_size": 1, **linear}, (last,)
        )
        if rank == 2
        else Node(f"{prefix}proj", "dense", {"units": width, **linear}, (last,))
    )
    grown += [
        projection,
        Node(f"{prefix}bn", "batchnorm", {}, (projection.id,)),
        Node(f"{prefix}scale", "scale", {}, (f"{prefix}bn",)),
        Node(f"{prefix}sum", "identity", {}, (target, f"{prefix}scale"), "add"),
    ]
    total = f"{prefix}sum"
    nodes: list[Node] = []
    for node in graph:
        inputs = tuple(total if i == target else i for i in node.inputs)
        nodes.append(replace(node, inputs=inputs))
        if node.id == target:
            nodes += grown
    return ArchGraph(nodes, total if graph.output == target else graph.output)


def inherit_weights(child: nn.Module, parent: nn.Module) -> int:
    """Copy every parameter and buffer of ``parent`` into ``child`` where both have the same
    name and shape (the nodes they share); returns how many tensors were copied."""
    own = child.state_dict()
    shared = {
        name: tensor
        for name, tensor in parent.state_dict().items()
        if name in own and own[name].shape == tensor.shape
    }
    with torch.no_grad():
        child.load_state_dict(shared, strict=False)
    return len(shared)
