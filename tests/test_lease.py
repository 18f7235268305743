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
