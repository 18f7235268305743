#!/usr/bin/env python
"""Transfer warm start on the tabular suite, leave one problem out (issue #28, part 6, first
increment): cold searches against ``minibench.warm_start=true`` for evolution and TPE on the
3 NAS-Bench-201 and 4 FCNet tables, judged by the TRUE value of the incumbent.

**DB.** One mini-benchmark DB of the 7 tables is built once (``mode=minibench``, ``tuner=evolution
tuner.n_trials=100``, the family's 24 reference networks scored on each; the build's own seed
0). For each held-out table, a copy without it (``BestModelDB.remove``) is the DB its warm
arms read: the held-out problem is absent from the DB, the normal case.

**Arms** (``--evals`` evaluations each, seeds ``0 .. --seeds-1``, in this process through
``nasfw.search.run_search`` with ``storage=memory tracking=none``, one proposal at a time):
``cold_evolution`` / ``warm_evolution`` (``tuner=evolution tuner.population_size=10
tuner.sample_size=3``), ``cold_tpe`` / ``warm_tpe`` (``tuner=tpe``, nasfw's defaults). The warm
arms add ``minibench.warm_start=true minibench.donors=2``; their probe (the 24 reference
networks, generation -1) COUNTS in their evaluations: a warm arm's first 24 evaluations are
the probe, then its seeded tuner.

The incumbent, its true value (mean over the table's training seeds; NB201 accuracy in
percent, FCNet MSE) and the curves are those of ``benchmarks/tabular.py`` (its helpers).

**Success criterion, written before the run** (the issue's target): at a quarter of the budget
(``--evals // 4`` evaluations), the better warm arm's mean true value is at least as good as
the better cold arm's at the full budget, on at least 2/3 of the held-out tables. Also
reported, not judged: per tuner and checkpoint (10, 25, 50, 100, 200), the paired two-sided
Wilcoxon signed-rank test of warm vs cold over seeds (zero differences dropped).

**Files** (``--out``, default ``benchmarks/results/transfer``; relative paths):
``raw/<table>/<arm>/seed<k>.json`` (a present file is skipped: a run resumes), ``db/`` (the
DBs), ``transfer.json``, ``transfer.md``; ``--report`` rebuilds them from the raw files; an
arm without its raw results fails the run (exit 1).

    .venv/bin/python benchmarks/transfer.py                     # the full run, resumable
    .venv/bin/python benchmarks/transfer.py --report --docs docs/benchmarks-transfer.md
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import tabular
from tabular import CHECKPOINTS, TABLES, columns, incumbent_curve, maximize, mean_se

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "transfer"
TUNERS = {
    "evolution": ["tuner=evolution", "tuner.population_size=10", "tuner.sample_size=3"],
    "tpe": ["tuner=tpe"],
}
ARMS = [f"{kind}_{t}" for t in TUNERS for kind in ("cold", "warm")]
WARM = ["minibench.warm_start=true", "minibench.donors=2"]
DB_BUILD = ["tuner=evolution", "tuner.n_trials=100", "tuner.batch_size=4"]
SHARE = 2 / 3


def criteria(evals: int) -> list[harness.Criterion]:
    quarter = evals // 4
    return [
        harness.Criterion(
            "quarter_budget",
            f"the better warm arm's mean true value at {quarter} evaluations is at least as good "
            f"as the better cold arm's at {evals}, on >= 2/3 of the held-out tables",
            lambda f: f["quarter_share"] >= SHARE,
        )
    ]


def build_db(out: Path, tables: Sequence[str]) -> Path:
    """The DB of every table (built once; rerun: the build skips what it holds)."""
    from rich.console import Console

    from nasfw.compose import compose
    from nasfw.minibench.build import build_db as build

    path = out / "db" / "all.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = compose(
        "mode=minibench",
        f"minibench.problems=[{','.join(tables)}]",
        f"minibench.db={path}",
        *DB_BUILD,
        "storage=memory",
        "tracking=none",
        "launcher.workers=0",
    )
    with tempfile.TemporaryDirectory() as tmp:
        build(cfg, Path(tmp), Console(file=io.StringIO(), width=100))
    return path


def held_out_db(out: Path, full: Path, table: str) -> Path:
    from nasfw.minibench.db import BestModelDB

    path = out / "db" / f"without_{table}.db"
    if not path.exists():
        shutil.copy(full, path)
        db = BestModelDB(str(path), must_exist=True)
        db.remove(table)
        db.close()
    return path


def run_arm(table: str, arm: str, seed: int, evals: int, db: Path) -> dict[str, Any]:
    """One search; the warm arm's probe counts in its ``evals`` evaluations."""
    kind, tuner = arm.split("_", 1)
    extra = [*WARM, f"minibench.db={db}"] if kind == "warm" else []
    saved = tabular.NASFW_ARMS.get(arm)
    tabular.NASFW_ARMS[arm] = [*TUNERS[tuner], "tuner.batch_size=1", *extra]
    try:
        found = tabular.run_nasfw(table, arm, seed, evals)
    finally:
        if saved is None:
            del tabular.NASFW_ARMS[arm]
    found["trials"] = found["trials"][:evals]
    return found


def run_all(out: Path, tables: Sequence[str], seeds: int, evals: int) -> None:
    full = build_db(out, TABLES)
    for seed in range(seeds):
        for table in tables:
            db = held_out_db(out, full, table)
            for arm in ARMS:
                path = tabular.raw_path(out, table, arm, seed)
                if path.exists():
                    continue
                found = run_arm(table, arm, seed, evals, db)
                doc = harness.relative_paths(
                    {"table": table, "arm": arm, "seed": seed, "evals": evals, **found}, out
                )
                doc["trials"] = columns(found["trials"])
                harness.write_raw(path, doc)
                print(f"{table} {arm} seed {seed}: {found['wall_seconds']:.2f} s", flush=True)


def report(out: Path, tables: Sequence[str], seeds: int, evals: int) -> dict[str, Any]:
    from scipy.stats import wilcoxon

    raw = tabular.load_raw(out, tables, ARMS, range(seeds), evals)
    checkpoints = [c for c in CHECKPOINTS if c <= evals]
    quarter = evals // 4
    summary: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    wins = 0
    for table in tables:
        sign = 1 if maximize(table) else -1  # compare "better" as higher
        curves = {
            arm: [incumbent_curve(d["trials"], maximize(table)) for d in raw[table][arm]]
            for arm in ARMS
        }
        summary[table] = {
            arm: {
                str(c): mean_se([cv[c - 1] for cv in curves[arm]])
                for c in sorted({*checkpoints, quarter, evals})
            }
            for arm in ARMS
        }
        warm = max(sign * summary[table][f"warm_{t}"][str(quarter)][0] for t in TUNERS)
        cold = max(sign * summary[table][f"cold_{t}"][str(evals)][0] for t in TUNERS)
        won = warm >= cold
        wins += won
        summary[table]["quarter"] = {"warm": sign * warm, "cold_full": sign * cold, "met": won}
        for t in TUNERS:
            for c in checkpoints:
                w = [cv[c - 1] for cv in curves[f"warm_{t}"]]
                k = [cv[c - 1] for cv in curves[f"cold_{t}"]]
                diff = [sign * (a - b) for a, b in zip(w, k, strict=True)]
                p = (
                    float(wilcoxon(diff, zero_method="wilcox").pvalue)
                    if any(d != 0 for d in diff)
                    else 1.0
                )
                tests.setdefault(table, {}).setdefault(t, {})[str(c)] = {
                    "median_gain": float(sorted(diff)[len(diff) // 2]),
                    "p": p,
                }
    figures = {"quarter_share": wins / len(tables)}
    verdicts = harness.judge(criteria(evals), figures)
    return {
        "tables": list(tables),
        "seeds": seeds,
        "evals": evals,
        "checkpoints": checkpoints,
        "summary": summary,
        "wilcoxon": tests,
        **figures,
        "met": verdicts,
    }


def markdown(doc: dict[str, Any]) -> str:
    q, n = doc["evals"] // 4, doc["evals"]
    lines = [
        f"Leave one table out, {doc['seeds']} seeds, {n} evaluations (the warm arms' 24-network "
        "probe included). True value of the incumbent, mean ± SE over seeds (NB201: validation "
        "accuracy %, higher better; FCNet: validation MSE, lower better).",
        "",
        f"| held out | best warm at {q} | best cold at {n} | met | "
        + " | ".join(f"{a} at {c}" for a in ARMS for c in (q, n))
        + " |",
        "|---" * (4 + 2 * len(ARMS)) + "|",
    ]
    for table in doc["tables"]:
        s = doc["summary"][table]
        cells = [f"{s[a][str(c)][0]:.4g} ± {s[a][str(c)][1]:.2g}" for a in ARMS for c in (q, n)]
        lines.append(
            f"| {table} | {s['quarter']['warm']:.4g} | {s['quarter']['cold_full']:.4g} | "
            f"{'yes' if s['quarter']['met'] else 'no'} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"Target met on {doc['quarter_share']:.0%} of held-out tables (target ≥ 67 %): "
        f"{'met' if doc['met']['quarter_budget'] else 'MISSED'}.",
        "",
        "Paired Wilcoxon (warm minus cold, better positive), median gain / p, per checkpoint:",
        "",
        "| held out | tuner | " + " | ".join(str(c) for c in doc["checkpoints"]) + " |",
        "|---|---|" + "---|" * len(doc["checkpoints"]),
    ]
    for table, per in doc["wilcoxon"].items():
        for tuner, at in per.items():
            lines.append(
                f"| {table} | {tuner} | "
                + " | ".join(
                    f"{at[str(c)]['median_gain']:+.3g} / {at[str(c)]['p']:.2g}"
                    for c in doc["checkpoints"]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    parser.add_argument("--docs", type=Path, help="also write this docs page")
    args = parser.parse_args(argv)
    tables = [t for t in args.tables.split(",") if t]
    if [t for t in tables if t not in TABLES]:
        parser.error(f"unknown table in {tables}")
    out: Path = args.out
    harness.declare(criteria(args.evals), out)
    started = time.perf_counter()
    if not args.report:
        run_all(out, tables, args.seeds, args.evals)
    doc = report(out, tables, args.seeds, args.evals)
    doc["seconds"] = time.perf_counter() - started
    doc["machine"] = harness.machine()
    doc["invocation"] = harness.invocation("transfer.py", argv)
    (out / "transfer.json").write_text(json.dumps(harness.relative_paths(doc, out), indent=1))
    text = markdown(doc)
    (out / "transfer.md").write_text(text)
    print(text)
    if args.docs:
        args.docs.write_text(
            "# Transfer warm start, tabular suite\n\nGenerated by `benchmarks/transfer.py "
            "--report --docs ...` from `benchmarks/results/transfer/raw/` (protocol and "
            "criterion: the script's docstring).\n\n" + text
        )
    return 0  # a missed criterion is a result; a missing arm raised BenchmarkError (exit 1)


if __name__ == "__main__":
    sys.exit(main())
