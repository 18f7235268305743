"""Hyperband: successive halving in brackets, continuing each promoted network's training.

Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar, "Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 18 (2018), Algorithm 1. With ``R`` = ``train.epochs`` (the
full budget), ``eta`` = ``tuner.reduction_factor`` and ``s_max = floor(log_eta(R /
tuner.min_epochs))``, bracket ``s`` (from ``s_max`` down to 0) draws ``n = ceil((s_max + 1) /
(s + 1) * eta**s)`` networks and trains them ``R * eta**-s`` epochs; after each rung the best
``1/eta`` go on to ``eta`` times the epochs, until ``R``. Each rung is one generation.

A promoted network is not retrained: its candidate continues the weights its previous rung
kept (``Candidate.resume_from``, ``train["epochs"]`` = the extra epochs only), so a bracket
costs what the paper counts. Weights of networks that were not promoted are deleted after each
rung (``weights_needed``), the finalists' only while they may be the search's best.

Networks are proposed by ``tuner.sampler``: ``random`` (the paper's) or ``tpe`` (Optuna's
TPESampler learning from every rung: a network's trial gets each rung's score as an
intermediate value, is told PRUNED where it stopped and COMPLETE at the full budget, as in
BOHB, Falkner et al., ICML 2018). ``tuner.warm_start=<study>`` gives ``tpe`` another study's
trials to start from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nasfw import (
    ArchGraph,
    Candidate,
    ConfigError,
    RandomChooser,
    Result,
    TrialChooser,
    Tuner,
    TunerConfig,
    hookimpl,
    setting,
)
from nasfw.plugins.tuners._optuna_study import private_study, tpe_sampler, warm_entries

# Optuna is imported where the tuner uses it: registering the plugin (every `python -m nasfw`,
# --help included) must not pay for importing it.
if TYPE_CHECKING:
    import optuna


@dataclass
class HyperbandConfig(TunerConfig):
    name: str = "hyperband"
    # Epochs of the shortest rung (the most aggressive bracket's first).
    min_epochs: int = setting(1, ge=1)
    # eta: each rung keeps the best 1/eta of its networks and trains them eta times longer.
    reduction_factor: int = setting(3, ge=2)
    # Hyperband iterations: each runs every bracket once.
    iterations: int = setting(1, ge=1)
    # Who proposes the networks: random (the paper's) or tpe.
    sampler: str = "tpe"
    # tpe: random proposals before it starts modelling.
    n_startup_trials: int = setting(8, ge=0)

    def check(self, key: str) -> None:
        if self.sampler not in ("random", "tpe"):
            raise ConfigError(f"{key}.sampler={self.sampler!r} must be 'random' or 'tpe'")
        if self.warm_start and self.sampler != "tpe":
            raise ConfigError(f"{key}.warm_start needs {key}.sampler=tpe (random learns nothing)")


def rung_epochs(full: int, min_epochs: int, eta: int, s: int) -> list[int]:
    """The epochs of each rung of bracket ``s``: ``full * eta**(i - s)`` rounded, at least
    ``min_epochs``, strictly increasing, ending at ``full``."""
    epochs: list[int] = []
    for i in range(s + 1):
        value = max(min_epochs, round(full * eta ** (i - s)))
        if not epochs or value > epochs[-1]:
            epochs.append(min(value, full))
    epochs[-1] = full
    return epochs


def brackets(full: int, min_epochs: int, eta: int) -> list[tuple[int, list[int]]]:
    """Hyperband's brackets, most aggressive first: ``(n networks, rung epochs)`` each."""
    s_max = max(0, math.floor(math.log(full / min_epochs, eta) + 1e-9))
    out = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        out.append((n, rung_epochs(full, min_epochs, eta, s)))
    return out


class HyperbandTuner(Tuner):
    """Hyperband over the search space's networks (see the module docstring)."""

    config_class = HyperbandConfig

    config: HyperbandConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)  # HyperbandConfig.check: its rules
        table = getattr(self.problem, "table", None)
        if table is not None and not table.fidelity:
            raise ConfigError(
                f"tuner=hyperband: problem={self.problem.name}'s table records results at its "
                "full budget only (no fidelity to promote networks through); use tuner=random, "
                "evolution or tpe"
            )
        self.rng = np.random.default_rng(seed)
        self.bracket = 0  # position in the schedule: iteration * len(brackets) + bracket
        self.rung = 0
        # The current bracket's networks: graph, params, their evaluations' keys and scores.
        self.members: list[dict[str, Any]] = []
        self.alive: list[int] = []  # members in the current rung
        # What the TPE sampler learns from, as JSON: each finished network (told) and another
        # study's trials (warm); its study is rebuilt from them for each bracket's draw.
        self.told: list[dict[str, Any]] = []
        self.warm: list[dict[str, Any]] = []

    # -- the schedule ---------------------------------------------------------------------
    def _full(self) -> int:
        if self.train is not None:
            return int(self.train.epochs)
        from nasfw import TrainConfig

        return TrainConfig().epochs

    def _brackets(self) -> list[tuple[int, list[int]]]:
        full = self._full()
        if self.config.min_epochs > full:
            raise ConfigError(
                f"tuner.min_epochs={self.config.min_epochs} exceeds train.epochs={full}"
            )
        return brackets(full, self.config.min_epochs, self.config.reduction_factor)

    def ask(self) -> list[Candidate]:
        from optuna.distributions import json_to_distribution

        schedule = self._brackets()
        if self.bracket >= len(schedule) * self.config.iterations:
            return []
        n, epochs = schedule[self.bracket % len(schedule)]
        if not self.members:
            self._draw(n)
            self.alive = list(range(n))
        trained = epochs[self.rung - 1] if self.rung else 0
        candidates = []
        for m in self.alive:
            member = self.members[m]
            candidates.append(
                Candidate(
                    ArchGraph.from_dict(member["graph"]),
                    dict(member["params"]),
                    {k: json_to_distribution(d) for k, d in member["distributions"].items()},
                    train={"epochs": epochs[self.rung] - trained},
                    attrs={"bracket": self.bracket, "rung": self.rung, "member": m},
                    keep_weights=True,
                    resume_from=member["keys"][-1] if self.rung else None,
                )
            )
        return candidates

    def _draw(self, n: int) -> None:
        """The bracket's ``n`` networks, from the sampler."""
        from optuna.distributions import distribution_to_json

        study = self._study() if self.config.sampler == "tpe" else None
        self.members = []
        for _ in range(n):
            if study is not None:
                # Asked together, left RUNNING: the constant liar spreads the bracket's draws.
                trial = study.ask()
                graph = self.space.sample(TrialChooser(trial))
                params, distributions = dict(trial.params), dict(trial.distributions)
            else:
                chooser = RandomChooser(self.rng)
                graph = self.space.sample(chooser)
                params, distributions = chooser.params, chooser.distributions
            self.members.append(
                {
                    "graph": graph.to_dict(),
                    "params": params,
                    "distributions": {k: distribution_to_json(d) for k, d in distributions.items()},
                    "keys": [],
                    "curve": {},
                }
            )

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        schedule = self._brackets()
        epochs = schedule[self.bracket % len(schedule)][1]
        for m, candidate, result in zip(self.alive, candidates, results, strict=True):
            member = self.members[m]
            member["keys"].append(candidate.key)
            finite = math.isfinite(result.fitness)
            member["fitness"] = result.fitness if finite else None  # (the state is JSON)
            if finite:
                member["curve"][str(epochs[self.rung])] = result.fitness

        def score(m: int) -> float:
            value = self.members[m]["fitness"]
            return -math.inf if value is None else value

        last = self.rung == len(epochs) - 1
        ranked = sorted(self.alive, key=lambda m: (-score(m), m))
        keep = [] if last else ranked[: max(1, len(self.alive) // self.config.reduction_factor)]
        keep = [m for m in keep if math.isfinite(score(m))]
        for m in self.alive:
            if m not in keep:
                self._close(m, complete=last)
        if keep:
            self.alive, self.rung = sorted(keep), self.rung + 1
        else:  # the bracket is over
            self.bracket, self.rung, self.members, self.alive = self.bracket + 1, 0, [], []

    def _close(self, m: int, complete: bool) -> None:
        """Tell the sampler where member ``m`` stopped: its score at each rung it reached,
        PRUNED below the full budget, COMPLETE at it, FAIL without any score."""
        member = self.members[m]
        curve = {int(k): v for k, v in member["curve"].items()}
        if not curve:
            state, value = "FAIL", None
        else:
            state, value = ("COMPLETE" if complete else "PRUNED"), curve[max(curve)]
        self.told.append(
            {
                "params": member["params"],
                "distributions": member["distributions"],
                "state": state,
                "value": value,
                "curve": member["curve"],
            }
        )

    # -- weights, warm start, state -------------------------------------------------------
    def weights_needed(self) -> set[str]:
        """The last weights of the networks still in the bracket (the next rung continues
        them); nothing between brackets."""
        return {self.members[m]["keys"][-1] for m in self.alive if self.members[m]["keys"]}

    def warm_start(self, trials: list[Any]) -> None:
        """Another study's finished trials join the TPE sampler's (``tuner.warm_start``); the
        failed ones are left out, and the finished ones keep their learning curves, as the
        networks it tells itself do (:meth:`_close`)."""
        self.warm = warm_entries(trials, keep_failed=False, complete_curve=True)

    def state(self) -> dict[str, Any]:
        return {
            "bracket": self.bracket,
            "rung": self.rung,
            "members": self.members,
            "alive": self.alive,
            "told": self.told,
            "warm": self.warm,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.bracket, self.rung = state["bracket"], state["rung"]
        self.members, self.alive = state["members"], list(state["alive"])
        self.told, self.warm = list(state["told"]), list(state["warm"])
        self.rng.bit_generator.state = state["rng"]

    def _study(self) -> optuna.Study:
        """A TPE study holding what the sampler learns from, seeded for this bracket."""
        sampler = tpe_sampler(self.seed, self.bracket, self.config.n_startup_trials)
        return private_study([*self.warm, *self.told], sampler)

    def generation_report(self) -> dict[str, float]:
        schedule = self._brackets()
        return {
            "bracket": float(self.bracket % len(schedule)),
            "rung": float(self.rung),
            "rung_networks": float(len(self.alive)),
        }


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(HyperbandTuner)


@hookimpl
def nasfw_check_config(cfg: Any) -> None:
    """``tuner.min_epochs`` must fit in ``train.epochs``, checked before the study exists."""
    if cfg.tuner.name == "hyperband" and int(cfg.tuner.min_epochs) > int(cfg.train.epochs):
        raise ConfigError(
            f"tuner.min_epochs={cfg.tuner.min_epochs} exceeds train.epochs={cfg.train.epochs}, "
            "the full budget of tuner=hyperband"
        )
