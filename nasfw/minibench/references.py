"""Reference networks and problem similarity by ranking (issue 28, parts 1 and 2).

A *space family* is what a problem's networks are drawn from: for a tabular benchmark (a
problem with a :attr:`nasfw.Problem.table`) the search space kind its table holds
(``nasbench201``, ``fcnet``, ``hpobench_mlp``); for any other problem its modality (whose full
space ``minibench.spaces`` names). Each family gets one fixed set of reference networks, chosen
once when the family first enters the DB (:func:`choose_references`) and stored with it, so
every problem of the family is scored on the same networks.

Two problems are similar when the reference networks rank the same way on them:
:func:`similarity` is Kendall's tau-b of their reference scores. Kendall rather than Spearman
because (1) tables hold many ties and near-ties (NAS-Bench-201's cells with no path from input
to output all score ~10 %), which tau-b treats explicitly; (2) its value has a direct reading,
``(1 + tau) / 2`` is the share of reference pairs both problems order alike, which is the
question a warm start asks ("is what is better there better here?"); (3) it is less swayed by
one badly ranked network, which matters with 16-32 references. Meta-features
(:meth:`ProblemMeta.vector`) only break ties (:func:`nearest`).

Scores come from the table (the mean of :data:`SCORE_SEEDS` training seeds, the cost the
table records summed as simulated seconds); scoring references of trained (non-table)
families is left to a later increment (they would cost 16-32 trainings per problem).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw.graph import ArchGraph
from nasfw.minibench.encoding import ProblemMeta

#: How many reference networks a family gets (``minibench.references`` overrides it).
N_REFERENCES = 24
#: The seed of the reference choice: fixed, so the same family gets the same networks in
#: every DB this version builds (the run's ``seed`` must not change them).
REFERENCE_SEED = 28
#: Candidates drawn per reference kept, before the diverse subset is picked.
POOL_FACTOR = 32
#: Training seeds a table problem's reference score is averaged over.
SCORE_SEEDS = (0, 1, 2)
#: Fewer shared references than this and two problems are not compared (tau undefined).
MIN_SHARED = 3


def family_of(problem: Any) -> str:
    """The space family of a loaded :class:`nasfw.Problem`: its table's space kind, else its
    modality."""
    table = getattr(problem, "table", None)
    return str(table.space) if table is not None else str(problem.modality)


def space_config(name: str) -> Any:
    """The config of ``search_space=<name>``, typed by its kind's schema (a YAML or mapping
    preset as the core's :class:`nasfw.SearchSpaceConfig`).

    Raises:
        ConfigError: naming the space, when no such preset exists.
    """
    from omegaconf import OmegaConf

    from nasfw.config import ConfigError
    from nasfw.registry import preset, space_node

    node = preset("search_space", name)
    if node is None:
        raise ConfigError(f"search_space={name}: no such search space")
    return node if OmegaConf.get_type(node) not in (None, dict) else space_node(node)


def space_of(name: str) -> Any:
    """The search space ``search_space=<name>`` gives a run, with every registered op
    (raises as :func:`space_config`)."""
    from nasfw.registry import registry

    return registry().space(space_config(name))


def _features(space: Any, graph: ArchGraph) -> dict[str, Any]:
    """The decisions that make ``graph`` in ``space`` (its Optuna parameters)."""
    params, _ = space.describe(graph)
    return {k: repr(v) for k, v in params.items()}


def _distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Hamming distance over the union of two networks' decisions."""
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


def choose_references(space: Any, n: int = N_REFERENCES, seed: int = REFERENCE_SEED) -> list[Any]:
    """``n`` diverse networks of ``space`` (a :class:`nasfw.BaseSearchSpace`): from
    ``POOL_FACTOR * n`` seeded random samples, greedy farthest-point selection by Hamming
    distance over their decisions (the first sample starts it), so the set spreads over op
    mixes, sizes and training settings rather than clustering where sampling is dense.
    Deterministic for a given space, ``n`` and ``seed``; duplicates are never kept (fewer than
    ``n`` come back only when the space has fewer distinct networks)."""
    from nasfw.search_space import RandomChooser

    rng = np.random.default_rng(seed)
    pool: list[tuple[Any, dict[str, Any]]] = []
    seen: set[str] = set()
    for _ in range(POOL_FACTOR * n):
        graph = space.sample(RandomChooser(rng))
        feats = _features(space, graph)
        key = repr(sorted(feats.items()))
        if key not in seen:
            seen.add(key)
            pool.append((graph, feats))
    chosen = [pool[0]]
    gap = np.array([_distance(pool[0][1], f) for _, f in pool], dtype=float)
    while len(chosen) < min(n, len(pool)):
        i = int(np.argmax(gap))  # first of the farthest: deterministic
        chosen.append(pool[i])
        gap = np.minimum(gap, [_distance(pool[i][1], f) for _, f in pool])
    return [graph for graph, _ in chosen]


def score_table(problem: Any, graphs: Sequence[Any]) -> list[tuple[float, float]]:
    """Each of ``graphs``' score on a table problem: (mean metric over :data:`SCORE_SEEDS`,
    summed simulated training seconds of those lookups). Raises :class:`nasfw.GraphError` for
    a graph outside the table."""
    out = []
    for graph in graphs:
        found = [problem.table.lookup(graph, seed) for seed in SCORE_SEEDS]
        out.append(
            (
                float(np.mean([r.metric for r in found])),
                float(sum(r.train_seconds or 0.0 for r in found)),
            )
        )
    return out


def similarity(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Kendall's tau-b of two problems' scores (reference index -> score, higher better) over
    the references both have; ``nan`` with fewer than :data:`MIN_SHARED` shared or a constant
    side. In [-1, 1]: 1 the same order, 0 unrelated, -1 reversed."""
    from scipy.stats import kendalltau

    shared = sorted(set(a) & set(b))
    if len(shared) < MIN_SHARED:
        return math.nan
    x, y = [a[i] for i in shared], [b[i] for i in shared]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


@dataclass(frozen=True)
class Neighbour:
    """A DB problem near a new one: ``tau`` its :func:`similarity`, ``distance`` the Euclidean
    distance of meta-feature vectors (the tie-breaker; ``nan`` without the new problem's
    meta-features)."""

    problem_id: str
    tau: float
    distance: float


def nearest(
    scores: Mapping[int, float],
    db_scores: Mapping[str, Mapping[int, float]],
    metas: Mapping[str, ProblemMeta] | None = None,
    meta: ProblemMeta | None = None,
    k: int | None = None,
    exclude: Sequence[str] = (),
) -> list[Neighbour]:
    """The DB problems nearest a problem with reference ``scores``, most similar first:
    by :func:`similarity` (rounded to 2 decimals, so near-equal taus count as a tie), then by
    meta-feature distance to ``meta`` (when given), then by id. ``db_scores``: each DB problem's
    reference scores (of the same family); problems in ``exclude`` or with an undefined tau
    are left out; ``k`` keeps the first k (None: all)."""
    found = []
    for pid, theirs in db_scores.items():
        if pid in exclude:
            continue
        tau = similarity(scores, theirs)
        if math.isnan(tau):
            continue
        distance = math.nan
        if meta is not None and metas is not None and pid in metas:
            distance = float(np.linalg.norm(meta.vector() - metas[pid].vector()))
        found.append(Neighbour(pid, tau, distance))
    found.sort(
        key=lambda n: (
            -round(n.tau, 2),
            math.inf if math.isnan(n.distance) else n.distance,
            n.problem_id,
        )
    )
    return found if k is None else found[:k]


def informative(scores: Mapping[str, Mapping[int, float]], n: int) -> list[int]:
    """The ``n`` reference indices most informative for telling the problems of ``scores``
    (problem -> reference index -> score, one family) apart, most informative first; every
    reference the problems share, in index order, when there are at most ``n``.

    Kendall's tau counts reference *pairs* two problems order alike, so a pair of references
    informs where problems order it differently. ``D[i, j]`` = the number of problem pairs
    that order references ``i`` and ``j`` differently (a tie counts as an order). Greedy:
    each step adds the reference with the most disagreements with those already chosen
    (the sum of ``D`` over them), ties broken by its disagreements with every reference,
    then by the lower index; deterministic. With fewer than two problems nothing disagrees
    and the first ``n`` indices come back.
    """
    common = sorted(set.intersection(*(set(s) for s in scores.values()))) if scores else []
    if len(common) <= n:
        return common
    problems = list(scores.values())
    order = [
        np.sign(np.subtract.outer(*(2 * [np.array([s[i] for i in common])]))) for s in problems
    ]
    disagree = np.zeros((len(common), len(common)))
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            disagree += order[a] != order[b]
    total = disagree.sum(axis=1)
    chosen: list[int] = []
    while len(chosen) < n:
        left = [i for i in range(len(common)) if i not in chosen]
        best = max(left, key=lambda i: (disagree[i, chosen].sum(), total[i], -i))
        chosen.append(best)
    return [common[i] for i in chosen]


#: A split of a family's problems into classes must separate them at least this well
#: (silhouette over ``1 - tau`` distances) to be kept, as the graph-based classes ask.
MIN_SILHOUETTE = 0.25


def similarity_classes(
    scores: Mapping[str, Mapping[int, float]], max_classes: int
) -> list[list[str]]:
    """Classes of one family's problems (``scores``: problem -> reference index -> score) by
    how alike their reference rankings are (issue 28, part 4): average-linkage agglomerative
    clustering of the distances ``1 - tau`` (:func:`similarity`; an undefined tau counts as
    0, unrelated), into 2..``max_classes`` classes where the best split's silhouette reaches
    :data:`MIN_SILHOUETTE`, else one class. Each class's problems sorted, the classes by their
    first problem; deterministic."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    ids = sorted(scores)
    n = len(ids)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            tau = similarity(scores[ids[i]], scores[ids[j]])
            distance[i, j] = distance[j, i] = 1.0 - (0.0 if math.isnan(tau) else tau)
    labels = [0] * n
    best = MIN_SILHOUETTE
    for k in range(2, min(max_classes, n - 1) + 1):
        found = AgglomerativeClustering(
            n_clusters=k, metric="precomputed", linkage="average"
        ).fit_predict(distance)
        score = float(silhouette_score(distance, found, metric="precomputed"))
        if score > best:
            best, labels = score, [int(x) for x in found]
    classes: dict[int, list[str]] = {}
    for pid, label in zip(ids, labels, strict=True):
        classes.setdefault(label, []).append(pid)
    return sorted(classes.values())


def classify_leave_one_out(
    scores: Mapping[str, Mapping[int, float]], max_classes: int, probe: int
) -> dict[str, Any]:
    """How well a problem's class is recognised from a probe, each problem held out in turn.

    The classes are :func:`similarity_classes` of every problem. A held-out problem is
    probed as ``search_space=auto`` probes it: its scores on the ``probe`` references
    :func:`informative` picks from the other problems; it is put in the class of its
    :func:`nearest` other problem. A problem alone in its class cannot be recognised and
    counts as wrong. The baseline puts every held-out problem in the class most of the other
    problems are in (ties: the first class). Returns ``classes``, ``accuracy``,
    ``baseline`` (shares of the problems) and per problem ``predicted`` (the nearest
    problem's class index, None without a comparable one) and ``actual``."""
    classes = similarity_classes(scores, max_classes)
    class_of = {pid: i for i, members in enumerate(classes) for pid in members}
    right = base = 0
    per: dict[str, Any] = {}
    for pid in sorted(scores):
        others = {q: s for q, s in scores.items() if q != pid}
        picked = informative(others, probe)
        probed = {i: v for i, v in scores[pid].items() if i in picked}
        near = nearest(probed, others, k=1)
        predicted = class_of[near[0].problem_id] if near else None
        counts = [sum(class_of[q] == c for q in others) for c in range(len(classes))]
        majority = counts.index(max(counts)) if others else None
        right += predicted == class_of[pid]
        base += majority == class_of[pid]
        per[pid] = {"actual": class_of[pid], "predicted": predicted}
    n = max(len(scores), 1)
    return {"classes": classes, "accuracy": right / n, "baseline": base / n, "problems": per}
