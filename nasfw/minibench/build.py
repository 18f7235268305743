"""``python -m nasfw mode=minibench``: build (or extend, or resume) the best-model DB.

Each entry of ``minibench.problems`` gets one full, unconstrained search (the run's tuner,
launcher, storage and tracking; the modality's full space of ``minibench.spaces``, or for a
tabular benchmark the space its table holds) in its own
study ``minibench-<entry>-<space>-<tuner>-seed<seed>-<hash of the search's settings>``; its
``minibench.top_k`` best networks go into the DB (``minibench.db``) with the problem's
meta-features. An entry the DB already holds from a search with the same settings is skipped,
so a rerun resumes where it stopped (an interrupted search resumes too: it is an ordinary
study). Each table problem also scores its space family's reference networks
(:mod:`nasfw.minibench.references`; chosen when the family first enters the DB), and its
nearest DB problems by their ranking are printed, with each family's classes by that ranking
and how well a probe recognises them (leave one problem out, against the majority class).
Then the problems are grouped into
classes, each class's constraint set is written as ``search_space/<class>.yaml`` under
``minibench.spaces_dir``, and the classifier's leave-one-problem-out accuracy is reported.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from nasfw.config import ConfigError, ProblemConfig


def parse_entry(entry: str, key: str) -> tuple[str, dict[str, Any]]:
    """``"digits_noisy:noise=0.5,split_seed=1"`` -> ``("digits_noisy", {"noise": 0.5, ...})``.

    Raises:
        ConfigError: naming ``key`` when the entry is malformed.
    """
    import yaml

    name, _, rest = entry.partition(":")
    name = name.strip()
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"{key}={entry!r}: expected <problem>[:<key>=<value>,...]")
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        setting, eq, value = item.partition("=")
        if not eq or not setting.strip():
            raise ConfigError(f"{key}={entry!r}: {item!r} is not <key>=<value>")
        settings[setting.strip()] = yaml.safe_load(value)
    return name, settings


def problem_node(entry: str, key: str) -> Any:
    """The ``problem`` config of one suite entry: its preset with the entry's settings,
    checked against the preset's schema (types and ranges).

    Raises:
        ConfigError: naming ``key``: an unknown problem, an unknown or mistyped setting.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nasfw.config import check_settings
    from nasfw.registry import preset, registry

    name, settings = parse_entry(entry, key)
    node = preset("problem", name)
    if node is None or ("problem", name) not in registry().configs:
        known = sorted(n for g, n in registry().configs if g == "problem")
        raise ConfigError(f"{key}={entry!r}: no problem {name!r} (problems: {known})")
    try:
        base = node if OmegaConf.get_type(node) not in (None, dict) else ProblemConfig
        merged = OmegaConf.merge(OmegaConf.structured(base), node, settings)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}={entry!r}: {str(err).splitlines()[0]}") from None
    check_settings(merged, key)
    return merged


def entry_id(entry: str) -> str:
    """The entry as the DB names the problem (settings sorted, spaces removed)."""
    name, settings = parse_entry(entry, "minibench.problems")
    text = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(settings.items()))
    return f"{name}:{text}" if text else name


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def build_db(cfg: Any, output_dir: Path, console: Any = None) -> dict[str, Any]:
    """Run the suite, fill the DB, derive the classes; return the report (also written to
    ``<output_dir>/minibench.json``).

    Raises:
        ConfigError: a bad suite entry or setting (before anything is searched).
    """
    from omegaconf import OmegaConf, open_dict
    from rich.console import Console

    from nasfw.config import Mode, SearchSpaceConfig, check_settings
    from nasfw.evaluate import load_problem
    from nasfw.ledger import absolute_url
    from nasfw.minibench.auto import AUTO, full_space
    from nasfw.minibench.db import BestModelDB, ModelEntry, ProblemEntry
    from nasfw.minibench.encoding import ProblemMeta
    from nasfw.minibench.references import space_config
    from nasfw.problem import DataError
    from nasfw.search import fingerprint, run_search

    console = console or Console(stderr=True)
    check_settings(cfg)
    mb = cfg.minibench
    if not mb.problems:
        raise ConfigError("minibench.problems is empty: list the suite's problems")
    if str(cfg.search_space.name) == AUTO:
        raise ConfigError(
            "search_space=auto cannot build the DB it needs: mode=minibench "
            "searches each problem in minibench.spaces"
        )
    # Every entry is checked, and its data loaded, before the first search starts.
    plans = []
    for i, entry in enumerate(mb.problems):
        key = f"minibench.problems[{i}]"
        node = problem_node(str(entry), key)
        try:
            problem = load_problem(OmegaConf.to_object(node))  # type: ignore[arg-type]
            if problem.table is not None:
                # A table's family is the space its table holds: the modality's space does
                # not fit it.
                space = space_config(problem.table.space)
            else:
                space = OmegaConf.merge(
                    OmegaConf.structured(SearchSpaceConfig), full_space(cfg, problem.modality)
                )
        except (ConfigError, DataError) as err:
            # The entry named first: which of the suite's problems the error is about.
            raise type(err)(f"{key}={entry!r}: {err}") from None
        pid = entry_id(str(entry))
        sub = cfg.copy()
        with open_dict(sub):
            sub.mode = Mode.search
            sub.problem = node
            sub.search_space = space
            sub.export_dir = str(output_dir / "minibench" / _slug(pid) / "best_model")
        # Other search settings are another search: a study of their own, never a refusal.
        digest = hashlib.sha256(
            json.dumps(fingerprint(sub), sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        with open_dict(sub):
            sub.study_name = (
                f"minibench-{_slug(pid)}-{space.name}-{cfg.tuner.name}-seed{cfg.seed}-{digest}"
            )
        plans.append((pid, node, problem, sub, digest))
    ids = [p[0] for p in plans]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"minibench.problems lists a problem twice: {ids}")
    _check_files(cfg)
    db = BestModelDB(str(mb.db))
    report: dict[str, Any] = {"db": str(mb.db), "problems": {}}
    try:
        for pid, node, problem, sub, digest in plans:
            known = db.get(pid)
            if known is not None and known.fingerprint == digest:
                console.print(f"minibench: {pid} is in the DB already (study {known.study})")
                report["problems"][pid] = {"skipped": True, "study": known.study}
                continue
            console.print(
                f"minibench: searching {pid} ({problem.modality}, {sub.search_space.name}, "
                f"study {sub.study_name})"
            )
            started = time.perf_counter()
            context = run_search(sub, output_dir / "minibench" / _slug(pid), console)
            full = context.full_budget()
            trained = [
                t
                for t in context.history
                if t.result.ok and t.exportable and t.result.trained_budget >= full
            ]
            ranked = sorted(trained, key=lambda t: t.rank, reverse=True)

            def entry_of(t: Any, rank: int, pid: str = pid) -> ModelEntry:
                return ModelEntry(
                    problem_id=pid,
                    rank=rank,
                    graph=t.graph,
                    value=float(t.result.metric),
                    flops=t.result.flops,
                    params=t.result.n_params,
                    epoch_seconds=t.result.train_seconds / max(1, t.result.epochs),
                    trial=t.number,
                )

            models = [entry_of(t, r) for r, t in enumerate(ranked[: int(mb.top_k)])]
            # Reused evaluations are the same network twice: once is what was learnt.
            unique = {t.key: t for t in reversed(trained)}.values()
            evaluations = [entry_of(t, -1) for t in sorted(unique, key=lambda t: t.number)]
            settings = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
            assert isinstance(settings, dict)
            db.put(
                ProblemEntry(
                    id=pid,
                    problem=str(node.name),
                    meta=ProblemMeta.of(problem),
                    metric=problem.metric,
                    settings=settings,
                    tuner=str(cfg.tuner.name),
                    search_space=str(sub.search_space.name),
                    study=str(sub.study_name),
                    storage=absolute_url(str(cfg.storage.url)),
                    fingerprint=digest,
                    trials=len(context.history),
                    search_seconds=time.perf_counter() - started,
                ),
                models,
                evaluations,
            )
            report["problems"][pid] = {
                "study": str(sub.study_name),
                "best": models[0].value if models else None,
                "kept": len(models),
            }
        report["references"] = score_references(
            cfg, db, [(pid, problem) for pid, _, problem, _, _ in plans], console
        )
        report.update(classify_db(cfg, db, console))
    finally:
        db.close()
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "minibench.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def score_references(
    cfg: Any, db: Any, problems: list[tuple[str, Any]], console: Any
) -> dict[str, Any]:
    """Score each table problem of ``problems`` (``(id, loaded problem)``) that lacks scores
    on its family's reference networks (chosen and stored first when the family is new to
    the DB), then print each scored problem's nearest DB problems and the family's classes
    by reference ranking with their leave-one-problem-out accuracy from a
    ``minibench.probe_trials`` probe against the majority-class baseline
    (:func:`nasfw.minibench.references.classify_leave_one_out`). Returns, per family, its
    reference count, each problem's nearest ``[id, tau]`` and scoring seconds, ``classes``
    and ``leave_one_out``.

    Non-table problems are skipped: scoring references by training is a later increment.
    """
    from rich.markup import escape

    from nasfw.minibench.references import (
        choose_references,
        classify_leave_one_out,
        family_of,
        nearest,
        score_table,
        space_of,
    )

    n = int(cfg.minibench.references)
    scored = db.reference_scores()
    families: dict[str, list[str]] = {}
    for pid, problem in problems:
        if problem.table is None:
            continue
        family = family_of(problem)
        families.setdefault(family, []).append(pid)
        refs = db.references(family)
        if not refs:
            refs = choose_references(space_of(family), n)
            db.put_references(family, refs)
            console.print(f"minibench: {len(refs)} reference networks chosen for {family}")
        if len(scored.get(pid, {})) == len(refs):
            continue
        found = score_table(problem, refs)
        db.put_reference_scores(pid, family, [(i, v, s) for i, (v, s) in enumerate(found)])
    report: dict[str, Any] = {}
    seconds = db.reference_seconds()
    for family in sorted(families):
        all_scores = db.reference_scores(family)
        report[family] = {"references": len(db.references(family)), "problems": {}}
        for pid in sorted(all_scores):
            near = nearest(all_scores[pid], all_scores, exclude=[pid], k=3)
            report[family]["problems"][pid] = {
                "nearest": [[n.problem_id, round(n.tau, 3)] for n in near],
                "seconds": seconds.get(pid, 0.0),
            }
            console.print(
                escape(
                    f"minibench: {pid} ({family}) nearest by reference ranking: "
                    + (", ".join(f"{n.problem_id} (tau {n.tau:.2f})" for n in near) or "none")
                )
            )
        probe = int(cfg.minibench.probe_trials)
        found = classify_leave_one_out(all_scores, int(cfg.minibench.max_classes), probe)
        report[family]["classes"] = found["classes"]
        report[family]["leave_one_out"] = {
            "probe": probe,
            "accuracy": found["accuracy"],
            "baseline": found["baseline"],
        }
        console.print(
            escape(
                f"minibench: {family} classes by reference ranking: "
                + " ".join(f"[{', '.join(c)}]" for c in found["classes"])
                + f"; leave-one-problem-out from a {probe}-reference probe: "
                f"{found['accuracy']:.2f} of problems in their class (majority-class "
                f"baseline {found['baseline']:.2f})"
            )
        )
    return report


def _check_files(cfg: Any) -> None:
    """``minibench.db`` and ``storage.url`` are two files of their own kinds (checked before
    either is written: one file for both would mix a DB and a study ledger)."""
    from nasfw.dbfiles import sqlite_file
    from nasfw.minibench.db import db_url
    from nasfw.storage import check_sqlite_storage

    storage, db = sqlite_file(str(cfg.storage.url)), sqlite_file(db_url(str(cfg.minibench.db)))
    if storage is not None and db is not None and storage.absolute() == db.absolute():
        raise ConfigError(
            f"minibench.db={cfg.minibench.db} is the file of storage.url={cfg.storage.url}: "
            "the mini-benchmark DB and the Optuna storage need files of their own"
        )
    check_sqlite_storage(str(cfg.storage.url))


def spaces_dir(cfg: Any) -> Path:
    """Where the classes' constraint sets go: ``minibench.spaces_dir``, or
    ``<db stem>_spaces`` beside a SQLite DB file (``minibench_spaces`` in the working
    directory for a DB at another URL)."""
    mb = cfg.minibench
    if mb.spaces_dir:
        return Path(str(mb.spaces_dir)).expanduser().absolute()
    location = str(mb.db)
    if "://" in location and not location.startswith("sqlite:///"):
        return Path("minibench_spaces").absolute()
    path = Path(location.removeprefix("sqlite:///")).expanduser().absolute()
    return path.parent / f"{path.stem}_spaces"


def classify_db(cfg: Any, db: Any, console: Any) -> dict[str, Any]:
    """Group the DB's problems into classes, write their constraint sets, cross-validate the
    classifier; print a table. Returns ``classes`` and ``classifier`` for the report."""
    from omegaconf import OmegaConf
    from rich.table import Table

    from nasfw.minibench.auto import full_spaces
    from nasfw.minibench.classes import group_problems
    from nasfw.minibench.classify import cross_validate
    from nasfw.registry import registry

    mb = cfg.minibench
    ops = sorted(registry().ops)
    classes = group_problems(db, full_spaces(cfg), int(mb.folding), ops, int(mb.max_classes))
    folder = spaces_dir(cfg) / "search_space"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("mb_*.yaml"):  # regrouped: classes that are gone must not linger
        old.unlink()
    for c in classes:
        # Typed as the presets of conf/search_space/ are: by the schema they extend.
        node = {"defaults": ["/nasfw_search_space_schema@_here_", "_self_"], **c.space}
        OmegaConf.save(OmegaConf.create(node), folder / f"{c.name}.yaml")
    scores = cross_validate(db, classes, int(mb.folding), ops, int(cfg.seed)) if classes else {}
    from nasfw.minibench.screen import rank_correlation

    screening = (
        rank_correlation(db, int(mb.folding), ops, int(cfg.seed)) if db.evaluations() else {}
    )
    best = {p.problem_id: p.value for p in db.models() if p.rank == 0}
    table = Table(title=f"mini-benchmark DB {mb.db}: {len(best)} problems, {len(classes)} classes")
    for column in ("class", "modality", "problems (best val metric)", "ops"):
        table.add_column(column)
    for c in classes:
        table.add_row(
            c.name,
            c.modality,
            ", ".join(f"{p} ({best.get(p, float('nan')):.3f})" for p in c.problems),
            ", ".join(sorted({op for s in c.space["stages"] for op in s["ops"]})),
        )
    console.print(table)
    if scores:
        console.print(
            f"classifier (folding F={mb.folding}), leave-one-problem-out: "
            f"{scores['problem_accuracy']:.2f} of problems, {scores['network_accuracy']:.2f} "
            f"of single networks classified right"
        )
    from rich.markup import escape

    if screening.get("problems"):
        console.print(
            f"screening regressor, leave-one-problem-out Spearman: mean "
            f"{screening['spearman_mean']:.2f}, min {screening['spearman_min']:.2f} over "
            f"{screening['problems']} problems"
        )
    console.print(
        escape(
            f"constraint sets: {folder} (use: python -m nasfw "
            f"hydra.searchpath=[file://{folder.parent}] search_space=<class>)"
        )
    )
    return {
        "classes": [
            {"name": c.name, "modality": c.modality, "problems": c.problems} for c in classes
        ],
        "classifier": {"folding": int(mb.folding), **scores},
        "screening": screening,
        "spaces_dir": str(folder.parent),
    }
