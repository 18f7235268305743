"""``search_space=auto`` on a table family through the CLI: the probe is the most informative
reference networks (generation -1), the nearest DB problems by Kendall tau give a constraint
set spanning their best networks, a resume keeps it; with no DB problem alike enough the full
space, said so; with ``minibench.warm_start=true`` the same probe and nearest problems give
the donors; bad input exits 2 before the study exists."""

from __future__ import annotations

import json
import shutil

import pytest
from cli import nasfw, trials
from minibench_cli import build_table_db
from omegaconf import OmegaConf

from nasfw.graph import ArchGraph
from nasfw.ledger import GRAPH_ATTR
from nasfw.minibench import transfer
from nasfw.minibench.auto import CHOICE_ATTR
from nasfw.minibench.db import BestModelDB
from nasfw.minibench.references import informative, space_config, space_of
from nasfw.registry import registry

PROBE = 5


@pytest.fixture(scope="module")
def table_db(tmp_path_factory):
    """A DB of two NB201 tables and two FCNet tables (nb201_cifar10, fcnet_naval held out)."""
    return build_table_db(
        tmp_path_factory.mktemp("tables"),
        ["nb201_cifar100", "nb201_imagenet16", "fcnet_protein", "fcnet_slice"],
    )


def run(tmp_path, db, *args):
    """``search_space=auto`` on nb201_cifar10 (evolution, 10 evaluations after the probe) on
    a copy of ``db`` (None: the copy already there)."""
    if db is not None:
        shutil.copy(db, tmp_path / "minibench.db")
    return nasfw(
        tmp_path,
        "problem=nb201_cifar10",
        "search_space=auto",
        "tuner=evolution",
        "tuner.population_size=6",
        "tuner.n_trials=10",
        f"minibench.probe_trials={PROBE}",
        "study_name=au",
        "tracking=none",
        *args,
    )


def attrs(tmp_path) -> dict:
    from nasfw.ledger import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'nasfw.db'}")
    found = storage.get_study_system_attrs(storage.get_study_id_from_name("au"))
    return {k: json.loads(found[k]) for k in (CHOICE_ATTR, transfer.CHOICE_ATTR) if k in found}


def graphs_of(tmp_path, generation: int) -> list[ArchGraph]:
    """A generation's networks, in the order they were proposed."""
    found = [
        t
        for t in trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "au")
        if t.user_attrs["generation"] == generation
    ]
    found.sort(key=lambda t: t.user_attrs["index"])
    return [ArchGraph.from_json(t.system_attrs[GRAPH_ATTR]) for t in found]


def test_the_probe_finds_the_nearest_problems_and_the_space_spans_their_best(table_db, tmp_path):
    out = run(tmp_path, table_db)
    assert out.returncode == 0, out.stderr[-2000:]
    choice = attrs(tmp_path)[CHOICE_ATTR]
    db = BestModelDB(str(tmp_path / "minibench.db"), must_exist=True)
    refs = db.references("nasbench201")
    scores = db.reference_scores("nasbench201")
    best = {pid: [m.graph for m in db.models(pid)] for pid in scores}
    db.close()
    # The probe: the PROBE most informative of the 12 references, generation -1.
    picked = informative(scores, PROBE)
    assert [g.hash for g in graphs_of(tmp_path, -1)] == [refs[i].hash for i in picked]
    assert len(choice["probe_trials"]) == PROBE
    # Nearest: the NB201 tables only (FCNet is another family), most alike first.
    assert choice["family"] == "nasbench201" and choice["fallback"] is None
    taus = [tau for _, tau in choice["nearest"]]
    assert {pid for pid, _ in choice["nearest"]} <= {"nb201_cifar100", "nb201_imagenet16"}
    assert taus == sorted(taus, reverse=True) and choice["class"] == "nearest"
    assert choice["problems"] and all(tau >= 0.3 for tau in taus[: len(choice["problems"])])
    # The constraint set holds every best network of the problems it comes from, and nothing
    # the full space lacks; the search stayed in it.
    chosen = registry().space(OmegaConf.merge(space_config("nasbench201"), choice["space"]))
    assert chosen.name == "auto_nasbench201"
    used = {g[n].op for pid in choice["problems"] for g in best[pid] for n in chosen.genes()}
    assert set(chosen.config.ops) == used
    for graph in graphs_of(tmp_path, 0) + graphs_of(tmp_path, 1):
        chosen.check(graph)
    said = " ".join(out.stderr.split())
    assert "search_space=auto: class nearest (tau" in said
    assert f"nearest DB problems {choice['nearest'][0][0]} (tau" in said
    written = OmegaConf.load(next((tmp_path / "outputs").rglob("search_space.yaml")))
    assert OmegaConf.to_container(written) == choice["space"]

    # A resume keeps the choice even when the DB loses the problems it came from.
    db = BestModelDB(str(tmp_path / "minibench.db"), must_exist=True)
    for pid in choice["problems"]:
        db.remove(pid)
    db.close()
    again = run(tmp_path, None)
    assert again.returncode == 0, again.stderr[-2000:]
    assert attrs(tmp_path)[CHOICE_ATTR] == choice
    assert len(graphs_of(tmp_path, -1)) == PROBE  # not probed again


def test_no_similar_problem_searches_the_full_space_and_says_so(table_db, tmp_path):
    out = run(tmp_path, table_db, "minibench.min_similarity=1.0")
    assert out.returncode == 0, out.stderr[-2000:]
    choice = attrs(tmp_path)[CHOICE_ATTR]
    assert choice["class"] == "full" and choice["problems"] == []
    assert "tau >= minibench.min_similarity=1" in choice["fallback"]
    assert choice["space"]["ops"] == list(space_of("nasbench201").config.ops)
    said = " ".join(out.stderr.split())
    assert "search_space=auto: the full space: no nasbench201 problem of the DB" in said
    written = OmegaConf.load(next((tmp_path / "outputs").rglob("search_space.yaml")))
    assert written.name == "nasbench201"


def test_warm_start_with_auto_uses_the_same_probe_and_nearest_problems(table_db, tmp_path):
    out = run(tmp_path, table_db, "problem=fcnet_naval", "minibench.warm_start=true",
              "minibench.donors=2")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = attrs(tmp_path)
    auto, warm = found[CHOICE_ATTR], found[transfer.CHOICE_ATTR]
    assert auto["family"] == warm["family"] == "fcnet"
    assert len(graphs_of(tmp_path, -1)) == PROBE  # one probe, not auto's then the warm one's
    assert warm["probe_trials"] == auto["probe_trials"]
    assert [pid for pid, _ in warm["donors"]] == auto["problems"] and warm["seeds"]
    first = [g.hash for g in graphs_of(tmp_path, 0)]
    assert ArchGraph.from_json(warm["seeds"][0]).hash == first[0]  # seeded from the donors

    # Where auto fell back to the full space, the start is cold too (no dissimilar donors).
    cold = tmp_path / "cold"
    cold.mkdir()
    out = run(cold, table_db, "problem=fcnet_naval", "minibench.warm_start=true",
              "minibench.min_similarity=1.0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    warm = attrs(cold)[transfer.CHOICE_ATTR]
    assert warm["seeds"] == [] and "search_space=auto found no similar problem" in warm["cold"]


@pytest.mark.parametrize(
    ("arg", "key"),
    [
        ("minibench.probe_trials=0", "minibench.probe_trials"),
        ("minibench.min_similarity=1.5", "minibench.min_similarity"),
        ("minibench.min_similarity=-2", "minibench.min_similarity"),
    ],
)
def test_bad_input_exits_2_naming_the_key_before_the_study_exists(tmp_path, arg, key):
    out = run(tmp_path, None, arg)
    assert out.returncode == 2, out.stderr[-2000:]
    assert key in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nasfw.db").exists()


def test_mlflow_shows_the_nearest_problems(table_db, tmp_path):
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run(tmp_path, table_db, "tracking=mlflow", f"tracking.tracking_uri={tracking}")
    assert out.returncode == 0, out.stderr[-2000:]
    choice = attrs(tmp_path)[CHOICE_ATTR]
    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    params = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags).data.params
    assert params["auto.nearest"] == ",".join(f"{p}:{t:.3f}" for p, t in choice["nearest"])
    assert params["auto.class"] == "nearest" and params["auto.fallback"] == "no"
