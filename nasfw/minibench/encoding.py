"""Folded DeepNEAT encodings: an ArchGraph as a fixed-length vector, and a problem's
meta-features.

The seeds' mini-benchmarking classifier reads networks "with the corresponding folding level of
nodes" (Khamitov & Popova, the slides' "Classifier training"): a graph of any size is folded
into ``F`` depth bins, so networks of different depths compare position by position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw.graph import INPUT, ArchGraph

# Parameter families, by the op param names nasfw's ops use (a plugin op whose params have
# other names adds to the op histogram only).
FAMILIES: dict[str, tuple[str, ...]] = {
    "width": ("filters", "units", "dim", "width"),
    "kernel": ("kernel_size", "pool_size"),
    "rate": ("rate",),
}
CONNECTION_FEATURES = ("nodes", "depth", "skips", "concat", "add", "fan_in_mean", "fan_in_max")
MODALITIES = ("image", "tabular", "sequence", "text")
TASKS = ("classification", "regression")
META_FEATURES = (
    *(f"modality_{m}" for m in MODALITIES),
    *(f"task_{t}" for t in TASKS),
    "log2_input_size",
    "input_rank",
    "log2_outputs",
    "log2_train_samples",
)


def depths(graph: ArchGraph) -> dict[str, int]:
    """Each node's depth: the longest path from the network input, in nodes (first layer: 1)."""
    found: dict[str, int] = {}
    for node in graph.topological_order():
        found[node.id] = 1 + max((found.get(i, 0) for i in node.inputs if i != INPUT), default=0)
    return found


def _family_value(family: str, value: float) -> float:
    # Widths span 8..4096: compared on a log scale, as a doubling is one step.
    return math.log2(1.0 + value) if family == "width" else float(value)


def feature_names(folding: int, ops: Sequence[str]) -> list[str]:
    """The name of every entry of :func:`fold`'s vector, in order."""
    names = []
    for b in range(folding):
        names += [f"bin{b}/op_{op}" for op in ops]
        names += [f"bin{b}/{fam}_{stat}" for fam in FAMILIES for stat in ("mean", "max")]
    return names + [f"graph/{name}" for name in CONNECTION_FEATURES]


def fold(graph: ArchGraph, folding: int, ops: Sequence[str]) -> np.ndarray:
    """The folded encoding of ``graph`` at folding level ``F = folding``.

    Nodes are binned by depth into ``F`` equal bins (node at depth ``d`` of ``D`` goes to bin
    ``floor((d - 1) F / D)``). Per bin: the share of the graph's nodes with each op of ``ops``
    (ops not listed are not counted) and the mean and max of each parameter family of
    :data:`FAMILIES` (widths as log2(1 + w); 0 where the bin has none). Then the connection
    statistics of the whole graph: node count, depth, skip inputs (inputs beyond a node's
    first), concat and add merges, mean and max fan-in.

    Returns:
        float64 vector of length ``F * (len(ops) + 2 * len(FAMILIES)) + 7``, named by
        :func:`feature_names`.

    Raises:
        ValueError: ``folding < 1``.
    """
    if folding < 1:
        raise ValueError(f"folding must be >= 1, got {folding}")
    index = {op: i for i, op in enumerate(ops)}
    per_bin = len(ops) + 2 * len(FAMILIES)
    vector = np.zeros(folding * per_bin + len(CONNECTION_FEATURES))
    level = depths(graph)
    deepest = max(level.values(), default=1)
    values: dict[tuple[int, str], list[float]] = {}
    n = max(len(graph), 1)
    for node in graph:
        b = min(folding - 1, (level[node.id] - 1) * folding // deepest)
        if node.op in index:
            vector[b * per_bin + index[node.op]] += 1.0 / n
        for family, names in FAMILIES.items():
            for name in names:
                value = node.params.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.setdefault((b, family), []).append(_family_value(family, value))
    for (b, family), found in values.items():
        at = b * per_bin + len(ops) + 2 * list(FAMILIES).index(family)
        vector[at] = float(np.mean(found))
        vector[at + 1] = float(np.max(found))
    fan_in = [len(node.inputs) for node in graph] or [0]
    merged = [node.merge for node in graph if len(node.inputs) > 1]
    vector[folding * per_bin :] = (
        len(graph),
        deepest,
        sum(f - 1 for f in fan_in if f > 1),
        merged.count("concat"),
        merged.count("add"),
        float(np.mean(fan_in)),
        max(fan_in),
    )
    return vector


@dataclass(frozen=True)
class ProblemMeta:
    """What a problem is, as the DB keeps it: the classifier's meta-features.

    ``input_shape`` excludes the batch dimension (``(C, H, W)`` images, ``(C, L)`` sequences,
    ``(F,)`` tabular features, ``(L,)`` token ids); ``n_outputs`` is the number of classes
    (or regression targets); ``n_train`` the training examples.
    """

    modality: str
    task: str
    input_shape: tuple[int, ...]
    n_outputs: int
    n_train: int

    @classmethod
    def of(cls, problem: Any) -> ProblemMeta:
        """The meta-features of a loaded :class:`nasfw.Problem`."""
        return cls(
            str(problem.modality),
            str(problem.task),
            tuple(int(d) for d in problem.input_shape),
            int(problem.n_outputs),
            int(problem.n_train),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "n_outputs": self.n_outputs,
            "n_train": self.n_train,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProblemMeta:
        return cls(
            str(data["modality"]),
            str(data["task"]),
            tuple(int(d) for d in data["input_shape"]),
            int(data["n_outputs"]),
            int(data["n_train"]),
        )

    def vector(self) -> np.ndarray:
        """The meta-features in :data:`META_FEATURES` order (one-hot modality and task, log2
        sizes)."""
        return np.array(
            [
                *(float(self.modality == m) for m in MODALITIES),
                *(float(self.task == t) for t in TASKS),
                math.log2(max(1, math.prod(self.input_shape))),
                len(self.input_shape),
                math.log2(max(1, self.n_outputs)),
                math.log2(max(1, self.n_train)),
            ]
        )
