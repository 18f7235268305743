"""Weights kept with their trials (nasfw.weights): stored by the evaluation, listed as the
trial's Optuna artifact, found again by a later candidate's ``init_from``."""

from __future__ import annotations

import dataclasses
import io

import optuna
import pytest
import torch

from nasfw import ArchGraph, Candidate, Node, build_model
from nasfw.evaluate import candidate_seed, load_problem
from nasfw.ledger import Ledger
from nasfw.train import evaluate_model
from nasfw.weights import WeightsError, load_matching

GRAPH = ArchGraph(
    [Node("h", "dense", {"units": 16}), Node("o", "dense", {"units": 8}, ("h",))], output="o"
)
WIDER = ArchGraph(
    [
        Node("h", "dense", {"units": 16}),
        Node("o", "dense", {"units": 8}, ("h",)),
        Node("x", "dense", {"units": 4}, ("o",)),
    ],
    output="x",
)


def test_kept_weights_are_the_trials_artifact_and_reproduce_its_score(tmp_path, evaluator):
    candidate = Candidate(GRAPH, keep_weights=True)
    result = evaluator(candidate)
    assert result.ok and result.extra["weights"] == evaluator.weights.artifact_id(candidate.key)
    ledger = Ledger(f"sqlite:///{tmp_path / 's.db'}", "study")
    record = ledger.record(candidate, result, 0, 0)
    trial = ledger.study.trials[record.number]
    (meta,) = optuna.artifacts.get_all_artifact_meta(trial, storage=ledger.storage)
    assert meta.artifact_id == result.extra["weights"] and meta.filename.endswith(".pt")
    store = optuna.artifacts.FileSystemArtifactStore(evaluator.weights.path)
    download = tmp_path / "w.pt"
    optuna.artifacts.download_artifact(
        artifact_store=store, file_path=str(download), artifact_id=meta.artifact_id
    )
    saved = torch.load(io.BytesIO(download.read_bytes()), weights_only=True)
    state = saved["state_dict"]  # beside the epochs it trained: saved["budget"]
    assert saved["budget"] == result.epochs
    problem = load_problem(evaluator.problem)
    model = build_model(GRAPH, problem)
    assert load_matching(model, state) == len(model.state_dict())
    assert evaluate_model(model, problem, problem.val) == result.metric
    assert ledger.records()[0].key == candidate.key


def test_init_from_starts_where_the_earlier_network_stopped(evaluator):
    first = Candidate(GRAPH, keep_weights=True)
    evaluator(first)
    grown = Candidate(WIDER, init_from=first.key)
    result = evaluator(grown)
    # h and o, and the head's bias (its weight reads 4 features now, not 8), not x
    assert result.ok and result.extra["inherited_tensors"] == 5
    assert "weights" not in result.extra
    # starting from other weights is another evaluation: another key and another seed
    fresh = Candidate(WIDER)
    assert fresh.key != grown.key
    assert candidate_seed(0, fresh) != candidate_seed(0, grown)
    assert dataclasses.replace(fresh, keep_weights=True).key == fresh.key


def test_missing_weights_fail_the_trial_naming_key_and_directory(evaluator):
    result = evaluator(Candidate(GRAPH, init_from="0123456789abcdef"))
    assert not result.ok
    assert "0123456789abcdef" in result.error and evaluator.weights.path in result.error
    with pytest.raises(WeightsError, match=r"storage\.artifacts"):
        evaluator.weights.load("0123456789abcdef")


def _planted(tensors: object) -> bytes:
    """A pickle that only loads with weights_only=False (an object, not tensors)."""
    import pickle

    planted = {"state_dict": tensors, "budget": 1, "x": dataclasses.make_dataclass}
    return pickle.dumps(planted, protocol=2)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(
            lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], id="flipped"
        ),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"not weights at all\n", id="text"),
        pytest.param(lambda data: _planted({}), id="pickle needing weights_only=False"),
    ],
)
def test_damaged_weights_fail_the_trial_naming_artifact_key_and_directory(evaluator, damage):
    """A damaged or foreign weights file: the evaluation that starts from it is a failed trial
    whose reason names the evaluation's key, the artifact and storage.artifacts, and never
    suggests loading unsafely (torch's own advice is weights_only=False)."""
    from pathlib import Path

    parent = Candidate(GRAPH, keep_weights=True)
    assert evaluator(parent).ok
    store = evaluator.weights
    path = Path(store.path) / store.artifact_id(parent.key)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(WeightsError) as raised:
        store.load(parent.key)
    message = str(raised.value)
    assert parent.key in message and store.artifact_id(parent.key) in message
    assert f"storage.artifacts={store.path}" in message and "weights_only" not in message
    child = evaluator(Candidate(WIDER, init_from=parent.key))
    assert not child.ok and "cannot be read" in child.error and parent.key in child.error
    assert "weights_only" not in child.error


def test_a_scorer_that_retrains_refuses_weights(evaluator):
    scoring = dataclasses.replace(evaluator, scoring={"name": "regularized"})
    result = scoring(Candidate(GRAPH, keep_weights=True))
    assert not result.ok and "evaluation=regularized" in result.error
    unstored = dataclasses.replace(evaluator, weights=None)
    assert not unstored(Candidate(GRAPH, init_from="x")).ok
