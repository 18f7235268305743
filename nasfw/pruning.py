"""Pruners: Optuna's own, stopping networks whose learning curve falls behind.

``pruner=median`` (or ``successive_halving``, ``hyperband``, ``patient``) makes every evaluation
a live Optuna trial: it is created ``RUNNING`` when training starts, each point of its learning
curve (``train.curve_every``) is reported as an intermediate value, and the pruner, reading the
study's other trials from the shared storage, may stop it. A stopped network is a ``PRUNED``
trial whose value is its last score (what Optuna's ``study.tell`` stores for a pruned trial),
with the epochs it trained; the tuners rank it by that score (``Result.fitness``), below the
networks that outscored it, and it is never the search's best. The evaluation asks the pruner
where it runs (a local worker or a cluster job), through the storage, so this works the same
with every launcher.

With several workers, a pruner's verdict depends on which other trials have finished at that
moment, so a pruned search is not reproducible bit for bit (as with Optuna's own pruners).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasfw.config import ConfigError, PrunerConfig, as_dict, setting

if TYPE_CHECKING:
    import optuna

    from nasfw.config import NasfwConfig
    from nasfw.ledger import Ledger


@dataclass
class NoPrunerConfig(PrunerConfig):
    """Every network trains its full ``train.epochs``."""

    name: str = "none"


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


@dataclass
class PatientPrunerConfig(PrunerConfig):
    """``optuna.pruners.PatientPruner`` on its own: stop a network whose score has not
    improved by more than ``min_delta`` for ``patience`` epochs."""

    name: str = "patient"
    patience: int = setting(2, ge=0)
    min_delta: float = setting(0.0, ge=0)


SCHEMAS: dict[str, type[PrunerConfig]] = {
    schema.name: schema
    for schema in (
        NoPrunerConfig,
        MedianPrunerConfig,
        SuccessiveHalvingPrunerConfig,
        HyperbandPrunerConfig,
        PatientPrunerConfig,
    )
}


def pruner_settings(cfg: NasfwConfig, scoring: str) -> dict[str, Any] | None:
    """The settings of ``cfg.pruner`` as a plain dict for the workers, or ``None`` for
    ``pruner=none``. ``hyperband``'s ``max_resource`` defaults to ``train.epochs``.

    Raises:
        ConfigError: the pruner cannot work with this run (no learning curve with
            ``train.curve_every=0``; a scorer other than ``plain``, ``scoring``).
    """
    if cfg.pruner.name == "none":
        return None
    settings = as_dict(cfg.pruner)
    if settings["name"] not in SCHEMAS:
        raise ConfigError(f"pruner={settings['name']} is unknown (available: {sorted(SCHEMAS)})")
    if int(cfg.train.curve_every) == 0:
        raise ConfigError(
            f"pruner={settings['name']} needs a learning curve, but train.curve_every=0 "
            "scores networks only after their last epoch; set train.curve_every=1"
        )
    if scoring != "plain":
        raise ConfigError(
            f"pruner={settings['name']} needs evaluation=plain (evaluation={scoring} trains in "
            "phases no pruner can follow); set evaluation=plain or pruner=none"
        )
    if settings["name"] == "hyperband" and settings["max_resource"] is None:
        settings["max_resource"] = int(cfg.train.epochs)
    return settings


def make_pruner(settings: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``settings`` (from :func:`pruner_settings`) describe."""
    import optuna

    kwargs = {k: v for k, v in settings.items() if k != "name"}
    name = settings["name"]
    if name == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "successive_halving":
        kwargs["min_resource"] = kwargs["min_resource"] or "auto"
        return optuna.pruners.SuccessiveHalvingPruner(**kwargs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    if name == "patient":
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(None, **kwargs)
    raise ConfigError(f"pruner={name} is unknown (available: {sorted(SCHEMAS)})")


class TrialReporter:
    """Reports a running trial's learning curve to the study and asks the pruner after each
    point: ``reporter(epoch, value) -> True`` to stop (``train_model``'s ``report``).

    Nothing here may crash an evaluation: a storage that stops answering (or a trial that was
    marked interrupted meanwhile) ends the reporting, and the network trains to the end.
    """

    def __init__(self, ledger: Ledger, trial_id: int, settings: dict[str, Any]) -> None:
        import optuna

        self.ledger = ledger
        self.trial_id = trial_id
        self.pruner = make_pruner(settings)
        self.study = optuna.load_study(
            study_name=ledger.study.study_name, storage=ledger.storage, pruner=self.pruner
        )
        self.live = True

    def __call__(self, epoch: int, value: float) -> bool:
        if not self.live:
            return False
        storage = self.ledger.storage
        try:
            storage.set_trial_intermediate_value(self.trial_id, epoch, value)
            return bool(self.pruner.prune(self.study, storage.get_trial(self.trial_id)))
        except Exception as err:
            self.live = False
            print(
                f"nasfw: the pruner cannot follow trial {self.trial_id} any more ({err}); it "
                "trains to the end",
                file=sys.stderr,
            )
            return False
