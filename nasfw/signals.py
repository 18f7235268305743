"""The signals that stop a search: Ctrl-C (SIGINT) and SIGTERM (what ``scancel``, a scheduler's
time limit, Kubernetes and systemd send).

The driver alone decides what a stop means. Both signals take the path of Ctrl-C: a
:class:`KeyboardInterrupt` (:class:`Terminated` for SIGTERM) raised in the driver's main
thread, which the CLI turns into one line and exit code 130 (143 for SIGTERM). The rules that
make that hold at any moment from the process start to its exit:

- :func:`install` in the driver, as early as it can run. Until the CLI can take an interrupt
  (``deliver=False``, while modules import), a signal is only noted, and :func:`check` raises
  it once the CLI can.
- One exception per stop: a signal arriving while an interrupt is on its way up is noted, not
  raised again inside the clean-up (ending the trackers' runs, stopping the workers).
- An interrupt swallowed where Python cannot raise it (a ``__del__`` or a weakref callback:
  Python prints "Exception ignored" and goes on) is delivered again, and :func:`check`
  (called between generations) raises one that library code caught.
- Local worker processes never act on them: they are started with both signals blocked
  (:func:`blocked`), and :func:`nasfw.init_worker_process` ignores SIGINT, and SIGTERM unless
  their driver sends it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: The signals that stop a search.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises :class:`KeyboardInterrupt` and handled the same way
    (every ``except KeyboardInterrupt`` takes it)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args or ("SIGTERM",))


_received: int | None = None  # the first stop signal, if any
_raised = False  # its exception is on its way up (or was swallowed: see _unraisable)
_deliver = True  # False while the CLI cannot take an interrupt yet (imports)
_in_hook = False
_previous_hook: Any = None


def received() -> int | None:
    """The first stop signal this process received (``signal.SIGINT`` or ``SIGTERM``), if any."""
    return _received


def exit_code() -> int:
    """The exit code of a stopped search: 128 + the signal (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(_received if _received is not None else signal.SIGINT)


def install(deliver: bool = True) -> None:
    """Handle SIGINT and SIGTERM in this (the main) thread as described above.

    ``deliver=False`` notes a signal without raising (until :func:`install` again and
    :func:`check`). An inherited ignored SIGINT (``nohup``, a shell's background job) stays
    ignored. Idempotent; does nothing outside the main thread.
    """
    global _deliver, _previous_hook
    if threading.current_thread() is not threading.main_thread():
        return
    _deliver = deliver
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal or (signum == signal.SIGINT and current == signal.SIG_IGN):
            continue
        signal.signal(signum, _on_signal)
    if sys.unraisablehook is not _unraisable:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable


def check() -> None:
    """Raise the stop a signal asked for, if one came and its exception was not seen through.

    For the places where nothing is on its way up (the CLI's start, between generations)."""
    global _raised
    if _received is not None:
        _raised = True
        raise _exception(_received)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Block the stop signals in this thread while starting processes in it: the children
    start with them blocked, so a Ctrl-C to the process group during their start-up reaches
    only the driver (here it waits until the block ends). Children call
    :func:`nasfw.init_worker_process`, which takes them from there."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled in the main thread only; nothing to hold back here
        return
    # multiprocessing starts its resource tracker with the first spawned process and then
    # unblocks these signals in the starting thread: start it before the block.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, frame: object) -> None:
    global _received, _raised
    if _received is None:
        _received = signum
    if _raised or not _deliver:
        return  # one stop at a time; before the CLI can take it, check() raises it
    if _in_hook:
        _redeliver()
        return
    _raised = True
    raise _exception(_received)


def _redeliver() -> None:
    """Raise the stop again soon, from outside the code that swallowed it."""
    import os

    # To the process, not a thread: a thread may hold the signal blocked (see blocked()).
    timer = threading.Timer(0.05, os.kill, (os.getpid(), _received))
    timer.daemon = True
    timer.start()


def _unraisable(unraisable: Any) -> None:
    """An interrupt raised in a ``__del__`` or a callback is not lost: it comes again."""
    global _raised, _in_hook
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received is not None:
        _raised, _in_hook = False, True
        try:
            _redeliver()
        finally:
            _in_hook = False
        return
    (_previous_hook or sys.__unraisablehook__)(unraisable)
