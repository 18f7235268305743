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

__all__ = ["SearchContext", "TrialRecord", "fingerprint", "run_search"]


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a search's results (not where it runs or is tracked), as
    stored in its study: a rerun with other such settings is refused, not resumed."""
    from omegaconf import OmegaConf

    full = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(full, dict)
    keys = ("tuner", "search_space", "problem", "train", "evaluation", "seed")
    found = {k: full[k] for k in keys}
    # Where it trains is not what it searches: a search may resume on another machine (each
    # trial records its device). train.precision and train.deterministic stay.
    # curve_every only adds scores along the way: the training and its result are the same.
    found["train"] = {k: v for k, v in found["train"].items() if k not in ("device", "curve_every")}
    return found


def run_search(cfg: DictConfig, output_dir: Path, console: Console | None = None) -> SearchContext:
    """Run (or resume) the search ``cfg`` (the composed config) describes; return its context
    with the history.

    Raises:
        ConfigError, SearchSpaceError, PluginError, DataError, LedgerError, LeaseError: bad
            input, naming the key, before any training and before the study is created.
        KeyboardInterrupt: interrupted; every finished evaluation is in the study.
    """
    from rich.console import Console

    config = typed_config(cfg)
    search = prepare(config, fingerprint(cfg), output_dir, console or Console(stderr=True))
    context, best = search.context, None
    try:
        if search.resumed_after is not None:
            search.console.print(
                f"Resuming study [bold]{config.study_name}[/] after generation "
                f"{search.resumed_after} ({len(context.history)} evaluations on record)"
            )
        # Workers import torch and load the data while the trackers open their stores. Not
        # earlier: a config refused before this point must not wait for workers to start.
        search.launcher.warm_up(search.evaluator)
        run_loop(search)
        best = export(search)
    except BaseException as err:
        context.error = err
        raise
    finally:
        # Stopped (Ctrl-C, SIGTERM, an error): evaluations in flight are not waited for.
        search.launcher.close() if context.error is None else search.launcher.abort()
        try:
            search.hook.nasfw_search_end(context=context, best=best)
        finally:
            search.lease.release()
    return context
