"""launcher=ray against a real Ray cluster of two nodes on this machine (scripts/services.py
start ray: a head and a second node joining it, one CPU each). A cluster that cannot start
fails these tests; it never skips them."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from cli import nasfw, start, trials
from test_ray import TINY, outcome

from nasfw import Result
from nasfw.launchers.ray import RayLauncher, RayLauncherConfig
from nasfw.testing import LauncherContract, hold

STUDY = "random-iris-tabular_mlp-seed0"
# Networks that train for seconds (iris, hundreds of epochs): long enough to catch mid-run.
SLOW = ["problem=iris", "search_space=tabular_mlp", "train.threads=1", "tracking=none"]


@pytest.fixture(scope="module")
def on_cluster(ray_cluster):
    """A launcher driving the session's cluster from this process."""
    import ray

    if ray.is_initialized():  # another module's embedded Ray: this one drives the cluster
        ray.shutdown()
    with RayLauncher(RayLauncherConfig(address=ray_cluster["address"], max_retries=1)) as launcher:
        yield launcher


class TestRayClusterContract(LauncherContract):
    retries_lost = True

    @pytest.fixture
    def launcher(self, on_cluster):
        return on_cluster


def node_ids() -> tuple[str, str]:
    """(head, second node) ids of the cluster this process is connected to."""
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    head = [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]]
    other = [n["NodeID"] for n in alive if n["NodeID"] not in head]
    assert len(head) == 1 and len(other) == 1, alive
    return head[0], other[0]


def test_two_slots_and_tasks_on_both_nodes(on_cluster, tmp_path):
    """Two evaluations held running at once need both nodes (one CPU each). Short naps did not
    show it: on a loaded machine the head could finish each nap before Ray's view of the
    second node's CPU was current, and ran all four."""
    assert on_cluster.workers == 2  # one CPU on each node
    tmp_path.chmod(0o777)
    items = [(str(tmp_path), i) for i in range(3)]
    returned: list[list[Result]] = []
    mapping = threading.Thread(target=lambda: returned.append(on_cluster.map(hold, items)))
    mapping.start()
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(tmp_path.glob("started-*"))) == 2, "two evaluations never ran at once"
    finally:
        (tmp_path / "release").touch()
        mapping.join(300)
    assert returned, "map did not return"
    assert [r.metric for r in returned[0]] == [0.0, 1.0, 2.0]
    assert {r.extra["ray_node"] for r in returned[0]} == set(node_ids())


def test_an_asynchronous_search_spreads_over_both_nodes(ray_cluster, on_cluster, tmp_path):
    """The issue's command with ``launcher.address`` of the cluster: every trial says which
    node ran it, and both nodes did."""
    out = nasfw(
        tmp_path,
        *TINY,
        "tuner=evolution",
        "tuner.asynchronous=true",
        "tuner.n_trials=8",
        "tuner.population_size=4",
        "launcher=ray",
        f"launcher.address={ray_cluster['address']}",
    )
    assert out.returncode == 0, out.stderr
    stored = trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "evolution-iris-tabular_mlp-seed0")
    assert len(stored) == 8
    assert {t.user_attrs["extra.ray_node"] for t in stored} == set(node_ids())


def test_a_gpu_no_node_has_is_refused_before_the_study_exists(ray_cluster, tmp_path):
    out = nasfw(
        tmp_path,
        *TINY,
        "tuner=random",
        "launcher=ray",
        f"launcher.address={ray_cluster['address']}",
        "launcher.num_gpus=1",
    )
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nasfw: error: launcher.num_gpus=1: no node")
    assert "0 GPU" in lines[0] and "pending forever" in lines[0]
    assert not (tmp_path / "nasfw.db").exists()


# -- faults -----------------------------------------------------------------------------------


def evaluating(raylet: int) -> list[int]:
    """Worker processes of the node whose raylet is ``raylet`` running an evaluation now (a Ray
    worker names itself ``ray::<task>`` while it runs one)."""
    from cli import children

    running = []
    for pid in children(raylet):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if command.startswith(b"ray::_evaluate"):
            running.append(pid)
    return running


def wait(condition, what: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stored(url: str) -> int:
    """How many trials the study holds (0 before it exists)."""
    try:
        return len(trials(url, STUDY))
    except KeyError:
        return 0


def saved(url: str) -> bool:
    """Whether the search saved its state after a generation (a rerun then says "Resuming")."""
    from nasfw.ledger import CHECKPOINT_ATTR, open_storage

    storage = open_storage(url)
    try:
        study = storage.get_study_id_from_name(STUDY)
    except KeyError:
        return False
    return CHECKPOINT_ATTR in storage.get_study_system_attrs(study)


def reference(tmp_path: Path, search: list[str]) -> list[tuple]:
    """The same search, uninterrupted, in the driver (launcher=local, no workers)."""
    folder = tmp_path / "reference"
    folder.mkdir()
    out = nasfw(folder, *search, "launcher.workers=0", timeout=900)
    assert out.returncode == 0, out.stderr
    return outcome(f"sqlite:///{folder / 'nasfw.db'}", STUDY)


# Each fault test takes minutes on 2 shared cores (3-6 min measured under load): its own
# searches of networks that train for seconds, a reference run, and clusters of its own.
@pytest.mark.slow
def test_a_lost_node_s_evaluations_rerun_on_the_head(tmp_path):
    """The second node's raylet is killed mid-generation: its evaluation is rerun on the head
    (launcher.max_retries) and the study equals an uninterrupted run's."""
    from conftest import ray_cluster_running

    search = [*SLOW, "train.epochs=600", "tuner=random", "tuner.n_trials=4", "tuner.batch_size=4"]
    expected = reference(tmp_path, search)
    with ray_cluster_running() as cluster:
        node = int(cluster["node_raylet_pid"])
        proc = start(tmp_path, *search, "launcher=ray", f"launcher.address={cluster['address']}")
        try:
            wait(lambda: evaluating(node), "an evaluation on the second node")
            os.kill(node, signal.SIGKILL)
            _, err = proc.communicate(timeout=900)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        url = f"sqlite:///{tmp_path / 'nasfw.db'}"
        assert outcome(url, STUDY) == expected
        ran_on = [t.user_attrs["extra.ray_node"] for t in trials(url, STUDY)]
        assert len(set(ran_on)) == 1  # the head's: the second node finished nothing


@pytest.mark.slow
def test_a_killed_driver_leaves_no_task_running_and_the_rerun_resumes(ray_cluster, tmp_path):
    search = [*SLOW, "train.epochs=1500", "tuner=random", "tuner.n_trials=4", "tuner.batch_size=2"]
    expected = reference(tmp_path, search)
    done = trials(f"sqlite:///{tmp_path / 'reference' / 'nasfw.db'}", STUDY)
    shortest = min(t.user_attrs["train_seconds"] for t in done)
    on_cluster = [*search, "launcher=ray", f"launcher.address={ray_cluster['address']}"]
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    raylets = [int(ray_cluster["head_raylet_pid"]), int(ray_cluster["node_raylet_pid"])]
    proc = start(tmp_path, *on_cluster)
    try:
        # Generation 0 saved and generation 1's evaluations just started: killed mid-way.
        wait(lambda: saved(url) and any(evaluating(r) for r in raylets), "generation 1")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    killed = time.monotonic()
    # Ray ends the dead driver's tasks at once, long before they could have finished.
    wait(lambda: not any(evaluating(r) for r in raylets), "the job's tasks to end", 60)
    assert time.monotonic() - killed < shortest / 2, (time.monotonic() - killed, shortest)
    again = nasfw(tmp_path, *on_cluster, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert outcome(url, STUDY) == expected


def kill_head(root: Path, raylet: int) -> None:
    """SIGKILL the head node's GCS and raylet, as a lost machine would be."""
    import importlib.util

    from services import SCRIPT

    spec = importlib.util.spec_from_file_location("services_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    of_cluster = script.ray_processes

    gcs = [p for p, command in of_cluster(root).items() if "/gcs_server " in command]
    assert len(gcs) == 1, gcs
    for pid in (*gcs, raylet):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_lost_head_stops_the_search_in_one_line_and_a_rerun_resumes(tmp_path):
    from conftest import ray_cluster_running

    search = [*SLOW, "train.epochs=600", "tuner=random", "tuner.n_trials=4", "tuner.batch_size=2"]
    expected = reference(tmp_path, search)
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    with ray_cluster_running() as cluster:
        proc = start(
            tmp_path,
            *search,
            "launcher=ray",
            f"launcher.address={cluster['address']}",
            "launcher.head_timeout_s=3",
        )
        try:
            # Generation 0 stored and generation 1 evaluating: the head is lost mid-search.
            raylets = [int(cluster["head_raylet_pid"]), int(cluster["node_raylet_pid"])]
            wait(lambda: stored(url) >= 2 and any(evaluating(r) for r in raylets), "generation 1")
            kill_head(Path(cluster["dir"]), int(cluster["head_raylet_pid"]))
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("nasfw:")]
    assert len(lines) == 1 and "stopped answering" in lines[0] and "rerun" in lines[0], err
    assert stored(url) >= 2  # intact
    with ray_cluster_running() as cluster:
        again = nasfw(
            tmp_path, *search, "launcher=ray", f"launcher.address={cluster['address']}", timeout=900
        )
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert outcome(url, STUDY) == expected
