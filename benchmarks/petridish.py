"""Petridish against CoDeepNEAT and random search at equal CPU budgets (issue #27's rules;
#13's comparison before it): does growing networks find good ones sooner than evolving or
sampling them, and what does the network it hands over score on test?

**Arms** (nasfw's command line, ``search_space=petridish_full evaluation=plain
launcher.workers=0 train.threads=1 train.curve_every=0 tracking=none``,
``train.epochs=--epochs``, more rounds, generations or trials than the budget allows):
``petridish`` (``tuner.init_models=4 tuner.max_parents=4``), ``codeepneat`` and ``random``.
Petridish is paired with each of the other two (same seeds).

**Protocol**: per seed (``--seeds``) and problem, the arms run one after the other in an order
rotated by one place per seed, each in its own process with one torch thread and no worker
process. Each gets ``--budget`` CPU seconds of its process tree from its first training step,
then SIGINT, as a user's Ctrl-C, and is judged by the evaluations that finished within the
budget (``harness.run_cli_arm``): the best validation accuracy of a network trained to the full
``train.epochs`` against CPU seconds, and its **deliverable**, the network ``export_best`` would
hand over (Petridish's: its stored, evaluated weights; the others': retrained), scored on test.
Each run's raw result also keeps the lower convex hull of (FLOPs, validation error) of its
full-budget networks within the budget, and Petridish's best validation error after each round.

**Criterion** (declared by ``harness.declare`` before any run; one per partner that runs): with
T = the partner's median final best validation accuracy over seeds, on every problem
Petridish's median CPU seconds to reach T (never = never) is <= 1.0 of the partner's own median
CPU seconds to T, **and** Petridish's deliverable is at most 0.5 pt below the partner's on test
(median of the per-seed paired differences >= -0.005). The ratio's bootstrap interval over seeds
is reported beside it, not part of the verdict.

**Problems** (``--problems``): ``digits`` and ``fashion_mnist`` (real, from
``--data-dir``/fashion_mnist: 4,000 training images, a 5 % validation split).

    .venv/bin/python benchmarks/petridish.py             # 2 problems x 3 seeds x 3 arms x
                                                         # 300 CPU s: ~1.5-2 h on an idle core
    .venv/bin/python benchmarks/petridish.py --problems digits --seeds 1 --budget 30 \\
        --out /tmp/pd                                    # a quick look, minutes
    .venv/bin/python benchmarks/petridish.py --report    # the tables again, from the raw runs

Cost: each run is ``--budget`` CPU seconds plus its start-up and the deliverable's scoring (a
retraining of ``--epochs`` epochs for codeepneat and random); the default size is 18 runs,
about 1.5-2 hours on one idle core (18 x 300 CPU s, plus start-ups and scoring).

Resumable: each (problem, seed, arm) writes ``<out>/runs/<problem>/seed<k>/<arm>.json`` once it
has finished, and a rerun skips those (``--fresh`` reruns them). Writes ``petridish.json``,
``petridish.md`` and ``petridish_<problem>.png`` to ``--out``, and one MLflow run
(``--no-mlflow`` skips it). An arm that finished nothing within its budget fails the run (exit
1, naming it).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import harness

MANY = 100_000  # rounds, generations or trials: the budget, not the tuner, ends every search
ARMS: dict[str, list[str]] = {
    "petridish": [
        "tuner=petridish",
        f"tuner.rounds={MANY}",
        "tuner.init_models=4",
        "tuner.max_parents=4",
    ],
    "codeepneat": ["tuner=codeepneat", f"tuner.generations={MANY}"],
    "random": ["tuner=random", f"tuner.n_trials={MANY}"],
}


def pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(petridish, partner) for each other arm among ``arms``, when petridish runs."""
    return [("petridish", a) for a in arms if a != "petridish" and "petridish" in arms]


def hull(records: list[Any], epochs: int) -> list[list[float]]:
    """The lower convex hull of (FLOPs, validation error) of the full-budget networks."""
    from nasfw.plugins.tuners.petridish.hull import lower_hull

    ok = [
        r
        for r in records
        if r.result.ok and r.result.flops is not None and r.result.trained_budget >= epochs
    ]
    points = [(float(r.result.flops), 1.0 - float(r.result.metric)) for r in ok]
    return [[points[i][0], round(points[i][1], 4)] for i in lower_hull(points)]


def rounds(records: list[Any], per_trial: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Petridish's best validation error after each round (its pool: the seed networks, then
    each round's children, among ``records``), with the CPU seconds at which the round's last
    network ended (``per_trial``: the judged evaluations, by number)."""
    cpu = {t["number"]: t["cpu"] for t in per_trial}
    ok = [r for r in records if r.result.ok and r.result.metric is not None]
    out = []
    for k in sorted({int(r.attrs.get("round", 0)) for r in ok}):
        pool = [r for r in ok if int(r.attrs.get("round", 0)) <= k]
        out.append({
            "round": k,
            "pool": len(pool),
            "best_error": round(1 - max(float(r.result.metric) for r in pool), 4),
            "cpu": max(cpu.get(r.number, math.nan) for r in pool),
        })  # fmt: skip
    return out


def extra(arm: str, within: list[Any], result: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Each run's hull, and Petridish's rounds."""
    more: dict[str, Any] = {"hull": hull(within, epochs)}
    if arm == "petridish":
        more["rounds"] = rounds(within, result["per_trial"])
    return more


BENCHMARK = harness.ArmsBenchmark(
    name="petridish",
    title="Petridish against CoDeepNEAT and random search",
    setting="`search_space=petridish_full`, plain scoring, the validation split scored once",
    pairs_text=(
        "Petridish against each other arm, paired by seed: median CPU seconds to the partner's "
        "median final best (never = not reached by half the seeds or more), their ratio "
        "[bootstrap interval over seeds], and the per-seed differences (Petridish minus "
        "partner):"
    ),
    arms=ARMS,
    common=["search_space=petridish_full", "evaluation=plain", "train.curve_every=0"],
    pairs=pairs,
    ratio=1.0,
    max_test_loss=0.005,
    budget=300.0,
    epochs=5,
    extra=extra,
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main(None, __doc__.split("\n\n")[0]))
