"""One routine ends a generation (nasfw/generation.py): the synchronous loop, the asynchronous
loop and search_space=auto's probe all end theirs through it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli import compose

# The db fixture's hand-made networks (tests/minibench/synthetic.py).
sys.path.insert(0, str(Path(__file__).parent / "minibench"))

from nasfw import generation
from nasfw.search import run_search

TINY = [
    "problem=iris",
    "search_space=tabular_mlp",
    "train.epochs=1",
    "launcher.workers=0",
    "tracking=none",
    "tuner=random",
    "tuner.n_trials=4",
    "tuner.batch_size=2",
]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """A step added to the end of every generation: (generation, trials, is the tuner's)."""
    found: list[tuple[int, int, bool]] = []

    def step(search: object, end: generation.GenerationEnd) -> None:
        found.append((end.generation, len(end.trials), end.seconds is not None))

    monkeypatch.setattr(generation, "GENERATION_END", [*generation.GENERATION_END, step])
    return found


def test_the_synchronous_loop_ends_each_generation_through_it(tmp_path: Path, seen) -> None:
    cfg = compose(*TINY, f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}")
    context = run_search(cfg, tmp_path)
    assert seen == [(0, 2, True), (1, 2, True)]
    # The earlier steps ran before the added one: the state of generation 1 is saved.
    assert sorted(context.generation_seconds) == [0, 1]


def test_the_asynchronous_loop_ends_each_generation_through_it(tmp_path: Path, seen) -> None:
    cfg = compose(
        *TINY,
        "tuner.asynchronous=true",
        "launcher.workers=2",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
    )
    run_search(cfg, tmp_path)
    assert seen == [(0, 2, True), (1, 2, True)]


def test_the_probe_of_search_space_auto_ends_through_it(tmp_path: Path, seen, db) -> None:
    cfg = compose(
        *[a for a in TINY if not a.startswith("search_space")],
        "search_space=auto",
        "minibench.probe_trials=3",
        f"minibench.db={tmp_path / 'minibench.db'}",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
    )
    context = run_search(cfg, tmp_path)
    # The probe is generation -1 and not the tuner's: no state, time or weights kept for it.
    assert seen == [(-1, 3, False), (0, 2, True), (1, 2, True)]
    assert -1 not in context.generation_seconds
