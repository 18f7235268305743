"""``postproc=morphnet``: shrink the final population's best networks, retrain, report."""

from __future__ import annotations

from typing import Any

from nasfw import (
    Candidate,
    SearchContext,
    TrainConfig,
    build_model,
    candidate_seed,
    evaluate_model,
    model_cost,
    train_model,
)

from .scoring import build_shrunk, morph
from .shrink import expand


def run_postproc(context: SearchContext, config: Any) -> list[dict[str, Any]]:
    """MorphNet on the ``top_k`` best trials; the report goes to ``context.postproc_report``."""
    import dataclasses

    import torch

    train: TrainConfig = context.cfg.train
    # The scorer's functions read their settings as a mapping (evaluation.* is one).
    settings = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    problem = context.problem
    # Results only (TrialRecord.is_result), as the search's best: the first row is the best's.
    full = context.full_budget()
    results = (t for t in context.history if t.is_result(full))
    ranked = sorted(results, key=lambda t: t.rank, reverse=True)
    seen: set[str] = set()
    top = []
    for t in ranked:
        if t.graph.hash not in seen:
            seen.add(t.graph.hash)
            top.append(t)
        if len(top) >= int(config.top_k):
            break
    report = []
    for trial in top:
        seed = candidate_seed(int(context.cfg.seed), Candidate(trial.graph, train=trial.train))
        small, facts, regularizer = morph(trial.graph, problem, train, seed, settings, trial.train)
        if config.flop_budget:
            small = expand(small, problem, float(config.flop_budget))
        with torch.device("meta"):  # only counted, never run: no weights needed
            before = model_cost(build_model(trial.graph, problem), problem.input_shape)
        model, _ = build_shrunk(small, problem, seed, settings, regularizer)
        with torch.device("meta"):
            after = model_cost(build_model(small, problem), problem.input_shape)
        outcome = train_model(model, problem, train, seed, overrides=trial.train)
        row = {
            "trial": trial.number,
            "flops_before": before.flops,
            "flops_after": after.flops,
            "params_before": before.params,
            "params_after": after.params,
            "val_before": trial.result.metric,
            "val_after": outcome.metric,
            "test_after": evaluate_model(model, problem, problem.test, precision=train.precision),
            "shrink_seconds": facts["shrink_seconds"],
            "shrunk_graph": small.to_json(),
        }
        report.append(row)
    context.postproc_report = report
    return report
