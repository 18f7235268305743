from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasfw import INPUT, ArchGraph, GraphError, Node, OpSpec


def sample_graph() -> ArchGraph:
    return ArchGraph(
        [
            Node("c0", "conv2d", {"filters": 16, "kernel_size": 3, "activation": "relu"}),
            Node("p0", "maxpool2d", {"pool_size": 2}, inputs=("c0",)),
            Node("c1", "conv2d", {"filters": 8}, inputs=("p0",)),
            Node("m", "identity", inputs=("c1", "p0"), merge="add"),
            Node("r", "dropout", {"rate": 0.25}, inputs=("m",)),
            Node("d0", "dense", {"units": 32, "activation": "linear"}, inputs=("r",)),
        ],
        output="d0",
    )


# -- serialisation --------------------------------------------------------------------------
def test_json_round_trip() -> None:
    g = sample_graph()
    for text in (g.to_json(), g.to_json(indent=2)):
        back = ArchGraph.from_json(text)
        assert back == g
        assert back.hash == g.hash
        assert back["m"].inputs == ("c1", "p0")
        assert back["m"].merge == "add"
        assert back["r"].params == {"rate": 0.25}
        assert back.output == "d0"
        assert [n.id for n in back] == [n.id for n in g]


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text(sample_graph().to_json(indent=2))
    assert ArchGraph.load(path) == sample_graph()
    assert ArchGraph.load(str(path)) == sample_graph()


def test_from_json_defaults_inputs_and_merge() -> None:
    g = ArchGraph.from_json('{"nodes": [{"id": "a", "op": "identity"}], "output": "a"}')
    assert g["a"].inputs == (INPUT,)
    assert g["a"].merge == "concat"
    assert g["a"].params == {}


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(GraphError, match=r"nope\.json: cannot read") as info:
        ArchGraph.load(path)
    assert str(path) in str(info.value)


def test_load_invalid_json_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": [')
    with pytest.raises(GraphError, match="not valid JSON") as info:
        ArchGraph.load(path)
    assert str(path) in str(info.value)


def test_load_malformed_graph_names_the_path_and_node(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"nodes": [{"id": "a", "op": "x", "colour": 1}], "output": "a"}))
    with pytest.raises(GraphError, match=r"bad\.json: node 'a': unknown field\(s\) \['colour'\]"):
        ArchGraph.load(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nodes": []}, "needs the fields"),
        ({"nodes": {}, "output": "a"}, "'nodes' must be a list"),
        ({"nodes": [{"op": "identity"}], "output": "a"}, r"nodes\[0\]: missing field"),
        ({"nodes": [{"id": "a", "op": "identity", "inputs": "b"}], "output": "a"}, "'inputs'"),
        ({"version": 99, "nodes": [], "output": "a"}, "version 99"),
    ],
)
def test_from_dict_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        ArchGraph.from_dict(data)


def test_duplicate_and_reserved_ids() -> None:
    with pytest.raises(GraphError, match="node 'a': duplicate"):
        ArchGraph([Node("a", "identity"), Node("a", "identity")], output="a")
    with pytest.raises(GraphError, match="'input' is reserved"):
        ArchGraph([Node(INPUT, "identity")], output=INPUT)


# -- hash -----------------------------------------------------------------------------------
def test_hash_ignores_node_insertion_order() -> None:
    g = sample_graph()
    shuffled = ArchGraph(reversed(list(g)), output=g.output)
    assert [n.id for n in shuffled] != [n.id for n in g]
    assert shuffled.hash == g.hash
    assert hash(shuffled) == hash(g)


def test_hash_is_stable_across_runs() -> None:
    # Pinned: stored trials are matched by this hash, so a resumed search needs the same value.
    g = ArchGraph([Node("a", "dense", {"units": 4})], output="a")
    assert g.hash == "833d3a5a352f9248"


def test_hash_changes_with_params_inputs_merge_and_output() -> None:
    g = sample_graph()
    variants = [
        g.with_params("c0", filters=17),
        g.with_params("r", rate=0.5),
        g.with_node(Node("m", "identity", inputs=("c1", "p0"), merge="concat")),
        g.with_node(Node("m", "identity", inputs=("p0", "c1"), merge="add")),
        g.replace(output="r"),
    ]
    hashes = {v.hash for v in variants}
    assert g.hash not in hashes
    assert len(hashes) == len(variants)
    assert g.with_params("c0", filters=16).hash == g.hash


# -- validation -----------------------------------------------------------------------------
def test_valid_graph_validates(ops: dict[str, OpSpec]) -> None:
    g = sample_graph()
    assert g.validate() is g
    assert g.validate(ops) is g
    assert [n.id for n in g.topological_order()] == ["c0", "p0", "c1", "m", "r", "d0"]


def test_topological_order_puts_inputs_first() -> None:
    g = ArchGraph(
        [
            Node("b", "identity", inputs=("a",)),
            Node("c", "identity", inputs=("a", "b")),
            Node("a", "identity"),
        ],
        output="c",
    )
    assert [n.id for n in g.topological_order()] == ["a", "b", "c"]


def test_topological_order_goes_by_waves_ties_in_insertion_order() -> None:
    # Each node comes in the wave after its latest input, not merely after its inputs: a
    # valid insertion order (a, b, c, e, d) is reordered, so positions in summaries and the
    # builder's order do not depend on how a tuner listed the nodes.
    g = ArchGraph(
        [
            Node("a", "identity"),
            Node("b", "identity", inputs=("a",)),
            Node("c", "identity"),
            Node("e", "identity", inputs=("b", "c", "a"), merge="add"),
            Node("d", "identity", inputs=("c",)),
            Node("f", "identity", inputs=("e", "d"), merge="add"),
        ],
        output="f",
    )
    assert [n.id for n in g.topological_order()] == ["a", "c", "b", "d", "e", "f"]


def test_a_self_loop_is_a_cycle() -> None:
    g = ArchGraph([Node("a", "identity", inputs=(INPUT, "a"))], output="a")
    with pytest.raises(GraphError, match=r"cycle among nodes \['a'\]"):
        g.topological_order()


def test_cycle_names_the_nodes() -> None:
    g = ArchGraph(
        [
            Node("a", "identity", inputs=(INPUT, "c")),
            Node("b", "identity", inputs=("a",)),
            Node("c", "identity", inputs=("b",)),
            Node("d", "identity", inputs=("c",)),
        ],
        output="d",
    )
    with pytest.raises(GraphError, match=r"cycle among nodes \['a', 'b', 'c', 'd'\]"):
        g.validate()


def test_unknown_op_names_the_node(ops: dict[str, OpSpec]) -> None:
    g = ArchGraph([Node("a", "identity"), Node("b", "conv9d", inputs=("a",))], output="b")
    g.validate()  # structure alone is fine
    with pytest.raises(GraphError, match=r"node 'b': unknown op 'conv9d'"):
        g.validate(ops)


def test_dangling_node_is_named() -> None:
    g = ArchGraph(
        [Node("a", "identity"), Node("b", "identity", inputs=("a",)), Node("c", "identity")],
        output="b",
    )
    with pytest.raises(GraphError, match=r"node\(s\) \['c'\] are not on a path"):
        g.validate()


def test_dead_end_branch_is_dangling() -> None:
    g = ArchGraph([Node("a", "identity"), Node("x", "identity", inputs=("a",))], output="a")
    with pytest.raises(GraphError, match=r"node\(s\) \['x'\] are not on a path"):
        g.validate()


def test_missing_input_names_the_node() -> None:
    g = ArchGraph([Node("a", "identity"), Node("b", "identity", inputs=("a", "zz"))], output="b")
    with pytest.raises(GraphError, match=r"node 'b': input 'zz' is not a node"):
        g.validate()


def test_missing_output_and_empty_graph() -> None:
    with pytest.raises(GraphError, match="output 'zz' is not a node"):
        ArchGraph([Node("a", "identity")], output="zz").validate()
    with pytest.raises(GraphError, match="no nodes"):
        ArchGraph([], output="a").validate()


def test_unknown_merge_names_the_node() -> None:
    g = ArchGraph(
        [Node("a", "identity"), Node("b", "identity", inputs=("a", INPUT), merge="mul")],
        output="b",
    )
    with pytest.raises(GraphError, match=r"node 'b': merge 'mul'"):
        g.validate()


def test_node_without_inputs_is_named() -> None:
    with pytest.raises(GraphError, match=r"node 'a': has no inputs"):
        ArchGraph([Node("a", "identity", inputs=())], output="a").validate()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filters": "16"}, r"param 'filters': expected an int, got '16'"),
        ({"filters": 16.0}, r"param 'filters': expected an int"),
        ({"filters": True}, r"param 'filters': expected an int"),
        ({"filters": 0}, r"param 'filters': 0 is below the minimum 1"),
        ({"filters": 5000}, r"param 'filters': 5000 is above the maximum 4096"),
        ({"filters": 8, "activation": "swish"}, r"param 'activation': 'swish' is not one of"),
        ({"filters": 8, "stride": 2}, r"unknown param 'stride'"),
        ({}, r"missing param 'filters'"),
    ],
)
def test_bad_params_name_the_node(
    ops: dict[str, OpSpec], params: dict[str, object], message: str
) -> None:
    g = ArchGraph(
        [Node("c1", "conv2d", params), Node("d0", "dense", {"units": 4}, inputs=("c1",))],
        output="d0",
    )
    with pytest.raises(GraphError, match=r"node 'c1' \(conv2d\): .*" + message):
        g.validate(ops)


def test_float_param_accepts_ints_and_checks_limits(ops: dict[str, OpSpec]) -> None:
    g = ArchGraph([Node("r", "dropout", {"rate": 0})], output="r")
    g.validate(ops)
    with pytest.raises(GraphError, match=r"node 'r' \(dropout\): param 'rate': 0.99 is above"):
        g.with_params("r", rate=0.99).validate(ops)


# -- editing --------------------------------------------------------------------------------
def test_edits_return_new_graphs() -> None:
    g = sample_graph()
    h = g.with_params("c0", filters=32)
    assert g["c0"].params["filters"] == 16
    assert h["c0"].params["filters"] == 32
    assert [n.id for n in h] == [n.id for n in g]
    assert [n.id for n in g.consumers("p0")] == ["c1", "m"]


def test_hyperparameters_flatten_the_graph() -> None:
    flat = sample_graph().hyperparameters()
    assert flat["c0.op"] == "conv2d"
    assert flat["c0.filters"] == 16
    assert flat["m.inputs"] == "c1,p0"
    assert flat["m.merge"] == "add"
    assert "c0.inputs" not in flat


def test_summary_reads_as_layers_in_order():
    graph = ArchGraph(
        [
            Node("a", "conv2d", {"filters": 41, "kernel_size": 5}),
            Node("b", "maxpool2d", {"pool_size": 2, "same": False}, ("a",)),
            Node("e", "maxpool2d", {"same": True, "pool_size": 3}, ("b",)),
            Node("c", "dropout", {"rate": 0.123456}, ("e",)),
            Node("d", "dense", {"units": 96}, ("c", "a"), merge="concat"),
        ],
        output="d",
    )
    # A flag reads as its name when set (not "True"), and is left out when not.
    assert graph.summary() == (
        "conv2d(41,5) → maxpool2d(2) → maxpool2d(same,3) → dropout(0.12) → dense(96)[concat 0]"
    )
