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
