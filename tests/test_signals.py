"""Signals at chosen moments of a search's life (#25): Ctrl-C and SIGTERM to the process group
give one line and exit 130 / 143, the process tree gone and the study resumable; a driver killed
with SIGKILL as its first worker starts leaves no process behind.

Each case starts ``python -m nasfw`` as its own process group (SQLite storage) and signals it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from cli import TINY, alive, children, nasfw, start, trials

# Issue 25's search: 4 generations of 2 iris networks on two workers.
SEARCH = [a for a in TINY if not a.startswith(("tuner.n_trials", "launcher.workers"))]
SEARCH += ["tuner.n_trials=8", "launcher.workers=2"]
STUDY = "random-iris-tabular_mlp-seed0"


def _tree(pid: int) -> set[int]:
    """``pid``'s live descendants."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _first_worker(proc) -> set[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if kids := _tree(proc.pid):
            return kids
        time.sleep(0.02)
    pytest.fail("no worker process appeared")


def _stop(tmp_path: Path, signum: int, moment: str, *extra: str):
    """Start the search, send ``signum`` to its group at ``moment``; return (stderr, rc, the
    processes seen)."""
    url = f"sqlite:///{tmp_path}/s.db"
    proc = start(tmp_path, *SEARCH, f"storage.url={url}", *extra)
    seen: set[int] = set()
    if moment == "start":
        time.sleep(0.3)
    elif moment == "first worker":
        seen = _first_worker(proc)
        time.sleep(1)
    else:  # mid-generation: the first trial stored
        seen = _first_worker(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if trials(url, STUDY):
                    break
            except KeyError:
                pass
            time.sleep(0.1)
    seen |= _tree(proc.pid)
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=60)
    return stderr, proc.returncode, seen


def _assert_stopped(stderr: str, rc: int, seen: set[int], code: int) -> None:
    assert rc == code, stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("nasfw:")]
    assert len(lines) == 1 and "interrupted" in lines[0], stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in seen):
        time.sleep(0.1)
    assert not [p for p in seen if alive(p)], "processes outlived the driver"


def _assert_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    done = nasfw(tmp_path, *SEARCH, f"storage.url={url}")
    assert done.returncode == 0, done.stderr
    stored = trials(url, STUDY)
    keys = [(t.user_attrs["generation"], t.user_attrs["index"]) for t in stored]
    assert len(keys) == len(set(keys)) == 8  # none lost, none evaluated twice


def test_ctrl_c_when_the_first_worker_starts(tmp_path):
    """Issue 25's input: it was lost (a worker's or a weakref callback's KeyboardInterrupt) or
    hung on the pool's shutdown."""
    stderr, rc, seen = _stop(tmp_path, signal.SIGINT, "first worker")
    _assert_stopped(stderr, rc, seen, 130)
    assert STUDY in stderr and "Rerun the same command to resume" in stderr
    _assert_resumes(tmp_path)


def test_ctrl_c_right_after_start(tmp_path):
    stderr, rc, seen = _stop(tmp_path, signal.SIGINT, "start")
    _assert_stopped(stderr, rc, seen, 130)


def test_sigterm_when_the_first_worker_starts(tmp_path):
    stderr, rc, seen = _stop(tmp_path, signal.SIGTERM, "first worker")
    _assert_stopped(stderr, rc, seen, 143)
    assert "SIGTERM" in stderr


def test_driver_killed_when_its_first_worker_appears(tmp_path):
    """Its workers and multiprocessing's resource tracker do not outlive it."""
    proc = start(tmp_path, *SEARCH, f"storage.url=sqlite:///{tmp_path}/s.db")
    seen = _first_worker(proc)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen |= {p for p in list(seen) for p in children(p)}
        if not any(alive(p) for p in seen):
            break
        time.sleep(0.2)
    assert not [p for p in seen if alive(p)], "orphaned processes still running"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopped_mid_generation_resumes(tmp_path, signum):
    stderr, rc, seen = _stop(tmp_path, signum, "mid-generation")
    _assert_stopped(stderr, rc, seen, 128 + signum)
    _assert_resumes(tmp_path)


@pytest.mark.slow
def test_sigterm_ends_the_mlflow_run_as_killed(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracked = ("tracking=mlflow", f"tracking.tracking_uri={uri}")
    stderr, rc, seen = _stop(tmp_path, signal.SIGTERM, "mid-generation", *tracked)
    _assert_stopped(stderr, rc, seen, 143)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nasfw").experiment_id])
    assert runs and {r.info.status for r in runs} <= {"KILLED", "FINISHED"}, runs
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
