"""nasfw: plugin-based neural architecture search for PyTorch.

The public API: plugins (first-party ones included) import only from here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if sys.orig_argv[1:3] == ["-m", "nasfw"] or sys.argv[0].endswith(("/nasfw", "\\nasfw.exe")):
    # ``python -m nasfw`` or the ``nasfw`` script:
    # a Ctrl-C or SIGTERM from the first import on is noted, and the CLI raises it where it
    # handles it (nasfw.cli.main). Not when nasfw is imported as a library or in a worker.
    from nasfw import signals as _signals

    _signals.install(deliver=False)

# ``nasfw.registry`` is the module, which called is ``nasfw.registry.registry()`` (the
# process-wide Registry): ``nasfw.registry().ops`` and ``nasfw.registry.preset`` both work.
from nasfw import registry, signals
from nasfw.config import (
    AsynchronousTunerConfig,
    ConfigError,
    EvaluationConfig,
    LauncherConfig,
    NasfwConfig,
    Optimizer,
    ParamRange,
    PostprocConfig,
    Precision,
    ProblemConfig,
    PrunerConfig,
    SearchSpaceConfig,
    SpaceConfig,
    StageConfig,
    StorageConfig,
    TrackingConfig,
    TrainConfig,
    TunerConfig,
    check_settings,
    check_writable,
    setting,
)
from nasfw.context import SearchContext
from nasfw.dbfiles import describe_sqlite
from nasfw.gene_space import GeneSpace, span_choices
from nasfw.graph import INPUT, MERGE_KINDS, ArchGraph, GraphError, Node, load_arch
from nasfw.launcher import (
    ClusterJob,
    Launcher,
    LauncherOutage,
    MapResults,
    init_worker_process,
    usable_cpus,
)
from nasfw.ops import OpSpec, ParamSpec, Shape
from nasfw.pareto import pareto_front, pareto_rows
from nasfw.problem import DataError, Problem, Split, Standardization, split_arrays
from nasfw.records import Candidate, Result, TrialRecord
from nasfw.registry import PluginError, Registry, hookimpl, plugin_manager
from nasfw.search_space import (
    BaseSearchSpace,
    Chooser,
    RandomChooser,
    SearchSpace,
    SearchSpaceError,
    TrialChooser,
    load_arch_in,
)
from nasfw.tuner import Tuner, check_mode

if TYPE_CHECKING:
    from nasfw.builder import BuildError, ModelCost, adapter, build_model, model_cost
    from nasfw.device import cuda_devices, resolve_device
    from nasfw.evaluate import (
        Evaluator,
        candidate_seed,
        device_facts,
        load_problem,
        provide_problem,
    )
    from nasfw.search import run_search
    from nasfw.train import TrainOutcome, evaluate_model, train_model

# Modules that import torch or optuna load on first use, so `python -m nasfw --help` stays quick.
_LAZY = {
    "BuildError": "nasfw.builder",
    "ModelCost": "nasfw.builder",
    "adapter": "nasfw.builder",
    "build_model": "nasfw.builder",
    "model_cost": "nasfw.builder",
    "cuda_devices": "nasfw.device",
    "resolve_device": "nasfw.device",
    "Evaluator": "nasfw.evaluate",
    "candidate_seed": "nasfw.evaluate",
    "device_facts": "nasfw.evaluate",
    "load_problem": "nasfw.evaluate",
    "provide_problem": "nasfw.evaluate",
    "run_search": "nasfw.search",
    "TrainOutcome": "nasfw.train",
    "train_model": "nasfw.train",
    "evaluate_model": "nasfw.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasfw' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "INPUT",
    "MERGE_KINDS",
    "ArchGraph",
    "AsynchronousTunerConfig",
    "BaseSearchSpace",
    "BuildError",
    "Candidate",
    "Chooser",
    "ClusterJob",
    "ConfigError",
    "DataError",
    "EvaluationConfig",
    "Evaluator",
    "GeneSpace",
    "GraphError",
    "Launcher",
    "LauncherConfig",
    "LauncherOutage",
    "MapResults",
    "ModelCost",
    "NasfwConfig",
    "Node",
    "OpSpec",
    "Optimizer",
    "ParamRange",
    "ParamSpec",
    "PluginError",
    "PostprocConfig",
    "Precision",
    "Problem",
    "ProblemConfig",
    "PrunerConfig",
    "RandomChooser",
    "Registry",
    "Result",
    "SearchContext",
    "SearchSpace",
    "SearchSpaceConfig",
    "SearchSpaceError",
    "Shape",
    "SpaceConfig",
    "Split",
    "StageConfig",
    "Standardization",
    "StorageConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainOutcome",
    "TrialChooser",
    "TrialRecord",
    "Tuner",
    "TunerConfig",
    "adapter",
    "build_model",
    "candidate_seed",
    "check_mode",
    "check_settings",
    "check_writable",
    "cuda_devices",
    "describe_sqlite",
    "device_facts",
    "evaluate_model",
    "hookimpl",
    "init_worker_process",
    "load_arch",
    "load_arch_in",
    "load_problem",
    "model_cost",
    "pareto_front",
    "pareto_rows",
    "plugin_manager",
    "provide_problem",
    "registry",
    "resolve_device",
    "run_search",
    "setting",
    "signals",
    "span_choices",
    "split_arrays",
    "train_model",
    "usable_cpus",
]
