"""Pruners (nasfw.pruning): Optuna's own stop networks whose learning curve falls behind, as
PRUNED trials, through the command line and the storage the evaluations report to."""

from __future__ import annotations

import optuna
import pytest
from cli import TINY, compose, nasfw, trials
from omegaconf import OmegaConf

from nasfw import ArchGraph, Candidate, ConfigError, Node, ProblemConfig, Result, TrainConfig
from nasfw.evaluate import Evaluator, load_problem
from nasfw.job import StoredEvaluation
from nasfw.ledger import Ledger
from nasfw.pruning import TrialReporter, make_pruner, pruner_settings
from nasfw.train import train_model

PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
GRAPH = ArchGraph([Node("h", "dense", {"units": 8})], output="h")
# Sequential (launcher.workers=0), so what the pruner sees, and so the outcome, is fixed.
SEARCH = [
    *[a for a in TINY if not a.startswith(("tuner.n_trials", "tuner.batch_size"))],
    "tuner.n_trials=8",
    "tuner.batch_size=4",
    "train.epochs=4",
    "pruner=median",
    "pruner.n_startup_trials=1",
]
STUDY = "random-iris-tabular_mlp-seed0"


def test_pruned_networks_are_pruned_trials_with_their_curve_and_never_the_best(tmp_path):
    """Also with a worker process: it asks the pruner through the storage as the driver does
    (one evaluation at a time, so the pruner sees the same finished trials)."""
    import json

    runs = {"driver": tmp_path / "driver", "worker": tmp_path / "worker"}
    for name, workers in (("driver", 0), ("worker", 1)):
        runs[name].mkdir()
        out = nasfw(runs[name], *SEARCH, f"launcher.workers={workers}")
        assert out.returncode == 0, out.stderr
    assert "Using an existing study" not in out.stderr  # workers' Optuna logs stay quiet
    stored = trials("sqlite:///" + str(runs["worker"] / "nasfw.db"), STUDY)
    pruned = [t for t in stored if t.state == PRUNED]
    complete = [t for t in stored if t.state == COMPLETE]
    assert pruned and complete and len(stored) == 8
    for t in pruned:
        # Stopped early: its value is its last score, its epochs what it trained.
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, t.user_attrs["epochs"] + 1)) and len(steps) < 4
        assert t.value == t.intermediate_values[steps[-1]]
        assert t.datetime_complete > t.datetime_start
    for t in complete:
        assert sorted(t.intermediate_values) == [1, 2, 3, 4] and t.user_attrs["epochs"] == 4
    assert f"{len(pruned)} pruned" in out.stdout
    summary = next(runs["worker"].glob("outputs/*/*/best_model/summary.json"))
    assert stored[json.loads(summary.read_text())["trial"]].state == COMPLETE
    in_driver = trials("sqlite:///" + str(runs["driver"] / "nasfw.db"), STUDY)
    assert [(t.state, t.value, t.intermediate_values) for t in in_driver] == [
        (t.state, t.value, t.intermediate_values) for t in stored
    ]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["pruner=median", "train.curve_every=0"], "train.curve_every"),
        (["pruner=patient", "evaluation=regularized"], "evaluation=plain"),
        (["pruner=median", "pruner.n_startup_trials=-1"], "pruner.n_startup_trials"),
        (["pruner=hyperband", "pruner.reduction_factor=1"], "pruner.reduction_factor"),
        (["pruner=nope"], "pruner"),
    ],
)
def test_a_pruner_that_cannot_work_is_refused_before_the_study(tmp_path, overrides, named):
    from nasfw.search import run_search

    base = [a for a in SEARCH if "pruner" not in a]
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    try:
        cfg = compose(*base, *overrides, f"storage.url={url}")
    except Exception as err:  # Hydra refuses it while composing (exit code 2 in the CLI)
        assert named in str(err)
        return
    with pytest.raises(ConfigError) as refused:
        run_search(cfg, tmp_path)
    assert named in str(refused.value)
    assert not (tmp_path / "nasfw.db").exists()  # before the study was created


def test_hyperband_pruner_runs_to_train_epochs_by_default():
    cfg = OmegaConf.create(
        {"pruner": {"name": "hyperband", "min_resource": 1, "max_resource": None,
                    "reduction_factor": 3, "bootstrap_count": 0},
         "train": {"curve_every": 1, "epochs": 7}}
    )  # fmt: skip
    settings = pruner_settings(cfg, "plain")
    assert settings is not None and settings["max_resource"] == 7
    pruner = make_pruner(settings)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner_settings(OmegaConf.create({"pruner": {"name": "none"}}), "plain") is None


def test_an_unknown_or_blocked_pruner_is_named_in_one_line(monkeypatch):
    """Where a config names a pruner that no plugin registers (Hydra refuses one that is no
    option first), and in a worker given its settings."""
    from nasfw.registry import DISABLE_ENV, reset

    cfg = OmegaConf.create({"pruner": {"name": "nope"}, "train": {"curve_every": 1, "epochs": 3}})
    with pytest.raises(ConfigError) as refused:
        pruner_settings(cfg, "plain")
    assert str(refused.value) == (
        "pruner=nope is unknown (available: ['hyperband', 'median', 'none', 'patient', "
        "'successive_halving'])"
    )
    monkeypatch.setenv(DISABLE_ENV, "pruners")
    reset()
    try:
        cfg.pruner.name = "median"
        for refuse in (
            lambda: pruner_settings(cfg, "plain"),
            lambda: make_pruner({"name": "median"}),
        ):
            with pytest.raises(ConfigError) as refused:
                refuse()
            assert str(refused.value) == (
                "pruner=median is not available because NASFW_DISABLE_PLUGINS=pruners blocks "
                "plugin 'pruners', which provides it; unset it or choose another option"
            )
    finally:
        monkeypatch.delenv(DISABLE_ENV)
        reset()


def test_training_stops_where_the_report_says_so():
    problem = load_problem(ProblemConfig(name="iris"))
    from nasfw import build_model

    seen: list[tuple[int, float]] = []

    def report(epoch: int, value: float) -> bool:
        seen.append((epoch, value))
        return epoch == 2

    model = build_model(GRAPH, problem)
    outcome = train_model(model, problem, TrainConfig(epochs=5, device="cpu"), 0, report=report)
    assert outcome.pruned and outcome.epochs == 2 and [e for e, _ in seen] == [1, 2]
    assert outcome.metric == seen[-1][1] == outcome.curve[2]


def test_a_killed_drivers_running_trial_is_closed_and_the_evaluation_written_anew(tmp_path):
    """A RUNNING trial left by a killed search is marked interrupted when the search restarts
    and is never read as an evaluation; a job still running then writes a new trial."""
    ledger = Ledger(f"sqlite:///{tmp_path / 's.db'}", "study")
    candidate = Candidate(GRAPH)
    trial_id = ledger.start(candidate, 0, 0)
    assert ledger.records() == []
    assert ledger.fail_interrupted() == 1
    (closed,) = ledger.study.get_trials()
    assert closed.state == optuna.trial.TrialState.FAIL
    assert closed.user_attrs["fail_reason"].startswith("interrupted")
    record = ledger.record(candidate, Result("ok", metric=0.5, epochs=1), 0, 0, trial_id)
    assert record.number == 1
    assert [(r.number, r.result.metric) for r in ledger.records()] == [(1, 0.5)]


def test_a_reporter_whose_trial_was_closed_lets_the_network_train_on(tmp_path, capsys):
    ledger = Ledger(f"sqlite:///{tmp_path / 's.db'}", "study")
    trial_id = ledger.start(Candidate(GRAPH), 0, 0)
    reporter = TrialReporter(ledger, trial_id, {"name": "patient", "patience": 0,
                                                "min_delta": 0.0})  # fmt: skip
    assert reporter(1, 0.5) is False
    ledger.fail_interrupted()
    assert reporter(2, 0.1) is False and reporter(3, 0.1) is False
    assert "cannot follow trial" in capsys.readouterr().err


def test_a_job_reports_its_curve_and_finishes_its_own_running_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    perfect = Result("ok", metric=1.0, epochs=3, curve={1: 1.0, 2: 1.0, 3: 1.0})
    Ledger(url, "study").record(Candidate(GRAPH, train={"lr": 0.01}), perfect, 0, 0)
    evaluator = Evaluator(
        problem=ProblemConfig(name="iris"),
        train=TrainConfig(epochs=3, device="cpu"),
        seed=0,
        max_params=100_000,
    )
    median = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0,
              "interval_steps": 1, "n_min_trials": 1}  # fmt: skip
    result = StoredEvaluation(evaluator, url, "study", 0, median)((1, Candidate(GRAPH)))
    # Below a perfect network's curve after its first epoch: stopped there.
    assert result.status == "pruned" and result.epochs == 1
    trial = Ledger(url, "study").study.get_trials()[1]
    assert trial.state == PRUNED and list(trial.intermediate_values) == [1]
    assert trial.number == result.trial_number and trial.value == result.metric < 1.0
