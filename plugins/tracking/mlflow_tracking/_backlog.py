"""MLflow calls off the search's critical path: one thread per search runs them, in the order
the hooks queued them.

Why: a hook that talks to MLflow holds the search loop while it does, and the workers then sit
idle (a generation's figures alone took ~1.4 s on a 2-core machine, before the next generation
could start; issue #16's profile, ``benchmarks/overhead.py``). The hooks now read what they
need from the search at once (so later changes to it do not leak in) and queue the logging.

Nothing is lost: :meth:`Backlog.close` (the search's end, a failed or interrupted one included)
waits until everything queued was sent. A process killed outright loses what was still queued,
which is what a kill between the study's write and MLflow's always lost: the next resume logs
what the study holds and the run does not (``_catch_up``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ._runs import guard

_log = logging.getLogger("nasfw.plugins.tracking.mlflow_tracking")


class Backlog:
    """A FIFO of MLflow calls run by one daemon thread.

    Each job runs under :func:`._runs.guard` (a failure is a warning, and after
    ``MAX_FAILURES`` in a row tracking turns itself off, as when the hooks logged directly).
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self._jobs: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="nasfw-mlflow", daemon=True)
        self._thread.start()

    def submit(self, what: str, job: Callable[[], None]) -> None:
        """Queue ``job`` (``what`` names it in a warning if it fails)."""
        self._jobs.put((what, job))

    def wait(self) -> None:
        """Return once every job queued so far has run."""
        self._jobs.join()

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                what, job = item
                if self._state.get("off"):
                    continue  # tracking gave up: what is left is dropped, as the hooks would
                with guard(self._state, what):
                    job()
            except BaseException:  # never let the thread die with jobs behind it
                _log.exception("MLflow tracking: a queued job crashed")
            finally:
                self._jobs.task_done()
