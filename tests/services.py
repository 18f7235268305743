"""Real services for the cluster tests, through ``scripts/services.py``.

``running("slurm")`` starts the service in a fresh state directory, yields what the script
printed (``url``, ``SLURM_CONF``, ...) and stops it afterwards. When it cannot start (not root,
no apt, a daemon that fails), the tests that need it are skipped with the script's reason, or
fail with it for a service the project installs itself (``required``: Ray, a dev dependency).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "services.py"


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def running(service: str, required: bool = False) -> Iterator[dict[str, str]]:
    """``required``: a service that cannot start fails the tests that need it (loudly, in CI)
    instead of skipping them."""
    # Not under pytest's tmp_path: that is mode 0700, and the daemons run as other users.
    root = Path(tempfile.mkdtemp(prefix=f"nasfw-{service}-", dir="/tmp"))
    started = time.monotonic()
    out = _script("start", service, "--dir", str(root))
    if out.returncode != 0:
        reason = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no reason given"
        if required:
            pytest.fail(f"{service} could not start: {out.stderr.strip()[-2000:]}")
        print(f"\n{service} could not start, skipping its tests: {reason}", file=sys.stderr)
        pytest.skip(f"{service} could not start: {reason}")
    info = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    info["dir"] = str(root)
    info["start_seconds"] = f"{time.monotonic() - started:.1f}"
    try:
        yield info
    finally:
        _script("stop", service, "--dir", str(root), timeout=120)
