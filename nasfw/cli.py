"""``python -m nasfw``: compose the config with Hydra, run the search, print a summary."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from nasfw.search import SearchContext

# Errors that mean "the user's input is wrong": printed as one paragraph, exit code 2.
USER_ERRORS = (
    "nasfw.config.ConfigError",
    "nasfw.graph.GraphError",
    "nasfw.search_space.SearchSpaceError",
    "nasfw.problem.DataError",
    "nasfw.registry.PluginError",
    "nasfw.ledger.LedgerError",
)


def _is_user_error(err: BaseException) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in USER_ERRORS for cls in type(err).__mro__)


def _fail(message: str) -> None:
    print(f"nasfw: error: {message}", file=sys.stderr)
    sys.exit(2)


def _summary(context: SearchContext, top: int = 5) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not context.history:
        console.print(f"{context.cfg.study_name}: the tuner proposed no network; nothing to train")
        return
    ok = sorted((t for t in context.history if t.result.ok), key=lambda t: t.rank, reverse=True)
    ok = ok[:top]
    failed = sum(1 for t in context.history if not t.result.ok)
    metric = context.problem.metric
    table = Table(
        title=f"{context.cfg.study_name}: {len(context.history)} evaluations, {failed} failed"
    )
    for column in ("trial", "gen", f"val {metric}", "MFLOPs", "params", "nodes", "train s"):
        table.add_column(column, justify="right")
    for t in ok:
        r = t.result
        table.add_row(
            str(t.number),
            str(t.generation),
            f"{r.metric:.4f}",
            f"{(r.flops or 0) / 1e6:.2f}",
            f"{r.n_params or 0:,}",
            str(len(t.graph)),
            f"{r.train_seconds:.1f}",
        )
    console.print(table)
    best = context.best()
    if best is not None and "test_metric" in best.result.extra:
        console.print(
            f"best: trial {best.number}, val {metric} {best.result.metric:.4f}, "
            f"test {metric} {best.result.extra['test_metric']:.4f}; exported to "
            f"{context.export_dir}"
        )
    console.print(f"study: {context.cfg.study_name} in {context.cfg.storage.url}")
    if context.cfg.tracking.name == "mlflow":
        console.print(
            f"mlflow: experiment {context.cfg.tracking.experiment_name!r} in "
            f"{context.cfg.tracking.tracking_uri} (open with: mlflow ui --backend-store-uri "
            f"{context.cfg.tracking.tracking_uri})"
        )


def _task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from nasfw.search import run_search

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        context = run_search(cfg, output_dir)
    except Exception as err:
        if _is_user_error(err):
            _fail(str(err))
        raise
    _summary(context)
    best = context.best()
    if best is None and context.history:
        reasons = Counter((t.result.error or "failed").split(" (at ")[0] for t in context.history)
        listing = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(5))
        _fail(
            f"no candidate of study {cfg.study_name!r} trained successfully ({listing}). "
            f"The failed trials and their reasons are in {cfg.storage.url}."
        )
    return best.result.metric if best is not None else None


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    from nasfw.config import NasfwConfig
    from nasfw.registry import PluginError, registry, store_configs

    try:
        store_configs(registry())
    except PluginError as err:
        _fail(str(err))
    ConfigStore.instance().store(name="nasfw_schema", node=NasfwConfig, provider="nasfw")
    hydra.main(version_base="1.3", config_path="pkg://nasfw.conf", config_name="config")(_task)()
