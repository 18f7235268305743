"""Every tuner searches every sequence and text problem, through the same run_search the CLI
calls; the CLI itself on the issue's commands; metrics the problems pick reach the study."""

from __future__ import annotations

import json

import pytest
from cli import compose, nasfw, trials

from nasfw.search import run_search

TUNERS = {
    "random": ["tuner.n_trials=2", "tuner.batch_size=2"],
    "tpe": ["tuner.n_trials=3", "tuner.batch_size=3", "tuner.n_startup_trials=2"],
    "evolution": [
        "tuner.population_size=2",
        "tuner.sample_size=2",
        "tuner.n_trials=3",
        "tuner.batch_size=2",
    ],
    "codeepneat": [
        "tuner.generations=1",
        "tuner.blueprint_population=2",
        "tuner.module_population=8",
        "tuner.genomes_per_blueprint=1",
    ],
}
PROBLEMS = {
    "mnist1d": ("sequence_small", "accuracy"),
    "ppg_heart_rate": ("sequence_small", "neg_mae"),
    "grammar_acceptability": ("text_small", "mcc"),
    "review_sentiment": ("text_small", "accuracy"),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("tuner", sorted(TUNERS))
def test_every_tuner_searches_every_problem(tmp_path, tuner, problem):
    space, metric = PROBLEMS[problem]
    cfg = compose(
        f"tuner={tuner}",
        *TUNERS[tuner],
        f"problem={problem}",
        f"search_space={space}",
        "problem.n_samples=80",
        "train.epochs=1",
        "train.batch_size=16",
        "launcher.workers=0",
        "tracking=none",
        f"storage.url=sqlite:///{tmp_path}/nasfw.db",
    )
    context = run_search(cfg, tmp_path)
    done = [r for r in context.history if r.result.ok]
    assert done, [r.result.error for r in context.history]
    assert context.study.metric_names == [f"val_{metric}"]
    summary = json.loads((tmp_path / "best_model" / "summary.json").read_text())
    assert f"test_{metric}" in summary
    if space == "text_small":
        vocabulary = json.loads((tmp_path / "best_model" / "vocabulary.json").read_text())
        assert vocabulary[0] == "<pad>" and len(vocabulary) == context.problem.vocab_size
        assert all(any(n.op == "embedding" for n in r.graph) for r in context.history)


# Long (a CoDeepNEAT search on text with MLflow, ~19 s): pytest -m slow runs it.
@pytest.mark.slow
def test_the_cli_searches_text_with_codeepneat_and_logs_a_token_model(tmp_path):
    """The issue's command, small; MLflow logs the best model, which takes token ids."""
    import mlflow
    import numpy as np

    url = f"sqlite:///{tmp_path}/nasfw.db"
    run = nasfw(
        tmp_path,
        "problem=grammar_acceptability",
        "search_space=text_small",
        "problem.n_samples=120",
        *TUNERS["codeepneat"],
        "train.epochs=1",
        "launcher.workers=0",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"storage.url={url}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "val mcc" in run.stdout
    done = trials(url, "codeepneat-grammar_acceptability-text_small-seed0")
    assert any(t.state.name == "COMPLETE" for t in done)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    [uri] = [r.data.tags["nasfw.model_uri"] for r in runs if "nasfw.model_uri" in r.data.tags]
    model = mlflow.pyfunc.load_model(uri)
    tokens = np.array([[3, 5, 7] + [0] * 21, [1] * 24], dtype=np.int64)
    assert np.asarray(model.predict(tokens)).shape == (2, 2)


def test_a_search_space_for_another_modality_is_refused(tmp_path):
    from nasfw.search_space import SearchSpaceError

    cfg = compose(
        "problem=grammar_acceptability",
        "search_space=sequence_small",
        "problem.n_samples=60",
        "tracking=none",
        f"storage.url=sqlite:///{tmp_path}/nasfw.db",
    )
    wanted = r"serves \['sequence'\] problems .* is text; .*\(search_space=text_small\)"
    with pytest.raises(SearchSpaceError, match=wanted):
        run_search(cfg, tmp_path)
    assert not (tmp_path / "nasfw.db").exists() or not trials(
        f"sqlite:///{tmp_path}/nasfw.db", "codeepneat-grammar_acceptability-sequence_small-seed0"
    )
