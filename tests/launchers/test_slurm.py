"""The SLURM launcher against a real single-node SLURM (started by scripts/services.py)."""

from __future__ import annotations

import subprocess

import pytest

from nasfw import ConfigError
from nasfw.launchers.slurm import SlurmLauncher, SlurmLauncherConfig, parse_sacct
from nasfw.testing import LauncherContract, die_on_three, square


def sacct(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job.split("_")[0]],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("|", 1) for line in out.stdout.splitlines() if line)


def squeue_state(job: str) -> str:
    return all_tasks().get(job, "")


def settled(job: str, expected: dict[str, str], timeout: float = 30) -> dict[str, str]:
    """sacct's states of ``job`` once they are ``expected`` (accounting lags a little)."""
    import time

    deadline = time.monotonic() + timeout
    while (states := sacct(job)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return states


def cancel_and_wait(job: str, pid: int, timeout: float = 60) -> None:
    """``scancel`` a job, return once its process is gone (SIGTERM, KillWait, SIGKILL)."""
    import os
    import time

    subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), f"job {job} still running after {timeout} s"


@pytest.fixture
def make_launcher(slurm_cluster, tmp_path):
    def make(**overrides):
        return SlurmLauncher(
            SlurmLauncherConfig(folder=str(tmp_path / "jobs"), poll_interval_s=0.5, **overrides)
        )

    return make


class TestSlurmContract(LauncherContract):
    retries_lost = True

    @pytest.fixture
    def launcher(self, make_launcher):
        return make_launcher()

    def interrupt(self, where):
        job = f"{where['SLURM_ARRAY_JOB_ID']}_{where['SLURM_ARRAY_TASK_ID']}"
        cancel_and_wait(job, where["pid"])


def test_generation_is_one_job_array(make_launcher):
    launcher = make_launcher()
    assert [r.metric for r in launcher.map(square, [1, 2, 3])] == [1.0, 4.0, 9.0]
    assert not (launcher.folder / "jobs.jsonl").exists()  # plain functions: no key, no record
    arrays = {p.name.split("_")[0] for p in launcher.folder.glob("*_*") if p.name[0].isdigit()}
    assert len(arrays) == 1
    array = next(iter(arrays))
    expected = {f"{array}_{i}": "COMPLETED" for i in range(3)}
    assert settled(array, expected) == expected


def test_dead_job_fails_only_its_item_without_retry(make_launcher):
    results = make_launcher().map(die_on_three, [1, 2, 3, 4])
    assert [r.ok for r in results] == [True, True, False, True]
    assert "FAILED" in (results[2].error or "") and "exit code 13" in (results[2].error or "")


def test_cancelled_job_stays_failed_after_max_retries(make_launcher, tmp_path):
    from nasfw.testing import hold

    launcher = make_launcher(max_retries=0)
    import threading
    import time

    tmp_path.chmod(0o777)
    out = []
    t = threading.Thread(target=lambda: out.append(launcher.map(hold, [(str(tmp_path), 0)])))
    t.start()
    while not (tmp_path / "started-0").exists():
        time.sleep(0.05)
    import json

    where = json.loads((tmp_path / "started-0").read_text())
    cancel_and_wait(where["SLURM_JOB_ID"], where["pid"])
    (tmp_path / "release").touch()
    t.join(120)
    [result] = out[0]
    assert not result.ok and "CANCELLED" in (result.error or "") and "attempt 1" in result.error


def test_pending_task_cancelled_before_it_started_is_retried(make_launcher):
    import threading

    from nasfw.testing import napping_square

    launcher = make_launcher()
    launcher.config.array_parallelism = 1
    out = []
    t = threading.Thread(target=lambda: out.append(launcher.map(napping_square, [2, 5, 8])))
    t.start()
    _wait(lambda: any(s == "PENDING" for s in all_tasks().values()), "a pending task")
    pending = sorted(j for j, s in all_tasks().items() if s == "PENDING")[-1]
    subprocess.run(["scancel", pending], check=True)
    t.join(120)
    assert [r.metric for r in out[0]] == [4.0, 25.0, 64.0]
    assert pending not in all_tasks()  # SLURM 22.05 keeps no trace of it: it vanished


def all_tasks() -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"], capture_output=True, text=True
    )
    return dict(line.split("|", 1) for line in out.stdout.splitlines())


def test_parse_sacct_expands_pending_array_ranges():
    text = (
        "7_0|COMPLETED|0:0|None\n7_1|CANCELLED by 0|0:15|None\n7_[2-3,5%2]|PENDING|0:0|Priority\n"
    )
    states = parse_sacct(text)
    assert states["7_0"].state == "COMPLETED"
    assert states["7_1"].state == "CANCELLED" and "CANCELLED by 0" in states["7_1"].reason
    assert [states[f"7_{i}"].state for i in (2, 3, 5)] == ["PENDING"] * 3
    assert "7_4" not in states


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"partition": "nope"}, "launcher.partition"),
        ({"cpus_per_task": 64}, "launcher.cpus_per_task"),
        ({"max_retries": -1}, "launcher.max_retries"),
        ({"time_min": 0}, "launcher.time_min"),
    ],
)
def test_bad_settings_fail_before_any_submission(make_launcher, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_launcher(**overrides)


# -- searches through the command line ------------------------------------------------------

SEARCH = [
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=random",
    "tuner.n_trials=4",
    "tuner.batch_size=2",
    "train.epochs=1",
    "tracking=none",
    "launcher=slurm",
    "launcher.poll_interval_s=0.5",
]
STUDY = "random-iris-tabular_mlp-seed0"


def journal(folder) -> list[dict]:
    import json

    path = folder / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_one_trial_per_candidate(url: str, study: str = STUDY, total: int = 4) -> list:
    import optuna
    from cli import trials

    stored = trials(url, study)
    keys = sorted((t.user_attrs["generation"], t.user_attrs["index"]) for t in stored)
    assert keys == [(g, i) for g in range(total // 2) for i in range(2)], keys
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    return stored


def test_search_runs_each_generation_as_a_job_array(slurm_cluster, postgres_url, tmp_path):
    import uuid

    from cli import nasfw

    study = f"slurm-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "jobs"
    out = nasfw(
        tmp_path,
        *SEARCH,
        f"launcher.folder={folder}",
        f"storage.url={postgres_url}",
        f"study_name={study}",
    )
    assert out.returncode == 0, out.stderr
    assert_one_trial_per_candidate(postgres_url, study)
    submitted = [e["job"] for e in journal(folder) if e["event"] == "submitted"]
    arrays = sorted({job.split("_")[0] for job in submitted})
    assert len(submitted) == 4 and len(arrays) == 2  # one array of 2 per generation
    for array in arrays:
        expected = {f"{array}_{i}": "COMPLETED" for i in range(2)}
        assert settled(array, expected) == expected
    logs = "".join(p.read_text() for p in folder.glob("*/*_log.err"))
    assert "cannot write" not in logs and "cannot read" not in logs  # jobs wrote the trials


def _start_search(tmp_path, folder, url, study):
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nasfw",
            *SEARCH,
            "launcher.array_parallelism=1",  # tasks one after the other: easy to catch mid-way
            f"launcher.folder={folder}",
            f"storage.url={url}",
            f"study_name={study}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(condition, what: str, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow  # ~27 s; the contract's interrupted job covers the retry
def test_job_cancelled_mid_generation_is_retried_and_the_search_finishes(slurm_cluster, tmp_path):
    url, folder = f"sqlite:///{tmp_path}/s.db", tmp_path / "jobs"
    proc = _start_search(tmp_path, folder, url, STUDY)
    try:
        _wait(lambda: len(journal(folder)) >= 2, "generation 0 to be submitted")
        victim = journal(folder)[0]  # task 0 runs, task 1 waits (array_parallelism=1)
        _wait(lambda: squeue_state(victim["job"]) == "RUNNING", "task 0 to run")
        subprocess.run(["scancel", victim["job"]], check=True)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert_one_trial_per_candidate(url)
    events = [(e["event"], e["job"]) for e in journal(folder) if e["key"] == victim["key"]]
    assert [e for e, _ in events] == ["submitted", "failed", "submitted"]
    retried = events[2][1]
    assert sacct(victim["job"])[victim["job"]].startswith("CANCELLED")
    assert sacct(retried)[retried] == "COMPLETED"
    reasons = [e["reason"] for e in journal(folder) if e["event"] == "failed"]
    assert len(reasons) == 1 and f"SLURM job {victim['job']} CANCELLED" in reasons[0]


# Long (kills the driver and waits for SLURM, ~40 s): pytest -m slow runs it.
@pytest.mark.slow
def test_driver_killed_mid_generation_restarts_without_duplicates(
    slurm_cluster, postgres_url, tmp_path
):
    import signal
    import uuid

    from cli import nasfw, trials

    study, folder = f"restart-{uuid.uuid4().hex[:8]}", tmp_path / "jobs"

    def stored() -> int:
        try:
            return len(trials(postgres_url, study))
        except KeyError:
            return 0

    proc = _start_search(tmp_path, folder, postgres_url, study)
    try:
        # Generation 0 done and task 0 of generation 1 written by its job: task 1 is queued
        # or running when the driver dies.
        _wait(lambda: stored() >= 3, "3 trials")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    pending = journal(folder)[-1]["job"]
    again = nasfw(
        tmp_path,
        *SEARCH,
        "launcher.array_parallelism=1",
        f"launcher.folder={folder}",
        f"storage.url={postgres_url}",
        f"study_name={study}",
    )
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert_one_trial_per_candidate(postgres_url, study)
    submitted = [e["job"] for e in journal(folder) if e["event"] == "submitted"]
    assert len(submitted) == 4, submitted  # the restarted driver submitted nothing again
    assert submitted[-1] == pending
    arrays = sorted({job.split("_")[0] for job in submitted})
    states: dict[str, str] = {}
    for array in arrays:
        expected = {f"{array}_{i}": "COMPLETED" for i in range(2)}
        states.update(settled(array, expected))
    assert set(states.values()) == {"COMPLETED"} and len(states) == 4


# Long (a Hydra multirun through submitit, ~25 s): pytest -m slow runs it.
@pytest.mark.slow
def test_hydra_multirun_with_submitit_slurm_is_one_job_array(slurm_cluster, tmp_path):
    import optuna
    from cli import nasfw

    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(
        tmp_path,
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.timeout_min=10",
        f"hydra.launcher.submitit_folder={tmp_path}/submitit/%j",
        "seed=0,1,2,3",
        "tuner=random",  # a tuner.* override would also go to the default tuner in a sweep
        "tuner.n_trials=2",
        "tuner.batch_size=2",
        "problem=iris",
        "search_space=tabular_mlp",
        "train.epochs=1",
        "tracking=none",
        "launcher.workers=0",
        f"storage.url={url}",
    )
    assert out.returncode == 0, out.stderr
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    assert studies == {f"random-iris-tabular_mlp-seed{seed}": 2 for seed in range(4)}
    jobs = sorted(p.name for p in (tmp_path / "submitit").glob("[0-9]*_*"))
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_{i}" for i in range(4)]  # one job array of 4 tasks
    expected = {f"{array}_{i}": "COMPLETED" for i in range(4)}
    assert settled(array, expected) == expected


def test_no_cluster_is_named_as_such(slurm_cluster, tmp_path, monkeypatch):
    """Without a usable slurm.conf the error says there is no cluster, not bad settings.

    ``slurm_cluster`` installs sbatch (or skips with the reason it cannot): whether the tools
    exist is known only once the services script has run, not when tests are collected.
    """
    empty = tmp_path / "slurm.conf"
    empty.write_text("")
    monkeypatch.setenv("SLURM_CONF", str(empty))
    with pytest.raises(ConfigError, match="no SLURM cluster answers"):
        SlurmLauncher(SlurmLauncherConfig(folder=str(tmp_path / "jobs")))


@pytest.mark.slow  # ~45 s; suite time
def test_a_pruned_search_on_slurm_prunes_as_the_local_one(slurm_cluster, tmp_path):
    """Each job creates its trial RUNNING in the shared storage, reports its learning curve
    there and asks the pruner, which reads the other jobs' trials: one job at a time, the
    outcome is that of the same search run in the driver."""
    from cli import nasfw, trials

    pruned = [
        *(a for a in SEARCH if not a.startswith(("tuner.n_trials", "launcher"))),
        "tuner.n_trials=4",
        "train.epochs=3",
        "pruner=median",
        "pruner.n_startup_trials=1",
    ]
    (tmp_path / "local").mkdir()
    assert nasfw(tmp_path / "local", *pruned, "launcher.workers=0").returncode == 0
    folder = tmp_path / "jobs"
    out = nasfw(
        tmp_path,
        *pruned,
        "launcher=slurm",
        "launcher.poll_interval_s=0.5",
        "launcher.array_parallelism=1",
        f"launcher.folder={folder}",
    )
    assert out.returncode == 0, out.stderr

    def outcome(url: str) -> list:
        stored = sorted(trials(url, STUDY), key=lambda t: t.number)
        return [(t.state.name, t.value, t.intermediate_values) for t in stored]

    on_slurm = outcome(f"sqlite:///{tmp_path / 'nasfw.db'}")
    assert on_slurm == outcome(f"sqlite:///{tmp_path / 'local' / 'nasfw.db'}")
    assert [state for state, _, _ in on_slurm].count("PRUNED") >= 2
    logs = "".join(p.read_text() for p in folder.glob("*/*_log.err"))
    assert "cannot" not in logs  # the jobs reached the storage: they wrote the trials


@pytest.mark.slow  # ~35 s; suite time
def test_the_minibench_db_builds_on_slurm_as_it_does_locally(slurm_cluster, tmp_path):
    """mode=minibench composes with launcher=slurm: every suite search runs its generations as
    job arrays, and the DB holds what the same build in the driver gives."""
    from cli import nasfw

    from nasfw.minibench.db import BestModelDB

    build = [
        "mode=minibench",
        "minibench.problems=[iris,wine]",
        "tuner=random",
        "tuner.n_trials=2",
        "tuner.batch_size=2",
        "train.epochs=1",
        "tracking=none",
    ]
    (tmp_path / "local").mkdir()
    local = nasfw(tmp_path / "local", *build, "launcher.workers=0")
    assert local.returncode == 0, local.stderr
    folder = tmp_path / "jobs"
    out = nasfw(
        tmp_path,
        *build,
        "launcher=slurm",
        "launcher.poll_interval_s=0.5",
        f"launcher.folder={folder}",
    )
    assert out.returncode == 0, out.stderr
    submitted = [e["job"] for e in journal(folder) if e["event"] == "submitted"]
    assert len(submitted) == 4 and len({job.split("_")[0] for job in submitted}) == 2

    def content(path) -> list:
        db = BestModelDB(str(path), must_exist=True)
        return [(m.problem_id, m.rank, m.graph.hash, round(m.value, 6)) for m in db.models()]

    on_slurm = content(tmp_path / "minibench.db")
    assert on_slurm == content(tmp_path / "local" / "minibench.db")
    assert {pid for pid, *_ in on_slurm} == {"iris", "wine"}


@pytest.mark.slow  # ~60 s of jobs training 400 epochs: pytest -m slow runs it
def test_a_job_stopped_by_sigterm_closes_its_running_trial_itself(slurm_cluster, tmp_path):
    """``scancel`` sends SIGTERM, then SIGKILL after KillWait (5 s on the test cluster). With a
    pruner each job creates its trial RUNNING; the stopped job closes it as interrupted at once
    (submitit alone ignores SIGTERM: the trial stayed RUNNING until the next driver start). The
    driver retries the job and the search ends with every candidate once."""
    import sys
    import time

    import optuna
    from cli import trials

    url, folder = f"sqlite:///{tmp_path}/s.db", tmp_path / "jobs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nasfw",
            *(a for a in SEARCH if a != "train.epochs=1"),
            "train.epochs=400",
            "pruner=median",
            "pruner.n_startup_trials=1",
            "launcher.array_parallelism=1",
            f"launcher.folder={folder}",
            f"storage.url={url}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running() -> list[optuna.trial.FrozenTrial]:
            if not (tmp_path / "s.db").exists():
                return []
            try:
                found = trials(url, STUDY)
            except KeyError:  # the study is not there yet
                return []
            return [t for t in found if t.state == optuna.trial.TrialState.RUNNING]

        _wait(lambda: running() and len(running()[0].intermediate_values) >= 2, "a job to run")
        victim = running()[0]
        job = journal(folder)[0]["job"]
        subprocess.run(["scancel", job], check=True)
        deadline = time.monotonic() + 4  # before the SIGKILL
        while (now := trials(url, STUDY)[victim.number]).state.name == "RUNNING":
            assert time.monotonic() < deadline, "the stopped job left its trial RUNNING"
            time.sleep(0.1)
        assert now.state == optuna.trial.TrialState.FAIL
        assert now.system_attrs.get("nasfw:interrupted") is True
        assert "SIGTERM" in now.user_attrs["fail_reason"]
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stored = trials(url, STUDY)
    assert not [t for t in stored if t.state == optuna.trial.TrialState.RUNNING]
    evaluations = [t for t in stored if not t.system_attrs.get("nasfw:interrupted")]
    keys = sorted((t.user_attrs["generation"], t.user_attrs["index"]) for t in evaluations)
    assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]
