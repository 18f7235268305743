"""Optuna's pruners as a plugin (plugins/pruners/optuna_pruners.py): each through the pruner
contract, and what the registry makes of them."""

from __future__ import annotations

import optuna
import pytest

from nasfw.plugins.pruners import optuna_pruners as pruners
from nasfw.registry import registry
from nasfw.testing import PrunerContract

BUILT_IN = {
    "median": (pruners.MedianPrunerConfig, pruners.median, optuna.pruners.MedianPruner),
    "successive_halving": (
        pruners.SuccessiveHalvingPrunerConfig,
        pruners.successive_halving,
        optuna.pruners.SuccessiveHalvingPruner,
    ),
    "hyperband": (pruners.HyperbandPrunerConfig, pruners.hyperband, optuna.pruners.HyperbandPruner),
    "patient": (pruners.PatientPrunerConfig, pruners.patient, optuna.pruners.PatientPruner),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
class TestBuiltInPruners(PrunerContract):
    @pytest.fixture
    def pruner(self, name):
        schema, factory, _ = BUILT_IN[name]
        return schema, factory

    def test_registered_through_the_entry_point(self, name):
        schema, factory, kind = BUILT_IN[name]
        assert registry().pruners[name] == (schema, factory)
        assert registry().configs["pruner", name] is schema
        assert type(factory(schema().for_run(4))) is kind


def test_hyperband_runs_to_train_epochs_unless_told_otherwise():
    schema = pruners.HyperbandPrunerConfig
    assert schema().for_run(7).max_resource == 7
    assert schema(max_resource=3).for_run(7).max_resource == 3
    assert pruners.MedianPrunerConfig().for_run(7) == pruners.MedianPrunerConfig()
