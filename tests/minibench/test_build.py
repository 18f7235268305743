"""``python -m nasfw mode=minibench``: the DB builds through the CLI, resumes, and refuses bad
suites before searching anything."""

from __future__ import annotations

import json

import pytest
from cli import nasfw, trials
from minibench_cli import QUICK, SUITE

from nasfw.minibench.db import BestModelDB


def test_every_problem_keeps_its_best_networks_with_its_meta_features(built):
    folder, log = built
    db = BestModelDB(str(folder / "minibench.db"), must_exist=True)
    problems = {p.id: p for p in db.problems()}
    assert sorted(problems) == ["digits", "digits_noisy:noise=0.5", "iris", "wine"]
    noisy = problems["digits_noisy:noise=0.5"]
    assert noisy.settings["noise"] == 0.5 and noisy.meta.modality == "image"
    assert noisy.meta.input_shape == (1, 8, 8) and noisy.meta.n_outputs == 10
    assert problems["wine"].meta.input_shape == (13,) and problems["wine"].meta.n_outputs == 3
    for pid, problem in problems.items():
        assert problem.search_space == ("petridish_full" if "digits" in pid else "tabular_mlp")
        models = db.models(pid)
        assert 1 <= len(models) <= 3
        values = [m.value for m in models]
        assert values == sorted(values, reverse=True)
        # Each is the trial of the study that searched the problem, with its value.
        stored = {t.number: t for t in trials(problem.storage, problem.study)}
        assert len(stored) == problem.trials == 4
        for model in models:
            assert stored[model.trial].value == pytest.approx(model.value)
            assert model.flops > 0 and model.params > 0 and model.epoch_seconds > 0
        best = max(t.value for t in stored.values() if t.value is not None)
        assert values[0] == pytest.approx(best)
        # Every network trained, for the screening regressor.
        evaluated = db.evaluations(pid)
        assert {e.trial for e in evaluated} <= set(stored) and len(evaluated) >= len(models)
        for e in evaluated:
            assert stored[e.trial].value == pytest.approx(e.value)
    assert "leave-one-problem-out" in log and "Spearman" in log


def test_the_classes_constraint_sets_are_ordinary_search_spaces(built):
    folder, _ = built
    spaces = folder / "minibench_spaces"
    files = sorted(p.name for p in (spaces / "search_space").glob("*.yaml"))
    assert "mb_tabular_0.yaml" in files and any(f.startswith("mb_image_") for f in files)
    report = json.loads(next(folder.glob("outputs/*/*/minibench.json")).read_text())
    assert {c["name"] for c in report["classes"]} == {f.removesuffix(".yaml") for f in files}
    # Inspectable and usable by hand, through Hydra's search path.
    searchpath = f"hydra.searchpath=[file://{spaces}]"
    shown = nasfw(folder, searchpath, "search_space=mb_tabular_0", "problem=iris", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "name: mb_tabular_0" in shown.stdout
    run = nasfw(
        folder,
        searchpath,
        "search_space=mb_tabular_0",
        "problem=breast_cancer",
        "tuner=random",
        "tuner.n_trials=2",
        "tuner.batch_size=2",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.slow  # ~27 s; suite time
def test_a_rerun_resumes_and_a_longer_suite_adds_only_the_new_problem(built, tmp_path):
    import shutil

    folder, _ = built
    for name in ("minibench.db", "nasfw.db"):
        shutil.copy(folder / name, tmp_path / name)
    again = nasfw(tmp_path, *QUICK, SUITE)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is in the DB already") == 4
    assert "searching" not in again.stderr
    longer = SUITE.replace("wine]", "wine,breast_cancer]")
    grown = nasfw(tmp_path, *QUICK, longer)
    assert grown.returncode == 0, grown.stderr
    assert grown.stderr.count("is in the DB already") == 4
    assert "minibench: searching breast_cancer" in " ".join(grown.stderr.split())
    db = BestModelDB(str(tmp_path / "minibench.db"))
    assert "breast_cancer" in {p.id for p in db.problems()}
    # Other search settings: the problem is searched again (its own new study).
    other = nasfw(tmp_path, *QUICK, "train.epochs=2", "minibench.problems=[iris]")
    assert other.returncode == 0, other.stderr
    assert "minibench: searching iris" in " ".join(other.stderr.split())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nope", r"minibench.problems\[1\]='nope': no problem 'nope'"),
        ('"digits_noisy:nois=0.5"', r"minibench.problems\[1\]=.*nois"),
        ('"digits_noisy:noise=-1"', r"minibench.problems\[1\].noise=-1.0 is out of range"),
        ('"iris:n_samples=many"', r"minibench.problems\[1\]=.*n_samples"),
        ('"digits_noisy:noise"', r"minibench.problems\[1\]=.*is not <key>=<value>"),
        ("iris", r"minibench.problems lists a problem twice"),
        ('"mnist:data_dir=/nowhere"', r"/nowhere"),
        ('"2bad name"', r"expected <problem>\[:<key>=<value>,...\]"),
    ],
)
def test_a_bad_suite_is_refused_before_anything_is_searched(tmp_path, entry, message):
    import re

    from cli import compose

    from nasfw.config import ConfigError
    from nasfw.minibench.build import build_db
    from nasfw.problem import DataError

    cfg = compose(*QUICK, f"minibench.problems=[iris,{entry}]", f"minibench.db={tmp_path}/mb.db")
    with pytest.raises((ConfigError, DataError)) as err:
        build_db(cfg, tmp_path)
    assert re.search(message, " ".join(str(err.value).split())), err.value
    assert not (tmp_path / "mb.db").exists() and not (tmp_path / "nasfw.db").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("minibench.spaces.tabular=nope", "minibench.spaces.tabular=nope: no such search space"),
        ("search_space=auto", "search_space=auto cannot build the DB"),
        ("minibench.problems=[]", "minibench.problems is empty"),
        ("minibench.top_k=0", "minibench.top_k=0 is out of range"),
    ],
)
def test_bad_minibench_settings_are_named(tmp_path, override, message):
    from cli import compose

    from nasfw.config import ConfigError
    from nasfw.minibench.build import build_db

    cfg = compose(*QUICK, "minibench.problems=[iris]", f"minibench.db={tmp_path}/mb.db", override)
    with pytest.raises(ConfigError, match=message):
        build_db(cfg, tmp_path)
    assert not (tmp_path / "mb.db").exists()


def test_the_cli_exits_2_naming_the_entry(tmp_path):
    out = nasfw(tmp_path, *QUICK, 'minibench.problems=[iris,"wine:noize=1"]')
    assert out.returncode == 2
    assert "minibench.problems[1]" in out.stderr and "noize" in out.stderr
    assert not (tmp_path / "minibench.db").exists() and not (tmp_path / "nasfw.db").exists()


@pytest.mark.slow
def test_an_interrupted_build_resumes_with_the_problems_it_finished(tmp_path):
    import signal
    import time

    from cli import start

    proc = start(tmp_path, *QUICK, SUITE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (tmp_path / "minibench.db").exists():
            try:
                if BestModelDB(str(tmp_path / "minibench.db")).problems():
                    break
            except Exception:  # being written
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "minibench.db=minibench.db keeps every problem searched" in " ".join(err.split())
    done = {p.id for p in BestModelDB(str(tmp_path / "minibench.db")).problems()}
    assert 1 <= len(done) < 4
    again = nasfw(tmp_path, *QUICK, SUITE)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("is in the DB already") == len(done)
    assert len(BestModelDB(str(tmp_path / "minibench.db")).problems()) == 4
