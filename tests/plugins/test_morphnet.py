from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from cli import TINY, nasfw

from nasfw import ArchGraph, Node, build_model, model_cost
from nasfw.ledger import trial_extra
from nasfw.plugins.postprocessing.morphnet.regularizer import FlopRegularizer, add_gates
from nasfw.plugins.postprocessing.morphnet.shrink import carry_weights, expand, scale_widths, shrink


class Image:
    input_shape = (1, 8, 8)
    n_outputs = 10


def conv(node_id: str, filters: int, *inputs: str, merge: str = "concat") -> Node:
    return Node(
        node_id, "conv2d", {"filters": filters, "kernel_size": 3}, inputs or ("input",), merge
    )


def gated(graph: ArchGraph, ops, threshold: float = 0.1):
    torch.manual_seed(0)
    model = build_model(add_gates(graph), Image(), ops)
    return model, FlopRegularizer(model, graph, threshold)


def scaling_gates(model, nodes: tuple[str, ...]) -> None:
    """Gates that only scale (gamma in [0.5, 2], beta 0, running mean 0, variance 1): the
    shrunk network carrying the surviving weights then computes exactly the gated one."""
    with torch.no_grad():
        for node in nodes:
            gate = model.node_modules[f"{node}_gate"]
            gate.weight.uniform_(0.5, 2.0)
            gate.bias.zero_()
            gate.running_mean.zero_()
            gate.running_var.fill_(1.0)


def kill(model, node: str, channels: list[int]) -> None:
    with torch.no_grad():
        model.node_modules[f"{node}_gate"].weight[channels] = 0.0


def test_gates_follow_every_conv_and_dense():
    graph = ArchGraph(
        [conv("c0", 8), Node("d", "dense", {"units": 16}, inputs=("c0",))], output="d"
    )
    g = add_gates(graph)
    assert [(n.id, n.op, n.inputs) for n in g] == [
        ("c0", "conv2d", ("input",)),
        ("c0_gate", "batchnorm", ("c0",)),
        ("d", "dense", ("c0_gate",)),
        ("d_gate", "batchnorm", ("d",)),
    ]
    assert g.output == "d_gate"


def test_dead_channels_are_removed_and_flops_drop_exactly(ops):
    graph = ArchGraph(
        [
            conv("c0", 8),
            conv("c1", 6, "c0"),
            Node("p", "maxpool2d", {"pool_size": 2}, inputs=("c1",)),
            Node("d", "dense", {"units": 12}, inputs=("p",)),
        ],
        output="d",
    )
    model, reg = gated(graph, ops)
    full = model_cost(build_model(graph, Image(), ops), Image.input_shape).flops
    assert reg.flops() == full  # the cost model is FlopCounterMode's, at full width
    kill(model, "c0", [1, 3, 5])
    kill(model, "d", list(range(4)))
    assert reg.alive() == {"c0": 5, "c1": 6, "d": 8}
    small, changes = shrink(graph, reg.alive())
    assert changes == {"c0": (8, 5), "c1": (6, 6), "d": (12, 8)}
    shrunk = model_cost(build_model(small, Image(), ops), Image.input_shape).flops
    assert shrunk == reg.flops() < full
    # c0: 2·64·9·1·5; c1: 2·64·9·5·6; d: 2·(6·16)·8; head: 2·8·10
    assert shrunk == 2 * 64 * 9 * 5 + 2 * 64 * 9 * 5 * 6 + 2 * 96 * 8 + 2 * 8 * 10


def test_carried_weights_compute_what_the_gated_network_computed(ops):
    """With gates that only scale (mean 0, var 1, beta 0), the shrunk network that carries the
    surviving weights gives exactly the gated network's outputs: dead channels are the removed
    ones, rows and columns line up through concat, pooling and flattening."""
    graph = ArchGraph(
        [
            conv("c0", 8),
            conv("c1", 6, "c0"),
            conv("c2", 4, "c0"),
            Node("p", "maxpool2d", {"pool_size": 2}, inputs=("c1", "c2"), merge="concat"),
            Node("d", "dense", {"units": 12}, inputs=("p",)),
        ],
        output="d",
    )
    model, reg = gated(graph, ops)
    scaling_gates(model, ("c0", "c1", "c2", "d"))
    kill(model, "c0", [1, 3, 5])
    kill(model, "c1", [0])
    kill(model, "c2", [0, 1, 3])
    with torch.no_grad():  # none alive: the strongest channel is kept, its scale folded in
        model.node_modules["c2_gate"].weight[2] = 0.05
    kill(model, "d", [2, 7, 11])
    small, changes = shrink(graph, reg.alive())
    assert changes == {"c0": (8, 5), "c1": (6, 5), "c2": (4, 1), "d": (12, 9)}
    torch.manual_seed(1)
    shrunk = build_model(small, Image(), ops)
    assert carry_weights(reg, shrunk) == 5  # four layers and the head
    x = torch.randn(16, *Image.input_shape)
    model.eval()
    shrunk.eval()
    with torch.no_grad():
        torch.testing.assert_close(shrunk(x), model(x), rtol=1e-4, atol=1e-5)
        fresh = build_model(small, Image(), ops).eval()
        assert not torch.allclose(fresh(x), model(x), atol=1e-3)


def test_add_merge_makes_one_group(ops):
    graph = ArchGraph(
        [
            conv("c0", 8),
            conv("c1", 8, "c0"),
            Node("m", "identity", {}, inputs=("c0", "c1"), merge="add"),
            Node("d", "dense", {"units": 4}, inputs=("m",)),
        ],
        output="d",
    )
    model, reg = gated(graph, ops)
    kill(model, "c0", [0, 1])
    kill(model, "c1", [1, 2])
    # Channel 1 is dead in both members; 0 and 2 stay alive through the other member.
    assert reg.alive()["c0"] == reg.alive()["c1"] == 7
    small, _ = shrink(graph, reg.alive())
    assert small["c0"].params["filters"] == small["c1"].params["filters"] == 7
    assert model_cost(build_model(small, Image(), ops), Image.input_shape).flops == reg.flops()


def test_concat_keeps_members_apart(ops):
    graph = ArchGraph(
        [
            conv("c0", 8),
            conv("c1", 6),
            Node("m", "identity", {}, inputs=("c0", "c1"), merge="concat"),
            Node("d", "dense", {"units": 4}, inputs=("m",)),
        ],
        output="d",
    )
    model, reg = gated(graph, ops)
    kill(model, "c0", [0, 1])
    kill(model, "c1", [0, 1, 2])
    assert reg.alive() == {"c0": 6, "c1": 3, "d": 4}
    small, _ = shrink(graph, reg.alive())
    assert model_cost(build_model(small, Image(), ops), Image.input_shape).flops == reg.flops()


def test_regularizer_pushes_gammas_down_in_proportion_to_cost(ops):
    graph = ArchGraph([conv("c0", 8), conv("c1", 8, "c0")], output="c1")
    model, reg = gated(graph, ops)
    loss = reg()
    loss.backward()
    grads = {n: model.node_modules[f"{n}_gate"].weight.grad for n in ("c0", "c1")}
    assert all(bool((g > 0).all()) for g in grads.values())
    assert reg() > 0


def test_layer_with_no_alive_channel_keeps_one(ops):
    graph = ArchGraph([conv("c0", 4), conv("c1", 4, "c0")], output="c1")
    model, reg = gated(graph, ops)
    kill(model, "c0", [0, 1, 2, 3])
    small, changes = shrink(graph, reg.alive())
    assert changes["c0"] == (4, 1)
    build_model(small, Image(), ops)(torch.zeros(2, 1, 8, 8))


def test_expand_fits_the_flop_budget(ops):
    graph = ArchGraph([conv("c0", 4), Node("d", "dense", {"units": 8}, inputs=("c0",))], output="d")
    base = model_cost(build_model(graph, Image(), ops), Image.input_shape).flops
    bigger = expand(graph, Image(), flop_budget=3 * base)
    flops = model_cost(build_model(bigger, Image(), ops), Image.input_shape).flops
    assert base < flops <= 3 * base
    assert bigger["c0"].params["filters"] > 4
    assert scale_widths(graph, 1.0) == graph


def test_regularized_scoring_in_a_codeepneat_run(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(
        tmp_path,
        "tuner=codeepneat",
        "tuner.generations=1",
        "tuner.blueprint_population=2",
        "tuner.genomes_per_blueprint=1",
        "tuner.module_population=4",
        "evaluation=regularized",
        "evaluation.gate_lr=0.2",
        "train.epochs=2",
        "launcher.workers=0",
        "tracking=none",
        f"storage.url={url}",
    )
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="codeepneat-digits-image_small-seed0", storage=url)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    for t in trials:
        assert t.user_attrs["regularized_score"] == t.value
        # The genome stored is the unmodified one; its FLOPs are the original network's.
        assert trial_extra(t.user_attrs)["flops_after"] <= t.user_attrs["flops"]
        assert ArchGraph.from_json(t.system_attrs["nasfw:graph"]).hash == t.user_attrs["graph_hash"]
        # Scoring carries the surviving weights by default: every layer and the head.
        graph = ArchGraph.from_json(t.system_attrs["nasfw:graph"])
        layers = sum(1 for n in graph if n.op in ("conv2d", "dense")) + 1
        assert trial_extra(t.user_attrs)["carried_layers"] == layers


@pytest.mark.parametrize("carry", [True, False])
def test_regularized_score_starts_the_small_network_as_told(carry):
    from nasfw import Candidate, ProblemConfig, TrainConfig
    from nasfw.evaluate import load_problem
    from nasfw.plugins.postprocessing.morphnet import RegularizedScoringConfig
    from nasfw.plugins.postprocessing.morphnet.scoring import regularized_score

    problem = load_problem(ProblemConfig(name="digits"))
    graph = ArchGraph(
        [conv("c0", 16), Node("d", "dense", {"units": 32}, inputs=("c0",))], output="d"
    )
    settings = {**vars(RegularizedScoringConfig()), "carry_weights": carry}
    result = regularized_score(Candidate(graph), problem, TrainConfig(epochs=2), 0, settings)
    assert result.ok and 0 < result.metric <= 1
    assert result.extra["carried_layers"] == (3 if carry else 0)
    # the learning curve: the gated network's epoch (shrink_epochs=1), then the small one's
    assert list(result.curve) == [1, 2] and result.curve[2] == result.metric


# Long (a search, then MorphNet on its population, ~17 s): pytest -m slow runs it.
@pytest.mark.slow
def test_postproc_morphnet_reports_smaller_networks(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = [a for a in TINY if not a.startswith("tracking=")]
    out = nasfw(
        tmp_path,
        *tiny,
        "problem=digits",
        "search_space=image_small",
        "postproc=morphnet",
        "postproc.top_k=1",
        "postproc.gate_lr=0.3",
        "postproc.strength=2",
        f"storage.url=sqlite:///{tmp_path}/s.db",
        f"tracking.tracking_uri={uri}",
    )
    assert out.returncode == 0, out.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nasfw").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    path = client.download_artifacts(run.info.run_id, "postproc.json", str(tmp_path / "dl"))
    table = json.loads(Path(path).read_text())
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert len(rows) == 1
    row = rows[0]
    assert row["flops_after"] <= row["flops_before"] and row["params_after"] <= row["params_before"]
    assert 0 <= row["val_after"] <= 1
    ArchGraph.from_json(row["shrunk_graph"])
    assert "postproc/flops_after" in run.data.metrics
    # The run's overview describes the logged best network, and says so.
    assert run.data.metrics["postproc/trial"] == int(run.data.tags["nasfw.best_trial"])
    assert (
        f"postproc=morphnet on trial {row['trial']} (the best)"
        in (run.data.tags["mlflow.note.content"])
    )


def test_postproc_report_reaches_the_console_and_the_run_directory(tmp_path):
    """With tracking=none too: the rows, the best's first, in postproc.json beside the run's
    other outputs, and as a table in the summary."""
    out = nasfw(
        tmp_path,
        *TINY,
        "tuner.n_trials=3",
        "tuner.batch_size=3",
        "postproc=morphnet",
        "postproc.top_k=2",
        f"storage.url=sqlite:///{tmp_path}/s.db",
    )
    assert out.returncode == 0, out.stderr
    (path,) = tmp_path.glob("outputs/*/*/postproc.json")
    rows = json.loads(path.read_text())
    assert len(rows) == 2
    summary = json.loads((path.parent / "best_model" / "summary.json").read_text())
    assert rows[0]["trial"] == summary["trial"]  # the best's row first
    text = " ".join(out.stdout.split())
    assert "postproc=morphnet (before → after)" in text
    assert f"post-processing report: {path}" in out.stdout.replace("\n", "")
    for row in rows:
        assert f"{row['params_before']:,} → {row['params_after']:,}" in text


@pytest.mark.parametrize("bad", ["evaluation.threshold=abc", "postproc=nope"])
def test_bad_morphnet_config_names_the_key(tmp_path, bad):
    out = nasfw(tmp_path, *TINY, bad)
    assert out.returncode != 0
    assert bad.split("=")[0] in out.stderr or "postproc/nope" in out.stderr


# -- channel groups through nested add / concat / flatten -------------------------------------
def _shaped(shape: tuple[int, ...]) -> type:
    return type("Shaped", (), {"input_shape": shape, "n_outputs": 10})


def _set_gammas(model, gammas: dict[str, list[float]]) -> None:
    with torch.no_grad():
        for node, values in gammas.items():
            model.node_modules[f"{node}_gate"].weight.copy_(torch.tensor(values))


def _input_mask(reg, node: str) -> str:
    """Which input positions of ``node``'s op a shrunk network keeps, as a 0/1 string."""
    (term,) = [t for t in reg.terms if t.node == node]
    kept = reg.kept_channels()
    bits = []
    for s in term.inputs:
        alive = [1] * s.length if s.owner is None else [0] * s.length
        if s.owner is not None:
            for c in kept[s.owner].tolist():
                alive[c] = 1
        bits += [b for b in alive for _ in range(s.repeat)]
    return "".join(map(str, bits))


def test_an_add_of_a_concat_is_grouped_channel_by_channel(ops):
    """The report's network: add(concat(conv1, conv2), conv4) was treated as ungated."""
    graph = ArchGraph(
        [
            conv("conv1", 7),
            conv("conv2", 5),
            Node("cat", "identity", {}, inputs=("conv1", "conv2"), merge="concat"),
            Node("conv3", "conv2d", {"filters": 4, "kernel_size": 1}, inputs=("cat",)),
            conv("conv4", 12, "conv3"),
            Node("sum", "identity", {}, inputs=("cat", "conv4"), merge="add"),
            conv("conv5", 3, "sum"),
        ],
        output="conv5",
    )
    problem = _shaped((3, 17, 19))
    torch.manual_seed(0)
    model = build_model(add_gates(graph), problem(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    _set_gammas(
        model,
        {
            "conv1": [0, 1, 1, 0, 1, 0, 1],
            "conv4": [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0],
            "conv2": [1] * 5,
            "conv3": [1] * 4,
            "conv5": [1] * 3,
        },
    )
    alive = reg.alive()
    assert alive["conv4"] == 10 and alive["conv1"] == 5 and alive["conv2"] == 5
    assert _input_mask(reg, "conv5") == "011110111111"  # OR of [conv1 ++ conv2] and conv4
    (term,) = [t for t in reg.terms if t.node == "conv5"]
    assert sum(float(reg.gamma(s.owner).detach().sum()) for s in term.inputs) == 10.0
    reg().backward()  # conv5's consumers put pressure on conv4's gammas through the group
    assert float(model.node_modules["conv4_gate"].weight.grad[3]) > 0
    small, changes = shrink(graph, alive)
    assert changes["conv4"] == (12, 10) and changes["conv1"] == (7, 5)
    shrunk = build_model(small, problem(), ops)
    merge = shrunk.merges["sum"]
    assert all(isinstance(a, torch.nn.Identity) for a in merge.adapters)  # no projection
    assert model_cost(shrunk, problem.input_shape).flops == reg.flops()


def test_an_add_of_a_concat_with_the_image_keeps_the_image_channels(ops):
    graph = ArchGraph(
        [
            conv("conv2", 5),
            Node("cat", "identity", {}, inputs=("input", "conv2"), merge="concat"),
            Node("sum", "identity", {}, inputs=("cat", "cat"), merge="add"),
            conv("out", 4, "sum"),
        ],
        output="out",
    )
    torch.manual_seed(0)
    model = build_model(add_gates(graph), _shaped((6, 8, 8))(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    _set_gammas(model, {"conv2": [1, 0, 1, 0, 0], "out": [1] * 4})
    assert _input_mask(reg, "out") == "11111110100"
    assert reg.alive()["conv2"] == 2


def test_groups_follow_flattening_into_a_dense_add(ops):
    # A 2-channel 2x2 map flattened (8 features) summed with an 8-unit dense layer: feature i
    # of the dense layer is grouped with channel i // 4 of the conv.
    graph = ArchGraph(
        [
            Node("c", "conv2d", {"filters": 2, "kernel_size": 1}, inputs=("input",)),
            Node("d", "dense", {"units": 8}, inputs=("input",)),
            Node("sum", "identity", {}, inputs=("c", "d"), merge="add"),
            Node("head", "dense", {"units": 3}, inputs=("sum",)),
        ],
        output="head",
    )
    problem = _shaped((1, 2, 2))
    torch.manual_seed(0)
    model = build_model(add_gates(graph), problem(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    _set_gammas(model, {"c": [0, 0], "d": [0, 0, 0, 0, 0, 1, 0, 0], "head": [1] * 3})
    assert reg.alive() == {"c": 1, "d": 4, "head": 3}  # channel 1 lives through d's unit 5
    assert [int(i) for i in reg.kept_channels()["d"]] == [4, 5, 6, 7]
    small, _ = shrink(graph, reg.alive())
    shrunk = build_model(small, problem(), ops)
    assert model_cost(shrunk, problem.input_shape).flops == reg.flops()


# -- sequences: conv1d is gated, recurrent layers are not regularized -------------------------
class Sequence:
    input_shape = (3, 16)
    n_outputs = 2


def conv1d(node_id: str, filters: int, *inputs: str) -> Node:
    return Node(node_id, "conv1d", {"filters": filters, "kernel_size": 5}, inputs or ("input",))


def test_conv1d_is_gated_and_carries_its_weights(ops):
    graph = ArchGraph(
        [
            conv1d("c0", 8),
            conv1d("c1", 6, "c0"),
            Node("p", "maxpool1d", {"pool_size": 2}, ("c1",)),
            Node("g", "global_avgpool", {}, ("p",)),
            Node("d", "dense", {"units": 4}, ("g",)),
        ],
        output="d",
    )
    torch.manual_seed(0)
    model = build_model(add_gates(graph), Sequence(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    assert reg.flops() == model_cost(build_model(graph, Sequence(), ops), (3, 16)).flops
    scaling_gates(model, ("c0", "c1", "d"))
    kill(model, "c0", [0, 2])
    kill(model, "c1", [5])
    small, changes = shrink(graph, reg.alive())
    assert changes == {"c0": (8, 6), "c1": (6, 5), "d": (4, 4)}
    shrunk = build_model(small, Sequence(), ops)
    assert model_cost(shrunk, (3, 16)).flops == reg.flops()
    assert carry_weights(reg, shrunk) == 4
    x = torch.randn(8, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(shrunk.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_recurrent_layers_are_not_regularized_but_take_the_shrunk_input(ops):
    graph = ArchGraph(
        [
            conv1d("c0", 8),
            Node("r", "gru", {"units": 5}, ("c0",)),
            conv1d("c1", 6, "r"),
            Node("g", "global_maxpool", {}, ("c1",)),
        ],
        output="g",
    )
    model = build_model(add_gates(graph), Sequence(), ops)
    reg = FlopRegularizer(model, graph, 0.1)
    assert [t.node for t in reg.terms] == ["c0", "c1", "head"]
    (c1,) = [t for t in reg.terms if t.node == "c1"]
    assert [(s.owner, s.length) for s in c1.inputs] == [(None, 5)]  # the GRU's, always alive
    kill(model, "c0", [1, 2, 3])
    small, _ = shrink(graph, reg.alive())
    shrunk = build_model(small, Sequence(), ops)
    gru = 2 * 3 * 5 * (5 + 5) * 16  # the GRU now reads 5 channels
    assert model_cost(shrunk, (3, 16)).flops == reg.flops() + gru
