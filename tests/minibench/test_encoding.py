"""Folded encodings and meta-features (nasfw.minibench.encoding)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasfw.graph import ArchGraph, Node
from nasfw.minibench.encoding import (
    CONNECTION_FEATURES,
    META_FEATURES,
    ProblemMeta,
    depths,
    feature_names,
    fold,
)

OPS = ["conv2d", "dense", "dropout", "maxpool2d"]


def chain() -> ArchGraph:
    """conv(16) -> conv(64, k5) -> pool -> dense(128) -> dropout(0.3), with a skip c0 -> p."""
    return ArchGraph(
        [
            Node("c0", "conv2d", {"filters": 16, "kernel_size": 3}),
            Node("c1", "conv2d", {"filters": 64, "kernel_size": 5}, inputs=("c0",)),
            Node("p", "maxpool2d", {"pool_size": 2}, inputs=("c1", "c0"), merge="add"),
            Node("d", "dense", {"units": 128}, inputs=("p",)),
            Node("x", "dropout", {"rate": 0.3}, inputs=("d",)),
        ],
        output="x",
    )


def named(vector: np.ndarray, folding: int) -> dict[str, float]:
    return dict(zip(feature_names(folding, OPS), vector.tolist(), strict=True))


def test_depth_is_the_longest_path_from_the_input():
    assert depths(chain()) == {"c0": 1, "c1": 2, "p": 3, "d": 4, "x": 5}


@pytest.mark.parametrize("folding", [1, 2, 3, 5, 8])
def test_vector_length_names_and_op_shares(folding):
    vector = fold(chain(), folding, OPS)
    assert len(vector) == len(feature_names(folding, OPS)) == folding * (len(OPS) + 6) + 7
    f = named(vector, folding)
    shares = sum(v for k, v in f.items() if "/op_" in k)
    assert shares == pytest.approx(1.0)  # every node counted once, as a share of the graph


def test_nodes_fold_into_depth_bins_with_family_statistics():
    f = named(fold(chain(), 2, OPS), 2)
    # Depths 1..5 into 2 bins: floor((d - 1) * 2 / 5) -> c0, c1, p in bin 0; d, x in bin 1.
    assert f["bin0/op_conv2d"] == pytest.approx(2 / 5)
    assert f["bin0/op_maxpool2d"] == pytest.approx(1 / 5)
    assert f["bin1/op_dense"] == pytest.approx(1 / 5)
    assert f["bin0/width_max"] == pytest.approx(math.log2(65))
    assert f["bin0/width_mean"] == pytest.approx((math.log2(17) + math.log2(65)) / 2)
    assert f["bin0/kernel_mean"] == pytest.approx((3 + 5 + 2) / 3)  # pool_size is a kernel
    assert f["bin1/rate_max"] == pytest.approx(0.3)
    assert f["bin0/rate_max"] == 0.0  # no dropout there


def test_connection_statistics():
    f = named(fold(chain(), 1, OPS), 1)
    assert [f[f"graph/{k}"] for k in CONNECTION_FEATURES] == [5, 5, 1, 0, 1, 6 / 5, 2]


def test_folding_level_changes_what_compares():
    """At F=1 a conv-then-dense and a dense-then-conv network look alike; at F=2 they do not."""
    nodes = list(chain())
    flipped = ArchGraph(
        [Node("d", "dense", {"units": 128}), Node("c", "conv2d", {"filters": 16}, inputs=("d",))],
        output="c",
    )
    forward = ArchGraph([nodes[0], Node("d", "dense", {"units": 128}, inputs=("c0",))], output="d")
    assert np.allclose(fold(forward, 1, OPS)[: len(OPS)], fold(flipped, 1, OPS)[: len(OPS)])
    assert not np.allclose(fold(forward, 2, OPS), fold(flipped, 2, OPS))


def test_ops_outside_the_vocabulary_are_not_counted():
    vector = fold(chain(), 1, ["dense"])
    assert vector[0] == pytest.approx(1 / 5)


def test_bad_folding_is_refused():
    with pytest.raises(ValueError, match="folding"):
        fold(chain(), 0, OPS)


def test_meta_features():
    meta = ProblemMeta("image", "classification", (1, 28, 28), 10, 6000)
    vector = dict(zip(META_FEATURES, meta.vector().tolist(), strict=True))
    assert vector["modality_image"] == 1 and vector["modality_text"] == 0
    assert vector["task_classification"] == 1
    assert vector["log2_input_size"] == pytest.approx(math.log2(784))
    assert vector["input_rank"] == 3
    assert vector["log2_outputs"] == pytest.approx(math.log2(10))
    assert ProblemMeta.from_dict(meta.to_dict()) == meta
