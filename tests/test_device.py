"""train.device resolved on this machine (nasfw/device.py); GPUs faked where CI has none."""

from __future__ import annotations

import pytest
import torch
from conftest import fake_gpus

from nasfw import ConfigError
from nasfw.device import cuda_devices, device_name, resolve_device


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if (
        expected == "cpu"
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert device_name(torch.device("cpu"))


def test_cuda_without_a_gpu_names_the_key(monkeypatch):
    fake_gpus(monkeypatch, 0)
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match=rf"train\.device='{spec}': no CUDA GPU is visible"):
            resolve_device(spec)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_indices_are_checked_against_the_visible_gpus(monkeypatch):
    fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"only 2 CUDA GPU\(s\) are visible"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:x", ""])
def test_names_that_are_no_device(spec):
    with pytest.raises(ConfigError, match=r"train\.device="):
        resolve_device(spec)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert cuda_devices() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cuda_devices() == ["0", "1"]
    fake_gpus(monkeypatch, 0)
    assert cuda_devices() == []
