"""Start-up (issue #16): loading the plugins, ``--help`` and ``--cfg job`` import nothing heavy,
and evaluations say when their training began, from which a search reports the seconds from
its process's start to its first training step (printed and stored: tests/test_cli.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cli import TINY, nasfw

from nasfw import ArchGraph, Candidate, Node

# What registering every plugin and composing the config must not import: each costs from a
# tenth of a second (optuna, sqlalchemy) to seconds (torch) at every `python -m nasfw`. numpy
# (nasfw.problem), omegaconf, hydra and pluggy are what composing the config needs.
HEAVY = ("torch", "optuna", "mlflow", "sklearn", "scipy", "matplotlib", "pandas", "sqlalchemy")

REPORT_HEAVY = f"""
import sys
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def _heavy_modules(stderr: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def test_registering_the_plugins_imports_nothing_heavy():
    code = (
        "import nasfw.cli\n"
        "from nasfw.registry import registry\n"
        "reg = registry()\n"
        "assert reg.tuners and reg.ops and reg.problems and reg.launchers\n"
    ) + REPORT_HEAVY
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _heavy_modules(proc.stderr) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--help"], "tuner: codeepneat, evolution"), (["--cfg", "job"], "study_name:")],
)
def test_help_and_cfg_job_import_nothing_heavy(tmp_path, args, expected):
    """What ``python -m nasfw`` runs, with ``sys.modules`` looked at when Hydra has exited."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['nasfw', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('nasfw', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
    ) + REPORT_HEAVY
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert _heavy_modules(proc.stderr) == []


def test_copies_of_hydras_config_repository_share_the_config_store():
    """nasfw.cli._share_config_store: Hydra's deep copies of a structured config source (one per
    config-group listing) read the one ConfigStore instead of copying it."""
    code = """
import copy
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.config_store import ConfigStore
from nasfw.cli import _share_config_store
_share_config_store()
_share_config_store()  # twice is once
source = SourcesRegistry.instance().resolve("structured")("nasfw", "structured://")
clone = copy.deepcopy(source)
assert clone is not source and (clone.provider, clone.path) == (source.provider, source.path)
assert clone.store is source.store is ConfigStore.instance()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_process_started_is_when_the_process_started():
    from nasfw.clock import process_started

    assert process_started() <= time.time()
    code = "from nasfw.clock import process_started; print(process_started())"
    before = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    after = time.time()
    assert proc.returncode == 0, proc.stderr
    # The child started between its launch and its exit (/proc counts in 10 ms ticks).
    assert before - 0.05 <= float(proc.stdout) <= after


def test_an_evaluation_reports_when_its_training_began(evaluator):
    graph = ArchGraph([Node("h", "dense", {"units": 4})], output="h")
    result = evaluator(Candidate(graph))
    assert result.ok and result.started <= result.first_step <= result.finished
    # A timing, like started and finished: not part of what makes two results equal.
    assert replace(result, first_step=0.0) == result
    # Too large to train: no first step (not the previous evaluation's).
    evaluator.max_params = 1
    too_large = evaluator(Candidate(graph))
    assert too_large.status == "failed" and too_large.first_step is None


# The CLI, with the study's opening (nasfw.ledger.Ledger) reporting how many worker processes
# are alive at that moment.
WORKERS_AT_THE_STUDY = """
import multiprocessing, runpy, sys
import nasfw.prepare
opening = nasfw.prepare.Ledger
def report(*args, **kwargs):
    print(f"WORKERS={len(multiprocessing.active_children())}", file=sys.stderr, flush=True)
    return opening(*args, **kwargs)
nasfw.prepare.Ledger = report
sys.argv = ['nasfw', *sys.argv[1:]]
runpy.run_module('nasfw', run_name='__main__', alter_sys=True)
"""


def test_the_workers_start_while_the_driver_opens_the_study(tmp_path):
    """The workers' start (torch's import, the problem's data: seconds each) overlaps the
    driver's own setup: they are running by the time the study is opened, not started after."""
    args = [arg for arg in TINY if not arg.startswith("launcher.")] + ["launcher.workers=2"]
    proc = subprocess.run(
        [sys.executable, "-c", WORKERS_AT_THE_STUDY, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WORKERS=2" in proc.stderr.splitlines(), proc.stderr[-2000:]


def _processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cwd").resolve() == folder.resolve():
                    found.append(int(entry.name))
    return found


def test_a_config_refused_after_the_workers_started_leaves_none_running(tmp_path):
    """A refusal that comes after the workers' start (an export folder nasfw cannot write in,
    checked before the study exists) exits 2 naming the key, and stops the starting workers
    instead of leaving them behind or waiting for them."""
    args = [arg for arg in TINY if not arg.startswith("launcher.")]
    proc = nasfw(tmp_path, *args, "launcher.workers=2", "export_dir=/proc/x")
    assert proc.returncode == 2, proc.stderr
    assert "export_dir: cannot write in /proc/x" in proc.stderr
    assert not (tmp_path / "nasfw.db").exists()
    deadline = time.monotonic() + 10
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(tmp_path) == []
