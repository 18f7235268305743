"""The validation metric x FLOPs Pareto front of a search, whatever tuner ran it.

FLOPs are those ``model_cost`` counts (multiply-adds x 2, one sample's forward pass); the metric
is the problem's validation metric, higher is better (accuracy, r2, mcc, neg_mae).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasfw.context import SearchContext
    from nasfw.records import TrialRecord

FILENAME = "pareto_front.json"


def _on_the_plane(record: TrialRecord, budget: int) -> bool:
    """An ok, exportable trial at ``budget`` epochs or more, with a finite metric and a FLOP
    count: one that has a place on the front (a network that only serves the tuner,
    ``exportable=False``, a pruned one or one trained less than the others has none)."""
    return (
        record.is_result(budget)
        and math.isfinite(record.result.fitness)
        and record.result.flops is not None
    )


def pareto_front(records: Iterable[TrialRecord], budget: int = 0) -> list[TrialRecord]:
    """The trials no other trial dominates (higher metric, fewer FLOPs), by FLOPs ascending.

    A trial dominates another if it is no worse in both and better in one. Failed and pruned
    trials, ok ones without a metric or FLOPs or trained for fewer than ``budget`` epochs
    (:meth:`nasfw.SearchContext.full_budget`), and networks that only serve the tuner take no
    part. Of
    exact duplicates (same metric and FLOPs, e.g. a reused evaluation) only the lowest trial
    number is kept. Along the front both FLOPs and metric strictly increase. Empty input, or
    no eligible trial, gives ``[]``.
    """
    # Cheapest first, and at equal cost the best (then earliest) first: a trial is on the
    # front exactly when it beats every metric seen before it.
    ordered = sorted(
        (r for r in records if _on_the_plane(r, budget)),
        key=lambda r: (r.result.flops, -r.result.fitness, r.number),
    )
    front: list[TrialRecord] = []
    best = -math.inf
    for record in ordered:
        if record.result.fitness > best:
            front.append(record)
            best = record.result.fitness
    return front


def pareto_rows(front: Iterable[TrialRecord], metric: str) -> list[dict[str, Any]]:
    """One JSON-able row per trial of ``front``: ``trial``, ``generation``, ``metric`` (the
    name given, e.g. ``val_accuracy``), its ``value``, ``flops`` (multiply-adds x 2),
    ``n_params`` and ``graph_hash``."""
    return [
        {
            "trial": t.number,
            "generation": t.generation,
            "metric": metric,
            "value": t.result.metric,
            "flops": t.result.flops,
            "n_params": t.result.n_params,
            "graph_hash": t.graph.hash,
        }
        for t in front
    ]


def front_path(context: SearchContext) -> Path:
    """Where the front is written: beside the exported best model (``context.export_dir``), or
    in the run's output directory when nothing was exported (no trial succeeded)."""
    return Path(context.export_dir or context.output_dir) / FILENAME


def write_front(context: SearchContext) -> Path:
    """Write the front of ``context.history`` as ``pareto_front.json`` (a list of
    :func:`pareto_rows`, metric ``val_<metric>``) at :func:`front_path`; return that path.

    Raises OSError if the directory cannot be created or the file written.
    """
    path = front_path(context)
    front = pareto_front(context.history, context.full_budget())
    rows = pareto_rows(front, f"val_{context.problem.metric}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2))
    return path
