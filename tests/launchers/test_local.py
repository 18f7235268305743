from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import fake_gpus

from nasfw import ConfigError
from nasfw.launchers.local import LocalLauncher, LocalLauncherConfig
from nasfw.testing import LauncherContract, die_on_three, square


class TestLocalInProcess(LauncherContract):
    @pytest.fixture
    def launcher(self):
        with LocalLauncher(LocalLauncherConfig(workers=0)) as launcher:
            yield launcher


@pytest.fixture(scope="module")
def shared():
    # One pool for the module: spawning workers costs about a second each.
    with LocalLauncher(LocalLauncherConfig(workers=2)) as launcher:
        yield launcher


class TestLocalWorkers(LauncherContract):
    # A killed worker's items are rerun one at a time (only a second death fails one).
    retries_lost = True

    @pytest.fixture
    def launcher(self, shared):
        return shared

    def test_runs_in_other_processes(self, launcher):
        from nasfw.testing import square as f

        assert f(2).metric == 4.0
        pids = {r.metric for r in launcher.map(_pid, list(range(4)))}
        assert os.getpid() not in pids

    def test_dead_worker_fails_only_its_item(self, launcher):
        results = launcher.map(die_on_three, [1, 2, 3, 4, 5])
        assert [r.ok for r in results] == [True, True, False, True, True]
        assert "worker process died" in (results[2].error or "")
        # The pool was rebuilt and still works.
        assert [r.metric for r in launcher.map(square, [3])] == [9.0]

    def test_items_still_unsent_when_a_worker_dies_are_run(self, launcher):
        launcher.map(square, [1, 2])  # warm workers: the first item dies at once
        items = _SlowAfterFirst([3, 4, 5, 6])
        results = launcher.map(die_on_three, items)
        assert [r.ok for r in results] == [False, True, True, True]
        assert "worker process died" in (results[0].error or "")
        assert [r.metric for r in results[1:]] == [4.0, 5.0, 6.0]

    def test_worker_killed_between_calls_costs_nothing(self, launcher):
        pids = {int(r.metric) for r in launcher.map(_pid, list(range(4)))}
        os.kill(pids.pop(), signal.SIGKILL)
        time.sleep(0.2)  # the pool notices whenever it does; both outcomes must be handled
        assert [r.metric for r in launcher.map(square, [1, 2, 3])] == [1.0, 4.0, 9.0]


class _SlowAfterFirst(Sequence[int]):
    """Items whose second one takes a second to read: the pool breaks while being filled."""

    def __init__(self, items: list[int]) -> None:
        self._items = items
        self._waited = False

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        if index == 1 and not self._waited:
            self._waited = True
            time.sleep(1.0)
        return self._items[index]


def _pid(_: int):
    import os

    from nasfw import Result

    return Result(status="ok", metric=float(os.getpid()))


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match=r"launcher\.workers"):
        LocalLauncher(LocalLauncherConfig(workers=-1))
    with pytest.raises(ConfigError, match=r"launcher\.start_method"):
        LocalLauncher(LocalLauncherConfig(start_method="teleport"))


def test_auto_forks_cpu_evaluations_once_the_drivers_openmp_threads_are_released():
    """launcher.start_method=auto on a driver that ran torch on two threads: the workers are
    forked (torch comes imported from the driver) and train, on one thread or on two (the
    driver's OpenMP pool ended first: without that, a forked child's first two-thread
    operation waits forever); with a second Python thread in the driver they are spawned."""
    probe = Path(__file__).with_name("start_method_probe.py")
    proc = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = json.loads(proc.stdout)
    for name in ("one thread", "two threads"):
        forked = cases[name]
        assert forked["method"] == "fork" and all(forked["inherited"]), name
        assert forked["status"] == ["ok"] * 4, name
    spawned = cases["a driver thread"]
    assert spawned["method"] == "spawn" and not all(spawned["inherited"])
    assert spawned["status"] == ["ok"] * 4


def test_auto_spawns_workers_that_train_on_cuda(monkeypatch):
    fake_gpus(monkeypatch, 2)
    launcher = LocalLauncher(LocalLauncherConfig(workers=2))
    launcher.check_device("cuda")
    assert launcher.start_method(1) == "spawn"  # CUDA cannot start again in a forked child
    assert LocalLauncher(LocalLauncherConfig(start_method="fork")).start_method(2) == "fork"


# -- workers and GPUs (the device count is faked: CI has no GPU) ------------------------------
def _visible_gpu(_: int) -> tuple[int, str | None]:
    import os
    import time

    time.sleep(0.3)  # long enough that every worker gets items
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def _gpus_of_workers(launcher: LocalLauncher, items: int) -> list[str | None]:
    from concurrent.futures import wait

    pool = launcher._executor()
    futures = [pool.submit(_visible_gpu, i) for i in range(items)]
    wait(futures)
    by_worker = dict(f.result() for f in futures)
    return sorted(by_worker.values(), key=str)


def test_each_worker_gets_its_own_gpu(monkeypatch):
    fake_gpus(monkeypatch, 4)
    launcher = LocalLauncher(LocalLauncherConfig())
    launcher.check_device("auto")
    try:
        assert launcher.workers == 4  # one per GPU when workers is not set
        assert _gpus_of_workers(launcher, 16) == ["0", "1", "2", "3"]
    finally:
        launcher.close()


def test_more_workers_than_gpus_share_them_round_robin(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    launcher = LocalLauncher(LocalLauncherConfig(workers=3, gpus=[1, 3]))
    launcher.check_device("cuda")
    try:
        assert launcher.gpu_ids == ["5", "7"]  # indices among the visible GPUs
        assert _gpus_of_workers(launcher, 12) == ["5", "5", "7"]
    finally:
        launcher.close()


def test_gpu_settings_that_cannot_work_name_the_key(monkeypatch):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(ConfigError, match=r"launcher\.gpus=\[2\]: 2 GPU\(s\) are visible"):
        LocalLauncher(LocalLauncherConfig(gpus=[2])).check_device("auto")
    pinned = LocalLauncher(LocalLauncherConfig())
    pinned.check_device("cuda:1")  # every worker on GPU 1: no per-worker GPU
    assert pinned.gpu_ids == [] and pinned.workers == 2
    fake_gpus(monkeypatch, 0)
    cpu = LocalLauncher(LocalLauncherConfig())
    cpu.check_device("auto")
    assert cpu.gpu_ids == [] and cpu.workers == 2
    with pytest.raises(ConfigError, match=r"train\.device='cuda'"):
        cpu.check_device("cuda")


def test_streaming_asks_as_soon_as_a_worker_frees_up(shared):
    """One slow item (1 s) holds a worker; the other worker takes every quick one meanwhile,
    instead of waiting for a batch's slowest item."""
    from nasfw.testing import napping_square

    todo, arrived = [2, 0, 3, 6, 9], []
    shared.map_streaming(
        napping_square,
        lambda pending: todo.pop(0) if todo else None,
        lambda x, r: arrived.append(x),
    )
    assert arrived[-1] == 2 and sorted(arrived) == [0, 2, 3, 6, 9]


def test_streaming_reruns_what_a_dying_worker_broke():
    """A worker that dies breaks every evaluation in flight: the others are rerun and
    succeed, the culprit fails, and the stream goes on with a fresh pool."""
    todo, got = [3, 0, 4, 5], {}
    with LocalLauncher(LocalLauncherConfig(workers=2)) as launcher:
        launcher.map_streaming(
            die_on_three, lambda pending: todo.pop(0) if todo else None, got.setdefault
        )
    assert sorted(got) == [0, 3, 4, 5]
    assert [got[x].ok for x in (0, 4, 5)] == [True, True, True]
    assert not got[3].ok and "died" in (got[3].error or "")


def test_warm_up_loads_the_problem_in_the_workers_ahead(evaluator):
    """warm_up starts the pool and has each worker load the data before the first evaluation
    (the driver meanwhile opens the study and the trackers)."""
    from nasfw.testing import problems_loaded

    with LocalLauncher(LocalLauncherConfig(workers=1)) as cold:
        assert cold.map(problems_loaded, [0])[0].metric == 0.0
    with LocalLauncher(LocalLauncherConfig(workers=1)) as warm:
        warm.warm_up(evaluator)
        assert warm.map(problems_loaded, [0])[0].metric == 1.0


def test_default_threads_are_the_cpus_this_process_may_use(tmp_path):
    """Each evaluation's torch threads default to the CPUs the search may run on (its affinity:
    taskset, a cpuset), shared among the workers: not the machine's count, which
    oversubscribes a restricted process. The trial records them (extra.torch_threads)."""
    from cli import trials

    from nasfw import usable_cpus

    def threads_of(study: str, *prefix: str) -> set[int]:
        url = f"sqlite:///{tmp_path / 'nasfw.db'}"
        args = ["problem=iris", "search_space=tabular_mlp", "train.epochs=1", "tuner=random",
                "tuner.n_trials=2", "launcher.workers=1", "tracking=none", f"study_name={study}",
                f"storage.url={url}"]  # fmt: skip
        proc = subprocess.run([*prefix, sys.executable, "-m", "nasfw", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        from nasfw.ledger import Ledger

        assert len(trials(url, study)) == 2
        return {r.result.extra["torch_threads"] for r in Ledger(url, study).records()}

    assert threads_of("one_cpu", "taskset", "-c", "0") == {1}
    assert threads_of("all") == {usable_cpus()}
