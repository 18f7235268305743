"""One live driver per study: a lease with a heartbeat, kept in the Optuna storage itself.

Two drivers on one study would both evaluate every candidate and write every trial twice. The
driver of a search therefore holds a lease: a small study named
``<study>::nasfw-driver-lease::<n>`` whose user attrs say who holds it (host, pid, start) and
when it last beat. Taking lease ``n + 1`` is creating that study, which any Optuna storage
allows once only (a unique name in an RDB, the first log record in a journal), so two drivers
starting together cannot both win. A lease is stale when its heartbeat is older than
``ttl`` seconds and its holder ran on another host, or at once when its holder ran on this
host and its process is gone (a ``kill -9``). A holder whose process is alive on this host is
never taken over, however old its heartbeat (a paused process, ``kill -STOP``, is alive). A
stale lease is taken over, a live one makes the newcomer refuse, naming the holder. The lease
study is deleted when the search ends.

Fencing: the lease number is the driver's token. Before each of its writes the driver checks
(:meth:`DriverLease.check`) that its lease study still exists and that no lease numbered after
it does; a driver that was taken over (its host paused past ``ttl``) stops with
:class:`LeaseLost` instead of writing.

``ttl`` defaults to the environment's ``NASFW_LEASE_TTL`` (seconds), else 60.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna

_log = logging.getLogger(__name__)

SEPARATOR = "::nasfw-driver-lease::"
TTL_ENV = "NASFW_LEASE_TTL"
# A holder that has not written its attrs this long after creating its lease died doing so.
_UNWRITTEN_GRACE_S = 2.0


class LeaseError(RuntimeError):
    """Another live driver runs the study (the message names it: host, pid, heartbeat)."""


class LeaseLost(LeaseError):
    """Another driver took the study over from this one: this one must not write again."""


def default_ttl() -> float:
    """``NASFW_LEASE_TTL`` seconds, else 60."""
    raw = os.environ.get(TTL_ENV, "")
    try:
        return float(raw) if raw else 60.0
    except ValueError:
        raise LeaseError(f"{TTL_ENV}={raw!r} is not a number of seconds") from None


@dataclass
class Holder:
    host: str
    pid: int
    started: str
    heartbeat: float

    def stale(self, ttl: float, now: float) -> bool:
        if self.host == socket.gethostname():  # its process tells, not its heartbeat
            return not _process_exists(self.pid)
        return now - self.heartbeat > ttl


class DriverLease:
    """The lease of ``study_name`` in ``storage``: :meth:`acquire`, then :meth:`release`.

    Args:
        storage: the Optuna storage of the study.
        study_name: the study the lease guards.
        ttl: seconds without a heartbeat after which a holder on another host counts as dead.
        interval: seconds between two heartbeats (a daemon thread writes them).

    Raises:
        LeaseError: from :meth:`acquire` when a live driver holds the study.
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        study_name: str,
        ttl: float | None = None,
        interval: float | None = None,
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.ttl = default_ttl() if ttl is None else ttl
        self.interval = min(10.0, self.ttl / 4) if interval is None else interval
        self._study_id: int | None = None
        self._number: int | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back -----------------------------------------------------------
    def acquire(self) -> None:
        for _ in range(5):
            leases = self._leases()
            number = 1
            if leases:
                number = max(leases) + 1
                holder = self._holder(leases[max(leases)])
                if holder is not None and not holder.stale(self.ttl, time.time()):
                    raise LeaseError(self._refusal(holder))
            try:
                study_id = self.storage.create_new_study(
                    [optuna.study.StudyDirection.MINIMIZE], self._name(number)
                )
            except optuna.exceptions.DuplicatedStudyError:
                continue  # another driver took it first: look again (it is live now)
            self._study_id, self._number = study_id, number
            now = time.time()
            started = datetime.datetime.fromtimestamp(now).astimezone().isoformat("T", "seconds")
            for key, value in (
                ("host", socket.gethostname()),
                ("pid", os.getpid()),
                ("started", started),
                ("heartbeat", now),
            ):
                self.storage.set_study_user_attr(study_id, key, value)
            for older, older_id in leases.items():
                if older < number:
                    with contextlib.suppress(KeyError):
                        self.storage.delete_study(older_id)
            self._thread = threading.Thread(
                target=self._beat, name="nasfw-driver-lease", daemon=True
            )
            self._thread.start()
            return
        raise LeaseError(f"study {self.study_name!r}: could not take the driver lease")

    def release(self) -> None:
        """Stop the heartbeat and delete the lease (best effort: a leftover one goes stale)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._study_id is not None and self._lost is None:
            try:
                self.storage.delete_study(self._study_id)
            except Exception as err:
                _log.warning("could not delete the driver lease of %s: %s", self.study_name, err)
            self._study_id = None

    def __enter__(self) -> DriverLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this driver still holds the lease: its lease study
        exists and no later lease does (the fencing token is the lease number)."""
        if self._lost is not None:
            raise LeaseLost(self._lost)
        if self._number is None:
            return
        if self._exists(self._name(self._number)) and not self._exists(
            self._name(self._number + 1)
        ):
            return
        self._lost = (
            f"study {self.study_name!r}: another driver took over this search (lease "
            f"{self._number} of this process, pid {os.getpid()}, is gone, e.g. after a pause "
            f"longer than {self.ttl:.0f} s); this driver stopped without writing again"
        )
        self._stop.set()
        raise LeaseLost(self._lost)

    def _exists(self, name: str) -> bool:
        try:
            self.storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return True

    # -- internals ------------------------------------------------------------------------
    def _name(self, number: int) -> str:
        return f"{self.study_name}{SEPARATOR}{number}"

    def _leases(self) -> dict[int, int]:
        """Lease number -> study id, for this study's leases in the storage."""
        prefix = f"{self.study_name}{SEPARATOR}"
        found = {}
        for study in self.storage.get_all_studies():
            suffix = study.study_name.removeprefix(prefix)
            if study.study_name.startswith(prefix) and suffix.isdigit():
                found[int(suffix)] = study._study_id
        return found

    def _holder(self, study_id: int) -> Holder | None:
        """Who holds lease ``study_id``; None when it vanished or its holder never wrote."""
        for attempt in range(2):
            try:
                attrs: dict[str, Any] = self.storage.get_study_user_attrs(study_id)
            except KeyError:  # released meanwhile
                return None
            if "heartbeat" in attrs:
                return Holder(
                    str(attrs.get("host")),
                    int(attrs.get("pid", -1)),
                    str(attrs.get("started")),
                    float(attrs["heartbeat"]),
                )
            if attempt == 0:  # just created: give its holder time to say who it is
                time.sleep(_UNWRITTEN_GRACE_S)
        return None

    def _refusal(self, holder: Holder) -> str:
        age = max(0.0, time.time() - holder.heartbeat)
        return (
            f"study {self.study_name!r} is being run by another driver (host {holder.host}, "
            f"pid {holder.pid}, started {holder.started}, last heartbeat {age:.0f} s ago); two "
            "drivers would evaluate every candidate twice. Wait for it to finish or stop it, "
            "or set study_name=<new name>. A driver that died on another host is taken over "
            f"{self.ttl:.0f} s after its last heartbeat ({max(0.0, self.ttl - age):.0f} s from "
            "now)."
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self._study_id is None:
                return
            try:
                self.check()
                self.storage.set_study_user_attr(self._study_id, "heartbeat", time.time())
            except LeaseLost:
                return  # the driver stops at its next write
            except Exception as err:  # the search goes on; the lease may go stale meanwhile
                _log.warning("driver lease heartbeat of %s failed: %s", self.study_name, err)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
