"""Optuna's pruners: ``pruner=median``, ``successive_halving``, ``hyperband``, ``patient``.

Each stops a network whose learning curve falls behind the other networks' (how a pruned
network is trained, stored and ranked: :mod:`nasfw.pruning`). A plugin like a third-party one:
a schema and a factory per pruner, through ``register_pruners``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from nasfw import ConfigError, PrunerConfig, hookimpl, setting

# Optuna is imported where a pruner is made: registering the plugin (every `python -m nasfw`,
# --help included) must not pay for importing it.
if TYPE_CHECKING:
    import optuna


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """``optuna.pruners.MedianPruner``: stop a network whose score at an epoch is below the
    median of the finished networks' scores at that epoch."""

    name: str = "median"
    # Finished trials needed before anything is pruned.
    n_startup_trials: int = setting(5, ge=0)
    # Epochs every network trains before it can be pruned.
    n_warmup_steps: int = setting(0, ge=0)
    interval_steps: int = setting(1, ge=1)
    # Trials that must have reported an epoch before that epoch's median is used.
    n_min_trials: int = setting(1, ge=1)


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    """``optuna.pruners.SuccessiveHalvingPruner`` (asynchronous successive halving, ASHA)."""

    name: str = "successive_halving"
    # Epochs before the first rung (None: Optuna's "auto", from the first finished trials).
    min_resource: int | None = setting(None, ge=1)
    reduction_factor: int = setting(4, ge=2)
    min_early_stopping_rate: int = setting(0, ge=0)
    bootstrap_count: int = setting(0, ge=0)


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """``optuna.pruners.HyperbandPruner``: several successive-halving brackets at once."""

    name: str = "hyperband"
    min_resource: int = setting(1, ge=1)
    # The most epochs a network trains (None: train.epochs).
    max_resource: int | None = setting(None, ge=1)
    reduction_factor: int = setting(3, ge=2)
    bootstrap_count: int = setting(0, ge=0)

    def for_run(self, train_epochs: int) -> Self:
        if self.max_resource is not None:
            return self
        return dataclasses.replace(self, max_resource=train_epochs)

    def check(self, key: str) -> None:
        """A bracket needs room to halve in: ``min_resource`` below ``max_resource`` (with
        ``max_resource=None``, below ``train.epochs``: checked by :func:`nasfw.pruner_settings`
        through :meth:`for_run`)."""
        if self.max_resource is not None and self.min_resource >= self.max_resource:
            raise ConfigError(
                f"{key}.min_resource={self.min_resource} must be below "
                f"{key}.max_resource={self.max_resource}: no network could ever be pruned"
            )


@dataclass
class PatientPrunerConfig(PrunerConfig):
    """``optuna.pruners.PatientPruner`` on its own: stop a network whose score has not
    improved by more than ``min_delta`` for ``patience`` epochs."""

    name: str = "patient"
    patience: int = setting(2, ge=0)
    min_delta: float = setting(0.0, ge=0)


def _options(settings: PrunerConfig) -> dict[str, Any]:
    """The settings as the Optuna pruner's keyword arguments."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "name"}


def median(settings: MedianPrunerConfig) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(**_options(settings))


def successive_halving(settings: SuccessiveHalvingPrunerConfig) -> optuna.pruners.BasePruner:
    import optuna

    options = _options(settings)
    options["min_resource"] = options["min_resource"] or "auto"
    return optuna.pruners.SuccessiveHalvingPruner(**options)


def hyperband(settings: HyperbandPrunerConfig) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(**_options(settings))


def patient(settings: PatientPrunerConfig) -> optuna.pruners.BasePruner:
    import warnings

    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(None, **_options(settings))


@hookimpl
def register_pruners(register: Callable[[type[PrunerConfig], Callable[..., Any]], None]) -> None:
    register(MedianPrunerConfig, median)
    register(SuccessiveHalvingPrunerConfig, successive_halving)
    register(HyperbandPrunerConfig, hyperband)
    register(PatientPrunerConfig, patient)
