"""SLURM launcher: each generation is one job array, submitted with submitit.

``python -m nasfw launcher=slurm launcher.partition=gpu launcher.gpus_per_task=1
storage.url=postgresql+psycopg2://user@db/nasfw``: every candidate runs as a task of a job
array, writes its own trial into the shared study, and the driver gathers the results. Jobs
the scheduler ends are retried (``launcher.max_retries``), and a killed driver re-attaches to
its jobs when restarted (see ``nasfw.launchers._batch``). Job states come from ``sacct``, so
the cluster needs accounting (slurmdbd).
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasfw import ConfigError, Launcher, hookimpl
from nasfw.launchers._batch import BatchLauncher, BatchLauncherConfig, JobState


@dataclass
class SlurmLauncherConfig(BatchLauncherConfig):
    name: str = "slurm"
    # Partition (sbatch --partition); None: the cluster's default partition.
    partition: str | None = None
    # More sbatch options, e.g. {account: proj, qos: high, constraint: a100} (--account=proj ...).
    sbatch_options: dict[str, Any] = field(default_factory=dict)
    # States of jobs SLURM ended itself: resubmitted up to max_retries times. Any other end
    # without a result (FAILED, OUT_OF_MEMORY) is a failed trial at once.
    retry_states: list[str] = field(
        default_factory=lambda: [
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
        ]
    )


# sacct's states of jobs not over yet (sacct(1), JOB STATE CODES).
_ACTIVE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "COMPLETING",
        "CONFIGURING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
_GONE = JobState("GONE", "")
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def parse_sacct(
    text: str, columns: Sequence[str] = ("JobID", "State", "ExitCode", "Reason")
) -> dict[str, JobState]:
    """``sacct -X -n -P -o JobID,State,ExitCode,Reason`` lines -> state per job id.

    Also reads ``squeue -h -r -o %i|%T|%r`` (``columns=("JobID", "State", "Reason")``).
    Pending array tasks can come as one range line (``12_[3-5%2]``); each task gets its state.
    """
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        row = dict(zip(columns, line.strip().split("|"), strict=False))
        job, state = row.get("JobID", ""), row.get("State", "")
        if not job or not state:
            continue
        word = state.split()[0].rstrip("+")
        details = [state]
        if row.get("ExitCode", "") not in ("", "0:0"):
            details.append(f"exit code {row['ExitCode']}")
        if row.get("Reason", "") not in ("", "None"):
            details.append(f"reason {row['Reason']}")
        info = JobState(word, ", ".join(details))
        match = _ARRAY_RANGE.match(job)
        if match:
            for part in match.group(2).split(","):
                low, _, high = part.partition("-")
                for task in range(int(low), int(high or low) + 1):
                    states[f"{match.group(1)}_{task}"] = info
        else:
            states[job] = info
    return states


# sbatch's words when there is no cluster to talk to, as opposed to settings it refuses.
_NO_CLUSTER = (
    "Could not establish a configuration source",
    "Unable to contact slurm controller",
    "Could not open configuration",
    "Unable to process configuration file",
)


# How to get a SLURM to try launcher=slurm on one machine: the script the test suite uses.
TEST_CLUSTER = (
    "To try it on this machine, start a single-node test cluster from nasfw's source tree: "
    "sudo python3 scripts/services.py start slurm (Debian or Ubuntu: it installs and starts "
    "SLURM with accounting in about 15 s), then export the SLURM_CONF=... it prints."
)


class SlurmLauncher(BatchLauncher):
    """Evaluations as SLURM job arrays (submitit), results through the shared study.

    Example::

        python -m nasfw launcher=slurm launcher.partition=gpu launcher.gpus_per_task=1 \\
            storage.url=postgresql+psycopg2://user@db/nasfw
    """

    scheduler = "SLURM"
    config_class = SlurmLauncherConfig
    config: SlurmLauncherConfig
    done_states = frozenset({"COMPLETED"})
    active_states = _ACTIVE

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.retry_states = frozenset(self.config.retry_states)
        missing = [c for c in ("sbatch", "sacct", "scancel") if shutil.which(c) is None]
        if missing:
            raise ConfigError(
                f"launcher=slurm needs the SLURM commands {', '.join(missing)} on PATH (run the "
                "search on a login node of the cluster), and accounting (sacct) enabled. "
                + TEST_CLUSTER
            )
        self._test_submission()

    def _sbatch_flags(self) -> list[str]:
        c = self.config
        flags = [f"--time={c.time_min}", f"--cpus-per-task={c.cpus_per_task}"]
        if c.partition:
            flags.append(f"--partition={c.partition}")
        if c.mem_gb is not None:
            flags.append(f"--mem={int(c.mem_gb * 1024)}M")
        if c.gpus_per_task:
            flags.append(f"--gpus-per-task={c.gpus_per_task}")
        for key, value in c.sbatch_options.items():
            flag = f"--{str(key).replace('_', '-')}"
            flags.append(flag if value is True else f"{flag}={value}")
        return flags

    def _test_submission(self) -> None:
        """``sbatch --test-only``: SLURM checks partition and resources, submits nothing."""
        flags = self._sbatch_flags()
        out = subprocess.run(
            ["sbatch", "--test-only", *flags, "--wrap", "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            message = " ".join(out.stderr.split()) or f"exit code {out.returncode}"
            if any(text in out.stderr for text in _NO_CLUSTER):
                raise ConfigError(
                    "launcher=slurm: no SLURM cluster answers from this machine (no slurm.conf "
                    f"or controller reachable): {message}. Run on a SLURM login node, or use "
                    "launcher=local. " + TEST_CLUSTER
                )
            raise ConfigError(
                f"launcher=slurm: SLURM refuses these job settings ({' '.join(flags)}; keys "
                "launcher.partition, launcher.time_min, launcher.cpus_per_task, launcher.mem_gb, "
                f"launcher.gpus_per_task, launcher.sbatch_options): {message}"
            )

    def _make_executor(self) -> Any:
        import submitit

        c = self.config
        executor = submitit.SlurmExecutor(
            folder=self.folder / "%j", max_num_timeout=0, python=c.python
        )
        params: dict[str, Any] = {
            "job_name": c.job_name,
            "time": c.time_min,
            "cpus_per_task": c.cpus_per_task,
            "array_parallelism": c.array_parallelism,
            "setup": list(c.setup),
            "additional_parameters": dict(c.sbatch_options),
        }
        if c.partition:
            params["partition"] = c.partition
        if c.mem_gb is not None:
            params["mem"] = f"{int(c.mem_gb * 1024)}M"
        if c.gpus_per_task:
            params["gpus_per_task"] = c.gpus_per_task
        executor.update_parameters(**params)
        return executor

    def _result_path(self, job_id: str) -> Path:
        return self.folder / job_id / f"{job_id}_0_result.pkl"

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobState] | None:
        """squeue for jobs it still holds (MinJobAge), sacct for finished ones (exit codes).

        A pending array task cancelled before it started is in neither: it vanishes.
        """
        queue = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if queue.returncode != 0:
            return None
        queued = parse_sacct(queue.stdout, ("JobID", "State", "Reason"))
        ended = [j for j in job_ids if queued.get(j, _GONE).state not in self.active_states]
        states = {j: queued[j] for j in job_ids if j in queued}
        if not ended:
            return states
        arrays = sorted({j.split("_")[0] for j in ended})
        out = subprocess.run(
            [
                "sacct",
                "-X",
                "-n",
                "-P",
                "-o",
                "JobID,State,ExitCode,Reason",
                "-j",
                ",".join(arrays),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            return None
        accounted = parse_sacct(out.stdout)
        for job in ended:
            record = accounted.get(job)
            if record is None:
                continue
            # Accounting lags the controller a little: a finished state wins over a live one.
            if record.state not in self.active_states or job not in states:
                states[job] = record
        return states

    def _cancel(self, job_ids: Sequence[str]) -> None:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


@hookimpl
def register_launchers(register: Callable[[type[Launcher[Any]]], None]) -> None:
    register(SlurmLauncher)
