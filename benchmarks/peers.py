"""nasfw against the peers a competent user would write instead (issue #27, part 3; #16 part 4
before it), by the benchmark rules of ``harness.py``: CPU-second budgets counted from the first
training step, several seeds with medians and bootstrap intervals, the criterion below written
before the run, the deliverable scored on test, raw results committed, a contender that finished
nothing failing the run.

**Peers** (hand-written; each its own process, ``peers.py --_peer NAME``): an objective that
builds a define-by-run PyTorch CNN of ``image_small``'s family with ``trial.suggest_*`` (1-5
feature layers, each a 2-D convolution of 16-68 filters, kernel 1/3/5, same padding, ReLU, with
an optional skip connection around it (added, through a 1x1 convolution when the widths differ);
or 2x2 max-pooling; or dropout 0-0.5; then 1-2 classifier layers, dense 32-256 + ReLU or dropout;
a linear head; networks over ``image_small``'s 2,000,000 parameters fail, as in nasfw), trained by
a plain PyTorch loop with nasfw's default training settings (``TrainConfig``: Adam, lr 1e-3, batch
64, 5 epochs, a fresh shuffle per epoch, seeded per trial) on the very tensors nasfw trains on
(``nasfw.evaluate.load_problem`` with the same problem settings):

- ``optuna_tpe``: ``TPESampler(multivariate=True, seed=seed)`` (multivariate, as Optuna 5 makes
  the default), no pruner;
- ``optuna_tpe_median``: the same with ``MedianPruner()`` on the per-epoch validation accuracy;
- ``optuna_gp``: ``GPSampler(seed=seed)``; ``optuna_cmaes``: ``CmaEsSampler(seed=seed)``
  (categorical choices fall back to its independent sampler, as a user gets);
- ``optuna_random_sha``: ``RandomSampler(seed)`` with ``SuccessiveHalvingPruner()``;
- ``handmade_cnn``: no search: one sensible CNN (conv 32 3x3, pool, conv 64 3x3, pool, dense 128,
  dropout 0.25), trained once.

**nasfw** through its command line, ``search_space=image_small launcher.workers=0 tracking=none``
with more trials than the budget allows: ``tpe``, ``tpe+median`` (``pruner=median``),
``random+sha`` (``pruner=successive_halving``), ``evolution``, ``codeepneat``,
``codeepneat+regularized`` (``evaluation=regularized``). Without a pruner, ``train.curve_every=0``
scores the validation split once, after the last epoch, like the peers without one.

**Protocol**: per seed (``--seeds``) and problem, the contenders run one after the other in an
order rotated by one place per seed. Each gets ``--budget`` CPU seconds of its process tree
counted from its first training step (so imports, data loading and workers' start are not
charged, and load from other processes on a shared machine does not shorten anyone's budget),
then SIGINT, as a user's Ctrl-C. It is judged by the trials that finished within the budget: the
best validation accuracy against CPU seconds since the first step. Its **deliverable** is the
network it would hand over, scored on the test split: for a peer, its best trial's network as
trained (kept by the peer's process, scored at its exit); for nasfw, its best full-budget trial
retrained exactly as ``export_best`` retrains it (same initial weights and seed), full size also
after regularized scoring. Per problem and peer P, the target is P's median final best over
seeds; each contender's time to it is the median over seeds of the CPU seconds at which its
best-so-far reached it (a seed that never did counts as never). The ratio is a nasfw
configuration's time over P's own, with a bootstrap interval over seeds.

**Problems** (``--problems``): ``digits`` (scikit-learn's 8x8 digits) and ``fashion_mnist`` (real,
from ``--data-dir``/fashion_mnist: 2,000 training images, 3,000 validation images).

    .venv/bin/python benchmarks/peers.py                     # 2 problems x 3 seeds x 12: hours
    .venv/bin/python benchmarks/peers.py --quick --out /tmp/peers      # digits, minutes
    .venv/bin/python benchmarks/peers.py --report            # the tables again, from the raw runs

Resumable: each (problem, seed, contender) writes ``<out>/runs/<problem>/seed<k>/<name>.json``
when it has finished, and a rerun skips those. Writes ``peers.json`` (the summary), ``peers.md``
and ``peers_<problem>.png`` (median best-so-far with its range over seeds) to ``--out``, and one
MLflow run in experiment ``nasfw-benchmarks`` (``--no-mlflow`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import spread

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FASHION_TRAIN, FASHION_VAL_FRACTION = 2000, 0.05
TARGET_RATIO = 0.7
# Wall seconds a contender gets after its SIGINT to hand over its deliverable (a peer scores
# its best network on the test split then): generous, as a niced run on a loaded machine gets
# little CPU. (A Fashion-MNIST peer once killed 300 s after its SIGINT had never seen it: run
# from a background job, it ignored SIGINT; harness.run_command now restores it.)
GRACE_S = 1800
TRAIN_EPOCHS = 5  # nasfw's default train.epochs: every contender trains its networks this long

PEERS = [
    "optuna_tpe",
    "optuna_tpe_median",
    "optuna_gp",
    "optuna_cmaes",
    "optuna_random_sha",
    "handmade_cnn",
]
# Each names its scoring: with evaluation=auto, fashion_mnist's preset is regularized scoring.
PLAIN = "evaluation=plain"
NASFW: dict[str, list[str]] = {
    "tpe": ["tuner=tpe", "tuner.n_trials=100000", PLAIN],
    "tpe+median": ["tuner=tpe", "tuner.n_trials=100000", "pruner=median", PLAIN],
    "random+sha": ["tuner=random", "tuner.n_trials=100000", "pruner=successive_halving", PLAIN],
    "evolution": ["tuner=evolution", "tuner.n_trials=100000", PLAIN],
    "codeepneat": ["tuner=codeepneat", "tuner.generations=100000", PLAIN],
    "codeepneat+regularized": [
        "tuner=codeepneat",
        "tuner.generations=100000",
        "evaluation=regularized",
    ],
}
CONTENDERS = [*PEERS, *NASFW]


def _fastest_ratio(figures: dict[str, Any]) -> float:
    """The criterion's figure: over problems, the worst of (the best nasfw configuration's
    largest ratio against any peer)."""
    return max(p["best_nasfw_ratio"] for p in figures["problems"].values())


# Written before the run (issue #27's target): harness.declare prints and stores it.
CRITERIA = [
    harness.Criterion(
        "peers",
        f"on every problem, one nasfw configuration reaches the median final best of every peer "
        f"in <= {TARGET_RATIO} of that peer's median CPU seconds (median over seeds)",
        lambda figures: _fastest_ratio(figures) <= TARGET_RATIO,
    )
]


def problem_settings(problem: str, data_dir: Path) -> dict[str, Any]:
    """``problem.*`` of each problem: the same for nasfw's CLI and the peer's ``load_problem``."""
    return harness.problem_settings(problem, data_dir, FASHION_TRAIN, FASHION_VAL_FRACTION)


# -- the peers, written by hand -----------------------------------------------------------------


def peer_worker(args: argparse.Namespace) -> int:
    """What a user writes instead of nasfw (see the module docstring); one JSON line per trial
    to ``--log``, a ``first_step`` line at the first optimizer step and a ``deliverable`` line
    (the best trial's network scored on test) at the exit."""
    import copy

    import numpy as np
    import optuna
    import torch
    from torch import nn

    from nasfw import ProblemConfig, TrainConfig
    from nasfw.evaluate import load_problem

    torch.set_num_threads(args.threads)
    defaults = TrainConfig()  # nasfw's training settings: the same loop knobs for the peers
    epochs, batch_size, lr = defaults.epochs, defaults.batch_size, defaults.lr
    max_params = 2_000_000  # image_small's max_params
    problem = load_problem(ProblemConfig(**json.loads(args.problem_json)))

    def tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(split.x, dtype=np.float32))
        return x, torch.from_numpy(np.asarray(split.y, dtype=np.int64))

    (x_train, y_train), (x_val, y_val) = tensors(problem.train), tensors(problem.val)
    channels, height, width = problem.input_shape
    log = Path(args.log)

    def write(line: dict[str, Any]) -> None:
        with log.open("a") as f:
            f.write(json.dumps(line) + "\n")

    class Skip(nn.Module):
        """``block(x) + x``, through a 1x1 convolution when the widths differ."""

        def __init__(self, block: nn.Module, c_in: int, c_out: int) -> None:
            super().__init__()
            self.block = block
            self.project = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x) + self.project(x)

    def suggested(trial: optuna.Trial) -> nn.Module:
        layers: list[nn.Module] = []
        c, h, w = channels, height, width
        for i in range(trial.suggest_int("n_features", 1, 5)):
            op = trial.suggest_categorical(f"f{i}_op", ["conv2d", "maxpool2d", "dropout"])
            if op == "conv2d":
                filters = trial.suggest_int(f"f{i}_filters", 16, 68)
                kernel = trial.suggest_categorical(f"f{i}_kernel", [1, 3, 5])
                block = nn.Sequential(nn.Conv2d(c, filters, kernel, padding="same"), nn.ReLU())
                skip = trial.suggest_categorical(f"f{i}_skip", [False, True])
                layers.append(Skip(block, c, filters) if skip else block)
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
        return nn.Sequential(*layers, nn.Linear(features, problem.n_outputs))

    def handmade() -> nn.Module:
        h, w = height // 4 if height >= 4 else height, width // 4 if width >= 4 else width
        pool = nn.MaxPool2d(2) if min(height, width) >= 4 else nn.Identity()
        return nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding="same"), nn.ReLU(), pool,
            nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), copy.deepcopy(pool),
            nn.Flatten(), nn.Linear(64 * h * w, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, problem.n_outputs),
        )  # fmt: skip

    def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
        model.train()
        return float((logits.argmax(1) == y).float().mean())

    pruned = args.peer in ("optuna_tpe_median", "optuna_random_sha")
    best: dict[str, Any] = {"value": -math.inf}
    first_step = [False]

    def objective(trial: optuna.Trial) -> float:
        seed = args.seed * 100_003 + trial.number
        torch.manual_seed(seed)
        model = handmade() if args.peer == "handmade_cnn" else suggested(trial)
        n_params = sum(p.numel() for p in model.parameters())
        trial.set_user_attr("n_params", n_params)
        if n_params > max_params:
            return float("nan")  # a failed trial, as nasfw fails networks over max_params
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(seed)
        model.train()
        for epoch in range(epochs):
            permutation = torch.randperm(len(x_train), generator=order)
            for start in range(0, len(x_train), batch_size):
                index = permutation[start : start + batch_size]
                if len(index) < 2:
                    continue  # a batch of one adds nothing
                loss = loss_fn(model(x_train[index]), y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if not first_step[0]:
                    first_step[0] = True
                    write({"first_step": time.time()})
            if pruned and epoch < epochs - 1:
                trial.report(accuracy(model, x_val, y_val), epoch + 1)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        value = accuracy(model, x_val, y_val)
        if value > best["value"]:
            best.update(value=value, trial=trial.number, state=copy.deepcopy(model.state_dict()))
            best["model"] = model
        return value

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        write({"number": trial.number, "state": trial.state.name, "value": value,
               "finished": time.time()})  # fmt: skip

    samplers = optuna.samplers
    sampler = {
        "optuna_tpe": lambda: samplers.TPESampler(multivariate=True, seed=args.seed),
        "optuna_tpe_median": lambda: samplers.TPESampler(multivariate=True, seed=args.seed),
        "optuna_gp": lambda: samplers.GPSampler(seed=args.seed),
        "optuna_cmaes": lambda: samplers.CmaEsSampler(seed=args.seed),
        "optuna_random_sha": lambda: samplers.RandomSampler(seed=args.seed),
        "handmade_cnn": lambda: samplers.RandomSampler(seed=args.seed),
    }[args.peer]()
    pruner = {
        "optuna_tpe_median": optuna.pruners.MedianPruner,
        "optuna_random_sha": optuna.pruners.SuccessiveHalvingPruner,
    }.get(args.peer, optuna.pruners.NopPruner)()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    n_trials = 1 if args.peer == "handmade_cnn" else 1_000_000
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT: the budget's end
        study.optimize(objective, n_trials=n_trials, callbacks=[record])
    if "model" in best:
        model = best["model"]
        model.load_state_dict(best["state"])
        x_test, y_test = tensors(problem.test)
        write({"deliverable": accuracy(model, x_test, y_test), "trial": best["trial"]})
    return 0


# -- running the contenders ---------------------------------------------------------------------


def _origin(name: str, run_dir: Path, launched: float) -> Callable[[], float | None]:
    """The poller of the moment the contender's first training step happened: the peer's
    ``first_step`` line, or nasfw's (:func:`harness.cli_first_step`)."""
    if name not in PEERS:
        return harness.cli_first_step(run_dir / "run.log", launched)
    source = run_dir / "trials.jsonl"

    def origin() -> float | None:
        if not source.exists():
            return None
        for line in source.read_text(errors="replace").splitlines():
            if line.startswith('{"first_step"'):
                return float(json.loads(line)["first_step"])
        return None

    return origin


def peer_trials(log: Path) -> tuple[float | None, list[dict[str, Any]], dict[str, Any] | None]:
    """The first step, the trials and the deliverable a peer's log holds."""
    first = deliverable = None
    trials = []
    for line in log.read_text().splitlines() if log.exists() else []:
        t = json.loads(line)
        if "first_step" in t:
            first = t["first_step"]
        elif "deliverable" in t:
            deliverable = t
        else:
            ok = t["state"] == "COMPLETE" and t["value"] is not None and math.isfinite(t["value"])
            trials.append({"finished": t["finished"], "ok": ok, "value": t["value"],
                           "state": t["state"]})  # fmt: skip
    return first, trials, deliverable


def run_one(name: str, problem: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One contender on one problem and seed, or its raw result when already on disk."""
    run_dir = harness.run_dir_of(args.out, problem, seed, name)
    raw = run_dir.with_suffix(".json")
    if raw.exists() and not args.fresh:
        return json.loads(raw.read_text())
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    settings = problem_settings(problem, args.data_dir)
    if name in PEERS:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--_peer", name,
            "--problem-json", json.dumps(settings), "--seed", str(seed),
            "--threads", str(args.threads), "--log", str(run_dir / "trials.jsonl"),
        ]  # fmt: skip
    else:
        url = f"sqlite:///{run_dir / 'nasfw.db'}"
        pruned = any(o.startswith("pruner=") for o in NASFW[name])
        command = [
            sys.executable, "-m", "nasfw", *harness.problem_overrides(settings),
            "search_space=image_small", *NASFW[name], "launcher.workers=0", "tracking=none",
            f"train.curve_every={1 if pruned else 0}", f"train.threads={args.threads}",
            f"seed={seed}", f"storage.url={url}", "study_name=bench",
            f"export_dir={run_dir / 'best_model'}", *args.nasfw_override,
        ]  # fmt: skip
        harness.require_scoring(f"peers {problem} seed {seed} {name}", command)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    log = run_dir / "run.log"
    launched = time.time()
    run = harness.run_command(
        command, cwd=run_dir, log=log, env=env, cpu_budget=args.budget,
        cpu_origin=_origin(name, run_dir, launched), grace=GRACE_S,
        timeout=args.budget * 60 + GRACE_S,
    )  # fmt: skip
    what = f"peers {problem} seed {seed} {name} (exit code {run.returncode})"
    if name in PEERS:
        first, trials, deliverable = peer_trials(run_dir / "trials.jsonl")
        result = harness.judged(what, run, first, trials, args.budget, log)
    else:
        stored = (run_dir / "nasfw.db").exists()
        first, trials, records = harness.nasfw_trials(url, launched) if stored else (None, [], [])
        result = harness.judged(what, run, first, trials, args.budget, log)
        # The network nasfw would export from the trials within the budget, retrained as
        # export_best retrains it, scored on test.
        epochs = TRAIN_EPOCHS
        best = harness.best_full_budget(records, epochs, numbers=set(result["within"]))
        deliverable = best and {
            "deliverable": harness.retrain_on_test(best[0], settings, seed,
                                                   {"threads": args.threads}),
            "trial": best[0].number,
        }  # fmt: skip
    if not deliverable:
        raise harness.BenchmarkError(f"{what}: no network to deliver (no full-budget result)")
    doc = {
        "contender": name,
        "problem": problem,
        "seed": seed,
        "command": shlex.join(command),
        "returncode": run.returncode,
        "stopped_by_budget": run.stopped_by_budget,
        "wall_seconds": round(run.wall_seconds, 1),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "log": log,
        **{k: v for k, v in result.items() if k != "within"},
        "test": deliverable["deliverable"],
        "delivered_trial": deliverable["trial"],
    }
    harness.write_raw(raw, doc)
    return json.loads(raw.read_text())


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for seed, problem, name in harness.schedule(args.seeds, args.problems, args.contenders):
        print(f"[{problem} seed {seed}] {name}: {args.budget:.0f} CPU s", flush=True)
        run = run_one(name, problem, seed, args)
        print(f"  {run['trials']} trials, best {run['best']}, test {run['test']:.4f}",
              flush=True)  # fmt: skip
        runs.append(run)
    return runs


# -- report -------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per problem: each contender's final best and deliverable over seeds, each peer's target
    (its median final best) and every contender's median CPU seconds to it, and the ratios of
    the nasfw configurations against each peer."""
    out: dict[str, Any] = {}
    for problem, of in harness.runs_by_problem("peers", runs, "contender", names):
        rows: dict[str, Any] = {}
        for name, mine in of.items():
            rows[name] = {
                "seeds": len(mine),
                "trials": spread.describe([r["trials"] for r in mine]).to_dict(),
                "best": spread.describe([r["best"] for r in mine]).to_dict(),
                "test": spread.describe([r["test"] for r in mine]).to_dict(),
            }
        targets: dict[str, Any] = {}
        for peer in [n for n in names if n in PEERS]:
            target = rows[peer]["best"]["median"]
            times = {
                n: [harness.time_to(r["curve"], target) or math.inf for r in of[n]] for n in names
            }
            entry: dict[str, Any] = {
                "target": target,
                "peer_seconds": spread.median_time(times[peer]),
                "nasfw": {},
            }
            for n in [n for n in names if n in NASFW]:
                entry["nasfw"][n] = harness.time_ratio(times[n], times[peer])
            targets[peer] = entry
        worst = {
            n: max((t["nasfw"][n]["ratio"] for t in targets.values()), default=math.inf)
            for n in names
            if n in NASFW
        }
        best_nasfw = min(worst, key=lambda n: worst[n]) if worst else None
        out[problem] = {
            "contenders": rows,
            "targets": targets,
            "best_nasfw": best_nasfw,
            "best_nasfw_ratio": worst[best_nasfw] if best_nasfw else math.inf,
        }
    return out


_num = harness.finite_text


def markdown(doc: dict[str, Any], verdicts: dict[str, bool]) -> str:
    p = doc["protocol"]
    lines = [
        "# nasfw against the peers a user would write",
        "",
        f"{doc['machine']['description']}; {p['budget']:.0f} CPU seconds per contender from "
        f"its first training step, {p['seeds']} seeds, {p['threads']} torch thread(s) per "
        f"process, one training process each. Figures: median [95 % bootstrap CI] (n, range).",
        "",
        f"Command: `{doc['command']}`",
    ]
    for problem, s in doc["summary"].items():
        lines += [
            "", f"## {problem}", "",
            "| contender | trials | best validation accuracy | deliverable: test accuracy |",
            "|---|---|---|---|",
        ]  # fmt: skip
        for name, r in s["contenders"].items():
            label = f"peer {name}" if name in PEERS else f"nasfw {name}"
            lines.append(
                f"| {label} | {r['trials']['median']:.0f} | "
                f"{spread.Spread(**r['best']).text(4)} | {spread.Spread(**r['test']).text(4)} |"
            )
        nasfw = [n for n in s["contenders"] if n in NASFW]
        lines += [
            "",
            "Median CPU seconds to each peer's median final best (the peer's own in the first "
            "column) and each nasfw configuration's ratio to it [bootstrap interval], "
            "never = not reached by half the seeds:",
            "",
            "| peer (target) | peer's s | " + " | ".join(f"nasfw {n}" for n in nasfw) + " |",
            "|---|---:|" + "---:|" * len(nasfw),
        ]
        for peer, t in s["targets"].items():
            cells = [
                f"{_num(t['nasfw'][n]['ratio'], 2)} [{_num(t['nasfw'][n]['interval'][0], 2)}, "
                f"{_num(t['nasfw'][n]['interval'][1], 2)}]"
                for n in nasfw
            ]
            lines.append(f"| {peer} ({t['target']:.4f}) | {_num(t['peer_seconds'])} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines += [
            "",
            f"Best nasfw configuration here: {s['best_nasfw']}, at worst "
            f"{_num(s['best_nasfw_ratio'], 2)} of a peer's time (target <= {TARGET_RATIO}).",
        ]
    lines += ["", "## Criteria (declared before the run)", ""]
    lines += [f"- {c.claim}: **{'met' if verdicts[c.name] else 'missed'}**" for c in CRITERIA]
    return "\n".join(lines)


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Per problem: each contender's median best-so-far over seeds against CPU seconds, with
    the range over seeds as a band (peers dashed)."""
    paths = []
    for problem in doc["summary"]:
        curves = {
            name: [r["curve"] for r in doc["runs"]
                   if r["problem"] == problem and r["contender"] == name]
            for name in doc["protocol"]["contenders"]
        }  # fmt: skip
        paths.append(harness.plot_best_so_far(
            curves, doc["protocol"]["budget"], out / f"peers_{problem}.png",
            title=f"{problem}: nasfw (solid) against the peers (dashed)", dashed=PEERS,
        ))  # fmt: skip
    return paths


def log_to_mlflow(doc: dict[str, Any], out: Path, uri: str | None, artifacts: list[Path]) -> str:
    metrics: dict[str, float | None] = {}
    for problem, s in doc["summary"].items():
        for name, r in s["contenders"].items():
            key = f"{problem}.{name.replace('+', '_')}"  # MLflow takes no "+" in names
            metrics[f"{key}.best_median"] = r["best"]["median"]
            metrics[f"{key}.test_median"] = r["test"]["median"]
        ratio = s["best_nasfw_ratio"]
        metrics[f"{problem}.best_nasfw_ratio"] = ratio if math.isfinite(ratio) else None
    return harness.log_report(
        doc, out, uri, benchmark="peers", metrics=metrics, artifacts=artifacts,
        run_name="peers-quick" if doc["protocol"]["quick"] else "peers",
    )  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--budget", type=float, default=150.0,
                        help="CPU seconds per contender from its first training step")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers")
    parser.add_argument("--contenders", nargs="+", default=CONTENDERS, choices=CONTENDERS)
    parser.add_argument(
        "--nasfw-override", action="append", default=[], metavar="KEY=VALUE",
        help="one more CLI override for every nasfw contender (repeatable)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="digits only, 12 CPU s per contender")  # fmt: skip
    harness.add_run_options(parser)
    # A peer's own process (run by this script).
    parser.add_argument("--_peer", dest="peer", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--problem-json", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.budget = ["digits"], min(args.budget, 12.0)
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer:
        return peer_worker(args)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.report:
        for problem in args.problems:
            settings = problem_settings(problem, args.data_dir)
            if "data_dir" in settings and not Path(settings["data_dir"]).is_dir():
                raise SystemExit(f"peers: {settings['data_dir']} not found (--data-dir)")
    if not set(args.contenders) & set(PEERS) or not set(args.contenders) & set(NASFW):
        raise SystemExit("peers: --contenders needs at least one peer and one nasfw tuner")
    args.out.mkdir(parents=True, exist_ok=True)
    protocol = {
        "problems": args.problems,
        "budget": args.budget,
        "budget_unit": "CPU seconds of the process tree from the first training step",
        "seeds": args.seeds,
        "threads": args.threads,
        "contenders": args.contenders,
        "nasfw_overrides": args.nasfw_override,
        "fashion_mnist_train_images": FASHION_TRAIN,
        "fashion_mnist_val_fraction": FASHION_VAL_FRACTION,
        "quick": args.quick,
    }
    if args.report:  # from the raw runs alone
        protocol = json.loads((args.out / "peers.json").read_text())["protocol"]
        args.contenders, args.problems = protocol["contenders"], protocol["problems"]
        runs = [
            json.loads(
                harness.run_dir_of(args.out, problem, seed, name).with_suffix(".json").read_text()
            )
            for seed in range(protocol["seeds"])
            for problem in args.problems
            for name in args.contenders
        ]
        command = json.loads((args.out / "peers.json").read_text())["command"]
    else:
        harness.declare(CRITERIA, args.out)
        command = harness.invocation("peers.py", argv)
        runs = run_all(args)
    doc = {
        "protocol": protocol,
        "command": command,
        "machine": harness.machine(),
        **harness.git_state(),
        "summary": summarize(runs, args.contenders),
        "runs": runs,
    }
    verdicts = harness.judge(CRITERIA, {"problems": doc["summary"]})
    doc["criteria"] = verdicts
    text = markdown(doc, verdicts)
    (args.out / "peers.md").write_text(text + "\n")
    harness.write_raw(args.out / "peers.json", {k: v for k, v in doc.items() if k != "runs"})
    paths = plots(doc, args.out)
    print(text)
    if not args.no_mlflow:
        uri = args.tracking_uri or harness.default_tracking_uri(args.out)
        log_to_mlflow(doc, args.out, uri, [args.out / "peers.md", args.out / "peers.json", *paths])
    return 0


if __name__ == "__main__":
    sys.exit(main())
