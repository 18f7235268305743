"""``tracking=mlflow``: the schema, the plugin's error and MLflow's limits."""

from __future__ import annotations

from dataclasses import dataclass

from nasfw import PluginError, TrackingConfig

# MLflow's limits (mlflow.utils.validation): param and tag value lengths, entries per log_batch.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
# Consecutive tracking failures after which a search stops logging (see _runs.guard).
MAX_FAILURES = 3


@dataclass
class MlflowTrackingConfig(TrackingConfig):
    """``tracking=mlflow``: where runs go and what is logged."""

    name: str = "mlflow"
    # Any MLflow tracking URI; a relative sqlite path is relative to the working directory.
    # Artifacts go to the experiment's artifact location (./mlruns for a new sqlite experiment).
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "nasfw"
    # Name of the parent run (None: the study name).
    run_name: str | None = None
    # Log the best model (retrained at the end of the search) as an MLflow PyTorch model.
    log_models: bool = True


class TrackingError(PluginError):
    """The MLflow tracking store or experiment cannot be used; the message names the key.

    A :class:`nasfw.PluginError`, so the CLI reports it as a configuration error (exit code 2).
    """
