from __future__ import annotations

import math

import numpy as np
import pytest

from nasfw import (
    ArchGraph,
    Candidate,
    Evaluator,
    Node,
    Problem,
    ProblemConfig,
    TrainConfig,
    build_model,
    split_arrays,
    train_model,
)


@pytest.fixture(scope="module")
def blobs() -> Problem:
    """Three separable Gaussian blobs: any reasonable network learns them."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 0, 3, 3]], dtype=np.float32)
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(0, 0.5, (300, 4)).astype(np.float32)
    train, val, test = split_arrays(x, y, ProblemConfig(name="blobs"), stratify=True)
    return Problem("blobs", "classification", "tabular", (4,), 3, train, val, test)


MLP = ArchGraph([Node("h", "dense", {"units": 16, "activation": "relu"})], output="h")


def test_learns_and_is_deterministic(blobs):
    config = TrainConfig(epochs=10, batch_size=32, lr=0.01)
    outcomes = []
    for _ in range(2):
        import torch

        torch.manual_seed(0)
        outcomes.append(train_model(build_model(MLP, blobs), blobs, config, seed=0))
    assert outcomes[0].metric > 0.9
    assert outcomes[0].metric == outcomes[1].metric and outcomes[0].loss == outcomes[1].loss
    assert outcomes[0].epochs == 10 and outcomes[0].seconds > 0


def test_overrides_and_unknown_override(blobs):
    outcome = train_model(build_model(MLP, blobs), blobs, TrainConfig(), 0, overrides={"epochs": 2})
    assert outcome.epochs == 2 and len(outcome.history) == 2
    with pytest.raises(ValueError, match="momentum"):
        train_model(build_model(MLP, blobs), blobs, TrainConfig(), 0, overrides={"momentum": 1})


def test_extra_loss_is_added(blobs):
    import torch

    penalty = lambda model: torch.tensor(1e6)  # noqa: E731
    plain = train_model(build_model(MLP, blobs), blobs, TrainConfig(epochs=1), 0)
    penalised = train_model(build_model(MLP, blobs), blobs, TrainConfig(epochs=1), 0, None, penalty)
    assert penalised.loss > plain.loss + 1e5


def test_before_step_sees_every_step_of_the_run(blobs):
    """The hook (MorphNet anneals its gates' lr with it) gets step 0 .. total-1 and the total,
    and what it sets on the optimizer is what the step uses."""
    seen: list[tuple[int, int, float]] = []

    def anneal(optimizer, step: int, total: int) -> None:
        optimizer.param_groups[0]["lr"] = 0.01 * (1 - step / total)
        seen.append((step, total, optimizer.param_groups[0]["lr"]))

    config = TrainConfig(epochs=3, batch_size=32)
    train_model(build_model(MLP, blobs), blobs, config, seed=0, before_step=anneal)
    batches = math.ceil(len(blobs.train.y) / 32)
    assert [s for s, _, _ in seen] == list(range(3 * batches))
    assert {t for _, t, _ in seen} == {3 * batches}
    assert seen[0][2] == 0.01 and 0 < seen[-1][2] < 0.01 / batches


def test_diverging_candidate_is_a_failed_result(blobs, monkeypatch):
    import nasfw.evaluate as evaluate

    monkeypatch.setattr(evaluate, "load_problem", lambda config: blobs)
    evaluator = Evaluator(ProblemConfig(name="blobs"), TrainConfig(epochs=3), 0, 10**6)
    nan_net = Candidate(MLP, train={"optimizer": "sgd", "lr": 1e30})
    result = evaluator(nan_net)
    assert not result.ok and result.error.startswith("diverged")
    assert math.isinf(-result.fitness)
    fine = evaluator(Candidate(MLP, train={"lr": 0.01}))
    assert fine.ok and fine.metric > 0.5 and fine.n_params == 4 * 16 + 16 + 16 * 3 + 3


def test_too_large_and_unbuildable_candidates_fail(blobs, monkeypatch):
    import nasfw.evaluate as evaluate

    monkeypatch.setattr(evaluate, "load_problem", lambda config: blobs)
    small = Evaluator(ProblemConfig(name="blobs"), TrainConfig(epochs=1), 0, max_params=10)
    result = small(Candidate(MLP))
    assert not result.ok and "too large" in result.error and "max_params=10" in result.error
    conv_on_vector = ArchGraph([Node("c", "conv2d", {"filters": 4})], output="c")
    result = small(Candidate(conv_on_vector))
    assert not result.ok and "'c'" in result.error


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_is_recorded(blobs, precision):
    import torch

    config = TrainConfig(epochs=10, batch_size=32, lr=0.01, precision=precision, device="cpu")
    torch.manual_seed(0)
    outcome = train_model(build_model(MLP, blobs), blobs, config, seed=0)
    assert outcome.metric > 0.9 and math.isfinite(outcome.loss)
    assert (outcome.device, outcome.precision) == ("cpu", precision) and outcome.device_name


def test_the_trial_records_where_it_trained(blobs, monkeypatch):
    from nasfw import evaluate

    monkeypatch.setattr(evaluate, "load_problem", lambda config: blobs)
    evaluator = Evaluator(
        problem=ProblemConfig(name="blobs"),
        train=TrainConfig(epochs=2, precision="bf16"),
        seed=0,
        max_params=10_000,
    )
    result = evaluator(Candidate(MLP))
    assert result.ok
    expected = "cuda:0" if torch_cuda() else "cpu"
    assert result.extra["device"] == expected and result.extra["precision"] == "bf16"
    assert result.extra["device_name"]


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_deterministic_algorithms_on_request(blobs):
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    try:
        config = TrainConfig(epochs=2, deterministic=True, device="cpu")
        train_model(build_model(MLP, blobs), blobs, config, seed=0)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("every", [1, 2])
def test_learning_curve_does_not_change_the_training(blobs, every):
    import torch

    outcomes = {}
    for curve_every in (0, every):
        torch.manual_seed(0)
        config = TrainConfig(epochs=5, batch_size=32, lr=0.01, curve_every=curve_every)
        outcomes[curve_every] = train_model(build_model(MLP, blobs), blobs, config, seed=0)
    bare, scored = outcomes[0], outcomes[every]
    assert bare.curve == {5: bare.metric}  # only the result
    assert list(scored.curve) == [e for e in range(1, 6) if e % every == 0 or e == 5]
    assert scored.curve[5] == scored.metric == bare.metric and scored.loss == bare.loss
    assert min(scored.curve.values()) >= 0 and scored.score_seconds > 0
