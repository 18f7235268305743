"""nasfw against the peer a user would pick instead: plain Optuna TPE, written by hand
(issue #16, part 4).

**Contenders** (each one process that trains one network at a time, ``--threads`` torch threads,
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to the same number):

- ``optuna`` — what a user writes instead of nasfw: ``optuna.create_study(direction="maximize",
  sampler=TPESampler(seed=seed))`` and an objective that builds a define-by-run PyTorch CNN of
  ``image_small``'s family with ``trial.suggest_*`` (1-5 feature layers, each a 2-D convolution
  of 16-68 filters, kernel 1/3/5, same padding, ReLU; or 2x2 max-pooling; or dropout 0-0.5; then
  1-2 classifier layers, dense 32-256 + ReLU or dropout; a linear head; networks over
  ``image_small``'s 2,000,000 parameters fail, as in nasfw), trained by a plain PyTorch loop with
  nasfw's default training settings (``TrainConfig``: Adam, lr 1e-3, batch 64, 5 epochs, a fresh
  shuffle per epoch, seeded per trial) on the very tensors nasfw trains on
  (``nasfw.evaluate.load_problem`` with the same problem settings), scored once on the
  validation split after the last epoch. It runs as a subprocess of this script
  (``peers.py --_plain-worker``), so its start-up counts like nasfw's. What it leaves out of
  ``image_small``: skip connections and their merges (a user's sequential CNN).
- nasfw through its command line (``python -m nasfw``), ``search_space=image_small
  launcher.workers=0 tracking=none evaluation=plain train.curve_every=0 train.threads=<T>``,
  each with more trials than the budget allows: ``tpe``, ``codeepneat``, ``codeepneat`` with
  ``evaluation=regularized``, ``evolution`` and ``random`` (their other settings: the defaults).
  ``evaluation=plain`` is explicit because ``evaluation=auto`` picks regularized scoring on
  Fashion-MNIST; ``train.curve_every=0`` scores the validation split once, after the last
  epoch, like the peer (no pruner is on, so the per-epoch learning curve would only cost time).

**Protocol**: per repeat (``--repeats``, seed = repeat index) and problem, the contenders run
one after the other in a round-robin order rotated by one place per repeat, so load from other
processes on the machine hits all of them. Each process gets ``--budget`` wall seconds from its
launch (start-up, imports and data loading count), then SIGINT, as a user's Ctrl-C; it is judged
by the trials that finished within the budget: the best validation accuracy against seconds
since launch (completion times read from the Optuna storage for nasfw, from the peer's log for
plain Optuna). Per contender: trials, failed ones, the final best, the seconds to its first
result, and the seconds it took to reach plain Optuna's final best of the same repeat; the
ratio is that time over plain Optuna's own time to reach its final best ("never": not reached
within the budget). The issue's target: nasfw's best tuner at ≤ 0.7.

**Problems** (``--problems``): ``digits`` (scikit-learn's 8x8 digits, the default split) and
``fashion_mnist`` (real, from ``--data-dir``/fashion_mnist: the first 2,000 of the training
split's images after the seeded validation split, ``problem.max_train_samples=2000``, and 3,000
validation images, ``problem.val_fraction=0.05``).

    .venv/bin/python benchmarks/peers.py                           # 2 x 6 runs of 120 s: ~26 min
    .venv/bin/python benchmarks/peers.py --quick --out /tmp/peers  # digits, 20 s each: ~2.5 min

Writes ``peers.json``, ``peers.md`` and ``peers_<problem>.png`` (best validation accuracy
against wall time) to ``--out``, and one MLflow run in experiment ``nasfw-benchmarks`` of
``--tracking-uri`` (default ``sqlite:///<out>/mlflow.db``; ``--no-mlflow`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLAIN = "optuna"
FASHION_TRAIN, FASHION_VAL_FRACTION = 2000, 0.05

# name -> nasfw CLI overrides (None: the hand-written plain Optuna peer).
CONTENDERS: dict[str, list[str] | None] = {
    PLAIN: None,
    "tpe": ["tuner=tpe", "tuner.n_trials=100000", "evaluation=plain"],
    "codeepneat": ["tuner=codeepneat", "tuner.generations=100000", "evaluation=plain"],
    "codeepneat+regularized": [
        "tuner=codeepneat",
        "tuner.generations=100000",
        "evaluation=regularized",
    ],
    "evolution": ["tuner=evolution", "tuner.n_trials=100000", "evaluation=plain"],
    "random": ["tuner=random", "tuner.n_trials=100000", "evaluation=plain"],
}


def problem_settings(problem: str, data_dir: Path) -> dict[str, Any]:
    """``problem.*`` of each problem: the same for nasfw's CLI and the peer's ``load_problem``."""
    if problem == "digits":
        return {"name": "digits"}
    if problem == "fashion_mnist":
        return {
            "name": "fashion_mnist",
            "data_dir": str((data_dir / "fashion_mnist").resolve()),
            "max_train_samples": FASHION_TRAIN,
            "val_fraction": FASHION_VAL_FRACTION,
        }
    raise SystemExit(f"peers: unknown problem {problem!r} (digits, fashion_mnist)")


def cli_overrides(settings: dict[str, Any]) -> list[str]:
    return [f"problem={settings['name']}"] + [
        f"problem.{k}={v}" for k, v in settings.items() if k != "name"
    ]


# -- the peer: plain Optuna TPE, written by hand ------------------------------------------------


def plain_worker(args: argparse.Namespace) -> int:
    """What a user writes instead of nasfw (see the module docstring); one JSON line per trial
    to ``--log``."""
    import numpy as np
    import optuna
    import torch
    from optuna.samplers import TPESampler
    from torch import nn

    from nasfw import ProblemConfig, TrainConfig
    from nasfw.evaluate import load_problem

    torch.set_num_threads(args.threads)
    defaults = TrainConfig()  # nasfw's training settings: the same loop knobs for the peer
    epochs, batch_size, lr = defaults.epochs, defaults.batch_size, defaults.lr
    max_params = 2_000_000  # image_small's max_params
    problem = load_problem(ProblemConfig(**json.loads(args.problem_json)))
    x_train = torch.from_numpy(np.ascontiguousarray(problem.train.x, dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(problem.train.y, dtype=np.int64))
    x_val = torch.from_numpy(np.ascontiguousarray(problem.val.x, dtype=np.float32))
    y_val = torch.from_numpy(np.asarray(problem.val.y, dtype=np.int64))
    channels, height, width = problem.input_shape

    def objective(trial: optuna.Trial) -> float:
        layers: list[nn.Module] = []
        c, h, w = channels, height, width
        for i in range(trial.suggest_int("n_features", 1, 5)):
            op = trial.suggest_categorical(f"f{i}_op", ["conv2d", "maxpool2d", "dropout"])
            if op == "conv2d":
                filters = trial.suggest_int(f"f{i}_filters", 16, 68)
                kernel = trial.suggest_categorical(f"f{i}_kernel", [1, 3, 5])
                layers += [nn.Conv2d(c, filters, kernel, padding="same"), nn.ReLU()]
                c = filters
            elif op == "maxpool2d":
                if min(h, w) >= 2:  # nothing left to pool: skip it, as nasfw does
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
            else:
                layers.append(nn.Dropout(trial.suggest_float(f"f{i}_rate", 0.0, 0.5)))
        layers.append(nn.Flatten())
        features = c * h * w
        for i in range(trial.suggest_int("n_classifier", 1, 2)):
            op = trial.suggest_categorical(f"c{i}_op", ["dense", "dropout"])
            if op == "dense":
                units = trial.suggest_int(f"c{i}_units", 32, 256)
                layers += [nn.Linear(features, units), nn.ReLU()]
                features = units
            else:
                layers.append(nn.Dropout(trial.suggest_float(f"c{i}_rate", 0.0, 0.5)))
        seed = args.seed * 100_003 + trial.number
        torch.manual_seed(seed)
        model = nn.Sequential(*layers, nn.Linear(features, problem.n_outputs))
        n_params = sum(p.numel() for p in model.parameters())
        trial.set_user_attr("n_params", n_params)
        if n_params > max_params:
            return float("nan")  # a failed trial, as nasfw fails networks over max_params

        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            permutation = torch.randperm(len(x_train), generator=order)
            for start in range(0, len(x_train), batch_size):
                index = permutation[start : start + batch_size]
                if len(index) < 2:
                    continue  # a batch of one adds nothing
                loss = loss_fn(model(x_train[index]), y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_val[i : i + 512]) for i in range(0, len(x_val), 512)])
        return float((logits.argmax(1) == y_val).float().mean())

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        line = {"number": trial.number, "state": trial.state.name, "value": value,
                "finished": time.time(), "params": trial.params}  # fmt: skip
        with Path(args.log).open("a") as log:
            log.write(json.dumps(line) + "\n")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=TPESampler(seed=args.seed))
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT: the budget's end
        study.optimize(objective, n_trials=1_000_000, callbacks=[record])
    return 0


# -- running the contenders ---------------------------------------------------------------------


def launch(command: list[str], run_dir: Path, budget: float, threads: int) -> dict[str, Any]:
    """Run ``command`` in ``run_dir``, SIGINT after ``budget`` seconds from its launch."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = run_dir / "run.log"
    run = harness.run_command(
        command, cwd=run_dir, log=log, interrupt_after=budget, grace=120, env=env
    )
    stopped = run.stopped_by_budget
    return {
        "launched": run.launched,
        "exit_seconds": round(run.wall_seconds - (budget if stopped else 0.0), 2),
        "returncode": run.returncode,
        "stopped_by_budget": stopped,
        "log": str(log),
    }


def nasfw_trials(url: str) -> list[dict[str, Any]]:
    """Every evaluation in a nasfw study: completion time, status, validation metric."""
    return [
        {
            "finished": r.result.finished,
            "ok": r.result.ok and r.result.metric is not None and math.isfinite(r.result.metric),
            "value": r.result.metric,
        }
        for r in harness.finished_trials(url, "bench")
    ]


def plain_trials(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        t = json.loads(line)
        ok = t["state"] == "COMPLETE" and t["value"] is not None and math.isfinite(t["value"])
        out.append({"finished": t["finished"], "ok": ok, "value": t["value"]})
    return out


def judged(
    name: str, trials: list[dict[str, Any]], launched: float, budget: float, log: str
) -> dict[str, Any]:
    """The trials finished within the budget: best validation accuracy over time since launch
    (none finished: the benchmark fails)."""
    within = sorted(
        (t for t in trials if t["finished"] - launched <= budget), key=lambda t: t["finished"]
    )
    harness.require_trials(name, within, log)
    ok = [t for t in within if t["ok"]]
    curve = harness.best_so_far(((t["finished"] - launched, t["value"]) for t in ok), digits=2)
    first = ok[0]["finished"] - launched if ok else None
    return {
        "trials": len(within),
        "failed": sum(not t["ok"] for t in within),
        "after_budget": len(trials) - len(within),
        "best": curve[-1][1] if curve else None,
        "first_result_seconds": round(first, 2) if first is not None else None,
        "curve": curve,
    }


def run_one(name: str, problem: str, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = problem_settings(problem, args.data_dir)
    run_dir = args.out / "runs" / problem / f"repeat{repeat}" / name.replace("+", "_")
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    overrides = CONTENDERS[name]
    if overrides is None:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--_plain-worker",
            "--problem-json", json.dumps(settings), "--seed", str(repeat),
            "--threads", str(args.threads), "--log", str(run_dir / "trials.jsonl"),
        ]  # fmt: skip
    else:
        url = f"sqlite:///{run_dir / 'nasfw.db'}"
        command = [
            sys.executable, "-m", "nasfw", *cli_overrides(settings), "search_space=image_small",
            *overrides, "launcher.workers=0", "tracking=none", "train.curve_every=0",
            f"train.threads={args.threads}", f"seed={repeat}", f"storage.url={url}",
            "study_name=bench", f"export_dir={run_dir / 'best_model'}", *args.nasfw_override,
        ]  # fmt: skip
    process = launch(command, run_dir, args.budget, args.threads)
    if overrides is None:
        trials = plain_trials(run_dir / "trials.jsonl")
    else:
        trials = nasfw_trials(url) if (run_dir / "nasfw.db").exists() else []
    what = f"peers {problem} repeat {repeat} {name} (exit code {process['returncode']})"
    result = judged(what, trials, process["launched"], args.budget, process["log"])
    return {
        "contender": name,
        "problem": problem,
        "repeat": repeat,
        "command": shlex.join(command),
        **process,
        **result,
    }


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    names = list(args.contenders)
    runs = []
    for repeat in range(args.repeats):
        for problem in args.problems:
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                print(f"[{problem} repeat {repeat}] {name}: {args.budget:.0f} s", flush=True)
                run = run_one(name, problem, repeat, args)
                print(
                    f"  {run['trials']} trials, best {fmt(run['best'])}, "
                    f"first result {fmt(run['first_result_seconds'], 1)} s",
                    flush=True,
                )
                runs.append(run)
    return runs


# -- report -------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per problem and contender: the figures over repeats, against plain Optuna's final best
    of the same repeat."""
    out: dict[str, Any] = {}
    for problem in dict.fromkeys(r["problem"] for r in runs):
        rows: dict[str, Any] = {}
        plain = {
            r["repeat"]: r for r in runs if r["problem"] == problem and r["contender"] == PLAIN
        }
        for name in names:
            mine = [r for r in runs if r["problem"] == problem and r["contender"] == name]
            times, ratios = [], []
            for r in mine:
                base = plain.get(r["repeat"])
                target = base["best"] if base else None
                reached = harness.time_to(r["curve"], target)
                own = harness.time_to(base["curve"], target) if base else None
                r["target"], r["time_to_target"] = target, reached
                r["ratio"] = reached / own if reached is not None and own else None
                times.append(reached)
                ratios.append(r["ratio"])
            bests = [r["best"] for r in mine if r["best"] is not None]
            reached_all = all(t is not None for t in times) and times
            rows[name] = {
                "repeats": len(mine),
                "trials": statistics.fmean(r["trials"] for r in mine) if mine else 0,
                "failed": statistics.fmean(r["failed"] for r in mine) if mine else 0,
                "best": statistics.fmean(bests) if bests else None,
                "first_result_seconds": _median(r["first_result_seconds"] for r in mine),
                "reached": sum(t is not None for t in times),
                # Median over repeats; None ("never") unless every repeat reached the target.
                "time_to_target": statistics.median(times) if reached_all else None,
                "ratio": statistics.median(ratios) if reached_all else None,
            }
        tuners = [n for n in names if n != PLAIN and rows[n]["ratio"] is not None]
        best_tuner = min(tuners, key=lambda n: rows[n]["ratio"]) if tuners else None
        out[problem] = {
            "contenders": rows,
            "plain_final_best": rows.get(PLAIN, {}).get("best"),
            "best_nasfw_tuner": best_tuner,
            "best_nasfw_ratio": rows[best_tuner]["ratio"] if best_tuner else None,
            "target_met": bool(best_tuner and rows[best_tuner]["ratio"] <= 0.7),
        }
    return out


def _median(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def markdown(doc: dict[str, Any]) -> str:
    p = doc["protocol"]
    lines = [
        "# nasfw against plain Optuna (peers)",
        "",
        f"{doc['machine']['description']}; budget {p['budget']:.0f} s per contender from its "
        f"launch, {p['repeats']} repeat(s), {p['threads']} torch thread(s) per process, one "
        f"training process each. Fashion-MNIST: {FASHION_TRAIN:,} training images, "
        f"val_fraction={FASHION_VAL_FRACTION} (3,000 validation images).",
        "",
        f"Command: `{doc['command']}`",
    ]
    for problem, s in doc["summary"].items():
        lines += [
            "",
            f"## {problem}",
            "",
            f"Plain Optuna's final best: {fmt(s['plain_final_best'])}. "
            'Time to it: seconds since launch (median over repeats; "never" where a repeat '
            "did not reach it); ratio: that time ÷ plain Optuna's own time to it.",
            "",
            "| contender | trials | failed | first result, s | best val | "
            "time to plain's best, s | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in s["contenders"].items():
            label = "plain Optuna TPE" if name == PLAIN else f"nasfw {name}"
            never = "never" if r["reached"] < r["repeats"] else "—"
            lines.append(
                f"| {label} | {r['trials']:.0f} | {r['failed']:.0f} | "
                f"{fmt(r['first_result_seconds'], 1)} | {fmt(r['best'])} | "
                + (fmt(r["time_to_target"], 1) if r["time_to_target"] is not None else never)
                + " | "
                + (fmt(r["ratio"], 2) if r["ratio"] is not None else never)
                + " |"
            )
        verdict = (
            f"nasfw's best tuner here: {s['best_nasfw_tuner']} at "
            f"{s['best_nasfw_ratio']:.2f} of plain Optuna's time (target ≤ 0.7: "
            f"{'met' if s['target_met'] else 'not met'})."
            if s["best_nasfw_tuner"]
            else "No nasfw tuner reached plain Optuna's final best (target ≤ 0.7: not met)."
        )
        lines += ["", verdict]
    return "\n".join(lines)


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = doc["protocol"]["budget"]
    paths = []
    for problem, s in doc["summary"].items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lows = []
        for i, name in enumerate(s["contenders"]):
            color = f"C{i}"
            for k, r in enumerate(
                x for x in doc["runs"] if x["problem"] == problem and x["contender"] == name
            ):
                if not r["curve"]:
                    continue
                xs = [t for t, _ in r["curve"]] + [budget]
                ys = [v for _, v in r["curve"]] + [r["curve"][-1][1]]
                label = (
                    ("plain Optuna TPE" if name == PLAIN else f"nasfw {name}") if k == 0 else None
                )
                ax.step(xs, ys, where="post", color=color, label=label,
                        linewidth=2.2 if name == PLAIN else 1.4, alpha=0.9)  # fmt: skip
                ax.plot(xs[:1], ys[:1], "o", color=color, markersize=3)
                lows.append(ys[min(1, len(ys) - 1)])
        if s["plain_final_best"] is not None:
            ax.axhline(s["plain_final_best"], color="grey", linestyle=":", linewidth=1)
        if lows:
            top = max(v for r in doc["runs"] if r["problem"] == problem for _, v in r["curve"])
            ax.set_ylim(max(0.0, min(lows) - 0.02), min(1.0, top + 0.01))
        ax.set_xlim(0, budget)
        ax.set_xlabel("seconds since launch")
        ax.set_ylabel("best validation accuracy")
        ax.set_title(f"{problem}: best validation accuracy against wall time")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"peers_{problem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def log_to_mlflow(doc: dict[str, Any], out: Path, uri: str | None, artifacts: list[Path]) -> str:
    """The protocol, the figures per problem and contender, and plain Optuna's and each
    tuner's best-so-far curve of repeat 0 (step: whole seconds since launch); the run's id."""
    metrics: dict[str, float | None] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for problem, s in doc["summary"].items():
        for name, r in s["contenders"].items():
            key = f"{problem}.{name.replace('+', '_')}"  # MLflow takes no "+" in names
            for field in ("best", "trials", "time_to_target", "ratio", "first_result_seconds"):
                metrics[f"{key}.{field}"] = r.get(field)
        metrics[f"{problem}.best_nasfw_ratio"] = s["best_nasfw_ratio"]
        for r in doc["runs"]:
            if r["problem"] == problem and r["repeat"] == 0:
                key = f"{problem}.{r['contender'].replace('+', '_')}.best_val_curve"
                curves[key] = [(int(t), value) for t, value in r["curve"]]
    logged = harness.log_to_mlflow(
        out,
        uri,
        benchmark="peers",
        run_name="peers-quick" if doc["protocol"]["quick"] else "peers",
        params=doc["protocol"],
        tags={
            "command": doc["command"],
            "machine": doc["machine"]["description"],
            "git_commit": doc.get("git_commit") or "",
        },
        metrics=metrics,
        series=curves,
        artifacts=artifacts,
    )
    return logged["run_id"]


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--budget", type=float, default=120.0, help="wall seconds per process")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument(
        "--nasfw-override", action="append", default=[], metavar="KEY=VALUE",
        help="one more CLI override for every nasfw contender (repeatable)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="digits only, 20 s per contender")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="only the report, from <out>/peers.json"
    )
    parser.add_argument("--tracking-uri", default=None, help="default sqlite:///<out>/mlflow.db")
    # The plain Optuna peer's own process (run by this script).
    parser.add_argument("--_plain-worker", dest="plain_worker", action="store_true",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--problem-json", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.budget = ["digits"], min(args.budget, 20.0)
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        return plain_worker(args)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for problem in [] if args.report else args.problems:
        settings = problem_settings(problem, args.data_dir)
        if "data_dir" in settings and not Path(settings["data_dir"]).is_dir():
            raise SystemExit(f"peers: {settings['data_dir']} not found (--data-dir)")
    if PLAIN not in args.contenders:
        args.contenders = [PLAIN, *args.contenders]  # the reference every ratio needs
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:  # the tables, plots and MLflow run again from the runs in peers.json
        doc = json.loads((args.out / "peers.json").read_text())
        doc["summary"] = summarize(doc["runs"], doc["protocol"]["contenders"])
    else:
        command = harness.invocation("peers.py", argv)
        source = harness.git_state()  # at the start: what the runs measure
        started = time.time()
        runs = run_all(args)
        doc = {
            "protocol": {
                "problems": args.problems,
                "budget": args.budget,
                "repeats": args.repeats,
                "threads": args.threads,
                "contenders": args.contenders,
                "nasfw_overrides": args.nasfw_override,
                "fashion_mnist_train_images": FASHION_TRAIN,
                "fashion_mnist_val_fraction": FASHION_VAL_FRACTION,
                "quick": args.quick,
            },
            "command": command,
            "machine": harness.machine(),
            **source,
            "wall_seconds": round(time.time() - started, 1),
            "summary": summarize(runs, args.contenders),
            "runs": runs,
        }
    text = markdown(doc)
    (args.out / "peers.md").write_text(text + "\n")
    (args.out / "peers.json").write_text(json.dumps(doc, indent=2))
    paths = plots(doc, args.out)
    print(text)
    if not args.no_mlflow:
        uri = args.tracking_uri or harness.default_tracking_uri(args.out)
        run_id = log_to_mlflow(
            doc, args.out, uri, [args.out / "peers.md", args.out / "peers.json", *paths]
        )
        doc["mlflow"] = {"tracking_uri": uri, "run_id": run_id}
        (args.out / "peers.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
