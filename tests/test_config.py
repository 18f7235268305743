"""Setting ranges declared in the schemas, checked before a study exists (nasfw/config.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cli import compose

from nasfw import ConfigError, TrainConfig, check_settings, setting

OPTIONS = {
    "tuner": ["codeepneat", "evolution", "random", "tpe"],
    "launcher": ["local", "lsf", "ray", "slurm"],
    "evaluation": ["auto", "plain", "regularized"],
    "postproc": ["morphnet", "none"],
    "search_space": ["image_small", "tabular_mlp"],
    "problem": ["digits", "iris", "wine", "breast_cancer", "diabetes"],
    "tracking": ["mlflow", "none"],
}


@pytest.mark.parametrize(
    "override", [f"{group}={option}" for group, options in OPTIONS.items() for option in options]
)
def test_every_preset_is_within_its_ranges(override):
    check_settings(compose(override))


OUT_OF_RANGE = [
    ("train.epochs=0", "train.epochs=0 is out of range: it must be >= 1"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.lr=-1", "train.lr=-1.0 is out of range: it must be > 0"),
    ("train.threads=-3", "train.threads=-3"),
    ("seed=-1", "seed=-1"),
    ("postproc=morphnet postproc.top_k=0", "postproc.top_k=0"),
    ("search_space.max_params=-5", "search_space.max_params=-5"),
    ("train.lr=0", "train.lr=0.0 is out of range: it must be > 0"),
    ("train.lr=-inf", "train.lr=-inf must be a finite number"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.threads=0", "train.threads=0"),
    ("problem.test_fraction=1", "problem.test_fraction=1.0"),
    ("search_space.max_nodes=0", "search_space.max_nodes=0"),
    ("tuner=tpe tuner.n_trials=0", "tuner.n_trials=0"),
    ("tuner=tpe tuner.n_startup_trials=-1", "tuner.n_startup_trials=-1"),
    ("tuner=evolution tuner.population_size=0", "tuner.population_size=0"),
    (
        "tuner.parent_fraction=1.5",
        "tuner.parent_fraction=1.5 is out of range: it must be > 0 and <= 1",
    ),
    ("tuner.module_crossover_prob=2", "tuner.module_crossover_prob=2.0"),
    ("tuner.lr_min=nan", "tuner.lr_min=nan"),
    ("launcher=slurm launcher.poll_interval_s=0", "launcher.poll_interval_s=0.0"),
    ("launcher=lsf launcher.mem_gb=-1", "launcher.mem_gb=-1.0"),
    ("launcher=ray launcher.num_gpus=1.5", "launcher.num_gpus=1.5: Ray gives a task a fraction"),
    ("launcher=ray launcher.head_timeout_s=0", "launcher.head_timeout_s=0.0"),
    ("postproc=morphnet postproc.flop_budget=0", "postproc.flop_budget=0.0"),
    ("evaluation=regularized evaluation.strength=0", "evaluation.strength=0.0"),
    ("evaluation=regularized evaluation.shrink_epochs=0", "evaluation.shrink_epochs=0"),
]


@pytest.mark.parametrize(("overrides", "message"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_a_value_out_of_range_is_named(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_settings(compose(*overrides.split()))
    assert message in str(info.value)


def test_schema_instances_are_checked_with_a_prefix():
    check_settings(TrainConfig(), "train")
    with pytest.raises(ConfigError, match=r"^train\.epochs=-2 is out of range"):
        check_settings(TrainConfig(epochs=-2), "train")


def test_a_plugin_schema_declares_its_own_ranges():
    @dataclass
    class Mine:
        rate: float = setting(0.5, ge=0, le=1)
        steps: list[int] | None = None
        budget: float | None = setting(None, gt=0)

    check_settings(Mine(), "tuner")
    check_settings(Mine(budget=3.0, steps=[1, 2]), "tuner")
    with pytest.raises(ConfigError, match=r"tuner\.rate=1\.5 .* >= 0 and <= 1"):
        check_settings(Mine(rate=1.5), "tuner")
    with pytest.raises(ConfigError, match=r"tuner\.budget=0\.0"):
        check_settings(Mine(budget=0.0), "tuner")


CHECK_WRITABLE_RACE = """
import sys
from multiprocessing import Barrier, Process, Queue

from nasfw import ConfigError, check_writable


def check(folder, barrier, failures):
    barrier.wait()
    for _ in range(40):
        try:
            check_writable(folder, "storage.artifacts")
        except ConfigError as err:
            failures.put(str(err))
            return


if __name__ == "__main__":
    folder, barrier, failures = sys.argv[1], Barrier(6), Queue()
    checkers = [Process(target=check, args=(folder, barrier, failures)) for _ in range(6)]
    for p in checkers:
        p.start()
    for p in checkers:
        p.join()
    print("OK" if failures.empty() else "FAILED " + failures.get())
"""


def test_searches_started_together_check_one_missing_folder_without_failing(tmp_path):
    """Two searches started in one folder check the same missing ``nasfw-artifacts`` at once:
    one's clean-up of the folder it made to try must not fail the other's check (a Postgres
    test's two searches met it: "cannot write in .../nasfw-artifacts (No such file or
    directory)")."""
    import subprocess
    import sys

    script = tmp_path / "race.py"
    script.write_text(CHECK_WRITABLE_RACE)
    folder = tmp_path / "runs" / "nasfw-artifacts"
    out = subprocess.run(
        [sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK", out.stdout
