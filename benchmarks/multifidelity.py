"""Pruning against no pruning: best accuracy over wall time (issue #14's benchmark).

For each problem, four searches run through the CLI one after the other, same seed and
settings: ``tuner=tpe`` with ``pruner=none`` and ``pruner=hyperband``, ``tuner=codeepneat``
with ``pruner=none`` and ``pruner=median``; plus ``tuner=hyperband`` (the multi-fidelity tuner,
which continues promoted networks' weights) at the TPE searches' trial budget. Each is judged
from its study: the best validation metric of the networks trained to the full budget
(``train.epochs``; pruned ones never count) as a function of the seconds since its first trial
started, and the time it took to reach the final best of the same tuner's unpruned search: the
speed-up is ``t_unpruned / t_pruned`` at that accuracy ("not reached" when it never gets there).

    .venv/bin/python benchmarks/multifidelity.py --out benchmarks/results/multifidelity
    .venv/bin/python benchmarks/multifidelity.py --problems digits --trials 8   # quick look

Writes ``<out>/multifidelity.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
import optuna

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PROBLEMS: dict[str, list[str]] = {
    "digits": ["problem=digits"],
    # Real Fashion-MNIST: 4,000 training images and a 5 % validation split (3,500 images, scored
    # after every epoch for the learning curve) so that a CPU run takes minutes.
    "fashion_mnist": [
        "problem=fashion_mnist",
        f"problem.data_dir={DATA / 'fashion_mnist'}",
        "problem.max_train_samples=4000",
        "problem.val_fraction=0.05",
    ],
}


def searches(trials: int, generations: int) -> dict[str, list[str]]:
    """name -> CLI arguments of each search."""
    tpe = ["tuner=tpe", f"tuner.n_trials={trials}", "tuner.batch_size=2"]
    codeepneat = ["tuner=codeepneat", f"tuner.generations={generations}"]
    return {
        "tpe": [*tpe, "pruner=none"],
        "tpe+hyperband": [*tpe, "pruner=hyperband"],
        "codeepneat": [*codeepneat, "pruner=none"],
        "codeepneat+median": [*codeepneat, "pruner=median"],
        "hyperband tuner": ["tuner=hyperband", "tuner.iterations=1"],
    }


BASELINE = {"tpe+hyperband": "tpe", "codeepneat+median": "codeepneat", "hyperband tuner": "tpe"}


def run(directory: Path, args: list[str]) -> float:
    """One search through the CLI in ``directory``, which must succeed; its wall seconds."""
    url = f"sqlite:///{directory / 'nasfw.db'}"
    overrides = [
        *args, "tracking=none", f"storage.url={url}", f"export_dir={directory / 'best_model'}",
        "study_name=bench",
    ]  # fmt: skip
    found = harness.run_cli(overrides, cwd=directory, log=directory / "cli.log")
    return found.check(f"multifidelity {directory}").wall_seconds


def progress(url: str, epochs: int, name: str) -> dict[str, Any]:
    """Best full-budget validation metric over time (seconds since the first trial started)."""
    records = harness.finished_trials(url, "bench")
    harness.require_trials(name, records)
    start = min(r.result.started for r in records if r.result.started is not None)
    full = [r for r in records if r.result.ok and r.result.trained_budget >= epochs]
    curve = harness.best_so_far(((r.result.finished - start, r.result.metric) for r in full), 1)
    end = max(r.result.finished for r in records if r.result.finished is not None)
    return {
        "trials": len(records),
        "pruned": sum(r.result.pruned for r in records),
        "failed": sum(r.result.status == "failed" for r in records),
        "epochs_trained": sum(r.result.epochs for r in records),
        "seconds": round(end - start, 1),
        "best": curve[-1][1] if curve else None,
        "curve": curve,
    }


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multifidelity"))
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--trials", type=int, default=24, help="TPE's evaluations")
    parser.add_argument("--generations", type=int, default=3, help="CoDeepNEAT's")
    parser.add_argument("--only", nargs="*", default=None, help="names of searches to run")
    parser.add_argument("--report", action="store_true", help="print the tables, run nothing")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "multifidelity.json"
    rows: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    common = [f"train.epochs={args.epochs}", "launcher.workers=2", "evaluation=plain", "seed=0"]
    for problem in [] if args.report else args.problems:
        row = rows.setdefault(problem, {})
        for name, search_args in searches(args.trials, args.generations).items():
            if args.only is not None and name not in args.only:
                continue
            directory = out / problem / name.replace(" ", "_").replace("+", "_")
            if directory.exists():
                import shutil

                shutil.rmtree(directory)
            wall = run(directory, [*PROBLEMS[problem], *common, *search_args])
            url = f"sqlite:///{directory / 'nasfw.db'}"
            row[name] = {
                **progress(url, args.epochs, f"multifidelity {problem} {name}"),
                "wall": round(wall, 1),
            }
            results_path.write_text(json.dumps(rows, indent=2))
    for problem, row in rows.items():
        print(f"\n### {problem}\n")
        print(
            "| search | trials | pruned | epochs trained | search s | best val | "
            "unpruned best by then | time to the unpruned final best | speed-up |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in row.items():
            base = row.get(BASELINE.get(name, name))
            target = base["best"] if base else None
            reached = harness.time_to(r["curve"], target)
            base_time = harness.time_to(base["curve"], target) if base else None
            speedup = (
                f"{base_time / reached:.2f}x"
                if reached and base_time and name in BASELINE
                else ("not reached" if reached is None and name in BASELINE else "")
            )
            # What the unpruned search had found when this one ended (equal wall time).
            by_then = [v for t, v in base["curve"] if t <= r["seconds"]] if base else []
            equal_time = f"{max(by_then):.4f}" if by_then and name in BASELINE else ""
            print(
                f"| {name} | {r['trials']} | {r['pruned']} | {r['epochs_trained']} | "
                f"{r['seconds']:.0f} | {r['best']:.4f} | {equal_time} | "
                + (f"{reached:.0f} s" if reached is not None else "-")
                + f" | {speedup} |"
            )


if __name__ == "__main__":
    main()
