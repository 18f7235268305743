"""Screening with the mini-benchmark DB (beyond the seeds): a regressor predicts how good a
network will be on a problem before it is trained, so ``evaluation.screen=k`` trains one of
every ``k`` proposals, the one predicted best.

The regressor (scikit-learn's random forest) learns, from every network the DB's suite
searches trained (``evaluations``), the folded encoding plus the problem's meta-features ->
the network's percentile among its problem's networks (0 worst, 1 best; metrics differ
between problems, ranks compare). Judged like zero-cost proxies (Mellor et al. 2021; Abdelfattah
et al. 2021, Spearman ~0.8 on NAS-Bench-201): by the Spearman rank correlation of prediction and
validation metric on each problem left out of its training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw.graph import ArchGraph
from nasfw.minibench.classify import features
from nasfw.minibench.db import BestModelDB
from nasfw.minibench.encoding import ProblemMeta


def _percentiles(values: Sequence[float]) -> np.ndarray:
    from scipy.stats import rankdata

    if len(values) == 1:
        return np.array([0.5])
    return (rankdata(values) - 1) / (len(values) - 1)


def _dataset(
    db: BestModelDB, folding: int, ops: Sequence[str], exclude: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    meta = {p.id: p.meta for p in db.problems()}
    by_problem: dict[str, list[Any]] = {}
    for e in db.evaluations():
        if e.problem_id not in exclude and e.problem_id in meta:
            by_problem.setdefault(e.problem_id, []).append(e)
    rows, targets, groups = [], [], []
    for pid, found in sorted(by_problem.items()):
        targets.extend(_percentiles([e.value for e in found]))
        rows.extend(features(e.graph, meta[pid], folding, ops) for e in found)
        groups.extend([pid] * len(found))
    if not rows:
        raise ValueError("the DB holds no trained networks to learn from")
    return np.stack(rows), np.asarray(targets), groups


def _forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed)


def train_regressor(
    db: BestModelDB, folding: int, ops: Sequence[str], seed: int = 0, exclude: Sequence[str] = ()
) -> Any:
    """The fitted regressor over every DB network (but ``exclude``'s problems).

    Raises:
        ValueError: the DB holds no trained network.
    """
    x, y, _ = _dataset(db, folding, ops, exclude)
    return _forest(seed).fit(x, y)


@dataclass
class Screener:
    """Ranks proposals for one problem (``meta``) by the regressor's prediction; ``k``
    proposals per trained network (``evaluation.screen``)."""

    regressor: Any
    meta: ProblemMeta
    folding: int
    ops: list[str]
    k: int

    def predict(self, graphs: Sequence[ArchGraph]) -> np.ndarray:
        """Predicted percentile (0..1, higher is better) of each graph, shape ``(len(graphs),)``."""
        rows = np.stack([features(g, self.meta, self.folding, self.ops) for g in graphs])
        return self.regressor.predict(rows)

    def best(self, graphs: Sequence[ArchGraph]) -> int:
        """Index of the graph predicted best (ties: the first)."""
        return int(np.argmax(self.predict(graphs)))


def rank_correlation(
    db: BestModelDB, folding: int, ops: Sequence[str], seed: int = 0
) -> dict[str, Any]:
    """Leave-one-problem-out Spearman correlation between the regressor's prediction and the
    validation metric of each problem's networks (problems with fewer than 3 are skipped).

    Returns:
        ``spearman_mean``, ``spearman_min``, ``per_problem`` (``{problem: rho}``), ``problems``.
    """
    from scipy.stats import spearmanr

    x, y, groups = _dataset(db, folding, ops)
    per_problem: dict[str, float] = {}
    for held in sorted(set(groups)):
        test = [i for i, g in enumerate(groups) if g == held]
        train = [i for i, g in enumerate(groups) if g != held]
        if len(test) < 3 or not train:
            continue
        model = _forest(seed).fit(x[train], y[train])
        truth = [e.value for e in db.evaluations(held)]  # the rows' order: by trial
        rho = spearmanr(model.predict(x[test]), truth).statistic
        per_problem[held] = float(rho) if np.isfinite(rho) else 0.0
    rhos = list(per_problem.values())
    return {
        "spearman_mean": float(np.mean(rhos)) if rhos else float("nan"),
        "spearman_min": float(np.min(rhos)) if rhos else float("nan"),
        "per_problem": per_problem,
        "problems": len(rhos),
    }
