#!/usr/bin/env python
"""Framework overhead and worker throughput through the real CLI (issue #16, parts 1 and 2).

Every configuration is one ``python -m nasfw`` run (a subprocess, its own SQLite storage),
random search (``tuner.batch_size=8``), the configurations interleaved and repeated
``--repeats`` times. Read back from the study:

- *evaluation overhead* = workers x sum of the generations' wall seconds / sum of the
  trials' ``train_seconds`` (the issue's definition, for one worker: everything but the
  training loop itself — the build and size check, validation scoring, transfer to workers,
  Optuna writes, hooks, idle workers — counts as overhead); *beside scoring*: the same over
  training plus validation scoring;
- *CLI / training* = the whole process's wall seconds / sum of ``train_seconds`` (start-up,
  problem load, MLflow, the export of the best network included);
- *throughput* = evaluations per second of the generations' wall time, and *worker
  utilisation* = the evaluations' busy seconds / (workers x the generations' wall seconds).

Configurations (``--quick`` shrinks them to a smoke test):

| name | what |
|---|---|
| ``small-driver`` | iris, MLPs, 1 epoch (~0.05 s networks), evaluations in the driver |
| ``large-driver`` | digits, ``image_small``, 3 epochs (~0.5 s networks), in the driver |
| ``large-1worker`` | the same in one worker process |
| ``large-1worker-mlflow`` | the same with MLflow tracking (a fresh SQLite store) |
| ``large-2workers`` | two worker processes, each one thread, generation by generation |
| ``large-2workers-async`` | the same with ``tuner.asynchronous=true`` |
| ``large-1worker-1thread`` | the 2-worker runs' baseline (``train.threads=1``) |
| ``second-local-2workers`` | digits, ``image_small``, 6 epochs (~1 s networks), 2 local workers |
| ``second-ray-local`` | the same on ``launcher=ray``'s own Ray, 2 at once |
| ``second-ray-cluster`` | the same on a two-node Ray cluster started for the run (issue #29) |

The ``second-*`` rows are paired: the same 64 networks (random search, one seed) in each
repeat. Against the local launcher of the same repeat, each Ray row gives its evaluations per
second and its extra wall time per evaluation; the table shows the median and range over the
repeats. Success criterion of issue #29, fixed before any run: ``second-ray-local`` takes at most
10 % more wall time per evaluation than ``second-local-2workers`` (median over the repeats,
all generations counted, the workers' start included).

Writes ``throughput.json`` and ``throughput.md`` to ``--out``.

    .venv/bin/python benchmarks/throughput.py            # ~12 min on 2 cores
    .venv/bin/python benchmarks/throughput.py --quick    # ~1 min
    .venv/bin/python benchmarks/throughput.py --ray --repeats 3   # the second-* rows, ~15 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SMALL = ["problem=iris", "search_space=tabular_mlp", "train.epochs=1"]
# Networks that train ~1 s: where issue #29 sets Ray's allowance (<= 10 % per evaluation).
SECOND = [
    "problem=digits",
    "search_space=image_small",
    "train.epochs=6",
    "train.threads=1",
    "tracking=none",
]
# Filled with the address of the cluster main() starts when a configuration names it.
CLUSTER = "{ray_cluster}"
# What each Ray row is compared with, and the criterion: fixed before any run.
RAY_BASELINE = "second-local-2workers"
RAY_ROWS = ("second-ray-local", "second-ray-cluster")
RAY_CRITERION = ("second-ray-local", 0.10)  # at most 10 % more wall time per evaluation
LARGE = ["problem=digits", "search_space=image_small", "train.epochs=3"]
CONFIGS: dict[str, list[str]] = {
    "small-driver": [*SMALL, "launcher.workers=0", "tracking=none"],
    "large-driver": [*LARGE, "launcher.workers=0", "tracking=none"],
    "large-1worker": [*LARGE, "launcher.workers=1", "tracking=none"],
    "large-1worker-mlflow": [*LARGE, "launcher.workers=1"],
    "large-1worker-1thread": [*LARGE, "launcher.workers=1", "train.threads=1", "tracking=none"],
    "large-2workers": [*LARGE, "launcher.workers=2", "train.threads=1", "tracking=none"],
    "large-2workers-async": [
        *LARGE,
        "launcher.workers=2",
        "train.threads=1",
        "tracking=none",
        "tuner.asynchronous=true",
    ],
    "second-local-2workers": [*SECOND, "launcher.workers=2"],
    "second-ray-local": [*SECOND, "launcher=ray", "launcher.max_concurrent=2"],
    "second-ray-cluster": [*SECOND, "launcher=ray", f"launcher.address={CLUSTER}"],
}


def workers_of(overrides: list[str]) -> int:
    """Evaluations at once in a configuration (the cluster has one CPU on each of 2 nodes)."""
    two = ("launcher.workers=2", "launcher.max_concurrent=2", f"launcher.address={CLUSTER}")
    return 2 if any(o in overrides for o in two) else 1


def run(
    name: str, overrides: list[str], trials: int, work: Path, cluster: dict[str, str] | None = None
) -> dict[str, Any]:
    """One CLI run of configuration ``name``; its figures from the study."""
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    url = f"sqlite:///{folder / 'nasfw.db'}"
    env = {"PYTHONPATH": str(REPO)}
    workers = workers_of(overrides)  # before the cluster's address replaces its placeholder
    if any(CLUSTER in o for o in overrides):
        if cluster is None:
            raise harness.BenchmarkError(f"{name}: no Ray cluster was started for it")
        overrides = [o.replace(CLUSTER, cluster["address"]) for o in overrides]
        env.update({k: cluster[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
    args = [
        *overrides,
        "tuner=random",
        f"tuner.n_trials={trials}",
        "tuner.batch_size=8",
        "study_name=throughput",
        f"storage.url={url}",
        f"storage.artifacts={folder / 'artifacts'}",
    ]
    if "tracking=none" not in overrides:
        args.append(f"tracking.tracking_uri=sqlite:///{folder / 'mlflow.db'}")
    found = harness.run_cli(args, cwd=folder, capture=True, env=env)
    found.check(name)
    wall = found.wall_seconds
    ledger = harness.open_ledger(url, "throughput")
    records = ledger.records()
    harness.require_trials(name, records)
    generations = ledger.generation_seconds()
    train = sum(r.result.train_seconds for r in records)
    busy = sum(
        r.result.finished - r.result.started
        for r in records
        if r.result.started is not None and r.result.finished is not None
    )
    score = sum(float(r.result.extra.get("score_seconds") or 0.0) for r in records)
    evaluating = sum(generations.values())
    # After generation 0, whose wall time includes starting the worker processes.
    steady = [r for r in records if r.generation > 0]
    steady_seconds = sum(s for g, s in generations.items() if g > 0)
    return with_span(
        {
            "config": name,
            "workers": workers,
            "trials": len(records),
            "cli_seconds": wall,
            "generation_seconds": evaluating,
            "train_seconds": train,
            "mean_train_seconds": train / max(1, len(records)),
            # Worker-seconds per training second: with several workers, idle ones count too.
            "overhead": workers * evaluating / train,
            # Validation scoring is work every search needs: the overhead beside it.
            "overhead_beside_scoring": workers * evaluating / (train + score),
            "cli_over_training": wall / train,
            "throughput": len(records) / evaluating,
            "throughput_after_start": len(steady) / steady_seconds if steady_seconds else None,
            "utilisation": busy / (workers * evaluating),
            "generation_seconds_each": {str(g): s for g, s in sorted(generations.items())},
            # The raw results, trial by trial (times in seconds since the epoch; node: Ray's).
            "per_trial": [
                {
                    "generation": r.generation,
                    "index": r.index,
                    "graph": r.graph.hash,
                    "metric": r.result.metric,
                    "train_seconds": r.result.train_seconds,
                    "started": r.result.started,
                    "finished": r.result.finished,
                    "node": r.result.extra.get("ray_node"),
                }
                for r in sorted(records, key=lambda r: (r.generation, r.index))
            ],
        }
    )


def with_span(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its figures over the *evaluating span*, from the first evaluation's start
    to the last one's end (the trials' own timestamps): ``start_seconds`` is the rest of the
    generations' wall time (the workers' start before the first evaluation, generation ends
    after the last), ``throughput_in_span`` and ``overhead_in_span`` the figures without it.

    Unlike "after generation 0", this means the same for the asynchronous loop, whose
    "generations" are blocks of results in the order they arrive (its generation 0 holds the
    workers' start and the first results, not a generation's networks).
    """
    timed = [t for t in row["per_trial"] if t["started"] is not None and t["finished"] is not None]
    if not timed:
        return row
    span = max(t["finished"] for t in timed) - min(t["started"] for t in timed)
    train = sum(t["train_seconds"] or 0.0 for t in row["per_trial"])
    return {
        **row,
        "span_seconds": span,
        "start_seconds": row["generation_seconds"] - span,
        "throughput_in_span": len(row["per_trial"]) / span,
        "overhead_in_span": row["workers"] * span / train,
    }


def rework(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its worker-dependent figures (overhead, utilisation) for the workers its
    configuration has. Rows written before runs recorded ``workers`` are read for the count
    their figures were computed with (busy seconds / (utilisation x generation seconds), all
    stored): the ``second-ray-cluster`` rows of the first Ray run were computed for 1 worker."""
    correct = workers_of(CONFIGS[row["config"]])
    used = row.get("workers")
    if used is None:
        busy = sum(
            t["finished"] - t["started"]
            for t in row.get("per_trial", [])
            if t["started"] is not None and t["finished"] is not None
        )
        used = round(busy / (row["utilisation"] * row["generation_seconds"]))
    scale = correct / used
    return with_span(
        {
            **row,
            "workers": correct,
            "overhead": row["overhead"] * scale,
            "overhead_beside_scoring": row["overhead_beside_scoring"] * scale,
            "utilisation": row["utilisation"] / scale,
        }
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median of each figure per configuration (over the repeats)."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        out[name] = {
            k: statistics.median(r[k] for r in mine)
            for k in mine[0]
            if all(isinstance(r[k], int | float) for r in mine)
        }
    return out


def ray_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Ray row against the local launcher of the same repeat (paired): evaluations per
    second (ratio) and extra wall time per evaluation (``local / ray - 1``), over all
    generations and after generation 0 (the workers' start); per repeat, then median and range.
    """
    out: dict[str, dict[str, Any]] = {}
    base = {r["repeat"]: r for r in rows if r["config"] == RAY_BASELINE}
    for name in RAY_ROWS:
        pairs = [
            (r, base[r["repeat"]]) for r in rows if r["config"] == name and r["repeat"] in base
        ]
        if not pairs:
            continue
        figures: dict[str, list[float]] = {
            "throughput_ratio": [r["throughput"] / b["throughput"] for r, b in pairs],
            "extra_wall_per_evaluation": [b["throughput"] / r["throughput"] - 1 for r, b in pairs],
        }
        if all(r["throughput_after_start"] and b["throughput_after_start"] for r, b in pairs):
            figures["extra_wall_after_start"] = [
                b["throughput_after_start"] / r["throughput_after_start"] - 1 for r, b in pairs
            ]
        out[name] = {
            k: {"per_repeat": v, "median": statistics.median(v), "min": min(v), "max": max(v)}
            for k, v in figures.items()
        }
    name, allowance = RAY_CRITERION
    if name in out:
        extra = out[name]["extra_wall_per_evaluation"]["median"]
        out[name]["criterion"] = {"allowance": allowance, "met": extra <= allowance}
    return out


def table(
    summary: dict[str, dict[str, float]], repeats: int, ray: dict[str, dict[str, Any]] | None = None
) -> str:
    lines = [
        f"| {platform.machine()}, {os.cpu_count()} cores, median of {repeats} | s / network "
        "| evaluation overhead | … beside scoring | CLI / training | evaluations / s "
        "| worker utilisation | start s | overhead in span | evaluations / s in span |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['mean_train_seconds']:.3f} | {s['overhead']:.3f} "
            f"| {s['overhead_beside_scoring']:.3f} "
            f"| {s['cli_over_training']:.2f} | {s['throughput']:.2f} | {s['utilisation']:.0%} "
            f"| {s['start_seconds']:.2f} | {s['overhead_in_span']:.3f} "
            f"| {s['throughput_in_span']:.2f} |"
        )
    ratios = {}
    base = summary.get("large-1worker-1thread")
    for name in ("large-2workers", "large-2workers-async"):
        if base and name in summary:
            ratios[name] = [summary[name]["throughput"] / base["throughput"]]
            ratios[name].append(summary[name]["throughput_in_span"] / base["throughput_in_span"])
    if ratios:
        lines.append("")
        lines += [
            f"- {name} vs 1 worker (1 thread each): {ratio[0]:.2f}x evaluations per second, "
            f"{ratio[1]:.2f}x in the evaluating span (the workers' start left out)"
            for name, ratio in ratios.items()
        ]
    if ray:
        lines += [
            "",
            f"| against {RAY_BASELINE}, paired, median (range) of {repeats} "
            "| evaluations / s | wall time per evaluation | … after generation 0 |",
            "|---|---:|---:|---:|",
        ]

        def cell(figure: dict[str, Any] | None, percent: bool) -> str:
            if figure is None:
                return "—"
            if percent:
                return f"{figure['median']:+.1%} ({figure['min']:+.1%} … {figure['max']:+.1%})"
            return f"{figure['median']:.2f}x ({figure['min']:.2f} … {figure['max']:.2f})"

        for name, figures in ray.items():
            lines.append(
                f"| {name} | {cell(figures['throughput_ratio'], False)} "
                f"| {cell(figures['extra_wall_per_evaluation'], True)} "
                f"| {cell(figures.get('extra_wall_after_start'), True)} |"
            )
        for name, figures in ray.items():
            if "criterion" in figures:
                verdict = "met" if figures["criterion"]["met"] else "NOT met"
                lines.append(
                    f"\nCriterion (#29): {name} at most "
                    f"{figures['criterion']['allowance']:.0%} more wall time per evaluation: "
                    f"{verdict}."
                )
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def ray_cluster(root: Path) -> Iterator[dict[str, str]]:
    """The two-node Ray cluster of scripts/services.py for the ``second-ray-cluster`` row."""
    script = [sys.executable, str(REPO / "scripts" / "services.py")]
    out = subprocess.run(
        [*script, "start", "ray", "--dir", str(root)], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise harness.BenchmarkError(f"the Ray cluster did not start: {out.stderr.strip()}")
    try:
        yield dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    finally:
        subprocess.run([*script, "stop", "ray", "--dir", str(root)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="networks per run (64)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "throughput")
    parser.add_argument("--quick", action="store_true", help="8 networks, 3 configurations")
    parser.add_argument(
        "--ray", action="store_true", help="the second-* configurations: Ray against local"
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="no runs: the tables again from this throughput.json (to --out)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; known: {list(CONFIGS)}")
    if args.ray:
        names = [RAY_BASELINE, *RAY_ROWS]
    if args.quick:
        args.trials = 8
        names = ["small-driver", "large-1worker-1thread", "large-2workers-async"]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        earlier = json.loads(args.report.read_text())
        return report(
            [rework(r) for r in earlier["rows"]], earlier["trials"], earlier["repeats"], args.out
        )
    rows = []
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory())
        cluster = None
        if any(CLUSTER in o for name in names for o in CONFIGS[name]):
            cluster = stack.enter_context(ray_cluster(Path(work) / "ray"))
        for repeat in range(args.repeats):
            # Interleaved (and the order reversed every other repeat): load from other
            # processes hits every configuration alike.
            for name in names if repeat % 2 == 0 else names[::-1]:
                row = run(name, CONFIGS[name], args.trials, Path(work), cluster)
                rows.append({**row, "repeat": repeat})
                print(
                    f"{name}: overhead {row['overhead']:.3f}, CLI/training "
                    f"{row['cli_over_training']:.2f}, {row['throughput']:.2f} evaluations/s, "
                    f"utilisation {row['utilisation']:.0%}",
                    flush=True,
                )
    return report(rows, args.trials, args.repeats, args.out)


def report(rows: list[dict[str, Any]], trials: int, repeats: int, out: Path) -> int:
    """The tables of ``rows``: printed, and written to ``out`` with the rows."""
    summary = summarise(rows)
    ray = ray_ratios(rows)
    markdown = table(summary, repeats, ray)
    print("\n" + markdown)
    doc = {
        "trials": trials,
        "repeats": repeats,
        "rows": rows,
        "summary": summary,
        "ray": ray,
    }
    (out / "throughput.json").write_text(json.dumps(doc, indent=2))
    (out / "throughput.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
