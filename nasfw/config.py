"""Config schemas: every config group option is typed by a dataclass.

Hydra merges the YAML presets in ``conf/`` and the options plugins register into these, so a
wrong type or an unknown key fails at compose time with the key's full name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value is unusable; the message names the key (e.g. ``tuner.mode``)."""


class Optimizer(StrEnum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


@dataclass
class ProblemConfig:
    """A problem preset: which data, and how it is split."""

    name: str = MISSING
    # Directory with the standard files, for problems read from disk (mnist, cifar10, ...).
    data_dir: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # Splits depend on this seed only, so searches with different seeds see the same data.
    split_seed: int = 0
    # Use at most this many training examples (None: all); handy for quick runs.
    max_train_samples: int | None = None
    # How candidates of this problem are scored when evaluation=auto (plain or regularized).
    evaluation: str = "plain"


@dataclass
class ParamRange:
    """Range of one op param in a search space: ``[low, high]`` or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    choices: list[Any] | None = None
    log: bool = False


@dataclass
class StageConfig:
    """A run of consecutive nodes drawn from ``ops`` (e.g. features, then classifier)."""

    name: str = MISSING
    ops: list[str] = MISSING
    min_nodes: int = 1
    max_nodes: int = 4


@dataclass
class SearchSpaceConfig:
    """A constraint set: allowed ops per stage, param ranges, connection and merge kinds."""

    name: str = MISSING
    # Problem modalities this space can serve (image, tabular, sequence, text).
    modalities: list[str] = field(default_factory=lambda: ["image"])
    stages: list[StageConfig] = MISSING
    # ops.<op>.<param>: a ParamRange; params not listed keep the op's default. (OmegaConf cannot
    # type a dict of dicts of dataclasses: SearchSpace checks each entry against ParamRange.)
    ops: dict[str, Any] = field(default_factory=dict)
    # "sequential": each node feeds the next; "skip": a node may also take an earlier node.
    connections: list[str] = field(default_factory=lambda: ["sequential", "skip"])
    merge: list[str] = field(default_factory=lambda: ["concat", "add"])
    # Upper bound on nodes in a graph (None: the sum of the stages' max_nodes).
    max_nodes: int | None = None
    # Candidates larger than this are failed trials ("too large") before any training.
    max_params: int = 2_000_000


@dataclass
class TrainConfig:
    """The one training loop's knobs (``nasfw/train.py``)."""

    epochs: int = 5
    batch_size: int = 64
    optimizer: Optimizer = Optimizer.adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Torch intra-op threads per worker (None: cores divided among the launcher's workers).
    threads: int | None = None
    device: str = "cpu"


@dataclass
class StorageConfig:
    """Where the Optuna study (the ledger of every evaluated candidate) lives."""

    url: str = "sqlite:///nasfw.db"


@dataclass
class TunerConfig:
    """Base of every tuner's schema."""

    name: str = MISSING


@dataclass
class LauncherConfig:
    name: str = MISSING


@dataclass
class TrackingConfig:
    name: str = MISSING


@dataclass
class PostprocConfig:
    name: str = MISSING


@dataclass
class EvaluationConfig:
    """How a candidate is scored: ``plain`` (train, score on val), ``auto`` (the problem's
    ``evaluation`` setting) or a plugin's scorer (e.g. ``regularized``)."""

    name: str = MISSING


@dataclass
class NasfwConfig:
    """The primary config (``conf/config.yaml`` fills it from the config groups)."""

    tuner: Any = MISSING
    search_space: SearchSpaceConfig = MISSING
    problem: ProblemConfig = MISSING
    postproc: Any = MISSING
    evaluation: Any = MISSING
    launcher: Any = MISSING
    storage: StorageConfig = MISSING
    tracking: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    # Study name in the Optuna storage; rerunning with the same name resumes the search.
    study_name: str = MISSING
    # Reuse the result of an identical network with identical training settings evaluated
    # earlier in the study (evaluations are seeded by network and settings) instead of
    # training it again; such trials carry extra.reused_from = the original trial's number.
    reuse_evaluations: bool = True
    # Where the best model is exported (relative to Hydra's run directory when not absolute).
    export_dir: str = "best_model"
