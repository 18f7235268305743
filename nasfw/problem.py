"""Problems: data splits plus what the model builder and training loop need to know."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from nasfw.config import ProblemConfig

Task = Literal["classification", "regression"]
Modality = Literal["image", "tabular", "sequence", "text"]

__all__ = ["DataError", "Modality", "Problem", "ProblemConfig", "Split", "Task", "split_arrays"]


class DataError(ValueError):
    """Problem data is missing or malformed; the message names the file or key."""


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Problem:
    """Data + task. ``input_shape`` excludes the batch dimension, channels first."""

    name: str
    task: Task
    modality: Modality
    input_shape: tuple[int, ...]
    n_outputs: int
    train: Split
    val: Split
    test: Split
    class_names: list[str] | None = None

    @property
    def metric(self) -> str:
        """Name of the validation metric; higher is better for every task."""
        return "accuracy" if self.task == "classification" else "r2"


def split_arrays(
    x: np.ndarray, y: np.ndarray, config: ProblemConfig, stratify: bool
) -> tuple[Split, Split, Split]:
    """Seeded train/val/test split; features standardised with train statistics only.

    ``x`` is float data shaped ``(n, *input_shape)``. Standardisation is per channel (axis 1)
    for images and sequences and per feature for tabular data.
    """
    from sklearn.model_selection import train_test_split

    for key in ("val_fraction", "test_fraction"):
        value = getattr(config, key)
        if not 0 < value < 1:
            raise DataError(f"problem.{key}={value} must be between 0 and 1")
    if config.val_fraction + config.test_fraction >= 1:
        raise DataError("problem.val_fraction + problem.test_fraction must be below 1")
    strat = y if stratify else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=config.test_fraction, random_state=config.split_seed, stratify=strat
    )
    val_share = config.val_fraction / (1 - config.test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_share,
        random_state=config.split_seed,
        stratify=y_rest if stratify else None,
    )
    if config.max_train_samples is not None:
        x_train, y_train = x_train[: config.max_train_samples], y_train[: config.max_train_samples]
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    std[std < 1e-8] = 1.0

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return (
        Split(norm(x_train), y_train),
        Split(norm(x_val), y_val),
        Split(norm(x_test), y_test),
    )
