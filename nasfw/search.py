"""A search, start to end: :func:`run_search` sets it up (:mod:`nasfw.prepare`), runs its
generations (:mod:`nasfw.loop`) and exports what it found (:mod:`nasfw.export`).

The composed Hydra config enters here and is typed once (:func:`nasfw.config.typed_config`);
everything past this point reads typed objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.config import typed_config
from nasfw.context import SearchContext
from nasfw.export import export
from nasfw.loop import run_loop
from nasfw.prepare import prepare
from nasfw.records import TrialRecord

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from rich.console import Console

__all__ = [
    "NOT_IN_FINGERPRINT",
    "SearchContext",
    "TrialRecord",
    "affects_results",
    "fingerprint",
    "fingerprint_of",
    "run_search",
]


#: The settings that do not change which evaluations a search runs or what they return, and
#: why: every other setting of the composed config is in its fingerprint
#: (tests/test_fingerprint.py flips each one, so a new setting must be classified here).
NOT_IN_FINGERPRINT: dict[str, str] = {
    "study_name": "the study's name itself",
    "launcher": "where evaluations run (each trial records its device); a search may resume "
    "on another launcher",
    "storage": "where the study, its weights and their limit are kept",
    "tracking": "where MLflow runs go",
    "postproc": "post-processing of the exported best model, after the last evaluation",
    "export_dir": "where the best model is exported",
    "plugins": "lifecycle plugins' settings: hooks that observe the search",
    "mode": "mode=minibench builds a DB of searches, each with a fingerprint of its own",
    "train.device": "where it trains is not what it searches (each trial records its device)",
    "train.curve_every": "scores along the way only: the training and its result are the same",
}

#: Settings added to the fingerprint after studies were written without them: each is in it
#: only when it differs from the value those studies ran with (given here), so a study
#: written before still resumes with the default and is refused with another value.
ADDED_TO_FINGERPRINT: dict[str, Any] = {
    "pruner": {"name": "none"},
    "reuse_evaluations": True,
}

#: Settings in the fingerprint only when the search uses them: the mini-benchmark DB and its
#: settings choose the space (search_space=auto) or screen proposals (evaluation.screen > 1).
USED_ONLY_BY: dict[str, str] = {
    "minibench": "search_space=auto or evaluation.screen > 1",
}


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a search's results (not where it runs or is tracked), as
    stored in its study: a rerun with other such settings is refused, not resumed."""
    from omegaconf import OmegaConf

    full = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(full, dict)
    return fingerprint_of(full)


def fingerprint_of(full: dict[str, Any]) -> dict[str, Any]:
    """:func:`fingerprint` of the composed config as plain values."""
    found: dict[str, Any] = {}
    for key, value in full.items():
        if key in NOT_IN_FINGERPRINT or key in USED_ONLY_BY:
            continue
        if key in ADDED_TO_FINGERPRINT and value == ADDED_TO_FINGERPRINT[key]:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in NOT_IN_FINGERPRINT}
        found[key] = value
    evaluation = full.get("evaluation") or {}
    space = full.get("search_space") or {}
    screen = evaluation.get("screen", 1)
    if space.get("name") == "auto" or (isinstance(screen, int) and screen > 1):
        found["minibench"] = full["minibench"]
    return found


def affects_results(key: str) -> bool:
    """Whether the setting ``key`` (dotted, e.g. ``train.lr`` or a group, ``tuner``) can change
    a search's results: it is in the fingerprint (or is, where the search uses it)."""
    return not any(key == k or key.startswith(f"{k}.") for k in NOT_IN_FINGERPRINT)


def run_search(cfg: DictConfig, output_dir: Path, console: Console | None = None) -> SearchContext:
    """Run (or resume) the search ``cfg`` (the composed config) describes; return its context
    with the history.

    Raises:
        ConfigError, SearchSpaceError, PluginError, DataError, LedgerError, LeaseError: bad
            input, naming the key, before any training and before the study is created.
        KeyboardInterrupt: interrupted; every finished evaluation is in the study.
    """
    from rich.console import Console

    from nasfw.clock import search_began

    began = search_began()
    config = typed_config(cfg)
    search = prepare(config, fingerprint(cfg), output_dir, console or Console(stderr=True))
    search.began = began
    context, best, released = search.context, None, False
    try:
        if search.resumed_after is not None:
            search.console.print(
                f"Resuming study [bold]{config.study_name}[/] after generation "
                f"{search.resumed_after} ({len(context.history)} evaluations on record)"
            )
        run_loop(search)
        # The evaluations are over: the workers (a cluster's slots) are released before the
        # export retrains in the driver, which then has the machine to itself and no longer
        # depends on them (a Ray head lost during the export cannot end it).
        search.launcher.close()
        released = True
        best = export(search)
    except BaseException as err:
        context.error = err
        raise
    finally:
        # Stopped (Ctrl-C, SIGTERM, an error): evaluations in flight are not waited for.
        if not released:
            search.launcher.close() if context.error is None else search.launcher.abort()
        try:
            search.hook.nasfw_search_end(context=context, best=best)
        finally:
            search.lease.release()
    return context
