"""What a cluster job runs per candidate (:class:`StoredEvaluation`): evaluate, then write the
trial into the study from the job itself, so a result is in the study when its job ends even if
the driver is gone (``Launcher.workers_write_trials``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from nasfw.ledger import Ledger
from nasfw.pruning import TrialReporter
from nasfw.records import Candidate, Result, StoredResult


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
    # train.epochs: what an evaluation needs to be stored as a result (Ledger.full_budget).
    full_budget: int | None = None

    def key(self, task: tuple[int, Candidate]) -> str:
        """A stable name of this evaluation, for launchers that re-attach to running jobs."""
        index, candidate = task
        return f"{self.study_name}:{self.generation}:{index}:{candidate.graph.hash}"

    def __call__(self, task: tuple[int, Candidate]) -> Result:
        index, candidate = task
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per job opening it
        ledger: Ledger | None = None
        try:
            ledger = Ledger(self.url, self.study_name, full_budget=self.full_budget)
            done = ledger.find(self.generation, index)
            if done is not None and done.graph.hash == candidate.graph.hash:
                return StoredResult.of(done.result, done.number)
        except Exception as err:
            print(
                f"nasfw: cannot read {self.url} from this job ({err}); the driver writes",
                file=sys.stderr,
            )
        trial_id, reporter = None, None
        if ledger is not None and self.pruner is not None:
            try:
                trial_id = ledger.start(candidate, self.generation, index)
                reporter = TrialReporter(ledger, trial_id, self.pruner)
            except Exception as err:
                print(f"nasfw: the pruner cannot follow this job ({err})", file=sys.stderr)
        try:
            result = self.evaluate(candidate, reporter) if reporter else self.evaluate(candidate)
        except KeyboardInterrupt:  # the job was stopped (nasfw.ClusterJob: SIGTERM)
            if ledger is not None and trial_id is not None:
                with contextlib.suppress(Exception):
                    ledger.interrupt(trial_id, "interrupted: its job was stopped (SIGTERM)")
            raise
        if ledger is None:
            return result
        try:
            record = ledger.record(candidate, result, self.generation, index, trial_id)
            return StoredResult.of(record.result, record.number)
        except Exception as err:
            print(
                f"nasfw: cannot write to {self.url} from this job ({err}); the driver writes",
                file=sys.stderr,
            )
            return result
