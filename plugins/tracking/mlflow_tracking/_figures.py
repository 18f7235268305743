"""Figures and tables logged as artifacts: the search's progress, the networks, post-processing."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nasfw import INPUT, ArchGraph, pareto_front, pareto_rows

from ._metrics import all_trials, metrics, ok_metric, result_metric, val_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nasfw import SearchContext, TrialRecord

PARETO_TABLE = "pareto_front.json"


def log_progress_plot(client: MlflowClient, run_id: str, context: SearchContext) -> None:

    trials = all_trials(context, ())
    full = context.full_budget()
    # Results only (as nasfw's own best): not the tuner's own trainings (Petridish's candidate
    # trainings) nor networks scored below the full budget, shown apart.
    points = [(t.number, m) for t in trials if (m := result_metric(t, full)) is not None]
    others = [
        (t.number, m)
        for t in trials
        if (m := ok_metric(t)) is not None and result_metric(t, full) is None
    ]
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    running, best = [], -math.inf
    for y in ys:
        best = max(best, y)
        running.append(best)
    fig = _figure((6.4, 4.0))
    ax = fig.add_subplot()
    if others:
        ox, oy = zip(*others, strict=True)
        ax.scatter(
            ox,
            oy,
            s=10,
            marker="x",
            color="0.6",
            label="not a result (tuner's own, or < full budget)",
        )
    ax.scatter(xs, ys, s=14, alpha=0.6, label=f"trial val_{context.problem.metric}")
    ax.step(xs, running, where="post", color="C1", label="best so far")
    _integer_ticks(ax.xaxis)
    n_failed = sum(not t.result.ok for t in trials)
    ax.set(
        xlabel="trial",
        ylabel=f"val_{context.problem.metric}",
        title=f"{context.study.study_name} ({len(trials)} trials, {n_failed} failed)",
    )
    ax.legend(loc="lower right")
    client.log_figure(run_id, fig, "best_so_far.png", save_kwargs={"dpi": 100})


def log_postproc(client: MlflowClient, run_id: str, context: SearchContext, step: int) -> None:
    """The post-processor's rows as the table ``postproc.json``, and the first row's (the
    best's: post-processors rank results) before/after figures as metrics ``postproc/<key>``
    at ``step``, the search's last, with ``postproc/trial`` naming the trial they describe.

    Only the first row's: the run overview shows one value per metric, which must describe
    the same network as the logged best model; the other rows are in the table.
    """
    rows = context.postproc_report
    columns = sorted({k for row in rows for k in row})
    client.log_table(
        run_id,
        data={c: [row.get(c) for row in rows] for c in columns},
        artifact_file="postproc.json",
    )
    numeric = {
        f"postproc/{key}": value
        for key, value in rows[0].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    client.log_batch(run_id, metrics=metrics(numeric, step=step))


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    return fig


def log_generation_plot(client: MlflowClient, run_id: str, context: SearchContext) -> None:
    by_generation: dict[int, list[float]] = {}
    for t in all_trials(context, ()):
        if (m := ok_metric(t)) is not None:
            by_generation.setdefault(t.generation, []).append(m)
    if not by_generation:
        return
    gens = sorted(by_generation)
    fig = _figure((6.4, 4.0))
    ax = fig.add_subplot()
    # Every ok evaluation of the generation (results or not): its "max", not the "best".
    ax.plot(gens, [max(by_generation[g]) for g in gens], "o-", label="max")
    ax.plot(gens, [statistics.fmean(by_generation[g]) for g in gens], "s--", label="mean")
    _integer_ticks(ax.xaxis)
    ax.set(
        xlabel="generation",
        ylabel=f"val_{context.problem.metric}",
        title=f"{context.study.study_name}: {context.problem.metric} per generation",
    )
    ax.legend(loc="lower right")
    client.log_figure(run_id, fig, "fitness_per_generation.png", save_kwargs={"dpi": 100})


def _integer_ticks(axis: Any) -> None:
    """Ticks at whole numbers only (generations, trials: no 0.5 of one)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plottable(trial: TrialRecord) -> bool:
    # A log axis has no place for 0 FLOPs; every built network has more.
    return ok_metric(trial) is not None and (trial.result.flops or 0) > 0


def pareto_figure(trials: Sequence[TrialRecord], metric: str, name: str, budget: int = 0) -> Any:
    """``trials``' validation score against FLOPs (multiply-adds x 2, log scale): every ok trial
    grey, the Pareto front as a step line through its points, labelled with trial numbers
    (networks that only serve the tuner, ``exportable=False``, and those trained for fewer than
    ``budget`` epochs, are left out).

    The score is the error ``1 - accuracy`` when ``metric`` is ``accuracy``, else the metric
    itself (an "error" of r2 or neg_mae means nothing). ``name`` (the study) starts the title.
    """
    accuracy = metric == "accuracy"

    def score(t: TrialRecord) -> float:
        return 1.0 - t.result.fitness if accuracy else t.result.fitness

    # A network that only serves the tuner (Petridish's candidate training) is no result.
    plotted = [t for t in trials if _plottable(t) and t.is_result(budget)]
    front = pareto_front(plotted)
    fig = _figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.scatter(
        [t.result.flops for t in plotted],
        [score(t) for t in plotted],
        s=14,
        color="0.6",
        alpha=0.7,
        label="ok trials",
    )
    xs, ys = [t.result.flops for t in front], [score(t) for t in front]
    ax.step(xs, ys, where="post", color="C1", marker="o", markersize=5, label="Pareto front")
    for t, x, y in zip(front, xs, ys, strict=True):
        ax.annotate(str(t.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set(
        xlabel="FLOPs (multiply-adds x 2)",
        ylabel="val error (1 - accuracy)" if accuracy else f"val_{metric}",
        title=f"{name} ({len(plotted)} networks, {len(front)} on the Pareto front)",
    )
    ax.legend(loc="upper right" if accuracy else "lower right")
    return fig


def log_pareto_plot(
    client: MlflowClient, run_id: str, context: SearchContext, trials: Sequence[TrialRecord]
) -> None:
    """``pareto_front.png`` (:func:`pareto_figure` of ``trials``), replacing the last one."""
    if not any(_plottable(t) for t in trials):
        return
    name = context.study.study_name
    fig = pareto_figure(trials, context.problem.metric, name, context.full_budget())
    client.log_figure(run_id, fig, "pareto_front.png", save_kwargs={"dpi": 100})


def log_pareto_table(client: MlflowClient, run_id: str, context: SearchContext) -> None:
    """The search's Pareto front as the table ``pareto_front.json`` (``nasfw.pareto_rows``),
    replacing the one an earlier end of a resumed search logged; nothing if the front is
    empty."""
    front = pareto_front(all_trials(context, ()), context.full_budget())
    rows = pareto_rows(front, val_name(context))
    if not rows:
        return
    columns = list(rows[0])
    if PARETO_TABLE in {a.path for a in client.list_artifacts(run_id)}:
        # log_table would append the new front to the old one: write its format over it.
        data = [[row[c] for c in columns] for row in rows]
        client.log_dict(run_id, {"columns": columns, "data": data}, PARETO_TABLE)
    else:
        table = {c: [row[c] for row in rows] for c in columns}
        client.log_table(run_id, data=table, artifact_file=PARETO_TABLE)


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
    fig = _figure((max(4.0, 1.9 * len(columns)), max(2.5, 1.3 * height)))
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


def learning_curves_figure(trials: Sequence[TrialRecord], val: str, title: str) -> Any:
    """The validation metric by epoch of each of ``trials`` (one line each, labelled with the
    trial's number when there are few), failed trials dashed."""
    fig = _figure((6.4, 4.0))
    ax = fig.add_subplot()
    curved = [t for t in trials if t.result.curve]
    for t in curved:
        epochs = sorted(t.result.curve)
        ax.plot(
            epochs,
            [t.result.curve[e] for e in epochs],
            marker="o",
            markersize=3,
            linestyle="-" if t.result.ok else "--",
            label=f"trial {t.number}",
        )
    ax.set(xlabel="epoch", ylabel=val, title=f"{title} ({len(curved)} learning curves)")
    if 0 < len(curved) <= 12:
        ax.legend(fontsize="x-small", ncols=2)
    return fig
