"""The best-model DB (nasfw.minibench.db): what goes in comes out; bad files are named."""

from __future__ import annotations

import sqlite3

import pytest
from synthetic import IMAGE, conv_net

from nasfw.config import ConfigError
from nasfw.minibench.db import BestModelDB, ModelEntry, ProblemEntry


def test_problems_and_models_round_trip(tmp_path):
    db = BestModelDB(str(tmp_path / "mb.db"))
    graphs = [conv_net(64, 3), conv_net(32, 2)]
    entry = ProblemEntry(
        "digits_noisy:noise=0.5",
        "digits_noisy",
        IMAGE,
        "accuracy",
        settings={"name": "digits_noisy", "noise": 0.5},
        tuner="codeepneat",
        search_space="petridish_full",
        study="minibench-x",
        fingerprint="abc",
        trials=12,
    )
    db.put(
        entry,
        [
            ModelEntry(entry.id, r, g, 0.9 - r / 10, 5000, 700, 0.25, r)
            for r, g in enumerate(graphs)
        ],
    )
    db.close()
    again = BestModelDB(str(tmp_path / "mb.db"), must_exist=True)  # a file a team shares
    [found] = again.problems()
    assert found.meta == IMAGE and found.settings["noise"] == 0.5 and found.trials == 12
    assert found.added > 0
    models = again.models(entry.id)
    assert [m.graph for m in models] == graphs and [m.rank for m in models] == [0, 1]
    assert models[0].value == pytest.approx(0.9) and models[0].flops == 5000


def test_put_replaces_a_problem_whole(tmp_path):
    db = BestModelDB(str(tmp_path / "mb.db"))
    entry = ProblemEntry("p", "p", IMAGE, "accuracy")
    trained = [ModelEntry("p", -1, conv_net(4 + i, 1), 0.1 * i, trial=i) for i in range(5)]
    db.put(entry, [ModelEntry("p", r, conv_net(16, 1 + r), 0.5) for r in range(3)], trained)
    assert [e.graph for e in db.evaluations("p")] == [e.graph for e in trained]
    db.put(entry, [ModelEntry("p", 0, conv_net(8, 1), 0.6)])
    assert [m.graph for m in db.models()] == [conv_net(8, 1)]
    assert db.evaluations() == []
    db.put(entry, [], trained)
    db.remove("p")
    assert db.problems() == [] and db.models() == [] and db.evaluations() == []


def test_a_missing_db_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"minibench.db=.*nope.db.*mode=minibench"):
        BestModelDB(str(tmp_path / "nope.db"), must_exist=True)


def test_a_file_that_is_no_db_is_named(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(ConfigError, match=r"minibench.db=.*notes.db: cannot use it"):
        BestModelDB(str(path))
    assert path.read_text().startswith("these are my notes")  # nothing overwritten


def test_another_format_is_refused(tmp_path):
    path = tmp_path / "mb.db"
    BestModelDB(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE info SET value = '99' WHERE key = 'format'")
    with pytest.raises(ConfigError, match="format 99"):
        BestModelDB(str(path))
