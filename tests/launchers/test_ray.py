"""launcher=ray against a Ray started for the test session on this machine (the embedded
default), and against a real two-node Ray cluster started by scripts/services.py."""

from __future__ import annotations

import sys

import pytest
import ray  # in nasfw's dev extra: a missing Ray fails here, never skips

from nasfw import ConfigError, ProblemConfig, Result
from nasfw.launchers.ray import RayLauncher, RayLauncherConfig
from nasfw.testing import LauncherContract, die_on_three, square

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for the module (starting one costs seconds): 2 slots of 1 CPU."""
    with RayLauncher(RayLauncherConfig(max_retries=1)) as launcher:
        yield launcher


class TestRayLocal(LauncherContract):
    # A killed worker's task is rerun by Ray (max_retries).
    retries_lost = True

    @pytest.fixture
    def launcher(self, local_ray):
        return local_ray


def test_dead_worker_is_retried_then_fails_only_its_item(local_ray):
    results = local_ray.map(die_on_three, [1, 2, 3, 4])
    assert [r.ok for r in results] == [True, True, False, True]
    assert "Ray worker process running it died, 2 time(s)" in (results[2].error or "")
    assert [r.metric for r in local_ray.map(square, [5])] == [25.0]


def test_each_result_says_which_node_ran_it(local_ray):
    nodes = {r.extra["ray_node"] for r in local_ray.map(square, [1, 2, 3])}
    assert nodes == {ray.get_runtime_context().get_node_id()}


class _ProblemSum:
    """The sum of the worker's loaded iris training inputs (sent by value: Ray's workers
    cannot import this test module)."""

    # Its own split seed: a cache entry of its own, which the test may alter.
    problem = ProblemConfig(name="iris", split_seed=29)

    def __call__(self, _: int) -> Result:
        from nasfw import load_problem

        return Result(status="ok", metric=float(load_problem(self.problem).train.x.sum()))


def test_the_problem_comes_from_the_driver_through_the_object_store(local_ray):
    """Workers take the driver's loaded problem (here altered, so that no loader could give
    it) instead of loading their own."""
    from nasfw import load_problem

    problem = load_problem(_ProblemSum.problem)
    problem.train.x[:] = 0.5  # the driver's cached copy: what the object store receives
    launcher = RayLauncher(RayLauncherConfig())
    try:
        results = launcher.map(_ProblemSum(), [0, 1, 2])
    finally:
        launcher.close()
    assert [r.metric for r in results] == [0.5 * problem.train.x.size] * 3, results[0].error


def _env_value(_: int) -> Result:
    import os

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return Result(
        status="ok",
        metric=float(os.environ.get("NASFW_RAY_TEST", "-1")),
        extra={"CUDA_VISIBLE_DEVICES": "unset" if gpus is None else gpus},
    )


def test_launcher_env_reaches_the_evaluations(local_ray):
    launcher = RayLauncher(
        RayLauncherConfig(env={"NASFW_RAY_TEST": "7", "CUDA_VISIBLE_DEVICES": "3"})
    )
    try:
        results = launcher.map(_env_value, [0, 1])
    finally:
        launcher.close()
    assert [r.metric for r in results] == [7.0, 7.0]
    assert results[0].extra["CUDA_VISIBLE_DEVICES"] == "3"  # the user's word wins
    [plain] = local_ray.map(_env_value, [0])
    assert plain.metric == -1.0
    # No GPU asked for: none seen (Ray would leave the node's GPUs visible).
    assert plain.extra["CUDA_VISIBLE_DEVICES"] == ""


def test_workers_follow_the_cluster_and_max_concurrent(local_ray):
    import os

    assert local_ray.workers == os.cpu_count()  # 1 CPU each, all of this machine's
    assert local_ray.threads == 1
    capped = RayLauncher(RayLauncherConfig(max_concurrent=1, num_cpus=2))
    try:
        assert capped.workers == 1 and capped.threads == 2
    finally:
        capped.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_gpus": 1}, r"launcher\.num_gpus=1: no node of the Ray cluster"),
        ({"num_cpus": 4096}, r"launcher\.num_cpus=4096: no node of the Ray cluster"),
        ({"num_gpus": 1.5}, r"launcher\.num_gpus=1\.5: Ray gives a task a fraction"),
        ({"max_retries": -1}, r"launcher\.max_retries"),
        ({"max_concurrent": 0}, r"launcher\.max_concurrent"),
    ],
)
def test_requests_no_node_can_satisfy_are_refused_naming_the_key(local_ray, overrides, message):
    with pytest.raises(ConfigError, match=message):
        RayLauncher(RayLauncherConfig(**overrides))


def test_cuda_without_gpus_per_evaluation_names_the_key(local_ray):
    with pytest.raises(ConfigError, match=r"launcher\.num_gpus > 0"):
        local_ray.check_device("cuda")
    local_ray.check_device("auto")


# -- searches through the command line -----------------------------------------------------

TINY = [
    "problem=iris",
    "search_space=tabular_mlp",
    "train.epochs=1",
    "train.threads=1",
    "tracking=none",
]


def outcome(url: str, study: str) -> list[tuple]:
    """What a search found, by (generation, index): not where, when or in which order it ran."""
    from cli import trials

    return sorted(
        (t.user_attrs["generation"], t.user_attrs["index"], t.user_attrs["graph_hash"], t.value)
        for t in trials(url, study)
    )


def test_a_search_with_the_embedded_ray_finds_what_the_local_launcher_finds(tmp_path):
    """``launcher=ray`` with no address: a Ray started and stopped by the search itself."""
    from cli import nasfw

    search = [*TINY, "tuner=random", "tuner.n_trials=4", "tuner.batch_size=2"]
    (tmp_path / "local").mkdir()
    assert nasfw(tmp_path / "local", *search, "launcher.workers=0").returncode == 0
    out = nasfw(tmp_path, *search, "launcher=ray", "launcher.max_concurrent=2")
    assert out.returncode == 0, out.stderr
    study = "random-iris-tabular_mlp-seed0"
    found = outcome(f"sqlite:///{tmp_path / 'nasfw.db'}", study)
    assert found == outcome(f"sqlite:///{tmp_path / 'local' / 'nasfw.db'}", study)
    assert len(found) == 4
    assert "WARNING" not in out.stderr  # no Ray chatter on the console


def test_an_address_where_no_head_answers_is_refused_before_the_study_exists(tmp_path):
    from cli import nasfw

    out = nasfw(tmp_path, *TINY, "tuner=random", "launcher=ray", "launcher.address=127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("nasfw: error: launcher.address=127.0.0.1:1: no Ray head answers")
    assert not (tmp_path / "nasfw.db").exists()


@pytest.mark.slow  # two searches, ~110 s measured on 2 shared cores
def test_a_pruned_search_on_ray_prunes_as_the_local_one(tmp_path):
    """With a pruner each Ray task writes its own trial and reports its learning curve (the
    driver's SQLite, reachable from this machine's tasks): the outcome is the driver's."""
    from cli import nasfw, trials

    pruned = [
        *TINY,
        "tuner=random",
        "tuner.n_trials=4",
        "tuner.batch_size=2",
        "train.epochs=3",
        "pruner=median",
        "pruner.n_startup_trials=1",
    ]
    (tmp_path / "local").mkdir()
    assert nasfw(tmp_path / "local", *pruned, "launcher.workers=0").returncode == 0
    out = nasfw(tmp_path, *pruned, "launcher=ray", "launcher.max_concurrent=1")
    assert out.returncode == 0, out.stderr
    study = "random-iris-tabular_mlp-seed0"

    def curves(url: str) -> list:
        stored = sorted(trials(url, study), key=lambda t: t.number)
        return [(t.state.name, t.value, t.intermediate_values) for t in stored]

    on_ray = curves(f"sqlite:///{tmp_path / 'nasfw.db'}")
    assert on_ray == curves(f"sqlite:///{tmp_path / 'local' / 'nasfw.db'}")
    assert len(on_ray) == 4
