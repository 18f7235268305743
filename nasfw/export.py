"""A search's deliverables: the best network exported (scored on test), the Pareto front, and
the post-processor's work on the final population."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.evaluate import candidate_seed
from nasfw.pareto import write_front
from nasfw.prepare import export_path
from nasfw.registry import registry

if TYPE_CHECKING:
    from nasfw.context import SearchContext
    from nasfw.records import TrialRecord
    from nasfw.run import Search


def export(search: Search) -> TrialRecord | None:
    """Export the best network (:meth:`nasfw.SearchContext.best`, if any), write the Pareto
    front beside it (before trackers copy the directory) and run the post-processor; return
    the best trial."""
    best = search.context.best()
    if best is not None and search.context.problem.table is not None:
        export_looked_up(search, best)
    elif best is not None:
        export_best(search, best)
    write_front(search.context)
    postproc = search.config.postproc
    if postproc.name != "none":
        registry().get("postprocessors", postproc.name)(search.context, postproc)
        write_postproc_report(search.context)
    return best


POSTPROC_REPORT = "postproc.json"


def postproc_report_path(context: SearchContext) -> Path:
    """Where the post-processor's report is written: ``postproc.json`` in the run's output
    directory (whatever tracking does)."""
    return Path(context.output_dir) / POSTPROC_REPORT


def write_postproc_report(context: SearchContext) -> Path | None:
    """Write ``context.postproc_report`` (a list of rows, the best's first) as JSON at
    :func:`postproc_report_path`; return the path, or None when the post-processor reported
    nothing.

    Raises OSError if the directory cannot be created or the file written.
    """
    if not context.postproc_report:
        return None
    path = postproc_report_path(context)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(context.postproc_report, indent=2, default=str))
    return path


def export_looked_up(search: Search, best: TrialRecord) -> None:
    """Export ``best`` of a problem evaluated by lookup (:attr:`nasfw.Problem.table`) to
    ``export_dir``: its graph (``graph.json``: the cell, or the layers with their training
    settings) and what the table recorded for it (``summary.json``). There is no model to
    train or weights to save: the table's networks were trained offline. Sets the context's
    ``export_dir``."""
    context, config = search.context, search.config
    export_dir = export_path(config, context.output_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "graph.json").write_text(best.graph.to_json(indent=2))
    result = best.result
    summary = {
        "trial": best.number,
        "study": context.study.study_name,
        "problem": context.problem.name,
        "search_space": context.space.name,
        "graph": best.graph.summary(),
        "genes": context.space.describe(best.graph)[0],
        f"val_{context.problem.metric}": result.metric,
        "n_params": result.n_params,
        "train_seconds": result.train_seconds,
        "clock": result.extra.get("clock"),
        "looked_up": "the table's recorded result for the seed this evaluation picked",
    }
    (export_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    context.export_dir = export_dir


def export_best(search: Search, best: TrialRecord) -> None:
    """Export ``best`` scored on test to ``export_dir``: its stored weights when its trial kept
    them, else retrained (same seed and initial weights as its evaluation). Sets the context's
    ``best_model`` and ``export_dir``.

    Raises:
        RuntimeError: the stored weights of the trial do not fit its graph.
    """
    import torch

    from nasfw.builder import build_model
    from nasfw.train import evaluate_model, prepare_device, train_model
    from nasfw.weights import load_matching

    context, config = search.context, search.config
    train_config, weights = config.train, search.evaluator.weights
    assert weights is not None
    torch.manual_seed(candidate_seed(config.seed, best.candidate))
    model = build_model(best.graph, context.problem)
    trained_on: dict[str, Any]
    if "weights" in best.result.extra:
        # The evaluated network itself (it may have inherited weights no retraining gives).
        state = weights.load(best.key).state
        if load_matching(model, state) != len(model.state_dict()):
            raise RuntimeError(f"the stored weights of trial {best.number} do not fit its graph")
        device = prepare_device(train_config)
        model.to(device)
        trained_on = {
            "device": str(device),
            "device_name": best.result.extra.get("device_name", ""),
            "precision": str(train_config.precision),
            "weights": "the trial's stored weights (not retrained)",
        }
    else:
        source = best.resume_from or best.init_from
        if source is not None:
            load_matching(model, weights.load(source).state)
        seed = candidate_seed(config.seed, best.candidate)
        outcome = train_model(
            model, context.problem, train_config, seed, overrides=best.candidate.overrides
        )
        trained_on = {
            "device": outcome.device,
            "device_name": outcome.device_name,
            "precision": str(outcome.precision),
        }
    test_metric = evaluate_model(
        model, context.problem, context.problem.test, precision=train_config.precision
    )
    model.cpu()  # exported and handed to post-processors and trackers as a CPU model
    best.result.extra["test_metric"] = test_metric
    export_dir = export_path(config, context.output_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "graph.json").write_text(best.graph.to_json(indent=2))
    torch.save(model.state_dict(), export_dir / "state_dict.pt")
    summary = {
        "trial": best.number,
        "study": context.study.study_name,
        f"val_{context.problem.metric}": best.result.metric,
        f"test_{context.problem.metric}": test_metric,
        "train_overrides": best.train,
        "trained_on": trained_on,
    }
    (export_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    preprocessing = context.problem.preprocessing
    if preprocessing is not None:  # the model expects standardised inputs: say how
        text = json.dumps(preprocessing.to_dict(), indent=2)
        (export_dir / "preprocessing.json").write_text(text)
    if context.problem.vocabulary is not None:  # the word of each token id the model takes
        words = json.dumps(context.problem.vocabulary, indent=0)
        (export_dir / "vocabulary.json").write_text(words)
    context.best_model = model
    context.export_dir = export_dir
