"""Start-up time of the command line (issue #16): how long ``python -m nasfw --help``,
``python -m nasfw --cfg job`` and ``import nasfw`` take, against the 1.5 s target.

Each command runs ``--repeat`` times (default 5) as a fresh subprocess; its figure is the best
(shortest) wall time, the least disturbed by other load on the machine, with the median beside
it. Then one tiny search (iris, two MLPs, one epoch, evaluations in the driver) reports the
seconds from its process's start to its first training step, as the search measures and
stores them (``nasfw:first_step_seconds``); ``--no-search`` leaves it out. Prints a Markdown
table and always exits 0: it reports, it does not judge.

    .venv/bin/python benchmarks/startup.py
    .venv/bin/python benchmarks/startup.py --repeat 1 --no-search   # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import harness

TARGET_SECONDS = 1.5
COMMANDS: dict[str, list[str]] = {
    "`python -m nasfw --help`": ["-m", "nasfw", "--help"],
    "`python -m nasfw --cfg job`": ["-m", "nasfw", "--cfg", "job"],
    "`python -c 'import nasfw'`": ["-c", "import nasfw"],
}
# The study of the tests' tiny search (tests/cli.py TINY: iris, random search, seed 0).
STUDY = "random-iris-tabular_mlp-seed0"


def timed(python: str, args: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds of ``python *args`` in ``cwd``, and its exit code."""
    run = harness.run_command([python, *args], cwd=cwd)
    return run.wall_seconds, run.returncode


def first_step(python: str, cwd: Path) -> float | None:
    """``nasfw:first_step_seconds`` of the tests' tiny search (what start-up costs before
    anything trains), or None when it failed."""
    from nasfw.ledger import FIRST_STEP_ATTR

    url = f"sqlite:///{cwd / 'startup.db'}"
    tiny = harness.tests_cli().TINY
    run = harness.run_command(
        [python, "-m", "nasfw", *tiny, f"storage.url={url}"], cwd=cwd, capture=True
    )
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        return None
    value = harness.open_ledger(url, STUDY).attr(FIRST_STEP_ATTR)
    return float(value) if value is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (best of)")
    parser.add_argument("--target", type=float, default=TARGET_SECONDS, help="seconds")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    parser.add_argument("--no-search", action="store_true", help="leave out the tiny search")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="nasfw-startup-") as tmp:
        cwd = Path(tmp)  # Hydra's outputs/ and the study go here, not into the checkout
        for name, command in COMMANDS.items():
            runs = [timed(args.python, command, cwd) for _ in range(max(1, args.repeat))]
            failed = [rc for _, rc in runs if rc != 0]
            seconds = [s for s, _ in runs]
            best, median = min(seconds), statistics.median(seconds)
            if failed:
                verdict = f"failed (exit code {failed[0]})"
            else:
                verdict = "pass" if best < args.target else "FAIL"
            rows.append(f"| {name} | {best:.2f} | {median:.2f} | < {args.target:g} | {verdict} |")
        if not args.no_search:
            value = first_step(args.python, cwd)
            shown = f"{value:.2f}" if value is not None else "failed"
            rows.append(f"| first training step of a tiny search (one run) | {shown} | | | |")

    print(
        f"\n{max(1, args.repeat)} runs per command, wall seconds; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.machine()}\n"
    )
    print("| command | best s | median s | target s | result |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
