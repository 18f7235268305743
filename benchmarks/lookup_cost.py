#!/usr/bin/env python
"""nasfw's own cost per evaluation (issue #26, part 4's target): with a lookup evaluation
(NAS-Bench-201 on CIFAR-10, ~50 µs a lookup), everything a search spends is the framework's
machinery, so its wall time per evaluation is what a user pays per trial. Measured against
plain Optuna's per-trial time on the same storage.

**Protocol.** In this one process, ``--evals`` (1,000) evaluations per search, tracking off,
``--repeats`` (3) repeats, the configurations interleaved (load from other processes on the
machine hits each alike), medians reported:

- ``optuna``: ``optuna.create_study(storage=..., sampler=RandomSampler(seed))`` and
  ``study.optimize(objective, n_trials)``, the objective suggesting the table's 6 categorical
  parameters and looking the cell up (the package called directly): Optuna's own per-trial
  cost plus the lookup;
- ``nasfw``: ``nasfw.search.run_search`` (the CLI's entry point, composed config) with
  ``tuner=random tuner.batch_size=B launcher.workers=0 tracking=none``: B = 1 (one generation
  per evaluation: every per-generation step paid per evaluation) and B = 4 (the default);
  *loop*: the search's generations (``nasfw:generation_seconds``: asking, evaluating, storing,
  telling, the generation's end), *whole*: ``run_search`` from the composed config to its
  return (set-up and the export of the best network included);

each on ``memory`` (Optuna's ``InMemoryStorage``) and ``sqlite`` (a fresh file per search).

**Success criterion, written before the run** (the issue's target): nasfw's loop per
evaluation ≤ 2 x Optuna's per trial, on each storage, for B = 1 and B = 4.

    .venv/bin/python benchmarks/lookup_cost.py                     # ~3 min on 2 cores
    .venv/bin/python benchmarks/lookup_cost.py --evals 100 --repeats 1 --no-mlflow   # smoke
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

HERE = Path(__file__).resolve().parent
TABLE = "nb201_cifar10"
TARGET = 2.0
BATCHES = (1, 4)
STORAGES = ("memory", "sqlite")


def optuna_search(storage: str, tmp: Path, evals: int, seed: int) -> float:
    """Seconds of plain Optuna's ``optimize`` over ``evals`` lookups."""
    import optuna

    from nasfw.config import ProblemConfig
    from nasfw.registry import registry

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = registry().get("problems", TABLE)(ProblemConfig(name=TABLE)).table
    bench = table.bench
    bench.reseed(seed)
    url = None if storage == "memory" else f"sqlite:///{tmp / f'optuna-{seed}.db'}"
    study = optuna.create_study(
        storage=url, sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize"
    )

    def objective(trial: optuna.Trial) -> float:
        params = {n: trial.suggest_categorical(n, c) for n, c in bench.search_space.items()}
        return float(bench(params)["val_acc"])

    started = time.perf_counter()
    study.optimize(objective, n_trials=evals)
    seconds = time.perf_counter() - started
    harness.require_trials("optuna", study.trials)
    return seconds


def nasfw_search(storage: str, tmp: Path, evals: int, seed: int, batch: int) -> dict[str, float]:
    """Seconds of nasfw's search over ``evals`` lookups: its generations, and the whole
    ``run_search``."""
    import optuna
    from rich.console import Console

    from nasfw.compose import compose
    from nasfw.search import run_search

    url = "memory://" if storage == "memory" else f"sqlite:///{tmp / f'nasfw-{seed}-{batch}.db'}"
    cfg = compose(
        f"problem={TABLE}",
        "search_space=nasbench201",
        "tuner=random",
        f"tuner.n_trials={evals}",
        f"tuner.batch_size={batch}",
        f"seed={seed}",
        f"study_name=cost-{storage}-{batch}-{seed}",
        f"storage.url={url}",
        f"storage.artifacts={tmp / 'artifacts'}",
        "tracking=none",
        "launcher.workers=0",
    )
    started = time.perf_counter()
    context = run_search(cfg, tmp / "out", Console(file=io.StringIO(), width=100))
    whole = time.perf_counter() - started
    harness.require_trials("nasfw", context.history)
    if storage == "memory":  # the process's one InMemoryStorage: drop this study
        optuna.delete_study(study_name=context.study.study_name, storage=context.study._storage)
    return {"loop": sum(context.generation_seconds.values()), "whole": whole}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evals", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lookup_cost")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # Warm-up: imports, the table's pickle and Hydra's first composition are not per trial.
    with tempfile.TemporaryDirectory() as tmp:
        optuna_search("memory", Path(tmp), 10, 0)
        nasfw_search("memory", Path(tmp), 10, 0, 1)

    samples: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for storage in STORAGES:
            with tempfile.TemporaryDirectory() as tmp:
                seed = 1 + repeat
                samples.setdefault(f"optuna/{storage}", []).append(
                    optuna_search(storage, Path(tmp), args.evals, seed)
                )
                for batch in BATCHES:
                    found = nasfw_search(storage, Path(tmp), args.evals, seed, batch)
                    for part, seconds in found.items():
                        samples.setdefault(f"nasfw-b{batch}-{part}/{storage}", []).append(seconds)
        print(f"repeat {repeat + 1} of {args.repeats} done", flush=True)

    per_eval = {k: 1000 * statistics.median(v) / args.evals for k, v in samples.items()}
    rows, met = [], True
    for storage in STORAGES:
        reference = per_eval[f"optuna/{storage}"]
        for batch in BATCHES:
            loop = per_eval[f"nasfw-b{batch}-loop/{storage}"]
            whole = per_eval[f"nasfw-b{batch}-whole/{storage}"]
            ratio = loop / reference
            met &= ratio <= TARGET
            rows.append(
                {
                    "storage": storage,
                    "batch_size": batch,
                    "optuna_ms": reference,
                    "nasfw_loop_ms": loop,
                    "nasfw_whole_ms": whole,
                    "ratio": ratio,
                    "met": ratio <= TARGET,
                }
            )
    machine = harness.machine()
    lines = [
        f"{args.evals} lookups ({TABLE}) per search, tracking off, median of {args.repeats} "
        f"repeats; machine: {machine['description']}, shared with other jobs (ratios measured "
        "side by side). Milliseconds per evaluation:",
        "",
        "| storage | nasfw batch_size | plain Optuna | nasfw loop | nasfw whole run_search "
        "| loop / Optuna | ≤ 2 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['storage']} | {r['batch_size']} | {r['optuna_ms']:.2f} | "
            f"{r['nasfw_loop_ms']:.2f} | {r['nasfw_whole_ms']:.2f} | {r['ratio']:.2f} | "
            f"{'yes' if r['met'] else 'no'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    doc = {
        "evals": args.evals,
        "repeats": args.repeats,
        "samples_seconds": samples,
        "rows": rows,
        "target": TARGET,
        "met": met,
        "machine": machine,
        **harness.git_state(),
        "invocation": harness.invocation("lookup_cost.py", argv),
    }
    (out / "lookup_cost.json").write_text(json.dumps(doc, indent=1))
    (out / "lookup_cost.md").write_text(text)
    if not args.no_mlflow:
        harness.log_to_mlflow(
            out,
            args.tracking_uri,
            benchmark="lookup_cost",
            params={"evals": args.evals, "repeats": args.repeats, "table": TABLE},
            tags={"machine": machine["description"]},
            metrics={
                "met": float(met),
                **{
                    f"{r['storage']}.b{r['batch_size']}.{k}": r[k]
                    for r in rows
                    for k in ("optuna_ms", "nasfw_loop_ms", "nasfw_whole_ms", "ratio")
                },
            },
            artifacts=[out / "lookup_cost.json", out / "lookup_cost.md"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
