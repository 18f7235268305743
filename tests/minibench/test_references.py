"""Reference networks and similarity by ranking (nasfw.minibench.references), and the DB's
reference tables (format 2, migrated from 1)."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from synthetic import IMAGE, conv_net

from nasfw.minibench.db import FORMAT, BestModelDB, ProblemEntry
from nasfw.minibench.encoding import ProblemMeta
from nasfw.minibench.references import (
    choose_references,
    classify_leave_one_out,
    informative,
    nearest,
    score_table,
    similarity,
    similarity_classes,
    space_of,
)


def test_similarity_is_kendall_tau_over_shared_references():
    a = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}
    assert similarity(a, {i: 10 * v**2 for i, v in a.items()}) == pytest.approx(1.0)
    assert similarity(a, {i: -v for i, v in a.items()}) == pytest.approx(-1.0)
    # One swapped pair of 6: (5 - 1) / 6.
    assert similarity(a, {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.4}) == pytest.approx(4 / 6)
    assert math.isnan(similarity(a, {0: 1.0, 9: 2.0}))  # fewer than 3 shared
    assert math.isnan(similarity(a, {0: 1.0, 1: 1.0, 2: 1.0}))  # constant


def test_nearest_ranks_by_tau_then_meta_features():
    mine = {i: float(i) for i in range(8)}
    db = {
        "same": {i: float(i) ** 3 for i in range(8)},
        "twin": {i: float(i) + 1 for i in range(8)},
        "reversed": {i: -float(i) for i in range(8)},
        "self": dict(mine),
        "unscored": {},
    }
    close = ProblemMeta("tabular", "regression", (9,), 1, 1000)
    far = ProblemMeta("tabular", "regression", (400,), 1, 50_000)
    found = nearest(mine, db, {"same": far, "twin": close}, close, exclude=["self"])
    # same and twin tie on tau 1: the meta-features break it; reversed is last; unscored out.
    assert [n.problem_id for n in found] == ["twin", "same", "reversed"]
    assert found[0].distance == 0.0 and found[-1].tau == pytest.approx(-1.0)
    assert [n.problem_id for n in nearest(mine, db, k=1, exclude=["self"])] == ["same"]


@pytest.mark.parametrize("family", ["nasbench201", "fcnet", "hpobench_mlp"])
def test_references_are_fixed_distinct_and_spread(family):
    space = space_of(family)
    refs = choose_references(space, 16)
    assert refs == choose_references(space, 16)  # chosen once: the same every time
    params = [space.describe(g)[0] for g in refs]
    assert len({repr(sorted(p.items())) for p in params}) == 16
    for g in refs:
        space.check(g)
    # Spread: every decision takes at least two values over the set.
    for name in params[0]:
        assert len({repr(p.get(name)) for p in params}) >= 2, name


def _table(name):
    from nasfw.config import ProblemConfig
    from nasfw.evaluate import load_problem

    return load_problem(ProblemConfig(name=name))


def test_tables_of_a_family_are_nearest_each_other():
    nb201 = choose_references(space_of("nasbench201"), 24)
    fcnet = choose_references(space_of("fcnet"), 24)
    scores = {}
    for name, refs in [
        ("nb201_cifar10", nb201),
        ("nb201_cifar100", nb201),
        ("nb201_imagenet16", nb201),
        ("fcnet_protein", fcnet),
        ("fcnet_slice", fcnet),
        ("fcnet_naval", fcnet),
        ("fcnet_parkinsons", fcnet),
    ]:
        found = score_table(_table(name), refs)
        assert all(s > 0 for _, s in found)  # the cost is the table's training time
        scores[name] = {i: v for i, (v, _) in enumerate(found)}
    nb = {k: v for k, v in scores.items() if k.startswith("nb201")}
    fc = {k: v for k, v in scores.items() if k.startswith("fcnet")}
    near = nearest(nb["nb201_cifar10"], nb, exclude=["nb201_cifar10"])
    assert {n.problem_id for n in near} == {"nb201_cifar100", "nb201_imagenet16"}
    assert min(n.tau for n in near) > 0.6
    for name in fc:
        assert nearest(fc[name], fc, exclude=[name])[0].tau > 0.4
    # Across families the references are other networks: an NB201 table's scores ranked
    # against FCNet's say nothing, and tau is far below the within-family figures.
    assert similarity(nb["nb201_cifar10"], fc["fcnet_protein"]) < 0.6


def test_db_keeps_references_once_and_migrates_format_1(tmp_path):
    path = tmp_path / "mb.db"
    db = BestModelDB(str(path))
    db.put(ProblemEntry("p", "p", IMAGE, "accuracy"), [])
    graphs = [conv_net(8 * (i + 1), 1) for i in range(3)]
    db.put_references("image", graphs)
    with pytest.raises(ValueError, match="has reference networks already"):
        db.put_references("image", graphs)
    db.put_reference_scores("p", "image", [(0, 0.5, 2.0), (1, 0.7, 3.0), (2, 0.1, None)])
    assert db.references("image") == graphs and db.references("other") == []
    assert db.reference_scores("image") == {"p": {0: 0.5, 1: 0.7, 2: 0.1}}
    assert db.reference_seconds() == {"p": 5.0} and db.families() == {"p": "image"}
    db.remove("p")
    assert db.reference_scores() == {}
    db.close()
    # A format-1 file (before the reference tables): opened, it gets them and format 2.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE reference_scores")
        conn.execute('DROP TABLE "references"')
        conn.execute("UPDATE info SET value = '1' WHERE key = 'format'")
    again = BestModelDB(str(path), must_exist=True)
    assert again.reference_scores() == {} and again.references("image") == []
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM info WHERE key='format'").fetchone() == (
            str(FORMAT),
        )


def test_mode_minibench_searches_tables_in_their_space_and_scores_references(tmp_path):
    """Through the CLI: a table problem's family is its table's space kind (not the
    modality's full space); its references are chosen once and scored; a rerun keeps them."""
    from cli import nasfw

    args = [
        "mode=minibench",
        "minibench.problems=[nb201_cifar10,nb201_cifar100,fcnet_naval]",
        "minibench.db=mb.db",
        "minibench.references=12",
        "tuner=random",
        "tuner.n_trials=8",
        "storage=memory",
        "tracking=none",
    ]
    run = nasfw(tmp_path, *args)
    assert run.returncode == 0, run.stderr[-2000:]
    db = BestModelDB(str(tmp_path / "mb.db"), must_exist=True)
    spaces = {p.id: p.search_space for p in db.problems()}
    assert spaces == {
        "nb201_cifar10": "nasbench201",
        "nb201_cifar100": "nasbench201",
        "fcnet_naval": "fcnet",
    }
    assert db.families() == {
        "nb201_cifar10": "nasbench201",
        "nb201_cifar100": "nasbench201",
        "fcnet_naval": "fcnet",
    }
    refs = db.references("nasbench201")
    assert len(refs) == 12 and len(db.references("fcnet")) == 12
    scores = db.reference_scores()
    assert all(len(s) == 12 for s in scores.values())
    assert all(s > 0 for s in db.reference_seconds().values())
    said = " ".join(run.stderr.split())
    assert "nb201_cifar10 (nasbench201) nearest by reference ranking: nb201_cifar100" in said
    # Two problems: one class, each the other's nearest, so both recognised.
    assert (
        "nasbench201 classes by reference ranking: [nb201_cifar10, nb201_cifar100]; "
        "leave-one-problem-out from a 8-reference probe: 1.00 of problems in their class "
        "(majority-class baseline 1.00)"
    ) in said
    report = json.loads(next(tmp_path.rglob("minibench.json")).read_text())
    assert report["references"]["fcnet"]["classes"] == [["fcnet_naval"]]
    assert report["references"]["fcnet"]["leave_one_out"]["accuracy"] == 0.0  # alone
    db.close()
    # Rerun with another count: the DB's set stays (scores stay comparable).
    again = nasfw(tmp_path, *args[:-5], "minibench.references=20", *args[-4:])
    assert again.returncode == 0, again.stderr[-2000:]
    db = BestModelDB(str(tmp_path / "mb.db"), must_exist=True)
    assert db.references("nasbench201") == refs
    db.close()


def test_the_most_informative_references_are_those_the_problems_order_differently():
    # References 0/1 are ordered differently by c than by a and b, 2/3 by b; 4 and 5 every
    # problem orders alike with everything: they tell nothing apart.
    scores = {
        "a": {0: 1, 1: 2, 2: 3, 3: 4, 4: 0, 5: 9},
        "b": {0: 1, 1: 2, 2: 4, 3: 3, 4: 0, 5: 9},
        "c": {0: 2, 1: 1, 2: 3, 3: 4, 4: 0, 5: 9},
    }
    picked = informative(scores, 4)
    assert sorted(picked) == [0, 1, 2, 3]
    assert picked[1] == (1 if picked[0] == 0 else 0 if picked[0] == 1 else picked[1])
    assert informative(scores, 4) == picked  # deterministic
    assert informative(scores, 6) == [0, 1, 2, 3, 4, 5]  # all, when no more are asked for
    assert informative({"a": {0: 1, 1: 2}, "b": {1: 3, 2: 1}}, 5) == [1]  # shared only


def _two_groups() -> dict[str, dict[int, float]]:
    """Problems a1..a3 rank 12 references one way, b1..b3 the reverse way (each with a small
    swap of its own)."""
    base = list(range(12))
    found = {}
    for k in range(3):
        up = base.copy()
        up[k], up[k + 1] = up[k + 1], up[k]
        found[f"a{k + 1}"] = {i: float(v) for i, v in enumerate(up)}
        found[f"b{k + 1}"] = {i: float(-v) for i, v in enumerate(up)}
    return found


def test_similarity_classes_split_problems_that_rank_references_differently():
    assert similarity_classes(_two_groups(), 3) == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]
    assert similarity_classes(_two_groups(), 1) == [["a1", "a2", "a3", "b1", "b2", "b3"]]
    alike = {p: s for p, s in _two_groups().items() if p.startswith("a")}
    assert similarity_classes(alike, 3) == [["a1", "a2", "a3"]]  # nothing to split


def test_leave_one_out_recognises_the_class_from_a_probe_and_beats_the_majority():
    found = classify_leave_one_out(_two_groups(), 3, probe=6)
    assert found["classes"] == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]
    assert found["accuracy"] == 1.0
    # Held out, a1 leaves 2 a's and 3 b's: the majority says b, wrong for every a (and
    # likewise for every b): the baseline that ignores the probe gets none right.
    assert found["baseline"] == 0.0
    # b1 alone in its class: held out, its nearest problem is an a; it counts as wrong.
    lonely = {p: v for p, v in _two_groups().items() if p in ("a1", "a2", "b1")}
    found = classify_leave_one_out(lonely, 3, probe=6)
    assert found["classes"] == [["a1", "a2"], ["b1"]]
    assert found["problems"]["b1"] == {"actual": 1, "predicted": 0}
    assert found["accuracy"] == 2 / 3
