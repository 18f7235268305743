"""The seeds' regularized scoring: shrink each candidate with MorphNet for a short phase,
train the small network for the rest of the budget, give its score to the unmodified genome."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from nasfw import (
    Candidate,
    Problem,
    Result,
    TrainConfig,
    build_model,
    device_facts,
    model_cost,
    train_model,
)

from .regularizer import FlopRegularizer, add_gates
from .shrink import carry_weights, shrink


def morph(
    graph: Any,
    problem: Problem,
    train: TrainConfig,
    seed: int,
    settings: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], FlopRegularizer]:
    """Train ``graph`` with gates and the FLOP regularizer; return the shrunk graph, facts,
    and the regularizer (its ``model`` is the trained gated network)."""
    gated = add_gates(graph)
    torch.manual_seed(seed)
    model = build_model(gated, problem)
    regularizer = FlopRegularizer(model, graph, float(settings["threshold"]))
    initial_flops = regularizer.flops()
    # The seeds' coefficient: strength / initial FLOPs, so the penalty starts near 2·strength.
    strength = float(settings["strength"]) / max(initial_flops, 1.0)
    gate_lr = float(settings["gate_lr"])
    groups = [{"params": regularizer.gate_parameters(), "lr": gate_lr}]
    phase = {**(overrides or {}), "epochs": int(settings["shrink_epochs"])}

    def anneal_gates(optimizer: torch.optim.Optimizer, step: int, total: int) -> None:
        # Adam moves a gamma by about its lr per step however small the L1 gradient is, so at
        # a constant lr a gamma the penalty has beaten jitters around zero with an amplitude
        # near gate_lr and may end the phase above the threshold. Decaying the lr to zero
        # lets it settle.
        optimizer.param_groups[-1]["lr"] = gate_lr * (1.0 - step / max(total, 1))

    outcome = train_model(
        model,
        problem,
        train,
        seed,
        overrides=phase,
        extra_loss=lambda _: strength * regularizer(),
        param_groups=groups,
        before_step=anneal_gates,
    )
    facts: dict[str, Any] = {
        "shrink_seconds": outcome.seconds,
        "regularized_flops_before": initial_flops,
        "regularized_flops_after": regularizer.flops(),
        "diverged": outcome.diverged,
        "reason": outcome.reason,
        "curve": outcome.curve,
    }
    small, changes = shrink(graph, regularizer.alive())
    facts["changes"] = changes
    return small, facts, regularizer


def build_shrunk(
    small: Any, problem: Problem, seed: int, settings: Mapping[str, Any], regularizer: Any
) -> tuple[torch.nn.Module, int]:
    """The shrunk network, with the gated network's surviving weights if ``carry_weights``,
    and how many of its layers got them."""
    torch.manual_seed(seed)
    model = build_model(small, problem)
    carried = carry_weights(regularizer, model) if settings.get("carry_weights", False) else 0
    return model, carried


def regularized_score(
    candidate: Candidate,
    problem: Problem,
    train: TrainConfig,
    seed: int,
    settings: Mapping[str, Any],
) -> Result:
    """``evaluation=regularized``: MorphNet phase, then the shrunk network trains and scores."""
    started = time.perf_counter()
    small, facts, regularizer = morph(
        candidate.graph, problem, train, seed, settings, candidate.train
    )
    if facts["diverged"]:
        return Result.failed(f"regularized phase {facts['reason']}")
    epochs = int(candidate.train.get("epochs", train.epochs))
    remaining = max(1, epochs - int(settings["shrink_epochs"]))
    model, carried = build_shrunk(small, problem, seed, settings, regularizer)
    with torch.device("meta"):  # counted without computing anything
        after = model_cost(build_model(small, problem), problem.input_shape)
    outcome = train_model(
        model, problem, train, seed, overrides={**candidate.train, "epochs": remaining}
    )
    if outcome.diverged:
        return Result.failed(f"shrunk network {outcome.reason}")
    return Result(
        status="ok",
        metric=outcome.metric,
        loss=outcome.loss,
        regularized_score=outcome.metric,
        train_seconds=time.perf_counter() - started,
        epochs=int(settings["shrink_epochs"]) + remaining,
        # The gated network's epochs, then the shrunk network's after them.
        curve={
            **facts["curve"],
            **{int(settings["shrink_epochs"]) + e: v for e, v in outcome.curve.items()},
        },
        extra={
            "flops_after": float(after.flops),
            "params_after": float(after.params),
            "shrink_seconds": facts["shrink_seconds"],
            "widths_changed": float(sum(1 for b, a in facts["changes"].values() if a < b)),
            "carried_layers": float(carried),
            **device_facts(outcome),
        },
    )
