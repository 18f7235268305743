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
# The parent's summaries are sent in batches at most this often (seconds; and at the ends of
# generations that have a run, and of the search): one write per evaluation cost more than a
# table lookup (issue 26's profile, benchmarks/overhead.py --lookups).
FLUSH_SECONDS = 2.0
# pareto_front.png is redrawn after a generation at most this often (seconds), and at the end.
FIGURE_SECONDS = 30.0


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
    # One nested run per generation (its metrics, population, best network, trial series).
    # None: yes, unless the problem is evaluated by lookup (a table benchmark: thousands of
    # generations of a few lookups each, which would cost MLflow more than the search).
    generation_runs: bool | None = None


class TrackingError(PluginError):
    """The MLflow tracking store or experiment cannot be used; the message names the key.

    A :class:`nasfw.PluginError`, so the CLI reports it as a configuration error (exit code 2).
    """
