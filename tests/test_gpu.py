"""Training on a CUDA GPU, end to end (marked ``gpu``; skipped where torch sees no GPU).

Run them on a GPU machine with ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from cli import nasfw, trials

from nasfw.ledger import trial_extra

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU"),
]

DIGITS = [
    "tuner=random",
    "tuner.n_trials=4",
    "tuner.batch_size=4",
    "train.epochs=2",
    "tracking=none",
]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_search_trains_on_the_gpu(tmp_path, precision):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(tmp_path, *DIGITS, "train.device=cuda", f"train.precision={precision}",
                "launcher.workers=0", f"storage.url={url}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    done = trials(url, "random-digits-image_small-seed0")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    for t in done:
        extra = trial_extra(t.user_attrs)
        assert extra["device"] == "cuda:0" and extra["precision"] == precision
        assert extra["device_name"] == torch.cuda.get_device_name(0)
    (summary,) = tmp_path.glob("outputs/*/*/best_model/summary.json")
    assert json.loads(summary.read_text())["trained_on"]["device"] == "cuda:0"
    state = torch.load(summary.with_name("state_dict.pt"), map_location="cpu")
    assert all(v.device.type == "cpu" for v in state.values())  # loads on any machine


def test_workers_share_the_gpus(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(tmp_path, *DIGITS, "train.device=auto", f"storage.url={url}")
    assert out.returncode == 0, out.stderr
    devices = {
        trial_extra(t.user_attrs)["device"] for t in trials(url, "random-digits-image_small-seed0")
    }
    assert devices == {"cuda:0"}  # each worker sees its own GPU as cuda:0


def test_regularized_scoring_on_the_gpu(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    out = nasfw(tmp_path, *DIGITS, "evaluation=regularized", "train.device=cuda",
                "launcher.workers=0", f"storage.url={url}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    done = trials(url, "random-digits-image_small-seed0")
    assert [t.state for t in done].count(optuna.trial.TrialState.COMPLETE) >= 3
    facts = [trial_extra(t.user_attrs) for t in done]
    assert all(extra["device"] == "cuda:0" for extra in facts if extra)
