"""The command line, end to end: ``python -m nasfw`` in a subprocess, real SQLite storage."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
import torch
from cli import TINY, nasfw, start, trials, wait_for_trials

from nasfw import ArchGraph
from nasfw.ledger import FIRST_STEP_ATTR as FIRST_STEP
from nasfw.ledger import SECONDS_ATTR as SECONDS
from nasfw.ledger import architecture_of, trial_extra

CUDA = torch.cuda.is_available()


def test_help_lists_groups_and_options(tmp_path):
    out = nasfw(tmp_path, "--help")
    assert out.returncode == 0, out.stderr
    for line in (
        "tuner: codeepneat, evolution, hyperband, petridish, random, tpe",
        "pruner: hyperband, median, none, patient, successive_halving",
        "search_space: auto, fcnet, hpobench_mlp, image_small, nasbench201, petridish_full, "
        "petridish_full_sequence, petridish_limited, sequence_small, tabular_mlp, text_small",
        "launcher: local, lsf, ray, slurm",
        "tracking: mlflow, none",
        "postproc: morphnet, none",
    ):
        assert line in out.stdout
    assert "digits" in out.stdout and "cifar10" in out.stdout and "mnist1d" in out.stdout


STUDY = "random-iris-tabular_mlp-seed0"


def test_tiny_search_then_rerun_resumes_without_rerunning(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    first = nasfw(tmp_path, *TINY, f"storage.url={url}")
    assert first.returncode == 0, first.stderr
    assert "random-iris-tabular_mlp-seed0: 2 evaluations" in first.stdout
    done = trials(url, "random-iris-tabular_mlp-seed0")
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {t.user_attrs["generation"] for t in done} == {0}
    graph = ArchGraph.from_json(done[0].system_attrs["nasfw:graph"])
    assert architecture_of(done[0].user_attrs) == graph.summary() and "→" in graph.summary()
    assert done[0].params and done[0].user_attrs["flops"] > 0
    # train.device=auto: the GPU where there is one, else the CPU; the trial says which.
    assert trial_extra(done[0].user_attrs)["device"] == ("cuda:0" if CUDA else "cpu")
    assert trial_extra(done[0].user_attrs)["precision"] == "fp32"
    study = optuna.load_study(study_name=STUDY, storage=url)
    timing = json.loads(study._storage.get_study_system_attrs(study._study_id)[SECONDS])
    assert study.metric_names == ["val_accuracy"]
    assert not [k for k in study.user_attrs if k.startswith("nasfw:")]  # not a dashboard wall
    assert list(timing) == ["0"] and timing["0"] > 0  # the generation's wall seconds
    # Start-up: from the process's start to the first training step, printed once and stored.
    first_step = study._storage.get_study_system_attrs(study._study_id)[FIRST_STEP]
    assert 0 < first_step < 300
    assert first.stderr.count("first training step") == 1
    assert f"first training step {first_step:.1f} s after start" in first.stderr
    exported = list(tmp_path.glob("outputs/*/*/best_model/graph.json"))
    assert len(exported) == 1 and exported[0].with_name("state_dict.pt").is_file()
    front = json.loads(exported[0].with_name("pareto_front.json").read_text())
    assert front and {row["trial"] for row in front} <= {t.number for t in done}
    assert "Pareto front (val accuracy vs FLOPs)" in first.stdout

    again = nasfw(tmp_path, *TINY, f"storage.url={url}")
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert "first training step" not in again.stderr  # nothing left to train
    assert len(trials(url, "random-iris-tabular_mlp-seed0")) == 2


# (arguments, trials in the whole search). Networks train in ~0.2 s, so the search is made long
# enough (5 generations of 4) that polling the study cannot miss the middle of it on a loaded CI.
KILL_CASES = {
    "random": (["tuner=random", "tuner.n_trials=20", "tuner.batch_size=4"], 20),
    "codeepneat": (
        [
            "tuner=codeepneat",
            "tuner.generations=5",
            "tuner.blueprint_population=2",
            "tuner.genomes_per_blueprint=2",
            "tuner.module_population=4",
        ],
        20,
    ),
    # 3 seeds, then 2 rounds of 2 candidate trainings and their 2 children: the children
    # start from weights a killed process stored, so an exact resume shows they were kept.
    "petridish": (
        [
            "tuner=petridish",
            "tuner.init_models=3",
            "tuner.rounds=2",
            "tuner.max_parents=2",
            "storage.artifacts=artifacts",
        ],
        11,
    ),
}
KILL_AFTER = 6  # trials seen: killed in generation 1, with 3 generations still to come


# Each case takes 30-70 s: CoDeepNEAT's (the most state) stays in, the others are slow.
@pytest.mark.parametrize(
    "tuner",
    [
        pytest.param(t, marks=pytest.mark.slow) if t != "codeepneat" else t
        for t in sorted(KILL_CASES)
    ],
)
def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path, tuner):
    case, total = KILL_CASES[tuner]
    args = [*case, "train.epochs=2", "launcher.workers=0", "tracking=none"]
    url = f"sqlite:///{tmp_path}/s.db"
    study = f"{tuner}-digits-image_small-seed0"
    proc = start(tmp_path, *args, f"storage.url={url}")
    seen = wait_for_trials(url, study, KILL_AFTER, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert KILL_AFTER <= seen < total, f"could not kill the search mid-way ({seen} trials)"
    killed_at = len(trials(url, study))

    resumed = nasfw(tmp_path, *args, f"storage.url={url}")
    assert resumed.returncode == 0, resumed.stderr
    after = trials(url, study)
    keys = [(t.user_attrs["generation"], t.user_attrs["index"]) for t in after]
    assert len(after) == total and len(set(keys)) == total, keys  # no loss, no repeat
    assert killed_at < total

    whole = nasfw(tmp_path, *args, f"storage.url={url}", "study_name=uninterrupted")
    assert whole.returncode == 0, whole.stderr
    reference = {
        (t.user_attrs["generation"], t.user_attrs["index"]): (t.user_attrs["graph_hash"], t.value)
        for t in trials(url, "uninterrupted")
    }
    got = {
        (t.user_attrs["generation"], t.user_attrs["index"]): (t.user_attrs["graph_hash"], t.value)
        for t in after
    }
    assert got == reference
    if tuner == "petridish":  # the exported best is the evaluated network, from its weights
        summaries = sorted(tmp_path.glob("outputs/*/*/best_model/summary.json"))
        summary = json.loads(summaries[-1].read_text())
        assert "stored weights" in summary["trained_on"]["weights"]
        best = next(t for t in after if t.number == summary["trial"])
        assert best.user_attrs["attrs"]["petridish"] in ("seed", "child")
        assert summary["val_accuracy"] == best.value and summary["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tuner=nope"], ["Could not find 'tuner/nope'", "random", "tpe"]),
        (["tuner.n_trials=abc"], ["tuner.n_trials"]),
        (["train.optimizer=adagrad"], ["train.optimizer", "adam"]),
        (["search_space.ops.dense.units.low=300"], ["search_space.ops.dense.units", "min > max"]),
        (["storage.url=sqlite:////nonexistent/dir/x.db"], ["storage.url", "/nonexistent/dir"]),
        (["problem=mnist", "search_space=image_small"], ["problem=mnist", "data_dir"]),
        (["search_space=image_small"], ["search_space=image_small", "tabular"]),
        (["launcher.workers=-1"], ["launcher.workers=-1", ">= 0"]),
    ],
    ids=[
        "unknown-option",
        "wrong-type",
        "bad-enum",
        "min-gt-max",
        "storage",
        "no-data-dir",
        "modality",
        "launcher-setting",
    ],
)
def test_bad_input_fails_clearly_before_training(tmp_path, args, expected):
    out = nasfw(tmp_path, *TINY, f"storage.url=sqlite:///{tmp_path}/s.db", *args)
    assert out.returncode == 2  # Hydra's compose errors and nasfw's own alike
    for text in expected:
        assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("outputs/*/*/best_model"))


# Settings that were accepted and then failed every candidate or meant nothing (each range
# of every schema is tested in-process in test_config.py).
OUT_OF_RANGE = [
    ("train.epochs=0", "train.epochs=0"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.device=cuda", "train.device"),
    ("search_space.max_params=-5", "search_space.max_params=-5"),
    ("search_space.stages.0.min_nodes=0", "min_nodes"),
]


@pytest.mark.parametrize(("args", "key"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_settings_out_of_range_fail_before_the_study_exists(tmp_path, args, key):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(tmp_path, *TINY, f"storage.url={url}", *args.split())
    assert out.returncode == 2, out.stderr
    assert key in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(url)


def test_a_non_finite_metric_is_a_failed_trial_not_a_crash(tmp_path):
    # Faithful to the report: SGD at lr=1e12 on diabetes makes the last step's weights
    # overflow, so training ends with a finite loss and the validation R^2 is NaN.
    url = f"sqlite:///{tmp_path}/s.db"
    args = [
        *TINY,
        "problem=diabetes",
        "train.batch_size=512",
        "train.optimizer=sgd",
        "train.lr=1e12",
        f"storage.url={url}",
    ]
    for _ in range(2):  # the rerun resumes the stored study instead of crashing again
        out = nasfw(tmp_path, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "no candidate" in out.stderr and "non-finite" in out.stderr
        stored = trials(url, "random-diabetes-tabular_mlp-seed0")
        assert [t.state for t in stored] == [optuna.trial.TrialState.FAIL] * 2
        assert all("non-finite" in t.user_attrs["fail_reason"] for t in stored)


def test_an_option_of_a_blocked_plugin_names_the_variable(tmp_path):
    out = nasfw(tmp_path, *TINY, "tuner=codeepneat", env={"NASFW_DISABLE_PLUGINS": "codeepneat"})
    assert out.returncode == 2
    assert "Could not find 'tuner/codeepneat'" in out.stderr
    assert "tuner=codeepneat is not available because NASFW_DISABLE_PLUGINS=codeepneat" in (
        out.stderr
    )


def test_files_and_stores_a_run_needs_are_checked_before_the_study_exists(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    bad_population = tmp_path / "pop.json"
    bad_population.write_text(json.dumps({"format": "nasfw.codeepneat.population"}))
    base = [a for a in TINY if not a.startswith("tuner")]
    codeepneat = [*base, "tuner=codeepneat", "tuner.generations=1", "tuner.blueprint_population=2"]
    cases = [
        (["export_dir=/proc/x"], "export_dir: cannot write in /proc/x"),
        (
            ["tracking=mlflow", "tracking.tracking_uri=sqlite:////proc/x/m.db"],
            "tracking.tracking_uri",
        ),
        ([*codeepneat, f"tuner.init_population={bad_population}"], "tuner.init_population"),
        ([*codeepneat, "tuner.save_init_population=/proc/x/p.json"], "tuner.save_init_population"),
    ]
    for args, message in cases:
        started = time.monotonic()
        out = nasfw(tmp_path, *args, f"storage.url={url}")
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and time.monotonic() - started < 60
        assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(url)
    fixed = nasfw(tmp_path, *codeepneat, f"storage.url={url}")
    assert fixed.returncode == 0, fixed.stderr


def test_data_dir_without_the_files_names_them(tmp_path):
    (tmp_path / "data").mkdir()
    out = nasfw(
        tmp_path,
        *TINY,
        "problem=mnist",
        "search_space=image_small",
        f"problem.data_dir={tmp_path}/data",
        f"storage.url=sqlite:///{tmp_path}/s.db",
    )
    assert out.returncode == 2
    assert "train-images-idx3-ubyte" in out.stderr and str(tmp_path / "data") in out.stderr


def test_diverging_candidates_are_failed_trials_and_the_run_says_so(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(tmp_path, *TINY, f"storage.url={url}", "train.optimizer=sgd", "train.lr=1e30")
    assert out.returncode == 2
    assert "no candidate" in out.stderr and "diverged" in out.stderr
    stored = trials(url, "random-iris-tabular_mlp-seed0")
    assert [t.state for t in stored] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.user_attrs["fail_reason"].startswith("diverged") for t in stored)


# Long (a Hydra multirun of 4 searches, ~35 s): pytest -m slow runs it.
@pytest.mark.slow
def test_multirun_sweep_gives_one_mlflow_run_each(tmp_path):
    from mlflow import MlflowClient

    # No tuner.* override: in a multirun Hydra also applies them to the default tuner.
    tiny = [a for a in TINY if not a.startswith(("tuner", "tracking="))]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = nasfw(
        tmp_path,
        "-m",
        "tuner=random,tpe",
        "seed=0,1",
        *tiny,
        f"storage.url=sqlite:///{tmp_path}/s.db",
        f"tracking.tracking_uri={uri}",
    )
    assert out.returncode == 0, out.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nasfw")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == [
        "random-iris-tabular_mlp-seed0",
        "random-iris-tabular_mlp-seed1",
        "tpe-iris-tabular_mlp-seed0",
        "tpe-iris-tabular_mlp-seed1",
    ]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["nasfw.problem"] == "iris"
        assert parent.data.params["tuner.n_trials"] == "20"
        assert parent.data.params["trained_on.device"] == ("cuda:0" if CUDA else "cpu")
        assert "best_val_accuracy" in parent.data.metrics
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 5  # 20 trials in generations of 4
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"best_so_far.png", "pareto_front.png", "pareto_front.json"} <= artifacts
    assert len(list((tmp_path / "multirun").glob("*/*/*/.hydra"))) == 4


def test_identical_networks_are_evaluated_once(tmp_path):
    # One module per stage: both assemblies of each blueprint are the same network.
    args = [
        "tuner=codeepneat",
        "tuner.generations=1",
        "tuner.blueprint_population=2",
        "tuner.genomes_per_blueprint=2",
        "tuner.module_population=2",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
        f"storage.url=sqlite:///{tmp_path}/s.db",
    ]
    values = {}
    for reuse in ("true", "false"):
        out = nasfw(tmp_path, *args, f"reuse_evaluations={reuse}", f"study_name=reuse-{reuse}")
        assert out.returncode == 0, out.stderr
        done = trials(f"sqlite:///{tmp_path}/s.db", f"reuse-{reuse}")
        values[reuse] = {t.user_attrs["index"]: t.value for t in done}
        reused = [t for t in done if "reused_from" in trial_extra(t.user_attrs)]
        if reuse == "true":
            assert len(reused) >= 2
            for t in reused:
                source = done[trial_extra(t.user_attrs)["reused_from"]]
                assert source.user_attrs["graph_hash"] == t.user_attrs["graph_hash"]
                assert source.value == t.value
        else:
            assert not reused
    # Seeded evaluation: retraining the twin gives exactly what reusing it gave.
    assert values["true"] == values["false"]


def test_a_rejected_config_does_not_claim_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    bad = nasfw(tmp_path, *TINY, f"storage.url={url}", "tuner.n_trials=0")
    assert bad.returncode == 2 and "tuner.n_trials" in bad.stderr
    fixed = nasfw(tmp_path, *TINY, f"storage.url={url}")
    assert fixed.returncode == 0, fixed.stderr
    assert len(trials(url, "random-iris-tabular_mlp-seed0")) == 2
