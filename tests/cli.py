"""Running ``python -m nasfw`` as a user does, for the CLI tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna

# Small and fast: iris with MLPs, one epoch, evaluations in the driver.
TINY = [
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=random",
    "tuner.n_trials=2",
    "tuner.batch_size=2",
    "train.epochs=1",
    "launcher.workers=0",
    "tracking=none",
]


def nasfw(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasfw", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    from nasfw.ledger import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials()


def compose(*overrides: str) -> Any:
    """The run's config as ``python -m nasfw <overrides>`` composes it, in this process."""
    from nasfw.compose import compose as compose_config

    return compose_config(*overrides)


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc; zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start(cwd: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """``python -m nasfw`` started in the background, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "nasfw", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C must reach it even when the tests run as a shell's background job, which
        # ignores SIGINT (and Python keeps an ignored SIGINT ignored).
        preexec_fn=_default_sigint,
        **popen,
    )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_trials(url: str, study: str, count: int, proc: subprocess.Popen[str]) -> int:
    """Poll the study until it has ``count`` trials (or the search ended); return how many."""
    import time

    deadline = time.monotonic() + 240
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = len(trials(url, study))
        except KeyError:  # the study does not exist yet
            seen = 0
        if seen >= count:
            break
        time.sleep(0.1)
    return seen


def install_plugin(
    site: Path, distribution: str, version: str, modules: dict[str, str], entry_points: str
) -> dict[str, str]:
    """A plugin distribution installed into ``site`` as pip lays one out (the modules, and a
    ``.dist-info`` with its metadata and ``entry_points.txt``); returns the environment that
    puts ``site`` on the path of a :func:`nasfw` run."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(f"[nasfw]\n{entry_points}\n")
    return {"PYTHONPATH": str(site)}


def help_groups(text: str) -> dict[str, set[str]]:
    """The ``group: a, b, c`` lines of ``--help``'s "Configuration groups" section."""
    section = text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return {
        m[1]: {o.strip() for o in m[2].split(",")}
        for m in re.finditer(r"^(\w+): (.*)$", section, re.MULTILINE)
    }
