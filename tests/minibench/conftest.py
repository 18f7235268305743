"""Mini-benchmark DBs for the tests: one of hand-made best networks (``synthetic.PROBLEMS``),
one built through the CLI on a four-problem suite (``minibench_cli``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli import nasfw
from minibench_cli import QUICK, SUITE
from synthetic import PROBLEMS, fill

from nasfw.minibench.db import BestModelDB


@pytest.fixture
def db(tmp_path: Path) -> BestModelDB:
    found = BestModelDB(str(tmp_path / "minibench.db"))
    fill(found, PROBLEMS)
    yield found
    found.close()


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, str]:
    """A DB of four problems, built through the CLI (and the command's stdout + stderr)."""
    folder = tmp_path_factory.mktemp("minibench")
    out = nasfw(folder, *QUICK, SUITE)
    assert out.returncode == 0, out.stderr
    return folder, out.stdout + out.stderr
