"""The hyperband tuner: Li et al.'s brackets, promotions that continue the stored weights and
cost only their extra epochs, and what it keeps of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli import TINY, nasfw

from nasfw import ConfigError, Result, TrainConfig
from nasfw.ledger import Ledger
from nasfw.plugins.tuners.hyperband import HyperbandConfig, HyperbandTuner, brackets, rung_epochs
from nasfw.testing import TunerContract, fake_results


def test_brackets_are_the_papers():
    # Li et al. (2018), Table 1's R=81, eta=3 with R=9: n_i networks at r_i epochs per rung.
    assert brackets(9, 1, 3) == [(9, [1, 3, 9]), (5, [3, 9]), (3, [9])]
    assert brackets(5, 1, 3) == [(3, [2, 5]), (2, [5])]
    assert brackets(4, 1, 2) == [(4, [1, 2, 4]), (3, [2, 4]), (3, [4])]
    assert brackets(1, 1, 3) == [(1, [1])]
    assert rung_epochs(10, 4, 3, 2) == [4, 10]  # never below min_epochs, never repeated


@pytest.mark.parametrize("sampler", ["random", "tpe"])
class TestHyperband(TunerContract):
    @pytest.fixture
    def make_tuner(self, space, sampler):
        def make(seed: int) -> HyperbandTuner:
            tuner = HyperbandTuner(HyperbandConfig(sampler=sampler), space, seed)
            tuner.train = TrainConfig(epochs=4)
            return tuner

        return make

    def test_rungs_promote_the_best_and_continue_their_weights(self, make_tuner):
        tuner = make_tuner(0)  # epochs 4, eta 3: brackets (3 at 1 -> 1 at 4) and (2 at 4)
        first = tuner.ask()
        assert [c.train for c in first] == [{"epochs": 1}] * 3
        assert all(c.keep_weights and c.resume_from is None for c in first)
        results = [Result("ok", metric=m, epochs=1) for m in (0.2, 0.9, 0.5)]
        tuner.tell(first, results)
        assert tuner.weights_needed() == {first[1].key}
        (promoted,) = tuner.ask()
        assert promoted.graph == first[1].graph and promoted.resume_from == first[1].key
        assert promoted.train == {"epochs": 3}  # only the extra epochs
        tuner.tell([promoted], [Result("ok", metric=0.95, epochs=3, budget=4)])
        assert tuner.weights_needed() == set()
        last = tuner.ask()
        assert [c.train for c in last] == [{"epochs": 4}] * 2
        tuner.tell(last, fake_results(last))
        assert tuner.ask() == []

    def test_a_bracket_whose_networks_all_failed_ends(self, make_tuner):
        tuner = make_tuner(1)
        first = tuner.ask()
        tuner.tell(first, [Result.failed("boom")] * len(first))
        assert [c.train for c in tuner.ask()] == [{"epochs": 4}] * 2


def test_tpe_learns_from_every_rung(space):
    tuner = HyperbandTuner(HyperbandConfig(sampler="tpe"), space, 0)
    tuner.train = TrainConfig(epochs=4)
    first = tuner.ask()
    tuner.tell(first, [Result("ok", metric=m, epochs=1) for m in (0.2, 0.9, 0.5)])
    told = {json.dumps(e["params"], sort_keys=True): e for e in tuner.told}
    assert [e["state"] for e in told.values()] == ["PRUNED", "PRUNED"]
    assert sorted(e["value"] for e in told.values()) == [0.2, 0.5]
    (promoted,) = tuner.ask()
    tuner.tell([promoted], [Result("ok", metric=0.95, epochs=3, budget=4)])
    finished = tuner.told[-1]
    assert finished["state"] == "COMPLETE" and finished["curve"] == {"1": 0.9, "4": 0.95}


def test_settings_are_checked(space):
    with pytest.raises(ConfigError, match=r"tuner\.sampler"):
        HyperbandTuner(HyperbandConfig(sampler="bohb"), space, 0)
    with pytest.raises(ConfigError, match=r"tuner\.warm_start"):
        HyperbandTuner(HyperbandConfig(sampler="random", warm_start="other"), space, 0)
    tuner = HyperbandTuner(HyperbandConfig(min_epochs=6), space, 0)
    tuner.train = TrainConfig(epochs=5)
    with pytest.raises(ConfigError, match=r"tuner\.min_epochs=6"):
        tuner.ask()


SEARCH = [
    *[a for a in TINY if not a.startswith("tuner")],
    "tuner=hyperband",
    "tuner.reduction_factor=2",
    "train.epochs=4",
]


def test_finalists_continue_their_weights_and_train_only_their_extra_epochs(tmp_path):
    out = nasfw(tmp_path, *SEARCH)
    assert out.returncode == 0, out.stderr
    records = Ledger(f"sqlite:///{tmp_path / 'nasfw.db'}", "hyperband-iris-tabular_mlp-seed0")
    trials = records.records()
    by_key = {t.key: t for t in trials}
    # eta 2, R 4: brackets of 4 networks (1, 2, 4 epochs), 3 (2, 4) and 3 (4).
    assert [len([t for t in trials if t.generation == g]) for g in range(6)] == [4, 2, 1, 3, 1, 3]
    promoted = [t for t in trials if t.resume_from is not None]
    assert len(promoted) == 4
    for t in promoted:
        before = by_key[t.resume_from]
        assert t.graph == before.graph
        assert t.result.epochs == t.result.trained_budget - before.result.trained_budget
        assert t.result.epochs == t.train["epochs"] < 4
        assert t.result.extra["inherited_tensors"] > 0  # every tensor, or it fails
    finalists = [t for t in trials if t.result.trained_budget == 4]
    assert len(finalists) == 5  # 1 + 1 promoted to 4 epochs, and 3 trained 4 at once
    # Only the best network's weights are kept once the brackets are over.
    summary = json.loads(next(tmp_path.glob("outputs/*/*/best_model/summary.json")).read_text())
    best = trials[summary["trial"]]
    assert best.result.trained_budget == 4
    assert summary["trained_on"]["weights"].startswith("the trial's stored weights")
    kept = [p.name for p in Path(tmp_path / "nasfw-artifacts").iterdir()]
    assert kept == [best.result.extra["weights"]]


def test_a_shortest_rung_above_the_budget_is_refused_before_the_study(tmp_path):
    from cli import compose

    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    with pytest.raises(ConfigError, match=r"tuner\.min_epochs=5 exceeds train\.epochs=4"):
        run_search(compose(*SEARCH, "tuner.min_epochs=5", f"storage.url={url}"), tmp_path)
    assert not (tmp_path / "nasfw.db").exists()  # refused before the study was created


@pytest.mark.slow  # ~16 s; suite time
def test_too_many_kept_weights_stop_the_search_resumably(tmp_path):
    short = [*SEARCH, "train.epochs=2"]  # brackets (2 at 1 epoch -> 1 at 2) and (2 at 2)
    out = nasfw(tmp_path, *short, "storage.weights_limit_mb=0.001")
    assert out.returncode == 2
    assert "storage.weights_limit_mb=0.001" in out.stderr and "generation 0" in out.stderr
    assert "Traceback" not in out.stderr
    out = nasfw(tmp_path, *short, "storage.weights_limit_mb=100")
    assert out.returncode == 0, out.stderr
    assert "Resuming" in out.stderr
