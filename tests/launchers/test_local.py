from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import pytest

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
