"""Hydra multiruns (``python -m nasfw -m ...``): each job a search of its own.

A job of a sweep over a setting that changes results, and that the default study name does not
hold (``-m train.lr=0.001,0.01``), gets a study of its own: the default name plus a digest of
its swept values. A job that is refused or fails is reported and the sweep goes on, as Hydra
users expect; at its end one line lists the failed jobs and sets the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

# The jobs of a Hydra multirun that failed, as (job number, exit code): the sweep goes on past
# them, as Hydra users expect, and the command's exit code says so at its end.
FAILED_JOBS: list[tuple[int, int]] = []
# The settings the default study_name already holds (conf/config.yaml).
IN_DEFAULT_STUDY_NAME = ("tuner", "problem", "search_space", "seed")


def run_job(cfg: DictConfig, search: Callable[[DictConfig], float | None]) -> float | None:
    """``search(cfg)``; in a multirun, the job gets a study of its own where its result
    settings differ from the other jobs' (:func:`sweep_study_name`), and its failure is
    reported and recorded (:data:`FAILED_JOBS`) instead of ending the sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return search(cfg)
    name = sweep_study_name(cfg, list(hydra.overrides.task), swept_keys(hydra.sweep.dir))
    if name is not None:
        with open_dict(cfg):
            cfg.study_name = name
    try:
        return search(cfg)
    except SystemExit as exit:  # refused: its one line is printed
        code = exit.code if isinstance(exit.code, int) else 1
        FAILED_JOBS.append((int(hydra.job.num), code))
    except Exception:  # a bug: its traceback, then the next job
        import traceback

        traceback.print_exc()
        FAILED_JOBS.append((int(hydra.job.num), 1))
    return None


def swept_keys(sweep_dir: str) -> set[str] | None:
    """The keys the multirun sweeps (``train.lr=0.001,0.01``, ``seed=range(3)``), from the
    ``multirun.yaml`` Hydra's sweeper writes in the sweep directory before its jobs start (None
    where it cannot be read: every override then counts)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        overrides = OverridesParser.create().parse_overrides(list(saved.hydra.overrides.task))
    except Exception:
        return None
    return {o.key_or_group for o in overrides if o.is_sweep_override()}


def sweep_study_name(
    cfg: DictConfig, overrides: list[str], swept: set[str] | None = None
) -> str | None:
    """A multirun job's study name: the default one (``study_name`` not set on the command
    line) with a digest of the job's values of the ``swept`` keys (None: of every override)
    that change results and that the default name does not hold already, so jobs sweeping e.g.
    ``train.lr`` never share (and are never refused by) one study. None: the name stays (it
    was set, or the sweep is over tuners, problems, spaces and seeds only), so such sweeps
    keep the study names they always had."""
    import hashlib

    from nasfw.search import affects_results

    keys = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides}
    if "study_name" in keys:
        return None
    own = sorted(
        o
        for key, o in keys.items()
        if affects_results(key)
        and key not in IN_DEFAULT_STUDY_NAME
        and (swept is None or key in swept)
    )
    if not own:
        return None
    digest = hashlib.sha256("\n".join(own).encode()).hexdigest()[:8]
    return f"{cfg.study_name}-{digest}"


def exit_if_jobs_failed(input_error: int) -> None:
    """After a multirun: one line listing its failed jobs, and exit ``input_error`` when they
    were all refused (bad input), 1 otherwise. Nothing when none failed."""
    if not FAILED_JOBS:
        return
    listing = ", ".join(f"#{num} (exit {code})" for num, code in FAILED_JOBS)
    print(
        f"nasfw: error: {len(FAILED_JOBS)} job(s) of the sweep failed: {listing}; the others "
        "ran to their end",
        file=sys.stderr,
    )
    sys.exit(input_error if all(code == input_error for _, code in FAILED_JOBS) else 1)
