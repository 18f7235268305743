"""Asynchronous evaluation (``tuner.asynchronous=true``) through the search and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli import compose, nasfw

from nasfw.ledger import Ledger

IRIS = [
    "problem=iris",
    "search_space=tabular_mlp",
    "train.epochs=1",
]


def test_an_asynchronous_search_keeps_generations_of_finished_results(tmp_path: Path) -> None:
    """Regularized evolution with two workers: every trial is stored, generation g holds the
    batch_size results that finished g-th, and each generation's MLflow run is closed."""
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    args = [
        *IRIS,
        "tuner=evolution",
        "tuner.asynchronous=true",
        "tuner.population_size=3",
        "tuner.sample_size=2",
        "tuner.n_trials=7",
        "tuner.batch_size=3",
        "launcher.workers=2",
        "study_name=async",
        f"storage.url={url}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.log_models=false",
    ]
    run = nasfw(tmp_path, *args)
    assert run.returncode == 0, run.stderr
    records = sorted(Ledger(url, "async").records(), key=lambda r: r.number)
    assert [r.generation for r in records] == [0, 0, 0, 1, 1, 1, 2]
    assert [r.index for r in records] == [0, 1, 2, 0, 1, 2, 0]
    # Children exist, and each names a parent that had been told before it was asked.
    children = [r for r in records if r.attrs.get("parent")]
    assert len(children) == 4
    for child in children:
        parent = next(r for r in records if r.graph.hash == child.attrs["parent"])
        assert parent.result.finished <= child.result.started
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    generations = {
        r.data.tags["nasfw.generation"]: r for r in runs if "nasfw.generation" in r.data.tags
    }
    assert sorted(generations) == ["0", "1", "2"]
    assert {r.info.status for r in generations.values()} == {"FINISHED"}
    assert generations["2"].data.metrics["n_ok"] + generations["2"].data.metrics["n_failed"] == 1


def test_a_kill_before_the_state_is_saved_loses_no_finished_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after generation 1's results were stored but before its state was: the resume
    tells them to the tuner restored at generation 0, trains none of them again, and ends
    with n_trials evaluations."""
    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    cfg = compose(
        *IRIS,
        "tuner=random",
        "tuner.asynchronous=true",
        "tuner.n_trials=7",
        "tuner.batch_size=3",
        "launcher.workers=0",
        "tracking=none",
        "study_name=killed",
        f"storage.url={url}",
    )
    save_state = Ledger.save_state

    def killed_at_generation_1(self: Ledger, generation: int, *args: object, **kw: object) -> None:
        if generation == 1:
            raise KeyboardInterrupt
        save_state(self, generation, *args, **kw)

    monkeypatch.setattr(Ledger, "save_state", killed_at_generation_1)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path)
    before = sorted(Ledger(url, "killed").records(), key=lambda r: r.number)
    assert len(before) == 6
    monkeypatch.setattr(Ledger, "save_state", save_state)

    context = run_search(cfg, tmp_path)
    records = sorted(context.history, key=lambda r: r.number)
    assert [r.generation for r in records] == [0, 0, 0, 1, 1, 1, 2]
    # The six stored results are kept as they were; one evaluation was added.
    assert [(r.number, r.key, r.result.metric) for r in records[:6]] == [
        (r.number, r.key, r.result.metric) for r in before
    ]
    generation, state = Ledger(url, "killed").load_state()
    assert generation == 2 and state["told"] == 7


def test_asynchronous_with_a_pruner_is_refused_naming_both(tmp_path: Path) -> None:
    from nasfw import ConfigError
    from nasfw.search import run_search

    cfg = compose(
        *IRIS,
        "tuner=evolution",
        "tuner.asynchronous=true",
        "pruner=median",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
        "tracking=none",
    )
    with pytest.raises(
        ConfigError, match=r"tuner\.asynchronous=true cannot be combined with pruner=median"
    ):
        run_search(cfg, tmp_path)
    assert not (tmp_path / "nasfw.db").exists()  # refused before the study exists


def test_a_tuner_that_proposes_generations_has_no_asynchronous_setting(tmp_path: Path) -> None:
    run = nasfw(tmp_path, *IRIS, "tuner=codeepneat", "tuner.asynchronous=true")
    assert run.returncode != 0
    assert "tuner.asynchronous" in run.stderr
