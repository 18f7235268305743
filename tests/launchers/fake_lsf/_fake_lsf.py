#!/usr/bin/env python3
"""A stand-in for LSF's bsub, bjobs and bkill, for the LSF launcher's tests (no LSF runs here).

It checks what it is given against IBM Spectrum LSF 10.1's documented syntax and refuses
anything else, then runs the job array's elements as local processes with LSF's environment
(``LSB_JOBID``, ``LSB_JOBINDEX``) and keeps their states where ``bjobs`` reads them. State
lives in ``$FAKE_LSF_DIR``. Not a scheduler: no queues, no limits enforced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("FAKE_LSF_DIR", "/tmp/fake-lsf"))

# bsub options the launcher may write, with the value syntax LSF 10.1 documents for each.
BSUB_SYNTAX = {
    "J": r"[A-Za-z0-9_.\-]+\[1-\d+\](%\d+)?",  # job array "name[1-N]%P"
    "W": r"(\d+:)?\d+",  # [hour:]minute
    "n": r"\d+",
    "R": r"(span\[hosts=1\]|rusage\[mem=\d+(KB|MB|GB)?\]|select\[.+\]|.+)",
    "o": r"\S+",
    "e": r"\S+",
    "q": r"\S+",
    "M": r"\d+(KB|MB|GB|TB)?",
    "gpu": r"num=\d+(:\S+)?",
    "P": r"\S+",
    "G": r"\S+",
    "U": r"\S+",
    "app": r"\S+",
    "m": r".+",
    "x": r"",
}
BJOBS_FIELDS = {"jobid", "jobindex", "stat", "exit_code", "exit_reason", "job_name", "queue"}


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(255)


@contextlib.contextmanager
def locked():
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / "lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def element(job: str, index: int) -> Path:
    return ROOT / "jobs" / job / f"{index}.json"


def read(job: str, index: int) -> dict:
    return json.loads(element(job, index).read_text())


def write(job: str, index: int, **state: object) -> None:
    path = element(job, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def parse_script(script: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in script.splitlines():
        if not line.startswith("#BSUB"):
            continue
        words = shlex.split(line[len("#BSUB") :])
        if not words or not words[0].startswith("-"):
            fail(f"bsub: bad directive: {line}")
        option = words[0][1:]
        value = " ".join(words[1:])
        if option not in BSUB_SYNTAX:
            fail(f"bsub: {option}: unknown option in {line!r}")
        if not re.fullmatch(BSUB_SYNTAX[option], value):
            fail(f"bsub: -{option} {value!r}: bad value (LSF syntax {BSUB_SYNTAX[option]!r})")
        options.setdefault(option, []).append(value)
    return options


def bsub(args: list[str]) -> None:
    if args:
        fail(f"bsub: this stand-in takes the job script on standard input only, not {args}")
    script = sys.stdin.read()
    if not script.startswith("#!"):
        fail("bsub: the script has no #! line")
    options = parse_script(script)
    name = options.get("J", [""])[0]
    match = re.fullmatch(r"(.+)\[1-(\d+)\](?:%(\d+))?", name)
    count, parallel = (int(match.group(2)), int(match.group(3) or 0)) if match else (1, 0)
    with locked():
        counter = ROOT / "next_id"
        job = counter.read_text().strip() if counter.exists() else "1001"
        counter.write_text(str(int(job) + 1))
        (ROOT / "jobs" / job).mkdir(parents=True)
        (ROOT / "jobs" / job / "script.sh").write_text(script)
        (ROOT / "jobs" / job / "options.json").write_text(json.dumps(options))
        for index in range(1, count + 1):
            write(job, index, stat="PEND", exit_code="-", exit_reason="-", pgid=None)
    subprocess.Popen(
        [sys.executable, __file__, "--execution-host", job, str(count), str(parallel or count)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    queue = options.get("q", ["normal"])[0]
    print(f"Job <{job}> is submitted to queue <{queue}>.")


def run(job: str, count: int, parallel: int) -> None:
    """The stand-in's execution host: runs elements, at most ``parallel`` at once."""
    folder = ROOT / "jobs" / job
    options = json.loads((folder / "options.json").read_text())
    running: dict[int, subprocess.Popen] = {}
    todo = list(range(1, count + 1))
    while todo or running:
        for index, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[index]
            with locked():
                if read(job, index)["stat"] == "RUN":  # not killed meanwhile
                    code = proc.returncode
                    stat = "DONE" if code == 0 else "EXIT"
                    write(job, index, stat=stat, exit_code=str(code), exit_reason="-", pgid=None)
        while todo and len(running) < parallel:
            index = todo.pop(0)
            with locked():
                if read(job, index)["stat"] != "PEND":
                    continue  # killed while pending
                paths = {
                    k: options[k][0].replace("%J", job).replace("%I", str(index))
                    for k in ("o", "e")
                    if k in options
                }
                env = {**os.environ, "LSB_JOBID": job, "LSB_JOBINDEX": str(index)}
                out = open(paths.get("o", os.devnull), "a")  # noqa: SIM115
                err = open(paths.get("e", os.devnull), "a")  # noqa: SIM115
                proc = subprocess.Popen(
                    ["bash", str(folder / "script.sh")],
                    env=env,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                running[index] = proc
                write(job, index, stat="RUN", exit_code="-", exit_reason="-", pgid=proc.pid)
        time.sleep(0.05)


def bjobs(args: list[str]) -> None:
    if args[:2] != ["-a", "-noheader"] or args[2] != "-o":
        fail(f"bjobs: this stand-in expects -a -noheader -o FORMAT IDS, not {args}")
    form = re.fullmatch(r"([a-z_ ]+?) delimiter='(.)'", args[3])
    if not form or not set(form.group(1).split()) <= BJOBS_FIELDS:
        fail(f"bjobs: bad -o format {args[3]!r}")
    fields, delimiter = form.group(1).split(), form.group(2)
    missing = False
    for job in args[4:]:
        folder = ROOT / "jobs" / job
        if not re.fullmatch(r"\d+", job) or not folder.is_dir():
            print(f"Job <{job}> is not found", file=sys.stderr)
            missing = True
            continue
        elements = [p for p in folder.glob("*.json") if p.stem.isdigit()]
        for path in sorted(elements, key=lambda p: int(p.stem)):
            state = {"jobid": job, "jobindex": path.stem, **json.loads(path.read_text())}
            print(delimiter.join(str(state.get(f, "-")) for f in fields))
    sys.exit(255 if missing else 0)


def bkill(args: list[str]) -> None:
    missing = False
    for target in args:
        match = re.fullmatch(r"(\d+)(?:\[(\d+)\])?", target)
        if not match or not (ROOT / "jobs" / match.group(1)).is_dir():
            print(f"Job <{target}>: No matching job found", file=sys.stderr)
            missing = True
            continue
        job = match.group(1)
        indices = (
            [int(match.group(2))]
            if match.group(2)
            else [int(p.stem) for p in (ROOT / "jobs" / job).glob("*.json") if p.stem.isdigit()]
        )
        for index in indices:
            with locked():
                state = read(job, index)
                if state["stat"] not in ("PEND", "RUN"):
                    print(f"Job <{job}[{index}]>: Job has already finished", file=sys.stderr)
                    continue
                if state.get("pgid"):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(int(state["pgid"]), signal.SIGKILL)
                write(
                    job,
                    index,
                    stat="EXIT",
                    exit_code="137",
                    exit_reason="TERM_OWNER: job killed by owner",
                    pgid=None,
                )
            print(f"Job <{job}[{index}]> is being terminated")
    sys.exit(255 if missing else 0)


def main() -> None:
    command, args = Path(sys.argv[0]).name, sys.argv[1:]
    if args and args[0] == "--execution-host":
        run(args[1], int(args[2]), int(args[3]))
    elif command == "bsub":
        bsub(args)
    elif command == "bjobs":
        bjobs(args)
    elif command == "bkill":
        bkill(args)
    else:
        fail(f"fake LSF: unknown command {command}")


if __name__ == "__main__":
    main()
