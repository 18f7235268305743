"""TPE: Optuna's TPESampler drives the architecture choices, define-by-run.

The sampler works on a private in-memory study holding what this tuner was told; the search's
persistent study stays the ledger. Each generation gets a sampler seeded from (seed, generation),
so a resumed search proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from nasfw import Candidate, Result, Tuner, TunerConfig, hookimpl, setting


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


class TrialChooser:
    """The search space's :class:`nasfw.Chooser`, answered by an Optuna trial."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return self.trial.suggest_int(name, low, high, log=log)

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.trial.suggest_float(name, low, high, log=log)

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(name, list(choices))


class TPETuner(Tuner):
    config: TPEConfig

    def __init__(self, config: Any, space: Any, seed: int) -> None:
        super().__init__(config, space, seed)
        self.generation = 0
        self.told: list[dict[str, Any]] = []
        self.study = optuna.create_study(direction="maximize")
        self.pending: list[optuna.Trial] = []

    def _sampler(self) -> optuna.samplers.TPESampler:
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
        for trial, candidate, result in zip(self.pending, candidates, results, strict=True):
            if result.ok:
                self.study.tell(trial, result.fitness)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
            self.told.append(
                {
                    "params": candidate.params,
                    "distributions": {
                        k: distribution_to_json(d) for k, d in candidate.distributions.items()
                    },
                    "value": result.fitness if result.ok else None,
                }
            )
        self.pending = []
        self.generation += 1

    def state(self) -> dict[str, Any]:
        return {"generation": self.generation, "told": self.told}

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.told = list(state["told"])
        self.study = optuna.create_study(direction="maximize")
        for entry in self.told:
            ok = entry["value"] is not None
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=entry["params"],
                    distributions={
                        k: json_to_distribution(d) for k, d in entry["distributions"].items()
                    },
                    value=entry["value"] if ok else None,
                    state=TrialState.COMPLETE if ok else TrialState.FAIL,
                )
            )


@hookimpl
def register_tuners(register: Callable[[str, type[Tuner]], None]) -> None:
    register("tpe", TPETuner)


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("tuner", "tpe", TPEConfig)
