"""``minibench.warm_start=true`` through the CLI: the references probed as generation -1, the
nearest DB problems as donors, their best networks as the tuner's first proposals, the
choice kept by a resume; a DB without the family gives a cold start; bad input exits 2."""

from __future__ import annotations

import json
import shutil

import pytest
from cli import nasfw, trials
from minibench_cli import build_table_db

from nasfw.graph import ArchGraph
from nasfw.ledger import GRAPH_ATTR
from nasfw.minibench.db import BestModelDB
from nasfw.minibench.transfer import CHOICE_ATTR


@pytest.fixture(scope="module")
def table_db(tmp_path_factory):
    """A DB of two NB201 tables and one FCNet table (nb201_cifar10 held out)."""
    return build_table_db(
        tmp_path_factory.mktemp("tables"), ["nb201_cifar100", "nb201_imagenet16", "fcnet_protein"]
    )


def run(tmp_path, db, *args):
    """The search on nb201_cifar10 with the warm start, on a copy of ``db`` (None: the copy
    already there)."""
    if db is not None:
        shutil.copy(db, tmp_path / "minibench.db")
    return nasfw(
        tmp_path,
        "problem=nb201_cifar10",
        "search_space=nasbench201",
        "minibench.warm_start=true",
        "minibench.donors=2",
        "study_name=ws",
        "tracking=none",
        *args,
    )


def choice_of(tmp_path) -> dict:
    from nasfw.ledger import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'nasfw.db'}")
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("ws"))
    return json.loads(attrs[CHOICE_ATTR])


@pytest.mark.parametrize(
    "tuner",
    [
        ["tuner=evolution", "tuner.population_size=6", "tuner.n_trials=10"],
        ["tuner=tpe", "tuner.n_trials=8", "tuner.batch_size=4"],
        ["tuner=random", "tuner.n_trials=8", "tuner.batch_size=4"],
    ],
    ids=["evolution", "tpe", "random"],
)
def test_the_first_proposals_are_the_nearest_problems_best_networks(table_db, tmp_path, tuner):
    out = run(tmp_path, table_db, *tuner)
    assert out.returncode == 0, out.stderr[-2000:]
    said = " ".join(out.stderr.split())
    assert "minibench.warm_start: 12 reference networks probed; donors nb201_" in said
    choice = choice_of(tmp_path)
    # The donors are the two NB201 tables (FCNet is another family), nearest first.
    assert {pid for pid, _ in choice["donors"]} == {"nb201_cifar100", "nb201_imagenet16"}
    assert choice["cold"] is None and choice["family"] == "nasbench201"
    db = BestModelDB(str(tmp_path / "minibench.db"), must_exist=True)
    best = {pid: [m.graph for m in db.models(pid)] for pid, _ in choice["donors"]}
    refs = db.references("nasbench201")
    db.close()
    seeds = [ArchGraph.from_json(g) for g in choice["seeds"]]
    first, second = (pid for pid, _ in choice["donors"])
    # Interleaved by rank (each donor's best, then each one's second, ...), each once.
    expected: list[str] = []
    for pair in zip(best[first], best[second], strict=False):
        for graph in pair:
            if graph.hash not in expected:
                expected.append(graph.hash)
    assert [g.hash for g in seeds] == expected
    stored = trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "ws")

    def of(generation: int) -> list[str]:
        """The hashes of a generation's networks, in the order they were proposed."""
        found = [t for t in stored if t.user_attrs["generation"] == generation]
        found.sort(key=lambda t: t.user_attrs["index"])
        return [ArchGraph.from_json(t.system_attrs[GRAPH_ATTR]).hash for t in found]

    assert of(-1) == [g.hash for g in refs]  # the probe: every reference, generation -1
    n = min(4, len(expected))
    assert of(0)[:n] == expected[:n]  # then the seeds, first


def test_a_resume_keeps_the_choice(table_db, tmp_path):
    args = ["tuner=evolution", "tuner.population_size=6", "tuner.n_trials=10"]
    assert run(tmp_path, table_db, *args).returncode == 0
    first = choice_of(tmp_path)
    # The DB loses the donors: the rerun (a resume) keeps its stored choice.
    db = BestModelDB(str(tmp_path / "minibench.db"), must_exist=True)
    for pid, _ in first["donors"]:
        db.remove(pid)
    db.close()
    out = run(tmp_path, None, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert choice_of(tmp_path) == first and "cold start" not in out.stderr
    assert len(trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "ws")) == 12 + 10


def test_a_db_without_the_family_is_a_cold_start_said_so(table_db, tmp_path):
    out = run(
        tmp_path, table_db, "problem=hpobench_car", "search_space=hpobench_mlp", "tuner=random",
        "tuner.n_trials=4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cold start: the DB" in out.stderr and "hpobench_mlp" in out.stderr
    assert choice_of(tmp_path)["seeds"] == []
    assert len(trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "ws")) == 4  # no probe


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["tuner=random", "minibench.db=nowhere.db"], "minibench.db=nowhere.db"),
        (["tuner=random", "minibench.donors=0"], "minibench.donors"),
        (["tuner=hyperband"], "minibench.warm_start=true: tuner=hyperband"),
    ],
)
def test_bad_input_exits_2_naming_the_key_before_the_study_exists(tmp_path, args, key):
    out = nasfw(
        tmp_path,
        "problem=nb201_cifar10",
        "search_space=nasbench201",
        "minibench.warm_start=true",
        "tracking=none",
        *args,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert key in out.stderr
    assert not (tmp_path / "nasfw.db").exists()


def test_mlflow_shows_the_donors(table_db, tmp_path):
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run(
        tmp_path, table_db, "tuner=random", "tuner.n_trials=4", "tracking=mlflow",
        f"tracking.tracking_uri={tracking}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    choice = choice_of(tmp_path)
    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    params = parent.data.params
    assert params["warm_start.donors"] == ",".join(f"{p}:{t:.3f}" for p, t in choice["donors"])
    assert params["warm_start.seeds"] == str(len(choice["seeds"]))
    assert params["warm_start.cold"] == "no"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "warm_start")}
    assert artifacts == {"warm_start/choice.json"}
