"""The private Optuna study a TPE-driven tuner proposes from (``tuner=tpe``, and ``tuner=hyperband``
with ``tuner.sampler=tpe``).

The search's persistent study is the ledger; a tuner keeps what it was told as JSON entries
(its state) and rebuilds an in-memory study from them, so a resumed search proposes exactly what
an uninterrupted one would. An entry is ``{"params", "distributions", "value", "state",
"curve"}``: distributions as Optuna's JSON, ``state`` a ``TrialState`` name, ``curve`` the
learning curve (``{"epoch": score}``) that becomes the trial's intermediate values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

# Optuna is imported where it is used: registering the plugins must not pay for importing it.
if TYPE_CHECKING:
    import optuna

    from nasfw import Result

# Seeds of successive draws of one search: seed * SEED_STRIDE + draw.
SEED_STRIDE = 100_003


def tpe_sampler(
    seed: int,
    draw: int,
    n_startup_trials: int,
    multivariate: bool = True,
    group: bool = True,
    previous: optuna.samplers.BaseSampler | None = None,
) -> optuna.samplers.TPESampler:
    """A constant-liar TPE sampler seeded from the search's ``seed`` and the ``draw`` (a
    generation, a bracket, a trial count): the same pair always proposes the same.

    ``previous``: the sampler this one replaces on the same study. A multivariate TPE keeps
    the study's search space (the intersection, or the groups, of every trial's
    distributions) and adds only the trials since its last call; a new sampler would compute
    it again from every trial, which makes a search of n one-network generations cost O(n^2)
    distribution comparisons (~20 ms a proposal at 200 trials). That cache is a function of
    the study's trials alone, so handing it on proposes exactly what a fresh sampler would.
    """
    import optuna

    with warnings.catch_warnings():
        # multivariate/group/constant_liar are "experimental" in Optuna, and on purpose here.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed * SEED_STRIDE + draw,
            n_startup_trials=n_startup_trials,
            multivariate=multivariate,
            group=group and multivariate,
            constant_liar=True,
        )
    if (
        isinstance(previous, optuna.samplers.TPESampler)
        and previous._multivariate == sampler._multivariate
        and previous._group == sampler._group
    ):
        # Optuna's private attributes (checked by tests/test_tpe.py): the caches only.
        sampler._search_space = previous._search_space
        sampler._group_decomposed_search_space = previous._group_decomposed_search_space
    return sampler


def private_study(
    entries: Iterable[dict[str, Any]], sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    """An in-memory study (maximizing) holding ``entries`` as finished trials."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler)
    for entry in entries:
        study.add_trial(frozen_trial(entry))
    return study


def frozen_trial(entry: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """The finished trial an entry describes."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    # Entries written before pruning existed have no state: a value means COMPLETE.
    state = entry.get("state", "COMPLETE" if entry["value"] is not None else "FAIL")
    return optuna.trial.create_trial(
        params=entry["params"],
        distributions={k: json_to_distribution(d) for k, d in entry["distributions"].items()},
        value=entry["value"] if state != "FAIL" else None,
        state=TrialState[state],
        intermediate_values={int(k): v for k, v in entry.get("curve", {}).items()},
    )


def result_entry(
    params: dict[str, Any],
    distributions: dict[str, Any],
    result: Result,
    complete_curve: bool = False,
) -> dict[str, Any]:
    """The entry of one evaluation: COMPLETE, PRUNED (with its learning curve, which TPE ranks
    pruned trials by) or FAIL (failed, or no finite score; Optuna's TPE ignores these).

    ``complete_curve``: a COMPLETE entry keeps its learning curve too (TPE never reads it).
    """
    from optuna.distributions import distribution_to_json

    state = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}[result.status]
    if state != "FAIL" and not math.isfinite(result.fitness):
        state = "FAIL"
    keep_curve = state == "PRUNED" or (complete_curve and state == "COMPLETE")
    return {
        "params": params,
        "distributions": {k: distribution_to_json(d) for k, d in distributions.items()},
        "value": result.fitness if state != "FAIL" else None,
        "state": state,
        "curve": {str(k): v for k, v in result.curve.items()} if keep_curve else {},
    }


def warm_entries(
    trials: Iterable[Any], keep_failed: bool, complete_curve: bool = False
) -> list[dict[str, Any]]:
    """The entries of another study's trials (``tuner.warm_start``; each with ``params``,
    ``distributions`` and ``result``, as :class:`nasfw.TrialRecord`): those with params, and
    the failed ones only with ``keep_failed`` (as FAIL, which TPE ignores but which count in
    the private study's trials)."""
    return [
        result_entry(t.params, t.distributions, t.result, complete_curve)
        for t in trials
        if t.params and (keep_failed or t.result.status != "failed")
    ]
