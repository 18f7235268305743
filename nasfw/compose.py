"""The run's config as ``python -m nasfw`` composes it: what Hydra's ConfigStore must hold
besides ``conf/``'s YAML files (:func:`store_schemas`), and a composed config without the
command line (:func:`compose`, for tests and for :mod:`nasfw.testing`'s factories)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasfw.registry import Registry


def store_schemas(reg: Registry) -> None:
    """Put into Hydra's ConfigStore what ``conf/config.yaml`` composes besides its YAML files:
    the primary schema, the core's ``none`` options (``pruner=none`` among them) and what
    ``reg``'s plugins registered (the other pruners among them).

    Whatever composes the run's config (the CLI, tests) calls this first, so it composes what
    ``python -m nasfw`` does.
    """
    from hydra.core.config_store import ConfigStore

    from nasfw.config import (
        EvaluationConfig,
        NasfwConfig,
        PostprocConfig,
        SearchSpaceConfig,
        TrackingConfig,
    )
    from nasfw.pruning import NoPrunerConfig
    from nasfw.registry import store_configs

    store_configs(reg)
    cs = ConfigStore.instance()
    cs.store(name="nasfw_schema", node=NasfwConfig, provider="nasfw")
    # No post-processing of the final population; no experiment tracking (the Optuna study
    # still records every trial).
    cs.store(group="postproc", name="none", node=PostprocConfig(name="none"), provider="nasfw")
    cs.store(group="tracking", name="none", node=TrackingConfig(name="none"), provider="nasfw")
    # The schema conf/evaluation/{plain,auto}.yaml extend (Hydra's "schema" pattern).
    cs.store(name="nasfw_evaluation_schema", node=EvaluationConfig, provider="nasfw")
    # The schema conf/search_space/*.yaml extend: the core's kind of space, stages.
    cs.store(name="nasfw_search_space_schema", node=SearchSpaceConfig, provider="nasfw")
    cs.store(group="pruner", name=NoPrunerConfig.name, node=NoPrunerConfig, provider="nasfw")


def compose(*overrides: str, reg: Registry | None = None) -> Any:
    """The run's config (a ``DictConfig``, before :func:`nasfw.config.typed_config`) as
    ``python -m nasfw <overrides>`` composes it, with the options of ``reg``'s plugins (the
    installed plugins' by default). Hydra's ConfigStore holds the installed plugins' options
    again afterwards."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from nasfw.registry import registry

    store_schemas(reg if reg is not None else registry())
    try:
        with initialize_config_module("nasfw.conf", version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    finally:
        if reg is not None:
            store_schemas(registry())
