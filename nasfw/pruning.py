"""Pruners: stopping networks whose learning curve falls behind.

``pruner=<name>`` makes every evaluation a live Optuna trial: it is created ``RUNNING`` when
training starts, each point of its learning curve (``train.curve_every``) is reported as an
intermediate value, and the pruner, reading the study's other trials from the shared storage,
may stop it. A stopped network is a ``PRUNED`` trial whose value is its last score (what
Optuna's ``study.tell`` stores for a pruned trial), with the epochs it trained; the tuners rank
it by that score (``Result.fitness``), below the networks that outscored it, and it is never the
search's best. The evaluation asks the pruner where it runs (a local worker or a cluster job),
through the storage, so this works the same with every launcher.

Pruners are plugins (the hook ``register_pruners``): Optuna's ``median``,
``successive_halving``, ``hyperband`` and ``patient`` come from the built-in plugin
``pruners`` (``nasfw.plugins.pruners.optuna_pruners``); ``pruner=none`` is the core's. The
settings travel to the workers as a plain dict, and each process finds the pruner in its own
registry.

With several workers, a pruner's verdict depends on which other trials have finished at that
moment, so a pruned search is not reproducible bit for bit (as with Optuna's own pruners).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasfw.config import ConfigError, PrunerConfig, as_dict, check_settings

if TYPE_CHECKING:
    import optuna

    from nasfw.config import NasfwConfig
    from nasfw.ledger import Ledger

NONE = "none"


@dataclass
class NoPrunerConfig(PrunerConfig):
    """Every network trains its full ``train.epochs``."""

    name: str = NONE


def pruner_settings(cfg: NasfwConfig, scoring: str) -> dict[str, Any] | None:
    """The settings of ``cfg.pruner`` as a plain dict for the workers, or ``None`` for
    ``pruner=none``; settings that default to the run's are filled in
    (:meth:`nasfw.PrunerConfig.for_run`: ``hyperband``'s ``max_resource`` is ``train.epochs``).

    Raises:
        ConfigError: the pruner is unknown (or its plugin blocked), or cannot work with this
            run (no learning curve with ``train.curve_every=0``; a scorer other than
            ``plain``, ``scoring``).
    """
    if cfg.pruner.name == NONE:
        return None
    settings = as_dict(cfg.pruner)
    name = str(settings["name"])
    schema, _ = _pruner(name)
    if int(cfg.train.curve_every) == 0:
        raise ConfigError(
            f"pruner={name} needs a learning curve, but train.curve_every=0 "
            "scores networks only after their last epoch; set train.curve_every=1"
        )
    if scoring != "plain":
        raise ConfigError(
            f"pruner={name} needs evaluation=plain (evaluation={scoring} trains in "
            "phases no pruner can follow); set evaluation=plain or pruner=none"
        )
    filled = _settings(schema, settings).for_run(int(cfg.train.epochs))
    try:  # the schema's rules again, on the settings the run's defaults filled in
        check_settings(filled, "pruner")
    except ConfigError as err:
        raise ConfigError(
            f"{err} (settings left unset take the run's: train.epochs={cfg.train.epochs})"
        ) from None
    return dataclasses.asdict(filled)


def make_pruner(settings: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``settings`` (from :func:`pruner_settings`) describe, made by the
    plugin that registered it."""
    schema, factory = _pruner(str(settings["name"]))
    return factory(_settings(schema, settings))


def _pruner(name: str) -> tuple[type[PrunerConfig], Callable[[Any], optuna.pruners.BasePruner]]:
    """The schema and factory registered for ``pruner=<name>``; a one-line ConfigError naming
    ``pruner=`` otherwise (with the blocked plugin that has it, or the pruners there are)."""
    import os

    from nasfw.registry import DISABLE_ENV, blocked_provider, registry

    pruners = registry().pruners
    if name in pruners:
        return pruners[name]
    provider = blocked_provider("pruners", name)
    if provider is not None:
        raise ConfigError(
            f"pruner={name} is not available because {DISABLE_ENV}={os.environ[DISABLE_ENV]} "
            f"blocks plugin {provider!r}, which provides it; unset it or choose another option"
        )
    raise ConfigError(f"pruner={name} is unknown (available: {sorted([NONE, *pruners])})")


def _settings(schema: type[PrunerConfig], settings: dict[str, Any]) -> PrunerConfig:
    """``settings`` as an instance of ``schema``."""
    try:
        return schema(**settings)
    except TypeError as err:  # keys another schema has (e.g. pruner.name set to another)
        raise ConfigError(f"pruner={settings['name']}: {err}") from None


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
