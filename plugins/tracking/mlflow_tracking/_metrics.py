"""Metrics: their names and values, the running best, and the population table.

Step convention (docs/results.md's): in the parent run every metric's step is a trial number (the
order the study recorded the evaluations in), and its timestamp the time that evaluation
finished, so MLflow's charts can put the search on either axis ("Step" or "Time"); in a
generation run the step is the generation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Metric

    from nasfw import Result, SearchContext, TrialRecord

# What nasfw.device_facts records of where a network trained (Result.extra keys).
DEVICE_FACTS = ("device", "device_name", "precision")


def val_name(context: SearchContext) -> str:
    """The problem's validation metric, e.g. ``val_accuracy`` (the study's objective name)."""
    return f"val_{context.problem.metric}"


def metrics(
    values: Mapping[str, float | int | None], step: int, finished: float | None = None
) -> list[Metric]:
    """MLflow metrics at ``step``, stamped ``finished`` (seconds since the epoch) or now."""
    from mlflow.entities import Metric

    stamp = int((finished if finished is not None else time.time()) * 1000)
    return [Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None]


def trial_values(result: Result, val: str) -> dict[str, float | int | None]:
    """One trial's series, named ``trial/...`` so none can pass for a search summary."""
    return {
        f"trial/{val}": result.metric if result.ok else None,
        "trial/loss": result.loss,
        "trial/flops": result.flops,
        "trial/params": result.n_params,
        "trial/train_seconds": result.train_seconds,
        "trial/failed": int(result.status == "failed"),
        "trial/pruned": int(result.pruned),
        "trial/epochs": result.epochs,
        "trial/regularized_score": result.regularized_score,
        # Scorer-specific facts, e.g. regularized scoring's flops_after / params_after.
        **{
            f"trial/{key}": value
            for key, value in sorted(result.extra.items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        },
    }


def trial_metrics(trial: TrialRecord, val: str) -> list[Metric]:
    """A trial's own series (for its generation's run), at the trial's number, and its
    learning curve ``curve/trial_<number>/<val>``, at the step of each epoch."""
    found = metrics(trial_values(trial.result, val), trial.number, trial.result.finished)
    name = f"curve/trial_{trial.number}/{val}"
    for epoch, value in sorted(trial.result.curve.items()):
        found += metrics({name: value}, int(epoch), trial.result.finished)
    return found


def summary_metrics(trial: TrialRecord, seen: int, best: float | None, val: str) -> list[Metric]:
    """The search after ``trial`` (for the parent run): ``n_trials`` evaluated so far and the
    ``best_<val>`` among them, at the trial's number."""
    # best_<val> first: MLflow's compare view plots a run's first metric by default.
    values = {f"best_{val}": best, "n_trials": seen}
    return metrics(values, trial.number, trial.result.finished)


def ok_metric(trial: TrialRecord) -> float | None:
    metric = trial.result.metric
    if not trial.result.ok or metric is None or math.isnan(metric):
        return None
    return float(metric)


def result_metric(trial: TrialRecord, full_budget: int) -> float | None:
    """``trial``'s metric when nasfw counts it as a result (as :meth:`SearchContext.best`
    does): ok, exportable (not one of the tuner's own trainings, such as Petridish's candidate
    trainings) and trained to ``full_budget`` epochs; None otherwise."""
    if not trial.exportable or trial.result.trained_budget < full_budget:
        return None
    return ok_metric(trial)


def best_metric(trials: Iterable[TrialRecord], full_budget: int) -> float | None:
    """The best :func:`result_metric` of ``trials``: what nasfw's own best had then."""
    ok = [m for m in (result_metric(t, full_budget) for t in trials) if m is not None]
    return max(ok) if ok else None


def all_trials(context: SearchContext, trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """``context.history`` plus ``trials`` (whether or not the loop added them yet), by number."""
    by_number = {t.number: t for t in context.history}
    by_number.update({t.number: t for t in trials if t.number not in by_number})
    return [by_number[n] for n in sorted(by_number)]


def counts(trials: Iterable[TrialRecord]) -> dict[str, int]:
    done = list(trials)
    return {
        "n_trials_ok": sum(t.result.ok for t in done),
        "n_trials_failed": sum(t.result.status == "failed" for t in done),
        "n_trials_pruned": sum(t.result.pruned for t in done),
    }


POPULATION_COLUMNS = [
    "trial",
    "index",
    "architecture",
    "graph_hash",
    "nodes",
    "status",
    "metric",
    "loss",
    "flops",
    "params",
    "train_seconds",
    "regularized_score",
    "error",
    *DEVICE_FACTS,
]


def population(trials: list[TrialRecord]) -> dict[str, list[Any]]:
    """One row per network of a generation, with the tuner's own facts (``attrs``)."""
    columns = POPULATION_COLUMNS
    attr_keys = sorted({k for t in trials for k in t.attrs})
    attr_columns = {k: k if k not in columns else f"attrs.{k}" for k in attr_keys}
    table: dict[str, list[Any]] = {c: [] for c in [*columns, *attr_columns.values()]}
    for t in trials:
        r = t.result
        row = [
            t.number,
            t.index,
            t.graph.summary(),
            t.graph.hash,
            len(t.graph),
            r.status,
            r.metric,
            r.loss,
            r.flops,
            r.n_params,
            r.train_seconds,
            r.regularized_score,
            r.error,
            *(r.extra.get(k) for k in DEVICE_FACTS),
        ]
        for column, value in zip(columns, row, strict=True):
            table[column].append(value)
        for key, column in attr_columns.items():
            value = t.attrs.get(key)
            scalar = value is None or isinstance(value, str | int | float | bool)
            table[column].append(value if scalar else json.dumps(value, default=str))
    return table
