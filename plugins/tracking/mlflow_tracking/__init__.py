"""MLflow tracking: one parent run per search, one nested run per generation.

Selected with ``tracking=mlflow`` (the default); ``tracking=none`` turns it off. The plugin is
this thin module of hooks over a small package: ``_runs`` (store, parent and generation runs,
tags, params), ``_metrics`` (names, values, population table), ``_figures`` (plots) and
``_model`` (the best model with its preprocessing).

What is logged, with ``<val>`` the problem's validation metric (e.g. ``val_accuracy``):

- parent run (named ``tracking.run_name``, else the study name with its seed first,
  ``_runs.parent_name``): the resolved config as params (unset ones left out);
  tags for the groups, study, storage, user (``mlflow.user``), source, command line, the git
  commit of the user's project (``mlflow.source.git.commit``) and of nasfw's own checkout
  (``nasfw.git_commit``); a description (``mlflow.note.content``: command, output directory,
  best trial). Only summaries of the search, so MLflow's compare view ranks searches truly:
  ``n_trials`` and ``best_<val>`` after every trial (the best *result* so far, as nasfw's own
  best counts them: not the tuner's own trainings such as Petridish's candidate trainings, nor
  networks below the full budget), ``n_trials_ok`` / ``n_trials_failed`` /
  ``n_trials_pruned`` after every generation, and at the search's end all of them with
  ``best_test_<metric>`` at the last step (so the last point of each is its final value);
  ``trained_on.*`` params (device, its name, precision). Plots
  ``best_so_far.png`` and ``fitness_per_generation.png``, ``pareto_front.png`` (validation
  error, or the metric, against FLOPs; redrawn after every generation) and the front's table
  ``pareto_front.json``, ``best_model/`` (the exported files), and the best model as an MLflow
  PyTorch model named after the study that takes raw inputs.
- nested run ``gen <g> · <parent's name>``, opened when the generation starts (its duration
  is the generation's) with params ``generation``, ``tuner``, ``candidates``:
  ``generation_max_<val>``, ``generation_mean_<val>``, ``generation_median_<val>`` (its ok
  evaluations), ``search_best_<val>`` (the search's best result so far), ``n_ok``, ``n_failed``,
  ``n_pruned``, ``generation_seconds``, ``worker_utilisation`` (busy / (workers x wall)), the
  tuner's report (e.g. species sizes), ``population.json`` and ``best_network.png``; and each
  of its trials' series: ``trial/<val>``, ``trial/loss``, ``trial/flops``, ``trial/params``,
  ``trial/train_seconds``, ``trial/failed``, ``trial/pruned``, ``trial/epochs``,
  ``trial/regularized_score`` (where it differs from the metric) and the scorer's numeric
  facts ``trial/<key>``; the learning curves as one figure, ``learning_curves.png``.

Steps: the parent's summaries are at the count of evaluations finished so far (completion
order, so the best so far never goes down on MLflow's "Step" axis), the generation runs'
``trial/*`` at the trial's number, each stamped with the time that evaluation finished
("Time" axis); a generation's own metrics are at the step of its number.

The parent run id is stored in the Optuna study (user attr ``mlflow_run_id``): a resumed search
continues its run and first logs what the study holds and the run does not (a kill between the
two writes, or a study that ran untracked), never twice. Logging goes through
:class:`mlflow.MlflowClient` with explicit run ids, so several searches in one process (a
Hydra multirun) do not share an active run. After the search's start, the hooks read what they
need and queue the logging for a thread of the search's own (``_backlog``): the search does not
wait for MLflow, and its end waits until everything queued was logged. A tracking store that
cannot be used fails the search before its study exists, naming ``tracking.tracking_uri``; any
later tracking error is logged as a warning and the search goes on.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw import NasfwConfig, hookimpl

from . import _figures, _metrics, _runs
from ._backlog import Backlog
from ._figures import graph_figure
from .config import (
    FIGURE_SECONDS,
    FLUSH_SECONDS,
    MAX_TAG_VALUE,
    METRICS_PER_BATCH,
    MlflowTrackingConfig,
    TrackingError,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nasfw import Candidate, Result, SearchContext, TrialRecord

__all__ = ["MlflowTrackingConfig", "TrackingError", "graph_figure"]

_log = _runs._log


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("tracking", "mlflow", MlflowTrackingConfig)


@hookimpl
def nasfw_check_config(cfg: NasfwConfig) -> None:
    if _runs.select(cfg, "tracking.name") == "mlflow":
        _runs.check_store(str(cfg.tracking.tracking_uri))


@hookimpl
def nasfw_search_start(context: SearchContext) -> None:
    if not _runs.enabled(context):
        return
    uri = str(_runs.setting(context, "tracking_uri"))
    client = _runs.connect(uri)
    experiment_id = _runs.experiment(client, str(_runs.setting(context, "experiment_name")), uri)

    run_id, resumed = None, False
    previous = context.study.user_attrs.get(_runs.RUN_ID_ATTR)
    if previous:
        run_id = _runs.reopen(client, str(previous), experiment_id)
        resumed = run_id is not None
    if run_id is None:
        run_name = _runs.setting(context, "run_name") or _runs.parent_name(context)
        try:
            run = client.create_run(
                experiment_id, run_name=str(run_name), tags=_runs.run_tags(context)
            )
        except Exception as err:
            raise TrackingError(
                f"tracking.tracking_uri={_runs.redact(uri)!r}: cannot create an MLflow run in "
                f"experiment {experiment_id} ({type(err).__name__}: {err})"
            ) from err
        run_id = run.info.run_id
        context.study.set_user_attr(_runs.RUN_ID_ATTR, run_id)
    state: dict[str, Any] = {
        "client": client,
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "run_id": run_id,
        "resumed": resumed,
        "generation_runs": {},
    }
    context.plugin_state[_runs.STATE_KEY] = state
    with _runs.guard(state, "logging the config as params"):
        params = _runs.flatten(_runs.resolved(context.cfg))
        _runs.log_params(client, run_id, params, resumed)
    if resumed:
        with _runs.guard(state, "tagging the resumed run"):
            client.set_tag(run_id, "nasfw.resumed_at_generation", str(context.start_generation))
    if context.history:  # resuming a study: also one that ran untracked, or was killed
        with _runs.guard(state, "logging what the study holds and MLflow does not"):
            _catch_up(context, state)
    # From here on the hooks queue their logging; the search does not wait for MLflow.
    state["backlog"] = Backlog(state)


@hookimpl
def nasfw_warm_start(context: SearchContext, choice: dict[str, Any]) -> None:
    """minibench.warm_start's donors: params ``warm_start.donors`` (``id:tau`` list),
    ``warm_start.seeds`` (count), ``warm_start.cold`` and ``warm_start/choice.json``."""
    state = _runs.state_of(context)
    if state is None:
        return
    client: MlflowClient = state["client"]
    params = {
        "warm_start.donors": ",".join(f"{pid}:{tau:.3f}" for pid, tau in choice["donors"])
        or "none",
        "warm_start.seeds": str(len(choice["seeds"])),
        "warm_start.cold": str(choice["cold"] or "no")[:250],
        "warm_start.db": str(choice["db"]),
    }

    def log() -> None:
        _runs.log_params(client, state["run_id"], params.items(), resumed=True)
        client.log_dict(state["run_id"], choice, "warm_start/choice.json")

    state["backlog"].submit("logging minibench.warm_start's donors", log)


@hookimpl
def nasfw_search_space_chosen(context: SearchContext, choice: dict[str, Any]) -> None:
    """search_space=auto's choice: params ``auto.*`` (by reference networks also
    ``auto.nearest`` as ``id:tau`` and ``auto.fallback``) and ``auto/choice.json`` and
    ``auto/search_space.yaml`` (the constraint set) on the search's run."""
    state = _runs.state_of(context)
    if state is None:
        return
    client: MlflowClient = state["client"]
    params = {
        "auto.class": choice["class"],
        "auto.confidence": f"{choice['confidence']:.4f}",
        "auto.probe_trials": str(len(choice["probe_trials"])),
        "auto.db": str(choice["db"]),
    }
    if choice.get("family"):  # probed by reference networks: the nearest problems, with tau
        params["auto.nearest"] = ",".join(f"{p}:{t:.3f}" for p, t in choice["nearest"])
        params["auto.fallback"] = "yes" if choice["fallback"] else "no"

    def log() -> None:
        _runs.log_params(client, state["run_id"], params.items(), resumed=True)
        client.log_dict(state["run_id"], choice, "auto/choice.json")
        client.log_dict(state["run_id"], choice["space"], "auto/search_space.yaml")

    state["backlog"].submit("logging the search space search_space=auto chose", log)


@hookimpl
def nasfw_generation_start(
    context: SearchContext, generation: int, candidates: list[Candidate]
) -> None:
    state = _runs.state_of(context)
    if state is None or not _runs.generation_runs(context):
        return
    candidates = list(candidates)
    started = time.time()  # the run is created later, by the logging thread
    state["backlog"].submit(
        f"opening the run of generation {generation}",
        lambda: _runs.generation_run(context, state, generation, candidates, started=started),
    )


@hookimpl
def nasfw_trial_complete(
    context: SearchContext, candidate: Candidate, result: Result, trial: TrialRecord
) -> None:
    state = _runs.state_of(context)
    if state is None:
        return
    val = _metrics.val_name(context)
    # The loop adds a trial to the history before this hook (by identity: == compares whole
    # records, which cost more than a lookup did, issue 26's profile).
    history = context.history
    seen = len(history) + (not history or history[-1] is not trial)
    # full_budget() reads the whole history; once it reached train.epochs it cannot move.
    cap = int(context.cfg.train.epochs) if context.cfg is not None else None
    full = cap if state.get("best_at") == cap is not None else context.full_budget()
    # The running best, updated by this trial (recounted when the full budget moved).
    if state.get("best_at") != full:
        state["best"] = _metrics.best_metric(_metrics.all_trials(context, [trial]), full)
        state["best_at"] = full
    else:
        mine = _metrics.result_metric(trial, full)
        if mine is not None:
            state["best"] = mine if state["best"] is None else max(state["best"], mine)
    summary = _metrics.summary_metrics(trial, seen, state["best"], val)
    # The parent's counts after each generation, kept up to date here (recounting the whole
    # history at every generation's end made a search of n generations O(n^2)).
    tally = state.setdefault(
        "tally", {"n_trials_ok": 0, "n_trials_failed": 0, "n_trials_pruned": 0}
    )
    tally["n_trials_ok"] += result.ok
    tally["n_trials_failed"] += result.status == "failed"
    tally["n_trials_pruned"] += result.pruned
    state["latest_generation"] = max(state.get("latest_generation", -1), trial.generation)
    if _runs.generation_runs(context):

        def log() -> None:
            _runs.queue_metrics(state, state["run_id"], summary)
            run_id = _runs.generation_run(context, state, trial.generation)
            _runs.queue_metrics(state, run_id, _metrics.trial_metrics(trial, val))
            _runs.flush(state, force=False)

        state["backlog"].submit(f"logging trial {trial.number}", log)
    else:
        _hold(state, summary)
    if not state.get("device_logged") and "device" in result.extra:
        # Where networks actually trained (train.device may say auto): the first trial's.
        params = {
            f"trained_on.{k}": str(result.extra[k])
            for k in _metrics.DEVICE_FACTS
            if result.extra.get(k) is not None
        }
        state["backlog"].submit(
            "logging the training device",
            lambda: _runs.log_params(state["client"], state["run_id"], params.items(), True),
        )
        state["device_logged"] = True


@hookimpl
def nasfw_generation_end(
    context: SearchContext, generation: int, trials: list[TrialRecord]
) -> None:
    state = _runs.state_of(context)
    if state is None:
        return
    ended = time.time()  # the generation's end, not that of its logging
    # The Pareto front, so it can be watched while the search runs: at most every
    # FIGURE_SECONDS (and at the end); a figure per generation of lookups cost more than them.
    figure = time.monotonic() - state.get("pareto_at", -FIGURE_SECONDS) >= FIGURE_SECONDS
    if figure:
        state["pareto_at"] = time.monotonic()
    tally = state.get("tally")
    if (
        tally is not None
        and not figure
        and not _runs.generation_runs(context)
        and not state["resumed"]
        and state.get("latest_generation", -1) <= generation
        and sum(tally.values()) == len(context.history)  # none from before this process
    ):
        # Nothing to read from the search but the counts of its evaluations, all of this
        # generation or before: held with the summaries, no job and no copy of the history.
        _hold(state, _metrics.metrics(tally, step=len(context.history), finished=ended))
        return
    # What the logging reads of the search, as it is now: the search goes on meanwhile.
    now = dataclasses.replace(
        context,
        history=list(context.history),
        generation_seconds=dict(context.generation_seconds),
        tuner=_TunerAsItWas(context.tuner),
    )
    trials = list(trials)
    state["backlog"].submit(
        f"logging generation {generation}",
        lambda: _log_generation(now, state, generation, trials, ended=ended, figure=figure),
    )


def _hold(state: dict[str, Any], metrics: list[Any]) -> None:
    """Keep the parent run's ``metrics`` in the search's own thread, handed to the logging
    thread at most every ``FLUSH_SECONDS``, and at the end (:func:`_hand_over`): one job per
    evaluation woke the logging thread a thousand times in a search of 1,000 lookups, each
    time taking the interpreter from the search (the search took 1.6-2.3x its time
    untracked)."""
    state.setdefault("held", []).extend(metrics)
    if time.monotonic() - state.get("handed_at", 0.0) >= FLUSH_SECONDS:
        _hand_over(state)


def _hand_over(state: dict[str, Any]) -> None:
    """Queue the metrics :func:`_hold` kept, to be sent at once."""
    held = state.pop("held", None)
    state["handed_at"] = time.monotonic()
    if held:

        def log() -> None:
            _runs.queue_metrics(state, state["run_id"], held)
            _runs.flush(state)

        state["backlog"].submit(f"logging {len(held)} metrics of the search", log)


@hookimpl
def nasfw_search_end(context: SearchContext, best: TrialRecord | None) -> None:
    if _runs.enabled(context):
        running = context.plugin_state.get(_runs.STATE_KEY, {})
        if "backlog" in running:
            _hand_over(running)  # the summaries held since the last hand-over
        backlog: Backlog | None = running.pop("backlog", None)
        if backlog is not None:
            backlog.close()  # everything the search queued is logged before the run closes
    state = _runs.state_of(context)
    if state is None:
        return
    with _runs.guard(state, "logging the last summaries"):
        _runs.flush(state)
    client: MlflowClient = state["client"]
    run_id: str = state["run_id"]
    if context.error is not None:
        killed = isinstance(context.error, KeyboardInterrupt)
        status = "KILLED" if killed else "FAILED"
        # The generation the stop cut short ends with the search, not RUNNING until a rerun.
        for generation, child in list(state["generation_runs"].items()):
            with _runs.guard(state, f"closing the run of generation {generation}"):
                client.set_terminated(child, status=status)
                state["generation_runs"].pop(generation, None)
        with _runs.guard(state, "closing the failed run"):
            text = f"{type(context.error).__name__}: {context.error}"
            client.set_tag(run_id, "nasfw.error", text[:MAX_TAG_VALUE])
            client.set_terminated(run_id, status=status)
        state["ended"] = True
        return

    with _runs.guard(state, "plotting best_so_far.png"):
        _figures.log_progress_plot(client, run_id, context)
    with _runs.guard(state, "plotting fitness_per_generation.png"):
        _figures.log_generation_plot(client, run_id, context)
    with _runs.guard(state, "logging the Pareto front"):
        _figures.log_pareto_plot(client, run_id, context, _metrics.all_trials(context, ()))
        _figures.log_pareto_table(client, run_id, context)
    # The search's final summaries at its last step, where MLflow (and the logged model's
    # page, which shows the run's metrics at the model's step) reads a metric's final value.
    done = _metrics.all_trials(context, ())
    step = len(done)
    if done:
        final: dict[str, Any] = {
            f"best_{_metrics.val_name(context)}": _metrics.best_metric(done, context.full_budget()),
            "n_trials": len(done),
            **_metrics.counts(done),
        }
        if best is not None:
            final[f"best_test_{context.problem.metric}"] = best.result.extra.get("test_metric")
        # Once each: best_<val> and n_trials are there already when the last summary made it.
        _log_counts(client, state, final, step, only_new=True)
    if best is not None:
        with _runs.guard(state, "logging the best trial"):
            client.set_tag(run_id, "nasfw.best_trial", str(best.number))
            client.set_tag(run_id, "mlflow.note.content", _runs.description(context, best))
            client.log_text(run_id, best.graph.to_json(indent=2), "best_model/graph.json")
    if context.postproc_report:
        with _runs.guard(state, "logging the post-processor report"):
            _figures.log_postproc(client, run_id, context, step)
    if context.export_dir is not None and Path(context.export_dir).is_dir():
        with _runs.guard(state, f"logging the exported files of {context.export_dir}"):
            client.log_artifacts(run_id, str(context.export_dir), "best_model")
    if _runs.setting(context, "log_models") and context.best_model is not None:
        with _runs.guard(state, "logging the best model"):
            from . import _model  # torch: imported when there is a model, not at discovery

            uri = _model.log_model(context, state, step)
            client.set_tag(run_id, "nasfw.model_uri", uri)
    with _runs.guard(state, "closing the run"):
        client.set_terminated(run_id, status="FINISHED")
    state["ended"] = True


# -- generations and catching up --------------------------------------------------------------


def _log_generation(
    context: SearchContext,
    state: dict[str, Any],
    generation: int,
    trials: list[TrialRecord],
    catching_up: bool = False,
    ended: float | None = None,
    figure: bool | None = None,
) -> None:
    """Close the nested run of ``generation`` with its metrics; the parent's counts.

    ``catching_up``: logged after the fact for a generation the study finished but MLflow
    missed (the search was killed in between); the tuner's report of that time is gone.
    ``ended``: when the generation ended (seconds since the epoch; default now).
    ``figure``: whether to redraw ``pareto_front.png`` (None: when ``FIGURE_SECONDS`` passed
    since it was last drawn).
    """
    client: MlflowClient = state["client"]
    ended = time.time() if ended is None else ended
    times = [t.result for t in trials if t.result.started is not None]
    first = min((r.started for r in times), default=None) if catching_up else None
    last_done = max((r.finished or ended for r in times), default=ended)
    end = last_done if catching_up else ended
    if _runs.generation_runs(context):
        _log_generation_run(context, state, generation, trials, catching_up, first, end)
    done = [t for t in _metrics.all_trials(context, trials) if t.generation <= generation]
    if done:
        # At the step of the evaluations finished by then (the parent's steps count them).
        counts = _metrics.counts(done)
        if state["resumed"] or catching_up:
            _log_counts(client, state, counts, step=len(done))
        else:
            _runs.queue_metrics(state, state["run_id"], _metrics.metrics(counts, step=len(done)))
            _runs.flush(state, force=_runs.generation_runs(context))
    # So the front can be watched while the search runs: at most every FIGURE_SECONDS (and
    # at the end), a figure per generation of lookups cost more than the lookups.
    if figure is None:
        figure = time.monotonic() - state.get("pareto_at", -FIGURE_SECONDS) >= FIGURE_SECONDS
        if figure:
            state["pareto_at"] = time.monotonic()
    if figure:
        with _runs.guard(state, f"plotting pareto_front.png after generation {generation}"):
            _figures.log_pareto_plot(client, state["run_id"], context, done)


def _log_generation_run(
    context: SearchContext,
    state: dict[str, Any],
    generation: int,
    trials: list[TrialRecord],
    catching_up: bool,
    first: float | None,
    end: float,
) -> None:
    """Close the nested run of ``generation`` with its metrics (see :func:`_log_generation`)."""
    client: MlflowClient = state["client"]
    val = _metrics.val_name(context)
    # Up to this generation only: on resume the history also holds later trials.
    upto = [*trials, *(t for t in context.history if t.generation <= generation)]
    full = context.full_budget()
    best_so_far = _metrics.best_metric(upto, full)
    with _runs.guard(state, f"logging generation {generation}"):
        run_id = _runs.generation_run(context, state, generation, started=first)
        status = "FAILED"
        try:
            ok = [m for m in (_metrics.ok_metric(t) for t in trials) if m is not None]
            values: dict[str, float | None] = {
                "n_ok": len(ok),
                "n_failed": sum(t.result.status == "failed" for t in trials),
                "n_pruned": sum(t.result.pruned for t in trials),
                # "best" is the search's, over results only (as the parent's best_<val>).
                f"search_best_{val}": best_so_far,
                "generation_seconds": context.generation_seconds.get(generation),
                "worker_utilisation": context.worker_utilisation(generation),
            }
            if ok:  # every ok evaluation of the generation, results or not: never called "best"
                values |= {
                    f"generation_max_{val}": max(ok),
                    f"generation_mean_{val}": statistics.fmean(ok),
                    f"generation_median_{val}": statistics.median(ok),
                }
            # The tuner's own view of its state, e.g. CoDeepNEAT's species counts and sizes.
            report = getattr(context.tuner, "generation_report", None)
            if callable(report) and not catching_up:
                values |= report()
                _log_tuner_artifacts(client, run_id, context.tuner)
            if state["resumed"]:  # a run a killed search left may hold some of them already
                logged = client.get_run(run_id).data.metrics
                values = {k: v for k, v in values.items() if k not in logged}
            client.log_batch(run_id, metrics=_metrics.metrics(values, step=generation))
            settings = _runs.resolved(context.cfg.train) if context.cfg is not None else {}
            table = _metrics.population(trials, val, full, settings)
            client.log_table(run_id, data=table, artifact_file="population.json")
            best_here = max(
                (t for t in trials if _metrics.ok_metric(t) is not None),
                key=lambda t: t.rank,
                default=None,
            )
            if best_here is not None:
                title = f"generation {generation}: trial {best_here.number}, " + (
                    f"{val} {best_here.result.metric:.4f}"
                )
                figure = graph_figure(best_here.graph, title)
                client.log_figure(run_id, figure, "best_network.png")
            if any(t.result.curve for t in trials):
                figure = _figures.learning_curves_figure(trials, val, f"generation {generation}")
                client.log_figure(run_id, figure, "learning_curves.png", save_kwargs={"dpi": 100})
            if catching_up:
                client.set_tag(run_id, "nasfw.logged_on_resume", "true")
            status = "FINISHED"
        finally:
            _runs.flush(state)  # its trials' series, before the run ends
            client.set_terminated(run_id, status=status, end_time=int(end * 1000))
            state["generation_runs"].pop(generation, None)


def _log_counts(
    client: MlflowClient,
    state: dict[str, Any],
    values: dict[str, Any],
    step: int,
    only_new: bool = False,
) -> None:
    """``values`` on the parent run at ``step``; on a resumed run (or ``only_new``), only
    those not logged at that step yet."""
    with _runs.guard(state, f"logging the search's counts at step {step}"):
        if state["resumed"] or only_new:
            values = {
                k: v for k, v in values.items() if step not in _steps(client, state["run_id"], k)
            }
        client.log_batch(state["run_id"], metrics=_metrics.metrics(values, step=step))


class _TunerAsItWas:
    """The tuner's report and artifacts of a generation, taken when the generation ended: its
    logging runs later, while the tuner already works on the next one."""

    def __init__(self, tuner: Any) -> None:
        report = getattr(tuner, "generation_report", None)
        artifacts = getattr(tuner, "generation_artifacts", None)
        self._report: dict[str, float] = report() if callable(report) else {}
        self._artifacts: dict[str, Any] = artifacts() if callable(artifacts) else {}

    def generation_report(self) -> dict[str, float]:
        return self._report

    def generation_artifacts(self) -> dict[str, Any]:
        return self._artifacts


def _log_tuner_artifacts(client: MlflowClient, run_id: str, tuner: Any) -> None:
    """The tuner's own files for this generation (``Tuner.generation_artifacts``), under
    ``tuner/`` in the generation's run."""
    artifacts = getattr(tuner, "generation_artifacts", None)
    for name, value in (artifacts() if callable(artifacts) else {}).items():
        if name.endswith(".png"):
            client.log_figure(run_id, value, f"tuner/{name}", save_kwargs={"dpi": 100})
        else:
            client.log_dict(run_id, value, f"tuner/{name}")


def _steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def _logged_in_generation_run(
    client: MlflowClient, state: dict[str, Any], generation: int, found: dict[int, set[int]]
) -> set[int]:
    """The trials whose series the generation's existing run holds (read only: the run is not
    reopened); cached in ``found``."""
    if generation not in found:
        run_id = _runs.existing_generation_run(state, generation)
        found[generation] = _steps(client, run_id, "trial/failed") if run_id else set()
    return found[generation]


def _catch_up(context: SearchContext, state: dict[str, Any]) -> None:
    """Log what the study holds and this run does not yet; nothing twice.

    The study is written first (the source of truth), MLflow after: a kill in between leaves
    trials without ``trial/*`` metrics and finished generations without their nested run. A
    study resumed with tracking on after running untracked gets its whole history.
    """
    client: MlflowClient = state["client"]
    run_id: str = state["run_id"]
    val = _metrics.val_name(context)
    # Each trial writes two batches (the parent's summary, its generation run's series); a kill
    # may land between them, so each target says itself which trials it has.
    logged = _steps(client, run_id, "n_trials")
    found: dict[int, set[int]] = {}
    batches: dict[str, list[Any]] = {}
    best = None
    first: dict[int, float] = {}  # when each generation's first evaluation started
    for t in context.history:
        if t.result.started is not None:
            first[t.generation] = min(first.get(t.generation, t.result.started), t.result.started)
    full = context.full_budget()
    with_runs = _runs.generation_runs(context)
    # The parent's steps count evaluations in the order they finished.
    finished = sorted(context.history, key=lambda t: (t.result.finished or 0.0, t.number))
    for seen, trial in enumerate(finished, start=1):
        metric = _metrics.result_metric(trial, full)
        if metric is not None:
            best = metric if best is None else max(best, metric)
        if seen not in logged:
            batches.setdefault(run_id, []).extend(_metrics.summary_metrics(trial, seen, best, val))
        if not with_runs:
            continue
        if seen in logged and trial.number in _logged_in_generation_run(
            client, state, trial.generation, found
        ):
            continue
        generation_run = _runs.generation_run(
            context, state, trial.generation, started=first.get(trial.generation)
        )
        batches.setdefault(generation_run, []).extend(_metrics.trial_metrics(trial, val))
    for target, batch in batches.items():
        for i in range(0, len(batch), METRICS_PER_BATCH):
            client.log_batch(target, metrics=batch[i : i + METRICS_PER_BATCH])
    if not with_runs:  # the search's end logs the final counts
        return
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
