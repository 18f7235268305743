from __future__ import annotations

import pytest

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
        import os

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


def _pid(_: int):
    import os

    from nasfw import Result

    return Result(status="ok", metric=float(os.getpid()))


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match=r"launcher\.workers"):
        LocalLauncher(LocalLauncherConfig(workers=-1))
    with pytest.raises(ValueError, match=r"launcher\.start_method"):
        LocalLauncher(LocalLauncherConfig(start_method="teleport"))
