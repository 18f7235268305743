"""Trained weights kept with their trials: the one place networks' weights are stored.

A candidate with ``keep_weights`` has its trained ``state_dict`` written to an Optuna
:class:`~optuna.artifacts.FileSystemArtifactStore` in ``storage.artifacts`` (a directory; on a
cluster, one every job can reach) and its trial carries the artifact, so optuna-dashboard started
with ``--artifact-dir <storage.artifacts>`` lists and serves it. A later candidate names those
weights by the earlier candidate's :attr:`nasfw.Candidate.key` (``init_from``) and starts from
them where layers have the same name and shape (Petridish's children; continuing a network).
The exported best model is the evaluated one when its trial kept its weights.

The artifact's id depends only on the study and the candidate's key, so a worker writes it
before the trial exists and a resumed search finds it again.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

ARTIFACT_ATTR_PREFIX = "artifacts:"  # Optuna's own key for an artifact's metadata


class WeightsError(RuntimeError):
    """Weights a candidate starts from are not in the store (or cannot be read)."""


@dataclass
class StoredWeights:
    """A network's ``state_dict`` (CPU tensors) and the epochs it had trained in all."""

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    budget: int = 0


@dataclass(frozen=True)
class WeightStore:
    """The weights of one study's evaluations under ``path`` (picklable: workers get a copy)."""

    path: str
    study_name: str

    def artifact_id(self, key: str) -> str:
        """The artifact of the evaluation with :attr:`nasfw.Candidate.key` ``key``."""
        return hashlib.sha256(f"{self.study_name}:{key}".encode()).hexdigest()[:32]

    def _store(self) -> object:
        from optuna.artifacts import FileSystemArtifactStore

        Path(self.path).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(self.path)

    def save(self, key: str, model: nn.Module, budget: int = 0) -> str:
        """Write ``model``'s ``state_dict`` (on the CPU) as the weights of ``key``, trained for
        ``budget`` epochs in all; return the artifact id."""
        import torch

        buffer = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "budget": int(budget)}, buffer)
        buffer.seek(0)
        artifact_id = self.artifact_id(key)
        self._store().write(artifact_id, buffer)  # type: ignore[attr-defined]
        return artifact_id

    def load(self, key: str) -> StoredWeights:
        """The weights saved for ``key``.

        Raises:
            WeightsError: naming the evaluation's key, the artifact and ``storage.artifacts``,
                when there are none (never saved, or deleted as no longer needed) or the file
                cannot be read as weights nasfw wrote (damaged, truncated, or another file).
                Only tensors are ever loaded (``torch.load(weights_only=True)``): a file that
                needs more is refused, never loaded unsafely.
        """
        import torch

        artifact_id = self.artifact_id(key)
        where = f"evaluation {key} (artifact {artifact_id} in storage.artifacts={self.path})"
        try:
            with self._store().open_reader(artifact_id) as reader:  # type: ignore[attr-defined]
                data = reader.read()
        except Exception as err:
            raise WeightsError(f"no stored weights for {where}: {type(err).__name__}") from err
        try:
            saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if isinstance(saved, dict) and "state_dict" in saved:
                weights = StoredWeights(dict(saved["state_dict"]), int(saved["budget"]))
            else:  # written before budgets were kept: a bare state_dict
                weights = StoredWeights(dict(saved), 0)
            if not all(isinstance(t, torch.Tensor) for t in weights.state.values()):
                raise TypeError("not a state_dict of tensors")
        except Exception as err:
            # Not torch's own message: it advises loading with weights_only=False, which would
            # run whatever a planted file holds.
            raise WeightsError(
                f"the stored weights of {where} cannot be read ({type(err).__name__}: the file "
                f"is damaged or was not written by nasfw, {len(data)} bytes); delete it to "
                "have the evaluations that need it fail, or restore it from a backup"
            ) from None
        return weights

    def nbytes(self, key: str) -> int:
        """Bytes the weights of ``key`` take on disk (0 when there are none)."""
        path = Path(self.path) / self.artifact_id(key)
        return path.stat().st_size if path.is_file() else 0

    def remove(self, key: str) -> bool:
        """Delete the weights of ``key``; return whether there were any. The trial keeps its
        artifact entry (Optuna cannot delete a finished trial's attrs), which then finds no
        file."""
        if not self.nbytes(key):
            return False
        self._store().remove(self.artifact_id(key))  # type: ignore[attr-defined]
        return True


def artifact_attr(artifact_id: str, key: str) -> tuple[str, str]:
    """The trial system attr that makes ``artifact_id`` one of the trial's Optuna artifacts."""
    meta = {
        "artifact_id": artifact_id,
        "filename": f"weights-{key}.pt",
        "mimetype": "application/octet-stream",
        "encoding": None,
    }
    return ARTIFACT_ATTR_PREFIX + artifact_id, json.dumps(meta)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy every tensor of ``state`` into ``model`` where ``model`` has one with the same name
    and shape (the layers both networks share); return how many were copied."""
    import torch

    own = model.state_dict()
    shared = {
        name: tensor
        for name, tensor in state.items()
        if name in own and own[name].shape == tensor.shape
    }
    with torch.no_grad():
        model.load_state_dict(shared, strict=False)
    return len(shared)
