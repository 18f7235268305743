#!/usr/bin/env python
"""Table 1's method on its own, network by network (issue #27, part 2a): is regularized scoring
(the seeds' §6: one MorphNet epoch, shrink, train the small network for the rest of the budget)
cheaper than plain scoring *for the same network*, and how much accuracy does its score lose?

The paired evolutions of ``table1.py`` mix two effects: the method's per-network saving and the
two searches drifting apart (plain scoring rewards bigger networks). This script measures the
first alone, so a missed target can be blamed on the method or on the search dynamics.

**Genomes**: CoDeepNEAT's initial populations for ``--populations`` seeds (12 genomes each, the
seeds' ``blueprint_population=6 genomes_per_blueprint=2``), plus up to ``--later`` genomes of
generations >= 2 above 10^7 FLOPs from a short plain evolution (its networks trained cheaply,
on 300 images for 1 epoch: only their graphs are used). Graphs come from the real CLI's studies.

**Scoring**: every genome is scored plain (``build_model`` + ``train_model``: the full network,
``train.epochs``) and by each arm of regularized scoring (``regularized_score`` with the
defaults of ``evaluation=regularized``, and ``--arm NAME:KEY=VALUE,...`` variants, e.g. a
stronger regularization), in one process with one torch thread, interleaved (the order of the
arms rotates by one place per genome), on the same data and seed. Cost is the process's CPU
seconds (``time.process_time``) of each scoring. A failed scoring counts as accuracy 0, as in
``table1.py``.

**Figures** (each a median with a 95 % bootstrap CI over genomes, :mod:`spread`): the CPU ratio
plain / regularized per genome, and the accuracy difference regularized - plain in points (the
seeds' measure: the shrunk network's score against the full network's), paired (Wilcoxon),
overall and by FLOPs (< 10^6, 10^6-10^7, >= 10^7). Raw results: one JSON line per genome in
``<out>/pairs.jsonl`` (resumable: a rerun scores only genomes not in it); ``--report`` rebuilds
``table1_pairs.md``/``.json`` and the plot from it.

    .venv/bin/python benchmarks/table1_pairs.py                       # MNIST, 2,000 images
    .venv/bin/python benchmarks/table1_pairs.py --quick --out /tmp/p  # digits, 4 genomes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import harness
import spread

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEEDS_SPEEDUP = 1.48  # the seeds' MNIST figure (002_*.txt, Table 1)
MAX_LOSS_POINTS = 0.5
BINS = [(0.0, 1e6, "< 1e6"), (1e6, 1e7, "1e6 to 1e7"), (1e7, math.inf, ">= 1e7")]

CRITERIA = [
    harness.Criterion(
        "method",
        f"for the same network, the default regularized scoring costs at most 1/{SEEDS_SPEEDUP} "
        f"of plain scoring's CPU seconds (median ratio >= {SEEDS_SPEEDUP}) and the upper end of "
        f"the 95 % CI of its accuracy loss is <= {MAX_LOSS_POINTS} pt",
        lambda f: (
            f["seeds"]["ratio"]["median"] >= SEEDS_SPEEDUP
            and -f["seeds"]["difference"]["ci_low"] <= MAX_LOSS_POINTS
        ),
    )
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="mnist", choices=["mnist", "fashion_mnist", "digits"])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--populations", type=int, default=4, help="initial populations (x12)")
    parser.add_argument("--later", type=int, default=12, help="later genomes above 1e7 FLOPs")
    parser.add_argument("--epochs", type=int, default=5, help="train.epochs of every scoring")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="another regularized arm (default: strong:strength=4.0)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results" / "table1_pairs")
    parser.add_argument("--quick", action="store_true", help="digits, 4 genomes, 2 epochs")
    parser.add_argument("--report", action="store_true", help="only the report, from the raw")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.problem, args.populations, args.later, args.epochs = "digits", 1, 0, 2
    args.arm = args.arm or ["strong:strength=4.0"]
    args.out = args.out.resolve()
    return args


def problem_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``problem.*``, typed: for the CLI runs that draw the genomes and for scoring here."""
    if args.problem == "digits":
        return {"name": "digits"}
    folder = {"mnist": "mnist10k", "fashion_mnist": "fashion_mnist"}[args.problem]
    return {"name": args.problem, "data_dir": str(args.data_dir.resolve() / folder),
            "max_train_samples": args.max_train_samples}  # fmt: skip


def problem_overrides(args: argparse.Namespace) -> list[str]:
    settings = problem_settings(args)
    return [f"problem={settings.pop('name')}", *(f"problem.{k}={v}" for k, v in settings.items())]


def arms(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each regularized arm's settings: ``seeds`` (the defaults) and the ``--arm`` variants."""
    from nasfw.plugins.postprocessing.morphnet import RegularizedScoringConfig

    base = dataclasses.asdict(RegularizedScoringConfig())
    out = {"seeds": base}
    for text in args.arm:
        name, _, pairs = text.partition(":")
        settings = dict(base)
        for pair in filter(None, pairs.split(",")):
            key, _, value = pair.partition("=")
            if key not in base:
                raise SystemExit(f"table1_pairs: --arm {text}: no setting {key!r}")
            settings[key] = type(base[key])(value) if base[key] is not None else float(value)
        out[name] = settings
    return out


# -- genomes ------------------------------------------------------------------------------------


def _graphs(run_dir: Path, overrides: list[str], args: argparse.Namespace) -> list[Any]:
    """The finished trials of one cheap CLI run of CoDeepNEAT (graphs are what it is for)."""
    url = f"sqlite:///{run_dir / 'nasfw.db'}"
    harness.run_cli(
        [*problem_overrides(args), "search_space=image_small", "tuner=codeepneat",
         "tuner.blueprint_population=6", "tuner.genomes_per_blueprint=2", "tracking=none",
         "launcher.workers=0", "train.curve_every=0", f"storage.url={url}", "study_name=g",
         f"export_dir={run_dir / 'best_model'}", *overrides],
        cwd=run_dir, log=run_dir / "run.log", timeout=3600,
    ).check(f"table1_pairs: genomes ({' '.join(overrides)})")  # fmt: skip
    return harness.finished_trials(url, "g")


def genomes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The genomes to score (``<out>/genomes.json``, made once)."""
    path = args.out / "genomes.json"
    if path.exists():
        return json.loads(path.read_text())
    cheap = ["train.epochs=1", "problem.max_train_samples=300"]
    if args.problem == "digits":
        cheap = ["train.epochs=1"]
    picked: list[dict[str, Any]] = []
    for k in range(args.populations):
        records = _graphs(args.out / "genomes" / f"pop{k}", ["tuner.generations=1", f"seed={k}",
                          *cheap], args)  # fmt: skip
        picked += [{"source": f"initial population {k}", "generation": 0, "graph":
                    r.graph.to_json(), "flops": r.result.flops} for r in records]  # fmt: skip
    if args.later:
        records = _graphs(args.out / "genomes" / "later", ["tuner.generations=5", "seed=100",
                          *cheap], args)  # fmt: skip
        seen = {g["graph"] for g in picked}
        for r in records:
            graph = r.graph.to_json()
            if r.generation >= 2 and (r.result.flops or 0) >= 1e7 and graph not in seen:
                seen.add(graph)
                picked.append({"source": "later generation", "generation": r.generation,
                               "graph": graph, "flops": r.result.flops})  # fmt: skip
                if len(picked) >= args.populations * 12 + args.later:
                    break
    harness.require_trials("table1_pairs genomes", picked)
    harness.write_raw(path, picked)
    return picked


# -- scoring ------------------------------------------------------------------------------------


def score_all(args: argparse.Namespace, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score every genome not yet in ``pairs.jsonl``, appending one line per genome."""
    import torch

    from nasfw import Candidate, ProblemConfig, TrainConfig, build_model, train_model
    from nasfw.evaluate import load_problem
    from nasfw.graph import ArchGraph
    from nasfw.plugins.postprocessing.morphnet.scoring import regularized_score

    torch.set_num_threads(1)
    raw = args.out / "pairs.jsonl"
    done = {json.loads(line)["index"] for line in raw.read_text().splitlines()} if raw.exists() \
        else set()  # fmt: skip
    problem = load_problem(ProblemConfig(**problem_settings(args)))
    train = TrainConfig(epochs=args.epochs, threads=1, curve_every=0)
    by_arm = arms(args)
    names = ["plain", *by_arm]
    for index, genome in enumerate(pool):
        if index in done:
            continue
        graph = ArchGraph.from_json(genome["graph"])
        seed = 1_000 + index
        shift = index % len(names)
        row: dict[str, Any] = {
            "index": index,
            "source": genome["source"],
            "generation": genome["generation"],
            "flops": genome["flops"],
        }
        for name in names[shift:] + names[:shift]:
            started = time.process_time()
            if name == "plain":
                torch.manual_seed(seed)
                outcome = train_model(build_model(graph, problem), problem, train, seed)
                ok, metric = not outcome.diverged, outcome.metric
            else:
                result = regularized_score(Candidate(graph=graph), problem, train, seed,
                                           by_arm[name])  # fmt: skip
                ok, metric = result.ok, result.metric
            row[name] = {
                "cpu": round(time.process_time() - started, 3),
                "ok": bool(ok),
                "accuracy": float(metric) if ok and metric is not None else 0.0,
            }
        with raw.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"genome {index} ({genome['flops'] or 0:.2e} FLOPs): "
              + ", ".join(f"{n} {row[n]['accuracy']:.4f} in {row[n]['cpu']:.1f} CPU s"
                          for n in names), flush=True)  # fmt: skip
    return [json.loads(line) for line in raw.read_text().splitlines()]


# -- report -------------------------------------------------------------------------------------


def figures(rows: list[dict[str, Any]], arm_names: list[str]) -> dict[str, Any]:
    """Per arm: CPU ratio plain / arm and accuracy difference arm - plain (points), overall and
    per FLOPs bin."""
    out: dict[str, Any] = {}
    for arm in arm_names:

        def of(subset: list[dict[str, Any]], arm: str = arm) -> dict[str, Any] | None:
            if not subset:
                return None
            ratios = [r["plain"]["cpu"] / r[arm]["cpu"] for r in subset]
            paired = spread.paired([100 * r[arm]["accuracy"] for r in subset],
                                   [100 * r["plain"]["accuracy"] for r in subset])  # fmt: skip
            return {
                "n": len(subset),
                "ratio": spread.describe(ratios).to_dict(),
                "geometric_mean_ratio": math.exp(sum(map(math.log, ratios)) / len(ratios)),
                "total_ratio": sum(r["plain"]["cpu"] for r in subset)
                / sum(r[arm]["cpu"] for r in subset),
                "difference": paired.difference.to_dict(),
                "paired": paired.to_dict(),
                "failed": sum(not r[arm]["ok"] for r in subset),
            }

        overall = of(rows)
        assert overall is not None
        overall["bins"] = {
            label: of([r for r in rows if lo <= (r["flops"] or 0) < hi]) for lo, hi, label in BINS
        }
        out[arm] = overall
    return out


def markdown(doc: dict[str, Any], verdicts: dict[str, bool]) -> str:
    p = doc["protocol"]
    lines = [
        "# Table 1, network by network: regularized against plain scoring",
        "",
        f"{doc['machine']['description']}; {p['problem']} ({p['max_train_samples'] or 'all'} "
        f"training images), {p['genomes']} genomes ({p['populations']} initial populations of "
        f"CoDeepNEAT + later-generation genomes above 1e7 FLOPs), {p['epochs']} epochs, one "
        "torch thread, each genome scored every way in one process, interleaved. Median [95 % "
        "bootstrap CI] (n, range) over genomes; speedup = plain CPU s / regularized CPU s; "
        "difference = regularized - plain accuracy, in points (the seeds' measure).",
        "",
        f"Command: `{doc['command']}`",
        "",
        "| arm | FLOPs | genomes | speedup | total-CPU ratio | accuracy difference, pt | "
        "Wilcoxon p | failed |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    for arm, f in doc["figures"].items():
        settings = ", ".join(f"{k}={v}" for k, v in p["arms"][arm].items()
                             if k in ("strength", "threshold", "shrink_epochs"))  # fmt: skip
        for label, g in [("all", f), *f["bins"].items()]:
            if g is None:
                continue
            pv = g["paired"]["p_value"]
            lines.append(
                f"| {arm} ({settings}) | {label} | {g['n']} | "
                f"{spread.Spread(**g['ratio']).text(2)} | {g['total_ratio']:.2f} | "
                f"{spread.Spread(**g['difference']).text(2)} | "
                f"{'n/a' if pv is None else f'{pv:.3g}'} | {g['failed']} |"
            )
    lines += ["", "## Criteria (declared before the run)", ""]
    lines += [f"- {c.claim}: **{'met' if verdicts[c.name] else 'missed'}**" for c in CRITERIA]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], arm_names: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, arm in enumerate(arm_names):
        flops = [max(r["flops"] or 1, 1) for r in rows]
        left.scatter(flops, [r["plain"]["cpu"] / r[arm]["cpu"] for r in rows], s=14,
                     color=f"C{i}", label=arm)  # fmt: skip
        right.scatter(flops, [100 * (r[arm]["accuracy"] - r["plain"]["accuracy"]) for r in rows],
                      s=14, color=f"C{i}", label=arm)  # fmt: skip
    left.axhline(SEEDS_SPEEDUP, color="grey", linestyle=":", label="seeds' 1.48")
    left.axhline(1.0, color="black", linewidth=0.6)
    right.axhline(0.0, color="black", linewidth=0.6)
    for ax, label in ((left, "CPU seconds, plain / regularized"),
                      (right, "accuracy, regularized - plain (pt)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs of the genome")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "table1_pairs.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "table1_pairs.json"
    if args.report:
        doc = json.loads(summary_path.read_text())
        rows = [json.loads(x) for x in (args.out / "pairs.jsonl").read_text().splitlines()]
    else:
        if args.problem != "digits" and not (args.data_dir).is_dir():
            raise SystemExit(f"table1_pairs: {args.data_dir} not found (--data-dir)")
        harness.declare(CRITERIA, args.out)
        pool = genomes(args)
        rows = score_all(args, pool)
        doc = {
            "protocol": {
                "problem": args.problem,
                "max_train_samples": None if args.problem == "digits" else args.max_train_samples,
                "populations": args.populations,
                "later": args.later,
                "genomes": len(pool),
                "epochs": args.epochs,
                "arms": arms(args),
                "quick": args.quick,
            },
            "command": harness.invocation("table1_pairs.py", argv),
            "machine": harness.machine(),
            **harness.git_state(),
        }
    harness.require_trials("table1_pairs", rows)
    arm_names = list(doc["protocol"]["arms"])
    doc["figures"] = figures(rows, arm_names)
    verdicts = harness.judge(CRITERIA, doc["figures"])
    doc["criteria"] = verdicts
    text = markdown(doc, verdicts)
    (args.out / "table1_pairs.md").write_text(text + "\n")
    harness.write_raw(summary_path, doc)
    image = plot(rows, arm_names, args.out)
    print(text)
    if not args.no_mlflow:
        metrics = {f"{arm}.{key}": f[key]["median"] for arm, f in doc["figures"].items()
                   for key in ("ratio", "difference")}  # fmt: skip
        harness.log_to_mlflow(
            args.out, args.tracking_uri, benchmark="table1_pairs",
            params={k: v for k, v in doc["protocol"].items() if k != "arms"},
            tags={"command": doc["command"], "machine": doc["machine"]["description"]},
            metrics=metrics, artifacts=[args.out / "table1_pairs.md", summary_path, image],
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
