"""The LSF launcher through its script layer: no LSF runs here.

The job scripts and command lines are checked against IBM Spectrum LSF 10.1's documented
syntax; the launcher contract and a search run against ``fake_lsf/`` (a stand-in for bsub,
bjobs and bkill that refuses what LSF's syntax does not allow and runs elements locally).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from nasfw import ConfigError
from nasfw.launchers.lsf import (
    LsfLauncher,
    LsfLauncherConfig,
    lsf_id,
    make_bsub_script,
    parse_bjobs,
)
from nasfw.testing import LauncherContract, die_on_three, square

FAKE_LSF = Path(__file__).parent / "fake_lsf"

# LSF 10.1 bsub(1): the forms of the options the launcher writes.
DOCUMENTED = {
    "J": r'"?[A-Za-z0-9_.\-]+\[1-\d+\](%\d+)?"?',  # job array: name[1-N]%max_running
    "W": r"(\d+:)?\d+",  # [hour:]minute
    "n": r"\d+",  # slots
    "R": r'"(span\[hosts=1\]|rusage\[mem=\d+MB\])"',
    "M": r"\d+(KB|MB|GB|TB)",  # memory limit with its unit
    "gpu": r'"num=\d+"',
    "q": r"\S+",
    "o": r"\S*%J_%I\S*",  # %J job id, %I array index
    "e": r"\S*%J_%I\S*",
    "P": r"\S+",
}


def directives(script: str) -> list[tuple[str, str]]:
    out = []
    for line in script.splitlines():
        if line.startswith("#BSUB"):
            option, _, value = line[len("#BSUB -") :].partition(" ")
            out.append((option, value))
    return out


def test_script_follows_bsub_syntax(tmp_path):
    script = make_bsub_script(
        "/venv/bin/python -u -m submitit.core._submit /jobs/%j",
        tmp_path,
        5,
        job_name="nasfw",
        queue="normal",
        time_min=90,
        cpus_per_task=4,
        mem_gb=4,
        gpus_per_task=1,
        array_parallelism=2,
        setup=["module load cuda/12.1"],
        bsub_options={"P": "myproject"},
    )
    assert script.startswith("#!/bin/bash\n")
    found = directives(script)
    for option, value in found:
        assert option in DOCUMENTED, option
        assert re.fullmatch(DOCUMENTED[option], value), (option, value)
    values = dict(found)
    assert values["J"] == '"nasfw[1-5]%2"'
    assert values["W"] == "1:30"
    assert values["n"] == "4" and values["q"] == "normal" and values["P"] == "myproject"
    assert values["M"] == "4096MB" and values["gpu"] == '"num=1"'
    assert ("R", '"span[hosts=1]"') in found and ("R", '"rusage[mem=4096MB]"') in found
    body = script.split("# setup\n", 1)[1]
    assert body.index("module load cuda/12.1") < body.index("submitit.core._submit")
    assert "export SUBMITIT_EXECUTOR=lsf" in body
    # Directives must all come before the first command (bsub stops reading at it).
    lines = script.splitlines()[1:]
    first_command = next(i for i, line in enumerate(lines) if line and line[0] != "#")
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#BSUB"))


def test_parallelism_is_capped_by_array_size(tmp_path):
    values = dict(directives(make_bsub_script("true", tmp_path, 3, array_parallelism=64)))
    assert values["J"] == '"nasfw[1-3]%3"' and values["W"] == "1:00" and "M" not in values


def test_bjobs_output_and_ids():
    text = (
        "1001|1|DONE|-|-\n"
        "1001|2|EXIT|137|TERM_OWNER: job killed by owner\n"
        "1001|3|RUN|-|-\n"
        "1002|0|PEND|-|-\n"
    )
    states = parse_bjobs(text)
    assert states["1001_1"].state == "DONE"
    assert states["1001_2"].state == "EXIT" and "TERM_OWNER" in states["1001_2"].reason
    assert states["1001_2"].reason.startswith("EXIT, exit code 137")
    assert states["1001_3"].state == "RUN" and states["1002"].state == "PEND"
    assert lsf_id("1001_2") == "1001[2]" and lsf_id("1002") == "1002"


@pytest.fixture
def fake_lsf(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{FAKE_LSF}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LSF_DIR", str(tmp_path / "lsf-state"))
    return tmp_path / "lsf-state"


@pytest.fixture
def make_launcher(fake_lsf, tmp_path):
    def make(**overrides):
        return LsfLauncher(
            LsfLauncherConfig(folder=str(tmp_path / "jobs"), poll_interval_s=0.2, **overrides)
        )

    return make


def test_command_lines(make_launcher, monkeypatch):
    calls: list[tuple[list[str], str | None]] = []
    real_run = subprocess.run

    def recording_run(cmd, *args, **kwargs):
        stdin = kwargs.get("stdin")
        calls.append((list(cmd), stdin.read() if stdin is not None else None))
        if stdin is not None:
            stdin.seek(0)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    launcher = make_launcher(queue="normal")
    assert [r.metric for r in launcher.map(square, [2, 3])] == [4.0, 9.0]
    submit = [c for c in calls if c[0][0] == "bsub"]
    assert len(submit) == 1 and submit[0][0] == ["bsub"]  # bsub < script: one array
    assert '#BSUB -J "nasfw[1-2]%2"' in (submit[0][1] or "")
    poll = next(c[0] for c in calls if c[0][0] == "bjobs")
    assert poll[:4] == ["bjobs", "-a", "-noheader", "-o"]
    assert poll[4] == "jobid jobindex stat exit_code exit_reason delimiter='|'"
    assert re.fullmatch(r"\d+", poll[5])
    launcher._cancel(["1001_2", "1002_1"])
    assert calls[-1][0] == ["bkill", "1001[2]", "1002[1]"]


class TestLsfContract(LauncherContract):
    retries_lost = True

    @pytest.fixture
    def launcher(self, make_launcher):
        return make_launcher()

    def interrupt(self, where):
        job = f"{where['LSB_JOBID']}[{where['LSB_JOBINDEX']}]"
        subprocess.run(["bkill", job], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{where['pid']}") and time.monotonic() < deadline:
            time.sleep(0.05)


def test_dead_job_fails_without_retry(make_launcher):
    results = make_launcher().map(die_on_three, [1, 3])
    assert [r.ok for r in results] == [True, False]
    assert "EXIT, exit code 13" in (results[1].error or "")


def test_killed_job_stays_failed_after_max_retries(make_launcher, tmp_path):
    import json
    import threading

    from nasfw.testing import hold

    launcher = make_launcher(max_retries=0)
    out = []
    t = threading.Thread(target=lambda: out.append(launcher.map(hold, [(str(tmp_path), 0)])))
    t.start()
    while not (tmp_path / "started-0").exists():
        time.sleep(0.05)
    where = json.loads((tmp_path / "started-0").read_text())
    TestLsfContract().interrupt(where)
    (tmp_path / "release").touch()
    t.join(60)
    [result] = out[0]
    assert not result.ok
    assert "LSF job" in (result.error or "") and "TERM_OWNER" in (result.error or "")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"bsub_options": {"W": "10"}}, "launcher.bsub_options.W"),
        ({"retry_reasons": ["TERM_NOPE"]}, "launcher.retry_reasons"),
        ({"cpus_per_task": 0}, "launcher.cpus_per_task"),
        ({"mem_gb": -1.0}, "launcher.mem_gb"),
    ],
)
def test_bad_settings_fail_before_any_submission(make_launcher, fake_lsf, overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        make_launcher(**overrides)
    assert not (fake_lsf / "jobs").exists()


def test_without_lsf_commands_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="bsub"):
        LsfLauncher(LsfLauncherConfig(folder=str(tmp_path / "jobs")))


# Long (a whole search through the fake LSF, ~30 s; LauncherContract covers the launcher):
# pytest -m slow runs it.
@pytest.mark.slow
def test_search_with_launcher_lsf(fake_lsf, tmp_path):
    import optuna
    from cli import nasfw, trials

    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(
        tmp_path,
        "problem=iris",
        "search_space=tabular_mlp",
        "tuner=random",
        "tuner.n_trials=4",
        "tuner.batch_size=2",
        "train.epochs=1",
        "tracking=none",
        "launcher=lsf",
        "launcher.queue=normal",
        "launcher.poll_interval_s=0.2",
        f"launcher.folder={tmp_path}/jobs",
        f"storage.url={url}",
    )
    assert out.returncode == 0, out.stderr
    stored = trials(url, "random-iris-tabular_mlp-seed0")
    keys = sorted((t.user_attrs["generation"], t.user_attrs["index"]) for t in stored)
    assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    arrays = sorted(p.name for p in (fake_lsf / "jobs").iterdir())
    assert len(arrays) == 2  # one bsub (job array) per generation
    for array in arrays:
        script = (fake_lsf / "jobs" / array / "script.sh").read_text()
        assert '#BSUB -J "nasfw[1-2]%2"' in script and "#BSUB -q normal" in script
        assert shlex.split(script.splitlines()[-1])[1:4] == ["-u", "-m", "submitit.core._submit"]


def test_a_cuda_search_needs_gpus_per_task(make_launcher):
    with pytest.raises(ConfigError, match=r"train\.device='cuda' needs launcher\.gpus_per_task"):
        make_launcher().check_device("cuda")
    make_launcher(gpus_per_task=1).check_device("cuda")  # the driver itself needs no GPU
    make_launcher().check_device("auto")
