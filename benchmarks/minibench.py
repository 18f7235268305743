"""Mini-benchmarking, leave-problems-out (issue #15): search_space=auto against the full space
and the hand-made presets, for CoDeepNEAT and Petridish, at equal wall-clock budget.

1. The DB: ``python -m nasfw mode=minibench`` on the whole suite (``SUITE``: image, tabular,
   sequence and text problems; MNIST and Fashion-MNIST real, from ``--data-dir``), each
   problem searched by a short, unconstrained CoDeepNEAT.
2. For each held-out problem P: a copy of the DB without P (its classes and classifier are
   derived without it), then, per tuner, one search in each space: the modality's full space,
   ``search_space=auto`` (its probe included) and every hand-made preset of the modality. Each
   search runs through the CLI and is stopped with SIGINT (a user's Ctrl-C) ``--budget``
   seconds after it was launched; it is judged by the trials finished by then (start-up, data
   loading, probe and classification count in the budget). Same seed everywhere.
3. Per search: best validation metric, mean of the last population (the highest generation
   with a finished network; a Petridish round's children), seconds per training epoch of its
   networks (auto: the searched ones, the probe apart), and when it reached the full-space
   search's final best.
4. The classifier's leave-one-problem-out accuracy against the folding level F, and the
   screening regressor's Spearman correlation on problems left out, on the whole DB.

    .venv/bin/python benchmarks/minibench.py --data-dir ../shared/data            # ~1 h on 2 cores
    .venv/bin/python benchmarks/minibench.py --data-dir ../shared/data --quick    # minutes
    .venv/bin/python benchmarks/minibench.py --report --out <out>                 # tables only

Writes ``<out>/minibench.json`` and ``<out>/minibench.md``, and logs both (and the figures as
metrics) to MLflow (``--tracking-uri``, default ``sqlite:///<out>/mlflow.db``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent


def suite(data: Path, samples: int) -> dict[str, str]:
    """Suite entry (``minibench.problems``) by the name the tables use."""
    return {
        "digits": "digits",
        "digits_noisy": "digits_noisy:noise=0.5",
        "digits_shifted": "digits_shifted",
        "mnist": f"mnist:data_dir={data / 'mnist10k'},max_train_samples={samples}",
        "fashion_mnist": (
            f"fashion_mnist:data_dir={data / 'fashion_mnist'},max_train_samples={samples}"
        ),
        "iris": "iris",
        "wine": "wine",
        "breast_cancer": "breast_cancer",
        "diabetes": "diabetes",
        "friedman1": "friedman1",
        "mnist1d": f"mnist1d:n_samples={samples}",
        "ppg_heart_rate": f"ppg_heart_rate:n_samples={samples // 2}",
        "grammar_acceptability": f"grammar_acceptability:n_samples={samples // 2}",
        "review_sentiment": f"review_sentiment:n_samples={samples // 2}",
    }


HELD_OUT = [
    "fashion_mnist",
    "mnist",
    "mnist1d",
    "ppg_heart_rate",
    "grammar_acceptability",
    "review_sentiment",
]
FULL = {
    "image": "petridish_full",
    "sequence": "petridish_full_sequence",
    "text": "text_small",
    "tabular": "tabular_mlp",
}
PRESETS = {
    "image": ["image_small", "petridish_limited"],
    "sequence": ["sequence_small"],
    "text": [],
    "tabular": [],
}
MODALITY = {
    "fashion_mnist": "image",
    "mnist": "image",
    "mnist1d": "sequence",
    "ppg_heart_rate": "sequence",
    "grammar_acceptability": "text",
    "review_sentiment": "text",
}
BUILD = [  # the DB's short, unconstrained CoDeepNEAT per suite problem (and --generations)
    "tuner=codeepneat",
    "tuner.blueprint_population=4",
    "tuner.module_population=8",
    "tuner.genomes_per_blueprint=2",
]
TUNERS = {  # more than the budget allows: the budget ends every search
    "codeepneat": [
        "tuner=codeepneat",
        "tuner.generations=1000",
        "tuner.blueprint_population=4",
        "tuner.module_population=8",
        "tuner.genomes_per_blueprint=2",
    ],
    "petridish": ["tuner=petridish", "tuner.rounds=1000", "tuner.init_models=4"],
}


def cli(run_dir: Path, args: list[str], budget: float | None) -> float:
    """``python -m nasfw <args>`` in ``run_dir``, stopped with SIGINT after ``budget`` seconds
    (None: to its end, and it must succeed); the time it was launched (seconds since the epoch)."""
    log = run_dir / "cli.log"
    run = harness.run_cli(args, cwd=run_dir, log=log, interrupt_after=budget)
    if budget is None:
        run.check(" ".join(args))
    return run.launched


def judged(url: str, study: str, launched: float, budget: float, name: str) -> dict[str, Any]:
    """What a search had reached ``budget`` seconds after its launch (see the module); a search
    with no trial finished by then fails the benchmark."""
    records = [r for r in harness.finished_trials(url, study, launched + budget) if r.exportable]
    harness.require_trials(name, records)
    ok = [r for r in records if r.result.ok and r.result.metric is not None]
    searched = [r for r in ok if r.generation >= 0] or ok
    out: dict[str, Any] = {
        "trials": len(records),
        "failed": sum(not r.result.ok for r in records),
        "metric": metric_of(url, study),
    }
    if not ok:
        return {**out, "best": None}
    last = max(r.generation for r in searched)
    population = [r.result.metric for r in searched if r.generation == last]
    epochs = [r.result.train_seconds / r.result.epochs for r in searched if r.result.epochs]
    return {
        **out,
        "best": max(r.result.metric for r in ok),
        "last_population_mean": statistics.fmean(population),
        "last_generation": last,
        "epoch_seconds": statistics.fmean(epochs) if epochs else None,
        "probe_trials": sum(r.generation < 0 for r in records),
        "curve": harness.best_so_far((r.result.finished - launched, r.result.metric) for r in ok),
    }


def metric_of(url: str, study: str) -> str:
    """The study's validation metric (``val_accuracy``, ``val_neg_mae``, ...)."""
    names = harness.open_ledger(url, study).study.metric_names
    return names[0] if names else ""


def choice_of(url: str, study: str) -> dict[str, Any] | None:
    from nasfw.minibench.auto import CHOICE_ATTR

    raw = harness.open_ledger(url, study).attr(CHOICE_ATTR)
    return json.loads(raw) if raw else None


def build_db(out: Path, entries: dict[str, str], epochs: int, generations: int) -> None:
    problems = ",".join(f'"{e}"' for e in entries.values())
    args = [
        "mode=minibench",
        f"minibench.problems=[{problems}]",
        f"minibench.db={out / 'minibench.db'}",
        f"storage.url=sqlite:///{out / 'suite.db'}",
        f"storage.artifacts={out / 'artifacts'}",
        f"train.epochs={epochs}",
        "launcher.workers=0",
        "tracking=none",
        *BUILD,
        f"tuner.generations={generations}",
    ]
    cli(out / "build", args, None)


def without(out: Path, held: str, entry: str) -> Path:
    """A copy of the DB without ``held`` (the leave-problems-out DB)."""
    from nasfw.minibench.build import entry_id
    from nasfw.minibench.db import BestModelDB

    path = out / "dbs" / f"without-{held}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "minibench.db", path)
    db = BestModelDB(str(path))
    db.remove(entry_id(entry))
    db.close()
    return path


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    entries = suite(args.data_dir.resolve(), args.samples)
    if args.suite:
        entries = {k: v for k, v in entries.items() if k in args.suite}
    print(f"building the DB on {len(entries)} problems (resumes) ...", flush=True)
    build_db(out, entries, args.epochs, args.generations)
    doc: dict[str, Any] = {
        "settings": vars(args) | {"out": str(out), "data_dir": str(args.data_dir)}
    }
    doc["runs"] = []
    for held in args.held_out:
        modality = MODALITY[held]
        db = without(out, held, entries[held])
        name, _, settings = entries[held].partition(":")
        problem = [f"problem={name}"] + [f"problem.{kv}" for kv in settings.split(",") if kv]
        if modality == "image":  # 28x28 networks on a CPU: fewer images, so searches get going
            problem = [p for p in problem if "max_train_samples" not in p]
            problem.append(f"problem.max_train_samples={args.image_samples}")
        for tuner in args.tuners:
            spaces = [FULL[modality], "auto", *PRESETS[modality]]
            for space in spaces:
                run_dir = out / "runs" / held / tuner / space
                url = f"sqlite:///{run_dir / 'nasfw.db'}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                budget = args.image_budget if modality == "image" else args.budget
                cli_args = [
                    *problem,
                    # One scorer for every tuner (Petridish's inherited weights need plain).
                    "evaluation=plain",
                    *TUNERS[tuner],
                    f"search_space={space}",
                    f"train.epochs={args.epochs}",
                    f"minibench.db={db}",
                    f"minibench.probe_trials={args.probe_trials}",
                    f"storage.url={url}",
                    f"storage.artifacts={run_dir / 'artifacts'}",
                    "study_name=bench",
                    "launcher.workers=0",
                    "tracking=none",
                ]
                print(f"{held} / {tuner} / {space} ...", flush=True)
                launched = cli(run_dir, cli_args, budget)
                found = judged(url, "bench", launched, budget, f"minibench {held}/{tuner}/{space}")
                found["budget"] = budget
                found.update(problem=held, modality=modality, tuner=tuner, space=space)
                if space == "auto":
                    choice = choice_of(url, "bench")
                    found["class"] = choice["class"] if choice else None
                    found["confidence"] = choice["confidence"] if choice else None
                doc["runs"].append(found)
                (out / "minibench.json").write_text(json.dumps(doc, indent=2))
    doc["classifier"], doc["screening"] = db_figures(out, entries, args.foldings)
    (out / "minibench.json").write_text(json.dumps(doc, indent=2))
    return doc


def db_figures(
    out: Path, entries: dict[str, str], foldings: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Classifier accuracy against F (classes fixed at the default F) and screening Spearman."""
    from omegaconf import OmegaConf

    from nasfw.config import MinibenchConfig
    from nasfw.minibench.auto import full_spaces
    from nasfw.minibench.classes import group_problems
    from nasfw.minibench.classify import cross_validate
    from nasfw.minibench.db import BestModelDB
    from nasfw.minibench.screen import rank_correlation
    from nasfw.registry import registry

    cfg = OmegaConf.create({"minibench": OmegaConf.structured(MinibenchConfig)})
    ops = sorted(registry().ops)
    db = BestModelDB(str(out / "minibench.db"))
    default = int(cfg.minibench.folding)
    classes = group_problems(db, full_spaces(cfg), default, ops, int(cfg.minibench.max_classes))
    rows = [
        {"folding": f, **cross_validate(db, classes, f, ops), **which_search(db, f, ops)}
        for f in foldings
    ]
    screening = rank_correlation(db, default, ops)
    screening["classes"] = {c.name: c.problems for c in classes}
    db.close()
    return rows, screening


def which_search(db: Any, folding: int, ops: list[str]) -> dict[str, float]:
    """How well folded encodings alone tell the problems of a modality apart: each network the
    suite's searches trained, labelled with its problem, 5-fold cross-validated random forest
    within each modality (no meta-features); accuracy over all networks, and chance."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from nasfw.minibench.encoding import fold

    meta = {p.id: p.meta.modality for p in db.problems()}
    right = total = 0
    chance = 0.0
    for modality in sorted(set(meta.values())):
        found = [e for e in db.evaluations() if meta.get(e.problem_id) == modality]
        labels = [e.problem_id for e in found]
        if len(set(labels)) < 2 or min(labels.count(x) for x in set(labels)) < 5:
            continue
        x = np.stack([fold(e.graph, folding, ops) for e in found])
        forest = RandomForestClassifier(n_estimators=200, random_state=0)
        guesses = cross_val_predict(
            forest, x, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0)
        )
        right += sum(g == y for g, y in zip(guesses, labels, strict=True))
        total += len(labels)
        chance += max(labels.count(x) for x in set(labels))
    return {
        "which_search": right / total if total else float("nan"),
        "which_search_chance": chance / total if total else float("nan"),
    }


def short(problem_id: str) -> str:
    """A suite entry without its settings (paths make the tables unreadable)."""
    return problem_id.split(":")[0]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def tables(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    settings = doc["settings"]
    lines = [
        f"Budget {settings['budget']:.0f} s per search ({settings['image_budget']:.0f} s on "
        f"images, {settings['image_samples']} training images) from launch, evaluation=plain, "
        f"train.epochs={settings['epochs']}, seed 0, one process (launcher.workers=0).",
        "",
        "| held out | tuner | space | trials | best val | last population mean | s/epoch "
        "| reached full's best at (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        full = next(
            x
            for x in runs
            if x["problem"] == r["problem"]
            and x["tuner"] == r["tuner"]
            and x["space"] == FULL[r["modality"]]
        )
        space = r["space"]
        if space == "auto":
            space = f"auto → {r.get('class')} ({fmt(r.get('confidence'), 2)})"
        reached = harness.time_to(r.get("curve", []), full.get("best"))
        lines.append(
            f"| {r['problem']} | {r['tuner']} | {space} | {r['trials']}"
            + (f" ({r['probe_trials']} probe)" if r.get("probe_trials") else "")
            + f" | {fmt(r.get('best'))} | {fmt(r.get('last_population_mean'))} "
            f"| {fmt(r.get('epoch_seconds'), 3)} | {fmt(reached, 0)} |"
        )
    lines += [
        "",
        "auto against the full space, per held-out problem (accuracy and MCC in points, "
        "neg_mae in its units, bpm); s/epoch: auto / full:",
        "",
        "| held out | tuner | best: auto - full | last population: auto - full "
        "| s/epoch auto / full |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        if r["space"] != "auto":
            continue
        full = next(
            x
            for x in runs
            if x["problem"] == r["problem"]
            and x["tuner"] == r["tuner"]
            and x["space"] == FULL[r["modality"]]
        )
        scale = 1.0 if r.get("metric", "").endswith(("mae", "mse")) else 100.0

        def diff(
            key: str, r: dict[str, Any] = r, full: dict[str, Any] = full, scale: float = scale
        ) -> str:
            if r.get(key) is None or full.get(key) is None:
                return "—"
            return f"{scale * (r[key] - full[key]):+.1f}"

        ratio = (
            f"{r['epoch_seconds'] / full['epoch_seconds']:.2f}"
            if r.get("epoch_seconds") and full.get("epoch_seconds")
            else "—"
        )
        lines.append(
            f"| {r['problem']} | {r['tuner']} | {diff('best')} "
            f"| {diff('last_population_mean')} | {ratio} |"
        )
    lines += [
        "",
        "Folded encodings against F: the class classifier, leave-one-problem-out (classes "
        "fixed at the default F), and which problem's search a network came from (encoding "
        "only, 5-fold, within each modality; chance = the largest problem's share):",
        "",
        "| F | class: problems right | class: networks right | which search | chance |",
        "|---|---|---|---|---|",
    ]
    for row in doc.get("classifier", []):
        lines.append(
            f"| {row['folding']} | {row['problem_accuracy']:.2f} | {row['network_accuracy']:.2f} "
            f"| {fmt(row.get('which_search'), 2)} | {fmt(row.get('which_search_chance'), 2)} |"
        )
    s = doc.get("screening", {})
    if s:
        lines += [
            "",
            f"Screening regressor, Spearman on each problem left out: mean "
            f"{fmt(s.get('spearman_mean'), 2)}, min {fmt(s.get('spearman_min'), 2)} over "
            f"{s.get('problems')} problems: "
            + ", ".join(f"{short(k)} {v:.2f}" for k, v in sorted(s.get("per_problem", {}).items())),
            "",
            "Classes: "
            + "; ".join(f"{k}: {', '.join(map(short, v))}" for k, v in s["classes"].items()),
        ]
    return "\n".join(lines)


def log_to_mlflow(doc: dict[str, Any], out: Path, uri: str | None) -> None:
    """Each search's figures, the classifier's accuracy against F (step: F), the screening
    correlation, the tables and ``minibench.json``."""
    metrics: dict[str, float | None] = {}
    for r in doc["runs"]:
        key = f"{r['problem']}.{r['tuner']}.{r['space']}"
        for field in ("best", "last_population_mean", "epoch_seconds"):
            metrics[f"{key}.{field}"] = r.get(field)
    if doc.get("screening", {}).get("problems"):
        metrics["screening.spearman_mean"] = doc["screening"]["spearman_mean"]
    accuracy = [(row["folding"], row["problem_accuracy"]) for row in doc.get("classifier", [])]
    harness.log_to_mlflow(
        out,
        uri,
        benchmark="minibench",
        metrics=metrics,
        series={"classifier.problem_accuracy": accuracy},
        artifacts=[out / "minibench.md", out / "minibench.json"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "minibench")
    parser.add_argument("--budget", type=float, default=60.0, help="wall seconds per search")
    parser.add_argument("--image-budget", type=float, default=120.0, help="... on images")
    parser.add_argument(
        "--image-samples", type=int, default=1000, help="training images of a held-out search"
    )
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs everywhere")
    parser.add_argument(
        "--samples", type=int, default=2000, help="training examples of the larger problems"
    )
    parser.add_argument("--probe-trials", type=int, default=4)
    parser.add_argument("--held-out", nargs="*", default=HELD_OUT)
    parser.add_argument("--tuners", nargs="*", default=list(TUNERS))
    parser.add_argument("--foldings", nargs="*", type=int, default=[1, 2, 3, 4, 6, 8])
    parser.add_argument("--suite", nargs="*", default=None, help="suite problems (all)")
    parser.add_argument("--generations", type=int, default=3, help="of each DB search")
    parser.add_argument(
        "--quick", action="store_true", help="two held-out problems, 20 s, CoDeepNEAT"
    )
    parser.add_argument("--report", action="store_true", help="print the tables, run nothing")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.quick:
        args.held_out, args.tuners, args.budget = (
            ["mnist1d", "review_sentiment"],
            ["codeepneat"],
            20.0,
        )
        args.image_budget, args.image_samples = 20.0, 200
        args.samples, args.generations, args.foldings = min(args.samples, 400), 1, [1, 4]
        args.suite = [
            "digits",
            "iris",
            "mnist1d",
            "ppg_heart_rate",
            "grammar_acceptability",
            "review_sentiment",
        ]
    if args.report:  # the DB figures are cheap: computed again from the DB
        doc = json.loads((args.out / "minibench.json").read_text())
        if (args.out / "minibench.db").exists():
            doc["classifier"], doc["screening"] = db_figures(args.out, {}, args.foldings)
        for r in doc["runs"]:  # runs judged before the metric was kept
            study = args.out / "runs" / r["problem"] / r["tuner"] / r["space"] / "nasfw.db"
            if "metric" not in r and study.exists():
                r["metric"] = metric_of(f"sqlite:///{study}", "bench")
        (args.out / "minibench.json").write_text(json.dumps(doc, indent=2))
    else:
        doc = run_all(args)
    markdown = tables(doc)
    (args.out / "minibench.md").write_text(markdown + "\n")
    print(markdown)
    if not args.report:
        log_to_mlflow(doc, args.out, args.tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
