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
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONF = HERE / "conf"
GROUPS = ("plain", "regularized")
EXPERIMENT_NAME = "nasfw-benchmarks"
FAILED_NOTE = (
    "accuracy = mean val accuracy of the mixed last-generation population (the last-generation "
    "trials of all experiments of a group pooled); failed trials count as accuracy 0"
)

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
        "--experiment-name", default=EXPERIMENT_NAME, help=f"MLflow experiment ({EXPERIMENT_NAME})"
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
        args.tracking_uri = f"sqlite:///{args.out / 'mlflow.db'}"
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


def run_cli(overrides: list[str], log: Path, timeout: float | None) -> dict[str, Any]:
    """``python -m nasfw <overrides>``; wall and CPU seconds of its process tree."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "nasfw", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = dt.datetime.now()
    started = time.perf_counter()
    with log.open("w") as f:
        f.write(shlex.join(command) + "\n\n")
        f.flush()
        try:
            rc = subprocess.run(
                command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        what = "timed out" if rc == -1 else f"exit code {rc}"
        raise SystemExit(
            f"table1: run failed ({what}); log {log}:\n{tail}\n\n"
            "Rerun the same command to go on from the finished runs."
        )
    return {
        "command": shlex.join(command),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "launched": launched,
    }


def load_study(url: str, study: str) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=url)


def read_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's finished trials as plain dicts (what the table needs)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if "generation" not in a:
            continue
        extra = a.get("extra") or {}
        out.append(
            {
                "number": t.number,
                "generation": int(a["generation"]),
                "index": int(a.get("index", 0)),
                "state": t.state.name,
                "value": t.value if t.state.name == "COMPLETE" else None,
                "graph_hash": a.get("graph_hash"),
                "flops": a.get("flops"),
                "params": a.get("n_params"),
                "flops_after": extra.get("flops_after"),
                "params_after": extra.get("params_after"),
                "train_seconds": a.get("train_seconds"),
                "shrink_seconds": extra.get("shrink_seconds"),
                "fail_reason": a.get("fail_reason"),
                "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
            }
        )
    return sorted(out, key=lambda r: (r["generation"], r["index"]))


def evolution_seconds(url: str, study: str) -> float:
    """The search's own timing of its generations (``nasfw:generation_seconds``), summed: the
    seeds' "time required for evolving a series of generations", without process start-up and
    the export of the best network."""
    from nasfw.ledger import Ledger

    seconds = Ledger(url, study).generation_seconds()
    return sum(seconds.values()) if seconds else float("nan")


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
    run = run_cli(overrides, log_dir / f"{name}.log", args.timeout)
    stored = load_study(url, study)
    trials = read_trials(stored)
    # Where the wall time goes, from when results arrived (counted from the launch): until the
    # first result, start-up (imports, data, worker processes) plus one evaluation; between the
    # first and the last result, the generations; after the last, the best network's
    # retraining and export, and the process exit.
    launched = run.pop("launched")
    done = sorted(dt.datetime.fromisoformat(t["completed"]) for t in trials if t["completed"])
    first = (done[0] - launched).total_seconds() if done else float("nan")
    last = (done[-1] - launched).total_seconds() if done else float("nan")
    summary_file = args.out / "hydra" / name / "best_model" / "summary.json"
    best_test = None
    if summary_file.is_file():
        best_test = json.loads(summary_file.read_text()).get("test_accuracy")
    return {
        "problem": problem,
        "group": group,
        "experiment": k,
        "seed": k,
        "population": str(population),
        "storage": url,
        "study": study,
        "log": str(log_dir / f"{name}.log"),
        **run,
        "first_result_seconds": first,
        "evaluation_seconds": last - first,
        "evolution_seconds": evolution_seconds(url, study),
        "tail_seconds": run["wall_seconds"] - last,
        "train_seconds": sum(t["train_seconds"] or 0.0 for t in trials),
        "shrink_seconds": sum(t["shrink_seconds"] or 0.0 for t in trials),
        "best_val": max((t["value"] for t in trials if t["value"] is not None), default=None),
        "best_test_exported": best_test,
        "trials": trials,
    }


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
    run_cli(overrides, log_dir / f"init-{problem}-{k}.log", args.timeout)
    if not path.is_file():
        raise SystemExit(f"table1: {path} was not written (log {log_dir})")
    return path


# -- the table ----------------------------------------------------------------------------------


def _mean(xs: Iterable[float | None]) -> float:
    v = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return statistics.fmean(v) if v else float("nan")


def _std(xs: Iterable[float]) -> float:
    v = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return statistics.stdev(v) if len(v) > 1 else 0.0


def group_summary(runs: list[dict[str, Any]], generations: int) -> dict[str, Any]:
    last_gen = generations - 1
    last = [t for r in runs for t in r["trials"] if t["generation"] == last_gen]
    ok = [t for t in last if t["state"] == "COMPLETE" and t["value"] is not None]
    regularized = runs[0]["group"] == "regularized" if runs else False
    every = [
        t
        for r in runs
        for t in r["trials"]
        if t["state"] == "COMPLETE" and t["flops"] and t["flops_after"] is not None
    ]
    flops_key = "flops_after" if regularized else "flops"
    params_key = "params_after" if regularized else "params"
    return {
        "experiments": len(runs),
        "evolution_seconds": _mean(r.get("evolution_seconds") for r in runs),
        "evolution_seconds_std": _std(r.get("evolution_seconds") for r in runs),
        "time_seconds": _mean(r["wall_seconds"] for r in runs),
        "time_seconds_std": _std(r["wall_seconds"] for r in runs),
        "cpu_seconds": _mean(r["cpu_seconds"] for r in runs),
        "train_seconds": _mean(r["train_seconds"] for r in runs),
        "shrink_seconds": _mean(r["shrink_seconds"] for r in runs),
        "first_result_seconds": _mean(r["first_result_seconds"] for r in runs),
        "evaluation_seconds": _mean(r["evaluation_seconds"] for r in runs),
        "tail_seconds": _mean(r["tail_seconds"] for r in runs),
        "trials": sum(len(r["trials"]) for r in runs),
        "failed": sum(1 for r in runs for t in r["trials"] if t["state"] != "COMPLETE"),
        "last_generation": last_gen,
        "last_generation_trials": len(last),
        "last_generation_failed": len(last) - len(ok),
        # Failed trials count as accuracy 0 (FAILED_NOTE).
        "accuracy": (sum(t["value"] for t in ok) / len(last)) if last else float("nan"),
        "accuracy_ok_only": _mean(t["value"] for t in ok),
        "best_val": _mean(r["best_val"] for r in runs),
        # The first generation holds the same networks in both groups: a paired comparison.
        "first_generation_train_seconds": _mean(
            sum(t["train_seconds"] or 0.0 for t in r["trials"] if t["generation"] == 0)
            for r in runs
        ),
        "first_generation_accuracy": _mean(
            t["value"] or 0.0 for r in runs for t in r["trials"] if t["generation"] == 0
        ),
        # What was trained: the shrunk networks for regularized scoring.
        "flops": _mean(t[flops_key] for t in ok),
        "params": _mean(t[params_key] for t in ok),
        # The genomes' own (unmodified) size, for both groups.
        "genome_flops": _mean(t["flops"] for t in ok),
        # Regularized scoring: how many networks (all generations) the MorphNet phase made
        # smaller, and the mean FLOPs ratio shrunk / unmodified.
        "shrunk": sum(1 for t in every if _smaller(t)),
        "scored": len(every),
        "shrink_flops_ratio": _mean(
            t["flops_after"] / t["flops"] for t in every if t["flops_after"] is not None
        ),
    }


def _smaller(t: dict[str, Any]) -> bool:
    return t["flops_after"] is not None and bool(t["flops"]) and t["flops_after"] < t["flops"]


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


# Per-problem figures that are also averaged over problems.
HEADLINE_FIGURES = (
    "speedup",
    "speedup_wall",
    "speedup_train_seconds",
    "speedup_cpu",
    "acc_degradation",
    "acc_degradation_ok_only",
)


def summarize(records: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    problems: dict[str, Any] = {}
    for problem in args.problem_list:
        groups = {
            g: [r for r in records if r["problem"] == problem and r["group"] == g] for g in GROUPS
        }
        s = {
            g: group_summary(sorted(groups[g], key=lambda r: r["experiment"]), args.generations)
            for g in GROUPS
        }
        same = []
        for k in range(args.experiments):
            first = {}
            for g in GROUPS:
                run = next((r for r in groups[g] if r["experiment"] == k), None)
                first[g] = run and [t["graph_hash"] for t in run["trials"] if t["generation"] == 0]
            same.append(bool(first["plain"]) and first["plain"] == first["regularized"])
        p, r = s["plain"], s["regularized"]
        problems[problem] = {
            "speedup": _ratio(p["evolution_seconds"], r["evolution_seconds"]),
            "speedup_wall": _ratio(p["time_seconds"], r["time_seconds"]),
            "speedup_train_seconds": _ratio(p["train_seconds"], r["train_seconds"]),
            "speedup_cpu": _ratio(p["cpu_seconds"], r["cpu_seconds"]),
            "acc_degradation": 100.0 * (p["accuracy"] - r["accuracy"]),
            "acc_degradation_ok_only": 100.0 * (p["accuracy_ok_only"] - r["accuracy_ok_only"]),
            "flops_ratio": _ratio(p["flops"], r["flops"]),
            "same_initial_population": all(same),
            "same_initial_population_per_experiment": same,
            "plain": p,
            "regularized": r,
        }
    mean = {key: _mean(v[key] for v in problems.values()) for key in HEADLINE_FIGURES}
    return {"problems": problems, "mean": mean}


def _f(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _pair(v: dict[str, Any], key: str, scale: float = 1.0, fmt: str = ".1f") -> str:
    return f"{_f(v['plain'][key] * scale, fmt)} / {_f(v['regularized'][key] * scale, fmt)}"


def table_rows(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    ps = summary["problems"]

    def row(label: str, fn: Any) -> tuple[str, list[str]]:
        return label, [fn(v) for v in ps.values()]

    def g(group: str, key: str, fmt: str, scale: float = 1.0) -> Any:
        return lambda v: _f(v[group][key] * scale, fmt)

    return [
        row("speedup (evolution time)", lambda v: _f(v["speedup"], ".2f")),
        row("acc. degradation, pts", lambda v: _f(v["acc_degradation"], "+.2f")),
        row(
            "  of completed trials only, pts",
            lambda v: _f(v.get("acc_degradation_ok_only", math.nan), "+.2f"),
        ),
        row("speedup (wall clock of the CLI)", lambda v: _f(v["speedup_wall"], ".2f")),
        row("speedup (sum of train_seconds)", lambda v: _f(v["speedup_train_seconds"], ".2f")),
        row("speedup (CPU seconds)", lambda v: _f(v["speedup_cpu"], ".2f")),
        row("evolution time plain / reg., s", lambda v: _pair(v, "evolution_seconds")),
        row("time plain, s", g("plain", "time_seconds", ".1f")),
        row("time regularized, s", g("regularized", "time_seconds", ".1f")),
        row("  to 1st result plain / reg., s", lambda v: _pair(v, "first_result_seconds")),
        row("  generations plain / reg., s", lambda v: _pair(v, "evaluation_seconds")),
        row("  export + exit plain / reg., s", lambda v: _pair(v, "tail_seconds")),
        row("CPU s plain / reg.", lambda v: _pair(v, "cpu_seconds")),
        row("train_seconds plain, s", g("plain", "train_seconds", ".1f")),
        row("train_seconds regularized, s", g("regularized", "train_seconds", ".1f")),
        row("  of which shrink phase, s", g("regularized", "shrink_seconds", ".1f")),
        row(
            "1st gen. (same nets) train s plain / reg.",
            lambda v: _pair(v, "first_generation_train_seconds"),
        ),
        row(
            "1st gen. accuracy plain / reg., %",
            lambda v: _pair(v, "first_generation_accuracy", 100.0, ".2f"),
        ),
        row("accuracy plain, %", g("plain", "accuracy", ".2f", 100)),
        row("accuracy regularized, %", g("regularized", "accuracy", ".2f", 100)),
        row(
            "failed last-gen trials plain/reg.",
            lambda v: (
                f"{v['plain']['last_generation_failed']}/"
                f"{v['plain']['last_generation_trials']} / "
                f"{v['regularized']['last_generation_failed']}/"
                f"{v['regularized']['last_generation_trials']}"
            ),
        ),
        row("FLOPs plain (last gen.)", g("plain", "flops", ",.0f")),
        row("FLOPs reg. (shrunk, last gen.)", g("regularized", "flops", ",.0f")),
        row(
            "networks shrunk (reg., all gen.)",
            lambda v: (
                f"{v['regularized']['shrunk']}/{v['regularized']['scored']} "
                f"(FLOPs x{_f(v['regularized']['shrink_flops_ratio'], '.2f')})"
            ),
        ),
    ]


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    names = list(summary["problems"])
    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *[f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_rows(summary)],
        "",
        f"{FAILED_NOTE}. Speedup = mean evolution time(plain) / mean evolution time(regularized) "
        "(the seconds of the generations, measured by the search); accuracy "
        "degradation = accuracy(plain) - accuracy(regularized).",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']['description']}  ",
        f"Commit: {', '.join(meta['git_commits_of_runs'] or [str(meta['git_commit'])])}"
        + (" (plus uncommitted changes)" if meta["uncommitted_changes"] else "")
        + "  ",
        f"Protocol: {json.dumps(meta['protocol'])}",
    ]
    return "\n".join(lines) + "\n"


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Table 1: plain CoDeepNEAT vs regularized scoring")
    table.add_column("", no_wrap=True)
    for name in summary["problems"]:
        table.add_column(name, justify="right")
    for label, cells in table_rows(summary):
        table.add_row(label, *cells)
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(table)
    console.print(f"[dim]{FAILED_NOTE}.[/]")


def plots(summary: dict[str, Any], out: Path) -> list[Path]:
    """Fig. 4: (A) time and (B) accuracy per problem, plain vs regularized."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(summary["problems"])
    x = np.arange(len(names))
    width = 0.38
    paths = []
    panels = (
        (
            "fig4a_time.png",
            "(A) evolution time per run",
            "seconds of the generations",
            "evolution_seconds",
            1.0,
        ),
        (
            "fig4b_accuracy.png",
            "(B) accuracy of the last generation",
            "mean val accuracy, % (failed = 0)",
            "accuracy",
            100.0,
        ),
    )
    for filename, title, ylabel, key, scale in panels:
        fig, ax = plt.subplots(figsize=(2.4 + 1.6 * len(names), 3.8))
        for i, (group, color) in enumerate(zip(GROUPS, ("#4c72b0", "#dd8452"), strict=True)):
            values = [summary["problems"][n][group][key] * scale for n in names]
            err = None
            if key == "evolution_seconds":
                err = [summary["problems"][n][group]["evolution_seconds_std"] for n in names]
            bars = ax.bar(
                x + (i - 0.5) * width,
                values,
                width,
                yerr=err,
                capsize=3,
                label="CoDeepNEAT" if group == "plain" else "regularized scoring",
                color=color,
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_xticks(x, names)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if key == "accuracy":
            low = min(summary["problems"][n][g][key] * scale for n in names for g in GROUPS)
            if math.isfinite(low):
                ax.set_ylim(max(0.0, low - 10), 105)
        ax.margins(y=0.15)
        ax.legend(
            fontsize=8, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False
        )
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def log_mlflow(
    args: argparse.Namespace, summary: dict[str, Any], meta: dict[str, Any], artifacts: list[Path]
) -> dict[str, str]:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment_name)
    if exp is None:
        # With the default store (in --out), keep the artifacts next to it.
        location = None
        if args.tracking_uri == f"sqlite:///{args.out / 'mlflow.db'}":
            location = (args.out / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(args.experiment_name, location)
    else:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        experiment_id = exp.experiment_id
    mlflow.set_tracking_uri(args.tracking_uri)
    run_name = "table1-quick" if args.quick else "table1"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        params = {
            k: json.dumps(v) if isinstance(v, list | dict) else v
            for k, v in meta["protocol"].items()
        }
        mlflow.log_params(params)
        mlflow.set_tags(
            {
                "command": meta["command"],
                "machine": meta["machine"]["description"],
                "git_commit": meta["git_commit"] or "",
                "uncommitted_changes": str(len(meta["uncommitted_changes"])),
                "benchmark": "table1",
            }
        )
        metrics: dict[str, float] = {}
        for problem, v in summary["problems"].items():
            for key in (*HEADLINE_FIGURES, "flops_ratio"):
                metrics[f"{problem}.{key}"] = v[key]
            for group in GROUPS:
                for key in (
                    "evolution_seconds",
                    "time_seconds",
                    "cpu_seconds",
                    "train_seconds",
                    "accuracy",
                    "flops",
                    "best_val",
                    "last_generation_failed",
                ):
                    metrics[f"{problem}.{key}_{group}"] = v[group][key]
            metrics[f"{problem}.shrunk_fraction"] = _ratio(
                v["regularized"]["shrunk"], v["regularized"]["scored"]
            )
            metrics[f"{problem}.shrink_flops_ratio"] = v["regularized"]["shrink_flops_ratio"]
        for key, value in summary["mean"].items():
            metrics[f"mean.{key}"] = value
        mlflow.log_metrics(
            {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        )
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return {
            "tracking_uri": args.tracking_uri,
            "experiment_id": str(experiment_id),
            "run_id": run.info.run_id,
        }


def machine() -> dict[str, Any]:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        gpu = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "gpu": gpu,
        "python": platform.python_version(),
        "description": f"{cores}-core CPU ({cpu}), {'GPU ' + gpu if gpu else 'no GPU'}",
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and the framework's files that differ from it (if any)."""

    def git(*a: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *a], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    changed = git("status", "--porcelain", "--", "nasfw", "plugins", "launchers", "conf")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": changed.splitlines() if changed else [],
    }


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    proto = protocol(args)
    key = hashlib.sha256(json.dumps(proto, sort_keys=True).encode()).hexdigest()[:12]
    command = shlex.join(
        ["python", "benchmarks/table1.py", *(sys.argv[1:] if argv is None else argv)]
    )
    source = git_state()  # at the start: what the runs measure
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
    proto_file.write_text(json.dumps({"key": key, **proto}, indent=1))
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
                with runs_file.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                last = [t for t in r["trials"] if t["generation"] == args.generations - 1]
                acc = sum(t["value"] or 0.0 for t in last) / max(1, len(last))
                print(
                    f"[{done}/{todo}] {problem} {group:<11} k={k}: {r['wall_seconds']:6.1f} s "
                    f"wall, {r['train_seconds']:6.1f} s train, last-gen accuracy {acc:.4f}",
                    flush=True,
                )

    summary = summarize(list(records.values()), args)
    meta = {
        "command": command,
        "machine": machine(),
        "protocol": proto,
        **source,
        "git_commit_at_end": git_state()["git_commit"],
        # Runs reused from an earlier invocation were measured at their own commits.
        "git_commits_of_runs": sorted(
            {r["git_commit"] for r in records.values() if r.get("git_commit")}
        ),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    print_table(summary)
    for problem, v in summary["problems"].items():
        if not v["same_initial_population"]:
            print(
                f"table1: WARNING: {problem}: the groups' first generations differ "
                f"{v['same_initial_population_per_experiment']}"
            )
    md_path = out / "table1.md"
    md_path.write_text(markdown(summary, meta))
    json_path = out / "table1.json"
    runs_index = [{k: v for k, v in r.items() if k != "trials"} for r in records.values()]
    document = {
        **meta,
        "note": FAILED_NOTE,
        **summary,
        "runs": runs_index,
        "runs_file": str(runs_file),
    }
    json_path.write_text(json.dumps(document, indent=1, default=str))
    artifacts = [md_path, json_path, runs_file, *plots(summary, out)]
    if not args.no_mlflow:
        document["mlflow"] = log_mlflow(args, summary, meta, artifacts)
        json_path.write_text(json.dumps(document, indent=1, default=str))
        print(
            f"mlflow: run {document['mlflow']['run_id']} in experiment "
            f"{args.experiment_name!r}; open with: mlflow ui --backend-store-uri "
            f"{args.tracking_uri}"
        )
    print(f"table1: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
