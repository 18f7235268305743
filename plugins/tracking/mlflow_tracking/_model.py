"""The best model as an MLflow PyTorch model that takes raw inputs."""

from __future__ import annotations

import copy
import logging
import re
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._runs import first_line

if TYPE_CHECKING:
    from nasfw import SearchContext

_log = logging.getLogger("nasfw.plugins.tracking.mlflow_tracking")


class RawInputModel(nn.Module):
    """``model`` behind its problem's standardisation: it takes inputs as the data files hold
    them (e.g. 0 to 255 pixels, shape ``(N, 1, 28, 28)``), computes ``(raw - shift) / scale`` with
    the training set's statistics, and returns ``model``'s outputs (logits, or regression
    values), shape ``(N, n_outputs)``."""

    def __init__(self, model: nn.Module, shift: Any, scale: Any) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model((raw - self.shift) / self.scale)


def model_name(study: str) -> str:
    """The logged model's name: the study's, in the characters MLflow allows."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", study).strip("-") or "best_model"


def log_model(context: SearchContext, state: dict[str, Any], step: int) -> str:
    """Log ``context.best_model`` (with its preprocessing) on the parent run; its model URI.

    MLflow 3 saves PyTorch models as ``torch.export`` programs ("pt2", no pickle) by default,
    which needs an input example: two raw validation inputs, from which MLflow also infers the
    signature. A model that cannot be exported is pickled instead (loading it then needs nasfw
    importable).
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np

    assert context.best_model is not None
    model: nn.Module = copy.deepcopy(context.best_model).cpu().eval()
    split = context.problem.val if len(context.problem.val) >= 2 else context.problem.train
    # Token ids stay int64 (the embedding looks them up); values are float32.
    dtype = np.int64 if context.problem.vocab_size is not None else np.float32
    example = np.ascontiguousarray(split.x[:2], dtype=dtype)
    preprocessing = context.problem.preprocessing
    if preprocessing is not None:
        model = RawInputModel(model, preprocessing.shift, preprocessing.scale).eval()
        example = preprocessing.invert(example)
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    name = model_name(context.study.study_name)
    mlflow.set_tracking_uri(state["tracking_uri"])
    # log_model attaches the model to the active run: make the parent run active for this call
    # only. Leaving the `with` pops it off the stack (even on errors); nested=True keeps a run
    # the caller may have open underneath ours.
    with mlflow.start_run(run_id=state["run_id"], nested=mlflow.active_run() is not None):

        def log(serialization: str) -> Any:
            return mlflow.pytorch.log_model(
                model,
                name=name,
                input_example=example,
                serialization_format=serialization,
                pip_requirements=requirements,
                step=step,
            )

        try:
            info = log("pt2")
        except Exception as err:
            _log.warning(
                "the best model cannot be exported with torch.export (%s: %s); logging it pickled",
                type(err).__name__,
                first_line(err),
            )
            info = log("pickle")
    return info.model_uri
