"""LSF launcher: each generation is one LSF job array, through a submitit executor for LSF.

``python -m nasfw launcher=lsf launcher.queue=normal``. submitit has no LSF backend, so this
module adds one as a submitit plugin (the ``submitit`` entry points ``executor`` and
``job_environment``): submitit still pickles the evaluation, runs it on the node and writes
its result; this module writes the ``bsub`` job script, submits it (``bsub < script``), reads
``bjobs`` and cancels with ``bkill``. Retries and re-attaching after a driver restart are the
same as for SLURM (``nasfw.launchers._batch``).

dask-jobqueue's LSF support was considered: it starts Dask workers that call back to a
scheduler inside the driver, so jobs die with the driver (no re-attach), its workers do not
map one-to-one to evaluations (no per-job state or termination reason), and it adds Dask.

Not tested against a live LSF cluster: the scripts and command lines follow IBM Spectrum
LSF 10.1's documentation (bsub, bjobs -o, bkill) and are tested through a stand-in.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasfw import ConfigError, Launcher, hookimpl
from nasfw.launchers._batch import BatchLauncher, BatchLauncherConfig, JobState

# bjobs STAT values (LSF 10.1, "bjobs -o stat") of jobs not over yet.
ACTIVE_STATES = frozenset(
    {"PEND", "PROV", "PSUSP", "RUN", "USUSP", "SSUSP", "WAIT", "UNKWN", "ZOMBI"}
)
# Termination reasons (LSF 10.1, "Termination reasons"): the code and bjobs' wording of it.
TERMINATION_REASONS = {
    "TERM_OWNER": "killed by owner",
    "TERM_FORCE_OWNER": "killed by owner without time for cleanup",
    "TERM_ADMIN": "killed by root or LSF administrator",
    "TERM_FORCE_ADMIN": "killed by root or LSF administrator without time for cleanup",
    "TERM_RUNLIMIT": "killed after reaching LSF run time limit",
    "TERM_PREEMPT": "killed after preemption",
    "TERM_REQUEUE_OWNER": "killed and requeued by owner",
    "TERM_REQUEUE_ADMIN": "killed and requeued by root or LSF administrator",
    "TERM_ZOMBIE": "exited while LSF is not available",
    "TERM_WINDOW": "killed after queue run window closed",
    "TERM_LOAD": "killed after load exceeds threshold",
    "TERM_MEMLIMIT": "killed after reaching LSF memory usage limit",
}
BJOBS_FIELDS = ("jobid", "jobindex", "stat", "exit_code", "exit_reason")


@dataclass
class LsfLauncherConfig(BatchLauncherConfig):
    name: str = "lsf"
    # Queue (bsub -q); None: the cluster's default queue.
    queue: str | None = None
    # More bsub options, e.g. {P: myproject, R: "select[type==X86_64]"} (one "#BSUB -P myproject"
    # line each; a list value gives the option once per item).
    bsub_options: dict[str, Any] = field(default_factory=dict)
    # Termination reasons (bjobs EXIT_REASON, LSF's TERM_* codes) of jobs LSF ended itself:
    # resubmitted up to max_retries times. Any other EXIT is a failed trial at once.
    retry_reasons: list[str] = field(
        default_factory=lambda: [
            "TERM_OWNER",
            "TERM_FORCE_OWNER",
            "TERM_ADMIN",
            "TERM_FORCE_ADMIN",
            "TERM_RUNLIMIT",
            "TERM_PREEMPT",
            "TERM_REQUEUE_OWNER",
            "TERM_REQUEUE_ADMIN",
            "TERM_ZOMBIE",
            "TERM_WINDOW",
            "TERM_LOAD",
        ]
    )


def lsf_id(job_id: str) -> str:
    """submitit's ``123_4`` as LSF writes an array element: ``123[4]``."""
    array, _, index = job_id.partition("_")
    return f"{array}[{index}]" if index else array


def _directive(option: str, value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'[];=" for c in text):
        text = '"' + text.replace('"', '\\"') + '"'
    return f"#BSUB -{option} {text}"


def make_bsub_script(
    command: str,
    folder: Path,
    count: int,
    *,
    job_name: str = "nasfw",
    queue: str | None = None,
    time_min: int = 60,
    cpus_per_task: int = 1,
    mem_gb: float | None = None,
    gpus_per_task: int = 0,
    array_parallelism: int = 64,
    setup: Sequence[str] = (),
    bsub_options: dict[str, Any] | None = None,
) -> str:
    """The job script of one LSF job array of ``count`` elements (indices 1..count)."""
    logs = folder / "logs"
    lines = [
        "#!/bin/bash",
        _directive("J", f"{job_name}[1-{count}]%{min(count, array_parallelism)}"),
        _directive("W", f"{time_min // 60}:{time_min % 60:02d}"),
        _directive("n", cpus_per_task),
        _directive("R", "span[hosts=1]"),
        _directive("o", logs / "%J_%I.out"),
        _directive("e", logs / "%J_%I.err"),
    ]
    if queue:
        lines.append(_directive("q", queue))
    if mem_gb is not None:
        mb = max(1, int(mem_gb * 1024))
        lines += [_directive("M", f"{mb}MB"), _directive("R", f"rusage[mem={mb}MB]")]
    if gpus_per_task:
        lines.append(_directive("gpu", f"num={gpus_per_task}"))
    for option, value in (bsub_options or {}).items():
        for item in value if isinstance(value, list | tuple) else [value]:
            lines.append(_directive(str(option).lstrip("-"), item))
    lines += ["", "# setup", *setup] if setup else []
    lines += ["", "# command", "export SUBMITIT_EXECUTOR=lsf", command, ""]
    return "\n".join(lines)


def parse_bjobs(text: str) -> dict[str, JobState]:
    """``bjobs -a -noheader -o "jobid jobindex stat exit_code exit_reason delimiter='|'"``."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        row = dict(zip(BJOBS_FIELDS, line.strip().split("|"), strict=False))
        if not row.get("jobid", "").isdigit() or not row.get("stat"):
            continue
        index = row.get("jobindex", "0")
        job = f"{row['jobid']}_{index}" if index not in ("", "0", "-") else row["jobid"]
        details = [row["stat"]]
        if row.get("exit_code", "-") not in ("", "-", "0"):
            details.append(f"exit code {row['exit_code']}")
        if row.get("exit_reason", "-") not in ("", "-"):
            details.append(row["exit_reason"])
        states[job] = JobState(row["stat"], ", ".join(details))
    return states


class LsfLauncher(BatchLauncher):
    """Evaluations as LSF job arrays, results through the shared study.

    Example::

        python -m nasfw launcher=lsf launcher.queue=normal launcher.time_min=120 \\
            storage.url=postgresql+psycopg2://user@db/nasfw
    """

    scheduler = "LSF"
    config_class = LsfLauncherConfig
    config: LsfLauncherConfig
    done_states = frozenset({"DONE"})
    active_states = ACTIVE_STATES

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        unknown = [r for r in self.config.retry_reasons if r.upper() not in TERMINATION_REASONS]
        if unknown:
            raise ConfigError(
                f"launcher.retry_reasons: {unknown} are not LSF termination reasons "
                f"(known: {sorted(TERMINATION_REASONS)})"
            )
        for key in self.config.bsub_options:
            if str(key).lstrip("-") in {"J", "o", "e", "W", "n", "q", "M", "gpu"}:
                raise ConfigError(
                    f"launcher.bsub_options.{key}: set by the launcher; use launcher.queue, "
                    "launcher.time_min, launcher.cpus_per_task, launcher.mem_gb, "
                    "launcher.gpus_per_task or launcher.job_name instead"
                )
        missing = [c for c in ("bsub", "bjobs", "bkill") if shutil.which(c) is None]
        if missing:
            raise ConfigError(
                f"launcher=lsf needs the LSF commands {', '.join(missing)} on PATH (run the "
                "search on a login node of the cluster)"
            )

    def _make_executor(self) -> Any:
        from nasfw.launchers._lsf_submitit import LsfExecutor

        c = self.config
        executor = LsfExecutor(self.folder / "%j", python=c.python)
        executor.update_parameters(
            job_name=c.job_name,
            queue=c.queue,
            time_min=c.time_min,
            cpus_per_task=c.cpus_per_task,
            mem_gb=c.mem_gb,
            gpus_per_task=c.gpus_per_task,
            array_parallelism=c.array_parallelism,
            setup=list(c.setup),
            bsub_options=dict(c.bsub_options),
        )
        return executor

    def _result_path(self, job_id: str) -> Path:
        return self.folder / job_id / f"{job_id}_0_result.pkl"

    def _log_tail(self, job_id: str) -> str:
        try:
            err = (self.folder / "logs" / f"{job_id}.err").read_text()
        except OSError:
            return ""
        tail = " | ".join(line.strip() for line in err.strip().splitlines()[-3:])
        return f"; stderr: {tail[-400:]}" if tail else ""

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobState] | None:
        arrays = sorted({j.split("_")[0] for j in job_ids})
        if not arrays:
            return {}
        fields = " ".join(BJOBS_FIELDS) + " delimiter='|'"
        out = subprocess.run(
            ["bjobs", "-a", "-noheader", "-o", fields, *arrays],
            capture_output=True,
            text=True,
            timeout=60,
        )
        states = parse_bjobs(out.stdout)
        if out.returncode != 0 and not states and "not found" not in out.stderr:
            return None  # LSF did not answer
        for job, state in list(states.items()):
            if state.state == "EXIT" and self._retryable(state.reason):
                states[job] = JobState("TERMINATED", state.reason)
        return states

    def _retryable(self, reason: str) -> bool:
        text = reason.lower()
        return any(
            code.lower() in text or TERMINATION_REASONS[code.upper()] in text
            for code in self.config.retry_reasons
        )

    @property
    def retry_states(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"TERMINATED"})

    def _cancel(self, job_ids: Sequence[str]) -> None:
        subprocess.run(["bkill", *(lsf_id(j) for j in job_ids)], capture_output=True, timeout=60)


@hookimpl
def register_launchers(register: Callable[[type[Launcher[Any]]], None]) -> None:
    register(LsfLauncher)
