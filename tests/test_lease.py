"""One live driver per study (nasfw/lease.py), against real storages and real processes."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import optuna
import pytest
from conftest import run_together

from nasfw.lease import SEPARATOR, DriverLease, LeaseError
from nasfw.ledger import open_storage


def _urls(tmp_path):
    return {"sqlite": f"sqlite:///{tmp_path}/s.db", "journal": f"journal://{tmp_path}/j.log"}


def _contend(url: str) -> tuple[str, object]:
    lease = DriverLease(open_storage(url), "study", interval=0.2)
    try:
        lease.acquire()
    except LeaseError as err:
        return ("refused", str(err))
    time.sleep(4)  # hold it while the others look
    lease.release()
    return ("won", os.getpid())


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_drivers_starting_together_get_one_lease(tmp_path, kind):
    url = _urls(tmp_path)[kind]
    open_storage(url)  # the schema exists: this test is about the lease, not the schema race
    outcomes = run_together(_contend, (url,), 4)
    won = [o for o in outcomes if o[0] == "won"]
    assert len(won) == 1, outcomes
    for _, message in (o for o in outcomes if o[0] == "refused"):
        assert f"host {socket.gethostname()}, pid {won[0][1]}" in message
        assert "'study'" in message and "another driver" in message
    names = optuna.get_all_study_names(open_storage(url))
    assert not [n for n in names if SEPARATOR in n]  # released


def _fake_holder(storage, number: int, host: str, pid: int, heartbeat: float) -> None:
    study_id = storage.create_new_study(
        [optuna.study.StudyDirection.MINIMIZE], f"study{SEPARATOR}{number}"
    )
    for key, value in {"host": host, "pid": pid, "started": "x", "heartbeat": heartbeat}.items():
        storage.set_study_user_attr(study_id, key, value)


def test_a_live_holder_on_another_host_is_respected_until_its_heartbeat_stops(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    _fake_holder(storage, 1, "node-17", 4242, time.time() - 5)
    with pytest.raises(LeaseError, match=r"host node-17, pid 4242.*taken over 60 s after"):
        DriverLease(storage, "study").acquire()
    stale = DriverLease(storage, "study", ttl=3.0)
    stale.acquire()  # 5 s without a heartbeat > ttl: the other driver is presumed dead
    names = optuna.get_all_study_names(storage)
    assert names == [f"study{SEPARATOR}2"]  # the stale lease was removed
    stale.release()
    assert optuna.get_all_study_names(storage) == []


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    ctx = multiprocessing.get_context("spawn")
    gone = ctx.Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join()
    _fake_holder(storage, 3, socket.gethostname(), gone.pid, time.time())  # a fresh heartbeat
    with DriverLease(storage, "study"):
        assert optuna.get_all_study_names(storage) == [f"study{SEPARATOR}4"]
    # A live process on this host (this one) is a live holder.
    _fake_holder(storage, 5, socket.gethostname(), os.getpid(), time.time())
    with pytest.raises(LeaseError):
        DriverLease(storage, "study").acquire()


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path):
    storage = open_storage(f"journal://{tmp_path}/j.log")
    lease = DriverLease(storage, "study", ttl=1.0, interval=0.1)
    lease.acquire()
    try:
        time.sleep(1.5)  # longer than ttl: only the heartbeat keeps it live
        with pytest.raises(LeaseError):
            DriverLease(storage, "study", ttl=1.0).acquire()
    finally:
        lease.release()
    DriverLease(storage, "study").acquire()  # released: free again


def test_a_driver_taken_over_never_writes_again(tmp_path):
    """Fencing (#25 fault 1): a driver on another host whose heartbeat went stale is taken
    over; every write it tries after that (trial, state, attr) is refused with LeaseLost."""
    from nasfw.lease import LeaseLost
    from nasfw.ledger import Ledger

    url = f"sqlite:///{tmp_path}/s.db"
    ledger = Ledger(url, "study")
    first = DriverLease(ledger.storage, "study", ttl=1.0, interval=60)
    first.acquire()
    ledger.fence = first.check
    ledger.set_attr("nasfw:x", 1)  # holds the lease: writes
    lease_id = ledger.storage.get_study_id_from_name(f"study{SEPARATOR}1")
    ledger.storage.set_study_user_attr(lease_id, "host", "node-elsewhere")  # paused elsewhere
    ledger.storage.set_study_user_attr(lease_id, "heartbeat", time.time() - 5)
    second = DriverLease(open_storage(url), "study", ttl=1.0)
    second.acquire()
    for write in (
        lambda: ledger.set_attr("nasfw:x", 2),
        lambda: ledger.save_state(0, {"asked": 1}),
        ledger.fail_interrupted,
    ):
        with pytest.raises(LeaseLost, match=r"another driver took over"):
            write()
    assert Ledger(url, "study").attr("nasfw:x") == 1
    first.release()  # leaves the new holder's lease alone
    assert optuna.get_all_study_names(open_storage(url)) == ["study", f"study{SEPARATOR}2"]
    second.release()


def test_a_paused_driver_on_this_host_is_never_taken_over(tmp_path):
    """The issue's input: the driver paused (kill -STOP) past the lease ttl; the same command
    is refused (exit 2, naming the holder), and the first, continued, ends the search: 12
    trials for 12 evaluations."""
    import signal

    from cli import nasfw, start, trials, wait_for_trials

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    args = [
        "problem=iris",
        "search_space=tabular_mlp",
        "train.epochs=1",
        "tracking=none",
        "tuner=random",
        "tuner.n_trials=12",
        "tuner.batch_size=2",
        "launcher.workers=0",
        "study_name=hb",
        f"storage.url={url}",
    ]
    env = {**os.environ, "NASFW_LEASE_TTL": "1"}
    first = start(tmp_path, *args, env=env)
    try:
        assert wait_for_trials(url, "hb", 2, first) >= 2
        os.killpg(first.pid, signal.SIGSTOP)
        time.sleep(3)  # past the ttl: its heartbeat is stale
        second = nasfw(tmp_path, *args, env={"NASFW_LEASE_TTL": "1"})
        assert second.returncode == 2, second.stderr
        # Refused naming the holder; or, when the pause caught the first in a SQLite write,
        # by SQLite's lock it still holds (also one line, also before anything is written).
        assert (
            f"pid {first.pid}" in second.stderr and "another driver" in second.stderr
        ) or "database is locked" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert len(trials(url, "hb")) == 12
