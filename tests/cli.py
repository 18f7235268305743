"""Running ``python -m nasfw`` as a user does, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    return optuna.load_study(study_name=study, storage=url).get_trials()
