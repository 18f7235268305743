"""Petridish's parent choice: the lower convex hull of (FLOPs, validation error) over the pool.

After Hu et al., "Efficient Forward Architecture Search" (NeurIPS 2019), §3.3, and the
reference implementations (microsoft/petridishnn, microsoft/archai
``archai/supergraph/algos/petridish``): models on or near the lower convex hull of cost against
error are the ones worth growing, since no mix of other models is both cheaper and better.
The hull is found with Andrew's monotone chain; "near" widens it by a relative ``eps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]  # (cost, error): FLOPs, and 1 - accuracy (or any lower-is-better)


def _turns_left(o: Point, a: Point, b: Point) -> bool:
    """o -> a -> b turns counter-clockwise; collinear within rounding is not a turn."""
    left = (a[0] - o[0]) * (b[1] - o[1])
    right = (a[1] - o[1]) * (b[0] - o[0])
    return left - right > 1e-9 * (abs(left) + abs(right))


def lower_hull(points: Sequence[Point]) -> list[int]:
    """Indices of the lower convex hull's vertices, cheapest first, ending at the lowest error.

    Andrew's monotone chain over the points sorted by (cost, error); only the part from the
    cheapest point down to the most accurate one is kept (beyond it the hull climbs: more
    cost and more error). Ties in cost keep the lower error; collinear points are not
    vertices. Raises ``ValueError`` for no points or a non-finite coordinate.
    """
    if not points:
        raise ValueError("no points: the hull of an empty pool is undefined")
    if not np.all(np.isfinite(np.asarray(points, dtype=float))):
        raise ValueError(f"non-finite cost or error in {list(points)}")
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    hull: list[int] = []
    for i in order:
        if hull and points[hull[-1]][0] == points[i][0]:
            continue  # same cost, higher (or equal) error: never below the hull
        while len(hull) >= 2 and not _turns_left(points[hull[-2]], points[hull[-1]], points[i]):
            hull.pop()
        hull.append(i)
    lowest = min(range(len(hull)), key=lambda j: (points[hull[j]][1], points[hull[j]][0]))
    return hull[: lowest + 1]


def hull_error(points: Sequence[Point], hull: Sequence[int], cost: float) -> float:
    """The hull's error at ``cost``: linear between vertices, the lowest error beyond the last
    vertex, the first vertex's error below the first (no model is cheaper)."""
    xs = [points[i][0] for i in hull]
    ys = [points[i][1] for i in hull]
    return float(np.interp(cost, xs, ys, left=ys[0], right=ys[-1]))


def near_hull(points: Sequence[Point], eps: float = 0.025) -> list[int]:
    """Indices of the points whose error is at most ``hull_error(cost) * (1 + eps)``: the
    hull's vertices and the models within ``eps`` (relative) of it, in input order."""
    if eps < 0:
        raise ValueError(f"eps={eps} must be >= 0")
    hull = lower_hull(points)
    return [
        i
        for i, (cost, error) in enumerate(points)
        if error <= hull_error(points, hull, cost) * (1 + eps) + 1e-12
    ]


def parent_weights(costs: Sequence[float], times_chosen: Sequence[int]) -> np.ndarray:
    """Sampling weights of near-hull models, normalised: ``1 / (1 + times already chosen) +
    1 / (1 + cost / max cost)``, so unexplored and cheap models are grown first."""
    costs_arr = np.asarray(costs, dtype=float)
    scale = costs_arr.max() if len(costs_arr) and costs_arr.max() > 0 else 1.0
    weights = 1 / (1 + np.asarray(times_chosen, dtype=float)) + 1 / (1 + costs_arr / scale)
    return weights / weights.sum()


def choose_parents(
    points: Sequence[Point],
    times_chosen: Sequence[int],
    n: int,
    rng: np.random.Generator,
    eps: float = 0.025,
) -> list[int]:
    """Up to ``n`` distinct parents among the near-hull points, drawn without replacement with
    :func:`parent_weights`; indices into ``points``."""
    candidates = near_hull(points, eps)
    if n <= 0:
        return []
    weights = parent_weights(
        [points[i][0] for i in candidates], [times_chosen[i] for i in candidates]
    )
    k = min(n, len(candidates))
    picked = rng.choice(len(candidates), size=k, replace=False, p=weights)
    return [candidates[int(j)] for j in picked]
