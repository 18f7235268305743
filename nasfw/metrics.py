"""Validation metrics: the score a problem is judged by, always higher-is-better.

Tuners rank, Optuna stores (``direction="maximize"``) and MLflow logs (``val_<name>``) this one
number. Error metrics follow scikit-learn's scorer convention and are negated: ``neg_mae`` is
minus the mean absolute error (``sklearn.metrics.get_scorer("neg_mean_absolute_error")``), so
``-3.1`` means an MAE of 3.1 target units (bpm for ``ppg_heart_rate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # problems load without torch; the metrics run where the model is
    import torch


@dataclass(frozen=True)
class Metric:
    """``fn(outputs, targets) -> float``: ``outputs`` are the model's ``(N, n_outputs)`` logits or
    predictions, ``targets`` ``(N,)`` class indices or ``(N, n_outputs)`` values."""

    name: str
    task: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    description: str


def _accuracy(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return float((outputs.argmax(dim=1) == y).float().mean())


def _r2(outputs: torch.Tensor, y: torch.Tensor) -> float:
    residual = ((outputs - y) ** 2).sum()
    total = ((y - y.mean(dim=0)) ** 2).sum()
    return float(1 - residual / total) if total > 0 else 0.0


def _mcc(outputs: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import matthews_corrcoef

    predicted = outputs.argmax(dim=1).cpu().numpy()
    return float(matthews_corrcoef(y.cpu().numpy(), predicted))


def _neg_mae(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return -float((outputs - y).abs().mean())


def _neg_mse(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return -float(((outputs - y) ** 2).mean())


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "classification", _accuracy, "share of correct classes"),
        Metric("r2", "regression", _r2, "coefficient of determination R²"),
        Metric(
            "mcc",
            "classification",
            _mcc,
            "Matthews correlation coefficient (-1..1, 0 = chance; CoLA's metric)",
        ),
        Metric(
            "neg_mae",
            "regression",
            _neg_mae,
            "minus the mean absolute error, in target units (scikit-learn's convention)",
        ),
        Metric(
            "neg_mse",
            "regression",
            _neg_mse,
            "minus the mean squared error, in squared target units (FCNet's validation loss)",
        ),
    )
}

DEFAULT_METRIC = {"classification": "accuracy", "regression": "r2"}


def metric(name: str, task: str) -> Metric:
    """The metric ``name`` for ``task``; ValueError naming the known ones otherwise."""
    found = METRICS.get(name)
    if found is None or found.task != task:
        known = sorted(n for n, m in METRICS.items() if m.task == task)
        raise ValueError(f"unknown {task} metric {name!r} (known: {known})")
    return found
