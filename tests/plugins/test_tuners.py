from __future__ import annotations

import pytest
from conftest import load_space

from nasfw.plugins.tuners.random_search import RandomSearch, RandomSearchConfig
from nasfw.plugins.tuners.tpe import TPEConfig, TPETuner
from nasfw.testing import AsynchronousTunerContract, fake_results


@pytest.fixture(params=["image_small", "tabular_mlp", "sequence_small", "text_small"])
def space(request, ops):
    return load_space(request.param, ops)


class TestRandomSearch(AsynchronousTunerContract):
    @pytest.fixture
    def make_tuner(self, space):
        return lambda seed: RandomSearch(RandomSearchConfig(n_trials=7, batch_size=3), space, seed)

    def test_batches_cover_n_trials(self, make_tuner):
        assert [len(g) for g in self.run(make_tuner(0))] == [3, 3, 1]


class TestTPE(AsynchronousTunerContract):
    @pytest.fixture
    def make_tuner(self, space):
        config = TPEConfig(n_trials=12, batch_size=3, n_startup_trials=4)
        return lambda seed: TPETuner(config, space, seed)

    def test_params_are_the_samplers_decisions(self, make_tuner):
        tuner = make_tuner(0)
        for candidate in tuner.ask():
            assert candidate.params and set(candidate.params) == set(candidate.distributions)
            assert any(name.endswith(".op") for name in candidate.params)

    def test_model_uses_results(self, make_tuner):
        """After the startup trials, what TPE proposes depends on what it was told."""
        a, b = make_tuner(5), make_tuner(5)
        for _ in range(2):
            ca, cb = a.ask(), b.ask()
            a.tell(ca, fake_results(ca))
            b.tell(cb, [r.__class__(status="ok", metric=1 - r.metric) for r in fake_results(cb)])
        assert [c.graph.hash for c in a.ask()] != [c.graph.hash for c in b.ask()]


def test_tpe_hands_its_search_space_on_and_proposes_what_fresh_samplers_would(monkeypatch):
    """Each generation's sampler takes over the previous one's cached search space (no
    recomputation over every trial), and the proposals are those of fresh samplers."""
    import nasfw.plugins.tuners.tpe as tpe
    from nasfw.testing import load_search_space

    space = load_search_space("nasbench201")
    config = TPEConfig(n_trials=40, batch_size=1, n_startup_trials=5)

    def run() -> tuple[list[str], list[object]]:
        tuner, hashes, caches = TPETuner(config, space, 3), [], []
        while candidates := tuner.ask():
            caches.append(tuner.study.sampler._search_space)
            hashes += [c.graph.hash for c in candidates]
            tuner.tell(candidates, fake_results(candidates))
        return hashes, caches

    carried, caches = run()
    assert len(carried) == 40
    assert all(cache is caches[0] for cache in caches[1:])  # one cache, handed on
    fresh_sampler = tpe.tpe_sampler
    monkeypatch.setattr(tpe, "tpe_sampler", lambda *a, previous=None, **k: fresh_sampler(*a, **k))
    fresh, fresh_caches = run()
    assert fresh == carried
    assert len({id(c) for c in fresh_caches}) == len(fresh_caches)  # the monkeypatch worked


class TestTPEOrderedUnique(AsynchronousTunerContract):
    """``tuner.ordered`` and ``tuner.unique`` keep every tuner promise (determinism, an exact
    resume, the asynchronous budget) on the contract's spaces."""

    @pytest.fixture
    def make_tuner(self, space):
        config = TPEConfig(n_trials=12, batch_size=3, n_startup_trials=4, ordered=True, unique=True)
        return lambda seed: TPETuner(config, space, seed)


def _tpe_run(space, seed: int, **settings) -> list:
    """Every candidate a batch-size-1 TPE proposes on ``space`` told fake results."""
    tuner, proposed = TPETuner(TPEConfig(batch_size=1, **settings), space, seed), []
    while candidates := tuner.ask():
        proposed += candidates
        tuner.tell(candidates, fake_results(candidates))
    return proposed


def test_tpe_ordered_suggests_a_numeric_grid_as_positions():
    """tuner.ordered: a choice among 3+ numbers is its position in the sorted grid (an
    IntDistribution); strings and two-way choices stay categorical."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from nasfw.testing import load_search_space

    space = load_search_space("fcnet")
    genes = space.genes()
    [first, *_] = _tpe_run(space, 0, n_trials=12, n_startup_trials=4, ordered=True)
    values = space.values(first.graph)
    for name, choices in genes.items():
        dist = first.distributions[name]
        if isinstance(choices[0], str) or len(choices) < 3:
            assert isinstance(dist, CategoricalDistribution), name
        else:
            assert dist == IntDistribution(0, len(choices) - 1), name
            assert values[name] == sorted(choices)[first.params[name]]
    plain = _tpe_run(space, 0, n_trials=12, n_startup_trials=4)[0]
    assert all(isinstance(d, CategoricalDistribution) for d in plain.distributions.values())


def test_tpe_unique_never_proposes_a_network_it_was_told():
    """tuner.unique: n_trials different networks; without it TPE repeats its best ones."""
    from nasfw.testing import load_search_space

    space = load_search_space("nasbench201")
    settings = {"n_trials": 60, "n_startup_trials": 5}
    plain = [c.graph.hash for c in _tpe_run(space, 1, **settings)]
    unique = _tpe_run(space, 1, unique=True, **settings)
    assert len(set(plain)) < len(plain)  # the repeats tuner.unique avoids
    assert len(unique) == 60 and len({c.graph.hash for c in unique}) == 60
