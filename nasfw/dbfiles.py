"""What a SQLite file a setting names holds, read without writing to it.

nasfw writes into files it made or can tell are of the kind the setting wants: an Optuna
storage (``storage.url``), a mini-benchmark DB (``minibench.db``), an MLflow store
(``tracking.tracking_uri``). :func:`sqlite_tables` lists a file's tables read-only and
:func:`describe` says what they are, so a setting pointed at another program's file (or at
nasfw's file of another kind) is refused before anything is written to it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nasfw.settings import ConfigError

OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
# Every table Optuna's RDB storage creates. A file holding some of them only is an Optuna
# storage whose creation was cut short (a full disk at its first open): Optuna completes it.
OPTUNA_SCHEMA = frozenset(
    {
        "alembic_version",
        "studies",
        "study_directions",
        "study_system_attributes",
        "study_user_attributes",
        "trial_heartbeats",
        "trial_intermediate_values",
        "trial_params",
        "trial_system_attributes",
        "trial_user_attributes",
        "trial_values",
        "trials",
        "version_info",
    }
)
MINIBENCH_TABLES = frozenset({"problems", "models", "evaluations", "info"})
MLFLOW_TABLES = frozenset({"experiments", "runs"})


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other URLs, and for in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).expanduser() if path and path != ":memory:" else None


def sqlite_tables(path: Path, key: str) -> frozenset[str] | None:
    """The tables of SQLite file ``path``, read-only (an empty set for a missing or empty
    file); None when it is not a SQLite database.

    Raises:
        ConfigError: naming setting ``key``, when SQLite cannot read the file now (locked by
            another process's write for SQLite's 5 s wait, unreadable, a disk error): that says
            nothing about what the file is, so it is not called "not a SQLite database".
    """
    if not path.is_file() or path.stat().st_size == 0:
        return frozenset()
    try:
        conn = sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as err:  # a subclass of DatabaseError: checked first
        locked = "locked" in str(err) or "busy" in str(err)
        why = (
            ": another process is writing to it (another search, paused or stuck?). Retry "
            "when it is done"
            if locked
            else ""
        )
        raise ConfigError(f"{key}: cannot read {path} now ({err}){why}") from None
    except sqlite3.DatabaseError:
        return None
    return frozenset(str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_"))


def describe_sqlite(path: Path, key: str) -> tuple[frozenset[str] | None, str]:
    """The tables of SQLite file ``path`` (:func:`sqlite_tables`, which raises naming
    ``key``) and what they are in words (:func:`describe`)."""
    tables = sqlite_tables(path, key)
    return tables, describe(tables)


def describe(tables: frozenset[str] | None) -> str:
    """What a file with these tables is, in words (``"an Optuna storage"``, ...)."""
    if tables is None:
        return "not a SQLite database"
    if not tables:
        return "an empty file"
    if tables >= OPTUNA_TABLES:
        return "an Optuna storage (a study ledger, storage.url)"
    if tables <= OPTUNA_SCHEMA:
        return "an Optuna storage whose creation was cut short (storage.url)"
    if {"problems", "models", "info"} <= tables <= MINIBENCH_TABLES:
        return "a nasfw mini-benchmark DB (minibench.db)"
    if tables >= MLFLOW_TABLES:
        return "an MLflow tracking store (tracking.tracking_uri)"
    shown = sorted(tables)
    more = f", ... ({len(shown)} in all)" if len(shown) > 6 else ""
    return f"a SQLite database of another program (tables {', '.join(shown[:6])}{more})"
