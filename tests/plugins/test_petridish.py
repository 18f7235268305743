"""Petridish: candidates leave the parent untouched, the child starts as the parent, and the
tuner grows a pool round by round (the end-to-end runs are in tests/test_cli.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import load_space

from nasfw import INPUT, ArchGraph, BuildError, Candidate, Node, Result, build_model
from nasfw.plugins.tuners.petridish.grow import (
    alphas_of,
    candidate_ops,
    finalize,
    growable,
    search_graph,
    top_k,
)
from nasfw.plugins.tuners.petridish.tuner import Petridish, PetridishConfig
from nasfw.testing import TunerContract
from nasfw.weights import load_matching

PROBLEM = SimpleNamespace(input_shape=(1, 8, 8), n_outputs=3)
GRAPH = ArchGraph(
    [
        Node("c0", "conv2d", {"filters": 4}),
        Node("p", "maxpool2d", {"pool_size": 2}, ("c0",)),
        Node("c1", "conv2d", {"filters": 6}, ("p",)),
        Node("d", "dense", {"units": 8}, ("c1",)),
    ],
    output="d",
)
OP_NAMES = ["sep_conv2d", "dil_conv2d", "conv2d", "maxpool2d", "avgpool2d", "identity", "dense"]


def shapes_of(graph, ops):
    with torch.device("meta"):
        model = build_model(graph, PROBLEM, ops)
    return {INPUT: model.input_shape, **model.node_shapes}


def found(ops, target="c1"):
    return candidate_ops(GRAPH, shapes_of(GRAPH, ops), target, ops, OP_NAMES, [3, 5])


def search(ops, target="c1"):
    cands = found(ops, target)
    alphas = torch.linspace(-0.1, 0.1, len(cands)).tolist()
    shape = shapes_of(GRAPH, ops)[target]
    return cands, search_graph(GRAPH, target, shape, cands, alphas, l1=1e-3)


def test_candidate_ops_fit_the_target(ops):
    cands = found(ops)
    # every op from every earlier source (input 8x8, c0 8x8, p 4x4), at c1's width, kernels 3/5
    assert {c.source for c in cands} == {INPUT, "c0", "p"}
    assert {c.op for c in cands} == set(OP_NAMES) - {"dense"}  # dense cannot give (6, 4, 4)
    for c in cands:
        if "filters" in c.params:
            assert c.params["filters"] == 6 and c.params["kernel_size"] in (3, 5)
        assert len(c.shape) == 3 and c.shape[1] >= 4
    # c0 (8x8) cannot grow from p (4x4): never upsampled; the first node only from the input
    assert {c.source for c in found(ops, "c0")} == {INPUT}
    # feature vectors grow from feature vectors only (a dense layer on a flattened feature map
    # would outweigh the network); an identity of another width is projected
    assert found(ops, "d") == []
    wide = ArchGraph([*GRAPH, Node("e", "dense", {"units": 5}, ("d",))], output="e")
    to_e = candidate_ops(wide, shapes_of(wide, ops), "e", ops, OP_NAMES, [3])
    assert {(c.source, c.op) for c in to_e} == {("d", "dense"), ("d", "identity")}
    graph = search_graph(wide, "e", (5,), to_e, [0.0] * len(to_e), l1=0.0)
    for j, c in enumerate(to_e):
        projected = f"e_pc{j}p" in {n.id for n in graph}
        assert projected == (c.op == "identity"), c
    with pytest.raises(BuildError, match="not a node"):
        found(ops, "nope")


def test_candidates_leave_outputs_and_gradients_bit_identical(ops):
    torch.manual_seed(0)
    parent = build_model(GRAPH, PROBLEM, ops)
    cands, graph = search(ops)
    torch.manual_seed(1)
    model = build_model(graph, PROBLEM, ops)
    assert load_matching(model, parent.state_dict()) == len(parent.state_dict())
    x, y = torch.randn(16, *PROBLEM.input_shape), torch.randint(0, 3, (16,))
    assert torch.equal(model(x), parent(x))
    penalty = sum(m.penalty() for m in model.modules() if hasattr(m, "penalty"))
    (torch.nn.functional.cross_entropy(model(x), y) + penalty).backward()
    torch.nn.functional.cross_entropy(parent(x), y).backward()
    grads = dict(model.named_parameters())
    for name, p in parent.named_parameters():
        assert torch.equal(grads[name].grad, p.grad), name
    # ... while every candidate and its alpha learn from the parent's loss.
    for j in range(len(cands)):
        alpha = model.node_modules[f"c1_pa{j}"].scale
        assert alpha.grad is not None and alpha.grad != 0
        assert all(p.grad is not None for p in model.node_modules[f"c1_pc{j}"].parameters())


@pytest.mark.parametrize("k", [1, 3])
def test_finalized_child_starts_as_the_parent(ops, k):
    torch.manual_seed(0)
    cands, graph = search(ops)
    trained = build_model(graph, PROBLEM, ops)  # stands for the trained search network
    chosen = top_k(
        [float(trained.node_modules[f"c1_pa{j}"].scale.detach()) for j in range(len(cands))], k
    )
    shape = trained.node_shapes["c1"]
    child_graph = finalize(GRAPH, "c1", shape, cands, chosen)
    assert child_graph["d"].inputs == ("c1_pdsum",)
    assert {f"c1_pc{j}" for j in chosen} <= {n.id for n in child_graph}
    torch.manual_seed(1)
    child = build_model(child_graph, PROBLEM, ops)
    copied = load_matching(child, trained.state_dict())
    grown = {n for n in child.state_dict() if ".c1_pc" in n}
    assert grown and copied >= len(grown)  # the chosen candidates keep their trained weights
    x = torch.randn(8, *PROBLEM.input_shape)
    for mode in (False, True):
        child.train(mode)
        trained.train(mode)
        assert torch.equal(child(x), trained(x))
    with torch.no_grad():
        child.node_modules["c1_pdscale"].scale.fill_(1.0)
    assert not torch.allclose(child(x), trained(x))  # the grown layers are really there
    with pytest.raises(BuildError, match="grown before"):
        finalize(child_graph, "c1", shape, cands, chosen)
    assert "c1" not in growable(child_graph) and "c1_pdsum" in growable(child_graph)
    assert not any("_pc" in n for n in growable(child_graph))


def test_alphas_and_top_k():
    extra = {"t_pa0.scale": 0.01, "t_pa1.scale": -0.5, "t_pa2.scale": 0.2, "device": "cpu"}
    assert alphas_of(extra, "t", 3) == [0.01, -0.5, 0.2]
    assert alphas_of(extra, "t", 4) is None
    assert top_k([0.01, -0.5, 0.2, 0.2], 3) == [1, 2, 3]


def test_search_graph_needs_one_alpha_per_candidate(ops):
    cands = found(ops)
    with pytest.raises(BuildError, match="alphas"):
        search_graph(GRAPH, "c1", (6, 4, 4), cands, [0.1], l1=0.0)


# -- the tuner ----------------------------------------------------------------------------

IMAGE = SimpleNamespace(input_shape=(1, 8, 8), n_outputs=10)


def make(space, seed, **settings):
    config = PetridishConfig(**{"init_models": 3, "rounds": 2, "max_parents": 2, **settings})
    tuner = Petridish(config, space, seed)
    tuner.problem = IMAGE
    return tuner


def evaluate(candidates):
    """Deterministic results with FLOPs and trained alphas, as the evaluator reports them."""
    results = []
    for c in candidates:
        with torch.device("meta"):
            model = build_model(c.graph, IMAGE)
        flops = sum(p.numel() for p in model.parameters())
        extra = {
            f"{n.id}.scale": math.sin(len(n.id) + i)
            for i, n in enumerate(c.graph)
            if n.op == "scale"
        }
        results.append(Result("ok", metric=1 - 1 / (2 + math.log(flops)), flops=flops, extra=extra))
    return results


class TestPetridish(TunerContract):
    @pytest.fixture
    def make_tuner(self, ops):
        return lambda seed: make(load_space("image_small", ops), seed)


def test_rounds_grow_children_from_their_parents_weights(ops):
    tuner = make(load_space("petridish_full", ops), 0)
    generations = []
    while candidates := tuner.ask():
        tuner.tell(candidates, evaluate(candidates))
        generations.append(candidates)
    kinds = [{c.attrs["petridish"] for c in g} for g in generations]
    assert kinds == [{"seed"}, {"candidates"}, {"child"}, {"candidates"}, {"child"}]
    seeds, searches, children = generations[0], generations[1], generations[2]
    assert all(c.keep_weights for g in generations for c in g)
    assert [c.init_from for c in seeds] == [None] * 3
    assert {c.init_from for c in searches} <= {c.key for c in seeds}
    assert [c.init_from for c in children] == [c.key for c in searches]
    assert not any(c.exportable for c in searches) and all(c.exportable for c in children)
    for search, child in zip(searches, children, strict=True):
        target = search.attrs["target"]
        assert child.attrs["target"] == target and f"{target}_pdsum" in {n.id for n in child.graph}
    assert len(tuner.pool) == 3 + 2 + 2
    assert tuner.generation_report()["pool_size"] == 7.0
    log = tuner.state()["log"]
    assert [r["round"] for r in log] == [1, 2] and all(r["searches"] for r in log)
    assert tuner.ask() == []


def test_stops_at_the_flop_cap_and_the_pool_size(ops):
    space = load_space("image_small", ops)
    capped = make(space, 0, max_flops=1.0)  # no model is small enough to grow
    first = capped.ask()
    capped.tell(first, evaluate(first))
    assert capped.ask() == []
    full = make(space, 0, max_pool=3)
    first = full.ask()
    full.tell(first, evaluate(first))
    assert full.ask() == []


def test_failed_candidate_training_grows_no_child(ops):
    tuner = make(load_space("image_small", ops), 0)
    seeds = tuner.ask()
    tuner.tell(seeds, evaluate(seeds))
    searches = tuner.ask()
    tuner.tell(searches, [Result.failed("boom") for _ in searches])
    assert tuner.ask()[0].attrs["petridish"] == "candidates"  # the next round, no children
    assert len(tuner.pool) == 3


def test_adapt_mode_starts_from_init_arch(ops):
    tuner = make(load_space("image_small", ops), 0, mode="adapt", init_arch="lenet_small")
    (seed,) = tuner.ask()
    assert seed.graph.summary().startswith("conv2d")
    with pytest.raises(Exception, match=r"tuner\.mode"):
        make(load_space("image_small", ops), 0, mode="grow")


def test_state_is_json(ops):
    tuner = make(load_space("image_small", ops), 0)
    for _ in range(2):
        c = tuner.ask()
        tuner.tell(c, evaluate(c))
    assert json.loads(json.dumps(tuner.state()))["phase"] == "child"


def test_seed_models_are_small_and_learn(ops):
    space = load_space("image_small", ops)
    seeds = make(space, 0, init_models=4).ask()
    assert len({c.graph.hash for c in seeds}) == 4
    for c in seeds:
        assert len(c.graph) == 2  # each stage at its min_nodes
        assert {n.op for n in c.graph} & {"conv2d"} and {n.op for n in c.graph} & {"dense"}


def test_candidate_ops_outside_the_space_are_not_used(ops):
    tuner = make(load_space("image_small", ops), 0)
    assert set(tuner.op_names) == {"conv2d", "maxpool2d", "identity", "dense"}


def test_a_copy_of_candidate_is_a_different_evaluation():
    c = Candidate(GRAPH)
    assert dataclasses.replace(c, init_from="abc").key != c.key
    assert dataclasses.replace(c, keep_weights=True).key == c.key


def test_generation_artifacts_show_the_hull_and_the_alphas(ops):
    import io

    tuner = make(load_space("image_small", ops), 0)
    assert tuner.generation_artifacts() == {}  # nothing trained yet
    for expected in ({"pool.json", "rounds.json", "hull.png"}, {"alphas.png"}):
        candidates = tuner.ask()
        tuner.tell(candidates, evaluate(candidates))
        artifacts = tuner.generation_artifacts()
        assert expected <= set(artifacts)
    json.dumps({k: v for k, v in artifacts.items() if k.endswith(".json")})
    (search,) = artifacts["rounds.json"][-1]["searches"][:1]
    assert len(search["alphas"]) == len(search["candidates"]) and len(search["chosen"]) == 3
    assert sum(m["on_hull"] for m in artifacts["pool.json"]) >= 1
    for name in ("hull.png", "alphas.png"):
        buffer = io.BytesIO()
        artifacts[name].savefig(buffer, format="png")
        assert buffer.getvalue()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("evaluation", "problem_default", "refused"),
    [("plain", "plain", False), ("regularized", "plain", True), ("auto", "regularized", True)],
)
def test_scorers_that_retrain_are_refused_before_the_study(evaluation, problem_default, refused):
    from omegaconf import OmegaConf

    from nasfw import ConfigError
    from nasfw.plugins.tuners import petridish

    cfg = OmegaConf.create(
        {
            "tuner": {"name": "petridish"},
            "evaluation": {"name": evaluation},
            "problem": {"name": "fashion_mnist", "evaluation": problem_default},
            "pruner": {"name": "none"},
        }
    )
    if refused:
        with pytest.raises(ConfigError, match="evaluation=plain") as raised:
            petridish.nasfw_check_config(cfg=cfg)
        assert (evaluation == "auto") == ("problem=fashion_mnist" in str(raised.value))
    else:
        petridish.nasfw_check_config(cfg=cfg)


def test_a_pruner_is_refused_before_the_study():
    from omegaconf import OmegaConf

    from nasfw import ConfigError
    from nasfw.plugins.tuners import petridish

    cfg = {"tuner": {"name": "petridish"}, "evaluation": {"name": "plain"}, "problem": {}}
    petridish.nasfw_check_config(cfg=OmegaConf.create({**cfg, "pruner": {"name": "none"}}))
    with pytest.raises(ConfigError, match="pruner=median"):
        petridish.nasfw_check_config(cfg=OmegaConf.create({**cfg, "pruner": {"name": "median"}}))


def test_report_measures_the_hull(ops):
    from nasfw.plugins.tuners.petridish.tuner import Member

    tuner = make(load_space("image_small", ops), 0)
    tuner.pool = [
        Member("a", GRAPH, 10.0, 0.5, 0),
        Member("b", GRAPH, 1000.0, 0.1, 1),
        Member("c", GRAPH, 100.0, 0.6, 1),  # above the hull
    ]
    report = tuner.generation_report()
    assert report["pool_size"] == 3 and report["hull_size"] == 2
    assert report["hull_best_error"] == 0.1
    # trapezoid over log10 FLOPs 1 -> 3 of errors 0.5 -> 0.1
    assert report["hull_area"] == pytest.approx(2 * (0.5 + 0.1) / 2)


def test_seeds_fit_max_params_on_large_images(ops):
    space = load_space("petridish_full", ops)
    tuner = make(space, 0, init_models=4)
    tuner.problem = SimpleNamespace(input_shape=(1, 28, 28), n_outputs=10)
    seeds = tuner.ask()
    assert len(seeds) == 4
    for c in seeds:
        with torch.device("meta"):
            model = build_model(c.graph, tuner.problem)
        assert sum(p.numel() for p in model.parameters()) <= space.max_params


def test_a_space_without_any_usable_seed_is_refused_naming_it(tmp_path):
    """No seed network fits: one line naming the space and the limit, not an empty search."""
    from cli import nasfw

    out = nasfw(
        tmp_path,
        "tuner=petridish",
        "problem=digits",
        "search_space=image_small",
        "search_space.max_params=500",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
    )
    assert out.returncode == 2, out.stderr
    message = " ".join(out.stderr.split())
    assert "tuner=petridish: none of" in message
    assert "search_space=image_small" in message and "search_space.max_params=500" in message
