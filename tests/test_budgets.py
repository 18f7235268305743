"""Budgets and continuation: a network continues an earlier evaluation's stored weights
(``Candidate.resume_from``), paying only its extra epochs, and its result counts them all."""

from __future__ import annotations

import pytest
from cli import TINY, compose, nasfw

from nasfw import ArchGraph, Candidate, ConfigError, Node, Result
from nasfw.plugins.tuners.tpe import TPEConfig, TPETuner

GRAPH = ArchGraph(
    [Node("h", "dense", {"units": 16}), Node("o", "dense", {"units": 8}, ("h",))], output="o"
)
OTHER = ArchGraph([Node("h", "dense", {"units": 4})], output="h")


def test_a_network_continues_from_its_stored_weights(evaluator):
    first = Candidate(GRAPH, train={"epochs": 2}, keep_weights=True)
    before = evaluator(first)
    assert before.ok and before.trained_budget == 2
    # An lr too small to move the weights: the continued network is the stored one.
    still = Candidate(GRAPH, train={"epochs": 1, "lr": 1e-12}, resume_from=first.key)
    after = evaluator(still)
    assert after.ok and after.metric == before.metric
    assert (after.epochs, after.budget) == (1, 3)
    assert after.extra["inherited_tensors"] == 6  # every tensor of the network
    # Continued with a real lr, it keeps its weights for the next continuation.
    more = Candidate(GRAPH, train={"epochs": 3}, resume_from=first.key, keep_weights=True)
    assert evaluator(more).budget == 5
    assert evaluator.weights.load(more.key).budget == 5
    again = Candidate(GRAPH, train={"epochs": 1}, resume_from=more.key)
    assert evaluator(again).budget == 6


def test_continuing_another_network_or_missing_weights_is_a_failed_trial(evaluator):
    first = Candidate(GRAPH, keep_weights=True)
    assert evaluator(first).ok
    wrong = evaluator(Candidate(OTHER, resume_from=first.key))
    assert wrong.status == "failed" and "resume_from" in (wrong.error or "")
    missing = evaluator(Candidate(GRAPH, resume_from="0123456789abcdef"))
    assert missing.status == "failed" and "no stored weights" in (missing.error or "")
    both = evaluator(Candidate(GRAPH, init_from=first.key, resume_from=first.key))
    assert both.status == "failed" and "both" in (both.error or "")


def test_tpe_is_told_a_pruned_network_as_pruned_and_restores_it(space):
    tuner = TPETuner(TPEConfig(n_trials=4, batch_size=2, n_startup_trials=0), space, 0)
    candidates = tuner.ask()
    results = [
        Result("pruned", metric=0.3, epochs=2, curve={1: 0.2, 2: 0.3}),
        Result("ok", metric=0.8, epochs=4, curve={1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}),
    ]
    tuner.tell(candidates, results)
    pruned, done = tuner.study.trials
    assert pruned.state.name == "PRUNED" and pruned.intermediate_values == {1: 0.2, 2: 0.3}
    assert pruned.value == 0.3 and done.state.name == "COMPLETE" and done.value == 0.8
    copy = TPETuner(TPEConfig(n_trials=4, batch_size=2, n_startup_trials=0), space, 0)
    copy.restore(tuner.state())
    assert [(t.state, t.value, t.intermediate_values) for t in copy.study.trials] == [
        (t.state, t.value, t.intermediate_values) for t in tuner.study.trials
    ]
    assert [c.graph for c in copy.ask()] == [c.graph for c in tuner.ask()]


def test_tpe_warm_starts_from_another_studys_trials(tmp_path):
    from nasfw.ledger import Ledger
    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    first = [*TINY, "tuner=tpe", "study_name=first", "tuner.n_trials=4", f"storage.url={url}"]
    run_search(compose(*first), tmp_path)  # in-process: one CLI start-up less
    out = nasfw(tmp_path, *TINY, "tuner=tpe", "study_name=second", "tuner.warm_start=first")
    assert out.returncode == 0, out.stderr
    _, state = Ledger(f"sqlite:///{tmp_path / 'nasfw.db'}", "second").load_state()
    warm = [(e["params"], e["value"]) for e in state["warm"]]
    earlier = Ledger(f"sqlite:///{tmp_path / 'nasfw.db'}", "first").records()
    assert warm == [(r.params, r.result.metric) for r in earlier] and len(warm) == 4
    assert len(state["told"]) == 2  # tuner.n_trials counts this search's trials only


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tuner=tpe", "tuner.warm_start=nope"], "tuner.warm_start=nope: no such study"),
        (["tuner=tpe", "tuner.warm_start=second"], "cannot warm-start from itself"),
        (["tuner.warm_start=first"], "tuner=random cannot start from another study"),
    ],
)
def test_a_warm_start_that_cannot_work_is_refused(tmp_path, overrides, message):
    from nasfw.ledger import Ledger
    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    Ledger(url, "first")  # an (empty) earlier study
    cfg = compose(*TINY, "study_name=second", f"storage.url={url}", *overrides)
    with pytest.raises(ConfigError, match=message):
        run_search(cfg, tmp_path)
    from nasfw.ledger import FINGERPRINT_ATTR

    # Refused before the fingerprint: the corrected command is not taken for another search.
    assert FINGERPRINT_ATTR not in Ledger(url, "second")._attrs()
