"""The command line under signals and concurrency: Ctrl-C, kill -9, searches started together.

Real processes throughout: ``python -m nasfw`` in its own process group, real SQLite storage.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from cli import TINY, alive, children, nasfw, start, trials, wait_for_trials

# Long enough to be caught mid-way: 5 generations of 4 digits networks, two workers.
LONG = [
    "tuner=random",
    "tuner.n_trials=20",
    "tuner.batch_size=4",
    "train.epochs=2",
    "launcher.workers=2",
    "tracking=none",
]
STUDY = "random-digits-image_small-seed0"


def test_ctrl_c_stops_workers_says_how_to_resume_and_exits_130(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start(tmp_path, *LONG, f"storage.url={url}")
    assert wait_for_trials(url, STUDY, 2, proc) >= 2
    workers = children(proc.pid)
    assert workers, "the local launcher started no worker process"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("nasfw:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and STUDY in lines[0], stderr
    assert "Rerun the same command to resume" in lines[0]
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)]
    saved = len(trials(url, STUDY))
    assert f"{saved} evaluations saved" in lines[0]

    # Evaluations in the driver this time (the launcher is not part of the search's identity).
    resumed = nasfw(tmp_path, *LONG, "launcher.workers=0", f"storage.url={url}")
    assert resumed.returncode == 0, resumed.stderr
    keys = {(t.user_attrs["generation"], t.user_attrs["index"]) for t in trials(url, STUDY)}
    assert len(keys) == 20


def test_workers_exit_when_the_driver_is_killed(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start(tmp_path, *LONG, f"storage.url={url}")
    assert wait_for_trials(url, STUDY, 1, proc) >= 1
    workers = children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if alive(pid)], "orphaned workers still running"


# Long (four searches starting at once on 2 cores, ~2 min): pytest -m slow runs it.
@pytest.mark.slow
def test_searches_started_together_in_an_empty_directory(tmp_path):
    """Four first starts at once: the same search twice, and two others tracked by MLflow.

    They share outputs/ and the storage; the twins share the study, the others the default
    mlflow.db. One twin must refuse (one live driver per study); the searches that run keep
    their own output directories, and the MLflow store is whole for every later run.
    """
    from mlflow import MlflowClient

    url = f"sqlite:///{tmp_path}/s.db"
    # The twin that runs evaluates 20 networks, seconds longer than start-ups drift apart.
    twin = [*LONG, "launcher.workers=0"]
    tiny = [a for a in TINY if a != "tracking=none"]  # these two create mlflow.db together
    args = {
        "twin-1": twin,
        "twin-2": twin,
        "a": [*tiny, "study_name=a"],
        "b": [*tiny, "study_name=b"],
    }
    procs = {name: start(tmp_path, *a, f"storage.url={url}") for name, a in args.items()}
    outcomes = {name: (p.communicate(timeout=300)[1], p.returncode) for name, p in procs.items()}
    for name in "ab":
        assert outcomes[name][1] == 0, outcomes[name][0]
    assert sorted(outcomes[t][1] for t in ("twin-1", "twin-2")) == [0, 2], outcomes
    winner = next(t for t in ("twin-1", "twin-2") if outcomes[t][1] == 0)
    refusal = next(outcomes[t][0] for t in ("twin-1", "twin-2") if outcomes[t][1] == 2)
    assert f"study '{STUDY}' is being run by another driver" in refusal, refusal
    assert f"pid {procs[winner].pid}" in refusal and "Traceback" not in refusal
    keys = [(t.user_attrs["generation"], t.user_attrs["index"]) for t in trials(url, STUDY)]
    assert len(keys) == len(set(keys)) == 20  # every candidate evaluated once

    summaries = [
        json.loads(p.read_text()) for p in tmp_path.glob("outputs/*/*/best_model/summary.json")
    ]
    assert sorted(s["study"] for s in summaries) == ["a", "b", STUDY]
    # A later client opens the store: a whole, current schema (test_mlflow_tracking races it).
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents = client.search_runs([client.get_experiment_by_name("nasfw").experiment_id])
    names = sorted(r.info.run_name for r in parents if "mlflow.parentRunId" not in r.data.tags)
    assert names == ["a", "b"]
    runs = [p.name for p in tmp_path.glob("outputs/*/*")]
    assert len(runs) == 4 and len({r.split("_")[1] for r in runs}) == 3  # the refused one too


# Long (repeated kills and resumes, ~2 min): pytest -m slow runs it.
@pytest.mark.slow
def test_mlflow_catches_up_with_the_study_after_kills(tmp_path):
    """The study is written before MLflow: whatever a kill leaves unlogged is logged on resume."""
    from collections import Counter

    from mlflow import MlflowClient

    url = f"sqlite:///{tmp_path}/s.db"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    short = [a for a in LONG if not a.startswith("tuner.n_trials")] + ["tuner.n_trials=16"]
    tracked = [a for a in short if a != "tracking=none"] + [f"tracking.tracking_uri={uri}"]
    # Killed untracked after 5 trials (generation 0 saved, never logged), then killed tracked
    # after 9, then finished tracked.
    for args, kill_after in ((short, 5), (tracked, 9)):
        proc = start(tmp_path, *args, "launcher.workers=0", f"storage.url={url}")
        seen = wait_for_trials(url, STUDY, kill_after, proc)
        proc.kill()
        proc.communicate()
        assert kill_after <= seen < 16
    done = nasfw(tmp_path, *tracked, "launcher.workers=0", f"storage.url={url}")
    assert done.returncode == 0, done.stderr

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nasfw").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    history = client.get_metric_history
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    steps = Counter(m.step for r in nested for m in history(r.info.run_id, "trial/failed"))
    assert steps == Counter(range(16))  # every trial once, in its generation's run
    assert Counter(m.step for m in history(parent.info.run_id, "n_trials")) == Counter(range(16))
    best = Counter(m.step for m in history(parent.info.run_id, "best_val_accuracy"))
    assert best == Counter(range(16))
    counts = Counter(m.step for m in history(parent.info.run_id, "n_trials_ok"))
    assert sorted(counts.values()) == [1, 1, 1, 1]  # one per generation
    generations = Counter(r.data.tags["nasfw.generation"] for r in nested)
    assert generations == Counter(str(g) for g in range(4))
    for run in nested:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "n_ok")) == 1
    caught_up = [
        r.data.tags["nasfw.generation"] for r in nested if "nasfw.logged_on_resume" in r.data.tags
    ]
    assert "0" in caught_up
