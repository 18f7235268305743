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
    .venv/bin/python benchmarks/overhead.py --lookups 1000 --repeats 3   # MLflow's overhead

``--lookups N`` (issue 26's MLflow target) runs ``N`` NAS-Bench-201 lookups (regularized
evolution, ``storage=memory``) with ``tracking=none`` and with MLflow (a SQLite store created
just before, untimed, as a user's ``mlflow.db`` exists after their first search: creating
MLflow's schema takes a few seconds once), alternately, ``--repeats`` times each, each in a
fresh process (MLflow's import is part of its cost). A run's time is its search's wall time,
``run_search`` from call to return (the logging thread drained), beside the whole process's
wall and CPU seconds. Success criterion, fixed before the runs: the median of the paired
ratios (MLflow / none, repeat by repeat) of the search's wall time is at most 1.2. Raw runs
go to
``benchmarks/results/overhead_mlflow/<machine>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
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


TARGET_RATIO = 1.2  # issue 26: the search with MLflow at most 1.2x its time without

# One search in a fresh process: its run_search wall time and the trials it finished, as JSON.
_ONE_SEARCH = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from cli import compose
from nasfw.search import run_search
cfg = compose(*{overrides!r})
started = time.perf_counter()
context = run_search(cfg, Path({out!r}))
print(json.dumps({{"search_seconds": time.perf_counter() - started,
                   "trials": len(context.history)}}))
"""


def lookups(n: int, repeats: int, out: Path) -> int:
    """MLflow's overhead on ``n`` table lookups: see the module's docstring."""
    tests = str(harness.REPO / "tests")
    runs: list[dict[str, object]] = []
    for repeat in range(repeats):
        for tracking in ("none", "mlflow"):  # alternately, so load drifts hit both
            with tempfile.TemporaryDirectory() as tmp:
                overrides = [
                    "problem=nb201_cifar10",
                    "search_space=nasbench201",
                    "tuner=evolution",
                    f"tuner.n_trials={n}",
                    "storage=memory",
                    f"seed={repeat}",
                    "tracking=none"
                    if tracking == "none"
                    else f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
                ]
                code = _ONE_SEARCH.format(tests=tests, overrides=overrides, out=tmp)
                if tracking == "mlflow":  # the store exists, as after a user's first search
                    create = "from mlflow import MlflowClient; MlflowClient({!r})"
                    create += ".search_experiments(max_results=1)"
                    uri = f"sqlite:///{tmp}/mlflow.db"
                    subprocess.run([sys.executable, "-c", create.format(uri)], check=True, cwd=tmp)
                before = os.times()
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True
                )
                wall = time.perf_counter() - started
                after = os.times()
            if done.returncode != 0:
                raise harness.BenchmarkError(f"{tracking} run {repeat}: {done.stderr[-2000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            if measured["trials"] != n:
                raise harness.BenchmarkError(f"{tracking} run {repeat}: {measured['trials']}/{n}")
            cpu = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            runs.append(
                {
                    "tracking": tracking,
                    "repeat": repeat,
                    "process_seconds": wall,
                    "cpu_seconds": cpu,
                    **measured,
                }
            )
            print(f"{tracking:6s} repeat {repeat}: search {measured['search_seconds']:.2f} s, "
                  f"process {wall:.2f} s, cpu {cpu:.2f} s", flush=True)  # fmt: skip

    def of(tracking: str, key: str) -> list[float]:
        return [float(r[key]) for r in runs if r["tracking"] == tracking]  # type: ignore[arg-type]

    summary: dict[str, object] = {"lookups": n, "repeats": repeats, "target_ratio": TARGET_RATIO}
    for key in ("search_seconds", "process_seconds", "cpu_seconds"):
        ratios = [m / o for m, o in zip(of("mlflow", key), of("none", key), strict=True)]
        summary[key] = {
            "none_median": statistics.median(of("none", key)),
            "mlflow_median": statistics.median(of("mlflow", key)),
            "paired_ratios": ratios,
            "ratio_median": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }
    passed = summary["search_seconds"]["ratio_median"] <= TARGET_RATIO  # type: ignore[index]
    summary["passed"] = passed
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": harness.machine(), "git": harness.git_state(), "runs": runs,
              "summary": summary}  # fmt: skip
    out.write_text(json.dumps(record, indent=2))
    header = "tracking=none | MLflow | paired ratio: median [range]"
    print(f"| seconds (median of {repeats}) | {header} |")
    print("|---|---:|---:|---:|")
    for key in ("search_seconds", "process_seconds", "cpu_seconds"):
        s = summary[key]  # type: ignore[index]
        low, high = s["ratio_range"]
        print(f"| {key} | {s['none_median']:.2f} | {s['mlflow_median']:.2f} | "
              f"{s['ratio_median']:.2f} [{low:.2f}, {high:.2f}] |")  # fmt: skip
    print(f"target: search ratio <= {TARGET_RATIO}: {'met' if passed else 'NOT met'}; raw: {out}")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=0, help="MLflow's overhead on N lookups")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=None, help="raw runs (default results/overhead_mlflow/)"
    )
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tracking", action="store_true", help="MLflow on (a SQLite store)")
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions")
    args = parser.parse_args(argv)
    if args.lookups:
        name = f"{os.cpu_count()}-core"
        out = args.out or harness.HERE / "results" / "overhead_mlflow" / f"{name}.json"
        return lookups(args.lookups, args.repeats, out)

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
