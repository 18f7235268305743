"""The metric a problem picks is what evaluate_model scores, higher always better."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nasfw import ArchGraph, Node, Problem, Split, build_model
from nasfw.metrics import METRICS
from nasfw.train import evaluate_model


class Fixed(nn.Module):
    """Returns the given outputs whatever the input (one parameter, for the device)."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = outputs
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs[: len(x)]


def problem(task: str, y: np.ndarray, metric: str = "") -> Problem:
    split = Split(np.zeros((len(y), 2), dtype=np.float32), y)
    n_outputs = 2 if task == "classification" else 1
    return Problem("p", task, "tabular", (2,), n_outputs, split, split, split, metric=metric)


def logits(classes: list[int]) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(classes), 2).float()


def test_matthews_correlation_like_cola():
    y = np.array([0, 1, 1, 0, 1, 0])
    p = problem("classification", y, "mcc")
    assert evaluate_model(Fixed(logits(y.tolist())), p, p.val) == pytest.approx(1.0)
    assert evaluate_model(Fixed(logits((1 - y).tolist())), p, p.val) == pytest.approx(-1.0)
    # The majority class scores 0 however unbalanced the labels (accuracy would say 0.5).
    assert evaluate_model(Fixed(logits([1] * 6)), p, p.val) == 0.0


def test_neg_mae_is_minus_the_mean_absolute_error():
    y = np.array([[60.0], [100.0], [150.0]], dtype=np.float32)
    p = problem("regression", y, "neg_mae")
    outputs = torch.tensor([[70.0], [100.0], [120.0]])
    assert evaluate_model(Fixed(outputs), p, p.val) == pytest.approx(-(10 + 0 + 30) / 3)


def test_task_defaults_and_unknown_metrics():
    assert problem("classification", np.array([0, 1])).metric == "accuracy"
    assert problem("regression", np.array([[1.0], [2.0]])).metric == "r2"
    with pytest.raises(ValueError, match=r"unknown regression metric 'mcc'.*neg_mae"):
        problem("regression", np.array([[1.0]]), "mcc")
    assert {m.name for m in METRICS.values()} == {"accuracy", "r2", "mcc", "neg_mae", "neg_mse"}


def test_regression_head_starts_at_the_mean_predictor():
    y = np.array([[60.0], [100.0], [170.0]], dtype=np.float32)
    p = problem("regression", y, "neg_mae")
    graph = ArchGraph([Node("d", "dense", {"units": 4})], output="d")
    model = build_model(graph, p)
    assert model.head.bias.item() == pytest.approx(110.0)
    with torch.device("meta"):
        build_model(graph, p)  # no data needed where nothing is computed
    classification = SimpleNamespace(input_shape=(2,), n_outputs=2)
    assert build_model(graph, classification).head.bias.abs().max() < 1


def test_neg_mse_is_minus_the_mean_squared_error():
    import torch

    from nasfw.metrics import metric

    got = metric("neg_mse", "regression").fn(
        torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]])
    )
    assert got == pytest.approx(-2.5)
