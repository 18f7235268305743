"""submitit's LSF backend (imported only when jobs are submitted or run).

``LsfExecutor`` writes the job script (``nasfw.launchers.lsf.make_bsub_script``) and submits
it with ``bsub < script``, always as a job array; ``LsfJobEnvironment`` is how submitit finds
its pickles inside a job (registered as submitit's ``job_environment`` entry point).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from submitit.core import core, job_environment, utils

from nasfw.launchers.lsf import lsf_id, make_bsub_script


class LsfJobEnvironment(job_environment.JobEnvironment):
    """submitit's view of an LSF job array element (``LSB_JOBID``, ``LSB_JOBINDEX``)."""

    _env = {
        "job_id": "LSB_JOBID",
        "array_job_id": "LSB_JOBID",
        "array_task_id": "LSB_JOBINDEX",
        "num_tasks": "NASFW_LSF_NUM_TASKS",
        "num_nodes": "NASFW_LSF_NUM_NODES",
        "node": "NASFW_LSF_NODE",
        "global_rank": "NASFW_LSF_GLOBAL_RANK",
        "local_rank": "NASFW_LSF_LOCAL_RANK",
    }

    def _requeue(self, countdown: int) -> None:
        subprocess.check_call(["brequeue", lsf_id(self.job_id)], timeout=60)


class _NoWatcher(core.InfoWatcher):
    """The launcher polls bjobs itself, once per round for all jobs."""

    def _make_command(self) -> list[str] | None:
        return None

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return "UNKNOWN"


class LsfJob(core.Job[Any]):
    _cancel_command = "bkill"
    watcher = _NoWatcher()

    def cancel(self, check: bool = True) -> None:
        (subprocess.check_call if check else subprocess.call)(["bkill", lsf_id(self.job_id)])


class LsfExecutor(core.PicklingExecutor):
    """A submitit executor for LSF: ``map_array`` submits one job array with ``bsub``."""

    job_class = LsfJob

    def __init__(self, folder: Path | str, python: str | None = None) -> None:
        super().__init__(folder, max_num_timeout=0)
        self.python = shlex.quote(sys.executable) if python is None else python
        self._count = 1  # elements of the array being submitted

    @property
    def _submitit_command_str(self) -> str:
        return f"{self.python} -u -m submitit.core._submit {shlex.quote(str(self.folder))}"

    def _num_tasks(self) -> int:
        return 1

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return make_bsub_script(command, self._root, self._count, **self.parameters)

    @property
    def _root(self) -> Path:
        return utils.JobPaths.get_first_id_independent_folder(self.folder)

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["bsub"]  # the script goes to its standard input, so #BSUB lines are read

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        text = string.decode() if isinstance(string, bytes) else string
        match = re.search(r"Job <(\d+)>", text)
        if match is None:
            raise utils.FailedSubmissionError(f"bsub printed no job id: {text.strip()[:300]}")
        return match.group(1)

    def _submit_array(self, count: int) -> str:
        """Write the script, run ``bsub < script``, return the array's job id."""
        (self._root / "logs").mkdir(parents=True, exist_ok=True)
        self._count = count
        path = self._root / f".submission_file_{uuid.uuid4().hex}.sh"
        path.write_text(self._make_submission_file_text(self._submitit_command_str, ""))
        with path.open() as script:
            out = subprocess.run(
                self._make_submission_command(path),
                stdin=script,
                capture_output=True,
                text=True,
                timeout=120,
            )
        if out.returncode != 0:
            raise utils.FailedSubmissionError(
                f"bsub exited {out.returncode}: {(out.stderr or out.stdout).strip()[:500]}"
            )
        job_id = self._get_job_id_from_submission_command(out.stdout)
        path.rename(self._root / f"{job_id}_submission.sh")
        return job_id

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[Any]]:
        # Always an array (even of one): element k+1 runs submission k, job id "<array>_<k+1>".
        self._root.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            path = self._root / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(self.parameters.get("time_min", 60), self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        array = self._submit_array(len(delayed_submissions))
        jobs: list[core.Job[Any]] = []
        for k, path in enumerate(pickles):
            job = LsfJob(folder=self.folder, job_id=f"{array}_{k + 1}")
            job.paths.move_temporary_file(path, "submitted_pickle")
            jobs.append(job)
        return jobs
