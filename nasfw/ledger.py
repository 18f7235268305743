"""The Optuna study as the ledger of every evaluated candidate.

nasfw's own bookkeeping (tuner state, fingerprint, generation timing) lives in the study's
*system* attrs, so the user attrs that optuna-dashboard shows stay readable.

One finished trial per evaluation (COMPLETE with the metric, FAIL with the reason, or PRUNED
with the last score), written in one storage call when the result arrives (with a pruner, the
trial is created RUNNING when training starts, to report its learning curve, and finished when
the result arrives: :mod:`nasfw.pruning`); the tuner's state after each generation goes into
the study's user attrs. Together they let a rerun with the same storage and study name resume.

Only *results* are COMPLETE (:meth:`nasfw.TrialRecord.is_result`): an ok evaluation that is
not one (one of the tuner's own trainings, such as Petridish's candidate trainings, or a network
trained below the full budget, such as Hyperband's lower rungs) is stored PRUNED with its score
and the user attr ``not_a_result`` saying why, so Optuna's own best trial (``study.best_trial``,
optuna-dashboard's "Best Trial") is a network nasfw would call the best; :meth:`Ledger.records`
reads it back as ``ok``.

Trials are written by :meth:`Ledger.record` only: by the driver as results arrive, or, for
cluster launchers (``Launcher.workers_write_trials``), inside the job by
:class:`StoredEvaluation`, so a result is in the study when its job ends even if the driver is
gone; the driver then gets a :class:`StoredResult` and writes nothing.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import optuna

from nasfw.graph import ArchGraph
from nasfw.records import Candidate, Result, StoredResult, TrialRecord
from nasfw.storage import (
    LedgerError,
    absolute_url,
    open_storage,
    root_cause,
    set_aside_torn_tail,
)
from nasfw.weights import artifact_attr

_log = logging.getLogger(__name__)

__all__ = [
    "Ledger",
    "LedgerError",
    "absolute_url",
    "open_storage",
    "set_aside_torn_tail",
]

# The tuner's state after a generation, the generation and the last trial it was told, in one
# attr (one write: a kill between two writes once left a state ahead of its generation, whose
# results a resume then told the tuner twice). Studies written before it have the two below.
CHECKPOINT_ATTR = "nasfw:checkpoint"
STATE_ATTR = "nasfw:tuner_state"
GENERATION_ATTR = "nasfw:last_generation"
SECONDS_ATTR = "nasfw:generation_seconds"
# The simulated clock of a search by lookup: cumulative simulated training seconds at the end
# of each generation ({"<generation>": seconds}), beside SECONDS_ATTR's wall time.
SIMULATED_ATTR = "nasfw:simulated_seconds"
FINGERPRINT_ATTR = "nasfw:fingerprint"
# The new entries of a list in the tuner's state that only grows (Tuner.appended_state), as
# written after a generation: "nasfw:appended:<key>@<offset>" holds the entries from offset on;
# the checkpoint says how many entries the state holds, so the chunks past it (written by a
# save killed before its checkpoint) are never read.
APPENDED_ATTR = "nasfw:appended"
# Seconds from the search's start (its process's, for the first search of a process) to its
# first training step (the latest run's, when a search resumed): its start-up time.
FIRST_STEP_ATTR = "nasfw:first_step_seconds"
GRAPH_ATTR = "nasfw:graph"  # a trial's system attr: its ArchGraph as compact JSON
# A trial's system attr: a RUNNING trial whose search stopped (not an evaluation: never read).
INTERRUPTED_ATTR = "nasfw:interrupted"
# A trial's user attr: why an ok evaluation is no result (stored PRUNED, read back as ok).
NOT_A_RESULT_ATTR = "not_a_result"
# optuna-dashboard shows each user attr on one line that never wraps: a graph's summary as one
# attr made trial pages 1,800-3,400 px wide. It is cut at its arrows into lines this long.
ARCHITECTURE_LINE = 90


def architecture_attrs(graph: ArchGraph) -> dict[str, str]:
    """``graph``'s :meth:`ArchGraph.summary` as user attrs of at most ``ARCHITECTURE_LINE``
    characters each, cut between layers: ``architecture``, then ``architecture (2)``, ...
    (each continuation starts with its arrow); :func:`architecture_of` joins them again."""
    lines: list[str] = []
    for layer in graph.summary().split(" → "):
        if lines and len(lines[-1]) + 3 + len(layer) <= ARCHITECTURE_LINE:
            lines[-1] += f" → {layer}"
        else:
            lines.append(f"→ {layer}" if lines else layer)
    return {
        "architecture" if i == 0 else f"architecture ({i + 1})": line
        for i, line in enumerate(lines)
    }


# A result's extra facts, one user attr each (``extra.device``, ``extra.reused_from``, ...): as
# one dict they were one unwrapped line of 300 characters on optuna-dashboard's trial page.
EXTRA_PREFIX = "extra."


def trial_extra(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """A stored trial's :attr:`nasfw.Result.extra` (``extra.<key>`` user attrs; the one
    ``extra`` dict of studies written before)."""
    if isinstance(user_attrs.get("extra"), dict):
        return dict(user_attrs["extra"])
    n = len(EXTRA_PREFIX)
    return {k[n:]: v for k, v in user_attrs.items() if k.startswith(EXTRA_PREFIX)}


def architecture_of(user_attrs: dict[str, Any]) -> str:
    """The summary :func:`architecture_attrs` cut into user attrs, whole again."""
    parts = [user_attrs["architecture"]]
    while (part := user_attrs.get(f"architecture ({len(parts) + 1})")) is not None:
        parts.append(part.removeprefix("→ "))
    return " → ".join(parts)


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


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Series:
    """The JSON of a per-generation series (``{"0": 1.5, "1": 2.25}``, generations in order)
    that grows by a generation or a few at a time: the new entries are appended to the text
    written before, where re-serialising the whole series every generation made a search of
    n one-network generations O(n^2). Anything else (a series that is not the one before plus
    later generations) is serialised anew."""

    def __init__(self) -> None:
        self.source: dict[int, float] | None = None
        self.last: tuple[int, float] | None = None
        self.count = 0
        self.text = ""

    def json(self, series: dict[int, float]) -> str:
        last, count = self.last, self.count
        if series is self.source and last is not None and len(series) > count:
            # The entries inserted since (a dict keeps insertion order; reversed() reads its
            # end without walking the rest): appended when they all come after the last one.
            newer = list(itertools.islice(reversed(series.items()), len(series) - count))
            if series.get(last[0]) == last[1] and all(g > last[0] for g, _ in newer):
                newer.sort()
                tail = ", ".join(f"{json.dumps(str(g))}: {json.dumps(s)}" for g, s in newer)
                self.text = f"{self.text[:-1]}, {tail}}}"
                self._keep(series, newer[-1])
                return self.text
        self.text = json.dumps({str(g): s for g, s in sorted(series.items())})
        self._keep(series, max(series.items()) if series else None)
        return self.text

    def _keep(self, series: dict[int, float], last: tuple[int, float] | None) -> None:
        self.source, self.last, self.count = series, last, len(series)


class Ledger:
    """Reads and writes one study: trials, tuner state, and the search's fingerprint."""

    def __init__(
        self,
        url: str,
        study_name: str,
        retry_seconds: float = 0.0,
        full_budget: int | None = None,
    ) -> None:
        """Open (or create) study ``study_name`` in ``url``; storage calls meeting an outage
        are retried for ``retry_seconds`` (:func:`nasfw.storage.open_storage`).
        ``full_budget``: the epochs (``train.epochs``) an evaluation needs to be stored as a
        result (COMPLETE); None: only the tuner's own trainings are no result."""
        self.url = url
        self.full_budget = full_budget
        # Called before each write: raises when this driver no longer holds the study's lease
        # (nasfw.lease.DriverLease.check, set once the lease is taken).
        self.fence: Callable[[], None] = _no_fence
        self.storage = open_storage(url, retry_seconds)
        self._series: dict[str, _Series] = {}
        # Entries of each appended list of the tuner's state in the study (save_state).
        self._appended: dict[str, int] = {}
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=self.storage,
                direction="maximize",
                load_if_exists=True,
            )
            self.study_id = self.storage.get_study_id_from_name(study_name)
        except LedgerError:
            raise
        except Exception as err:
            raise LedgerError(
                f"storage.url={url}: cannot create or load study {study_name!r} ({root_cause(err)})"
            ) from err

    # -- nasfw's own state: study system attrs, out of the user attrs dashboards show --------
    def _attrs(self) -> dict[str, Any]:
        """nasfw's study attrs (system attrs; user attrs of studies written before they moved)."""
        stored = self.storage.get_study_system_attrs(self.study_id)
        legacy = {k: v for k, v in self.study.user_attrs.items() if k.startswith("nasfw:")}
        return {**legacy, **stored}

    def _set(self, key: str, value: Any) -> None:
        self.fence()
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

            self.fence()
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
        told_through: int | None = None,
        simulated_seconds: dict[int, float] | None = None,
        appended: tuple[str, ...] = (),
    ) -> None:
        """Keep the tuner's ``state`` after ``generation``, which holds every stored evaluation
        up to trial number ``told_through`` (None: every one of this generation and before).

        The state, its generation and ``told_through`` are one write: a search killed at any
        moment resumes from a state that matches its generation exactly. The lists of
        ``state`` named in ``appended`` (:attr:`nasfw.Tuner.appended_state`: they only grow)
        are written by their new entries only, before that write: rewriting every entry
        after every generation made a search of n generations O(n^2) (``tuner=tpe``'s
        results told)."""
        if generation_seconds is not None:
            self._set(
                SECONDS_ATTR,
                self._series.setdefault(SECONDS_ATTR, _Series()).json(generation_seconds),
            )
        if simulated_seconds is not None:
            self._set(
                SIMULATED_ATTR,
                self._series.setdefault(SIMULATED_ATTR, _Series()).json(simulated_seconds),
            )
        lengths: dict[str, int] = {}
        for key in appended:
            entries = state.get(key)
            if not isinstance(entries, list):
                continue
            start = self._appended.get(key, 0)
            if start > len(entries):  # not the list written before: written anew
                start = 0
            if len(entries) > start:
                self._set(f"{APPENDED_ATTR}:{key}@{start}", _compact(entries[start:]))
            self._appended[key] = lengths[key] = len(entries)
        if lengths:
            state = {k: v for k, v in state.items() if k not in lengths}
        checkpoint: dict[str, Any] = {
            "generation": generation,
            "state": state,
            "told_through": told_through,
        }
        if lengths:
            checkpoint["appended"] = lengths
        self._set(CHECKPOINT_ATTR, _compact(checkpoint))

    def set_first_step_seconds(self, seconds: float) -> None:
        """Record the search's start-up time (:data:`FIRST_STEP_ATTR`)."""
        self._set(FIRST_STEP_ATTR, seconds)

    def generation_seconds(self) -> dict[int, float]:
        """Wall seconds per finished generation, as :meth:`save_state` recorded them."""
        raw = self._attrs().get(SECONDS_ATTR)
        return {int(g): float(s) for g, s in json.loads(raw).items()} if raw else {}

    def simulated_seconds(self) -> dict[int, float]:
        """Cumulative simulated training seconds per finished generation (a search by lookup;
        empty otherwise), as :meth:`save_state` recorded them."""
        raw = self._attrs().get(SIMULATED_ATTR)
        return {int(g): float(s) for g, s in json.loads(raw).items()} if raw else {}

    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        """The last generation saved and the tuner's state after it (None: a new search)."""
        checkpoint = self._checkpoint()
        return None if checkpoint is None else (checkpoint[0], checkpoint[1])

    def told_through(self) -> int | None:
        """The number of the last stored trial the saved state holds (None: not recorded, a
        study written before nasfw kept it, or a new search)."""
        checkpoint = self._checkpoint()
        return None if checkpoint is None else checkpoint[2]

    def _checkpoint(self) -> tuple[int, dict[str, Any], int | None] | None:
        attrs = self._attrs()
        if CHECKPOINT_ATTR in attrs:
            saved = json.loads(attrs[CHECKPOINT_ATTR])
            state = saved["state"]
            for key, length in saved.get("appended", {}).items():
                entries: list[Any] = []
                while len(entries) < length:
                    entries += json.loads(attrs[f"{APPENDED_ATTR}:{key}@{len(entries)}"])
                state[key] = entries[:length]
                self._appended[key] = length  # what the next save_state appends to
            return int(saved["generation"]), state, saved.get("told_through")
        if GENERATION_ATTR not in attrs:
            return None
        return int(attrs[GENERATION_ATTR]), json.loads(attrs[STATE_ATTR]), None

    # -- trials ---------------------------------------------------------------------------
    def _trial_attrs(
        self, candidate: Candidate, generation: int, index: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The user and system attrs that say which candidate a trial evaluates."""
        attrs: dict[str, Any] = {
            "generation": generation,
            "index": index,
            **architecture_attrs(candidate.graph),
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
        self.fence()
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
        self.fence()
        for trial in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        ):
            count += self.interrupt(trial._trial_id, "interrupted: the search stopped")
        return count

    def interrupt(self, trial_id: int, reason: str) -> bool:
        """Close RUNNING trial ``trial_id`` as failed and interrupted (no evaluation: not read
        back by :meth:`records`), with ``reason``; False when it had finished meanwhile."""
        try:
            self.storage.set_trial_system_attr(trial_id, INTERRUPTED_ATTR, True)
            self.storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

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
        self.fence()
        result = result.finite()
        attrs, system_attrs = self._trial_attrs(candidate, generation, index)
        attrs |= {f"{EXTRA_PREFIX}{key}": value for key, value in result.extra.items()}
        if isinstance(result.extra.get("weights"), str):
            # Listed (and served) by optuna-dashboard as the trial's artifact.
            name, meta = artifact_attr(result.extra["weights"], candidate.key)
            system_attrs[name] = meta
        for name in _RESULT_FIELDS:
            value = getattr(result, name)
            if value is not None:
                attrs[name] = value
        state = self._state(candidate, result, attrs)
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
        state = self._state(candidate, result, attrs)  # before the attrs are written
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
        storage.set_trial_state_values(trial_id, state, values)
        number = storage.get_trial_number_from_id(trial_id)
        return self._record_of(candidate, result, generation, index, number)

    def _state(
        self, candidate: Candidate, result: Result, attrs: dict[str, Any]
    ) -> optuna.trial.TrialState:
        """The trial state of ``result``: an ok evaluation that is no result is PRUNED, with
        ``attrs[NOT_A_RESULT_ATTR]`` saying why."""
        if result.status == "ok":
            record = TrialRecord(-1, 0, 0, candidate, result)
            if not record.is_result(self.full_budget or 0):
                attrs[NOT_A_RESULT_ATTR] = (
                    "the tuner's own training (not a network it proposes)"
                    if not candidate.exportable
                    else f"trained {result.trained_budget} of {self.full_budget} epochs"
                )
                return optuna.trial.TrialState.PRUNED
        return _STATES[result.status]

    @staticmethod
    def _record_of(
        candidate: Candidate, result: Result, generation: int, index: int, number: int
    ) -> TrialRecord:
        # What the study keeps of the candidate (not keep_weights, a request already served).
        stored = Candidate(
            candidate.graph,
            params=dict(candidate.params),
            distributions=dict(candidate.distributions),
            train=dict(candidate.train),
            attrs=dict(candidate.attrs),
            init_from=candidate.init_from,
            exportable=candidate.exportable,
            resume_from=candidate.resume_from,
        )
        return TrialRecord(number, generation, index, stored, result)

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
            if NOT_A_RESULT_ATTR in a:  # an ok evaluation that is no result (see _state)
                status = "ok"
            result = Result(
                status=status,
                metric=trial.value if status != "failed" else None,
                error=a.get("fail_reason"),
                extra=trial_extra(a),
                curve=dict(trial.intermediate_values),
                started=_timestamp(trial.datetime_start),
                finished=_timestamp(trial.datetime_complete),
                **{k: a[k] for k in _RESULT_FIELDS if k in a},
            )
            out.append(
                TrialRecord(
                    trial.number,
                    a["generation"],
                    a["index"],
                    Candidate(
                        ArchGraph.from_json(graph),
                        params=dict(trial.params),
                        distributions=dict(trial.distributions),
                        train=a.get("train", {}),
                        attrs=a.get("attrs", {}),
                        init_from=a.get("init_from"),
                        exportable=a.get("exportable", True),
                        resume_from=a.get("resume_from"),
                    ),
                    result,
                )
            )
        return out


def _no_fence() -> None:
    """No lease to check (a ledger read, or written by a job that holds none)."""


def _timestamp(moment: datetime.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None
