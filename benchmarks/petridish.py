"""Petridish against CoDeepNEAT and random search at equal CPU budgets (issue #27's rules;
#13's comparison before it): does growing networks find good ones sooner than evolving or
sampling them, and what does the network it hands over score on test?

**Arms** (nasfw's command line, ``search_space=petridish_full evaluation=plain
launcher.workers=0 train.threads=1 train.curve_every=0 tracking=none``,
``train.epochs=--epochs``, more rounds, generations or trials than the budget allows):
``petridish`` (``tuner.init_models=4 tuner.max_parents=4``), ``codeepneat`` and ``random``.
Petridish is paired with each of the other two (same seeds).

**Protocol**: per seed (``--seeds``) and problem, the arms run one after the other in an order
rotated by one place per seed, each in its own process with one torch thread and no worker
process. Each gets ``--budget`` CPU seconds of its process tree from its first training step,
then SIGINT, as a user's Ctrl-C, and is judged by the evaluations that finished within the
budget (``harness.run_cli_arm``): the best validation accuracy of a network trained to the full
``train.epochs`` against CPU seconds, and its **deliverable**, the network ``export_best`` would
hand over (Petridish's: its stored, evaluated weights; the others': retrained), scored on test.
Each run's raw result also keeps the lower convex hull of (FLOPs, validation error) of its
full-budget networks within the budget, and Petridish's best validation error after each round.

**Criterion** (declared by ``harness.declare`` before any run; one per partner that runs): with
T = the partner's median final best validation accuracy over seeds, on every problem
Petridish's median CPU seconds to reach T (never = never) is <= 1.0 of the partner's own median
CPU seconds to T, **and** Petridish's deliverable is at most 0.5 pt below the partner's on test
(median of the per-seed paired differences >= -0.005). The ratio's bootstrap interval over seeds
is reported beside it, not part of the verdict.

**Problems** (``--problems``): ``digits`` and ``fashion_mnist`` (real, from
``--data-dir``/fashion_mnist: 4,000 training images, a 5 % validation split).

    .venv/bin/python benchmarks/petridish.py             # 2 problems x 3 seeds x 3 arms x
                                                         # 300 CPU s: ~1.5 h on an idle core
    .venv/bin/python benchmarks/petridish.py --problems digits --seeds 1 --budget 30 \\
        --out /tmp/pd                                    # a quick look, minutes
    .venv/bin/python benchmarks/petridish.py --report    # the tables again, from the raw runs

Cost: each run is ``--budget`` CPU seconds plus its start-up and the deliverable's scoring (a
retraining of ``--epochs`` epochs for codeepneat and random); the default size is 18 runs,
about 1.5 hours on one idle core.

Resumable: each (problem, seed, arm) writes ``<out>/runs/<problem>/seed<k>/<arm>.json`` once it
has finished, and a rerun skips those (``--fresh`` reruns them). Writes ``petridish.json``,
``petridish.md`` and ``petridish_<problem>.png`` to ``--out``, and one MLflow run
(``--no-mlflow`` skips it). An arm that finished nothing within its budget fails the run (exit
1, naming it).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FASHION_TRAIN, FASHION_VAL_FRACTION = 4000, 0.05
TARGET_RATIO = 1.0
MAX_TEST_LOSS = 0.005  # the deliverable may lose at most 0.5 pt of test accuracy
GRACE_S = 1800  # wall seconds an arm gets after its SIGINT to finish and exit
MANY = 100_000  # rounds, generations or trials: the budget, not the tuner, ends every search

ARMS: dict[str, list[str]] = {
    "petridish": [
        "tuner=petridish",
        f"tuner.rounds={MANY}",
        "tuner.init_models=4",
        "tuner.max_parents=4",
    ],
    "codeepneat": ["tuner=codeepneat", f"tuner.generations={MANY}"],
    "random": ["tuner=random", f"tuner.n_trials={MANY}"],
}


def pairs(arms: list[str]) -> list[tuple[str, str]]:
    """(petridish, partner) for each other arm among ``arms``, when petridish runs."""
    return [("petridish", a) for a in arms if a != "petridish" and "petridish" in arms]


def criteria(arms: list[str]) -> list[harness.Criterion]:
    """The success criteria of the pairs among ``arms`` (see the module docstring)."""

    def holds(partner: str) -> Any:
        def check(figures: dict[str, Any]) -> bool:
            rows = [p["pairs"][f"petridish vs {partner}"] for p in figures["problems"].values()]
            return all(
                r["ratio"] <= TARGET_RATIO
                and r["test_difference"]["difference"]["median"] >= -MAX_TEST_LOSS
                for r in rows
            )

        return check

    return [
        harness.Criterion(
            f"petridish vs {partner}",
            f"on every problem, petridish reaches {partner}'s median final best validation "
            f"accuracy in <= {TARGET_RATIO} of {partner}'s median CPU seconds to it (medians "
            f"over seeds, never reached = never), and its deliverable's test accuracy is at "
            f"most {MAX_TEST_LOSS * 100:.1f} pt below {partner}'s (median of the paired "
            f"per-seed differences)",
            holds(partner),
        )
        for _, partner in pairs(arms)
    ]


def problem_settings(problem: str, data_dir: Path) -> dict[str, Any]:
    """``problem.*`` of each problem, for the CLI and for the deliverable's scoring."""
    if problem == "digits":
        return {"name": "digits"}
    if problem == "fashion_mnist":
        return {
            "name": "fashion_mnist",
            "data_dir": str((data_dir / "fashion_mnist").resolve()),
            "max_train_samples": FASHION_TRAIN,
            "val_fraction": FASHION_VAL_FRACTION,
        }
    raise SystemExit(f"petridish: unknown problem {problem!r} (digits, fashion_mnist)")


def hull(records: list[Any], epochs: int) -> list[list[float]]:
    """The lower convex hull of (FLOPs, validation error) of the full-budget networks."""
    from nasfw.plugins.tuners.petridish.hull import lower_hull

    ok = [
        r
        for r in records
        if r.result.ok and r.result.flops is not None and r.result.trained_budget >= epochs
    ]
    points = [(float(r.result.flops), 1.0 - float(r.result.metric)) for r in ok]
    return [[points[i][0], round(points[i][1], 4)] for i in lower_hull(points)]


def rounds(records: list[Any], per_trial: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Petridish's best validation error after each round (its pool: the seed networks, then
    each round's children, among ``records``), with the CPU seconds at which the round's last
    network ended (``per_trial``: the judged evaluations, by number)."""
    cpu = {t["number"]: t["cpu"] for t in per_trial}
    ok = [r for r in records if r.result.ok and r.result.metric is not None]
    out = []
    for k in sorted({int(r.attrs.get("round", 0)) for r in ok}):
        pool = [r for r in ok if int(r.attrs.get("round", 0)) <= k]
        out.append({
            "round": k,
            "pool": len(pool),
            "best_error": round(1 - max(float(r.result.metric) for r in pool), 4),
            "cpu": max(cpu.get(r.number, math.nan) for r in pool),
        })  # fmt: skip
    return out


def run_one(arm: str, problem: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One arm on one problem and seed, or its raw result when already on disk."""
    run_dir = harness.run_dir_of(args.out, problem, seed, arm)
    raw = run_dir.with_suffix(".json")
    if raw.exists() and not args.fresh:
        print(f"  on disk: {raw.relative_to(args.out)}", flush=True)
        return json.loads(raw.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    settings = problem_settings(problem, args.data_dir)
    command = [
        sys.executable, "-m", "nasfw", *harness.problem_overrides(settings),
        "search_space=petridish_full", "evaluation=plain", *ARMS[arm], "launcher.workers=0",
        "tracking=none", f"train.epochs={args.epochs}", "train.curve_every=0",
        "train.threads=1", f"seed={seed}", f"storage.url=sqlite:///{run_dir / 'nasfw.db'}",
        "study_name=bench", "storage.artifacts=nasfw-artifacts",
        f"export_dir={run_dir / 'best_model'}", *args.override,
    ]  # fmt: skip
    result, within = harness.run_cli_arm(
        f"petridish {problem} seed {seed} {arm}", command, run_dir, budget=args.budget,
        epochs=args.epochs, problem=settings, seed=seed, grace=GRACE_S,
    )  # fmt: skip
    doc = {"arm": arm, "problem": problem, "seed": seed, **result,
           "hull": hull(within, args.epochs)}  # fmt: skip
    if arm == "petridish":
        doc["rounds"] = rounds(within, result["per_trial"])
    harness.write_raw(raw, doc)
    return json.loads(raw.read_text())


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (seed, problem, arm), the arms' order rotated by one place per seed."""
    runs = []
    for seed, problem, arm in harness.schedule(args.seeds, args.problems, args.arms):
        print(f"[{problem} seed {seed}] {arm}: {args.budget:.0f} CPU s", flush=True)
        run = run_one(arm, problem, seed, args)
        print(f"  {run['trials']} evaluations, best {run['best']}, test {run['test']:.4f}",
              flush=True)  # fmt: skip
        runs.append(run)
    return runs


# -- report -------------------------------------------------------------------------------------


def markdown(doc: dict[str, Any], verdicts: dict[str, bool]) -> str:
    p = doc["protocol"]
    lines = [
        "# Petridish against CoDeepNEAT and random search",
        "",
        f"{doc['machine']['description']}; {p['budget']:.0f} CPU seconds per search from its "
        f"first training step, networks trained {p['epochs']} epochs, {p['seeds']} seed(s), "
        "one torch thread, no worker process, `search_space=petridish_full`. Figures: median "
        "[95 % bootstrap CI] (n, range).",
        "",
        f"Command: `{doc['command']}`",
    ]
    for problem, s in doc["summary"].items():
        lines += ["", f"## {problem}", "", *harness.arms_markdown(s["arms"])]
        if s["pairs"]:
            lines += [
                "",
                "Petridish against each other arm, paired by seed: median CPU seconds to the "
                "partner's median final best (never = not reached by half the seeds or more), "
                "their ratio [bootstrap interval over seeds], and the per-seed differences "
                "(Petridish minus partner):",
                "",
                *harness.pairs_markdown(s["pairs"]),
            ]
    lines += ["", "## Criteria (declared before the run)", ""]
    if not verdicts:
        lines.append("- none: petridish did not run beside another arm")
    lines += [f"- {c.claim}: **{'met' if verdicts[c.name] else 'missed'}**"
              for c in criteria(p["arms"])]  # fmt: skip
    if p["seeds"] < 5:
        lines += [
            "",
            f"With {p['seeds']} seed(s) the bootstrap intervals are wide (or absent below 3): "
            "a verdict on the medians, not a significant difference.",
        ]
    return "\n".join(lines)


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Per problem: each arm's median best-so-far over seeds, the range as a band."""
    paths = []
    for problem in doc["summary"]:
        curves = {
            arm: [r["curve"] for r in doc["runs"] if r["problem"] == problem and r["arm"] == arm]
            for arm in doc["protocol"]["arms"]
        }
        paths.append(harness.plot_best_so_far(
            curves, doc["protocol"]["budget"], out / f"petridish_{problem}.png",
            title=f"{problem}: Petridish (solid) against CoDeepNEAT and random (dashed)",
            dashed=[a for a in ARMS if a != "petridish"],
        ))  # fmt: skip
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="CPU seconds per search from its first training step")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="train.epochs: the full budget")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "petridish")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="one more CLI override for every arm (repeatable)",
    )  # fmt: skip
    harness.add_run_options(parser)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summary_path = args.out / "petridish.json"
    if args.report:  # from the raw runs alone
        if not summary_path.exists():
            raise SystemExit(f"petridish: {summary_path} not found: run without --report")
        before = json.loads(summary_path.read_text())
        protocol, command = before["protocol"], before["command"]
        runs = harness.load_raw_runs(
            "petridish", args.out, protocol["seeds"], protocol["problems"], protocol["arms"]
        )
    else:
        for problem in args.problems:
            settings = problem_settings(problem, args.data_dir)
            if "data_dir" in settings and not Path(settings["data_dir"]).is_dir():
                raise SystemExit(f"petridish: {settings['data_dir']} not found (--data-dir)")
        protocol = {
            "problems": args.problems,
            "budget": args.budget,
            "budget_unit": "CPU seconds of the process tree from the first training step",
            "seeds": args.seeds,
            "epochs": args.epochs,
            "threads": 1,
            "arms": args.arms,
            "overrides": args.override,
            "fashion_mnist_train_images": FASHION_TRAIN,
            "fashion_mnist_val_fraction": FASHION_VAL_FRACTION,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        harness.declare(criteria(args.arms), args.out)
        command = harness.invocation("petridish.py", argv)
        runs = run_all(args)
    doc = {
        "protocol": protocol,
        "command": command,
        "machine": harness.machine(),
        **harness.git_state(),
        "summary": harness.compare_arms(
            "petridish", runs, protocol["arms"], pairs(protocol["arms"])
        ),
        "runs": runs,
    }
    verdicts = harness.judge(criteria(protocol["arms"]), {"problems": doc["summary"]})
    doc["criteria"] = verdicts
    text = markdown(doc, verdicts)
    (args.out / "petridish.md").write_text(text + "\n")
    harness.write_raw(summary_path, {k: v for k, v in doc.items() if k != "runs"})
    paths = plots(doc, args.out)
    print(text)
    if not args.no_mlflow:
        metrics: dict[str, float | None] = {}
        for problem, s in doc["summary"].items():
            for arm, r in s["arms"].items():
                metrics[f"{problem}.{arm}.best_median"] = r["best"]["median"]
                metrics[f"{problem}.{arm}.test_median"] = r["test"]["median"]
            for t in s["pairs"].values():
                ratio = t["ratio"]
                metrics[f"{problem}.petridish_vs_{t['partner']}.ratio"] = (
                    ratio if math.isfinite(ratio) else None
                )
        uri = args.tracking_uri or harness.default_tracking_uri(args.out)
        harness.log_report(doc, args.out, uri, benchmark="petridish", metrics=metrics,
                           artifacts=[args.out / "petridish.md", summary_path, *paths])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
