#!/usr/bin/env python
"""Transfer from the nearest problems on the tabular suite, leave one problem out (issue #28,
part 6): cold searches against ``minibench.warm_start=true``, ``search_space=auto`` and both,
for evolution and TPE on the 3 NAS-Bench-201 and 4 FCNet tables, judged by the TRUE value of
the incumbent.

**DB.** One mini-benchmark DB of the 7 tables is built once (``mode=minibench``, ``tuner=evolution
tuner.n_trials=<--db-evals, 100>``, the family's 24 reference networks scored on each; the
build's own seed 0). For each held-out table, a copy without it (``BestModelDB.remove``) is
the DB its transfer arms read: the held-out problem is absent from the DB, the normal case.

**Arms** (``--evals`` evaluations each, seeds ``0 .. --seeds-1``, in this process through
``nasfw.search.run_search`` with ``storage=memory tracking=none``, one proposal at a time), per
tuner (``evolution``: ``tuner=evolution tuner.population_size=10 tuner.sample_size=3``;
``tpe``: ``tuner=tpe``, nasfw's defaults):

- ``cold_<tuner>``: the table's full space;
- ``warm_<tuner>``: ``minibench.warm_start=true minibench.donors=2``: the probe is all 24
  reference networks, then the tuner starts from the 2 nearest problems' best networks;
- ``auto_<tuner>``: ``search_space=auto minibench.donors=2``: the probe is the 8
  (``minibench.probe_trials``' default) most informative references, then the search runs in
  the space spanning the best networks of the (up to) 2 nearest problems at least
  ``minibench.min_similarity`` (0.3) alike, or in the full space when none is;
- ``autowarm_<tuner>`` (auto + warm): both, one probe: the same 8 references, the same
  nearest problems as donors, seeds in the narrowed space.

Every probe COUNTS in the arm's evaluations (generation -1). The incumbent, its true value
(mean over the table's training seeds; NB201 accuracy in percent, FCNet MSE) and the curves
are those of ``benchmarks/tabular.py`` (its helpers).

**Success criteria, written before the run** (the issue's targets):

1. ``quarter_budget``: at a quarter of the budget (``--evals // 4`` evaluations), the best
   transfer arm's (warm, auto, auto+warm; either tuner) mean true value is at least as good as
   the better cold arm's at the full budget, on at least 2/3 of the held-out tables.
2. ``never_worse``: at the full budget, no ``auto`` or ``autowarm`` arm is worse than the cold
   arm of its tuner on a held-out table by more than the noise: the mean of the paired
   (same seed) differences, better positive, is not below minus twice its standard error.

Also reported, not judged: per transfer arm and checkpoint (10, 25, 50, 100, 200), the paired
two-sided Wilcoxon signed-rank test against the cold arm of its tuner over seeds (zero
differences dropped).

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
AUTO = ["search_space=auto", "minibench.donors=2"]
WARM = ["minibench.warm_start=true", "minibench.donors=2"]
#: Each arm kind's overrides (beside the tuner's and ``minibench.db``).
KINDS: dict[str, list[str]] = {
    "cold": [],
    "warm": WARM,
    "auto": AUTO,
    "autowarm": [*AUTO, "minibench.warm_start=true"],
}
TRANSFER = [k for k in KINDS if k != "cold"]
ARMS = [f"{kind}_{t}" for t in TUNERS for kind in KINDS]
DB_BUILD = ["tuner=evolution", "tuner.batch_size=4"]
SHARE = 2 / 3


def criteria(evals: int) -> list[harness.Criterion]:
    quarter = evals // 4
    return [
        harness.Criterion(
            "quarter_budget",
            f"the best transfer arm's (warm, auto, auto+warm) mean true value at {quarter} "
            f"evaluations is at least as good as the better cold arm's at {evals}, on >= 2/3 "
            "of the held-out tables",
            lambda f: f["quarter_share"] >= SHARE,
        ),
        harness.Criterion(
            "never_worse",
            f"at {evals} evaluations no auto or auto+warm arm's mean paired difference to the "
            "cold arm of its tuner (better positive) is below -2 standard errors, on any "
            "held-out table",
            lambda f: f["worse_than_noise"] == 0,
        ),
    ]


def build_db(out: Path, tables: Sequence[str], db_evals: int) -> Path:
    """The DB of every table, each searched ``db_evals`` evaluations (built once; rerun: the
    build skips what it holds)."""
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
        f"tuner.n_trials={db_evals}",
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
    """One search; a transfer arm's probe counts in its ``evals`` evaluations."""
    kind, tuner = arm.split("_", 1)
    extra = [*KINDS[kind], f"minibench.db={db}"] if kind != "cold" else []
    saved = tabular.NASFW_ARMS.get(arm)
    tabular.NASFW_ARMS[arm] = [*TUNERS[tuner], "tuner.batch_size=1", *extra]
    try:
        found = tabular.run_nasfw(table, arm, seed, evals)
    finally:
        if saved is None:
            del tabular.NASFW_ARMS[arm]
    found["trials"] = found["trials"][:evals]
    return found


def run_all(out: Path, tables: Sequence[str], seeds: int, evals: int, db_evals: int) -> None:
    full = build_db(out, TABLES, db_evals)
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


def paired(a: Sequence[float], b: Sequence[float], sign: int) -> list[float]:
    """Per seed, ``a`` minus ``b``, better positive (``sign``: -1 where lower is better)."""
    return [sign * (x - y) for x, y in zip(a, b, strict=True)]


def report(out: Path, tables: Sequence[str], seeds: int, evals: int) -> dict[str, Any]:
    from scipy.stats import wilcoxon

    raw = tabular.load_raw(out, tables, ARMS, range(seeds), evals)
    checkpoints = [c for c in CHECKPOINTS if c <= evals]
    quarter = evals // 4
    summary: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    wins = worse = 0
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
        best = max(
            (f"{k}_{t}" for k in TRANSFER for t in TUNERS),
            key=lambda a: sign * summary[table][a][str(quarter)][0],
        )
        transfer = sign * summary[table][best][str(quarter)][0]
        cold = max(sign * summary[table][f"cold_{t}"][str(evals)][0] for t in TUNERS)
        won = transfer >= cold
        wins += won
        summary[table]["quarter"] = {
            "arm": best,
            "transfer": sign * transfer,
            "cold_full": sign * cold,
            "met": won,
        }
        for t in TUNERS:
            base = curves[f"cold_{t}"]
            for kind in TRANSFER:
                arm = f"{kind}_{t}"
                for c in checkpoints:
                    diff = paired(
                        [cv[c - 1] for cv in curves[arm]], [cv[c - 1] for cv in base], sign
                    )
                    p = (
                        float(wilcoxon(diff, zero_method="wilcox").pvalue)
                        if any(d != 0 for d in diff)
                        else 1.0
                    )
                    tests.setdefault(table, {}).setdefault(arm, {})[str(c)] = {
                        "median_gain": float(sorted(diff)[len(diff) // 2]),
                        "p": p,
                    }
                if kind in ("auto", "autowarm"):
                    diff = paired([cv[-1] for cv in curves[arm]], [cv[-1] for cv in base], sign)
                    mean, se = mean_se(diff)
                    beyond = bool(mean < -2 * se) if se == se else mean < 0
                    worse += beyond
                    noise.setdefault(table, {})[arm] = {"mean": mean, "se": se, "worse": beyond}
    figures = {"quarter_share": wins / len(tables), "worse_than_noise": worse}
    verdicts = harness.judge(criteria(evals), figures)
    return {
        "tables": list(tables),
        "seeds": seeds,
        "evals": evals,
        "checkpoints": checkpoints,
        "summary": summary,
        "wilcoxon": tests,
        "never_worse": noise,
        **figures,
        "met": verdicts,
    }


def markdown(doc: dict[str, Any]) -> str:
    q, n = doc["evals"] // 4, doc["evals"]
    kinds = list(KINDS)
    label = {"cold": "cold", "warm": "warm", "auto": "auto", "autowarm": "auto+warm"}
    lines = [
        f"Leave one table out, {doc['seeds']} seeds, {n} evaluations (the probes included: 24 "
        "reference networks for warm, 8 for auto and auto+warm). True value of the incumbent, "
        "mean ± SE over seeds (NB201: validation accuracy %, higher better; FCNet: validation "
        "MSE, lower better).",
        "",
        f"**Target 1**: the best transfer arm at {q} evaluations against the better cold arm at "
        f"{n}.",
        "",
        f"| held out | best transfer arm | its value at {q} | best cold at {n} | met |",
        "|---|---|---|---|---|",
    ]
    for table in doc["tables"]:
        s = doc["summary"][table]["quarter"]
        arm = s["arm"].split("_", 1)
        lines.append(
            f"| {table} | {label[arm[0]]} {arm[1]} | {s['transfer']:.4g} | {s['cold_full']:.4g}"
            f" | {'yes' if s['met'] else 'no'} |"
        )
    lines += [
        "",
        f"Target 1 met on {doc['quarter_share']:.0%} of held-out tables (target ≥ 67 %): "
        f"{'met' if doc['met']['quarter_budget'] else 'MISSED'}.",
        "",
        f"**Every arm** at {q} and {n} evaluations:",
        "",
        "| held out | tuner | "
        + " | ".join(f"{label[k]} at {c}" for k in kinds for c in (q, n))
        + " |",
        "|---|---|" + "---|" * (2 * len(kinds)),
    ]
    for table in doc["tables"]:
        s = doc["summary"][table]
        for t in TUNERS:
            cells = [
                f"{s[f'{k}_{t}'][str(c)][0]:.4g} ± {s[f'{k}_{t}'][str(c)][1]:.2g}"
                for k in kinds
                for c in (q, n)
            ]
            lines.append(f"| {table} | {t} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Target 2** (never worse than cold by more than the noise): at {n} evaluations, the "
        "mean paired difference to cold (better positive) ± its SE; *worse* where below -2 SE.",
        "",
        "| held out | "
        + " | ".join(f"{label[k]} {t}" for t in TUNERS for k in ("auto", "autowarm"))
        + " |",
        "|---|" + "---|" * (2 * len(TUNERS)),
    ]
    for table, per in doc["never_worse"].items():
        cells = []
        for t in TUNERS:
            for k in ("auto", "autowarm"):
                d = per[f"{k}_{t}"]
                cells.append(
                    f"{d['mean']:+.3g} ± {d['se']:.2g}" + (" *worse*" if d["worse"] else "")
                )
        lines.append(f"| {table} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Target 2: {doc['worse_than_noise']} arm(s) worse than the noise: "
        f"{'met' if doc['met']['never_worse'] else 'MISSED'}.",
        "",
        "Paired Wilcoxon (transfer arm minus the cold arm of its tuner, better positive), median "
        "gain / p, per checkpoint:",
        "",
        "| held out | arm | " + " | ".join(str(c) for c in doc["checkpoints"]) + " |",
        "|---|---|" + "---|" * len(doc["checkpoints"]),
    ]
    for table, per in doc["wilcoxon"].items():
        for arm, at in per.items():
            kind, tuner = arm.split("_", 1)
            lines.append(
                f"| {table} | {label[kind]} {tuner} | "
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
    parser.add_argument(
        "--db-evals", type=int, default=100,
        help="evaluations of each DB problem's own search (evolution), building the DB (100)",
    )  # fmt: skip
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
        run_all(out, tables, args.seeds, args.evals, args.db_evals)
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
            "# Transfer from the nearest problems, tabular suite\n\nGenerated by "
            "`benchmarks/transfer.py --report --docs ...` from "
            "`benchmarks/results/transfer/raw/` (protocol and criteria: the script's "
            "docstring).\n\n" + text
        )
    return 0  # a missed criterion is a result; a missing arm raised BenchmarkError (exit 1)


if __name__ == "__main__":
    sys.exit(main())
