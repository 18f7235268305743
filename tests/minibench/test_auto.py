"""``search_space=auto`` through the CLI: probe, classify, search in the chosen class's
constraint set; kept on resume; refused with the key named when the DB cannot serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli import nasfw, trials
from omegaconf import OmegaConf

from nasfw.config import SearchSpaceConfig
from nasfw.minibench.auto import CHOICE_ATTR

SEARCH = [
    "search_space=auto",
    "tuner=random",
    "tuner.n_trials=4",
    "tuner.batch_size=4",
    "train.epochs=1",
    "launcher.workers=0",
    "tracking=none",
    "minibench.probe_trials=3",
]


def copy_db(built: tuple[Path, str], to: Path) -> None:
    """The session's DB (and the constraint sets beside it) in a folder of the test's own."""
    shutil.copy(built[0] / "minibench.db", to / "minibench.db")


def stored_choice(url: str, study: str) -> dict:

    from nasfw.ledger import open_storage

    storage = open_storage(url)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study))
    return json.loads(attrs[CHOICE_ATTR])


def the_space(choice: dict):
    from nasfw.registry import registry
    from nasfw.search_space import SearchSpace

    node = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), choice["space"])
    return SearchSpace(node, registry().ops)


@pytest.mark.parametrize(
    ("problem", "modality"),
    [
        ("breast_cancer", "tabular"),
        pytest.param("digits_shifted", "image", marks=pytest.mark.slow),
    ],
)
def test_auto_probes_classifies_and_searches_in_the_chosen_class(
    built, tmp_path, problem, modality
):
    copy_db(built, tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = modality == "tabular"  # MLflow on for one of the two (it costs seconds)
    args = [a for a in SEARCH if not (tracked and a == "tracking=none")]
    if tracked:
        args.append(f"tracking.tracking_uri={tracking}")
    out = nasfw(tmp_path, *args, f"problem={problem}")
    assert out.returncode == 0, out.stderr
    study = f"random-{problem}-auto-seed0"
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    choice = stored_choice(url, study)
    assert choice["class"].startswith(f"mb_{modality}_")
    assert 0 < choice["confidence"] <= 1 and choice["problems"]
    assert choice["space"]["modalities"] == [modality]
    log = " ".join((out.stderr + out.stdout).split())
    assert f"search_space=auto: class {choice['class']}" in log
    # The probe: trials of the study, generation -1, counted with the search's own.
    stored = trials(url, study)
    probe = [t for t in stored if t.user_attrs["generation"] == -1]
    assert len(probe) == 3 and sorted(choice["probe_trials"]) == sorted(t.number for t in probe)
    assert len(stored) == 3 + 4
    assert f"{len(stored)} evaluations" in log
    # The search's networks lie in the chosen constraint set; the probe's in the full space.
    space = the_space(choice)
    for trial in stored:
        if trial.user_attrs["generation"] >= 0:
            from nasfw.graph import ArchGraph
            from nasfw.ledger import GRAPH_ATTR

            space.check(ArchGraph.from_json(trial.system_attrs[GRAPH_ATTR]))
    # Written beside the run, as an ordinary search space.
    [written] = tmp_path.glob("outputs/*/*/search_space.yaml")
    assert OmegaConf.to_container(OmegaConf.load(written)) == choice["space"]
    if tracked:
        assert_logged_to_mlflow(tracking, study, choice)


def assert_logged_to_mlflow(tracking: str, study: str, choice: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["auto.class"] == choice["class"]
    assert float(parent.data.params["auto.confidence"]) == pytest.approx(choice["confidence"])
    assert parent.data.params["auto.probe_trials"] == "3"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "auto")}
    assert artifacts == {"auto/choice.json", "auto/search_space.yaml"}
    # The generation first, then the seed and the rest of the study's name (names are cut to
    # a column's width in MLflow's run list).
    seed = study.rsplit("-", 1)[1]
    names = {r.info.run_name for r in runs}
    assert f"probe (gen -1) · {seed} · {study.rsplit('-', 1)[0]}" in names


@pytest.mark.slow  # ~30 s; suite time
def test_a_resumed_search_keeps_its_class_whatever_the_db_holds_by_then(built, tmp_path):
    copy_db(built, tmp_path)
    first = nasfw(tmp_path, *SEARCH, "problem=breast_cancer", "tuner.n_trials=4")
    assert first.returncode == 0, first.stderr
    url, study = f"sqlite:///{tmp_path / 'nasfw.db'}", "random-breast_cancer-auto-seed0"
    choice = stored_choice(url, study)
    # The DB grows meanwhile (another tabular problem, from its own suite search).
    grown = nasfw(
        tmp_path,
        "mode=minibench",
        "minibench.problems=[diabetes]",
        "tuner=random",
        "tuner.n_trials=2",
        "tuner.batch_size=2",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
    )
    assert grown.returncode == 0, grown.stderr
    resumed = nasfw(tmp_path, *SEARCH, "problem=breast_cancer")
    assert resumed.returncode == 0, resumed.stderr
    assert stored_choice(url, study) == choice
    assert "probe" not in resumed.stderr and "generation -1" not in resumed.stderr
    assert len([t for t in trials(url, study) if t.user_attrs["generation"] == -1]) == 3


@pytest.mark.slow
def test_a_probe_cut_short_resumes_without_training_its_networks_twice(built, tmp_path):
    """Killed during the probe: the rerun reuses the probe networks that finished."""
    import signal
    import time

    from cli import start

    copy_db(built, tmp_path)
    url, study = f"sqlite:///{tmp_path / 'nasfw.db'}", "random-digits_shifted-auto-seed0"
    args = [*SEARCH, "problem=digits_shifted", "minibench.probe_trials=6", "train.epochs=3"]
    proc = start(tmp_path, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(trials(url, study)) >= 2:
                break
        except KeyError:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    before = {t.number: t.datetime_complete for t in trials(url, study)}
    assert 2 <= len(before) < 6
    out = nasfw(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    after = trials(url, study)
    probe = [t for t in after if t.user_attrs["generation"] == -1]
    assert len(probe) == 6
    for number, finished in before.items():  # not trained again
        assert next(t for t in after if t.number == number).datetime_complete == finished


def test_without_a_db_auto_is_refused_naming_the_key(tmp_path):
    out = nasfw(tmp_path, *SEARCH, "problem=iris", "minibench.db=nowhere.db")
    assert out.returncode == 2
    assert "minibench.db=nowhere.db" in out.stderr and "mode=minibench" in out.stderr
    assert not (tmp_path / "nasfw.db").exists()


def test_a_modality_the_db_lacks_is_refused_naming_the_db(built, tmp_path):
    copy_db(built, tmp_path)
    out = nasfw(tmp_path, *SEARCH, "problem=review_sentiment", "problem.n_samples=100")
    assert out.returncode == 2
    message = " ".join(out.stderr.split())
    assert "minibench.db=minibench.db: the DB holds no text problem" in message
    assert "image, tabular" in message
    assert not (tmp_path / "nasfw.db").exists()
