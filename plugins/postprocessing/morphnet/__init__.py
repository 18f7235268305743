"""MorphNet in PyTorch: a FLOP regularizer on batch-norm gammas, shrinking, and the seeds'
regularized scoring.

- ``postproc=morphnet``: after the search, the best ``top_k`` networks are trained with gates
  and the FLOP regularizer, shrunk to their alive widths (optionally expanded to a FLOP
  budget), retrained, and reported (FLOPs, params, accuracy before and after).
- ``evaluation=regularized``: every candidate is scored through its shrunk version (one
  regularized epoch, then the small network trains for the rest of ``train.epochs``); the
  score goes to the unmodified genome (Nikulenkov, Khamitov, Popova: "Regularization approach
  for accelerating Neural Architecture Search").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nasfw import EvaluationConfig, PostprocConfig, hookimpl, setting


@dataclass
class MorphSettings:
    """How MorphNet shrinks a network (shared by scoring and the post-processor)."""

    # λ = strength / initial FLOPs (the seeds: 1 / init_flop).
    strength: float = setting(1.0, gt=0)
    # |gamma| above this is alive (the seeds: 0.1 for MNIST/CIFAR-10, 0.05 for harder sets).
    threshold: float = setting(0.1, ge=0)
    # Epochs of regularized training before shrinking (the seeds: one).
    shrink_epochs: int = setting(1, ge=1)
    # Learning rate of the gates at the start of the shrink phase, annealed linearly to 0: with
    # few steps per epoch (small data sets) the network's own rate cannot move a gamma from 1
    # below the threshold, and a constant one leaves beaten gammas jittering around 0.
    gate_lr: float = setting(0.5, gt=0)
    # Start the shrunk network from the gated one's surviving weights (scale folded in)
    # instead of a fresh initialization; layers whose channels cannot be traced start fresh.
    # Off for the post-processor: MorphNet retrains the final architecture from scratch.
    carry_weights: bool = False


@dataclass
class RegularizedScoringConfig(EvaluationConfig, MorphSettings):
    name: str = "regularized"
    # On for scoring: the shrink phase's epoch of training is kept, not thrown away; on Table
    # 1's paired first generation (digits) it scored 80.5 % instead of 75.7 % (plain: 80.9 %).
    carry_weights: bool = True


@dataclass
class MorphNetConfig(PostprocConfig, MorphSettings):
    name: str = "morphnet"
    # How many of the best networks (distinct graphs) are shrunk and retrained.
    top_k: int = setting(3, ge=1)
    # Expand the shrunk network uniformly to this many FLOPs (None: no expansion).
    flop_budget: float | None = setting(None, gt=0)


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("evaluation", "regularized", RegularizedScoringConfig)
    register("postproc", "morphnet", MorphNetConfig)


# torch is imported when a network is scored or shrunk, not when plugins are discovered: every
# `python -m nasfw` (--help and config errors included) loads this module.
def regularized_score(*args: Any, **kwargs: Any) -> Any:
    """:func:`.scoring.regularized_score`, imported on first use."""
    from .scoring import regularized_score as score

    return score(*args, **kwargs)


def run_postproc(*args: Any, **kwargs: Any) -> Any:
    """:func:`.postproc.run_postproc`, imported on first use."""
    from .postproc import run_postproc as postproc

    return postproc(*args, **kwargs)


@hookimpl
def register_scorers(register: Callable[[str, Any], None]) -> None:
    register("regularized", regularized_score)


@hookimpl
def register_postprocessors(register: Callable[[str, Any], None]) -> None:
    register("morphnet", run_postproc)


__all__ = ["MorphNetConfig", "RegularizedScoringConfig"]
