"""The mini-benchmark classifier (nasfw.minibench.classify)."""

from __future__ import annotations

import pytest
from synthetic import IMAGE, PROBLEMS, TABULAR, conv_net, fill, full_spaces, mlp, pooled_net

from nasfw.minibench.classes import group_problems
from nasfw.minibench.classify import cross_validate, train_classifier
from nasfw.minibench.db import BestModelDB

OPS = sorted({n.op for _, graphs in PROBLEMS.values() for g in graphs for n in g})


def test_a_new_problem_is_classified_by_its_best_networks(db):
    classes = group_problems(db, full_spaces(), 3, OPS, 3)
    model = train_classifier(db, classes, 3, OPS)
    deep = model.choose([conv_net(50, 4), conv_net(62, 3, skip=True)], IMAGE)
    assert deep.name == "mb_image_0" and deep.confidence > 0.7
    assert set(deep.probabilities) == {"mb_image_0", "mb_image_1"}  # its modality's only
    assert sum(deep.probabilities.values()) == pytest.approx(1.0)
    assert model.choose([pooled_net(9)], IMAGE).name == "mb_image_1"
    # The one tabular class, whatever the networks look like.
    tabular = model.choose([conv_net(64, 4)], TABULAR)
    assert (tabular.name, tabular.confidence) == ("mb_tabular_0", 1.0)


def test_leave_one_problem_out_accuracy(db):
    classes = group_problems(db, full_spaces(), 3, OPS, 3)
    scores = cross_validate(db, classes, 3, OPS)
    assert scores == {
        "problem_accuracy": 1.0,
        "network_accuracy": 1.0,
        "problems": 8.0,
        "networks": 22.0,
    }


def test_a_problem_alone_in_its_class_counts_as_wrong(tmp_path):
    """Left out, no example of its class remains: the accuracy says so."""
    db = BestModelDB(str(tmp_path / "mb.db"))
    fill(
        db,
        {
            k: v
            for k, v in PROBLEMS.items()
            if k in ("deep_a", "shallow_a", "shallow_b", "shallow_c")
        },
    )
    classes = group_problems(db, full_spaces(), 3, OPS, 3)
    assert [c.problems for c in classes] == [["deep_a"], ["shallow_a", "shallow_b", "shallow_c"]]
    assert cross_validate(db, classes, 3, OPS)["problem_accuracy"] == 0.75


def test_a_modality_without_class_is_refused(db):
    classes = group_problems(db, full_spaces(), 3, OPS, 3)
    model = train_classifier(db, classes, 3, OPS)
    from nasfw.minibench.encoding import ProblemMeta

    text = ProblemMeta("text", "classification", (20,), 2, 100)
    with pytest.raises(ValueError, match="no text problem"):
        model.choose([mlp(8, 1)], text)
