"""Petridish's hull selection on points whose hull is known."""

from __future__ import annotations

import numpy as np
import pytest

from nasfw.plugins.tuners.petridish.hull import (
    choose_parents,
    hull_error,
    lower_hull,
    near_hull,
    parent_weights,
)

# cost, error: 0, 2, 4 are the hull (4 is the most accurate); 1 lies above it; 3 is dearer and
# worse than 4; 5 lies exactly on the segment 0-2 (collinear: not a vertex).
POINTS = [(1.0, 0.50), (2.0, 0.45), (3.0, 0.20), (6.0, 0.30), (5.0, 0.10), (2.0, 0.35)]


def test_lower_hull_of_known_points():
    assert lower_hull(POINTS) == [0, 2, 4]
    assert lower_hull([(1.0, 0.5)]) == [0]
    # collinear points: only the ends are vertices
    assert lower_hull([(1.0, 0.3), (2.0, 0.2), (3.0, 0.1)]) == [0, 2]
    # same cost: the lower error wins
    assert lower_hull([(1.0, 0.4), (1.0, 0.3)]) == [1]
    # the cheapest is also the best: one vertex
    assert lower_hull([(1.0, 0.1), (2.0, 0.2), (3.0, 0.05 + 0.1)]) == [0]


def test_hull_error_interpolates_and_stays_flat_beyond():
    hull = lower_hull(POINTS)
    assert hull_error(POINTS, hull, 2.5) == pytest.approx((0.35 + 0.20) / 2)
    assert hull_error(POINTS, hull, 100.0) == pytest.approx(0.10)
    assert hull_error(POINTS, hull, 0.5) == pytest.approx(0.50)


def test_near_hull_widens_by_eps():
    assert near_hull(POINTS, eps=0.0) == [0, 2, 4, 5]
    # 1 is at 0.45 where the hull is 0.35: within 30 %, not within 25 %
    assert 1 not in near_hull(POINTS, eps=0.25) and 1 in near_hull(POINTS, eps=0.3)
    # 3 is at 0.30 where the (flat) hull is 0.10: three times worse
    assert 3 not in near_hull(POINTS, eps=1.0)
    with pytest.raises(ValueError, match="eps"):
        near_hull(POINTS, eps=-0.1)
    with pytest.raises(ValueError, match="non-finite"):
        near_hull([(1.0, float("nan"))])


def test_parents_are_near_hull_and_favour_fresh_cheap_models():
    weights = parent_weights([1.0, 1.0, 4.0], [0, 3, 0])
    assert weights[0] > weights[1] and weights[0] > weights[2]
    assert weights.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    counts = np.zeros(len(POINTS))
    for _ in range(400):
        picked = choose_parents(POINTS, [0] * len(POINTS), 2, rng)
        assert len(picked) == len(set(picked)) == 2
        assert set(picked) <= {0, 2, 4, 5}
        counts[picked] += 1
    assert counts[0] > counts[4]  # the cheapest is chosen more often than the dearest
    assert choose_parents(POINTS, [0] * 6, 10, rng, eps=0.0) != []
    assert len(choose_parents(POINTS, [0] * 6, 10, rng, eps=0.0)) == 4
