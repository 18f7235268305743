"""Problems: data splits plus what the model builder and training loop need to know."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from nasfw.config import ProblemConfig
from nasfw.metrics import DEFAULT_METRIC, metric

if TYPE_CHECKING:
    from nasfw.graph import ArchGraph
    from nasfw.records import Result

Task = Literal["classification", "regression"]
Modality = Literal["image", "tabular", "sequence", "text"]

__all__ = [
    "DataError",
    "Modality",
    "Problem",
    "ProblemConfig",
    "Split",
    "Standardization",
    "Table",
    "Task",
    "split_arrays",
]


class DataError(ValueError):
    """Problem data is missing or malformed; the message names the file or key."""


@dataclass(frozen=True)
class Standardization:
    """How raw inputs become model inputs: ``(raw - shift) / scale``, per channel (images,
    sequences) or per feature (tabular); ``shift``/``scale`` broadcast against ``(N, *shape)``.
    """

    shift: np.ndarray
    scale: np.ndarray

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.shift) / self.scale).astype(np.float32, copy=False)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs of standardised ones (e.g. to give an exported model raw examples)."""
        return (x * self.scale + self.shift).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "formula": "model_input = (raw - shift) / scale",
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
        }


class Table(Protocol):
    """A tabular benchmark: every network of a search space trained offline, its results
    recorded per training seed (NAS-Bench-201, FCNet, HPOBench's MLP). A problem with a table
    (:attr:`Problem.table`) is evaluated by lookup, never trained.

    ``space`` names the ``search_space`` option whose graphs the table holds; ``n_train`` is
    the examples its networks trained on (a meta-feature); ``fidelity`` says whether it
    records results at budgets below the full one (multi-fidelity tuners need it).
    """

    space: str
    n_train: int
    fidelity: bool

    def fits(self, space: object) -> str | None:
        """Why the graphs of search space ``space`` (a :class:`nasfw.BaseSearchSpace`) are not
        all in the table, or None when they are."""
        ...

    def lookup(self, graph: ArchGraph, seed: int) -> Result:
        """The recorded result of ``graph`` for the training seed ``seed`` picks (the same
        seed, the same value): the metric, ``train_seconds`` the recorded training time
        (simulated: ``extra["clock"] == "simulated"``), the network's size. A graph outside
        the table raises :class:`nasfw.GraphError` saying why."""
        ...


@dataclass
class Split:
    """One split of a problem's data, as the training loop reads it.

    ``x``: ``float32``, shaped ``(n, *input_shape)`` (channels first); a text problem's
    ``x`` holds integer token ids in ``[0, vocab_size)``, shaped ``(n, L)``. ``y``:
    classification, integer class indices in ``[0, n_outputs)`` shaped ``(n,)`` (read as
    ``int64``); regression, floating-point targets shaped ``(n,)`` or ``(n, n_outputs)``
    (read as ``float32``). :func:`split_arrays` makes all three splits so.
    """

    x: np.ndarray
    y: np.ndarray
    # What split_arrays standardised ``x`` with (train statistics), in the loader's units.
    standardization: Standardization | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Problem:
    """Data + task. ``input_shape`` excludes the batch dimension, channels first.

    ``task`` is ``"classification"`` or ``"regression"``; ``modality`` is ``"image"``
    (``(C, H, W)``), ``"tabular"`` (``(F,)``), ``"sequence"`` (``(C, L)``) or ``"text"``
    (``(L,)`` token ids): the search space must serve it. The splits' dtypes: :class:`Split`.
    """

    name: str
    # "classification" or "regression" (nasfw.problem.Task).
    task: Task
    # "image", "tabular", "sequence" or "text" (nasfw.problem.Modality).
    modality: Modality
    input_shape: tuple[int, ...]
    n_outputs: int
    train: Split
    val: Split
    test: Split
    class_names: list[str] | None = None
    # The loader's units per raw unit (e.g. 1/255 for 8-bit pixels it divided by 255).
    raw_scale: float = 1.0
    # The validation metric (nasfw.metrics; higher is better): "" picks the task's default,
    # accuracy or r2.
    metric: str = ""
    # Text problems: x holds token ids, ints in [0, vocab_size) shaped (n, L), with 0 padding;
    # only token ops (embedding) read them. None: x holds float values.
    vocab_size: int | None = None
    # The word of every token id (vocabulary[0] is the padding), where the problem knows them;
    # vocab_size defaults to its length.
    vocabulary: list[str] | None = None
    # A tabular benchmark's recorded results: candidates are looked up there, never trained
    # (the splits are then empty, shaped (0, *input_shape)).
    table: Table | None = None

    def __post_init__(self) -> None:
        self.metric = self.metric or DEFAULT_METRIC[self.task]
        if self.vocab_size is None and self.vocabulary is not None:
            self.vocab_size = len(self.vocabulary)
        metric(self.metric, self.task)  # an unknown name fails when the problem loads

    @property
    def n_train(self) -> int:
        """The training examples: the train split's, or those the table's networks trained on."""
        return self.table.n_train if self.table is not None else len(self.train)

    @property
    def output_bias(self) -> np.ndarray | None:
        """Regression: the train targets' mean per output, where the head's bias starts (the
        mean predictor, the task's baseline); None for classification."""
        if self.task != "regression" or not len(self.train):
            return None
        y = np.asarray(self.train.y, dtype=np.float64).reshape(len(self.train), -1)
        return y.mean(axis=0).astype(np.float32)

    @property
    def preprocessing(self) -> Standardization | None:
        """Raw inputs (as stored in the data files) to model inputs, or None if unknown."""
        stats = self.train.standardization
        if stats is None:
            return None
        return Standardization(stats.shift / self.raw_scale, stats.scale / self.raw_scale)


def _split(
    x: np.ndarray, y: np.ndarray, size: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``train_test_split`` that falls back to a plain shuffle where stratifying is impossible."""
    from sklearn.model_selection import train_test_split

    if stratify:
        try:
            return train_test_split(x, y, test_size=size, random_state=seed, stratify=y)
        except ValueError:
            # A class with one member, or fewer held-out rows than classes (tiny data sets,
            # small max sizes): sklearn refuses to stratify, a seeded shuffle still works.
            pass
    return train_test_split(x, y, test_size=size, random_state=seed)


def split_arrays(
    x: np.ndarray,
    y: np.ndarray,
    config: ProblemConfig,
    stratify: bool,
    *,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    standardize: bool = True,
) -> tuple[Split, Split, Split]:
    """Seeded train/val/test split; features standardised with train statistics only.

    ``x`` is float data shaped ``(n, *input_shape)``. Standardisation is per channel (axis 1)
    for images and sequences and per feature for tabular data.

    Without ``test``, ``x``/``y`` are split three ways by ``val_fraction`` and ``test_fraction``
    (fractions of the whole). With ``test=(x_test, y_test)`` (a data set's official test set),
    that is the test split, ``test_fraction`` is unused and ``val_fraction`` is the share of
    ``x``/``y`` held out for validation. ``max_train_samples`` then caps the train split only.
    The splits depend on ``config.split_seed`` alone; ``stratify`` keeps class proportions
    where the data allow it. ``standardize=False`` keeps ``x`` as it is (token ids).
    """
    keys = ("val_fraction",) if test is not None else ("val_fraction", "test_fraction")
    for key in keys:
        value = getattr(config, key)
        if not 0 < value < 1:
            raise DataError(f"problem.{key}={value} must be between 0 and 1")
    if test is None and config.val_fraction + config.test_fraction >= 1:
        raise DataError("problem.val_fraction + problem.test_fraction must be below 1")
    if config.max_train_samples is not None and config.max_train_samples < 1:
        raise DataError(f"problem.max_train_samples={config.max_train_samples} must be at least 1")
    if len(x) != len(y):
        raise DataError(f"problem={config.name}: {len(x)} examples but {len(y)} targets")
    seed = config.split_seed
    try:
        if test is None:
            x_rest, x_test, y_rest, y_test = _split(x, y, config.test_fraction, seed, stratify)
            val_share = config.val_fraction / (1 - config.test_fraction)
        else:
            x_rest, y_rest, (x_test, y_test) = x, y, test
            val_share = config.val_fraction
        x_train, x_val, y_train, y_val = _split(x_rest, y_rest, val_share, seed, stratify)
    except ValueError as err:  # e.g. too few examples for these fractions
        raise DataError(f"problem={config.name}: cannot split {len(x)} examples: {err}") from err
    if x_test.shape[1:] != x.shape[1:] or len(x_test) != len(y_test):
        raise DataError(
            f"problem={config.name}: test examples shaped {x_test.shape} with {len(y_test)} "
            f"targets do not match training examples shaped {x.shape}"
        )
    if config.max_train_samples is not None:
        x_train, y_train = x_train[: config.max_train_samples], y_train[: config.max_train_samples]
    if not standardize:
        return Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test)
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    std[std < 1e-8] = 1.0

    stats = Standardization(mean, std)
    return (
        Split(stats.apply(x_train), y_train, stats),
        Split(stats.apply(x_val), y_val, stats),
        Split(stats.apply(x_test), y_test, stats),
    )
