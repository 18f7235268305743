"""The MLflow tracking plugin, read back through MlflowClient from a sqlite store."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pytest
import torch
from conftest import load_space, run_together
from omegaconf import DictConfig, OmegaConf

from nasfw import (
    ArchGraph,
    Candidate,
    Optimizer,
    Problem,
    ProblemConfig,
    RandomChooser,
    Result,
    SearchContext,
    TrialRecord,
    build_model,
    split_arrays,
)
from nasfw.plugins.tracking import mlflow_tracking as plugin
from nasfw.plugins.tracking.mlflow_tracking import MlflowTrackingConfig, TrackingError, _runs
from nasfw.plugins.tracking.mlflow_tracking.config import MAX_FAILURES

MlflowClient = mlflow.MlflowClient

optuna.logging.set_verbosity(optuna.logging.WARNING)
EXPERIMENT = "nasfw-test"
SECRET = "s3cret"


@dataclass
class Env:
    uri: str
    client: Any
    experiment_id: str
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    # Artifacts (and MLflow 3's logged models) go under tmp, not ./mlruns of the test's cwd.
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    return Env(uri, client, experiment_id, tmp)


@pytest.fixture(scope="module")
def problem() -> Problem:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1, 8, 8)).astype(np.float32)
    y = np.arange(60) % 3
    train, val, test = split_arrays(x, y, ProblemConfig(name="noise"), stratify=True)
    return Problem("noise", "classification", "image", (1, 8, 8), 3, train, val, test)


@pytest.fixture(scope="module")
def space(ops):
    return load_space("image_small", ops)


def make_cfg(env: Env, tracking: dict[str, Any] | None = None, **extra: Any) -> DictConfig:
    return OmegaConf.create(
        {
            "tuner": {"name": "random", "batch_size": 3, "generations": 2},
            "problem": {"name": "noise", "val_fraction": 0.2},
            "search_space": {"name": "image_small", "max_params": 2_000_000},
            "launcher": {"name": "local"},
            "storage": {"name": "postgres", "url": f"postgresql://nas:{SECRET}@db/nasfw"},
            "tracking": OmegaConf.merge(
                OmegaConf.structured(MlflowTrackingConfig),
                {"tracking_uri": env.uri, "experiment_name": EXPERIMENT, **(tracking or {})},
            ),
            "train": {"optimizer": Optimizer.adam, "lr": 0.001, "epochs": 1},
            "seed": 0,
            "study_name": "${tuner.name}-${problem.name}",
            "notes": "x" * 7000,
            "many": {f"k{i:03d}": i for i in range(150)},
            **extra,
        }
    )


def make_context(cfg: DictConfig, problem: Problem, space, tmp: Path, study=None) -> SearchContext:
    return SearchContext(
        cfg=cfg,
        problem=problem,
        space=space,
        tuner=None,  # type: ignore[arg-type]  # the plugin never touches the tuner
        study=study if study is not None else optuna.create_study(direction="maximize"),
        output_dir=tmp,
    )


def make_trials(space, generation: int, metrics: list[float | None]) -> list[TrialRecord]:
    """One generation; ``None`` in ``metrics`` is a failed candidate."""
    trials = []
    for index, metric in enumerate(metrics):
        number = generation * len(metrics) + index
        graph = space.sample(RandomChooser(np.random.default_rng(number)))
        if metric is None:
            result = Result.failed("too large: 3000000 params", n_params=3_000_000)
        else:
            result = Result(
                "ok",
                metric=metric,
                loss=1.0 - metric,
                flops=1000 * (number + 1),
                n_params=100 * (number + 1),
                train_seconds=0.5,
                epochs=1,
                regularized_score=metric - 0.05 if index == 0 else None,
                extra={"test_metric": metric - 0.1},
                curve={1: metric - 0.2, 2: metric},
            )
        attrs = {"origin": "random", "parents": [number - 1]} if index == 0 else {}
        trials.append(TrialRecord(number, generation, index, Candidate(graph, attrs=attrs), result))
    return trials


def run_generation(context: SearchContext, generation: int, trials: list[TrialRecord]) -> None:
    plugin.nasfw_generation_start(context=context, generation=generation, candidates=trials)
    for trial in trials:
        context.history.append(trial)
        plugin.nasfw_trial_complete(
            context=context, candidate=None, result=trial.result, trial=trial
        )
    plugin.nasfw_generation_end(context=context, generation=generation, trials=trials)
    settle(context)


def settle(context: SearchContext) -> None:
    """Wait for the logging the hooks queued (they log from a thread)."""
    backlog = context.plugin_state.get("mlflow", {}).get("backlog")
    if backlog is not None:
        backlog.wait()


def child_runs(env: Env, parent_id: str) -> list[Any]:
    runs = env.client.search_runs(
        [env.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    return sorted(runs, key=lambda r: r.info.run_name)


def download(env: Env, run_id: str, path: str) -> Path:
    return Path(env.client.download_artifacts(run_id, path, str(env.tmp / "downloads" / run_id)))


# -- a full search: start, two generations, end ---------------------------------------------


class SpeciesReport:
    """Stands in for a tuner with a generation report (CoDeepNEAT's species counts)."""

    def __init__(self) -> None:
        self.calls = 0

    def generation_report(self) -> dict[str, float]:
        self.calls += 1
        return {"module_species": 2.0 + self.calls, "module_species_1_size": 5.0}

    def generation_artifacts(self) -> dict[str, Any]:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(2, 2))
        figure.add_subplot().plot([0, self.calls])
        return {"species.json": {"calls": self.calls}, "species.png": figure}


@pytest.fixture(scope="module")
def search(env: Env, problem: Problem, space, ops) -> dict[str, Any]:
    """Runs the hooks of one complete search once; the tests below read what was logged."""
    out = env.tmp / "search"
    context = make_context(make_cfg(env), problem, space, out)
    context.tuner = SpeciesReport()  # type: ignore[assignment]
    plugin.nasfw_search_start(context=context)
    generations = [
        make_trials(space, 0, [0.5, None, 0.7]),
        make_trials(space, 1, [0.6, 0.9, None]),
    ]
    for g, trials in enumerate(generations):
        run_generation(context, g, trials)

    best = context.best()
    assert best is not None and best.number == 4
    torch.manual_seed(0)
    model = build_model(best.graph, problem, ops)  # left in train mode, as training leaves it
    export = out / "best_model"
    export.mkdir(parents=True)
    (export / "graph.json").write_text(best.graph.to_json(indent=2))
    torch.save(model.state_dict(), export / "state_dict.pt")
    context.best_model, context.export_dir = model, export
    plugin.nasfw_search_end(context=context, best=best)
    run_id = context.plugin_state["mlflow"]["run_id"]
    return {
        "context": context,
        "run": env.client.get_run(run_id),
        "best": best,
        "model": model,
        "client_history": lambda key: env.client.get_metric_history(run_id, key),
    }


def test_one_parent_run_with_params_and_tags(env: Env, search: dict[str, Any]) -> None:
    run, context = search["run"], search["context"]
    assert context.study.user_attrs["mlflow_run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == context.study.study_name
    assert "mlflow.parentRunId" not in run.data.tags

    params = run.data.params
    assert params["tuner.name"] == "random"
    assert params["tuner.batch_size"] == "3"
    assert params["study_name"] == "random-noise"  # resolved interpolation
    assert params["train.optimizer"] == "adam"  # enum as its name
    assert params["tracking.log_models"] == "True"
    assert params["many.k149"] == "149"  # more than 100 params: several batches
    assert len(params["notes"]) == 6000  # truncated to MLflow's limit
    assert SECRET not in params["storage.url"] and params["storage.url"].startswith("postgresql")

    tags = run.data.tags
    assert tags["nasfw.tuner"] == "random"
    assert tags["nasfw.problem"] == "noise"
    assert tags["nasfw.search_space"] == "image_small"
    assert tags["nasfw.launcher"] == "local"
    assert tags["nasfw.study"] == context.study.study_name
    assert tags["nasfw.storage"] == "postgresql://nas:***@db/nasfw"
    assert tags["mlflow.user"] and tags["mlflow.source.name"] == "python -m nasfw"
    assert tags["nasfw.command"].startswith("python -m nasfw")
    assert f"study `{context.study.study_name}`" in tags["mlflow.note.content"]
    nasfw_dir = Path(plugin.__file__).parents[2]
    own = subprocess.run(["git", "-C", str(nasfw_dir), "rev-parse", "HEAD"], capture_output=True)
    if own.returncode == 0:  # nasfw runs from a checkout: its commit, wherever the user is
        assert tags["nasfw.git_commit"] == own.stdout.decode().strip()
    in_repo = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True).returncode == 0
    if in_repo:  # the commit of the working directory's repo (HEAD may have moved since)
        commit = tags["mlflow.source.git.commit"]
        kind = subprocess.run(["git", "cat-file", "-t", commit], capture_output=True, text=True)
        assert len(commit) == 40 and kind.stdout.strip() == "commit"


def test_trial_metrics_are_logged_per_trial_number(env: Env, search: dict[str, Any]) -> None:
    run_id = search["run"].info.run_id
    children = [c.info.run_id for c in child_runs(env, run_id)]

    def history(key: str, *runs: str) -> dict[int, float]:
        # log_model links the metrics at the best trial's step to the model: a second entry
        # with the same step and value, so compare as a mapping.
        return {
            m.step: m.value
            for r in runs or (run_id,)
            for m in env.client.get_metric_history(r, key)
        }

    # Each trial's series is in its generation's run, at the trial's number.
    assert history("trial/val_accuracy", *children) == pytest.approx(
        {0: 0.5, 2: 0.7, 3: 0.6, 4: 0.9}
    )
    assert history("trial/failed", children[1]) == {3: 0, 4: 0, 5: 1}
    assert history("trial/params", *children) == {0: 100, 1: 3e6, 2: 300, 3: 400, 4: 500, 5: 3e6}
    assert history("trial/flops", *children) == {0: 1000, 2: 3000, 3: 4000, 4: 5000}
    assert set(history("trial/loss", *children)) == {0, 2, 3, 4}
    assert history("trial/train_seconds", children[0])[2] == 0.5
    # Only where it differs from the metric (regularized scoring's score is the metric).
    assert history("trial/regularized_score", *children) == pytest.approx({0: 0.45, 3: 0.55})
    # The parent holds summaries only: the best so far and the count after each finished
    # trial, at the step of that count (completion order).
    best = history("best_val_accuracy")
    assert best == pytest.approx({1: 0.5, 2: 0.5, 3: 0.7, 4: 0.7, 5: 0.9, 6: 0.9})
    assert history("n_trials") == {n: n for n in range(1, 7)}
    assert search["run"].data.metrics["best_val_accuracy"] == pytest.approx(0.9)
    assert history("n_trials_ok") == {3: 2, 6: 4} and history("n_trials_failed") == {3: 1, 6: 2}
    # Each summary once per step: the search's end adds only what its last step lacked.
    for key in ("best_val_accuracy", "n_trials", "n_trials_ok"):
        steps = [m.step for m in search["client_history"](key)]
        assert len(steps) == len(set(steps)), key
    assert not [k for k in search["run"].data.metrics if k.startswith("trial")]


def test_one_nested_run_per_generation(env: Env, search: dict[str, Any]) -> None:
    children = child_runs(env, search["run"].info.run_id)
    study = search["context"].study.study_name
    # The generation first: MLflow's lists cut names to the column's width.
    assert [c.info.run_name for c in children] == [f"gen 0 · {study}", f"gen 1 · {study}"]
    assert all(c.info.status == "FINISHED" for c in children)
    names = ("generation_max_val_accuracy", "generation_mean_val_accuracy")
    expected = [
        dict(zip(names, (0.7, 0.6), strict=True)) | {"search_best_val_accuracy": 0.7},
        dict(zip(names, (0.9, 0.75), strict=True)) | {"search_best_val_accuracy": 0.9},
    ]
    for g, (child, want) in enumerate(zip(children, expected, strict=True)):
        metrics = child.data.metrics
        assert {k: metrics[k] for k in want} == pytest.approx(want)
        # One name per meaning: no bare best_<val> (the parent's) nor a tuner's duplicate.
        assert not {"best_val_accuracy", "mean_val_accuracy", "mean_fitness"} & set(metrics)
        assert metrics["n_ok"] == 2 and metrics["n_failed"] == 1
        assert child.data.params == {"generation": str(g), "tuner": "random", "candidates": "3"}


def test_population_table(env: Env, search: dict[str, Any], space) -> None:
    child = child_runs(env, search["run"].info.run_id)[1]
    table = json.loads(download(env, child.info.run_id, "population.json").read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["trial"] for r in rows] == [3, 4, 5]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "metric" not in table["columns"]  # named after the metric
    assert rows[1]["val_accuracy"] == pytest.approx(0.9)
    assert rows[2]["error"] == "too large: 3000000 params"
    assert rows[2]["val_accuracy"] is None
    assert [r["result"] for r in rows] == [True, True, False]
    # The training settings explain two scores of one architecture.
    assert [r["epochs"] for r in rows] == [1, 1, 0] and rows[0]["budget"] == 1
    assert json.loads(rows[0]["train"])["lr"] == 0.001
    assert [r["reused_from"] for r in rows] == [None, None, None]
    trials = make_trials(space, 1, [0.6, 0.9, None])
    assert [r["graph_hash"] for r in rows] == [t.graph.hash for t in trials]
    assert [r["nodes"] for r in rows] == [len(t.graph) for t in trials]
    for key in ("index", "loss", "flops", "params", "train_seconds"):
        assert key in table["columns"]
    assert rows[0]["origin"] == "random" and json.loads(rows[0]["parents"]) == [2]


def test_best_so_far_plot_is_a_png(env: Env, search: dict[str, Any]) -> None:
    import matplotlib.image

    path = download(env, search["run"].info.run_id, "best_so_far.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 300 and height > 200


def test_best_graph_and_summary(env: Env, search: dict[str, Any]) -> None:
    run, best = search["run"], search["best"]
    graph = ArchGraph.from_json(download(env, run.info.run_id, "best_model/graph.json").read_text())
    assert graph == best.graph
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.9)
    assert run.data.metrics["best_test_accuracy"] == pytest.approx(0.8)
    assert "trial 4" in run.data.tags["mlflow.note.content"]
    assert best.graph.summary() in run.data.tags["mlflow.note.content"]
    assert run.data.tags["nasfw.best_trial"] == "4"
    artifacts = {a.path for a in env.client.list_artifacts(run.info.run_id, "best_model")}
    assert {"best_model/graph.json", "best_model/state_dict.pt"} <= artifacts
    state = torch.load(download(env, run.info.run_id, "best_model/state_dict.pt"))
    assert torch.equal(state["head.weight"], search["model"].state_dict()["head.weight"])


def test_logged_model_loads_and_predicts_the_same(
    env: Env, search: dict[str, Any], problem: Problem
) -> None:
    run, model = search["run"], search["model"]
    uri = run.data.tags["nasfw.model_uri"]
    assert model.training  # the plugin exported an eval-mode copy, the search's model is as it was
    mlflow.set_tracking_uri(env.uri)
    loaded = mlflow.pytorch.load_model(uri)
    # The logged model takes raw inputs: it applies the problem's standardisation itself.
    raw = problem.preprocessing.invert(problem.test.x)  # another batch size than the example
    x = torch.from_numpy(problem.test.x)
    with torch.no_grad():
        assert torch.allclose(loaded(torch.from_numpy(raw)), model.eval()(x), atol=1e-5)
    predicted = mlflow.pyfunc.load_model(uri).predict(raw)
    assert np.allclose(predicted, model(x).detach().numpy(), atol=1e-5)
    [logged] = [
        m
        for m in env.client.search_logged_models([env.experiment_id])
        if m.source_run_id == run.info.run_id
    ]
    assert logged.name == search["context"].study.study_name  # named after the study
    assert logged.status == "READY"
    # Saved as a torch.export program (MLflow 3's safe default), not pickled.
    data = env.client.list_logged_model_artifacts(logged.model_id, "data")
    assert [f.path for f in data] == ["data/model.pt2"]
    assert mlflow.active_run() is None  # log_model's run was not left active


# -- resume, tracking off, failures, several searches in one process ------------------------


def test_resume_continues_the_run_and_its_generation(
    env: Env, problem: Problem, space, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(direction="maximize")
    first = make_context(make_cfg(env, study_name="resume"), problem, space, env.tmp, study)
    plugin.nasfw_search_start(context=first)
    run_id = first.plugin_state["mlflow"]["run_id"]
    run_generation(first, 0, make_trials(space, 0, [0.1, 0.2]))

    # The process dies; a new one resumes the same study, with a longer search.
    cfg = make_cfg(env, study_name="resume", tuner={"name": "random", "generations": 9})
    second = make_context(cfg, problem, space, env.tmp, study)
    second.start_generation = 1
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        plugin.nasfw_search_start(context=second)
    assert second.plugin_state["mlflow"]["run_id"] == run_id
    assert "tuner.generations" in caplog.text  # the changed param is reported, not fatal
    assert env.client.get_run(run_id).data.params["tuner.generations"] == "2"
    # The generation the first process logged is not duplicated when it is logged again.
    run_generation(second, 0, make_trials(space, 0, [0.1, 0.2]))
    run_generation(second, 1, make_trials(space, 1, [0.3, None]))
    plugin.nasfw_search_end(context=second, best=second.best())

    top = env.client.search_runs(
        [env.experiment_id], filter_string="tags.`nasfw.study` = '" + study.study_name + "'"
    )
    assert [r.info.run_id for r in top if "mlflow.parentRunId" not in r.data.tags] == [run_id]
    run = env.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["nasfw.resumed_at_generation"] == "1"
    names = [c.info.run_name.split(" · ")[0] for c in child_runs(env, run_id)]
    assert names == ["gen 0", "gen 1"]


def test_a_kill_between_a_trials_two_batches_is_caught_up_once(
    env: Env, problem: Problem, space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial's summary reached the parent run, its series not its generation's run (the
    process died in between): the resumed search logs the series, and nothing twice."""
    study = optuna.create_study(direction="maximize")
    first = make_context(make_cfg(env, study_name="torn"), problem, space, env.tmp, study)
    plugin.nasfw_search_start(context=first)
    run_id = first.plugin_state["mlflow"]["run_id"]
    trials = make_trials(space, 0, [0.1, 0.2, 0.3])
    original = plugin._metrics.trial_metrics

    def dies_on_trial_1(trial: TrialRecord, val: str) -> Any:
        if trial.number == 1:
            raise RuntimeError("killed")
        return original(trial, val)

    monkeypatch.setattr(plugin._metrics, "trial_metrics", dies_on_trial_1)
    plugin.nasfw_generation_start(context=first, generation=0, candidates=trials)
    for trial in trials[:2]:
        first.history.append(trial)
        plugin.nasfw_trial_complete(context=first, candidate=None, result=trial.result, trial=trial)
    settle(first)
    monkeypatch.setattr(plugin._metrics, "trial_metrics", original)

    second = make_context(make_cfg(env, study_name="torn"), problem, space, env.tmp, study)
    second.history = list(trials[:2])
    plugin.nasfw_search_start(context=second)
    assert second.plugin_state["mlflow"]["run_id"] == run_id
    (generation,) = child_runs(env, run_id)
    series = env.client.get_metric_history(generation.info.run_id, "trial/failed")
    assert sorted(m.step for m in series) == [0, 1]  # the trials' numbers
    summary = env.client.get_metric_history(run_id, "n_trials")
    assert sorted(m.step for m in summary) == [1, 2]  # the count of finished trials


def test_tracking_none_logs_nothing(env: Env, problem: Problem, space) -> None:
    cfg = make_cfg(env, tracking={"experiment_name": "never"})
    cfg.tracking = OmegaConf.create({"name": "none"})
    context = make_context(cfg, problem, space, env.tmp)
    plugin.nasfw_search_start(context=context)
    run_generation(context, 0, make_trials(space, 0, [0.5, None]))
    context.best_model = torch.nn.Linear(2, 2)
    plugin.nasfw_search_end(context=context, best=context.best())
    assert context.plugin_state == {}
    assert context.study.user_attrs == {}
    assert env.client.get_experiment_by_name("never") is None


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("out of memory"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_search_error_ends_the_run(
    env: Env, problem: Problem, space, error: BaseException, status: str
) -> None:
    context = make_context(make_cfg(env), problem, space, env.tmp)
    plugin.nasfw_search_start(context=context)
    run_generation(context, 0, make_trials(space, 0, [0.5]))
    context.error = error
    context.best_model = torch.nn.Linear(2, 2)
    plugin.nasfw_search_end(context=context, best=context.best())
    run = env.client.get_run(context.plugin_state["mlflow"]["run_id"])
    assert run.info.status == status
    assert run.data.tags["nasfw.error"].startswith(type(error).__name__)
    assert "best_test_accuracy" not in run.data.metrics
    # Only what each generation logs: nothing of the search's end.
    assert [a.path for a in env.client.list_artifacts(run.info.run_id)] == ["pareto_front.png"]


@pytest.mark.parametrize(
    "uri", ["bogus://nowhere", "sqlite:///{tmp}/a-file/mlflow.db", "http://127.0.0.1:1"]
)
def test_bad_tracking_uri_names_the_key(env: Env, problem: Problem, space, uri: str) -> None:
    (env.tmp / "a-file").touch()
    cfg = make_cfg(env, tracking={"tracking_uri": uri.format(tmp=env.tmp)})
    context = make_context(cfg, problem, space, env.tmp)
    with pytest.raises(TrackingError, match=r"tracking\.tracking_uri="):
        plugin.nasfw_search_start(context=context)
    assert context.plugin_state == {}


def test_a_tracking_hiccup_does_not_stop_the_search(
    env: Env, problem: Problem, space, caplog: pytest.LogCaptureFixture
) -> None:
    context = make_context(make_cfg(env), problem, space, env.tmp)
    plugin.nasfw_search_start(context=context)
    state = context.plugin_state["mlflow"]
    run_id, state["run_id"] = state["run_id"], "0" * 32  # a run that does not exist
    trials = make_trials(space, 0, [0.5, None])
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        plugin.nasfw_trial_complete(
            context=context, candidate=None, result=trials[0].result, trial=trials[0]
        )
        settle(context)
    assert "MLflow tracking: logging trial 0 failed" in caplog.text
    state["run_id"] = run_id
    run_generation(context, 0, trials)
    plugin.nasfw_search_end(context=context, best=context.best())
    run = env.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_accuracy"] == 0.5


def test_tracking_stops_after_repeated_failures(
    env: Env,
    problem: Problem,
    space,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_runs, "FLUSH_SECONDS", 0.0)  # each trial's summary sent at once
    context = make_context(make_cfg(env), problem, space, env.tmp)
    plugin.nasfw_search_start(context=context)
    context.plugin_state["mlflow"]["run_id"] = "0" * 32  # e.g. the server went away
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        for trial in make_trials(space, 0, [0.1, 0.2, 0.3, 0.4, 0.5]):
            plugin.nasfw_trial_complete(
                context=context, candidate=None, result=trial.result, trial=trial
            )
        plugin.nasfw_search_end(context=context, best=context.best())
    assert caplog.text.count("failed (") == MAX_FAILURES
    assert "nothing more is logged" in caplog.text


def test_interleaved_searches_in_one_process(env: Env, problem: Problem, space) -> None:
    contexts = [make_context(make_cfg(env, seed=s), problem, space, env.tmp) for s in (1, 2)]
    for context in contexts:
        plugin.nasfw_search_start(context=context)
    for g in range(2):
        for i, context in enumerate(contexts):
            run_generation(context, g, make_trials(space, g, [0.1 * (i + 1) + 0.01 * g]))
    for context in contexts:
        plugin.nasfw_search_end(context=context, best=context.best())
    for i, context in enumerate(contexts):
        run_id = context.plugin_state["mlflow"]["run_id"]
        run = env.client.get_run(run_id)
        assert run.data.params["seed"] == str(i + 1)
        history = env.client.get_metric_history(run_id, "best_val_accuracy")
        assert sorted((m.step, round(m.value, 6)) for m in history) == [
            (1, round(0.1 * (i + 1), 6)),
            (2, round(0.1 * (i + 1) + 0.01, 6)),
        ]
        assert len(child_runs(env, run_id)) == 2
    assert mlflow.active_run() is None


def test_tuner_report_and_best_network_per_generation(env: Env, search: dict[str, Any]) -> None:
    import matplotlib.image

    for g, child in enumerate(child_runs(env, search["run"].info.run_id)):
        assert child.data.metrics["module_species"] == 3.0 + g
        assert child.data.metrics["module_species_1_size"] == 5.0
        png = download(env, child.info.run_id, "best_network.png")
        height, width, _ = matplotlib.image.imread(png).shape
        assert width > 300 and height > 150
        # the generation's learning curves in one plot, not one metric (chart section) each
        assert not [k for k in child.data.metrics if k.startswith("curve/")]
        assert matplotlib.image.imread(download(env, child.info.run_id, "learning_curves.png")).size
        # the tuner's own files (Tuner.generation_artifacts), kept with each generation
        note = download(env, child.info.run_id, "tuner/species.json")
        assert json.loads(note.read_text()) == {"calls": g + 1}
        assert matplotlib.image.imread(download(env, child.info.run_id, "tuner/species.png")).size


def test_fitness_per_generation_plot(env: Env, search: dict[str, Any]) -> None:
    path = download(env, search["run"].info.run_id, "fitness_per_generation.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front_plot_and_table(env: Env, search: dict[str, Any]) -> None:
    run_id, context = search["run"].info.run_id, search["context"]
    path = download(env, run_id, "pareto_front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def rows() -> list[dict[str, Any]]:
        table = json.loads(download(env, run_id, "pareto_front.json").read_text())
        return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]

    # Trial 3 (0.6 at 4000 FLOPs) is dominated by trial 2 (0.7 at 3000); 1 and 5 failed.
    graphs = {t.number: t.graph.hash for t in context.history}
    expected = [
        {"trial": n, "generation": n // 3, "metric": "val_accuracy", "value": pytest.approx(m)}
        | {"flops": 1000 * (n + 1), "n_params": 100 * (n + 1), "graph_hash": graphs[n]}
        for n, m in ((0, 0.5), (2, 0.7), (4, 0.9))
    ]
    assert rows() == expected
    # A resumed search's end replaces the table; MLflow's log_table would append to it.
    plugin._figures.log_pareto_table(env.client, run_id, context)
    assert rows() == expected

    # A network that only serves the tuner (a Petridish candidate training) is not plotted.
    first = context.history[0]
    candidate = dataclasses.replace(first.candidate, exportable=False)
    internal = dataclasses.replace(first, number=99, candidate=candidate)
    trials = [*context.history, internal]
    accuracy = plugin._figures.pareto_figure(trials, "accuracy", "s").axes[0]
    assert accuracy.get_xscale() == "log" and accuracy.get_ylabel() == "val error (1 - accuracy)"
    assert accuracy.get_title() == "s (4 networks, 3 on the Pareto front)"
    assert len(accuracy.collections[0].get_offsets()) == 4
    (front,) = accuracy.get_lines()
    assert list(front.get_xdata()) == [1000, 3000, 5000]
    assert list(front.get_ydata()) == pytest.approx([0.5, 0.3, 0.1])
    r2 = plugin._figures.pareto_figure(context.history, "r2", "s").axes[0]
    assert r2.get_ylabel() == "val_r2"
    assert list(r2.get_lines()[0].get_ydata()) == pytest.approx([0.5, 0.7, 0.9])


# -- searches started together in an empty directory -------------------------------------------
def _open_store(uri: str) -> str:
    try:
        _runs.connect(uri)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


def test_stores_created_together_take_turns(tmp_path: Path) -> None:
    """Unserialised, 3 processes left a half-migrated database in 2 of 3 rounds."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_together(_open_store, (uri,), 3) == ["ok"] * 3
    client = MlflowClient(tracking_uri=uri)  # later runs open it: a whole, current schema
    assert client.get_experiment_by_name("Default") is not None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sqlite:////proc/x/mlflow.db", "tracking.tracking_uri: cannot write in /proc/x"),
        ("http://127.0.0.1:9", "no MLflow tracking server answers"),
    ],
)
def test_an_unusable_store_is_named_before_the_study_exists(uri: str, message: str) -> None:
    cfg = OmegaConf.create({"tracking": {"name": "mlflow", "tracking_uri": uri}})
    with pytest.raises(Exception, match=message):
        plugin.nasfw_check_config(cfg)


@pytest.mark.slow
def test_totals_are_right_when_trials_finish_out_of_number_order(tmp_path: Path) -> None:
    """With a pruner, trials are numbered when they start: with two workers the last to finish
    is not always the highest number. The parent's latest n_trials and best are the search's."""
    from cli import nasfw, trials

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = nasfw(
        tmp_path,
        "problem=digits",
        "tuner=random",
        "tuner.n_trials=6",
        "tuner.batch_size=6",
        "train.epochs=2",
        "pruner=median",
        "pruner.n_startup_trials=1",
        "launcher.workers=2",
        f"tracking.tracking_uri={tracking}",
    )
    assert out.returncode == 0, out.stderr
    stored = trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "random-digits-image_small-seed0")
    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics["n_trials"] == len(stored) == 6
    best = max(t.value for t in stored if t.state == optuna.trial.TrialState.COMPLETE)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)


def test_the_search_does_not_wait_for_mlflow_and_nothing_queued_is_lost(
    env: Env, problem: Problem, space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hooks queue their logging and return; the search's end waits until all of it was
    sent, then closes the run."""
    context = make_context(make_cfg(env), problem, space, env.tmp)
    others = set(threading.enumerate())  # earlier tests' searches may still have theirs
    plugin.nasfw_search_start(context=context)
    state = context.plugin_state["mlflow"]
    blocked = threading.Event()
    log_batch = state["client"].log_batch

    def slow_store(*args: Any, **kwargs: Any) -> Any:
        blocked.wait(30)
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(state["client"], "log_batch", slow_store)
    trials = make_trials(space, 0, [0.1, 0.3, 0.2])
    plugin.nasfw_generation_start(context=context, generation=0, candidates=trials)
    for trial in trials:
        context.history.append(trial)
        plugin.nasfw_trial_complete(
            context=context, candidate=None, result=trial.result, trial=trial
        )
    plugin.nasfw_generation_end(context=context, generation=0, trials=trials)
    run_id = state["run_id"]
    # Every hook returned while the store was still blocked: nothing is logged yet.
    assert env.client.get_metric_history(run_id, "n_trials") == []
    blocked.set()
    plugin.nasfw_search_end(context=context, best=context.best())
    assert [m.step for m in env.client.get_metric_history(run_id, "n_trials")] == [1, 2, 3]
    (generation,) = child_runs(env, run_id)
    assert generation.info.status == "FINISHED"
    assert generation.data.metrics["generation_max_val_accuracy"] == 0.3
    assert env.client.get_run(run_id).info.status == "FINISHED"
    assert not any(t.name == "nasfw-mlflow" for t in set(threading.enumerate()) - others)


def test_the_exported_network_does_not_depend_on_the_tracker(tmp_path: Path) -> None:
    """MLflow logs from a thread of its own while the driver retrains the best network: the
    retrained weights are the same with tracking on as off. A search resumed with nothing left
    to evaluate exports at once, beside whatever the tracker's thread does at its start (a
    ``torch.export`` warm-up there once changed the weights)."""
    from cli import nasfw

    args = [
        "problem=digits",
        "tuner=random",
        "tuner.n_trials=2",
        "tuner.batch_size=2",
        "train.epochs=1",
        "launcher.workers=1",
    ]
    exported = []
    for tracking in ("tracking=none", f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}"):
        run = nasfw(tmp_path, *args, tracking)
        assert run.returncode == 0, run.stderr
        exported.append(torch.load(max(tmp_path.glob("outputs/*/*/best_model/state_dict.pt"))))
    assert "Resuming" in run.stderr
    assert exported[0].keys() == exported[1].keys()
    for key, value in exported[0].items():
        assert torch.equal(value, exported[1][key]), key


def test_the_best_so_far_counts_results_only_as_nasfw_does(tmp_path: Path) -> None:
    """Petridish's candidate trainings are trials that are no result (not exportable): the
    parent's best_<val> after each trial is the best of the results so far, as nasfw's own
    best is, and its last value is the exported network's; the Optuna study's best trial
    (optuna-dashboard's "Best Trial") is nasfw's best too."""
    from cli import nasfw

    from nasfw.ledger import Ledger

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = nasfw(
        tmp_path,
        "tuner=petridish",
        "problem=iris",
        "search_space=tabular_mlp",
        "tuner.init_models=2",
        "tuner.rounds=2",
        "tuner.max_parents=2",
        "tuner.max_candidates=2",
        "train.epochs=2",
        "launcher.workers=0",
        "study_name=p",
        f"tracking.tracking_uri={tracking}",
    )
    assert out.returncode == 0, out.stderr
    records = sorted(
        Ledger(f"sqlite:///{tmp_path / 'nasfw.db'}", "p").records(), key=lambda r: r.number
    )
    assert any(not r.exportable for r in records)  # the run has candidate trainings
    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    history = {
        m.step: m.value for m in client.get_metric_history(parent.info.run_id, "best_val_accuracy")
    }
    results_so_far: list[float] = []
    # One at a time in the driver: they finish in number order, trial n at step n + 1.
    for record in records:
        if record.exportable and record.result.ok and record.result.trained_budget >= 2:
            results_so_far.append(record.result.metric)
        if results_so_far:
            assert history[record.number + 1] == pytest.approx(max(results_so_far)), record
    best = int(parent.data.tags["nasfw.best_trial"])
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'nasfw.db'}")
    assert study.best_trial.number == best
    own = [t for t in study.trials if t.number in {r.number for r in records if not r.exportable}]
    assert own and all(t.state == optuna.trial.TrialState.PRUNED for t in own)
    assert all("tuner's own" in t.user_attrs["not_a_result"] for t in own)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(
        next(r.result.metric for r in records if r.number == best)
    )


def test_lookups_get_no_generation_runs_and_few_writes(
    env: Env, problem: Problem, space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A problem evaluated by lookup gets no nested run per generation (tracking.generation_runs
    unset), and its summaries go in batches: MLflow's cost stays below the lookups' (issue 26;
    benchmarks/overhead.py --lookups measures it). The summaries are complete at the end."""
    import dataclasses

    looked_up = dataclasses.replace(problem, table=object())
    context = make_context(make_cfg(env, seed=7), looked_up, space, env.tmp)
    plugin.nasfw_search_start(context=context)
    state = context.plugin_state["mlflow"]
    calls: list[int] = []
    log_batch = state["client"].log_batch

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs.get("metrics") or ()))
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(state["client"], "log_batch", counted)
    for g in range(5):
        run_generation(context, g, make_trials(space, g, [0.1 * g, 0.1 * g + 0.05]))
    plugin.nasfw_search_end(context=context, best=context.best())
    run_id = state["run_id"]
    assert child_runs(env, run_id) == []
    assert len(calls) <= 4  # not two per trial and one per generation (15)
    steps = {m.step: m.value for m in env.client.get_metric_history(run_id, "n_trials")}
    assert steps == {n: n for n in range(1, 11)}
    best = env.client.get_metric_history(run_id, "best_val_accuracy")
    assert max(m.value for m in best) == pytest.approx(0.45)
    assert env.client.get_run(run_id).data.metrics["n_trials_ok"] == 10
    # The counts after every generation, kept as the trials came (not recounted), at the step
    # of the evaluations finished by then.
    ok = {m.step: m.value for m in env.client.get_metric_history(run_id, "n_trials_ok")}
    assert ok == {n: n for n in range(2, 11, 2)}
    failed = env.client.get_metric_history(run_id, "n_trials_failed")
    assert sorted(m.step for m in failed) == [2, 4, 6, 8, 10] and {m.value for m in failed} == {0}


def test_generation_and_trial_axes_have_whole_ticks(search: dict[str, Any]) -> None:
    """fitness_per_generation.png and best_so_far.png count generations and trials: no
    0.5 of one on their x axes (two generations once ticked 0, 0.2, ..., 1)."""
    from nasfw.plugins.tracking.mlflow_tracking import _figures

    figures: dict[str, Any] = {}

    class Capture:
        def log_figure(self, run_id: str, figure: Any, name: str, **_: Any) -> None:
            figures[name] = figure

    _figures.log_generation_plot(Capture(), "run", search["context"])  # type: ignore[arg-type]
    _figures.log_progress_plot(Capture(), "run", search["context"])  # type: ignore[arg-type]
    assert set(figures) == {"fitness_per_generation.png", "best_so_far.png"}
    for name, figure in figures.items():
        ticks = figure.axes[0].get_xticks()
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (name, ticks)
