"""Classes of problems and their constraint sets (nasfw.minibench.classes)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import PROBLEMS, conv_net, full_spaces, pooled_net

from nasfw.minibench.classes import derive_space, group_problems
from nasfw.search_space import RandomChooser, SearchSpace

OPS = sorted({n.op for _, graphs in PROBLEMS.values() for g in graphs for n in g})


def space_of(config: dict, ops) -> SearchSpace:
    from omegaconf import OmegaConf

    from nasfw.config import SearchSpaceConfig

    return SearchSpace(OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), config), ops)


def deep_graphs():
    return [g for pid in ("deep_a", "deep_b", "deep_c") for g in PROBLEMS[pid][1]]


def test_constraint_set_is_the_merge_of_the_best_networks(ops):
    full = full_spaces()["image"]
    space = derive_space("mb_x", "image", deep_graphs(), full)
    assert space["name"] == "mb_x" and space["modalities"] == ["image"]
    features, classifier = space["stages"]
    assert features == {"name": "features", "ops": ["conv2d"], "min_nodes": 3, "max_nodes": 4}
    assert classifier["ops"] == ["dense"] and classifier["max_nodes"] == 1
    # Ranges linearised to what the networks used; choices cut to the ones used.
    assert space["ops"]["conv2d"]["filters"] == {"low": 40, "high": 64, "log": False}
    assert space["ops"]["conv2d"]["kernel_size"] == {"choices": [5]}
    assert space["ops"]["dense"]["units"]["low"] == space["ops"]["dense"]["units"]["high"] == 64
    assert set(space["ops"]) == {"conv2d", "dense"}  # ops no network used are gone
    assert space["connections"] == ["sequential", "skip"] and space["merge"] == ["add"]
    assert space["max_params"] == full["max_params"]


def test_every_source_network_fits_its_constraint_set_and_samples_stay_inside(ops):
    full = full_spaces()["image"]
    graphs = [*deep_graphs(), pooled_net(8)]
    space = space_of(derive_space("mb_x", "image", graphs, full), ops)
    for graph in graphs:
        space.check(graph)
    for seed in range(20):
        sampled = space.sample(RandomChooser(np.random.default_rng(seed)))
        for node in sampled:
            if node.op == "conv2d":
                assert 8 <= node.params["filters"] <= 64
                assert node.params["kernel_size"] in (1, 5)


def test_no_skip_seen_means_a_sequential_space(ops):
    full = full_spaces()["image"]
    space = derive_space("mb_y", "image", [pooled_net(8), pooled_net(16)], full)
    assert space["connections"] == ["sequential"]
    assert space["stages"][0]["ops"] == ["conv2d", "avgpool2d"]
    space_of(space, ops)  # a valid SearchSpace


def test_an_empty_class_is_refused():
    with pytest.raises(ValueError, match="no networks"):
        derive_space("mb_z", "image", [], full_spaces()["image"])


def test_problems_group_by_modality_then_by_their_best_networks(db):
    classes = group_problems(db, full_spaces(), folding=3, ops=OPS, max_classes=3)
    found = {c.name: (c.modality, c.problems) for c in classes}
    assert found == {
        "mb_image_0": ("image", ["deep_a", "deep_b", "deep_c"]),
        "mb_image_1": ("image", ["shallow_a", "shallow_b", "shallow_c"]),
        "mb_tabular_0": ("tabular", ["tab_a", "tab_b"]),
    }
    shallow = next(c for c in classes if c.name == "mb_image_1")
    assert shallow.space["ops"]["conv2d"]["kernel_size"] == {"choices": [1]}


def test_max_classes_one_keeps_one_class_per_modality(db):
    classes = group_problems(db, full_spaces(), folding=3, ops=OPS, max_classes=1)
    assert [c.name for c in classes] == ["mb_image_0", "mb_tabular_0"]
    assert len(classes[0].problems) == 6


def test_problems_alike_are_one_class(tmp_path):
    from synthetic import IMAGE, fill

    from nasfw.minibench.db import BestModelDB

    db = BestModelDB(str(tmp_path / "mb.db"))
    fill(db, {f"p{i}": (IMAGE, [conv_net(64, 3), conv_net(64, 3)]) for i in range(4)})
    [only] = group_problems(db, full_spaces(), folding=3, ops=OPS, max_classes=3)
    assert only.problems == ["p0", "p1", "p2", "p3"]
