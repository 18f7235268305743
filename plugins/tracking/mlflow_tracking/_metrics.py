"""Metrics: their names and values, the running best, and the population table.

Step convention (docs/results.md's): in the parent run every metric's step is the number of
evaluations finished so far (completion order: ``n_trials`` equals its step, and on MLflow's
default "Step" axis the best so far never goes down even when trials finish out of number
order), its timestamp the time that evaluation finished; the search's end logs the final
summaries at the last step, so the last point of each carries its final value. In a
generation run a trial's series is at the trial's number, the generation's own metrics at the
step of its number.
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
DEVICE_FACTS = ("device", "device_name", "precision", "torch_threads")


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
    """One trial's series, named ``trial/...`` so none can pass for a search summary.

    ``trial/regularized_score`` only where it differs from the metric (regularized scoring's
    score *is* the metric of the shrunk network: the same number twice says nothing).
    """
    regularized = result.regularized_score
    if regularized is not None and regularized == result.metric:
        regularized = None
    return {
        f"trial/{val}": result.metric if result.ok else None,
        "trial/loss": result.loss,
        "trial/flops": result.flops,
        "trial/params": result.n_params,
        "trial/train_seconds": result.train_seconds,
        "trial/failed": int(result.status == "failed"),
        "trial/pruned": int(result.pruned),
        "trial/epochs": result.epochs,
        "trial/regularized_score": regularized,
        # Scorer-specific facts, e.g. regularized scoring's flops_after / params_after.
        **{
            f"trial/{key}": value
            for key, value in sorted(result.extra.items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        },
    }


def trial_metrics(trial: TrialRecord, val: str) -> list[Metric]:
    """A trial's own series (for its generation's run), at the trial's number.

    Learning curves are not metrics (one metric name per trial made each its own full-width
    chart section): the generation's ``learning_curves.png`` draws them, and the Optuna study
    holds them as the trials' intermediate values.
    """
    return metrics(trial_values(trial.result, val), trial.number, trial.result.finished)


def summary_metrics(trial: TrialRecord, seen: int, best: float | None, val: str) -> list[Metric]:
    """The search after ``trial``, its ``seen``-th finished evaluation (for the parent run):
    ``n_trials`` = ``seen`` and the ``best_<val>`` among the results so far, at step ``seen``."""
    # best_<val> first: MLflow's compare view plots a run's first metric by default.
    values = {f"best_{val}": best, "n_trials": seen}
    return metrics(values, seen, trial.result.finished)


def ok_metric(trial: TrialRecord) -> float | None:
    metric = trial.result.metric
    if not trial.result.ok or metric is None or math.isnan(metric):
        return None
    return float(metric)


def result_metric(trial: TrialRecord, full_budget: int) -> float | None:
    """``trial``'s metric when nasfw counts it as a result (:meth:`TrialRecord.is_result`, as
    :meth:`SearchContext.best` does); None otherwise."""
    return ok_metric(trial) if trial.is_result(full_budget) else None


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
    "<val>",
    "result",
    "epochs",
    "budget",
    "train",
    "reused_from",
    "loss",
    "flops",
    "params",
    "train_seconds",
    "error",
    *DEVICE_FACTS,
]


def population(
    trials: list[TrialRecord], val: str, full_budget: int, train: Mapping[str, Any]
) -> dict[str, list[Any]]:
    """One row per network of a generation, with the tuner's own facts (``attrs``).

    The value column is named after the metric (``val``, e.g. ``val_accuracy``); ``result``
    says whether nasfw counts the row as a result (:meth:`nasfw.TrialRecord.is_result` at
    ``full_budget``); ``epochs`` (trained by this evaluation), ``budget`` (epochs its weights
    have had) and ``train`` (the run's ``train`` settings with the candidate's overrides, as
    JSON) explain why one architecture can score differently in two rows; ``reused_from`` is
    the trial whose result a repeated network took.
    """
    columns = [val if c == "<val>" else c for c in POPULATION_COLUMNS]
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
            t.is_result(full_budget),
            r.epochs,
            r.trained_budget,
            json.dumps({**train, **t.train}, default=str, sort_keys=True),
            r.extra.get("reused_from"),
            r.loss,
            r.flops,
            r.n_params,
            r.train_seconds,
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
