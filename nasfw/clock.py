"""When this process started, or this search: the origin of the search's start-up time."""

from __future__ import annotations

import os
import time

# When nasfw's command line began, where /proc cannot tell: taken when this module is first
# imported (by nasfw.cli, as early as it can, after the standard library's few imports).
STARTED = time.time()


def process_started() -> float:
    """When this process started, in seconds since the epoch: from ``/proc`` where there is one
    (Linux; the interpreter's own start-up included), else :data:`STARTED`
    (``python -m nasfw``'s start, less Python's start-up and ``import nasfw``)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22, the start in clock ticks after boot, counted after the ")" that ends
            # field 2 (the command, which may hold spaces).
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            since_boot = float(uptime.read().split()[0])
        return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return STARTED


_searches_begun = 0


def search_began() -> float:
    """The origin of the start-up time of a search beginning now, in seconds since the epoch:
    the process's start (:func:`process_started`) for its first search, now for the later
    ones (the jobs of a Hydra multirun run one after another in one process: the second
    search's start-up does not include the first search)."""
    global _searches_begun
    _searches_begun += 1
    return process_started() if _searches_begun == 1 else time.time()
