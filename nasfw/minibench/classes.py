"""Classes of problems and their constraint sets: the seeds' "building generalized
configuration sets" (Khamitov & Popova, slides "Merging classes ... before performing
regrouping and linearization for sets like filter size, blocks/activation-functions
availability/certain type of connections").

Problems are grouped by modality, then within a modality by the similarity of their best
networks (agglomerative clustering of each problem's mean folded encoding, the number of
clusters picked by silhouette). A class's constraint set is the merge of its problems' best
networks: the ops each stage of the full space used, each parameter's range linearised to the
observed minimum..maximum (or the observed choices), the connection and merge kinds seen, the
node counts seen. Classes whose constraint sets come out equal are merged, then regrouped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw.graph import ArchGraph
from nasfw.minibench.db import BestModelDB, ModelEntry, ProblemEntry
from nasfw.minibench.encoding import MODALITIES, fold

# A split into clusters must separate the problems at least this well (silhouette) to be kept.
MIN_SILHOUETTE = 0.25


@dataclass
class ProblemClass:
    """A class of problems and the constraint set derived from their best networks.

    ``space`` is a ``SearchSpaceConfig`` as a plain dict (``search_space.*``), named
    ``mb_<modality>_<i>``.
    """

    name: str
    modality: str
    problems: list[str]
    space: dict[str, Any]


def problem_vectors(
    models: Sequence[ModelEntry], folding: int, ops: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each problem's mean folded encoding of its best networks."""
    found: dict[str, list[np.ndarray]] = {}
    for model in models:
        found.setdefault(model.problem_id, []).append(fold(model.graph, folding, ops))
    return {pid: np.mean(vectors, axis=0) for pid, vectors in found.items()}


def _clusters(vectors: np.ndarray, max_classes: int) -> list[int]:
    """Cluster labels of the rows of ``vectors``: one cluster unless a split into 2..max
    clusters reaches :data:`MIN_SILHOUETTE`."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    n = len(vectors)
    if n < 3 or max_classes < 2:
        return [0] * n
    spread = vectors.std(axis=0)
    scaled = (vectors[:, spread > 0] - vectors[:, spread > 0].mean(axis=0)) / spread[spread > 0]
    if scaled.shape[1] == 0:
        return [0] * n
    best: tuple[float, list[int]] = (MIN_SILHOUETTE, [0] * n)
    for k in range(2, min(max_classes, n - 1) + 1):
        labels = AgglomerativeClustering(n_clusters=k, linkage="average").fit_predict(scaled)
        score = float(silhouette_score(scaled, labels))
        if score > best[0]:
            best = (score, [int(x) for x in labels])
    return best[1]


def stage_split(graph: ArchGraph, stages: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The nodes of ``graph`` (topological order) per stage of a full space: each node goes to
    the current stage if it allows the op, else to the next stage that does (networks
    assembled by CoDeepNEAT may be longer than a stage's ``max_nodes``)."""
    split: list[list[Any]] = [[] for _ in stages]
    s = 0
    for node in graph.topological_order():
        while s < len(stages) - 1 and node.op not in stages[s]["ops"]:
            s += 1
        split[s].append(node)
    return split


def derive_space(
    name: str, modality: str, graphs: Sequence[ArchGraph], full: Mapping[str, Any]
) -> dict[str, Any]:
    """The constraint set that merges ``graphs`` (the best networks of a class) within the
    full space ``full`` (a ``SearchSpaceConfig`` as a dict), as a ``SearchSpaceConfig`` dict.

    Per stage: the ops used, in the full space's order, and the node counts seen (a stage no
    network used is dropped where the full space lets it be empty). Per op and parameter the
    full space ranges: the observed choices, or the observed ``low..high``. Skip connections
    only if some network has one, with the merge kinds seen.

    Raises:
        ValueError: ``graphs`` is empty.
    """
    if not graphs:
        raise ValueError(f"class {name}: no networks to derive a constraint set from")
    full_stages = list(full["stages"])
    splits = [stage_split(g, full_stages) for g in graphs]
    stages = []
    for s, stage in enumerate(full_stages):
        used = {node.op for split in splits for node in split[s]}
        counts = [len(split[s]) for split in splits]
        if not used:
            if int(stage.get("min_nodes", 1)) == 0:
                continue
            used = set(stage["ops"])
        stages.append(
            {
                "name": stage["name"],
                "ops": [op for op in stage["ops"] if op in used],
                "min_nodes": min(counts),
                "max_nodes": max(1, max(counts)),
            }
        )
    values: dict[tuple[str, str], list[Any]] = {}
    for graph in graphs:
        for node in graph:
            for param, value in node.params.items():
                values.setdefault((node.op, param), []).append(value)
    used_ops = {op for stage in stages for op in stage["ops"]}
    ops: dict[str, dict[str, Any]] = {}
    for op, params in (full.get("ops") or {}).items():
        if op not in used_ops:
            continue
        ops[op] = {}
        for param, rng in (params or {}).items():
            seen = values.get((op, param))
            if not seen:
                ops[op][param] = dict(rng)
            elif rng.get("choices") is not None:
                ops[op][param] = {"choices": [c for c in rng["choices"] if c in seen]}
            else:
                kind = int if all(isinstance(v, int) for v in seen) else float
                ops[op][param] = {
                    "low": kind(min(seen)),
                    "high": kind(max(seen)),
                    "log": bool(rng.get("log", False)),
                }
    multi = [n for g in graphs for n in g if len(n.inputs) > 1]
    merges = [m for m in full.get("merge", ["concat", "add"]) if any(n.merge == m for n in multi)]
    return {
        "name": name,
        "modalities": [modality],
        "stages": stages,
        "ops": ops,
        "connections": ["sequential", "skip"] if multi else ["sequential"],
        "merge": merges or list(full.get("merge", ["concat", "add"])),
        "max_nodes": None,
        "max_params": int(full.get("max_params", 2_000_000)),
    }


def group_problems(
    db: BestModelDB,
    full_spaces: Mapping[str, Mapping[str, Any]],
    folding: int,
    ops: Sequence[str],
    max_classes: int,
) -> list[ProblemClass]:
    """The classes of the DB's problems, each with its constraint set (see the module).

    ``full_spaces``: the full space of each modality (``SearchSpaceConfig`` dicts), within
    which the constraint sets are derived.
    """
    problems = db.problems()
    models = db.models()
    vectors = problem_vectors(models, folding, ops)
    graphs: dict[str, list[ArchGraph]] = {}
    for model in models:
        graphs.setdefault(model.problem_id, []).append(model.graph)
    classes: list[ProblemClass] = []
    for modality in MODALITIES:
        if modality not in full_spaces:
            continue
        # Only problems searched in the modality's full space (a table problem's networks
        # are of its table's space, another family).
        full = str(full_spaces[modality].get("name", ""))
        members: list[ProblemEntry] = [
            p
            for p in problems
            if p.meta.modality == modality and p.id in vectors and p.search_space in ("", full)
        ]
        if not members:
            continue
        labels = _clusters(np.stack([vectors[p.id] for p in members]), max_classes)
        groups: dict[int, list[str]] = {}
        for problem, label in zip(members, labels, strict=True):
            groups.setdefault(label, []).append(problem.id)
        # Equal constraint sets are one class: merged, then the classes renumbered.
        merged: dict[str, list[str]] = {}
        for ids in sorted(groups.values()):
            space = derive_space(
                "", modality, [g for i in ids for g in graphs[i]], full_spaces[modality]
            )
            key = repr(sorted(space.items()))
            merged.setdefault(key, []).extend(ids)
        for i, ids in enumerate(sorted(sorted(v) for v in merged.values())):
            name = f"mb_{modality}_{i}"
            space = derive_space(
                name, modality, [g for pid in ids for g in graphs[pid]], full_spaces[modality]
            )
            classes.append(ProblemClass(name, modality, ids, space))
    return classes
