"""Config schemas: every config group option is typed by a dataclass.

Hydra merges the YAML presets in ``conf/`` and the options plugins register into these, so a
wrong type or an unknown key fails at compose time with the key's full name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from omegaconf import MISSING

# Declaring and checking ranges (nasfw.settings), also reached from here as they always were.
from nasfw.settings import ConfigError as ConfigError
from nasfw.settings import check_settings as check_settings
from nasfw.settings import check_writable as check_writable
from nasfw.settings import setting as setting


class Optimizer(StrEnum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Precision(StrEnum):
    """Arithmetic of training and scoring: fp32, or bf16/fp16 mixed precision (autocast)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class ProblemConfig:
    """A problem preset: which data, and how it is split."""

    name: str = MISSING
    # Directory with the standard files, for problems read from disk (mnist, cifar10, ...).
    data_dir: str | None = None
    val_fraction: float = setting(0.2, gt=0, lt=1)
    test_fraction: float = setting(0.2, gt=0, lt=1)
    # Splits depend on this seed only, so searches with different seeds see the same data.
    split_seed: int = 0
    # Use at most this many training examples (None: all); handy for quick runs.
    max_train_samples: int | None = setting(None, ge=1)
    # Generated problems only (mnist1d, ppg_heart_rate, grammar_acceptability, ...): how many
    # examples to generate and how much noise to add (None: the problem's own default; each
    # problem's docstring says what noise means). The data depend on split_seed too; problems
    # read from files refuse both.
    n_samples: int | None = setting(None, ge=10)
    noise: float | None = setting(None, ge=0)
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
class SpaceConfig:
    """Base of the schemas of every kind of search space (``search_space=<name>``): the keys
    the core reads whatever the kind. The kind is the schema's class: a plugin registers a
    subclass with the space class it configures (``register_search_space_kinds``);
    :class:`SearchSpaceConfig` is the core's own kind, stages of chained nodes."""

    name: str = MISSING
    # Problem modalities this space can serve (image, tabular, sequence, text).
    modalities: list[str] = field(default_factory=lambda: ["image"])
    # Candidates larger than this are failed trials ("too large") before any training.
    max_params: int = setting(2_000_000, ge=1)


@dataclass
class SearchSpaceConfig(SpaceConfig):
    """A constraint set of stages: allowed ops per stage, param ranges, connection and merge
    kinds (the core's kind of space; YAML presets extend it through
    ``defaults: [/nasfw_search_space_schema@_here_, _self_]``)."""

    stages: list[StageConfig] = MISSING
    # ops.<op>.<param>: a ParamRange; params not listed keep the op's default. (OmegaConf cannot
    # type a dict of dicts of dataclasses: SearchSpace checks each entry against ParamRange.)
    ops: dict[str, Any] = field(default_factory=dict)
    # "sequential": each node feeds the next; "skip": a node may also take an earlier node.
    connections: list[str] = field(default_factory=lambda: ["sequential", "skip"])
    merge: list[str] = field(default_factory=lambda: ["concat", "add"])
    # Upper bound on nodes in a graph (None: the sum of the stages' max_nodes).
    max_nodes: int | None = setting(None, ge=1)


@dataclass
class TrainConfig:
    """The one training loop's knobs (``nasfw/train.py``)."""

    # Epochs each network trains: the full budget networks are compared at.
    epochs: int = setting(5, ge=1)
    # Examples per training step.
    batch_size: int = setting(64, ge=1)
    # The optimizer every network trains with (a tuner may choose per network).
    optimizer: Optimizer = Optimizer.adam
    # Learning rate (a tuner may choose per network).
    lr: float = setting(1e-3, gt=0)
    # L2 weight decay of the optimizer.
    weight_decay: float = setting(0.0, ge=0)
    # Torch intra-op threads per worker (None: the CPUs this process may use, its affinity and
    # cgroup quota, divided among the launcher's workers; nasfw.usable_cpus).
    threads: int | None = setting(None, ge=1)
    # auto (CUDA when a GPU is visible, else MPS where torch has it, else CPU), cpu, cuda,
    # cuda:N or mps. Every network is built, trained and scored there (nasfw/device.py).
    device: str = "auto"
    # fp32, or bf16 / fp16 autocast (fp16 with a gradient scaler): faster on recent GPUs.
    precision: Precision = Precision.fp32
    # torch.use_deterministic_algorithms(True), cuDNN autotuning off: bit-identical results on
    # one GPU model and software stack, at some speed (see docs/gpus.md).
    deterministic: bool = False
    # Score the validation split every this many epochs for the learning curve (the trial's
    # intermediate values); 0: only after the last epoch. Not counted in train_seconds.
    curve_every: int = setting(1, ge=0)

    def check(self, key: str) -> None:
        """``device`` is a device name, whatever the problem: checked here, without torch,
        since a problem looked up in a table never resolves it (nasfw/device.py checks that
        this machine has it, where networks train)."""
        if not DEVICE_NAME.fullmatch(self.device):
            raise ConfigError(
                f"{key or 'train'}.device={self.device!r} is not a device (auto, cpu, cuda, "
                "cuda:N or mps)"
            )


#: What ``train.device`` may say (whether this machine has it is resolved where networks train).
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


@dataclass
class StorageConfig:
    """Where the Optuna study (the ledger of every evaluated candidate) lives."""

    url: str = "sqlite:///nasfw.db"
    # Where networks' weights are kept (an Optuna FileSystemArtifactStore directory, relative
    # to where the search starts): only for tuners that inherit weights (Petridish) and the
    # exported best model. On a cluster, a directory every job can reach.
    artifacts: str = "nasfw-artifacts"
    # The most this study's kept weights may take on disk, in MB, after the weights no tuner
    # needs any more are deleted (each generation): beyond it the search stops, resumable with
    # a larger limit. None: no limit.
    weights_limit_mb: float | None = setting(None, gt=0)
    # How long, in seconds, a read or write the storage refuses for an outage (a full disk, a
    # read-only file system, a lost database connection) is retried before the search stops
    # (exit 2, resumable: what the study holds is intact). 0: stop at the first refusal.
    retry_seconds: float = setting(120.0, ge=0)


@dataclass
class TunerConfig:
    """Base of every tuner's schema."""

    name: str = MISSING
    # The name of another study in storage.url whose finished trials this tuner learns from
    # before its first proposal (Tuner.warm_start; tuners that cannot use them refuse it).
    warm_start: str | None = None


@dataclass
class AsynchronousTunerConfig(TunerConfig):
    """Base of the schemas of tuners that can propose one candidate at a time
    (:attr:`nasfw.Tuner.asynchronous`): the keys the search reads from them."""

    # Networks per generation: what the study's state, MLflow and the console count by.
    batch_size: int = setting(4, ge=1)
    # Ask for a new candidate as soon as a worker frees up, instead of a generation waiting
    # for its slowest network (nasfw.asynchronous).
    asynchronous: bool = False


@dataclass
class PrunerConfig:
    """Base of the ``pruner`` group's schemas (:mod:`nasfw.pruning`): ``none``, or a pruner a
    plugin registered (``register_pruners``; Optuna's own come from the plugin ``pruners``),
    which stops a network whose learning curve falls behind. A subclass's ``name`` default is
    its option's name (``pruner=<name>``)."""

    name: str = MISSING

    def for_run(self, train_epochs: int) -> Self:
        """These settings for a run whose networks train ``train_epochs`` epochs
        (``train.epochs``), before the pruner is made: a subclass fills in the settings that
        default to the run's (e.g. a ``None`` budget); the base returns them as they are."""
        return self


@dataclass
class LauncherConfig:
    name: str = MISSING


@dataclass
class TrackingConfig:
    name: str = MISSING


@dataclass
class PostprocConfig:
    name: str = MISSING


# evaluation.screen's most proposals per trained network: each is sampled and scored by the
# regressor before a single network trains, so beyond this a search only seems to hang.
SCREEN_MAX = 1000


@dataclass
class EvaluationConfig:
    """How a candidate is scored: ``plain`` (train, score on val), ``auto`` (the problem's
    ``evaluation`` setting) or a plugin's scorer (e.g. ``regularized``)."""

    name: str = MISSING
    # Screening with the mini-benchmark DB (nasfw.minibench.screen): the tuner proposes this
    # many networks for each one it trains, and a regressor trained on minibench.db picks
    # the one predicted best. 1: no screening; at most SCREEN_MAX (1000). Tuners: random,
    # evolution, codeepneat.
    screen: int = setting(1, ge=1, le=SCREEN_MAX)


class Mode(StrEnum):
    """What ``python -m nasfw`` does: run one search, or build the mini-benchmark DB."""

    search = "search"
    minibench = "minibench"


def _suite() -> list[str]:
    # Every built-in problem that needs no files: image, tabular, sequence and text.
    return [
        "digits",
        "digits_noisy",
        "digits_shifted",
        "iris",
        "wine",
        "breast_cancer",
        "diabetes",
        "friedman1",
        "mnist1d",
        "ppg_heart_rate",
        "grammar_acceptability",
        "review_sentiment",
    ]


def _full_spaces() -> dict[str, str]:
    return {
        "image": "petridish_full",
        "sequence": "petridish_full_sequence",
        "tabular": "tabular_mlp",
        "text": "text_small",
    }


@dataclass
class MinibenchConfig:
    """Mini-benchmarking (``nasfw.minibench``; Khamitov & Popova, the seeds' slides): the DB
    of the best models of a problem suite, the classes it derives, and ``search_space=auto``."""

    # The best-model DB: a file path (SQLite) or any SQLAlchemy URL a team can share.
    db: str = "minibench.db"
    # mode=minibench: the suite, one full-space search per entry. An entry is a problem preset,
    # optionally with its settings: "digits_noisy:noise=0.5,split_seed=1".
    problems: list[str] = field(default_factory=_suite)
    # The unconstrained ("full") search space per modality: what the suite's searches and the
    # probe of search_space=auto search.
    spaces: dict[str, str] = field(default_factory=_full_spaces)
    # How many of each problem's best networks the DB keeps (and the probe classifies).
    top_k: int = setting(5, ge=1)
    # F of the folded encoding: the depth bins a graph is folded into.
    folding: int = setting(4, ge=1)
    # The most classes (clusters of problems) per modality; fewer when the problems are alike.
    max_classes: int = setting(3, ge=1)
    # search_space=auto: the networks the probe trains; they are trials of the study
    # (generation -1) and count in its evaluations and time. A family whose reference networks
    # the DB scores (tables): that many of them, the most informative (all when fewer);
    # otherwise random networks of the full space (nasfw.minibench.auto).
    probe_trials: int = setting(8, ge=1)
    # search_space=auto on a family with references: the least Kendall tau between the
    # probe's reference ranking and a DB problem's for that problem to count as similar; with
    # none similar the search runs in the full space, said so (nasfw.minibench.auto).
    min_similarity: float = setting(0.3, ge=-1.0, le=1.0)
    # Reference networks per space family (nasfw.minibench.references): chosen once, when a
    # family first enters the DB, and scored on each of its problems; changing it later does
    # not change a DB's existing set.
    references: int = setting(24, ge=2)
    # Start the search from the best networks of the nearest DB problems (by how the family's
    # reference networks rank on this problem, probed as generation -1): see
    # nasfw.minibench.transfer. Tuners: evolution, tpe, random.
    warm_start: bool = False
    # How many nearest DB problems give their best networks (k): the donors of
    # minibench.warm_start, and the problems whose best networks search_space=auto's
    # constraint set spans (those at least minibench.min_similarity alike).
    donors: int = setting(3, ge=1)
    # Where mode=minibench writes the classes' constraint sets as search_space/<name>.yaml
    # (use them with hydra.searchpath=[file://<dir>] search_space=<name>). None: beside the DB
    # file (<db stem>_spaces/).
    spaces_dir: str | None = None


@dataclass
class NasfwConfig:
    """The primary config (``conf/config.yaml`` fills it from the config groups)."""

    tuner: Any = MISSING
    # A SpaceConfig subclass: the schema of the option's kind (SearchSpaceConfig for stages).
    search_space: Any = MISSING
    problem: ProblemConfig = MISSING
    postproc: Any = MISSING
    evaluation: Any = MISSING
    launcher: Any = MISSING
    storage: StorageConfig = MISSING
    tracking: Any = MISSING
    pruner: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    # The search's seed: with the same config, the same seed gives the same search.
    seed: int = setting(0, ge=0)
    # Study name in the Optuna storage; rerunning with the same name resumes the search.
    study_name: str = MISSING
    # Reuse the result of an identical network with identical training settings evaluated
    # earlier in the study (evaluations are seeded by network and settings) instead of
    # training it again; such trials carry extra.reused_from = the original trial's number.
    reuse_evaluations: bool = True
    # Where the best model is exported (relative to Hydra's run directory when not absolute).
    export_dir: str = "best_model"
    # plugins.<name>: the settings of plugins that join every search through lifecycle hooks
    # (not a choice like tuner=...); each is the schema the plugin registered with
    # register("plugins", "<name>", Schema), so its types and ranges are checked like the rest.
    plugins: dict[str, Any] = field(default_factory=dict)
    # search: run one search; minibench: build the mini-benchmark DB (minibench.*).
    mode: Mode = Mode.search
    minibench: MinibenchConfig = field(default_factory=MinibenchConfig)


class PluginSettings(dict[str, Any]):
    """``plugins.<name>``: each lifecycle plugin's settings (its schema's instance), by name,
    read as ``cfg.plugins.mine`` or ``cfg.plugins["mine"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no plugin settings plugins.{name}") from None


def typed_config(cfg: Any) -> NasfwConfig:
    """The run's config as typed objects: the door through which a composed Hydra config
    (``DictConfig``) enters the search. Past it, the core and the plugins read attributes of
    schema instances (each group's node is the schema of the option chosen, e.g. a
    ``TPEConfig``), never a node read with a default written again at the call site.

    A plugin's option registered as a mapping or YAML file, without a schema, stays a
    ``DictConfig`` (attribute access works the same).

    Raises:
        ConfigError: a value out of its declared range (:func:`check_settings`).
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, NasfwConfig):
        return cfg
    type_search_space(cfg)
    check_settings(cfg)
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, NasfwConfig)
    for f in dataclasses.fields(NasfwConfig):
        node = cfg[f.name]
        if isinstance(getattr(config, f.name), dict) and isinstance(node, DictConfig):
            if f.name == "plugins":
                config.plugins = PluginSettings(
                    (name, value if not isinstance(value, dict) else node[name])
                    for name, value in config.plugins.items()
                )
            elif OmegaConf.get_type(node) in (None, dict):
                setattr(config, f.name, node)
    return config


def as_dict(node: Any) -> dict[str, Any]:
    """A schema instance (or config node) as plain JSON-able values (enums as strings)."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        node = OmegaConf.structured(node)
    found = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    assert isinstance(found, dict)
    return found


def type_search_space(cfg: Any) -> None:
    """Type ``cfg.search_space`` in place where its option came without a schema (a YAML file
    on a search path that does not extend ``nasfw_search_space_schema``): it is then the
    core's kind, :class:`SearchSpaceConfig`. Options with a schema are left as they are.

    Raises:
        ConfigError: a key or value the schema does not take, naming ``search_space.<key>``.
    """
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    node = cfg.get("search_space") if hasattr(cfg, "get") else None
    if node is None or OmegaConf.get_type(node) not in (None, dict):
        return
    try:
        typed = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), node)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        detail = str(err).splitlines()[0]
        raise ConfigError(f"search_space{'.' + key if key else ''}: {detail}") from None
    with open_dict(cfg):
        cfg.search_space = typed
