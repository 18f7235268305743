"""``tuner=petridish``: Hu et al., "Efficient Forward Architecture Search" (NeurIPS 2019).

Networks grow forward from a pool of trained models: parents near the lower convex hull of
(FLOPs, validation error) (:mod:`.hull`) get candidate layers trained beside them behind
stop-gradient and stop-forward, and the best candidates become layers of a child that starts as
the parent's exact function and inherits its weights (:mod:`.grow`, :mod:`.tuner`).

``python -m nasfw tuner=petridish search_space=petridish_full``
"""

from __future__ import annotations

from collections.abc import Callable

from nasfw import ConfigError, NasfwConfig, Tuner, hookimpl

from .tuner import Petridish, PetridishConfig

__all__ = ["Petridish", "PetridishConfig"]


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(Petridish)


@hookimpl
def nasfw_check_config(cfg: NasfwConfig) -> None:
    if cfg.tuner.name != "petridish":
        return
    evaluation, source = cfg.evaluation.name, ""
    if evaluation == "auto":
        evaluation = cfg.problem.evaluation
        source = f" (evaluation=auto takes problem.evaluation of problem={cfg.problem.name})"
    if evaluation != "plain":
        raise ConfigError(
            f"tuner=petridish continues networks from inherited weights, which "
            f"evaluation={evaluation}{source} cannot do (it retrains a shrunk network): add "
            "evaluation=plain"
        )
    pruner = cfg.pruner.name
    if pruner != "none":
        raise ConfigError(
            f"tuner=petridish cannot use pruner={pruner}: a candidate training computes its "
            "parent's function (stop-forward), so its learning curve says nothing of its "
            "candidates, and a pruned child would leave the pool; set pruner=none"
        )
