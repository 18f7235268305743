"""The Optuna study as the ledger of every evaluated candidate.

nasfw's own bookkeeping (tuner state, fingerprint, generation timing) lives in the study's
*system* attrs, so the user attrs that optuna-dashboard shows stay readable.

One finished trial per evaluation (COMPLETE with the metric, or FAIL with the reason), written
in one storage call when the result arrives; the tuner's state after each generation goes into
the study's user attrs. Together they let a rerun with the same storage and study name resume.

Trials are written by :meth:`Ledger.record` only: by the driver as results arrive, or, for
cluster launchers (``Launcher.workers_write_trials``), inside the job by
:class:`StoredEvaluation`, so a result is in the study when its job ends even if the driver is
gone; the driver then gets a :class:`StoredResult` and writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nasfw.graph import ArchGraph
from nasfw.search import TrialRecord
from nasfw.tuner import Candidate, Result

_log = logging.getLogger(__name__)

STATE_ATTR = "nasfw:tuner_state"
GENERATION_ATTR = "nasfw:last_generation"
SECONDS_ATTR = "nasfw:generation_seconds"
FINGERPRINT_ATTR = "nasfw:fingerprint"
GRAPH_ATTR = "nasfw:graph"  # a trial's system attr: its ArchGraph as compact JSON
_SCHEMA_RACE_ATTEMPTS = 8
_RESULT_FIELDS = ("loss", "flops", "n_params", "train_seconds", "epochs", "regularized_score")


class LedgerError(RuntimeError):
    """The storage cannot be opened, or the study belongs to a different search."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``storage.url``: an RDB URL, or ``journal:///path/to/file.log``."""
    try:
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            set_aside_torn_tail(path)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.parent.is_dir():
                raise LedgerError(f"storage.url={url}: directory {path.parent} does not exist")
            # Wait for a lock instead of failing when another process writes to the file.
            return _create_rdb_storage(url, {"connect_args": {"timeout": 60}})
        return _create_rdb_storage(url, None)
    except LedgerError:
        raise
    except Exception as err:
        raise LedgerError(
            f"storage.url={url}: cannot open the Optuna storage ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Use sqlite:///file.db for one "
            "machine, or a PostgreSQL URL / journal:///shared/path.log for clusters."
        ) from err


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


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class Ledger:
    """Reads and writes one study: trials, tuner state, and the search's fingerprint."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        self.storage = open_storage(url)
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=self.storage,
                direction="maximize",
                load_if_exists=True,
            )
            self.study_id = self.storage.get_study_id_from_name(study_name)
        except Exception as err:
            raise LedgerError(
                f"storage.url={url}: cannot create or load study {study_name!r} "
                f"({type(err).__name__}: {err})"
            ) from err

    # -- nasfw's own state: study system attrs, out of the user attrs dashboards show --------
    def _attrs(self) -> dict[str, Any]:
        """nasfw's study attrs (system attrs; user attrs of studies written before they moved)."""
        stored = self.storage.get_study_system_attrs(self.study_id)
        legacy = {k: v for k, v in self.study.user_attrs.items() if k.startswith("nasfw:")}
        return {**legacy, **stored}

    def _set(self, key: str, value: Any) -> None:
        self.storage.set_study_system_attr(self.study_id, key, value)

    def set_metric_name(self, name: str) -> None:
        """Name the study's objective (e.g. ``val_accuracy``) for optuna-dashboard and others."""
        if self.study.metric_names != [name]:
            import warnings

            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and stable since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([name])

    # -- the search's identity ------------------------------------------------------------
    def check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to resume a study that was made by a different search config."""
        stored = self._attrs().get(FINGERPRINT_ATTR)
        if stored is None:
            self._set(FINGERPRINT_ATTR, fingerprint)
            return
        differing = _differing_keys(stored, fingerprint)
        if differing:
            raise LedgerError(
                f"study {self.study.study_name!r} in {self.url} was made by a search with other "
                f"settings ({', '.join(differing)} differ); resuming it would mix two searches. "
                "Set study_name=<new name> for a new search, or restore those settings."
            )

    # -- tuner state ----------------------------------------------------------------------
    def save_state(
        self,
        generation: int,
        state: dict[str, Any],
        generation_seconds: dict[int, float] | None = None,
    ) -> None:
        # State first: a crash between the writes re-runs the generation's tell, not skips it.
        self._set(STATE_ATTR, json.dumps(state, separators=(",", ":")))
        if generation_seconds is not None:
            timing = {str(g): s for g, s in sorted(generation_seconds.items())}
            self._set(SECONDS_ATTR, json.dumps(timing))
        self._set(GENERATION_ATTR, generation)

    def generation_seconds(self) -> dict[int, float]:
        """Wall seconds per finished generation, as :meth:`save_state` recorded them."""
        raw = self._attrs().get(SECONDS_ATTR)
        return {int(g): float(s) for g, s in json.loads(raw).items()} if raw else {}

    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        attrs = self._attrs()
        if GENERATION_ATTR not in attrs:
            return None
        return int(attrs[GENERATION_ATTR]), json.loads(attrs[STATE_ATTR])

    # -- trials ---------------------------------------------------------------------------
    def record(
        self, candidate: Candidate, result: Result, generation: int, index: int
    ) -> TrialRecord:
        """Store one evaluation as a finished trial and return it.

        A :class:`StoredResult` was stored by a worker already: it is returned, not written again.
        Any other result is stored as :meth:`Result.finite` makes it (a NaN metric is a failed
        trial), and the returned record holds what was stored.
        """
        if isinstance(result, StoredResult):
            return TrialRecord(
                number=result.trial_number,
                generation=generation,
                index=index,
                graph=candidate.graph,
                result=result.plain(),
                params=dict(candidate.params),
                train=dict(candidate.train),
                attrs=dict(candidate.attrs),
                init_from=candidate.init_from,
                exportable=candidate.exportable,
            )
        result = result.finite()
        attrs: dict[str, Any] = {
            "generation": generation,
            "index": index,
            "architecture": candidate.graph.summary(),
            "graph_hash": candidate.graph.hash,
            "nodes": len(candidate.graph),
            "train": candidate.train,
            "attrs": candidate.attrs,
            "extra": result.extra,
        }
        if candidate.init_from is not None:
            attrs["init_from"] = candidate.init_from
        if not candidate.exportable:
            attrs["exportable"] = False
        system_attrs = {GRAPH_ATTR: candidate.graph.to_json()}
        if isinstance(result.extra.get("weights"), str):
            from nasfw.weights import artifact_attr

            # Listed (and served) by optuna-dashboard as the trial's artifact.
            name, meta = artifact_attr(result.extra["weights"], candidate.key)
            system_attrs[name] = meta
        for name in _RESULT_FIELDS:
            value = getattr(result, name)
            if value is not None:
                attrs[name] = value
        if result.ok:
            state, values = optuna.trial.TrialState.COMPLETE, [float(result.metric or 0.0)]
        else:
            state, values = optuna.trial.TrialState.FAIL, None
            attrs["fail_reason"] = result.error or "failed"
        frozen = optuna.trial.create_trial(
            state=state,
            values=values,
            params=candidate.params,
            distributions=candidate.distributions,
            user_attrs=attrs,
            # The learning curve, where optuna-dashboard plots it (and pruners would read it).
            intermediate_values={int(k): float(v) for k, v in result.curve.items()},
            # The graph itself, compact, beside the readable summary the dashboard shows.
            system_attrs=system_attrs,
        )
        # The evaluation's own times, so durations and optuna-dashboard's timeline are real.
        now = time.time()
        finished = result.finished if result.finished is not None else now
        started = result.started if result.started is not None else finished
        frozen.datetime_start = datetime.datetime.fromtimestamp(started)
        frozen.datetime_complete = datetime.datetime.fromtimestamp(finished)
        # What study.add_trial does, keeping the new trial's id (its number is then exact
        # even when other processes add trials to the same study at the same time).
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=frozen)
        number = self.storage.get_trial_number_from_id(trial_id)
        return TrialRecord(
            number=number,
            generation=generation,
            index=index,
            graph=candidate.graph,
            result=result,
            params=dict(candidate.params),
            train=dict(candidate.train),
            attrs=dict(candidate.attrs),
            init_from=candidate.init_from,
            exportable=candidate.exportable,
        )

    def find(self, generation: int, index: int) -> TrialRecord | None:
        """The finished trial of candidate ``index`` of ``generation``, if there is one."""
        for record in self.records():
            if record.generation == generation and record.index == index:
                return record
        return None

    def records(self) -> list[TrialRecord]:
        """Every finished evaluation in the study, oldest first."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        out = []
        for trial in self.study.get_trials(deepcopy=False, states=states):
            a = trial.user_attrs
            graph = trial.system_attrs.get(GRAPH_ATTR, a.get("graph"))  # "graph": before 0.2
            if graph is None:
                continue  # not written by nasfw
            ok = trial.state == optuna.trial.TrialState.COMPLETE
            result = Result(
                status="ok" if ok else "failed",
                metric=trial.value if ok else None,
                error=a.get("fail_reason"),
                extra=a.get("extra", {}),
                curve=dict(trial.intermediate_values),
                started=_timestamp(trial.datetime_start),
                finished=_timestamp(trial.datetime_complete),
                **{k: a[k] for k in _RESULT_FIELDS if k in a},
            )
            out.append(
                TrialRecord(
                    number=trial.number,
                    generation=a["generation"],
                    index=a["index"],
                    graph=ArchGraph.from_json(graph),
                    result=result,
                    params=dict(trial.params),
                    train=a.get("train", {}),
                    attrs=a.get("attrs", {}),
                    init_from=a.get("init_from"),
                    exportable=a.get("exportable", True),
                )
            )
        return out


def _timestamp(moment: datetime.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


@dataclass
class StoredResult(Result):
    """A :class:`Result` whose trial a worker has already written (trial ``trial_number``)."""

    trial_number: int = -1

    def plain(self) -> Result:
        return Result(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Result)})


@dataclass
class StoredEvaluation:
    """What cluster launchers run per candidate: evaluate, then write the trial from the job.

    Called with ``(index, candidate)`` of generation ``generation``. A candidate that already
    has a trial (its job was killed after writing it, then retried) is not evaluated again.
    When the storage cannot be reached from the job, the plain result goes back to the driver,
    which writes it: either way the trial is written once, by :meth:`Ledger.record`.
    """

    evaluate: Callable[[Candidate], Result]
    url: str
    study_name: str
    generation: int

    def key(self, task: tuple[int, Candidate]) -> str:
        """A stable name of this evaluation, for launchers that re-attach to running jobs."""
        index, candidate = task
        return f"{self.study_name}:{self.generation}:{index}:{candidate.graph.hash}"

    def __call__(self, task: tuple[int, Candidate]) -> Result:
        index, candidate = task
        ledger: Ledger | None = None
        try:
            ledger = Ledger(self.url, self.study_name)
            done = ledger.find(self.generation, index)
            if done is not None and done.graph.hash == candidate.graph.hash:
                return _stored(done.result, done.number)
        except Exception as err:
            print(
                f"nasfw: cannot read {self.url} from this job ({err}); the driver writes",
                file=sys.stderr,
            )
        result = self.evaluate(candidate)
        if ledger is None:
            return result
        try:
            record = ledger.record(candidate, result, self.generation, index)
            return _stored(record.result, record.number)
        except Exception as err:
            print(
                f"nasfw: cannot write to {self.url} from this job ({err}); the driver writes",
                file=sys.stderr,
            )
            return result


def _stored(result: Result, number: int) -> StoredResult:
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(Result)}
    return StoredResult(**fields, trial_number=number)
