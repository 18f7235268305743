"""The one training loop: every tuner and post-processor trains through ``train_model``.

Networks train on ``train.device`` (nasfw/device.py) in ``train.precision``; a problem's data
goes to that device once per process and stays there, so batches are slices of device tensors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nasfw.config import Optimizer, Precision, TrainConfig
from nasfw.device import device_name, resolve_device
from nasfw.metrics import metric
from nasfw.problem import Problem, Split

# Optional extra loss (e.g. a MorphNet regularizer): called on the model at every step.
ExtraLoss = Callable[[nn.Module], torch.Tensor]
# Optional hook before every optimizer step: (optimizer, step, total steps), steps from 0, e.g.
# to anneal one parameter group's learning rate.
BeforeStep = Callable[[torch.optim.Optimizer, int, int], None]
# Optional hook after each point of the learning curve: (epoch, validation metric) -> whether to
# stop here (a pruner's verdict, nasfw.pruning).
ReportCurve = Callable[[int, float], bool]

# When the first training step of the evaluation this process runs began (seconds since the
# epoch): set by the first ``train_model`` after ``nasfw.Evaluator`` clears it, so that it covers
# scorers that train (evaluation=morphnet) as well; the Evaluator reports it as
# ``Result.first_step``.
first_step_at: float | None = None


@dataclass
class TrainOutcome:
    """``metric`` is the validation metric after the last epoch (higher is better); ``device``,
    ``device_name`` and ``precision`` say where and how it trained."""

    metric: float
    loss: float
    epochs: int
    seconds: float
    diverged: bool = False
    reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    device_name: str = ""
    precision: str = Precision.fp32.value
    # Seconds of scoring the validation split, after epochs and after training (not in
    # ``seconds``).
    score_seconds: float = 0.0
    # Stopped early by ``report`` after ``epochs`` epochs; ``metric`` is that epoch's score.
    pruned: bool = False

    @property
    def curve(self) -> dict[int, float]:
        """The learning curve: validation metric by epoch (every ``train.curve_every`` epochs,
        and the last one)."""
        return {int(h["epoch"]): h["val_metric"] for h in self.history if "val_metric" in h}


# Steps between two reads of the loss on an accelerator (each read waits for its queue).
SYNC_EVERY = 32
_AUTOCAST = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}
# (id of a split, device) -> (the split, x, y): each process moves a problem's data once.
_ON_DEVICE: dict[tuple[int, str], tuple[Split, torch.Tensor, torch.Tensor]] = {}


def prepare_device(config: TrainConfig) -> torch.device:
    """Resolve ``config.device`` and set this process up to train there (cuDNN autotuning, or
    deterministic algorithms with ``config.deterministic``)."""
    import os

    device = resolve_device(config.device)
    if config.deterministic:
        # cuBLAS needs a fixed workspace for deterministic matmuls (set before its first use).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # architectures vary; shapes repeat per network
    return device


def autocast(device: torch.device, precision: Precision | str) -> Any:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    precision = Precision(precision)
    return torch.autocast(
        device_type=device.type,
        dtype=_AUTOCAST.get(precision, torch.float32),
        enabled=precision is not Precision.fp32,
    )


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


def _tensors(
    split: Split, problem: Problem, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``split`` as tensors on ``device``, moved there once per process (zero-copy on CPU)."""
    key = (id(split), str(device))
    cached = _ON_DEVICE.get(key)
    if cached is not None and cached[0] is split:
        return cached[1], cached[2]
    dtype = np.int64 if problem.vocab_size is not None else np.float32  # token ids stay ints
    x = torch.from_numpy(np.ascontiguousarray(split.x, dtype=dtype))
    if problem.task == "classification":
        y = torch.from_numpy(np.asarray(split.y, dtype=np.int64))
    else:
        y = torch.from_numpy(np.asarray(split.y, dtype=np.float32)).reshape(len(split.y), -1)
    x, y = x.to(device), y.to(device)
    _ON_DEVICE[key] = (split, x, y)  # holding the split keeps its id from being reused
    return x, y


def loss_fn(problem: Problem) -> nn.Module:
    return nn.CrossEntropyLoss() if problem.task == "classification" else nn.MSELoss()


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    problem: Problem,
    split: Split,
    batch_size: int = 512,
    precision: Precision | str = Precision.fp32,
) -> float:
    """``problem.metric`` (:mod:`nasfw.metrics`: accuracy, R², MCC, -MAE, ...) of ``model`` on
    ``split``, computed on the device the model's parameters are on, in ``precision``."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x, y = _tensors(split, problem, device)
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        batches = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    outputs = torch.cat(batches).float()
    model.train(was_training)
    return metric(problem.metric, problem.task).fn(outputs, y)


def train_model(
    model: nn.Module,
    problem: Problem,
    config: TrainConfig,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    extra_loss: ExtraLoss | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    before_step: BeforeStep | None = None,
    report: ReportCurve | None = None,
) -> TrainOutcome:
    """Train ``model`` on ``problem.train`` and score it on ``problem.val``.

    The model moves to ``config.device`` and trains there in ``config.precision`` (bf16/fp16
    under autocast, fp16 with a gradient scaler); it stays on that device afterwards.
    Seeded (weights are expected to be initialised under the same seed by the caller; the
    batch order depends on ``seed`` only). ``overrides`` replace config knobs for this run
    (``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``). A loss that turns NaN
    or infinite stops training at once with ``diverged=True``. ``extra_loss(model)`` is added
    to the task loss at every step (a regularizer); ``param_groups`` are torch optimizer groups
    for some parameters (e.g. a larger learning rate for MorphNet's gates); ``before_step``
    runs before every optimizer step (e.g. to anneal a group's learning rate). Every submodule
    with a ``penalty()`` method adds its value to the loss too (Keras's ``add_loss``: e.g. the
    L1 on Petridish's candidate weights). ``report(epoch, val_metric)`` is called with each
    point of the learning curve before the last epoch; when it returns True training stops
    there, with ``pruned=True`` (Optuna's ``trial.report`` / ``should_prune``).
    """
    settings = _settings(config, overrides or {})
    device = prepare_device(config)
    precision = Precision(config.precision)
    model.to(device)
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)  # on the CPU: the same order on every device
    x, y = _tensors(problem.train, problem, device)
    criterion = loss_fn(problem)
    penalties = [m.penalty for m in model.modules() if callable(getattr(m, "penalty", None))]
    optimizer = _optimizer(model, settings, param_groups)
    scaler = torch.amp.GradScaler(device.type, enabled=precision is Precision.fp16)
    facts = {"device": str(device), "device_name": device_name(device), "precision": precision}
    check_every = 1 if device.type == "cpu" else SYNC_EVERY
    batch_size = settings["batch_size"]
    global first_step_at
    if first_step_at is None:
        first_step_at = time.time()
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    curve_seconds = 0.0
    model.train()
    epoch_loss = math.nan
    # A batch of one breaks batch norm and adds nothing: skipped unless it is all the data.
    batches = [
        s for s in range(0, len(x), batch_size) if len(x) == 1 or min(batch_size, len(x) - s) > 1
    ]
    total_steps, step = settings["epochs"] * len(batches), 0
    for epoch in range(1, settings["epochs"] + 1):
        permutation = torch.randperm(len(x), generator=order).to(device)
        total, seen = torch.zeros((), device=device), 0
        for position, start in enumerate(batches):
            index = permutation[start : start + batch_size]
            with autocast(device, precision):
                loss = criterion(model(x[index]), y[index])
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                for penalty in penalties:
                    loss = loss + penalty()
            total += loss.detach().float() * len(index)
            seen += len(index)
            # Checking reads the loss back from the device: every step on the CPU (a diverged
            # network stops before its bad step), every few dozen on an accelerator, whose
            # queue must not drain at each step. A NaN or inf anywhere makes the sum one.
            checking = (step + 1) % check_every == 0 or position == len(batches) - 1
            if checking and not torch.isfinite(total):
                value = float(loss.detach()) if not torch.isfinite(loss) else float(total)
                return TrainOutcome(
                    metric=math.nan,
                    loss=value,
                    epochs=epoch,
                    seconds=time.perf_counter() - started,
                    diverged=True,
                    reason=f"diverged: loss became {value} in epoch {epoch}",
                    history=history,
                    **facts,
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if before_step is not None:
                before_step(optimizer, step, total_steps)
            scaler.step(optimizer)
            scaler.update()
            step += 1
        epoch_loss = float(total) / max(seen, 1)
        history.append({"epoch": epoch, "loss": epoch_loss})
        every = config.curve_every
        if every and epoch % every == 0 and epoch < settings["epochs"]:
            # The learning curve; the last epoch's score is the result, below. Scoring does
            # not draw from the RNG, so the training is the same with or without it.
            scored = time.perf_counter()
            value = evaluate_model(model, problem, problem.val, precision=precision)
            history[-1]["val_metric"] = value
            stop = report is not None and report(epoch, value)
            curve_seconds += time.perf_counter() - scored
            if stop:
                return TrainOutcome(
                    metric=value,
                    loss=epoch_loss,
                    epochs=epoch,
                    seconds=time.perf_counter() - started - curve_seconds,
                    history=history,
                    score_seconds=curve_seconds,
                    pruned=True,
                    **facts,
                )
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the seconds are the GPU's, not the launch queue's
    seconds = time.perf_counter() - started - curve_seconds
    scored = time.perf_counter()
    metric = evaluate_model(model, problem, problem.val, precision=precision)
    score_seconds = time.perf_counter() - scored + curve_seconds
    if history:
        history[-1]["val_metric"] = metric
    return TrainOutcome(
        metric=metric,
        loss=epoch_loss,
        epochs=settings["epochs"],
        seconds=seconds,
        history=history,
        score_seconds=score_seconds,
        **facts,
    )
