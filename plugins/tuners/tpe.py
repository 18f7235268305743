"""TPE: Optuna's TPESampler drives the architecture choices, define-by-run.

The sampler works on a private in-memory study holding what this tuner was told; the search's
persistent study stays the ledger. Each generation gets a sampler seeded from (seed, generation),
so a resumed search proposes exactly what an uninterrupted one would. A network the search's
pruner stopped is told as a PRUNED trial with its learning curve, which TPE ranks below the
finished ones by how far it got (Optuna's own treatment); ``tuner.warm_start=<study>`` adds
another study's finished trials to the private study before the first proposal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasfw import (
    AsynchronousTunerConfig,
    Candidate,
    Result,
    TrialChooser,
    Tuner,
    hookimpl,
    setting,
)
from nasfw.plugins.tuners._optuna_study import (
    frozen_trial,
    private_study,
    result_entry,
    tpe_sampler,
    warm_entries,
)

# Optuna is imported where a tuner uses it: registering the plugin (every `python -m nasfw`,
# --help included) must not pay for importing it.
if TYPE_CHECKING:
    import optuna


@dataclass
class TPEConfig(AsynchronousTunerConfig):
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
    # Evaluate asynchronously: a new network is asked for as soon as a worker frees up
    # (docs/tuners.md, "Asynchronous evaluation"); a generation: batch_size finished evaluations.
    asynchronous: bool = False


class TPETuner(Tuner):
    config_class = TPEConfig
    asynchronous = True
    appended_state = ("told",)  # every result told, in order

    config: TPEConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        self.generation = 0
        # What the private study holds, as JSON entries (nasfw.plugins.tuners._optuna_study).
        self.told: list[dict[str, Any]] = []
        self.warm: list[dict[str, Any]] = []  # another study's trials (tuner.warm_start)
        self.study = private_study([])
        self.pending: list[optuna.Trial] = []
        # Asynchronous evaluation: the private study's trial of each candidate being evaluated.
        self.running: list[tuple[Candidate, optuna.Trial]] = []

    def _sampler(self, draw: int | None = None) -> optuna.samplers.TPESampler:
        return tpe_sampler(
            self.seed,
            self.generation if draw is None else draw,
            self.config.n_startup_trials,
            multivariate=self.config.multivariate,
            group=self.config.group,
            previous=self.study.sampler,
        )

    def ask(self) -> list[Candidate]:
        count = min(self.config.batch_size, self.config.n_trials - len(self.told))
        self.study.sampler = self._sampler()
        self.pending = []
        candidates = []
        for _ in range(max(count, 0)):
            candidate, trial = self._propose()
            self.pending.append(trial)
            candidates.append(candidate)
        return candidates

    def _propose(self) -> tuple[Candidate, optuna.Trial]:
        """A network the private study's sampler asks for, with the trial it asked in."""
        trial = self.study.ask()
        graph = self.space.sample(TrialChooser(trial))
        return Candidate(graph, dict(trial.params), dict(trial.distributions)), trial

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        for trial, candidate, result in zip(self.pending, candidates, results, strict=True):
            entry = result_entry(candidate.params, candidate.distributions, result)
            _tell(self.study, trial, entry)
            self.told.append(entry)
        self.pending = []
        self.generation += 1

    def ask_one(self, pending: int) -> Candidate | None:
        """One proposal from everything told so far; the ``pending`` evaluations are lied
        about (Optuna's constant liar). Each draw has its own seed (seed, number of trials in
        the private study)."""
        if len(self.told) + pending >= self.config.n_trials:
            return None
        self.study.sampler = self._sampler(draw=len(self.study.trials))
        candidate, trial = self._propose()
        self.running.append((candidate, trial))
        return candidate

    def tell_one(self, candidate: Candidate, result: Result) -> None:
        entry = result_entry(candidate.params, candidate.distributions, result)
        trial = next((t for c, t in self.running if c is candidate), None)
        if trial is None:  # asked by a process that was killed: told again on the resume
            self.study.add_trial(frozen_trial(entry))
        else:
            self.running = [(c, t) for c, t in self.running if t is not trial]
            _tell(self.study, trial, entry)
        self.told.append(entry)

    def warm_start(self, trials: list[Any]) -> None:
        """Learn from another study's finished trials (``tuner.warm_start``): those with
        params join the private study, and so shape every proposal (failed ones as FAIL
        trials, which TPE ignores)."""
        self.warm = warm_entries(trials, keep_failed=True)
        self._rebuild()

    def state(self) -> dict[str, Any]:
        return {"generation": self.generation, "told": self.told, "warm": self.warm}

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.told = list(state["told"])
        self.warm = list(state.get("warm", []))
        self._rebuild()

    def _rebuild(self) -> None:
        self.study = private_study([*self.warm, *self.told])
        self.running = []


def _tell(study: optuna.Study, trial: optuna.Trial, entry: dict[str, Any]) -> None:
    """Tell the private study how ``trial`` (one of its asks) ended."""
    from optuna.trial import TrialState

    if entry["state"] == "PRUNED":
        for step, value in entry["curve"].items():
            trial.report(value, int(step))
    state = TrialState[entry["state"]]
    # Optuna takes a value with COMPLETE only; PRUNED keeps its last reported one.
    study.tell(trial, entry["value"] if state == TrialState.COMPLETE else None, state=state)


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(TPETuner)
