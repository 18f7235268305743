"""The Optuna study as the ledger of every evaluated candidate.

nasfw's own bookkeeping (tuner state, fingerprint, generation timing) lives in the study's
*system* attrs, so the user attrs that optuna-dashboard shows stay readable.

One finished trial per evaluation (COMPLETE with the metric, FAIL with the reason, or PRUNED
with the last score), written in one storage call when the result arrives (with a pruner, the
trial is created RUNNING when training starts, to report its learning curve, and finished when
the result arrives: :mod:`nasfw.pruning`); the tuner's state after each generation goes into
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
# Seconds from the start of the process running the search to its first training step (the
# latest process's, when a search resumed): its start-up time.
FIRST_STEP_ATTR = "nasfw:first_step_seconds"
GRAPH_ATTR = "nasfw:graph"  # a trial's system attr: its ArchGraph as compact JSON
# A trial's system attr: a RUNNING trial whose search stopped (not an evaluation: never read).
INTERRUPTED_ATTR = "nasfw:interrupted"
_SCHEMA_RACE_ATTEMPTS = 8
_RESULT_FIELDS = (
    "loss",
    "flops",
    "n_params",
    "train_seconds",
    "epochs",
    "budget",
    "regularized_score",
)
_UNSET = object()
_STATES = {
    "ok": optuna.trial.TrialState.COMPLETE,
    "failed": optuna.trial.TrialState.FAIL,
    "pruned": optuna.trial.TrialState.PRUNED,
}


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

    def attr(self, key: str) -> Any:
        """A study attr nasfw keeps (e.g. ``nasfw:search_space_auto``), or None."""
        return self._attrs().get(key)

    def set_attr(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON-serialisable) in the study under ``key`` (``nasfw:...``)."""
        self._set(key, value)

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

    def set_first_step_seconds(self, seconds: float) -> None:
        """Record the search's start-up time (:data:`FIRST_STEP_ATTR`)."""
        self._set(FIRST_STEP_ATTR, seconds)

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
    def _trial_attrs(
        self, candidate: Candidate, generation: int, index: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The user and system attrs that say which candidate a trial evaluates."""
        attrs: dict[str, Any] = {
            "generation": generation,
            "index": index,
            "architecture": candidate.graph.summary(),
            "graph_hash": candidate.graph.hash,
            "nodes": len(candidate.graph),
            "train": candidate.train,
            "attrs": candidate.attrs,
        }
        if candidate.init_from is not None:
            attrs["init_from"] = candidate.init_from
        if candidate.resume_from is not None:
            attrs["resume_from"] = candidate.resume_from
        if not candidate.exportable:
            attrs["exportable"] = False
        return attrs, {GRAPH_ATTR: candidate.graph.to_json()}

    def start(self, candidate: Candidate, generation: int, index: int) -> int:
        """Create the RUNNING trial of an evaluation that starts now (for a pruner to follow
        its learning curve); return its trial id, for :meth:`record` to finish."""
        attrs, system_attrs = self._trial_attrs(candidate, generation, index)
        template = optuna.trial.FrozenTrial(
            number=-1,
            state=optuna.trial.TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params=dict(candidate.params),
            distributions=dict(candidate.distributions),
            user_attrs=attrs,
            system_attrs=system_attrs,
            intermediate_values={},
            trial_id=-1,
        )
        return self.storage.create_new_trial(self.study_id, template_trial=template)

    def fail_interrupted(self) -> int:
        """Mark the study's RUNNING trials as failed and interrupted; return how many.

        Called by the driver when a search (re)starts: no evaluation of the study runs then
        but cluster jobs that outlived a killed driver; such a job, finishing, finds its trial
        closed and writes a new one (:meth:`record`)."""
        count = 0
        for trial in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        ):
            try:
                self.storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, True)
                self.storage.set_trial_user_attr(
                    trial._trial_id, "fail_reason", "interrupted: the search stopped"
                )
                self.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
                count += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished meanwhile
        return count

    def record(
        self,
        candidate: Candidate,
        result: Result,
        generation: int,
        index: int,
        trial_id: int | None = None,
    ) -> TrialRecord:
        """Store one evaluation as a finished trial and return it.

        A :class:`StoredResult` was stored by a worker already: it is returned, not written again.
        Any other result is stored as :meth:`Result.finite` makes it (a NaN metric is a failed
        trial), and the returned record holds what was stored. ``trial_id`` is the RUNNING trial
        :meth:`start` made for this evaluation, finished here (a new trial is written when it
        was closed meanwhile).
        """
        if isinstance(result, StoredResult):
            return self._record_of(
                candidate, result.plain(), generation, index, result.trial_number
            )
        result = result.finite()
        attrs, system_attrs = self._trial_attrs(candidate, generation, index)
        attrs["extra"] = result.extra
        if isinstance(result.extra.get("weights"), str):
            from nasfw.weights import artifact_attr

            # Listed (and served) by optuna-dashboard as the trial's artifact.
            name, meta = artifact_attr(result.extra["weights"], candidate.key)
            system_attrs[name] = meta
        for name in _RESULT_FIELDS:
            value = getattr(result, name)
            if value is not None:
                attrs[name] = value
        state = _STATES[result.status]
        values = None if result.status == "failed" else [float(result.metric or 0.0)]
        if result.status == "failed":
            attrs["fail_reason"] = result.error or "failed"
        curve = {int(k): float(v) for k, v in result.curve.items()}
        if trial_id is not None:
            try:
                return self._finish(
                    trial_id, candidate, result, generation, index, attrs, system_attrs, curve
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # closed as interrupted by a restarted driver: written anew below
        frozen = optuna.trial.create_trial(
            state=state,
            values=values,
            params=candidate.params,
            distributions=candidate.distributions,
            user_attrs=attrs,
            # The learning curve, where optuna-dashboard plots it and pruners read it.
            intermediate_values=curve,
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
        new_id = self.storage.create_new_trial(self.study_id, template_trial=frozen)
        number = self.storage.get_trial_number_from_id(new_id)
        return self._record_of(candidate, result, generation, index, number)

    def _finish(
        self,
        trial_id: int,
        candidate: Candidate,
        result: Result,
        generation: int,
        index: int,
        attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        curve: dict[int, float],
    ) -> TrialRecord:
        """Finish the RUNNING trial ``trial_id`` with ``result`` (see :meth:`record`)."""
        storage = self.storage
        running = storage.get_trial(trial_id)
        for step, value in curve.items():
            if step not in running.intermediate_values:
                storage.set_trial_intermediate_value(trial_id, step, value)
        # One storage call each: only what :meth:`start` did not write already.
        for key, value in system_attrs.items():
            if running.system_attrs.get(key) != value:
                storage.set_trial_system_attr(trial_id, key, value)
        for key, value in attrs.items():
            if running.user_attrs.get(key, _UNSET) != value:
                storage.set_trial_user_attr(trial_id, key, value)
        values = None if result.status == "failed" else [float(result.metric or 0.0)]
        storage.set_trial_state_values(trial_id, _STATES[result.status], values)
        number = storage.get_trial_number_from_id(trial_id)
        return self._record_of(candidate, result, generation, index, number)

    @staticmethod
    def _record_of(
        candidate: Candidate, result: Result, generation: int, index: int, number: int
    ) -> TrialRecord:
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
            resume_from=candidate.resume_from,
            distributions=dict(candidate.distributions),
        )

    def find(self, generation: int, index: int) -> TrialRecord | None:
        """The finished trial of candidate ``index`` of ``generation``, if there is one."""
        for record in self.records():
            if record.generation == generation and record.index == index:
                return record
        return None

    def records(self) -> list[TrialRecord]:
        """Every finished evaluation in the study, oldest first."""
        status_of = {state: status for status, state in _STATES.items()}
        out = []
        for trial in self.study.get_trials(deepcopy=False, states=tuple(status_of)):
            a = trial.user_attrs
            graph = trial.system_attrs.get(GRAPH_ATTR, a.get("graph"))  # "graph": before 0.2
            if graph is None or trial.system_attrs.get(INTERRUPTED_ATTR):
                continue  # not written by nasfw, or not an evaluation
            status = status_of[trial.state]
            result = Result(
                status=status,
                metric=trial.value if status != "failed" else None,
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
                    resume_from=a.get("resume_from"),
                    distributions=dict(trial.distributions),
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

    With ``pruner`` (the settings :func:`nasfw.pruning.pruner_settings` made), the trial is
    created RUNNING first and the evaluation reports its learning curve to it, asking the
    pruner after each point (every launcher then runs this, local workers too).
    """

    evaluate: Callable[..., Result]
    url: str
    study_name: str
    generation: int
    pruner: dict[str, Any] | None = None

    def key(self, task: tuple[int, Candidate]) -> str:
        """A stable name of this evaluation, for launchers that re-attach to running jobs."""
        index, candidate = task
        return f"{self.study_name}:{self.generation}:{index}:{candidate.graph.hash}"

    def __call__(self, task: tuple[int, Candidate]) -> Result:
        index, candidate = task
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per job opening it
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
        trial_id, reporter = None, None
        if ledger is not None and self.pruner is not None:
            from nasfw.pruning import TrialReporter

            try:
                trial_id = ledger.start(candidate, self.generation, index)
                reporter = TrialReporter(ledger, trial_id, self.pruner)
            except Exception as err:
                print(f"nasfw: the pruner cannot follow this job ({err})", file=sys.stderr)
        result = self.evaluate(candidate, reporter) if reporter else self.evaluate(candidate)
        if ledger is None:
            return result
        try:
            record = ledger.record(candidate, result, self.generation, index, trial_id)
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
