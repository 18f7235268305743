"""Screening with the DB (nasfw.minibench.screen, evaluation.screen=k)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import IMAGE, conv_net

from nasfw.graph import ArchGraph
from nasfw.minibench.db import BestModelDB, ModelEntry, ProblemEntry
from nasfw.minibench.encoding import ProblemMeta
from nasfw.minibench.screen import Screener, rank_correlation, train_regressor

OPS = ["conv2d", "dense"]


def wide_is_better(tmp_path, problems: int = 4) -> BestModelDB:
    """Image problems on which a network's accuracy grows with its width (and some noise)."""
    db = BestModelDB(str(tmp_path / "mb.db"))
    rng = np.random.default_rng(0)
    for p in range(problems):
        meta = ProblemMeta("image", "classification", (1, 8 + 4 * p, 8 + 4 * p), 10, 500 * (p + 1))
        widths = rng.integers(8, 128, size=12)
        evaluations = [
            ModelEntry(
                f"p{p}", -1, conv_net(int(w), 2), 0.5 + w / 300 + rng.normal(0, 0.02), trial=i
            )
            for i, w in enumerate(widths)
        ]
        db.put(ProblemEntry(f"p{p}", f"p{p}", meta, "accuracy"), [], evaluations)
    return db


def test_rank_correlation_on_problems_left_out(tmp_path):
    scores = rank_correlation(wide_is_better(tmp_path), 2, OPS)
    assert scores["problems"] == 4
    assert scores["spearman_min"] > 0.7 and scores["spearman_mean"] > 0.8


def test_the_screen_picks_the_network_predicted_best(tmp_path):
    regressor = train_regressor(wide_is_better(tmp_path), 2, OPS)
    screen = Screener(regressor, IMAGE, 2, OPS, k=3)
    graphs = [conv_net(16, 2), conv_net(120, 2), conv_net(40, 2)]
    assert screen.best(graphs) == 1
    assert screen.predict(graphs).shape == (3,)


def test_a_tuner_draws_k_proposals_and_keeps_the_predicted_best():
    from nasfw.tuner import Tuner

    class Widest:
        k = 4

        def best(self, graphs: list[ArchGraph]) -> int:
            widths = [g["features0"].params["filters"] for g in graphs]
            return widths.index(max(widths))

    drawn = iter([10, 30, 50, 20, 50, 99])

    class Probe(Tuner):
        ask = tell = state = restore = None  # type: ignore[assignment]

    tuner = object.__new__(Probe)
    tuner.screen = None
    first = tuner.screened(lambda: conv_net(next(drawn), 1), lambda g: g)
    assert first["features0"].params["filters"] == 10  # no screen: one draw
    tuner.screen = Widest()
    chosen = tuner.screened(lambda: conv_net(next(drawn), 1), lambda g: g)
    assert chosen is not None and chosen["features0"].params["filters"] == 50
    assert next(drawn) == 99  # exactly k drawn


def test_screened_random_search_trains_the_predicted_best_of_each_k(built, tmp_path):
    """The search's networks are, draw for draw, the ones the DB's regressor ranks first."""
    from cli import compose

    from nasfw.plugins.tuners.random_search import RandomSearch, RandomSearchConfig
    from nasfw.registry import registry
    from nasfw.search import run_search
    from nasfw.search_space import SearchSpace

    folder, _ = built
    args = [
        "problem=breast_cancer",
        "search_space=tabular_mlp",
        "tuner=random",
        "tuner.n_trials=4",
        "tuner.batch_size=4",
        "evaluation.screen=3",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
        f"minibench.db={folder / 'minibench.db'}",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
    ]
    cfg = compose(*args)
    context = run_search(cfg, tmp_path)
    trained = [t.graph for t in sorted(context.history, key=lambda t: t.index)]
    ops = sorted(registry().ops)
    db = BestModelDB(str(folder / "minibench.db"))
    screen = Screener(train_regressor(db, 4, ops), ProblemMeta.of(context.problem), 4, ops, 3)
    space = SearchSpace(cfg.search_space, registry().ops)
    replay = RandomSearch(RandomSearchConfig(name="random", n_trials=12, batch_size=12), space, 0)
    drawn = [c.graph for c in replay.ask()]
    expected = [drawn[i : i + 3][screen.best(drawn[i : i + 3])] for i in range(0, 12, 3)]
    assert trained == expected
    assert trained != drawn[::3]  # the screen changed what was trained


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tuner=tpe", "evaluation.screen=3: tuner=tpe cannot screen its proposals"),
        ("minibench.db=nowhere.db", "minibench.db=nowhere.db: no mini-benchmark DB"),
    ],
)
def test_screening_that_cannot_work_is_refused_before_the_study(tmp_path, override, message):
    from cli import compose

    from nasfw.config import ConfigError
    from nasfw.search import run_search

    cfg = compose(
        "problem=iris",
        "search_space=tabular_mlp",
        "tuner=random",
        "evaluation.screen=3",
        "tracking=none",
        f"minibench.db={tmp_path / 'mb.db'}",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
        override,
    )
    with pytest.raises(ConfigError, match=message):
        run_search(cfg, tmp_path)
    assert not (tmp_path / "nasfw.db").exists()
