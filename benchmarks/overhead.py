"""Where a search's time goes (issue #16, part 1): one search run in this process under
cProfile, its wall time split into training and everything else.

The search (digits, random search, ``--trials`` networks, ``--epochs`` epochs, evaluations in
the driver so the profile sees them; ``--tracking`` adds MLflow) runs through ``run_search``,
as the CLI does. Each category is the cumulative time of the functions that do it:

| category | functions |
|---|---|
| training | ``nasfw.train.train_model`` minus the validation scoring inside it |
| scoring | ``nasfw.train.evaluate_model`` (learning-curve points and the final score) |
| build and size check | ``nasfw.builder.build_model`` and ``model_cost`` outside training |
| Optuna writes | ``nasfw.ledger.Ledger.record`` / ``start`` / ``save_state`` |
| MLflow | the ``nasfw.plugins.tracking.mlflow_tracking`` hooks |
| export | ``nasfw.export.export_best`` (retraining the best network, test score) |
| problem load | ``nasfw.evaluate.load_problem`` |
| other | the rest of the wall time (tuner, hooks, progress bars, imports) |

    .venv/bin/python benchmarks/overhead.py                      # ~1 min on 2 cores
    .venv/bin/python benchmarks/overhead.py --tracking --top 30  # MLflow on; the top functions
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import harness

CATEGORIES = {
    "training": [("nasfw/train.py", "train_model")],
    "scoring": [("nasfw/train.py", "evaluate_model")],
    "build and size check": [
        ("nasfw/builder.py", "build_model"),
        ("nasfw/builder.py", "model_cost"),
    ],
    "Optuna writes": [
        ("nasfw/ledger.py", "record"),
        ("nasfw/ledger.py", "start"),
        ("nasfw/ledger.py", "save_state"),
    ],
    "MLflow": [
        ("mlflow_tracking/__init__.py", name)
        for name in (
            "nasfw_search_start",
            "nasfw_generation_start",
            "nasfw_trial_complete",
            "nasfw_generation_end",
            "nasfw_search_end",
        )
    ],
    "export": [("nasfw/export.py", "export_best")],
    "problem load": [("nasfw/evaluate.py", "load_problem")],
}


def cumulative(stats: pstats.Stats, file_end: str, name: str) -> float:
    """Cumulative seconds of the function ``name`` defined in a file ending with ``file_end``
    (outermost calls only: cProfile counts recursion once)."""
    total = 0.0
    for (path, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and path.endswith(file_end):
            total += cum
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tracking", action="store_true", help="MLflow on (a SQLite store)")
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions")
    args = parser.parse_args(argv)

    from nasfw.search import run_search

    compose = harness.tests_cli().compose

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "problem=digits",
            "tuner=random",
            f"tuner.n_trials={args.trials}",
            "tuner.batch_size=8",
            f"train.epochs={args.epochs}",
            "launcher.workers=0",
            f"storage.url=sqlite:///{tmp}/nasfw.db",
            f"storage.artifacts={tmp}/artifacts",
        ]
        overrides += (
            [f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db"]
            if args.tracking
            else ["tracking=none"]
        )
        cfg = compose(*overrides)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        context = run_search(cfg, Path(tmp))
        profile.disable()
        wall = time.perf_counter() - started
    harness.require_trials("the profiled search", context.history)
    stats = pstats.Stats(profile)
    seconds = {
        category: sum(cumulative(stats, f, n) for f, n in functions)
        for category, functions in CATEGORIES.items()
    }
    # train_model scores the learning curve inside itself: counted once, as scoring.
    seconds["training"] = max(0.0, seconds["training"] - seconds["scoring"])
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    trained = sum(t.result.train_seconds for t in context.history)
    print(
        f"{len(context.history)} trials, {args.epochs} epochs, tracking "
        f"{'mlflow' if args.tracking else 'none'}: wall {wall:.1f} s, the trials' train_seconds "
        f"{trained:.1f} s, wall / train_seconds = {wall / max(trained, 1e-9):.2f}\n"
    )
    print("| category | seconds | share of wall | per trial (ms) |")
    print("|---|---:|---:|---:|")
    for category, value in seconds.items():
        print(
            f"| {category} | {value:.2f} | {100 * value / wall:.1f} % "
            f"| {1000 * value / max(1, len(context.history)):.0f} |"
        )
    if args.top:
        print()
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
