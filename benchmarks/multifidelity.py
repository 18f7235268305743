"""Pruning against no pruning (issue #27's rules; #14's benchmark before it): does stopping
unpromising networks early find the unpruned search's accuracy in less CPU time, and does the
network it hands over lose anything?

**Arms** (nasfw's command line, ``search_space=image_small launcher.workers=0 train.threads=1
tracking=none``, ``train.epochs=--epochs``, more trials than the budget allows), paired with the
unpruned arm they are judged against:

- ``tpe`` (``pruner=none``) and ``tpe+hyperband`` (``pruner=hyperband``, Optuna's
  HyperbandPruner on the per-epoch validation score);
- ``codeepneat`` (``pruner=none``) and ``codeepneat+median`` (``pruner=median``);
- ``hyperband``: ``tuner=hyperband`` (Li et al.'s brackets, promoted networks continue their
  weights), paired with ``tpe``.

Without a pruner, ``train.curve_every=0`` scores the validation split once, after the last
epoch; a pruned arm scores it after every epoch (``train.curve_every=1``), as its pruner needs.

**Protocol**: per seed (``--seeds``) and problem, the arms run one after the other in an order
rotated by one place per seed, each in its own process with one torch thread and no worker
process, so that a CPU second means the same for every arm. Each gets ``--budget`` CPU seconds of
its process tree counted from its first training step (imports, data loading and start-up are
not charged, and load from other processes does not shorten anyone's budget), then SIGINT, as a
user's Ctrl-C. It is judged by the evaluations that finished within the budget: the best
validation accuracy of a network trained to the full ``train.epochs`` (a pruned network or a
lower Hyperband rung never counts) against CPU seconds since the first step. Its
**deliverable** is the network it would export: its best full-budget network within the budget,
as ``export_best`` hands it over (``harness.retrain_on_test``: retrained, or a Hyperband
finalist's stored weights), scored on the test split.

**Criterion** (declared by ``harness.declare`` before any run; one per pair of arms that both
run): with T = the unpruned partner's median final best validation accuracy over seeds, on every
problem the pruned arm's median CPU seconds to reach T (a seed that never does counts as never)
is <= 0.7 of the partner's own median CPU seconds to T, **and** the pruned arm's deliverable is
not worse than its partner's by more than 0.5 pt of test accuracy (median of the per-seed paired
differences >= -0.005). The ratio's percentile bootstrap interval over seeds (resampled in
pairs, ``spread.ratio_interval``) is reported beside it, not part of the verdict: with 3 seeds
it is wide, and the report says so.

**Problems** (``--problems``): ``digits`` (scikit-learn's 8x8 digits) and ``fashion_mnist``
(real, from ``--data-dir``/fashion_mnist: 4,000 training images, a 5 % validation split).

    .venv/bin/python benchmarks/multifidelity.py          # 2 problems x 3 seeds x 5 arms x
                                                          # 180 CPU s: ~1.5 h on an idle core
    .venv/bin/python benchmarks/multifidelity.py --problems digits --seeds 1 --budget 20 \\
        --out /tmp/mf                                     # a quick look, minutes
    .venv/bin/python benchmarks/multifidelity.py --report # the tables again, from the raw runs

Cost: each run is ``--budget`` CPU seconds plus its start-up (~5 CPU s) and the deliverable's
retraining (one network, ``--epochs`` epochs: seconds on digits, up to a minute on
Fashion-MNIST); the default size is 30 runs, about 1.5-2 hours on one idle core.

Resumable: each (problem, seed, arm) writes ``<out>/runs/<problem>/seed<k>/<arm>.json`` (paths
relative to it) once it has finished, and a rerun skips those (``--fresh`` reruns them). Writes
``multifidelity.json`` (the summary), ``multifidelity.md`` and ``multifidelity_<problem>.png``
(median best-so-far with its range over seeds) to ``--out``, and one MLflow run in experiment
``nasfw-benchmarks`` (``--no-mlflow`` skips it). An arm that finished nothing within its budget,
or has no full-budget network to deliver, fails the run (exit 1, naming it).
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
TARGET_RATIO = 0.7
MAX_TEST_LOSS = 0.005  # the deliverable may lose at most 0.5 pt of test accuracy
# Wall seconds an arm gets after its SIGINT to finish its running evaluation and exit.
GRACE_S = 1800
MANY = 100_000  # trials or generations: the budget, not the tuner, ends every search

ARMS: dict[str, list[str]] = {
    "tpe": ["tuner=tpe", f"tuner.n_trials={MANY}", "pruner=none"],
    "tpe+hyperband": ["tuner=tpe", f"tuner.n_trials={MANY}", "pruner=hyperband"],
    "codeepneat": ["tuner=codeepneat", f"tuner.generations={MANY}", "pruner=none"],
    "codeepneat+median": ["tuner=codeepneat", f"tuner.generations={MANY}", "pruner=median"],
    "hyperband": ["tuner=hyperband", f"tuner.iterations={MANY}"],
}
# A multi-fidelity arm -> the unpruned arm it is judged against (same seeds: paired).
PARTNER = {"tpe+hyperband": "tpe", "codeepneat+median": "codeepneat", "hyperband": "tpe"}


def pairs(arms: list[str]) -> list[tuple[str, str]]:
    """The (multi-fidelity arm, unpruned partner) pairs among ``arms``."""
    return [(a, PARTNER[a]) for a in arms if a in PARTNER and PARTNER[a] in arms]


def criteria(arms: list[str]) -> list[harness.Criterion]:
    """The success criteria of the pairs among ``arms`` (see the module docstring)."""

    def holds(arm: str, partner: str) -> Any:
        def check(figures: dict[str, Any]) -> bool:
            rows = [p["pairs"][f"{arm} vs {partner}"] for p in figures["problems"].values()]
            return all(
                r["ratio"] <= TARGET_RATIO
                and r["test_difference"]["difference"]["median"] >= -MAX_TEST_LOSS
                for r in rows
            )

        return check

    return [
        harness.Criterion(
            arm,
            f"on every problem, {arm} reaches {partner}'s median final best validation "
            f"accuracy in <= {TARGET_RATIO} of {partner}'s median CPU seconds to it (medians "
            f"over seeds, never reached = never), and its deliverable's test accuracy is at most "
            f"{MAX_TEST_LOSS * 100:.1f} pt below {partner}'s (median of the paired per-seed "
            f"differences)",
            holds(arm, partner),
        )
        for arm, partner in pairs(arms)
    ]


def problem_settings(problem: str, data_dir: Path) -> dict[str, Any]:
    """``problem.*`` of each problem, for the CLI and for the deliverable's retraining."""
    if problem == "digits":
        return {"name": "digits"}
    if problem == "fashion_mnist":
        return {
            "name": "fashion_mnist",
            "data_dir": str((data_dir / "fashion_mnist").resolve()),
            "max_train_samples": FASHION_TRAIN,
            "val_fraction": FASHION_VAL_FRACTION,
        }
    raise SystemExit(f"multifidelity: unknown problem {problem!r} (digits, fashion_mnist)")


# -- one run ------------------------------------------------------------------------------------


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
    pruned = any(o.startswith("pruner=") and o != "pruner=none" for o in ARMS[arm])
    command = [
        sys.executable, "-m", "nasfw", *harness.problem_overrides(settings),
        "search_space=image_small", *ARMS[arm], "launcher.workers=0", "tracking=none",
        f"train.epochs={args.epochs}", f"train.curve_every={1 if pruned else 0}",
        "train.threads=1", f"seed={seed}", f"storage.url=sqlite:///{run_dir / 'nasfw.db'}",
        "study_name=bench", "storage.artifacts=nasfw-artifacts",
        f"export_dir={run_dir / 'best_model'}", *args.override,
    ]  # fmt: skip
    result, _ = harness.run_cli_arm(
        f"multifidelity {problem} seed {seed} {arm}", command, run_dir, budget=args.budget,
        epochs=args.epochs, problem=settings, seed=seed, grace=GRACE_S,
    )  # fmt: skip
    doc = {"arm": arm, "problem": problem, "seed": seed, **result}
    harness.write_raw(raw, doc)
    return json.loads(raw.read_text())


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (seed, problem, arm), the arms' order rotated by one place per seed."""
    runs = []
    for seed, problem, arm in harness.schedule(args.seeds, args.problems, args.arms):
        print(f"[{problem} seed {seed}] {arm}: {args.budget:.0f} CPU s", flush=True)
        run = run_one(arm, problem, seed, args)
        print(f"  {run['trials']} evaluations ({run['short']} short), best {run['best']}, "
              f"test {run['test']:.4f}", flush=True)  # fmt: skip
        runs.append(run)
    return runs


# -- report -------------------------------------------------------------------------------------


def markdown(doc: dict[str, Any], verdicts: dict[str, bool]) -> str:
    p = doc["protocol"]
    lines = [
        "# Pruning against no pruning",
        "",
        f"{doc['machine']['description']}; {p['budget']:.0f} CPU seconds per search from its "
        f"first training step, networks trained {p['epochs']} epochs, {p['seeds']} seed(s), "
        "one torch thread, no worker process. Figures: median [95 % bootstrap CI] (n, range).",
        "",
        f"Command: `{doc['command']}`",
    ]
    for problem, s in doc["summary"].items():
        lines += ["", f"## {problem}", "", *harness.arms_markdown(s["arms"])]
        if not s["pairs"]:
            continue
        lines += [
            "",
            "Each multi-fidelity arm against its unpruned partner, paired by seed: median CPU "
            "seconds to the partner's median final best (never = not reached by half the "
            "seeds or more), their ratio [bootstrap interval over seeds], and the per-seed "
            "differences (arm minus partner):",
            "",
            *harness.pairs_markdown(s["pairs"]),
        ]
    lines += ["", "## Criteria (declared before the run)", ""]
    if not verdicts:
        lines.append("- none: no multi-fidelity arm ran beside its unpruned partner")
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
    """Per problem: each arm's median best-so-far over seeds, the range as a band (the
    unpruned arms dashed)."""
    paths = []
    for problem in doc["summary"]:
        curves = {
            arm: [r["curve"] for r in doc["runs"] if r["problem"] == problem and r["arm"] == arm]
            for arm in doc["protocol"]["arms"]
        }
        paths.append(harness.plot_best_so_far(
            curves, doc["protocol"]["budget"], out / f"multifidelity_{problem}.png",
            title=f"{problem}: multi-fidelity (solid) against unpruned searches (dashed)",
            dashed=[a for a in ARMS if a not in PARTNER],
        ))  # fmt: skip
    return paths


def log_to_mlflow(doc: dict[str, Any], out: Path, uri: str | None, artifacts: list[Path]) -> str:
    metrics: dict[str, float | None] = {}
    for problem, s in doc["summary"].items():
        for arm, r in s["arms"].items():
            key = f"{problem}.{arm.replace('+', '_')}"  # MLflow takes no "+" in names
            metrics[f"{key}.best_median"] = r["best"]["median"]
            metrics[f"{key}.test_median"] = r["test"]["median"]
        for t in s["pairs"].values():
            ratio = t["ratio"]
            metrics[f"{problem}.{t['arm'].replace('+', '_')}.ratio"] = (
                ratio if math.isfinite(ratio) else None
            )
    return harness.log_report(
        doc, out, uri, benchmark="multifidelity", metrics=metrics, artifacts=artifacts,
    )  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--budget", type=float, default=180.0,
                        help="CPU seconds per search from its first training step")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=9, help="train.epochs: the full budget")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "multifidelity")
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
    summary_path = args.out / "multifidelity.json"
    if args.report:  # from the raw runs alone
        if not summary_path.exists():
            raise SystemExit(f"multifidelity: {summary_path} not found: run without --report")
        before = json.loads(summary_path.read_text())
        protocol, command = before["protocol"], before["command"]
        runs = harness.load_raw_runs(
            "multifidelity", args.out, protocol["seeds"], protocol["problems"], protocol["arms"]
        )
    else:
        for problem in args.problems:
            settings = problem_settings(problem, args.data_dir)
            if "data_dir" in settings and not Path(settings["data_dir"]).is_dir():
                raise SystemExit(f"multifidelity: {settings['data_dir']} not found (--data-dir)")
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
        command = harness.invocation("multifidelity.py", argv)
        runs = run_all(args)
    doc = {
        "protocol": protocol,
        "command": command,
        "machine": harness.machine(),
        **harness.git_state(),
        "summary": harness.compare_arms(
            "multifidelity", runs, protocol["arms"], pairs(protocol["arms"])
        ),
        "runs": runs,
    }
    verdicts = harness.judge(criteria(protocol["arms"]), {"problems": doc["summary"]})
    doc["criteria"] = verdicts
    text = markdown(doc, verdicts)
    (args.out / "multifidelity.md").write_text(text + "\n")
    harness.write_raw(summary_path, {k: v for k, v in doc.items() if k != "runs"})
    paths = plots(doc, args.out)
    print(text)
    if not args.no_mlflow:
        uri = args.tracking_uri or harness.default_tracking_uri(args.out)
        log_to_mlflow(doc, args.out, uri, [args.out / "multifidelity.md", summary_path, *paths])
    return 0


if __name__ == "__main__":
    sys.exit(main())
