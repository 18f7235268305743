"""Where networks train: ``train.device`` resolved to a torch device, and what to record of it.

``auto`` is CUDA when a GPU is visible, else Apple's MPS where torch has it, else the CPU;
``cpu``, ``cuda``, ``cuda:N`` and ``mps`` ask for one. A device this machine does not have is a
:class:`nasfw.ConfigError` naming ``train.device``, raised before any training.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from nasfw.config import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str) -> torch.device:
    """The torch device ``train.device=spec`` means on this machine.

    Raises:
        ConfigError: ``spec`` is not a device name, or names a device this machine lacks.
    """
    import torch

    key = f"train.device={spec!r}"
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key} is not a device (auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"{key}: no CUDA GPU is visible here (torch {torch.__version__}, {build}); "
                "use train.device=auto or cpu"
            )
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ConfigError(f"{key}: only {count} CUDA GPU(s) are visible (cuda:0..{count - 1})")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"{key}: this torch has no usable MPS device")
        return device
    raise ConfigError(f"{key}: nasfw trains on cpu, cuda or mps, not {device.type}")


def device_name(device: torch.device) -> str:
    """What the device is, e.g. ``NVIDIA H200`` or the CPU's model."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_model() or platform.processor() or platform.machine() or "cpu"


def cuda_devices() -> list[str]:
    """This process's visible CUDA GPUs, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(count)]
    return [v.strip() for v in visible.split(",") if v.strip()][:count]


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
