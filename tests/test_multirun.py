"""Hydra multiruns (#25, fault 8): jobs that differ in a result setting get studies of their own
by default, and a refused or failed job is reported while the others still run."""

from __future__ import annotations

import optuna
import pytest
from cli import nasfw
from omegaconf import OmegaConf

from nasfw.sweep import sweep_study_name as _sweep_study_name

SWEEP = [
    "-m",
    "problem=iris",
    "search_space=tabular_mlp",
    "train.epochs=1",
    "tracking=none",
    "tuner=random",
    "tuner.n_trials=2",
    "tuner.batch_size=2",
    "launcher.workers=0",
]
CFG = OmegaConf.create({"study_name": "random-iris-tabular_mlp-seed0"})


def studies(tmp_path) -> list[str]:
    summaries = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'nasfw.db'}")
    return sorted(s.study_name for s in summaries if "::" not in s.study_name)


@pytest.mark.parametrize(
    ("overrides", "same_name"),
    [
        (["tuner=tpe", "seed=3", "problem=wine", "search_space=tabular_mlp"], True),
        (["tracking=none", "launcher.workers=2", "storage.url=sqlite:///x.db"], True),
        (["study_name=mine", "train.lr=0.1"], True),  # set by the user: kept
        (["train.lr=0.1"], False),
        (["pruner=median"], False),
        (["tuner.n_trials=5"], False),
    ],
)
def test_only_result_settings_outside_the_default_name_change_it(overrides, same_name):
    name = _sweep_study_name(CFG, overrides)
    assert (name is None) == same_name
    if name is not None:
        assert name.startswith(f"{CFG.study_name}-") and len(name) == len(CFG.study_name) + 9
        assert _sweep_study_name(CFG, list(reversed(overrides))) == name  # order-free
        assert _sweep_study_name(CFG, [*overrides, "tracking=none"]) == name


def test_only_the_swept_keys_count_where_the_sweep_is_known():
    job = ["train.epochs=1", "train.lr=0.1", "seed=2"]
    assert _sweep_study_name(CFG, job, swept={"seed"}) is None  # names as they always were
    only_lr = _sweep_study_name(CFG, job, swept={"seed", "train.lr"})
    assert only_lr == _sweep_study_name(CFG, ["train.lr=0.1"])


def test_a_sweep_over_a_result_setting_runs_every_job_in_a_study_of_its_own(tmp_path):
    run = nasfw(tmp_path, *SWEEP, "train.lr=0.001,0.01,0.1")
    assert run.returncode == 0, run.stderr
    names = studies(tmp_path)
    assert len(names) == 3 and all(n.startswith("random-iris-tabular_mlp-seed0-") for n in names)
    seeds = nasfw(tmp_path, *SWEEP, "seed=0,1")  # a sweep over seeds keeps its names
    assert seeds.returncode == 0, seeds.stderr
    new = set(studies(tmp_path)) - set(names)
    assert new == {"random-iris-tabular_mlp-seed0", "random-iris-tabular_mlp-seed1"}
    names = studies(tmp_path)
    again = nasfw(tmp_path, *SWEEP, "train.lr=0.001,0.01,0.1")  # the same sweep resumes them
    assert again.returncode == 0, again.stderr
    assert studies(tmp_path) == names


def test_a_refused_job_is_reported_and_the_others_still_run(tmp_path):
    run = nasfw(tmp_path, *SWEEP, "train.batch_size=16,-1,32")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("nasfw: error:")]
    assert errors[0] == "nasfw: error: train.batch_size=-1 is out of range: it must be >= 1"
    assert errors[-1].startswith("nasfw: error: 1 job(s) of the sweep failed: #1 (exit 2)")
    assert len(studies(tmp_path)) == 2 and "Traceback" not in run.stderr


def test_each_job_of_a_sweep_times_its_own_start_up(tmp_path):
    """The jobs of a multirun run one after another in one process: the second job's
    "first training step ... after start" counts from its own start, not from the process's
    (which would include the whole first job)."""
    import json

    from nasfw.ledger import FIRST_STEP_ATTR, SECONDS_ATTR

    run = nasfw(tmp_path, *SWEEP, "seed=0,1", "tuner.n_trials=4", "train.epochs=5")
    assert run.returncode == 0, run.stderr
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'nasfw.db'}")

    def attrs(seed: int) -> dict:
        study_id = storage.get_study_id_from_name(f"random-iris-tabular_mlp-seed{seed}")
        return storage.get_study_system_attrs(study_id)

    first_job_ran = sum(json.loads(attrs(0)[SECONDS_ATTR]).values())
    assert first_job_ran > 0
    assert attrs(1)[FIRST_STEP_ATTR] < first_job_ran
    lines = [line for line in run.stderr.splitlines() if "first training step" in line]
    assert len(lines) == 2
