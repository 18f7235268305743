"""TPE: Optuna's TPESampler drives the architecture choices, define-by-run.

The sampler works on a private in-memory study holding what this tuner was told; the search's
persistent study stays the ledger. Each generation gets a sampler seeded from (seed, generation),
so a resumed search proposes exactly what an uninterrupted one would. A network the search's
pruner stopped is told as a PRUNED trial with its learning curve, which TPE ranks below the
finished ones by how far it got (Optuna's own treatment); ``tuner.warm_start=<study>`` adds
another study's finished trials to the private study before the first proposal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasfw import Candidate, Result, TrialChooser, Tuner, TunerConfig, hookimpl, setting

# Optuna is imported where a tuner uses it: registering the plugin (every `python -m nasfw`,
# --help included) must not pay for importing it.
if TYPE_CHECKING:
    import optuna


@dataclass
class TPEConfig(TunerConfig):
    name: str = "tpe"
    # Total evaluations.
    n_trials: int = setting(20, ge=1)
    # Evaluations per generation (one batch for the launcher); pending ones are "lied" about.
    batch_size: int = setting(4, ge=1)
    # Random trials before TPE starts modelling.
    n_startup_trials: int = setting(8, ge=0)
    multivariate: bool = True
    # Conditional spaces (params that exist only for some ops) need grouped multivariate TPE.
    group: bool = True


class TPETuner(Tuner):
    config: TPEConfig

    def __init__(self, config: Any, space: Any, seed: int) -> None:
        import optuna

        super().__init__(config, space, seed)
        self.generation = 0
        self.told: list[dict[str, Any]] = []
        self.warm: list[dict[str, Any]] = []  # another study's trials (tuner.warm_start)
        self.study = optuna.create_study(direction="maximize")
        self.pending: list[optuna.Trial] = []

    def _sampler(self) -> optuna.samplers.TPESampler:
        import optuna

        with warnings.catch_warnings():
            # multivariate/group/constant_liar are "experimental" in Optuna, and on purpose here.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed * 100_003 + self.generation,
                n_startup_trials=self.config.n_startup_trials,
                multivariate=self.config.multivariate,
                group=self.config.group and self.config.multivariate,
                constant_liar=True,
            )

    def ask(self) -> list[Candidate]:
        count = min(self.config.batch_size, self.config.n_trials - len(self.told))
        self.study.sampler = self._sampler()
        self.pending = []
        candidates = []
        for _ in range(max(count, 0)):
            trial = self.study.ask()
            graph = self.space.sample(TrialChooser(trial))
            self.pending.append(trial)
            candidates.append(Candidate(graph, dict(trial.params), dict(trial.distributions)))
        return candidates

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        from optuna.trial import TrialState

        for trial, candidate, result in zip(self.pending, candidates, results, strict=True):
            entry = _entry(candidate.params, candidate.distributions, result)
            if entry["state"] == "PRUNED":
                for step, value in entry["curve"].items():
                    trial.report(value, int(step))
            state = TrialState[entry["state"]]
            # Optuna takes a value with COMPLETE only; PRUNED keeps its last reported one.
            self.study.tell(
                trial, entry["value"] if state == TrialState.COMPLETE else None, state=state
            )
            self.told.append(entry)
        self.pending = []
        self.generation += 1

    def warm_start(self, trials: list[Any]) -> None:
        """Learn from another study's finished trials (``tuner.warm_start``): those with
        params join the private study, and so shape every proposal."""
        self.warm = [_entry(t.params, t.distributions, t.result) for t in trials if t.params]
        self._rebuild()

    def state(self) -> dict[str, Any]:
        return {"generation": self.generation, "told": self.told, "warm": self.warm}

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.told = list(state["told"])
        self.warm = list(state.get("warm", []))
        self._rebuild()

    def _rebuild(self) -> None:
        import optuna
        from optuna.distributions import json_to_distribution
        from optuna.trial import TrialState

        self.study = optuna.create_study(direction="maximize")
        for entry in [*self.warm, *self.told]:
            # Entries written before pruning existed have no state: a value means COMPLETE.
            state = entry.get("state", "COMPLETE" if entry["value"] is not None else "FAIL")
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=entry["params"],
                    distributions={
                        k: json_to_distribution(d) for k, d in entry["distributions"].items()
                    },
                    value=entry["value"] if state != "FAIL" else None,
                    state=TrialState[state],
                    intermediate_values={int(k): v for k, v in entry.get("curve", {}).items()},
                )
            )


def _entry(params: dict[str, Any], distributions: dict[str, Any], result: Result) -> dict[str, Any]:
    """What the private study keeps of one evaluation (JSON-able, for the tuner's state)."""
    from optuna.distributions import distribution_to_json

    state = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}[result.status]
    if state != "FAIL" and not math.isfinite(result.fitness):
        state = "FAIL"
    return {
        "params": params,
        "distributions": {k: distribution_to_json(d) for k, d in distributions.items()},
        "value": result.fitness if state != "FAIL" else None,
        "state": state,
        "curve": {str(k): v for k, v in result.curve.items()} if state == "PRUNED" else {},
    }


@hookimpl
def register_tuners(register: Callable[[str, type[Tuner]], None]) -> None:
    register("tpe", TPETuner)


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("tuner", "tpe", TPEConfig)
