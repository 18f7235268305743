"""Opening the Optuna storage a study lives in (``storage.url``): SQLite, PostgreSQL and other
RDB URLs, a journal file, or ``memory://`` (this process's memory: no resume), with the faults
of several processes opening one at a time, of a writer killed mid-record and of outages of
the disk or database under it (a full disk, a read-only spell) handled here."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages.journal import JournalFileBackend

from nasfw.config import ConfigError

_log = logging.getLogger("nasfw.ledger")

_SCHEMA_RACE_ATTEMPTS = 8

#: ``storage.url`` of Optuna's ``InMemoryStorage``: the fastest ledger, gone when the process
#: ends (no resume; only the driver process can write to it).
MEMORY_URL = "memory://"
_memory: optuna.storages.InMemoryStorage | None = None


class LedgerError(RuntimeError):
    """The storage cannot be opened, or the study belongs to a different search."""


class StorageOutage(LedgerError):
    """The storage refused reads or writes for longer than ``storage.retry_seconds`` (a full
    disk, a read-only file system, a lost database connection); what it holds is intact."""

    def __init__(self, url: str, reason: str, seconds: float) -> None:
        super().__init__(
            f"storage.url={url}: {reason}; the storage refused writes for {seconds:.0f} s "
            "(storage.retry_seconds), so the search stopped"
        )
        self.url, self.reason = url, reason


# errno values of an outage of the disk or file system under a storage, in words.
_OS_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk reported an I/O error",
    errno.EACCES: "permission to write was denied",
}
# SQLite's messages for the same outages (sqlite3.OperationalError carries no errno).
_SQLITE_FAULTS = {
    "database or disk is full": "the disk is full",
    "readonly database": "the database file or its directory is read-only",
    "disk i/o error": "the disk reported an I/O error",
    "unable to open database file": "the database file cannot be opened",
}
# Not among them: "database is locked". SQLite waits for the lock already (the 60 s timeout
# open_storage sets); past that, the holder is stuck (a paused driver), which retrying cannot
# cure, and the error says so (see root_cause).


def root_cause(err: BaseException) -> str:
    """The innermost error ``err`` was raised from, in one line (``"OperationalError:
    database is locked"``): what Optuna's wrappers (``StorageInternalError: An exception is
    raised during the commit...``) hide."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def storage_fault(err: BaseException) -> str | None:
    """What outage of the storage ``err`` (or an error it was raised from) reports, in words
    (``"the disk is full"``); None when it is no outage but a wrong request, which retrying
    cannot cure. Connection errors of a database server (``OperationalError`` of a PostgreSQL
    or MySQL driver) are outages too."""
    import sqlalchemy.exc

    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _OS_FAULTS:
            return _OS_FAULTS[e.errno]
        if isinstance(e, sqlalchemy.exc.OperationalError):
            text = str(e.orig).lower()
            for message, reason in _SQLITE_FAULTS.items():
                if message in text:
                    return f"{reason} ({e.orig})"
            return f"the database cannot be reached ({str(e.orig).splitlines()[0]})"
        todo += [e.__cause__, e.__context__]
    return None


_Storage = TypeVar("_Storage", bound=type)
_retrying = threading.local()  # set while a storage call retries: calls inside it do not


def _patient(cls: _Storage) -> _Storage:
    """A subclass of Optuna storage ``cls`` whose public calls are retried while the storage
    has an outage (:func:`storage_fault`), for up to ``retry_seconds`` (an instance attribute,
    0 by default: no retry), then raise :class:`StorageOutage`.

    A call is retried whole: Optuna's RDB storage commits each call in one transaction, which
    a failed commit rolls back, and the journal's records are appended whole or not at all
    (:class:`WholeRecordsBackend`), so a retried call never writes twice. Being a subclass, the
    storage stays what Optuna expects (an ``RDBStorage`` still gets Optuna's cache in front).
    """

    def wrapped(name: str) -> Callable[..., Any]:
        method = getattr(cls, name)

        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.retry_seconds <= 0 or getattr(_retrying, "active", False):
                return method(self, *args, **kwargs)
            _retrying.active = True
            try:
                return _retry(self, method, args, kwargs)
            finally:
                _retrying.active = False

        return call

    names = [
        n
        for n, v in vars(optuna.storages.BaseStorage).items()
        if callable(v) and not n.startswith("_")
    ]
    patient = type(
        f"Patient{cls.__name__}",
        (cls,),
        {"retry_seconds": 0.0, "url": "", "outage_since": None, "__module__": __name__}
        | {n: wrapped(n) for n in names},
    )
    patient.__qualname__ = patient.__name__
    return patient  # type: ignore[return-value]


def _retry(storage: Any, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """``method(storage, ...)``, retried while the storage has an outage (see :func:`_patient`).
    The outage is said once per storage, not once per thread meeting it (the lease's
    heartbeat writes beside the search)."""
    started: float | None = None
    pause = 0.5
    while True:
        try:
            result = method(storage, *args, **kwargs)
        except Exception as err:
            reason = storage_fault(err)
            if reason is None:
                raise
            now = time.monotonic()
            if started is None:
                started = now
                if storage.outage_since is None:
                    storage.outage_since = now
                    _log.warning(
                        "storage.url=%s: %s; retrying for up to %g s (storage.retry_seconds)",
                        storage.url,
                        reason,
                        storage.retry_seconds,
                    )
            waited = now - started
            if waited >= storage.retry_seconds:
                raise StorageOutage(storage.url, reason, waited) from err
            time.sleep(min(pause, storage.retry_seconds - waited))
            pause = min(2 * pause, 5.0)
        else:
            if started is None:  # (a read, say, that the outage did not touch)
                return result
            since, storage.outage_since = storage.outage_since, None
            if since is not None:
                _log.warning(
                    "storage.url=%s answers again after %.0f s; the search goes on",
                    storage.url,
                    time.monotonic() - since,
                )
            return result


def open_storage(url: str, retry_seconds: float = 0.0) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``storage.url``: an RDB URL, ``journal:///path/to/file.log``, or
    ``memory://`` (one ``InMemoryStorage`` per process, shared by every study opened in it).

    Calls that meet an outage of the storage (a full disk, a read-only spell, a lost
    connection) are retried for up to ``retry_seconds`` before :class:`StorageOutage` is
    raised. Raises :class:`LedgerError` (naming ``storage.url``) when it cannot be opened; a
    SQLite file this call created is then removed again, so a failed start (a full disk, say)
    leaves nothing behind.
    """
    global _memory
    created: Path | None = None
    try:
        if url == MEMORY_URL:
            if _memory is None:
                _memory = optuna.storages.InMemoryStorage()
            return _memory
        if url.startswith("journal://"):
            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            set_aside_torn_tail(path)
            set_aside_damaged_tail(path, url)
            storage: Any = PatientJournalStorage(WholeRecordsBackend(str(path)))
        else:
            engine_kwargs = None
            if url.startswith("sqlite:///"):
                path = Path(url.removeprefix("sqlite:///"))
                if not path.parent.is_dir():
                    raise LedgerError(f"storage.url={url}: directory {path.parent} does not exist")
                check_sqlite_storage(url)
                if not path.exists():
                    created = path
                # Wait for a lock instead of failing when another process writes to the file.
                engine_kwargs = {"connect_args": {"timeout": 60}}
            storage = _create_rdb_storage(url, engine_kwargs)
        storage.url, storage.retry_seconds = url, retry_seconds
        return storage
    except (LedgerError, ConfigError):
        raise
    except Exception as err:
        if created is not None:
            for leftover in (created, created.with_name(created.name + "-journal")):
                with contextlib.suppress(OSError):  # a read-only spell: nothing to remove
                    leftover.unlink(missing_ok=True)
        fault = storage_fault(err)
        if fault is not None:
            raise LedgerError(
                f"storage.url={url}: cannot open the Optuna storage: {fault}"
                + ("; the file it began was removed" if created is not None else "")
            ) from err
        raise LedgerError(
            f"storage.url={url}: cannot open the Optuna storage ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Use sqlite:///file.db for one "
            "machine, or a PostgreSQL URL / journal:///shared/path.log for clusters."
        ) from err


class WholeRecordsBackend(JournalFileBackend):
    """Optuna's journal file, appended whole records at a time or not at all.

    Optuna's :class:`~optuna.storages.journal.JournalFileBackend` leaves the bytes of a write
    the disk cut short (full, say) in the file; the next record would then be appended onto
    them, making a line no reader can parse. Here the file is cut back to its length before the
    write, under the journal's lock, so a retried write starts on a whole record.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        from optuna.storages.journal._file import get_lock_file

        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with get_lock_file(self._lock), open(self._file_path, "ab", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[f.write(view) or 0 :]
                os.fsync(f.fileno())
            except OSError:
                # A torn record left if this fails too: the next open sets it aside.
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise


PatientRDBStorage = _patient(optuna.storages.RDBStorage)
PatientJournalStorage = _patient(optuna.storages.JournalStorage)


def count_trials(url: str, study_name: str) -> int | None:
    """How many trials study ``study_name`` in ``url`` holds, read without writing (a journal
    is read as it is, its lock not taken: fit for a storage whose disk is full); None when
    there is no such study (and for ``memory://``, gone with the process that wrote it)."""
    if url == MEMORY_URL:
        return None
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        if not path.is_file():
            return None
        storage: Any = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    else:
        storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _records(data: bytes) -> list[tuple[int, bytes]]:
    """The journal's whole lines with their byte offsets."""
    found, offset = [], 0
    for line in data.splitlines(keepends=True):
        found.append((offset, line))
        offset += len(line)
    return found


def _is_record(line: bytes) -> bool:
    """Whether ``line`` is one of Optuna's journal records: a JSON object with its op code."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)


def set_aside_damaged_tail(path: Path, url: str) -> Path | None:
    """Check every record of journal ``path`` before anything is written to it; return the
    backup of a damaged last record, if there was one.

    A record that is no longer a journal record (a changed byte, a line of another file)
    is skipped by Optuna's reader while it is the last one, so the study silently loses it;
    once anything is appended after it, every later open fails. Damage in the last record(s)
    only: they go to ``<path>.damaged-<UTC time>`` (named in a warning) and the journal ends at
    its last valid record (what they recorded is lost, e.g. a trial's end: the search then
    runs that evaluation again). Damage followed by valid records cannot be repaired without
    losing them: refused, naming the byte offset. Done under the journal's lock.

    Raises:
        LedgerError: a damaged record with valid records after it (``storage.url`` and the
            byte offset named; the file is left as it was).
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        records = _records(path.read_bytes())
        bad = [i for i, (_, line) in enumerate(records) if not _is_record(line)]
        if not bad:
            return None
        first = bad[0]
        offset = records[first][0]
        if bad != list(range(first, len(records))):
            raise LedgerError(
                f"storage.url={url}: the journal is damaged at byte {offset} (record "
                f"{first + 1} of {len(records)} is not a journal record) and valid records "
                "follow it; nothing was written. Restore the file from a backup, or cut it at "
                "that byte to keep the records before it"
            )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.damaged-{stamp}")
        with open(path, "rb+") as f:
            f.seek(offset)
            backup.write_bytes(f.read())
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    _log.warning(
        "journal %s: its last %d record(s) were damaged (from byte %d); they were moved to %s "
        "and the journal ends at its last valid record",
        path,
        len(records) - first,
        offset,
        backup,
    )
    return backup


def check_sqlite_storage(url: str) -> None:
    """Refuse a ``sqlite:///`` ``storage.url`` whose file holds something other than an
    Optuna storage (an MLflow store, a mini-benchmark DB, another program's tables), before
    Optuna adds its tables to it (:class:`nasfw.ConfigError` naming ``storage.url``)."""
    from nasfw.dbfiles import OPTUNA_SCHEMA, OPTUNA_TABLES, describe, sqlite_file, sqlite_tables

    path = sqlite_file(url)
    if path is None:
        return
    tables = sqlite_tables(path, "storage.url")
    # Some of Optuna's tables only: its creation was cut short, and Optuna completes it.
    if tables is not None and (tables >= OPTUNA_TABLES or tables <= OPTUNA_SCHEMA):
        return
    raise ConfigError(
        f"storage.url={url}: {path} is {describe(tables)}, not an Optuna storage; nothing was "
        "written to it. Point storage.url at a new file (e.g. sqlite:///nasfw.db)"
    )


def set_aside_torn_tail(path: Path) -> Path | None:
    """Move an unfinished last record of journal ``path`` into a backup file; return it.

    A writer killed in the middle of a record leaves bytes without the closing newline. Optuna
    reads past them, but the next record would be appended onto them, making a line no reader
    can parse, and every later open of the journal would fail. The torn bytes go to
    ``<path>.torn-<UTC time>`` (named in a warning) and the journal ends at its last whole
    record. Done under the journal's own lock, so no live writer is cut short.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as f:
            size = end = f.seek(0, 2)
            cut = 0
            while end > 0:  # the last newline, read backwards in blocks
                start = max(0, end - 65536)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                end = start
            if cut == size:
                return None
            f.seek(cut)
            torn = f.read()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            backup = path.with_name(f"{path.name}.torn-{stamp}")
            backup.write_bytes(torn)
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    _log.warning(
        "journal %s ended in an unfinished record (%d bytes, from a writer that was killed "
        "mid-write); it was moved to %s and the journal ends at its last whole record",
        path,
        len(torn),
        backup,
    )
    return backup


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any] | None) -> Any:
    """``PatientRDBStorage(url)``, retried while other processes create the same fresh schema.

    Jobs of one array (Hydra multirun on SLURM, say) open a new database at the same moment;
    all but one then fail on a table or version row the winner has just created. Once the
    schema exists, opening it again succeeds.
    """
    import sqlalchemy.exc

    for attempt in range(1, _SCHEMA_RACE_ATTEMPTS):
        try:
            return PatientRDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DBAPIError as err:
            schema_race = isinstance(err, sqlalchemy.exc.IntegrityError)
            if not (schema_race or "already exists" in str(err)):
                raise
            time.sleep(0.1 * attempt)
    return PatientRDBStorage(url, engine_kwargs=engine_kwargs)


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite or journal path made absolute (for jobs elsewhere)."""
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url
