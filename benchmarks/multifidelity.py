"""Pruning against no pruning (issue #27's rules; #14's benchmark before it): does stopping
unpromising networks early find the unpruned search's accuracy in less CPU time, and does the
network it hands over lose anything?

**Arms** (nasfw's command line, ``search_space=image_small launcher.workers=0 train.threads=1
tracking=none``, ``train.epochs=--epochs``, more trials than the budget allows), paired with the
unpruned arm they are judged against:

- ``tpe`` (``pruner=none``) and ``tpe+hyperband`` (``pruner=hyperband``, Optuna's
  HyperbandPruner on the per-epoch validation score);
- ``codeepneat`` (``pruner=none``) and ``codeepneat+median`` (``pruner=median``);
- ``hyperband``: ``tuner=hyperband`` (Li et al.'s brackets, promoted networks continue their
  weights), paired with ``tpe``.

Without a pruner, ``train.curve_every=0`` scores the validation split once, after the last
epoch; a pruned arm scores it after every epoch (``train.curve_every=1``), as its pruner needs.

**Protocol**: per seed (``--seeds``) and problem, the arms run one after the other in an order
rotated by one place per seed, each in its own process with one torch thread and no worker
process, so that a CPU second means the same for every arm. Each gets ``--budget`` CPU seconds of
its process tree counted from its first training step (imports, data loading and start-up are
not charged, and load from other processes does not shorten anyone's budget), then SIGINT, as a
user's Ctrl-C. It is judged by the evaluations that finished within the budget: the best
validation accuracy of a network trained to the full ``train.epochs`` (a pruned network or a
lower Hyperband rung never counts) against CPU seconds since the first step. Its
**deliverable** is the network it would export: its best full-budget network within the budget,
as ``export_best`` hands it over (``harness.retrain_on_test``: retrained, or a Hyperband
finalist's stored weights), scored on the test split.

**Criterion** (declared by ``harness.declare`` before any run; one per pair of arms that both
run): with T = the unpruned partner's median final best validation accuracy over seeds, on every
problem the pruned arm's median CPU seconds to reach T (a seed that never does counts as never)
is <= 0.7 of the partner's own median CPU seconds to T, **and** the pruned arm's deliverable is
not worse than its partner's by more than 0.5 pt of test accuracy (median of the per-seed paired
differences >= -0.005). The ratio's percentile bootstrap interval over seeds (resampled in
pairs, ``spread.ratio_interval``) is reported beside it, not part of the verdict: with 3 seeds
it is wide, and the report says so.

**Problems** (``--problems``): ``digits`` (scikit-learn's 8x8 digits) and ``fashion_mnist``
(real, from ``--data-dir``/fashion_mnist: 4,000 training images, a 5 % validation split).

    .venv/bin/python benchmarks/multifidelity.py          # 2 problems x 3 seeds x 5 arms x
                                                          # 180 CPU s: ~1.5 h on an idle core
    .venv/bin/python benchmarks/multifidelity.py --problems digits --seeds 1 --budget 20 \\
        --out /tmp/mf                                     # a quick look, minutes
    .venv/bin/python benchmarks/multifidelity.py --report # the tables again, from the raw runs

Cost: each run is ``--budget`` CPU seconds plus its start-up (~5 CPU s) and the deliverable's
retraining (one network, ``--epochs`` epochs: seconds on digits, up to a minute on
Fashion-MNIST); the default size is 30 runs, about 1.5-2 hours on one idle core.

Resumable: each (problem, seed, arm) writes ``<out>/runs/<problem>/seed<k>/<arm>.json`` (paths
relative to it) once it has finished, and a rerun skips those (``--fresh`` reruns them). Writes
``multifidelity.json`` (the summary), ``multifidelity.md`` and ``multifidelity_<problem>.png``
(median best-so-far with its range over seeds) to ``--out``, and one MLflow run in experiment
``nasfw-benchmarks`` (``--no-mlflow`` skips it). An arm that finished nothing within its budget,
or has no full-budget network to deliver, fails the run (exit 1, naming it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import harness

MANY = 100_000  # trials or generations: the budget, not the tuner, ends every search
# Without a pruner the validation split is scored once, after the last epoch; a pruner needs
# it after every epoch.
ONCE, EVERY_EPOCH = "train.curve_every=0", "train.curve_every=1"
ARMS: dict[str, list[str]] = {
    "tpe": ["tuner=tpe", f"tuner.n_trials={MANY}", "pruner=none", ONCE],
    "tpe+hyperband": ["tuner=tpe", f"tuner.n_trials={MANY}", "pruner=hyperband", EVERY_EPOCH],
    "codeepneat": ["tuner=codeepneat", f"tuner.generations={MANY}", "pruner=none", ONCE],
    "codeepneat+median": [
        "tuner=codeepneat",
        f"tuner.generations={MANY}",
        "pruner=median",
        EVERY_EPOCH,
    ],
    "hyperband": ["tuner=hyperband", f"tuner.iterations={MANY}", ONCE],
}
# A multi-fidelity arm -> the unpruned arm it is judged against (same seeds: paired).
PARTNER = {"tpe+hyperband": "tpe", "codeepneat+median": "codeepneat", "hyperband": "tpe"}


def pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """The (multi-fidelity arm, unpruned partner) pairs among ``arms``."""
    return [(a, PARTNER[a]) for a in arms if a in PARTNER and PARTNER[a] in arms]


BENCHMARK = harness.ArmsBenchmark(
    name="multifidelity",
    title="Pruning against no pruning",
    setting="search_space=image_small",
    pairs_text=(
        "Each multi-fidelity arm against its unpruned partner, paired by seed: median CPU "
        "seconds to the partner's median final best (never = not reached by half the seeds or "
        "more), their ratio [bootstrap interval over seeds], and the per-seed differences (arm "
        "minus partner):"
    ),
    arms=ARMS,
    # Plain scoring named: fashion_mnist's preset (evaluation=auto) is regularized scoring,
    # which no pruner can follow.
    common=["search_space=image_small", "evaluation=plain"],
    pairs=pairs,
    ratio=0.7,
    max_test_loss=0.005,
    budget=180.0,
    epochs=9,
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main(None, __doc__.split("\n\n")[0]))
