#!/usr/bin/env python
"""Table 1 of the regularization paper (seeds, §6): plain CoDeepNEAT vs CoDeepNEAT with the
seeds' regularized scoring (``evaluation=regularized``), on the same initial populations.

Protocol (every number is a flag; the defaults are the paper's):

- per problem, ``--experiments`` experiments (5); experiment k first writes the initial
  populations once (``tuner.save_init_population=populations/pop-<problem>-<k>.json
  tuner.generations=0 seed=k``), then both groups evolve from that file with ``seed=k``
  (``tuner.init_population=...``) for ``--generations`` generations (7) of 12 networks
  (``tuner.blueprint_population=6 tuner.genomes_per_blueprint=2``);
- every run is the real CLI (``python -m nasfw ...`` as a subprocess) with its own SQLite
  storage and study, timed as a whole (wall clock and CPU seconds of the process tree); the
  sum of the trials' ``train_seconds`` is a second, overhead-free time;
- the groups are measured interleaved (experiment k: plain then regularized for even k,
  regularized then plain for odd k), so load from other processes hits both;
- speedup = mean evolution time(plain) / mean evolution time(regularized); accuracy
  degradation = mean val accuracy of the mixed last-generation population of the plain group
  (the last-generation trials of all its experiments pooled; a failed trial counts as
  accuracy 0) minus the same for the regularized group, in percentage points.

Results: a table on stdout, ``table1.json`` / ``table1.md`` / ``runs.jsonl`` and the Fig. 4
bar charts in ``--out``, and one MLflow run (experiment ``nasfw-benchmarks``) holding all of
them. ``--quick`` is a smoke-test configuration. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from table1_report import CRITERIA, GROUPS, write_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONF = HERE / "conf"

# Built-in problems: name -> the CLI overrides that select data and search space.
PROBLEMS: dict[str, list[str]] = {
    "digits": ["problem=digits", "search_space=image_small"],
    "wine": ["problem=wine", "search_space=tabular_mlp"],
    # digits with a larger conv space (benchmarks/conf/search_space/image_wide.yaml).
    "digits_conv": ["problem=digits", "search_space=image_wide"],
}
# Problems read from --data-dir/<name> (the paper's MNIST / CIFAR-10 space: image_small).
DATA_PROBLEMS: dict[str, list[str]] = {
    "mnist": ["problem=mnist", "search_space=image_small"],
    "fashion_mnist": ["problem=fashion_mnist", "search_space=image_small"],
    "cifar10": ["problem=cifar10", "search_space=image_small"],
}

FULL = {
    "experiments": 5,
    "generations": 7,
    "blueprint_population": 6,
    "genomes_per_blueprint": 2,
    "module_population": None,  # the tuner's default (12)
    "epochs": None,  # the config's default (train.epochs=5)
    "problems": "digits,wine,digits_conv",
}
QUICK = {
    "experiments": 1,
    "generations": 2,
    "blueprint_population": 2,
    "genomes_per_blueprint": 2,
    "module_population": 6,
    "epochs": 2,
    "problems": "digits",
}


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/table1.py",
        description=(
            "Reproduce Table 1 / Fig. 4 of the regularization paper: plain CoDeepNEAT vs "
            "CoDeepNEAT with regularized scoring, paired on the same initial populations."
        ),
        epilog="Defaults are the full protocol; --quick is a smoke test. See benchmarks/README.md.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: benchmarks/results/<date>-<time>)",
    )
    p.add_argument(
        "--problems",
        default=None,
        help=f"comma-separated, from {', '.join(PROBLEMS)} (default: {FULL['problems']})",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory with mnist/ (or mnist10k/), fashion_mnist/ and/or cifar10/ "
        "subdirectories holding the standard files; each one found adds that problem",
    )
    p.add_argument(
        "--max-train-samples",
        type=int,
        default=None,
        help="problem.max_train_samples for the --data-dir problems",
    )
    p.add_argument("--experiments", type=int, default=None, help="experiments per group (5)")
    p.add_argument("--generations", type=int, default=None, help="generations per run (7)")
    p.add_argument("--blueprint-population", type=int, default=None, help="(6)")
    p.add_argument(
        "--genomes-per-blueprint",
        type=int,
        default=None,
        help="(2): population = blueprint population x genomes per blueprint",
    )
    p.add_argument("--module-population", type=int, default=None, help="(the tuner's default, 12)")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs (the default, 5)")
    p.add_argument("--workers", type=int, default=2, help="launcher.workers (2)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra CLI override for every run, e.g. train.batch_size=128",
    )
    p.add_argument(
        "--regularized-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for the regularized group, e.g. evaluation.threshold=0.05",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per CLI run")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)",
    )
    p.add_argument(
        "--experiment-name",
        default=harness.EXPERIMENT_NAME,
        help=f"MLflow experiment ({harness.EXPERIMENT_NAME})",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 experiment, 2 generations, population 4, train.epochs=2, "
        "digits only (explicit flags still win)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the CLI commands, run nothing")
    args = p.parse_args(argv)
    explicit_problems = args.problems is not None
    base = QUICK if args.quick else FULL
    for key, default in base.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    for key in (
        "experiments",
        "generations",
        "blueprint_population",
        "genomes_per_blueprint",
        "workers",
    ):
        if getattr(args, key) < (0 if key == "workers" else 1):
            p.error(f"--{key.replace('_', '-')} must be positive")
    problems = [x.strip() for x in args.problems.split(",") if x.strip()]
    unknown = [x for x in problems if x not in PROBLEMS and x not in DATA_PROBLEMS]
    if unknown:
        p.error(
            f"--problems: unknown {unknown}; choose from {sorted(PROBLEMS)} "
            f"(and {sorted(DATA_PROBLEMS)} with --data-dir)"
        )
    args.problem_list = problems
    args.problem_dirs = {}
    if args.data_dir is not None:
        # Absolute, so the runs (started in the repository root) find it from any directory.
        args.data_dir = args.data_dir.resolve()
        if not args.data_dir.is_dir():
            p.error(f"--data-dir {args.data_dir} is not a directory")
        found = find_data_problems(args.data_dir)
        if not found:
            p.error(
                f"--data-dir {args.data_dir}: no mnist/, fashion_mnist/ or cifar10/ with "
                "the standard files (see benchmarks/README.md)"
            )
        for name, path in found.items():
            args.problem_dirs[name] = path
            # Without --problems, every data set found is added to the defaults.
            if not explicit_problems and name not in problems:
                problems.append(name)
    missing = [x for x in problems if x in DATA_PROBLEMS and x not in args.problem_dirs]
    if missing:
        p.error(
            f"--problems {','.join(missing)}: need --data-dir with {'/, '.join(missing)}/ "
            "holding the standard files (see benchmarks/README.md)"
        )
    if args.out is None:
        args.out = HERE / "results" / dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    args.out = args.out.resolve()
    if args.tracking_uri is None:
        args.tracking_uri = harness.default_tracking_uri(args.out)
    return args


def find_data_problems(root: Path) -> dict[str, Path]:
    """``mnist`` / ``fashion_mnist`` / ``cifar10`` subdirectories of ``root`` with their files."""
    found: dict[str, Path] = {}
    # mnist10k: the 10,000 real MNIST digits of ../shared/data (see its README).
    for name, folders in (("mnist", ("mnist", "mnist10k")), ("fashion_mnist", ("fashion_mnist",))):
        for d in (root / f for f in folders):
            names = ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")
            if any((d / f).is_file() for f in names):
                found[name] = d
                break
    for d in (
        root / "cifar10",
        root / "cifar10" / "cifar-10-batches-py",
        root / "cifar-10-batches-py",
    ):
        if (d / "data_batch_1").is_file():
            found["cifar10"] = d
            break
    return found


# -- one CLI run --------------------------------------------------------------------------------


def q(value: str | Path) -> str:
    """A Hydra override value, quoted when it holds characters Hydra would parse."""
    s = str(value)
    return s if re.fullmatch(r"[\w/.:+\-@]+", s) else "'" + s.replace("'", "\\'") + "'"


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "problems": list(args.problem_list),
        "experiments": args.experiments,
        "generations": args.generations,
        "blueprint_population": args.blueprint_population,
        "genomes_per_blueprint": args.genomes_per_blueprint,
        "population": args.blueprint_population * args.genomes_per_blueprint,
        "module_population": args.module_population,
        "epochs": args.epochs,
        "workers": args.workers,
        "overrides": list(args.override),
        "regularized_overrides": list(args.regularized_override),
        "data_dirs": {k: str(v) for k, v in args.problem_dirs.items()},
        "max_train_samples": args.max_train_samples,
        "quick": bool(args.quick),
    }


def common_overrides(args: argparse.Namespace, problem: str) -> list[str]:
    """Overrides shared by the population file and both groups of ``problem``."""
    o = [*(PROBLEMS.get(problem) or DATA_PROBLEMS[problem])]
    if problem in args.problem_dirs:
        o.append(f"problem.data_dir={q(args.problem_dirs[problem])}")
        if args.max_train_samples:
            o.append(f"problem.max_train_samples={args.max_train_samples}")
    o += [
        f"hydra.searchpath=[{q('file://' + str(CONF))}]",
        "tuner=codeepneat",
        f"tuner.blueprint_population={args.blueprint_population}",
        f"tuner.genomes_per_blueprint={args.genomes_per_blueprint}",
        f"launcher.workers={args.workers}",
        "tracking=none",
    ]
    if args.module_population is not None:
        o.append(f"tuner.module_population={args.module_population}")
    if args.epochs is not None:
        o.append(f"train.epochs={args.epochs}")
    return o + list(args.override)


def run_cli(overrides: list[str], log: Path, args: argparse.Namespace) -> harness.Run:
    """``python -m nasfw <overrides>`` from the repository root, its output to ``log``; a
    failed run ends the benchmark (the finished runs are kept for the next invocation)."""
    run = harness.run_cli(
        overrides,
        cwd=REPO,
        log=log,
        header=True,
        timeout=args.timeout,
        env={"PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
    )
    return run.check("table1", "Rerun the same command to go on from the finished runs.")


STATES = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}  # the Optuna trial states


def read_trials(url: str, study: str) -> list[dict[str, Any]]:
    """The study's finished trials as plain dicts (what the table needs)."""
    out = []
    for r in harness.finished_trials(url, study):
        res, extra = r.result, r.result.extra or {}
        out.append(
            {
                "number": r.number,
                "generation": r.generation,
                "index": r.index,
                "state": STATES[res.status],
                "value": res.metric if res.status == "ok" else None,
                "graph_hash": r.graph.hash,
                "flops": res.flops,
                "params": res.n_params,
                "flops_after": extra.get("flops_after"),
                "params_after": extra.get("params_after"),
                "train_seconds": res.train_seconds,
                "shrink_seconds": extra.get("shrink_seconds"),
                "fail_reason": res.error,
                "completed": _iso(res.finished),
            }
        )
    return sorted(out, key=lambda r: (r["generation"], r["index"]))


def _iso(moment: float | None) -> str | None:
    return dt.datetime.fromtimestamp(moment).isoformat() if moment is not None else None


def run_experiment(
    args: argparse.Namespace, problem: str, k: int, group: str, population: Path, log_dir: Path
) -> dict[str, Any]:
    name = f"{problem}-{group}-{k}"
    db = args.out / "studies" / f"{name}.db"
    if db.exists():  # a run that was interrupted: start it afresh, its timing would be partial
        db.unlink()
    url = f"sqlite:///{db}"
    study = f"{group}-{problem}-{k}"
    overrides = [
        *common_overrides(args, problem),
        f"evaluation={group}",
        f"tuner.generations={args.generations}",
        f"tuner.init_population={q(population)}",
        f"seed={k}",
        f"storage.url={q(url)}",
        f"study_name={study}",
        f"hydra.run.dir={q(args.out / 'hydra' / name)}",
    ]
    if group == "regularized":
        overrides += list(args.regularized_override)
    log = log_dir / f"{name}.log"
    run = run_cli(overrides, log, args)
    trials = read_trials(url, study)
    harness.require_trials(f"table1 {name}", trials, log)
    # Where the wall time goes, from when results arrived (counted from the launch): until the
    # first result, start-up (imports, data, worker processes) plus one evaluation; between the
    # first and the last result, the generations; after the last, the best network's
    # retraining and export, and the process exit.
    done = sorted(dt.datetime.fromisoformat(t["completed"]).timestamp() for t in trials)
    first, last = done[0] - run.launched, done[-1] - run.launched
    summary_file = args.out / "hydra" / name / "best_model" / "summary.json"
    best_test = None
    if summary_file.is_file():
        best_test = json.loads(summary_file.read_text()).get("test_accuracy")
    # The search's own timing of its generations, summed: the seeds' "time required for
    # evolving a series of generations", without process start-up and the export.
    generations = harness.open_ledger(url, study).generation_seconds()
    return {
        "problem": problem,
        "group": group,
        "experiment": k,
        "seed": k,
        "population": str(population),
        "storage": url,
        "study": study,
        "log": str(log),
        "command": shlex.join(run.command),
        "wall_seconds": run.wall_seconds,
        "cpu_seconds": run.cpu_seconds,
        "first_result_seconds": first,
        "evaluation_seconds": last - first,
        "evolution_seconds": sum(generations.values()) if generations else float("nan"),
        # Per generation: generation 0 holds the same networks in both groups and the workers'
        # start, so the evolution time without it compares what the two scorings evolved.
        "generation_seconds": {str(g): v for g, v in sorted(generations.items())},
        "evolution_seconds_after_first": sum(v for g, v in generations.items() if g > 0)
        if generations
        else float("nan"),
        # The deliverable: the group's top-3 networks retrained full size, scored on test.
        "deliverable_test": deliverable(args, problem, url, study, k),
        "tail_seconds": run.wall_seconds - last,
        "train_seconds": sum(t["train_seconds"] or 0.0 for t in trials),
        "shrink_seconds": sum(t["shrink_seconds"] or 0.0 for t in trials),
        "best_val": max((t["value"] for t in trials if t["value"] is not None), default=None),
        "best_test_exported": best_test,
        "trials": trials,
    }


DELIVERED = 3  # each group's top networks retrained for the deliverable


def deliverable(args: argparse.Namespace, problem: str, url: str, study: str, seed: int) -> list:
    """Test accuracy of the group's ``DELIVERED`` best networks (by nasfw's rank, full budget),
    each retrained full size as ``export_best`` retrains it: what a user of either scoring gets
    (regularized scoring ranks full genomes by their shrunk networks' scores, and the genome
    is what is exported)."""
    settings = problem_settings(args, problem)
    epochs = args.epochs or 5
    records = harness.finished_trials(url, study)
    best = harness.best_full_budget(records, epochs, top=DELIVERED)
    train = {"epochs": epochs, "threads": 1}
    return [
        {"trial": r.number, "val": r.result.metric,
         "test": harness.retrain_on_test(r, settings, seed, train)}
        for r in best
    ]  # fmt: skip


def problem_settings(args: argparse.Namespace, problem: str) -> dict[str, Any]:
    """``problem.*`` of ``problem`` as the CLI runs get them (for retraining in this process)."""
    overrides = PROBLEMS.get(problem) or DATA_PROBLEMS[problem]
    settings: dict[str, Any] = {"name": overrides[0].split("=", 1)[1]}
    if problem in args.problem_dirs:
        settings["data_dir"] = str(args.problem_dirs[problem])
        if args.max_train_samples:
            settings["max_train_samples"] = args.max_train_samples
    return settings


def make_population(args: argparse.Namespace, problem: str, k: int, log_dir: Path) -> Path:
    path = args.out / "populations" / f"pop-{problem}-{k}.json"
    if path.is_file():
        return path
    db = args.out / "studies" / f"init-{problem}-{k}.db"
    if db.exists():
        db.unlink()
    overrides = [
        *common_overrides(args, problem),
        f"tuner.save_init_population={q(path)}",
        "tuner.generations=0",
        f"seed={k}",
        f"study_name=init-{problem}-{k}",
        f"storage.url={q('sqlite:///' + str(db))}",
        f"hydra.run.dir={q(args.out / 'hydra' / f'init-{problem}-{k}')}",
    ]
    run_cli(overrides, log_dir / f"init-{problem}-{k}.log", args)
    if not path.is_file():
        raise SystemExit(f"table1: {path} was not written (log {log_dir})")
    return path


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    proto = protocol(args)
    key = hashlib.sha256(json.dumps(proto, sort_keys=True).encode()).hexdigest()[:12]
    command = harness.invocation("table1.py", argv)
    source = harness.git_state()  # at the start: what the runs measure
    if args.dry_run:
        for problem in args.problem_list:
            print(shlex.join(["python", "-m", "nasfw", *common_overrides(args, problem)]))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    proto_file = out / "protocol.json"
    if proto_file.is_file() and json.loads(proto_file.read_text()).get("key") != key:
        raise SystemExit(
            f"table1: {out} holds runs of another protocol ({proto_file}); use another --out"
        )
    # Relative paths: the protocol travels with the committed raw results.
    proto_file.write_text(json.dumps(harness.relative_paths({"key": key, **proto}, out), indent=1))
    harness.declare(CRITERIA, out)
    (out / "studies").mkdir(exist_ok=True)
    runs_file = out / "runs.jsonl"
    records: dict[tuple[str, str, int], dict[str, Any]] = {}
    if runs_file.is_file():
        for line in runs_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                records[(r["problem"], r["group"], r["experiment"])] = r
        if records:
            print(f"table1: reusing {len(records)} finished runs from {runs_file}")
    log_dir = out / "logs"
    todo = len(args.problem_list) * args.experiments * len(GROUPS)
    done = 0
    print(
        f"table1: {todo} runs ({args.experiments} experiments x 2 groups x "
        f"{len(args.problem_list)} problems), output in {out}",
        flush=True,
    )
    for problem in args.problem_list:
        for k in range(args.experiments):
            population = make_population(args, problem, k, log_dir)
            # Interleaved, and the first group alternates with k (a warm cache favours neither).
            order = GROUPS if k % 2 == 0 else GROUPS[::-1]
            for group in order:
                done += 1
                if (problem, group, k) in records:
                    continue
                r = run_experiment(args, problem, k, group, population, log_dir)
                r["order"] = done
                r["git_commit"] = source["git_commit"]
                r["uncommitted_changes"] = bool(source["uncommitted_changes"])
                records[(problem, group, k)] = r
                with runs_file.open("a") as f:  # relative paths: the raw results travel
                    f.write(json.dumps(harness.relative_paths(r, out)) + "\n")
                last = [t for t in r["trials"] if t["generation"] == args.generations - 1]
                acc = sum(t["value"] or 0.0 for t in last) / max(1, len(last))
                print(
                    f"[{done}/{todo}] {problem} {group:<11} k={k}: {r['wall_seconds']:6.1f} s "
                    f"wall, {r['train_seconds']:6.1f} s train, last-gen accuracy {acc:.4f}",
                    flush=True,
                )

    write_report(args, list(records.values()), proto, command, source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
