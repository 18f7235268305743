"""nasfw's pytest plugin: the fixtures :mod:`nasfw.testing`'s contract suites ask for.

Installed with nasfw (entry point ``nasfw`` in the group ``pytest11``), so a plugin package's
tests subclass :class:`nasfw.testing.TunerContract` without copying fixtures into a
``conftest.py``. A fixture of the same name in a conftest or test module takes precedence;
``pytest -p no:nasfw`` turns the plugin off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nasfw.search_space import BaseSearchSpace

# The suites' asserts then show the values compared, as in the plugin author's own tests.
pytest.register_assert_rewrite("nasfw.testing")


@pytest.fixture
def space() -> BaseSearchSpace:
    """The ``tabular_mlp`` search space (MLPs of 1 to 5 dense, dropout and batch-norm
    layers) with every registered op: small, quick to sample, valid for any tuner."""
    from nasfw.testing import load_search_space

    return load_search_space("tabular_mlp")
