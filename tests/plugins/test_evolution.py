from __future__ import annotations

import math

import optuna
import pytest
from cli import TINY, nasfw, trials
from conftest import load_space

from nasfw import ConfigError, Result
from nasfw.plugins.tuners.evolution import EvolutionConfig, RegularizedEvolution
from nasfw.testing import AsynchronousTunerContract, fake_results


@pytest.fixture(params=["image_small", "tabular_mlp", "sequence_small", "text_small"])
def space(request, ops):
    return load_space(request.param, ops)


def make(space, seed=0, **config):
    return RegularizedEvolution(EvolutionConfig(**config), space, seed)


def ok(*metrics):
    return [Result(status="ok", metric=m) for m in metrics]


class TestEvolution(AsynchronousTunerContract):
    @pytest.fixture
    def make_tuner(self, space):
        return lambda seed: make(space, seed, population_size=4, sample_size=2, n_trials=10)

    def test_generations_are_the_population_then_batches(self, make_tuner):
        # 4 random, then children in batches of 4 truncated to n_trials=10.
        assert [len(g) for g in self.run(make_tuner(0))] == [4, 4, 2]

    def test_params_describe_the_graph(self, make_tuner):
        tuner = make_tuner(0)
        first = tuner.ask()
        tuner.tell(first, fake_results(first))
        for candidate in first + tuner.ask():
            assert candidate.params and set(candidate.params) == set(candidate.distributions)
            assert candidate.params["n_layers"] == len(candidate.graph)
            assert candidate.params["l0.op"] == candidate.graph.topological_order()[0].op


def test_population_keeps_p_and_drops_the_oldest_not_the_worst(space):
    tuner = make(space, population_size=3, sample_size=2, n_trials=9, batch_size=2)
    initial = tuner.ask()
    # The oldest member is the best: aging must remove it all the same.
    tuner.tell(initial, ok(0.9, 0.5, 0.1))
    assert [m.birth for m in tuner.population] == [0, 1, 2]
    children = tuner.ask()
    tuner.tell(children, ok(0.2, 0.3))
    assert [m.birth for m in tuner.population] == [2, 3, 4]
    assert [m.fitness for m in tuner.population] == [0.1, 0.2, 0.3]
    assert [m.graph for m in tuner.population[1:]] == [c.graph for c in children]
    while candidates := tuner.ask():
        tuner.tell(candidates, fake_results(candidates))
        assert len(tuner.population) == 3
        assert [m.birth for m in tuner.population] == list(
            range(tuner.evaluated - 3, tuner.evaluated)
        )


def test_failed_children_join_at_minus_infinity(space):
    tuner = make(space, population_size=2, sample_size=2, n_trials=4, batch_size=1)
    tuner.tell(tuner.ask(), ok(0.5, 0.6))
    child = tuner.ask()
    tuner.tell(child, [Result.failed("diverged")])
    assert tuner.population[-1].graph == child[0].graph
    assert tuner.population[-1].fitness == -math.inf
    # The failed child never wins a full tournament against the ok survivor.
    assert tuner.ask()[0].attrs["parent"] == tuner.population[0].graph.hash


def test_full_tournament_picks_the_population_best(space):
    tuner = make(space, seed=4, population_size=5, sample_size=5, n_trials=25, batch_size=3)
    tuner.tell(initial := tuner.ask(), ok(0.3, 0.8, 0.1, 0.8, 0.5))
    # Ties go to the younger member (birth 3, not 1).
    assert {c.attrs["parent"] for c in tuner.ask()} == {initial[3].graph.hash}
    while candidates := tuner.ask():
        best = max(tuner.population, key=lambda m: (m.fitness, m.birth))
        assert all(c.attrs["parent"] == best.graph.hash for c in candidates)
        tuner.tell(candidates, fake_results(candidates))


def test_tournament_picks_the_best_of_its_sample(space):
    metrics = (0.1, 0.6, 0.2, 0.5, 0.3, 0.4)
    tuner = make(space, seed=7, population_size=6, sample_size=5, n_trials=60, batch_size=6)
    tuner.tell(initial := tuner.ask(), ok(*metrics))
    parents = [c.attrs["parent"] for _ in range(10) for c in tuner.ask()]
    # 5 of 6: the best wins unless it was left out, and then the runner-up wins.
    assert set(parents) == {initial[1].graph.hash, initial[3].graph.hash}
    assert parents.count(initial[1].graph.hash) > parents.count(initial[3].graph.hash)

    tuner = make(space, seed=7, population_size=6, sample_size=2, n_trials=60, batch_size=6)
    tuner.tell(initial := tuner.ask(), ok(*metrics))
    parents = [c.attrs["parent"] for _ in range(10) for c in tuner.ask()]
    # 2 of 6: the worst never wins; everyone else sometimes does.
    assert set(parents) == {c.graph.hash for c in initial[1:]}


def test_children_are_valid_mutations_of_their_parent(space):
    tuner = make(space, seed=2, population_size=4, sample_size=2, n_trials=24, batch_size=4)
    initial = tuner.ask()
    assert all(c.attrs["parent"] is None for c in initial)
    tuner.tell(initial, fake_results(initial))
    while candidates := tuner.ask():
        alive = {m.graph.hash: m.graph for m in tuner.population}
        for child in candidates:
            space.check(child.graph)
            assert child.attrs["parent"] in alive
            assert child.graph != alive[child.attrs["parent"]]
        tuner.tell(candidates, fake_results(candidates))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"population_size": 0}, "tuner.population_size"),
        ({"sample_size": 0}, "tuner.sample_size"),
        ({"population_size": 3, "sample_size": 4}, "tuner.sample_size"),
        ({"population_size": 10, "n_trials": 9}, "tuner.n_trials"),
        ({"batch_size": 0}, "tuner.batch_size"),
    ],
)
def test_bad_config_names_the_key(ops, config, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make(load_space("tabular_mlp", ops), **config)


def test_cli_search_runs_generations(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    tiny = [a for a in TINY if not a.startswith("tuner")]
    out = nasfw(
        tmp_path,
        *tiny,
        "tuner=evolution",
        "tuner.population_size=3",
        "tuner.sample_size=2",
        "tuner.n_trials=5",
        "tuner.batch_size=2",
        f"storage.url={url}",
    )
    assert out.returncode == 0, out.stderr
    done = trials(url, "evolution-iris-tabular_mlp-seed0")
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 5
    assert [t.user_attrs["generation"] for t in done] == [0, 0, 0, 1, 1]
    assert all(t.params for t in done)
    hashes = {t.user_attrs["graph_hash"] for t in done[:3]}
    assert all(t.user_attrs["attrs"]["parent"] in hashes for t in done[3:])


def test_cli_bad_config_fails_naming_the_key(tmp_path):
    tiny = [a for a in TINY if not a.startswith("tuner")]
    args = ["tuner=evolution", "tuner.population_size=3", "tuner.sample_size=4"]
    out = nasfw(tmp_path, *tiny, *args, f"storage.url=sqlite:///{tmp_path}/s.db")
    assert out.returncode == 2
    assert "tuner.sample_size" in out.stderr and "Traceback" not in out.stderr


def test_asynchronous_children_wait_for_a_told_member(space):
    """Asked while every initial network is still training, the tuner waits; the first child
    comes from the members told so far (a tournament among fewer than sample_size)."""
    tuner = make(space, population_size=3, sample_size=2, n_trials=8)
    initial = [tuner.ask_one(pending) for pending in range(3)]
    assert all(c is not None and c.attrs["parent"] is None for c in initial)
    assert tuner.ask_one(3) is None  # nothing told yet: no parent to pick
    tuner.tell_one(initial[1], ok(0.7)[0])
    child = tuner.ask_one(2)
    assert child is not None and child.attrs["parent"] == initial[1].graph.hash
