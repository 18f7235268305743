"""The statistics every benchmark table gives: a figure is never one number but a median with
its range and a bootstrap confidence interval over runs (seeds, repeats, pairs), and two arms run
on the same seeds are compared pair by pair.

Methods: percentile bootstrap of the median (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13) through :func:`scipy.stats.bootstrap`; Wilcoxon's signed-rank test
for paired differences (:func:`scipy.stats.wilcoxon`, two-sided; zero differences dropped as in
Wilcoxon's original, ``zero_method="wilcox"``). Both are deterministic here: the bootstrap's
generator is seeded, so a ``--report`` run reprints the same intervals from the same raw
results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class Spread:
    """A figure over ``n`` runs: its median, range and the bootstrap CI of the median
    (``ci_low``/``ci_high`` equal the median when n < 3: too few runs for an interval, and
    :meth:`text` says so)."""

    n: int
    median: float
    low: float  # the smallest run's value
    high: float  # the largest
    ci_low: float
    ci_high: float
    mean: float
    sem: float  # standard error of the mean (0 when n < 2)

    def text(self, digits: int = 3) -> str:
        """``0.912 [0.900, 0.930] (n=5, range 0.890 to 0.940)``: the median and its 95 % CI."""
        f = f"{{:.{digits}f}}"
        interval = (
            f"[{f.format(self.ci_low)}, {f.format(self.ci_high)}]" if self.n >= 3 else "[no CI]"
        )
        return (
            f"{f.format(self.median)} {interval} "
            f"(n={self.n}, range {f.format(self.low)} to {f.format(self.high)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """Arm A minus arm B over ``n`` pairs (the same seed or the same network in both arms):
    the median difference with its bootstrap CI, how many pairs A won, tied and lost, and
    Wilcoxon's signed-rank p-value (None when every difference is 0 or n < 2)."""

    n: int
    difference: Spread
    wins: int
    ties: int
    losses: int
    p_value: float | None

    def text(self, digits: int = 3) -> str:
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        return (
            f"{self.difference.text(digits)}; A better in {self.wins}, tied {self.ties}, "
            f"worse in {self.losses} of {self.n}; Wilcoxon p={p}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference": self.difference.to_dict()}


def describe(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (non-finite values are an error: a run that produced
    nothing must fail the benchmark before it reaches a table).

    Raises:
        ValueError: ``values`` is empty or holds NaN or an infinity.
    """
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        raise ValueError("no values: a figure needs at least one run")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"non-finite values among {data.tolist()}")
    median = float(np.median(data))
    ci_low = ci_high = median
    if data.size >= 3 and np.ptp(data) > 0:
        from scipy.stats import bootstrap

        result = bootstrap(
            (data,),
            np.median,
            confidence_level=CONFIDENCE,
            n_resamples=RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(SEED),
        )
        ci_low = float(result.confidence_interval.low)
        ci_high = float(result.confidence_interval.high)
    sem = float(np.std(data, ddof=1) / math.sqrt(data.size)) if data.size >= 2 else 0.0
    return Spread(
        n=int(data.size),
        median=median,
        low=float(data.min()),
        high=float(data.max()),
        ci_low=ci_low,
        ci_high=ci_high,
        mean=float(data.mean()),
        sem=sem,
    )


def paired(a: Sequence[float], b: Sequence[float], tolerance: float = 0.0) -> Paired:
    """Arm ``a`` against arm ``b``, pair by pair (``a[i]`` and ``b[i]`` ran on the same seed);
    a pair whose difference is within ``tolerance`` counts as a tie (and as 0 in the test).

    Raises:
        ValueError: the arms have different lengths, or no pairs.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired arms need as many runs each: {len(a)} against {len(b)}")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    diffs[np.abs(diffs) <= tolerance] = 0.0
    spread = describe(diffs.tolist())
    p_value = None
    if diffs.size >= 2 and np.any(diffs != 0):
        from scipy.stats import wilcoxon

        p_value = float(wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
    return Paired(
        n=int(diffs.size),
        difference=spread,
        wins=int(np.sum(diffs > 0)),
        ties=int(np.sum(diffs == 0)),
        losses=int(np.sum(diffs < 0)),
        p_value=p_value,
    )


def median_time(times: Sequence[float]) -> float:
    """The median of times to a target, ``inf`` standing for never reached (so the median is
    ``inf`` when half the runs or more never reached it)."""
    import numpy as np

    return float(np.median(np.asarray(times, dtype=float)))


def ratio_interval(mine: Sequence[float], theirs: Sequence[float]) -> tuple[float, float]:
    """Percentile bootstrap (2,000 resamples, seeded) of ``median(mine) / median(theirs)``,
    runs resampled in pairs (``mine[i]`` and ``theirs[i]`` ran on the same seed); times may be
    ``inf`` (never reached), so an interval may end at ``inf``."""
    import numpy as np

    a, b = np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float)
    rng = np.random.default_rng(SEED)
    ratios = []
    for _ in range(2000):
        pick = rng.integers(0, len(a), len(a))
        num, den = np.median(a[pick]), np.median(b[pick])
        ratios.append(num / den if den > 0 else math.inf)
    low = np.percentile(ratios, 2.5, method="lower")
    high = np.percentile(ratios, 97.5, method="higher")
    return float(low), float(high)
