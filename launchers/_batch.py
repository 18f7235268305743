"""What the batch-scheduler launchers (SLURM, LSF) share: submit, poll, retry, re-attach.

A generation's evaluations go to the scheduler as one job array through a submitit executor
(which pickles ``fn`` and each item into the job folder and runs them on the node). The
launcher then polls the scheduler with one status command per round and reads each job's
result pickle. A job the scheduler ended (cancelled, timed out, node failure, preempted: the
``retry_states``) is resubmitted up to ``max_retries`` times, then it is a failed result with
the scheduler's reason. Every submission is appended to ``<folder>/jobs.jsonl`` under the
evaluation's stable key (``fn.key(item)``, see :class:`nasfw.job.StoredEvaluation`), so a
restarted driver re-attaches to jobs still queued or running instead of submitting them again.
A driver that stops (killed, Ctrl-C) leaves its jobs running for that reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nasfw import (
    ClusterJob,
    Launcher,
    LauncherConfig,
    MapResults,
    Result,
    check_writable,
    setting,
    usable_cpus,
)

log = logging.getLogger(__name__)

# A job the scheduler no longer knows of (no queue entry, no accounting record, no result) for
# this long left the queue unseen, e.g. a pending array task cancelled before it ever started.
VANISHED_AFTER_S = 10.0
# A scheduler whose status command fails this long fails the evaluations still waiting.
STATUS_TIMEOUT_S = 600.0
# A job the scheduler calls finished gets this long for its result file to show up.
RESULT_GRACE_S = 30.0


@dataclass
class BatchLauncherConfig(LauncherConfig):
    """Settings every batch-scheduler launcher has."""

    # Job scripts, pickles, logs and the record of submitted jobs (jobs.jsonl). It must be on a
    # file system the compute nodes share, and stay the same across a driver's restart.
    folder: str = "nasfw-jobs"
    # Wall-clock limit of one evaluation's job, in minutes.
    time_min: int = setting(60, ge=1)
    # CPU cores per evaluation (also its torch threads).
    cpus_per_task: int = setting(1, ge=1)
    # Memory per evaluation in GB (None: the scheduler's default).
    mem_gb: float | None = setting(None, gt=0)
    # GPUs per evaluation.
    gpus_per_task: int = setting(0, ge=0)
    # At most this many evaluations of a job array run at once.
    array_parallelism: int = setting(64, ge=1)
    # Resubmissions of a job the scheduler ended (see retry_states) before it is a failed trial.
    max_retries: int = setting(2, ge=0)
    # Shell lines run in the job before the evaluation (e.g. ["module load cuda/12.1"]).
    setup: list[str] = field(default_factory=list)
    # Seconds between two status polls of the scheduler.
    poll_interval_s: float = setting(5.0, gt=0)
    # Job name shown by the scheduler.
    job_name: str = "nasfw"
    # Python in the jobs (None: the driver's interpreter, which must exist on the nodes too).
    python: str | None = None


class JobState(NamedTuple):
    """One job as the scheduler reports it: its state word and a readable reason."""

    state: str
    reason: str


@dataclass
class _Entry:
    job: str | None = None  # the job of the last submission, while it has no known outcome
    failures: list[str] = field(default_factory=list)


class _Journal:
    """``jobs.jsonl``: one line per submission and per scheduler failure, by evaluation key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, _Entry]:
        entries: dict[str, _Entry] = {}
        if not self.path.is_file():
            return entries
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(line)
                entry = entries.setdefault(event["key"], _Entry())
                if event["event"] == "submitted":
                    entry.job = event["job"]
                elif event["event"] == "failed":
                    entry.failures.append(event["reason"])
                    if entry.job == event["job"]:
                        entry.job = None
        return entries

    def add(self, key: str | None, event: str, job: str, reason: str = "") -> None:
        if key is None:
            return
        line = json.dumps({"key": key, "event": event, "job": job, "reason": reason})
        with self.path.open("a") as f:  # one short append per line: safe for several drivers
            f.write(line + "\n")


class BatchLauncher(Launcher[Any]):
    """Base of the SLURM and LSF launchers; a subclass names its scheduler's commands."""

    workers_write_trials = True
    #: The scheduler's name in messages ("SLURM").
    scheduler = "batch"
    #: States after which the job has a result file (or it failed without one).
    done_states: frozenset[str] = frozenset()
    #: States of jobs that are queued or running.
    active_states: frozenset[str] = frozenset()
    #: States the scheduler gives jobs it ended itself: resubmitted up to max_retries times.
    retry_states: frozenset[str] = frozenset()
    config_class: type[BatchLauncherConfig] = BatchLauncherConfig

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            from omegaconf import OmegaConf

            config = OmegaConf.to_object(
                OmegaConf.merge(OmegaConf.structured(self.config_class), config)
            )
        super().__init__(config)
        self.config: BatchLauncherConfig
        self.folder = Path(self.config.folder).expanduser().resolve()
        # Made when the first jobs are submitted: a search refused at setup leaves no folder.
        check_writable(self.folder, "launcher.folder")
        self._journal = _Journal(self.folder / "jobs.jsonl")
        self._executor: Any = None

    # -- what a scheduler provides --------------------------------------------------------
    def _make_executor(self) -> Any:
        """A configured submitit executor whose ``map_array`` submits one job array."""
        raise NotImplementedError

    def _result_path(self, job_id: str) -> Path:
        """Where submitit's job ``job_id`` leaves its ``(outcome, value)`` pickle."""
        raise NotImplementedError

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobState] | None:
        """The states of ``job_ids`` it knows, or None when the scheduler did not answer."""
        raise NotImplementedError

    def _cancel(self, job_ids: Sequence[str]) -> None:
        raise NotImplementedError

    def check_device(self, spec: str) -> None:
        """Jobs train on the nodes, not here: only check that a CUDA job gets a GPU."""
        from nasfw import ConfigError

        if spec.startswith("cuda") and self.config.gpus_per_task < 1:
            raise ConfigError(
                f"train.device={spec!r} needs launcher.gpus_per_task >= 1: a job is given no "
                "GPU otherwise (train.device=auto trains on the GPU a job gets, if any)"
            )

    @property
    def workers(self) -> int:
        # The search gives each evaluation usable_cpus // workers torch threads: cpus_per_task.
        return max(1, usable_cpus() // self.config.cpus_per_task)

    # -- map --------------------------------------------------------------------------------
    def map(
        self,
        fn: Callable[[Any], Result],
        items: Sequence[Any],
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]:
        results = MapResults(len(items), on_result)
        deliver = results.deliver
        self.folder.mkdir(parents=True, exist_ok=True)
        key_of = getattr(fn, "key", None)
        keys: list[str | None] = [key_of(item) if key_of else None for item in items]
        known = self._journal.load() if key_of else {}
        failures: dict[int, list[str]] = {i: [] for i in range(len(items))}
        running: dict[int, str] = {}  # item index -> job id
        waiting_since: dict[str, float] = {}

        def give_up(index: int) -> None:
            reasons = failures[index]
            earlier = f"; earlier attempts: {'; '.join(reasons[:-1])}" if len(reasons) > 1 else ""
            deliver(index, Result.failed(f"{reasons[-1]} (attempt {len(reasons)}{earlier})"))

        to_submit: list[int] = []
        for index, key in enumerate(keys):
            entry = known.get(key) if key is not None else None
            if entry is None:
                to_submit.append(index)
                continue
            failures[index] = list(entry.failures)
            if entry.job is not None:
                running[index] = entry.job  # re-attach: wait for it, never submit it again
                log.info("re-attached to %s job %s (%s)", self.scheduler, entry.job, key)
            elif len(failures[index]) <= self.config.max_retries:
                to_submit.append(index)
            else:
                give_up(index)
        self._submit(fn, items, keys, to_submit, running, failures, give_up)

        answered = time.monotonic()
        while running:
            try:
                states = self._poll(sorted(set(running.values())))
            except (OSError, subprocess.SubprocessError) as err:
                log.warning("%s status command failed: %s", self.scheduler, err)
                states = None
            if states is not None:
                answered = time.monotonic()
            elif time.monotonic() - answered > STATUS_TIMEOUT_S:
                for index, job_id in sorted(running.items()):
                    failures[index].append(
                        f"{self.scheduler} job {job_id}: no answer from the scheduler's status "
                        f"command for {STATUS_TIMEOUT_S:.0f} s"
                    )
                    give_up(index)
                return results.in_order()
            retry: list[int] = []
            for index, job_id in sorted(running.items()):
                if states is None:  # no answer this round: only result files tell anything
                    outcome = self._outcome(job_id, JobState("UNKNOWN", ""), waiting_since)
                else:
                    outcome = self._outcome(job_id, states.get(job_id), waiting_since)
                if outcome is None:
                    continue
                del running[index]
                if isinstance(outcome, Result):
                    if failures[index]:
                        log.warning("%s succeeded after %s", job_id, "; ".join(failures[index]))
                    deliver(index, outcome)
                    continue
                failures[index].append(outcome)
                self._journal.add(keys[index], "failed", job_id, outcome)
                if len(failures[index]) <= self.config.max_retries:
                    log.warning("%s; resubmitting", outcome)
                    with contextlib.suppress(Exception):  # a preempted job might be requeued
                        self._cancel([job_id])
                    retry.append(index)
                else:
                    give_up(index)
            if retry:
                self._submit(fn, items, keys, retry, running, failures, give_up)
            if running:
                time.sleep(self.config.poll_interval_s)
        return results.in_order()

    def _submit(
        self,
        fn: Callable[[Any], Result],
        items: Sequence[Any],
        keys: Sequence[str | None],
        indices: list[int],
        running: dict[int, str],
        failures: dict[int, list[str]],
        give_up: Callable[[int], None],
    ) -> None:
        """Submit ``items[i]`` for ``i`` in ``indices`` as one job array."""
        while indices:
            try:
                if self._executor is None:
                    self._executor = self._make_executor()
                jobs = self._executor.map_array(ClusterJob(fn), [items[i] for i in indices])
            except Exception as err:
                reason = f"{self.scheduler} submission failed: {type(err).__name__}: {err}"
                reason = reason.strip().splitlines()[0][:500]
                log.warning(reason)
                again = []
                for index in indices:
                    failures[index].append(reason)
                    if len(failures[index]) <= self.config.max_retries:
                        again.append(index)
                    else:
                        give_up(index)
                indices = again
                if indices:
                    time.sleep(self.config.poll_interval_s)
                continue
            for index, job in zip(indices, jobs, strict=True):
                running[index] = str(job.job_id)
                self._journal.add(keys[index], "submitted", str(job.job_id))
            return

    def _outcome(
        self, job_id: str, state: JobState | None, waiting_since: dict[str, float]
    ) -> Result | str | None:
        """A Result when the job is over, a reason to retry it, or None while it runs."""
        from submitit.core.utils import pickle_load

        path = self._result_path(job_id)
        if path.exists():
            try:
                outcome, value = pickle_load(path)
            except (EOFError, OSError):
                return None  # still being written
            if outcome == "success":
                if isinstance(value, Result):
                    return value
                return Result.failed(f"returned {type(value).__name__}, not a Result")
            lines = [line for line in str(value).splitlines() if line.strip()]
            return Result.failed(lines[-1].strip() if lines else "raised an exception")
        now = time.monotonic()
        if state is None:
            since = waiting_since.setdefault(job_id, now)
            if now - since < VANISHED_AFTER_S:
                return None
            return (
                f"{self.scheduler} job {job_id} left the queue without a result or an "
                "accounting record (cancelled before it started?)"
            )
        if state.state in self.done_states:
            since = waiting_since.setdefault(job_id, now)  # the result file may lag a little
            if now - since < RESULT_GRACE_S:
                return None
            return Result.failed(f"{self.scheduler} job {job_id} {state.reason}, left no result")
        if state.state == "UNKNOWN" or state.state in self.active_states:
            waiting_since.pop(job_id, None)
            return None
        waiting_since.pop(job_id, None)
        reason = f"{self.scheduler} job {job_id} {state.reason}"
        if state.state in self.retry_states:
            return reason
        return Result.failed(f"{reason}{self._log_tail(job_id)}")

    def _log_tail(self, job_id: str) -> str:
        """The last lines of the job's stderr, for the failure reason."""
        try:
            err = self._result_path(job_id).with_name(f"{job_id}_0_log.err").read_text()
        except OSError:
            return ""
        tail = " | ".join(line.strip() for line in err.strip().splitlines()[-3:])
        return f"; stderr: {tail[-400:]}" if tail else ""
