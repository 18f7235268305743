"""Opening the Optuna storage a study lives in (``storage.url``): SQLite, PostgreSQL and other
RDB URLs, a journal file, or ``memory://`` (this process's memory: no resume), with the faults
a writer killed mid-record handled here."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import optuna

from nasfw.config import ConfigError

_log = logging.getLogger("nasfw.ledger")

_SCHEMA_RACE_ATTEMPTS = 8

#: ``storage.url`` of Optuna's ``InMemoryStorage``: the fastest ledger, gone when the process
#: ends (no resume; only the driver process can write to it).
MEMORY_URL = "memory://"
_memory: optuna.storages.InMemoryStorage | None = None


class LedgerError(RuntimeError):
    """The storage cannot be opened, or the study belongs to a different search."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``storage.url``: an RDB URL, ``journal:///path/to/file.log``, or
    ``memory://`` (one ``InMemoryStorage`` per process, shared by every study opened in it)."""
    global _memory
    try:
        if url == MEMORY_URL:
            if _memory is None:
                _memory = optuna.storages.InMemoryStorage()
            return _memory
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            set_aside_torn_tail(path)
            set_aside_damaged_tail(path, url)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.parent.is_dir():
                raise LedgerError(f"storage.url={url}: directory {path.parent} does not exist")
            check_sqlite_storage(url)
            # Wait for a lock instead of failing when another process writes to the file.
            return _create_rdb_storage(url, {"connect_args": {"timeout": 60}})
        return _create_rdb_storage(url, None)
    except (LedgerError, ConfigError):
        raise
    except Exception as err:
        raise LedgerError(
            f"storage.url={url}: cannot open the Optuna storage ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Use sqlite:///file.db for one "
            "machine, or a PostgreSQL URL / journal:///shared/path.log for clusters."
        ) from err


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
    from nasfw.dbfiles import OPTUNA_TABLES, describe, sqlite_file, sqlite_tables

    path = sqlite_file(url)
    if path is None:
        return
    tables = sqlite_tables(path)
    if tables is not None and (not tables or tables >= OPTUNA_TABLES):
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


def _create_rdb_storage(
    url: str, engine_kwargs: dict[str, Any] | None
) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried while other processes create the same fresh schema.

    Jobs of one array (Hydra multirun on SLURM, say) open a new database at the same moment;
    all but one then fail on a table or version row the winner has just created. Once the
    schema exists, opening it again succeeds.
    """
    import sqlalchemy.exc

    for attempt in range(1, _SCHEMA_RACE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DBAPIError as err:
            schema_race = isinstance(err, sqlalchemy.exc.IntegrityError)
            if not (schema_race or "already exists" in str(err)):
                raise
            time.sleep(0.1 * attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite or journal path made absolute (for jobs elsewhere)."""
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url
