"""A small mini-benchmark DB of hand-made best networks (``synthetic.PROBLEMS``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import PROBLEMS, fill

from nasfw.minibench.db import BestModelDB


@pytest.fixture
def db(tmp_path: Path) -> BestModelDB:
    found = BestModelDB(str(tmp_path / "minibench.db"))
    fill(found, PROBLEMS)
    yield found
    found.close()
