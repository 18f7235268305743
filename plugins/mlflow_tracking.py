"""MLflow tracking: one parent run per search, one nested run per generation.

Selected with ``tracking=mlflow`` (the default); ``tracking=none`` turns it off. What is logged:

- parent run (named ``tracking.run_name``, else the study name): the resolved config as params,
  ``nasfw.*`` tags, the git commit; per trial (step = trial number) ``trial_metric``,
  ``trial_loss``, ``trial_flops``, ``trial_params``, ``trial_train_seconds``, ``trial_failed``
  and ``trial_regularized_score``; per generation (step = generation) ``best_so_far``; at the end
  ``best_metric``/``best_test_metric`` (step = the best trial's number), ``best_so_far.png``,
  ``best_model/graph.json``, the exported files and the best model as an MLflow PyTorch model
  (``best_model``, also recorded in the tag ``nasfw.model_uri``).
- nested run ``generation-<g>``: ``best_metric``, ``mean_metric``, ``median_metric``, ``n_ok``,
  ``n_failed``, ``best_so_far`` and the population table ``population.json``.

Tags ``nasfw.best_trial``, ``nasfw.model_uri``, ``nasfw.error`` (a search that stopped on an
exception: the run ends FAILED, or KILLED for Ctrl-C) and ``nasfw.resumed_at_generation`` say
the rest.

The parent run id is stored in the Optuna study (user attr ``mlflow_run_id``): a resumed search
continues its run. Logging goes through :class:`mlflow.MlflowClient` with explicit run ids, so
several searches in one process (a Hydra multirun) do not share an active run; only
``log_model`` makes the parent run active, for that one call. A tracking store that cannot be
opened fails the search at its start, naming ``tracking.tracking_uri``; any later tracking
error is logged as a warning and the search goes on.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw import INPUT, ArchGraph, PluginError, TrackingConfig, hookimpl

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from nasfw import Candidate, Result, SearchContext, TrialRecord

__all__ = ["MlflowTrackingConfig", "TrackingError"]

_log = logging.getLogger(__name__)

STATE_KEY = "mlflow"
RUN_ID_ATTR = "mlflow_run_id"
# MLflow's limits (mlflow.utils.validation): param value length, params per log_batch call.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
# What nasfw.device_facts records of where a network trained (Result.extra keys).
DEVICE_FACTS = ("device", "device_name", "precision")
# Consecutive tracking failures after which a search stops logging (see _guard).
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


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("tracking", "mlflow", MlflowTrackingConfig)


# -- lifecycle hooks ------------------------------------------------------------------------


@hookimpl
def nasfw_search_start(context: SearchContext) -> None:
    if not _enabled(context):
        return
    uri = str(_setting(context, "tracking_uri"))
    client = _connect(uri)
    experiment_id = _experiment(client, str(_setting(context, "experiment_name")), uri)

    run_id, resumed = None, False
    previous = context.study.user_attrs.get(RUN_ID_ATTR)
    if previous:
        run_id = _reopen(client, str(previous), experiment_id)
        resumed = run_id is not None
    if run_id is None:
        run_name = _setting(context, "run_name") or context.study.study_name
        try:
            run = client.create_run(experiment_id, run_name=str(run_name), tags=_run_tags(context))
        except Exception as err:
            raise TrackingError(
                f"tracking.tracking_uri={_redact(uri)!r}: cannot create an MLflow run in "
                f"experiment {experiment_id} ({type(err).__name__}: {err})"
            ) from err
        run_id = run.info.run_id
        context.study.set_user_attr(RUN_ID_ATTR, run_id)
    state: dict[str, Any] = {
        "client": client,
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "run_id": run_id,
        "resumed": resumed,
        "generation_runs": {},
    }
    context.plugin_state[STATE_KEY] = state
    with _guard(state, "logging the config as params"):
        _log_params(client, run_id, _flatten(_resolved(context.cfg)), resumed)
    if resumed:
        with _guard(state, "tagging the resumed run"):
            client.set_tag(run_id, "nasfw.resumed_at_generation", str(context.start_generation))
    if context.history:  # resuming a study: also one that ran untracked, or was killed
        with _guard(state, "logging what the study holds and MLflow does not"):
            _catch_up(context, state)


@hookimpl
def nasfw_trial_complete(
    context: SearchContext, candidate: Candidate, result: Result, trial: TrialRecord
) -> None:
    state = _state(context)
    if state is None:
        return
    with _guard(state, f"logging trial {trial.number}"):
        metrics = _metrics(_trial_values(result), step=trial.number)
        state["client"].log_batch(state["run_id"], metrics=metrics)
    if not state.get("device_logged") and "device" in result.extra:
        # Where networks actually trained (train.device may say auto): the first trial's.
        with _guard(state, "logging the training device"):
            params = {f"trained_on.{k}": str(result.extra.get(k)) for k in DEVICE_FACTS}
            _log_params(state["client"], state["run_id"], params.items(), resumed=True)
        state["device_logged"] = True


@hookimpl
def nasfw_generation_end(
    context: SearchContext, generation: int, trials: list[TrialRecord]
) -> None:
    state = _state(context)
    if state is None:
        return
    _log_generation(context, state, generation, trials)


def _log_generation(
    context: SearchContext,
    state: dict[str, Any],
    generation: int,
    trials: list[TrialRecord],
    catching_up: bool = False,
) -> None:
    """The nested run of ``generation`` and the parent's ``best_so_far`` at that step.

    ``catching_up``: logged after the fact for a generation the study finished but MLflow
    missed (the search was killed in between); the tuner's report of that time is gone.
    """
    client: MlflowClient = state["client"]
    parent_id: str = state["run_id"]
    # Up to this generation only: on resume the history also holds later trials.
    best_so_far = _best_metric(
        [*trials, *(t for t in context.history if t.generation <= generation)]
    )
    with _guard(state, f"logging generation {generation}"):
        run_id = _generation_run(client, state, generation)
        status = "FAILED"
        try:
            ok = [m for m in (_ok_metric(t) for t in trials) if m is not None]
            values: dict[str, float | None] = {
                "n_ok": len(ok),
                "n_failed": sum(not t.result.ok for t in trials),
                "best_so_far": best_so_far,
                "generation_seconds": context.generation_seconds.get(generation),
            }
            if ok:
                values |= {
                    "best_metric": max(ok),
                    "mean_metric": statistics.fmean(ok),
                    "median_metric": statistics.median(ok),
                }
            # The tuner's own view of its state, e.g. CoDeepNEAT's species counts and sizes.
            report = getattr(context.tuner, "generation_report", None)
            if callable(report) and not catching_up:
                values |= report()
            if state["resumed"]:  # a run a killed search left may hold some of them already
                logged = client.get_run(run_id).data.metrics
                values = {k: v for k, v in values.items() if k not in logged}
            client.log_batch(run_id, metrics=_metrics(values, step=generation))
            client.log_table(run_id, data=_population(trials), artifact_file="population.json")
            best_here = max(
                (t for t in trials if _ok_metric(t) is not None),
                key=lambda t: t.rank,
                default=None,
            )
            if best_here is not None:
                title = f"generation {generation}: trial {best_here.number}, " + (
                    f"{context.problem.metric} {best_here.result.metric:.4f}"
                )
                client.log_figure(run_id, graph_figure(best_here.graph, title), "best_network.png")
            if catching_up:
                client.set_tag(run_id, "nasfw.logged_on_resume", "true")
            status = "FINISHED"
        finally:
            client.set_terminated(run_id, status=status)
    if best_so_far is not None:
        with _guard(state, f"logging best_so_far of generation {generation}"):
            if not (state["resumed"] and generation in _steps(client, parent_id, "best_so_far")):
                metrics = _metrics({"best_so_far": best_so_far}, generation)
                client.log_batch(parent_id, metrics=metrics)


def _steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def _catch_up(context: SearchContext, state: dict[str, Any]) -> None:
    """Log what the study holds and this run does not yet; nothing twice.

    The study is written first (the source of truth), MLflow after: a kill in between leaves
    trials without ``trial_*`` metrics and finished generations without their nested run. A
    study resumed with tracking on after running untracked gets its whole history.
    """
    client: MlflowClient = state["client"]
    run_id: str = state["run_id"]
    logged = _steps(client, run_id, "trial_failed")  # logged for every trial
    metrics = [
        metric
        for t in context.history
        if t.number not in logged
        for metric in _metrics(_trial_values(t.result), step=t.number)
    ]
    for i in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + METRICS_PER_BATCH])
    finished = {
        int(run.data.tags["nasfw.generation"])
        for run in client.search_runs(
            [state["experiment_id"]],
            filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and status = 'FINISHED'",
        )
        if "nasfw.generation" in run.data.tags
    }
    for generation in range(context.start_generation):
        if generation not in finished:
            trials = [t for t in context.history if t.generation == generation]
            _log_generation(context, state, generation, trials, catching_up=True)


@hookimpl
def nasfw_search_end(context: SearchContext, best: TrialRecord | None) -> None:
    state = _state(context)
    if state is None:
        return
    client: MlflowClient = state["client"]
    run_id: str = state["run_id"]
    if context.error is not None:
        killed = isinstance(context.error, KeyboardInterrupt)
        with _guard(state, "closing the failed run"):
            text = f"{type(context.error).__name__}: {context.error}"
            client.set_tag(run_id, "nasfw.error", text[:MAX_TAG_VALUE])
            client.set_terminated(run_id, status="KILLED" if killed else "FAILED")
        state["ended"] = True
        return

    with _guard(state, "plotting best_so_far.png"):
        _log_plot(client, run_id, context)
    with _guard(state, "plotting fitness_per_generation.png"):
        _log_generation_plot(client, run_id, context)
    step = best.number if best is not None else 0
    if best is not None:
        with _guard(state, "logging the best trial"):
            summary = {
                "best_metric": best.result.metric,
                "best_test_metric": best.result.extra.get("test_metric"),
            }
            client.log_batch(run_id, metrics=_metrics(summary, step=step))
            client.set_tag(run_id, "nasfw.best_trial", str(best.number))
            client.log_text(run_id, best.graph.to_json(indent=2), "best_model/graph.json")
    if context.postproc_report:
        with _guard(state, "logging the post-processor report"):
            _log_postproc(client, run_id, context)
    if context.export_dir is not None and Path(context.export_dir).is_dir():
        with _guard(state, f"logging the exported files of {context.export_dir}"):
            client.log_artifacts(run_id, str(context.export_dir), "best_model")
    if _setting(context, "log_models") and context.best_model is not None:
        with _guard(state, "logging the best model"):
            uri = _log_model(context, state, step)
            client.set_tag(run_id, "nasfw.model_uri", uri)
    with _guard(state, "closing the run"):
        client.set_terminated(run_id, status="FINISHED")
    state["ended"] = True


# -- connection and run set-up --------------------------------------------------------------


def _enabled(context: SearchContext) -> bool:
    tracking = context.cfg.get("tracking")
    return tracking is not None and tracking.get("name") == "mlflow"


def _setting(context: SearchContext, key: str) -> Any:
    return context.cfg.tracking.get(key, getattr(MlflowTrackingConfig, key))


def _state(context: SearchContext) -> dict[str, Any] | None:
    if not _enabled(context):
        return None
    state = context.plugin_state.get(STATE_KEY)
    return state if state is not None and not (state.get("ended") or state.get("off")) else None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative to the working dir)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


@hookimpl
def nasfw_check_config(cfg: Any) -> None:
    """Before the study exists: the SQLite file can be written, the server answers."""
    from nasfw import check_writable

    tracking = cfg.get("tracking")
    if tracking is None or tracking.get("name") != "mlflow":
        return
    uri = str(tracking.get("tracking_uri", MlflowTrackingConfig.tracking_uri))
    path = _sqlite_path(uri)
    if path is not None:
        # MLflow would retry an unwritable database for about 100 s before saying so.
        check_writable(path.parent, "tracking.tracking_uri")
        if path.exists() and not os.access(path, os.W_OK):
            raise TrackingError(f"tracking.tracking_uri={uri!r}: {path} is not writable")
    elif uri.startswith(("http://", "https://")):
        _probe(uri)


def _connect(uri: str) -> MlflowClient:
    """A client for ``uri``, checked by one query; the global URI is set too (for log_model).

    Opening a SQLite store creates or migrates its schema; searches started together would
    race through MLflow's migrations and leave a half-migrated database, so for ``sqlite:///``
    URIs they take turns under a lock file beside the database (``<file>.lock``).
    """
    import mlflow
    from filelock import FileLock
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        _probe(uri)
    path = _sqlite_path(uri)
    turn = FileLock(f"{path}.lock", timeout=300) if path is not None else nullcontext()
    try:
        with turn:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as err:
        hint = (
            f" The database {path} may have been left half-migrated by an older start; move it "
            "aside and rerun, or point tracking.tracking_uri at another file."
            if path is not None and path.exists()
            else " Use e.g. 'sqlite:///mlflow.db' or 'http://host:5000'."
        )
        raise TrackingError(
            f"tracking.tracking_uri={_redact(uri)!r} cannot be used as an MLflow tracking store "
            f"({type(err).__name__}: {_first_line(err)}).{hint}"
        ) from err
    mlflow.set_tracking_uri(uri)
    return client


def _probe(uri: str, timeout: float = 10.0) -> None:
    """Fail fast on a tracking server that does not answer (MLflow retries for minutes).

    Any HTTP answer, even an error status or a TLS problem, leaves the verdict to MLflow.
    """
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except OSError as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(reason, ssl.SSLError | ssl.CertificateError):
            return
        raise TrackingError(
            f"tracking.tracking_uri={_redact(uri)!r}: no MLflow tracking server answers there "
            f"({reason}). Start one (mlflow server ...) or use e.g. 'sqlite:///mlflow.db'."
        ) from err


def _experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the trash) when needed."""
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name)
            except MlflowException:  # another process created it meanwhile
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    except Exception as err:
        raise TrackingError(
            f"tracking.experiment_name={name!r}: cannot get or create this experiment in "
            f"tracking.tracking_uri={_redact(uri)!r} ({type(err).__name__}: {_first_line(err)})"
        ) from err


def _reopen(client: MlflowClient, run_id: str, experiment_id: str) -> str | None:
    """``run_id`` set back to RUNNING if it still exists in this experiment, else None."""
    try:
        run = client.get_run(run_id)
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != experiment_id:
            raise LookupError("deleted or in another experiment")
        client.update_run(run_id, status="RUNNING")
    except Exception as err:
        _log.warning(
            "cannot continue MLflow run %s of the resumed study (%s); starting a new run",
            run_id,
            _first_line(err),
        )
        return None
    return run_id


def _run_tags(context: SearchContext) -> dict[str, str]:
    cfg = context.cfg
    tags = {
        f"nasfw.{group}": str(_select(cfg, f"{group}.name"))
        for group in ("tuner", "problem", "search_space", "launcher")
    }
    storage = _select(cfg, "storage.url") or _select(cfg, "storage.name")
    tags["nasfw.study"] = context.study.study_name
    tags["nasfw.storage"] = _redact(str(storage))
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha) else None


# -- params ---------------------------------------------------------------------------------

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://[^/:@\s]*:)[^@/\s]+@")


def _redact(text: str) -> str:
    """URLs with ``user:password@`` lose the password."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _resolved(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation that does not resolve: log it as written
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted keys; lists of scalars stay one JSON value, lists of nodes get an index."""
    if isinstance(node, Mapping):
        items: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list) and any(isinstance(v, Mapping | list) for v in node):
        items = enumerate(node)
    else:
        value = json.dumps(node, default=str) if isinstance(node, list) else str(node)
        value = _redact(value)
        if len(value) > MAX_PARAM_VALUE:
            value = value[: MAX_PARAM_VALUE - 3] + "..."
        yield prefix, value
        return
    for key, value in items:
        name = re.sub(r"[^\w./\- ]", "_", str(key))
        yield from _flatten(value, f"{prefix}.{name}" if prefix else name)


def _log_params(
    client: MlflowClient, run_id: str, flat: Iterable[tuple[str, str]], resumed: bool
) -> None:
    from mlflow.entities import Param

    params = dict(flat)
    if resumed:  # MLflow refuses to change a logged param: log new keys, report changed ones
        logged = client.get_run(run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            _log.warning(
                "the resumed search's config differs from the one logged to MLflow run %s in "
                "%s; the run keeps the first values",
                run_id,
                ", ".join(changed),
            )
        params = {k: v for k, v in params.items() if k not in logged}
    entries = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(entries), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=entries[i : i + PARAMS_PER_BATCH])


# -- metrics and tables ---------------------------------------------------------------------


def _metrics(values: Mapping[str, float | int | None], step: int) -> list[Metric]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]


def _trial_values(result: Result) -> dict[str, float | int | None]:
    return {
        "trial_metric": result.metric,
        "trial_loss": result.loss,
        "trial_flops": result.flops,
        "trial_params": result.n_params,
        "trial_train_seconds": result.train_seconds,
        "trial_failed": int(not result.ok),
        "trial_regularized_score": result.regularized_score,
        # Scorer-specific facts, e.g. regularized scoring's flops_after / params_after.
        **{
            f"trial_{key}": value
            for key, value in sorted(result.extra.items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        },
    }


def _ok_metric(trial: TrialRecord) -> float | None:
    metric = trial.result.metric
    if not trial.result.ok or metric is None or math.isnan(metric):
        return None
    return float(metric)


def _all_trials(context: SearchContext, trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """``context.history`` plus ``trials`` (whether or not the loop added them yet)."""
    by_number = {t.number: t for t in context.history}
    by_number.update({t.number: t for t in trials if t.number not in by_number})
    return [by_number[n] for n in sorted(by_number)]


def _best_metric(trials: Iterable[TrialRecord]) -> float | None:
    ok = [m for m in (_ok_metric(t) for t in trials) if m is not None]
    return max(ok) if ok else None


def _population(trials: list[TrialRecord]) -> dict[str, list[Any]]:
    columns = [
        "trial",
        "index",
        "graph_hash",
        "nodes",
        "status",
        "metric",
        "loss",
        "flops",
        "params",
        "train_seconds",
        "regularized_score",
        "error",
        *DEVICE_FACTS,
    ]
    attr_keys = sorted({k for t in trials for k in t.attrs})
    attr_columns = {k: k if k not in columns else f"attrs.{k}" for k in attr_keys}
    table: dict[str, list[Any]] = {c: [] for c in [*columns, *attr_columns.values()]}
    for t in trials:
        r = t.result
        row = [
            t.number,
            t.index,
            t.graph.hash,
            len(t.graph),
            r.status,
            r.metric,
            r.loss,
            r.flops,
            r.n_params,
            r.train_seconds,
            r.regularized_score,
            r.error,
            *(r.extra.get(k) for k in DEVICE_FACTS),
        ]
        for column, value in zip(columns, row, strict=True):
            table[column].append(value)
        for key, column in attr_columns.items():
            value = t.attrs.get(key)
            scalar = value is None or isinstance(value, str | int | float | bool)
            table[column].append(value if scalar else json.dumps(value, default=str))
    return table


def _generation_run(client: MlflowClient, state: dict[str, Any], generation: int) -> str:
    """A new nested run for ``generation`` (or, on resume, the one a killed search left)."""
    parent_id = state["run_id"]
    if state["resumed"]:
        found = client.search_runs(
            [state["experiment_id"]],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_id}' "
                f"and tags.`nasfw.generation` = '{generation}'"
            ),
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            return run_id
    run = client.create_run(
        state["experiment_id"],
        run_name=f"generation-{generation}",
        tags={"mlflow.parentRunId": parent_id, "nasfw.generation": str(generation)},
    )
    state["generation_runs"][generation] = run.info.run_id
    return run.info.run_id


# -- end of search --------------------------------------------------------------------------


def _log_plot(client: MlflowClient, run_id: str, context: SearchContext) -> None:

    trials = _all_trials(context, ())
    points = [(t.number, m) for t in trials if (m := _ok_metric(t)) is not None]
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    running, best = [], -math.inf
    for y in ys:
        best = max(best, y)
        running.append(best)
    fig = _agg_figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=14, alpha=0.6, label=f"trial {context.problem.metric}")
    ax.step(xs, running, where="post", color="C1", label="best so far")
    n_failed = sum(not t.result.ok for t in trials)
    ax.set(
        xlabel="trial",
        ylabel=context.problem.metric,
        title=f"{context.study.study_name} ({len(trials)} trials, {n_failed} failed)",
    )
    ax.legend(loc="lower right")
    client.log_figure(run_id, fig, "best_so_far.png", save_kwargs={"dpi": 100})


def _log_postproc(client: MlflowClient, run_id: str, context: SearchContext) -> None:
    """The post-processor's rows as a table, and each row's before/after figures as metrics."""
    rows = context.postproc_report
    columns = sorted({k for row in rows for k in row})
    client.log_table(
        run_id,
        data={c: [row.get(c) for row in rows] for c in columns},
        artifact_file="postproc.json",
    )
    batch = []
    for step, row in enumerate(rows):
        numeric = {
            f"postproc_{key}": value
            for key, value in row.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        batch.extend(_metrics(numeric, step=step))
    client.log_batch(run_id, metrics=batch)


def _agg_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    return fig


def _log_generation_plot(client: MlflowClient, run_id: str, context: SearchContext) -> None:
    by_generation: dict[int, list[float]] = {}
    for t in _all_trials(context, ()):
        if (m := _ok_metric(t)) is not None:
            by_generation.setdefault(t.generation, []).append(m)
    if not by_generation:
        return
    gens = sorted(by_generation)
    fig = _agg_figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(gens, [max(by_generation[g]) for g in gens], "o-", label="best")
    ax.plot(gens, [statistics.fmean(by_generation[g]) for g in gens], "s--", label="mean")
    ax.set(
        xlabel="generation",
        ylabel=context.problem.metric,
        title=f"{context.study.study_name}: {context.problem.metric} per generation",
    )
    ax.legend(loc="lower right")
    client.log_figure(run_id, fig, "fitness_per_generation.png", save_kwargs={"dpi": 100})


_SHOWN_PARAMS = ("filters", "kernel_size", "units", "rate", "pool_size", "activation")


def graph_figure(graph: ArchGraph, title: str = "") -> Any:
    """A matplotlib figure of ``graph``: nodes in columns by depth from the input."""
    order = graph.topological_order()
    depth: dict[str, int] = {INPUT: 0}
    for node in order:
        depth[node.id] = 1 + max(depth[i] for i in node.inputs)
    columns: dict[int, list[str]] = {}
    for name in [INPUT, *(n.id for n in order)]:
        columns.setdefault(depth[name], []).append(name)
    pos = {
        name: (d, -(i - (len(names) - 1) / 2))
        for d, names in columns.items()
        for i, name in enumerate(names)
    }
    height = max(len(names) for names in columns.values())
    fig = _agg_figure((max(4.0, 1.9 * len(columns)), max(2.5, 1.3 * height)))
    ax = fig.add_subplot()
    for node in order:
        for src in node.inputs:
            ax.annotate(
                "",
                xy=pos[node.id],
                xytext=pos[src],
                arrowprops={
                    "arrowstyle": "->",
                    "color": "0.4",
                    "shrinkA": 22,
                    "shrinkB": 22,
                    # Skips bend, so they do not run under the boxes of the main path.
                    "connectionstyle": f"arc3,rad={0.2 if depth[node.id] - depth[src] > 1 else 0}",
                },
            )
    for name, (x, y) in pos.items():
        if name == INPUT:
            label, color = "input", "0.85"
        else:
            node = graph[name]
            shown = [
                f"{k}={node.params[k]:.2g}"
                if isinstance(node.params[k], float)
                else f"{k}={node.params[k]}"
                for k in _SHOWN_PARAMS
                if k in node.params
            ]
            merge = [f"merge={node.merge}"] if len(node.inputs) > 1 else []
            label = "\n".join([node.op, *shown, *merge])
            color = "#f6d38b" if name == graph.output else "#bcd7f2"
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round", "facecolor": color, "edgecolor": "0.3"},
        )
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-height / 2 - 0.9, height / 2 + 0.3)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _log_model(context: SearchContext, state: dict[str, Any], step: int) -> str:
    """Log ``context.best_model`` on the parent run; returns its model URI.

    MLflow 3 saves PyTorch models as ``torch.export`` programs ("pt2", no pickle) by default,
    which needs an input example: a few validation inputs. A model that cannot be exported is
    pickled instead (loading it then needs nasfw importable).
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch

    model = copy.deepcopy(context.best_model).cpu().eval()
    split = context.problem.val if len(context.problem.val) >= 2 else context.problem.train
    example = np.ascontiguousarray(split.x[:2], dtype=np.float32)
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    mlflow.set_tracking_uri(state["tracking_uri"])
    # log_model attaches the model to the active run: make the parent run active for this call
    # only. Leaving the `with` pops it off the stack (even on errors); nested=True keeps a run
    # the caller may have open underneath ours.
    with mlflow.start_run(run_id=state["run_id"], nested=mlflow.active_run() is not None):
        try:
            info = mlflow.pytorch.log_model(
                model,
                name="best_model",
                input_example=example,
                serialization_format="pt2",
                pip_requirements=requirements,
                step=step,
            )
        except Exception as err:
            _log.warning(
                "the best model cannot be exported with torch.export (%s: %s); logging it pickled",
                type(err).__name__,
                _first_line(err),
            )
            info = mlflow.pytorch.log_model(
                model,
                name="best_model",
                serialization_format="pickle",
                pip_requirements=requirements,
                step=step,
            )
    return info.model_uri


@contextmanager
def _guard(state: dict[str, Any], what: str) -> Iterator[None]:
    """Log a tracking failure as a warning instead of stopping the search.

    After ``MAX_FAILURES`` failures in a row (a tracking server that went away: each call then
    waits for MLflow's HTTP retries) the later hooks of this search log nothing.
    """
    try:
        yield
    except Exception as err:
        state["failures"] = state.get("failures", 0) + 1
        _log.warning(
            "MLflow tracking: %s failed (%s: %s); the search goes on",
            what,
            type(err).__name__,
            err,
            exc_info=_log.isEnabledFor(logging.DEBUG),
        )
        if state["failures"] >= MAX_FAILURES and not state.get("off"):
            state["off"] = True
            _log.warning(
                "MLflow tracking failed %d times in a row: nothing more is logged to run %s",
                state["failures"],
                state.get("run_id"),
            )
    else:
        state["failures"] = 0
