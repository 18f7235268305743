"""The one training loop: every tuner and post-processor trains through ``train_model``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nasfw.config import Optimizer, TrainConfig
from nasfw.problem import Problem, Split

# Optional extra loss (e.g. a MorphNet regularizer): called on the model at every step.
ExtraLoss = Callable[[nn.Module], torch.Tensor]
# Optional hook before every optimizer step: (optimizer, step, total steps), steps from 0, e.g.
# to anneal one parameter group's learning rate.
BeforeStep = Callable[[torch.optim.Optimizer, int, int], None]


@dataclass
class TrainOutcome:
    """``metric`` is the validation metric after the last epoch (higher is better)."""

    metric: float
    loss: float
    epochs: int
    seconds: float
    diverged: bool = False
    reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _settings(config: TrainConfig, overrides: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"epochs", "batch_size", "optimizer", "lr", "weight_decay"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(
            f"unknown training overrides {sorted(unknown)} (allowed: {sorted(allowed)})"
        )
    settings = {k: getattr(config, k) for k in allowed}
    settings.update(overrides)
    settings["optimizer"] = Optimizer(settings["optimizer"])
    return settings


def _optimizer(
    model: nn.Module, settings: Mapping[str, Any], groups: list[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    lr, wd = settings["lr"], settings["weight_decay"]
    params: Any = model.parameters()
    if groups:
        # Parameters named in a group get its settings (e.g. a larger lr); the rest the default.
        special = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in model.parameters() if id(p) not in special]
        params = [{"params": rest}, *groups]
    if settings["optimizer"] is Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if settings["optimizer"] is Optimizer.adamw:
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def _tensors(split: Split, problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(split.x, dtype=np.float32))
    if problem.task == "classification":
        return x, torch.from_numpy(np.asarray(split.y, dtype=np.int64))
    y = torch.from_numpy(np.asarray(split.y, dtype=np.float32))
    return x, y.reshape(len(y), -1)


def loss_fn(problem: Problem) -> nn.Module:
    return nn.CrossEntropyLoss() if problem.task == "classification" else nn.MSELoss()


@torch.no_grad()
def evaluate_model(
    model: nn.Module, problem: Problem, split: Split, batch_size: int = 512
) -> float:
    """Accuracy (classification) or R² (regression) of ``model`` on ``split``."""
    x, y = _tensors(split, problem)
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    if problem.task == "classification":
        return float((outputs.argmax(dim=1) == y).float().mean())
    residual = ((outputs - y) ** 2).sum()
    total = ((y - y.mean(dim=0)) ** 2).sum()
    return float(1 - residual / total) if total > 0 else 0.0


def train_model(
    model: nn.Module,
    problem: Problem,
    config: TrainConfig,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    extra_loss: ExtraLoss | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    before_step: BeforeStep | None = None,
) -> TrainOutcome:
    """Train ``model`` on ``problem.train`` and score it on ``problem.val``.

    Seeded (weights are expected to be initialised under the same seed by the caller; the
    batch order depends on ``seed`` only). ``overrides`` replace config knobs for this run
    (``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``). A loss that turns NaN
    or infinite stops training at once with ``diverged=True``. ``extra_loss(model)`` is added
    to the task loss at every step (a regularizer); ``param_groups`` are torch optimizer groups
    for some parameters (e.g. a larger learning rate for MorphNet's gates); ``before_step``
    runs before every optimizer step (e.g. to anneal a group's learning rate).
    """
    settings = _settings(config, overrides or {})
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    x, y = _tensors(problem.train, problem)
    criterion = loss_fn(problem)
    optimizer = _optimizer(model, settings, param_groups)
    batch_size = settings["batch_size"]
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    model.train()
    epoch_loss = math.nan
    # A batch of one breaks batch norm and adds nothing: skipped unless it is all the data.
    batches = [
        s for s in range(0, len(x), batch_size) if len(x) == 1 or min(batch_size, len(x) - s) > 1
    ]
    total_steps, step = settings["epochs"] * len(batches), 0
    for epoch in range(1, settings["epochs"] + 1):
        permutation = torch.randperm(len(x), generator=order)
        total, seen = 0.0, 0
        for start in batches:
            index = permutation[start : start + batch_size]
            loss = criterion(model(x[index]), y[index])
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            if not torch.isfinite(loss):
                return TrainOutcome(
                    metric=math.nan,
                    loss=float(loss.detach()),
                    epochs=epoch,
                    seconds=time.perf_counter() - started,
                    diverged=True,
                    reason=f"diverged: loss became {float(loss.detach())} in epoch {epoch}",
                    history=history,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step(optimizer, step, total_steps)
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(index)
            seen += len(index)
        epoch_loss = total / max(seen, 1)
        history.append({"epoch": epoch, "loss": epoch_loss})
    seconds = time.perf_counter() - started
    metric = evaluate_model(model, problem, problem.val)
    if history:
        history[-1]["val_metric"] = metric
    return TrainOutcome(
        metric=metric, loss=epoch_loss, epochs=settings["epochs"], seconds=seconds, history=history
    )
