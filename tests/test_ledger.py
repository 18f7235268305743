from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from conftest import load_space

from nasfw import Candidate, RandomChooser, Result
from nasfw.ledger import (
    APPENDED_ATTR,
    ARCHITECTURE_LINE,
    CHECKPOINT_ATTR,
    Ledger,
    LedgerError,
    architecture_attrs,
    architecture_of,
    trial_extra,
)


@pytest.fixture
def candidate(ops):
    chooser = RandomChooser(np.random.default_rng(0))
    graph = load_space("image_small", ops).sample(chooser)
    return Candidate(graph, chooser.params, chooser.distributions, train={"lr": 0.01})


def test_records_round_trip(tmp_path, candidate):
    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study")
    ok = Result(
        status="ok",
        metric=0.75,
        loss=0.5,
        flops=1000,
        n_params=10,
        train_seconds=1.5,
        curve={1: 0.5, 2: 0.75},
    )
    first = ledger.record(candidate, ok, generation=0, index=0)
    second = ledger.record(candidate, Result.failed("diverged: loss nan"), generation=0, index=1)
    assert (first.number, second.number) == (0, 1)

    again = Ledger(url, "study").records()  # a fresh connection, as after a restart
    assert [r.number for r in again] == [0, 1]
    assert again[0].graph == candidate.graph
    assert again[0].result.metric == 0.75 and again[0].result.flops == 1000
    assert again[0].train == {"lr": 0.01}
    assert again[0].result.curve == {1: 0.5, 2: 0.75} and again[1].result.curve == {}
    assert not again[1].result.ok and again[1].result.error == "diverged: loss nan"

    study = optuna.load_study(study_name="study", storage=url)
    trials = study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    assert trials[0].params == candidate.params  # the graph's hyper-parameters
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.75}  # the learning curve
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["fail_reason"] == "diverged: loss nan"


def test_tuner_state_round_trip(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/s.db", "study")
    assert ledger.load_state() is None
    ledger.save_state(3, {"rng": [1, 2], "asked": 8})
    reopened = Ledger(f"sqlite:///{tmp_path}/s.db", "study")
    assert reopened.load_state() == (3, {"rng": [1, 2], "asked": 8})
    assert reopened.generation_seconds() == {}
    reopened.save_state(4, {"asked": 9}, {3: 1.5, 4: 2.25})
    assert Ledger(f"sqlite:///{tmp_path}/s.db", "study").generation_seconds() == {3: 1.5, 4: 2.25}


def test_the_series_saved_every_generation_read_back_whole(tmp_path):
    """generation_seconds and simulated_seconds, saved after each generation (appended to
    the text written before), read back as the whole series; a series changed otherwise is
    written anew."""
    ledger = Ledger(f"sqlite:///{tmp_path}/s.db", "study")
    seconds: dict[int, float] = {}
    clock: dict[int, float] = {}
    for generation in range(12):
        seconds[generation] = 0.5 + generation
        if generation % 3 == 0:
            clock[generation] = 100.0 * generation
        ledger.save_state(generation, {}, seconds, None, clock)
        assert ledger.generation_seconds() == seconds
        assert ledger.simulated_seconds() == clock
    seconds = {0: 9.0, 20: 1.0}  # a resumed search's series: another dict
    ledger.save_state(20, {}, seconds)
    assert Ledger(f"sqlite:///{tmp_path}/s.db", "study").generation_seconds() == seconds


def test_an_appended_list_is_written_by_its_new_entries_and_read_back_whole(tmp_path):
    """A list the tuner only appends to (Tuner.appended_state, tpe's results told) is written
    by the entries new since the last save; a save killed between its entries and its
    checkpoint leaves the state of the save before; a resumed ledger appends after it."""
    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study")
    told: list[dict[str, int]] = []
    for generation in range(5):
        told += [{"n": 2 * generation}, {"n": 2 * generation + 1}]
        ledger.save_state(generation, {"told": told, "g": generation}, appended=("told",))
    attrs = ledger.storage.get_study_system_attrs(ledger.study_id)
    chunks = {k: json.loads(v) for k, v in attrs.items() if k.startswith(APPENDED_ATTR)}
    assert chunks[f"{APPENDED_ATTR}:told@8"] == [{"n": 8}, {"n": 9}]  # only the new two
    assert sum(len(c) for c in chunks.values()) == 10  # each entry written once
    assert "told" not in json.loads(attrs[CHECKPOINT_ATTR])["state"]

    # Killed after writing generation 5's entries, before its checkpoint.
    ledger._set(f"{APPENDED_ATTR}:told@10", json.dumps([{"n": 10}, {"n": 11}]))
    reopened = Ledger(url, "study")
    assert reopened.load_state() == (4, {"told": told, "g": 4})
    told = [*told, {"n": 99}]
    reopened.save_state(5, {"told": told, "g": 5}, appended=("told",))
    assert Ledger(url, "study").load_state() == (5, {"told": told, "g": 5})


def test_fingerprint_mismatch_names_the_key(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/s.db", "study")
    ledger.check_fingerprint({"tuner": {"n_trials": 4, "name": "tpe"}, "seed": 0})
    ledger.check_fingerprint({"tuner": {"n_trials": 4, "name": "tpe"}, "seed": 0})
    with pytest.raises(LedgerError, match=r"tuner\.n_trials differ"):
        ledger.check_fingerprint({"tuner": {"n_trials": 9, "name": "tpe"}, "seed": 0})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-dir/x/nasfw.db",
        "postgresql+nosuchdriver://u@127.0.0.1:1/db",
        "not a url",
    ],
)
def test_storage_that_cannot_be_opened_names_storage_url(url):
    with pytest.raises(LedgerError, match=r"storage\.url="):
        Ledger(url, "study")


def test_journal_storage(tmp_path, candidate):
    url = f"journal://{tmp_path}/journal.log"
    Ledger(url, "study").record(candidate, Result(status="ok", metric=0.5), 0, 0)
    assert [r.result.metric for r in Ledger(url, "study").records()] == [0.5]


# -- trials written by the jobs of cluster launchers ----------------------------------------


class _Counting:
    """A picklable evaluator that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, candidate):
        self.calls += 1
        return Result(status="ok", metric=0.5, flops=7)


def test_stored_evaluation_writes_the_trial_once(tmp_path, candidate):
    from nasfw.job import StoredEvaluation, StoredResult

    url = f"sqlite:///{tmp_path}/s.db"
    evaluate = _Counting()
    job = StoredEvaluation(evaluate, url, "study", generation=2)
    first = job((3, candidate))
    assert isinstance(first, StoredResult) and first.metric == 0.5
    # A retried job (its first attempt was killed after writing) does not train again.
    again = job((3, candidate))
    assert evaluate.calls == 1 and again.trial_number == first.trial_number
    # The driver picks the trial up without writing a second one.
    driver = Ledger(url, "study")
    record = driver.record(candidate, again, generation=2, index=3)
    assert record.number == first.trial_number and type(record.result) is Result
    stored = optuna.load_study(study_name="study", storage=url).get_trials()
    assert len(stored) == 1 and stored[0].user_attrs["generation"] == 2
    assert job.key((3, candidate)) == f"study:2:3:{candidate.graph.hash}"


def test_stored_evaluation_without_storage_leaves_the_writing_to_the_driver(candidate):
    from nasfw.job import StoredEvaluation, StoredResult

    job = StoredEvaluation(_Counting(), "sqlite:////nonexistent/dir/x.db", "study", 0)
    result = job((0, candidate))
    assert result.ok and not isinstance(result, StoredResult)


def test_absolute_url(tmp_path, monkeypatch):
    from nasfw.ledger import absolute_url

    monkeypatch.chdir(tmp_path)
    assert absolute_url("sqlite:///nasfw.db") == f"sqlite:///{tmp_path}/nasfw.db"
    assert absolute_url("journal://j.log") == f"journal://{tmp_path}/j.log"
    assert absolute_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"


NON_FINITE = [
    (Result(status="ok", metric=float("nan"), loss=0.5), "metric", "non-finite metric (nan)"),
    (Result(status="ok", metric=0.9, loss=float("inf")), "loss", "non-finite loss (inf)"),
    (Result(status="ok", metric=-math.inf), "metric", "non-finite metric (-inf)"),
    (Result(status="ok", metric=0.9, regularized_score=math.nan), "regularized_score", "nan"),
    (Result(status="ok", metric=0.9, extra={"flops_after": math.inf}), "extra", "flops_after"),
    (Result(status="ok", metric=None), "metric", "no metric"),
]


@pytest.mark.parametrize(
    ("result", "field", "reason"), NON_FINITE, ids=[c[1] + str(i) for i, c in enumerate(NON_FINITE)]
)
def test_a_non_finite_number_makes_a_failed_trial(tmp_path, candidate, result, field, reason):
    url = f"sqlite:///{tmp_path}/s.db"
    record = Ledger(url, "study").record(candidate, result, generation=0, index=0)
    assert not record.result.ok and reason in record.result.error  # what the tuner is told
    (trial,) = optuna.load_study(study_name="study", storage=url).get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert reason in trial.user_attrs["fail_reason"]
    stored = [v for k, v in trial.user_attrs.items() if isinstance(v, float)]
    stored += [v for v in trial_extra(trial.user_attrs).values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in stored)  # JSON for optuna-dashboard: no NaN


def test_a_failed_result_keeps_its_reason_and_loses_non_finite_facts(tmp_path, candidate):
    url = f"sqlite:///{tmp_path}/s.db"
    diverged = Result.failed(
        "diverged: loss became inf", loss=math.inf, flops=10, epochs=2, curve={1: 0.4, 2: math.nan}
    )
    record = Ledger(url, "study").record(candidate, diverged, generation=0, index=0)
    assert record.result.error == "diverged: loss became inf"
    assert record.result.loss is None and record.result.flops == 10
    (trial,) = optuna.load_study(study_name="study", storage=url).get_trials()
    assert "loss" not in trial.user_attrs and trial.user_attrs["flops"] == 10
    assert trial.intermediate_values == {1: 0.4}


def test_a_trial_takes_its_times_from_the_evaluation(tmp_path, candidate):
    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study")
    timed = Result(status="ok", metric=0.5, started=1_700_000_000.25, finished=1_700_000_012.75)
    ledger.record(candidate, timed, generation=0, index=0)
    ledger.record(candidate, Result.failed("worker died"), generation=0, index=1)  # no times
    first, second = optuna.load_study(study_name="study", storage=url).get_trials()
    assert (first.datetime_complete - first.datetime_start).total_seconds() == 12.5
    assert first.datetime_start.timestamp() == 1_700_000_000.25
    assert second.datetime_start == second.datetime_complete  # unknown: stored when it came
    again = Ledger(url, "study").records()
    assert (again[0].result.started, again[0].result.finished) == (timed.started, timed.finished)


def test_nasfw_state_stays_out_of_the_user_attrs(tmp_path, candidate):
    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study")
    ledger.check_fingerprint({"seed": 0})
    ledger.save_state(0, {"asked": 4}, {0: 1.5})
    ledger.set_metric_name("val_accuracy")
    ledger.record(candidate, Result(status="ok", metric=0.5), generation=0, index=0)
    study = optuna.load_study(study_name="study", storage=url)
    assert study.user_attrs == {} and study.metric_names == ["val_accuracy"]
    (trial,) = study.get_trials()
    assert architecture_of(trial.user_attrs) == candidate.graph.summary()
    assert "graph" not in trial.user_attrs and "\n" not in trial.system_attrs["nasfw:graph"]
    assert len(trial.system_attrs["nasfw:graph"]) == len(candidate.graph.to_json())


def test_studies_written_before_the_move_still_resume(tmp_path, candidate):
    """Older nasfw kept its state in the study's user attrs and the graph in the trial's."""
    import json

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    study.set_user_attr("nasfw:fingerprint", {"seed": 0})
    study.set_user_attr("nasfw:tuner_state", json.dumps({"asked": 4}))
    study.set_user_attr("nasfw:last_generation", 0)
    attrs = {"generation": 0, "index": 0, "graph": candidate.graph.to_json(), "extra": {}}
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=attrs))
    ledger = Ledger(url, "old")
    ledger.check_fingerprint({"seed": 0})
    assert ledger.load_state() == (0, {"asked": 4})
    assert [r.graph for r in ledger.records()] == [candidate.graph]


def test_a_nan_point_of_a_learning_curve_is_dropped_not_failed(tmp_path, candidate):
    url = f"sqlite:///{tmp_path}/s.db"
    ok = Result(status="ok", metric=0.5, curve={1: math.nan, 2: 0.5})
    record = Ledger(url, "study").record(candidate, ok, generation=0, index=0)
    assert record.result.ok and record.result.curve == {2: 0.5}


def test_only_results_are_complete_so_optunas_best_is_nasfws(tmp_path, candidate):
    """A tuner's own training (exportable=False) and a network below the full budget are
    stored PRUNED with their score and the reason, read back as ok: Optuna's best trial (what
    optuna-dashboard shows as "Best Trial") is the best result, as nasfw's own best."""
    from dataclasses import replace

    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study", full_budget=3)
    own = replace(candidate, exportable=False)
    result = Result(status="ok", metric=0.6, epochs=3)
    ledger.record(candidate, result, generation=0, index=0)
    ledger.record(own, replace(result, metric=0.9), generation=0, index=1)
    ledger.record(candidate, replace(result, metric=0.8, epochs=1), generation=0, index=2)

    study = optuna.load_study(study_name="study", storage=url)
    trials = study.get_trials()
    PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
    assert [t.state for t in trials] == [COMPLETE, PRUNED, PRUNED]
    assert [t.value for t in trials] == [0.6, 0.9, 0.8]  # the scores stay visible
    assert "tuner's own training" in trials[1].user_attrs["not_a_result"]
    assert trials[2].user_attrs["not_a_result"] == "trained 1 of 3 epochs"
    assert study.best_trial.number == 0 and study.best_value == 0.6

    again = Ledger(url, "study").records()
    assert [r.result.status for r in again] == ["ok", "ok", "ok"]
    assert [r.is_result(3) for r in again] == [True, False, False]
    assert not again[1].exportable and again[2].result.epochs == 1


def test_a_long_architecture_is_cut_into_lines_between_layers(ops):
    """optuna-dashboard shows a user attr on one line that never wraps: a long graph is cut
    into several attrs, between layers, each at most ARCHITECTURE_LINE characters."""
    from nasfw import ArchGraph, Node

    nodes = [Node("n0", "conv2d", {"filters": 41, "kernel_size": 5, "activation": "relu"})]
    for i in range(1, 14):
        inputs = (f"n{i - 1}",) if i % 3 else (f"n{i - 1}", f"n{i - 3}")
        nodes.append(Node(f"n{i}", "conv2d", {"filters": 32, "kernel_size": 3}, inputs, "add"))
    graph = ArchGraph(nodes, output="n13")
    attrs = architecture_attrs(graph)
    assert len(graph.summary()) > 2 * ARCHITECTURE_LINE and len(attrs) >= 3
    assert all(len(line) <= ARCHITECTURE_LINE for line in attrs.values())
    assert list(attrs)[:2] == ["architecture", "architecture (2)"]
    assert attrs["architecture (2)"].startswith("→ conv2d(")  # whole layers on each line
    assert architecture_of(attrs) == graph.summary()
