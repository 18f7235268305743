"""Petridish against CoDeepNEAT and random search at equal wall time (issue #13's comparison).

For each problem, Petridish runs to its end through the CLI; its wall time ``T`` (first trial
start to last trial end, from the study) is then every other tuner's budget: CoDeepNEAT and
random search run with more trials than they can finish and are stopped (SIGINT, as a user
would) once ``T`` has passed. Every tuner is then judged by the trials that finished within
``T``: best validation metric, the test metric of that network (retrained from scratch with its
evaluation's seed, as the export does; Petridish's best is its stored, evaluated network), and
the lower convex hull of (FLOPs, val error) of its networks. For Petridish the hull after every
round is printed too (the issue's "hull progress per round").

    .venv/bin/python benchmarks/petridish.py --out benchmarks/results/petridish
    .venv/bin/python benchmarks/petridish.py --problems digits --rounds 2   # quick look

Writes ``<out>/petridish.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
import optuna
import torch

from nasfw import Candidate, ProblemConfig, build_model, candidate_seed, evaluate_model, train_model
from nasfw.evaluate import load_problem
from nasfw.plugins.tuners.petridish.hull import lower_hull

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name: the problem's settings (CLI ``problem.<key>=<value>``, and its ProblemConfig).
PROBLEMS: dict[str, dict[str, Any]] = {
    "digits": {},
    # Fashion-MNIST, real, with fewer training images so a CPU run takes minutes, not hours.
    "fashion_mnist": {"data_dir": str(DATA / "fashion_mnist"), "max_train_samples": 4000},
}
TUNERS = {
    "codeepneat": ["tuner=codeepneat", "tuner.generations=1000"],
    "random": ["tuner=random", "tuner.n_trials=100000", "tuner.batch_size=4"],
}


def run(name: str, tuner: str, args: list[str], out: Path, budget: float | None) -> dict[str, Any]:
    """One search through the CLI (stopped with SIGINT, as a user's Ctrl-C, after ``budget``
    seconds when given; else run to its end, and it must succeed)."""
    run_dir = out / name / tuner
    url = f"sqlite:///{run_dir / 'nasfw.db'}"
    overrides = [
        *args, "tracking=none", f"storage.url={url}", f"export_dir={run_dir / 'best_model'}",
        "study_name=bench",
    ]  # fmt: skip
    found = harness.run_cli(overrides, cwd=run_dir, log=run_dir / "cli.log", interrupt_after=budget)
    if budget is None:
        found.check(f"{name}/{tuner}")
    return {"url": url, "seconds": found.wall_seconds, "dir": str(run_dir)}


def judged(url: str, problem: Any, budget: float | None, train: dict[str, Any]) -> dict[str, Any]:
    """The trials that ended within ``budget`` seconds of the first start: best, hull, size."""
    records = harness.finished_trials(url, "bench")
    name = f"petridish {train['dir']}"
    harness.require_trials(name, records)
    start = min(r.result.started for r in records if r.result.started is not None)
    end = start + budget if budget is not None else float("inf")
    done = [
        r
        for r in records
        if r.result.finished is not None and r.result.finished <= end + 1e-6 and r.exportable
    ]
    harness.require_trials(f"{name} (within {budget} s)", done)
    ok = [r for r in done if r.result.ok and r.result.flops is not None]
    best = max(ok, key=lambda r: r.rank)
    points = [(float(r.result.flops), 1.0 - float(r.result.metric)) for r in ok]
    hull = [ok[i] for i in lower_hull(points)]
    return {
        "trials": len(done),
        "failed": sum(not r.result.ok for r in done),
        "wall_seconds": max(r.result.finished for r in done) - start,
        "best_val": best.result.metric,
        "best_flops": best.result.flops,
        "best_trial": best.number,
        "best_test": test_metric(best, problem, train),
        "hull": [(r.number, r.result.flops, round(1 - r.result.metric, 4)) for r in hull],
    }


def test_metric(best: Any, problem: Any, train: dict[str, Any]) -> float:
    """The test metric of ``best``: retrained as its evaluation was (same seed, same initial
    weights), or its stored weights when it kept them (Petridish)."""
    from nasfw import TrainConfig
    from nasfw.weights import WeightStore, load_matching

    model = build_model(best.graph, problem)
    if "weights" in best.result.extra:
        store = WeightStore(str(Path(train["dir"]) / "nasfw-artifacts"), "bench")
        load_matching(model, store.load(best.key).state)
    else:
        seed = candidate_seed(0, Candidate(best.graph, train=best.train))
        torch.manual_seed(seed)
        model = build_model(best.graph, problem)
        config = TrainConfig(epochs=train["epochs"], device="cpu")
        train_model(model, problem, config, seed, overrides=best.train)
    return evaluate_model(model, problem, problem.test)


def hull_per_round(url: str) -> list[dict[str, Any]]:
    """Petridish's pool after each round (seeds, then each round's children): its hull."""
    records = [r for r in harness.finished_trials(url, "bench") if r.exportable and r.result.ok]
    rounds = sorted({int(r.attrs.get("round", 0)) for r in records})
    progress = []
    for k in rounds:
        pool = [r for r in records if int(r.attrs.get("round", 0)) <= k]
        points = [(float(r.result.flops), 1.0 - float(r.result.metric)) for r in pool]
        hull = [pool[i] for i in lower_hull(points)]
        progress.append(
            {
                "round": k,
                "pool": len(pool),
                "hull": [(r.result.flops, round(1 - r.result.metric, 4)) for r in hull],
                "best_error": round(min(p[1] for p in points), 4),
                "ended": max(r.result.finished for r in pool),
            }
        )
    start = min(r.result.started for r in records)
    for row in progress:
        row["seconds"] = round(row.pop("ended") - start, 1)
    return progress


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/petridish"))
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--skip-done", action="store_true", help="keep problems in petridish.json")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--space", default="petridish_full")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Plain scoring for all (Petridish needs it; fashion_mnist's preset is regularized).
    common = [
        f"search_space={args.space}",
        f"train.epochs={args.epochs}",
        "launcher.workers=2",
        "evaluation=plain",
    ]
    results = out / "petridish.json"
    keep = args.skip_done and results.exists()
    rows: dict[str, Any] = json.loads(results.read_text()) if keep else {}
    for name in args.problems:
        if name in rows:
            continue
        settings = PROBLEMS[name]
        problem_args = [f"problem={name}", *(f"problem.{k}={v}" for k, v in settings.items())]
        problem = load_problem(ProblemConfig(name=name, **settings))
        petridish_args = [
            "tuner=petridish", f"tuner.rounds={args.rounds}", "tuner.max_parents=4",
            "tuner.init_models=4",
        ]  # fmt: skip
        found = run(name, "petridish", [*problem_args, *common, *petridish_args], out, None)
        result = judged(found["url"], problem, None, {"epochs": args.epochs, **found})
        budget = result["wall_seconds"]
        row: dict[str, Any] = {
            "budget_seconds": budget,
            "petridish": result,
            "petridish_rounds": hull_per_round(found["url"]),
        }
        for tuner, tuner_args in TUNERS.items():
            # The CLI's start-up (imports, data) comes before the first trial: give it that too.
            other = run(name, tuner, [*problem_args, *common, *tuner_args], out, budget + 30)
            row[tuner] = judged(other["url"], problem, budget, {"epochs": args.epochs, **other})
        rows[name] = row
        results.write_text(json.dumps(rows, indent=2))
    for name, row in rows.items():
        print(f"\n### {name}: equal wall time {row['budget_seconds'] / 60:.1f} min\n")
        print("| tuner | trials | best val | its test | its MFLOPs | hull (MFLOPs: val error) |")
        print("|---|---:|---:|---:|---:|---|")
        for tuner in ("petridish", *TUNERS):
            r = row[tuner]
            hull = ", ".join(f"{f / 1e6:.2f}: {e:.3f}" for _, f, e in r["hull"])
            print(
                f"| {tuner} | {r['trials']} | {r['best_val']:.4f} | {r['best_test']:.4f} | "
                f"{r['best_flops'] / 1e6:.2f} | {hull} |"
            )
        print("\n| round | pool | minutes | best val error | hull (MFLOPs: val error) |")
        print("|---:|---:|---:|---:|---|")
        for p in row["petridish_rounds"]:
            hull = ", ".join(f"{f / 1e6:.2f}: {e:.3f}" for f, e in p["hull"])
            print(
                f"| {p['round']} | {p['pool']} | {p['seconds'] / 60:.1f} | {p['best_error']:.4f} "
                f"| {hull} |"
            )


if __name__ == "__main__":
    main()
