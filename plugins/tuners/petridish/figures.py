"""Petridish's figures for trackers: the hull round by round, and one round's alphas."""

from __future__ import annotations

from typing import Any

from .hull import lower_hull


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    return fig


def hull_figure(pool: list[dict[str, Any]]) -> Any:
    """Every pool model (FLOPs, val error) and the lower convex hull after each round (the
    models made up to that round), later rounds darker. ``pool``: ``Member.to_dict`` rows."""
    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot()
    ax.scatter([m["flops"] for m in pool], [m["error"] for m in pool], c="0.7", s=14)
    last = max(m["born"] for m in pool)
    for k in range(last + 1):
        upto = [m for m in pool if m["born"] <= k]
        points = [(m["flops"], m["error"]) for m in upto]
        hull = [points[i] for i in lower_hull(points)]
        shade = str(0.75 - 0.75 * (k + 1) / (last + 1))
        ax.plot(*zip(*hull, strict=True), marker="o", color=shade, label=f"round {k}")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs (log)")
    ax.set_ylabel("val error (1 - metric)")
    ax.set_title(f"Petridish: lower hull per round ({len(pool)} models in the pool)")
    ax.legend(fontsize="small")
    return fig


def alphas_figure(entry: dict[str, Any]) -> Any:
    """One bar chart per candidate training of a round: each candidate's trained alpha, the
    ones kept for the child in orange. ``entry``: one of the tuner's round log entries."""
    searches = [s for s in entry["searches"] if s.get("alphas")]
    fig = _figure((7.0, 1.0 + 2.2 * max(len(searches), 1)))
    for row, search in enumerate(searches):
        ax = fig.add_subplot(len(searches), 1, row + 1)
        chosen = set(search.get("chosen") or [])
        colors = ["tab:orange" if j in chosen else "tab:blue" for j in range(len(search["alphas"]))]
        ax.bar(range(len(search["alphas"])), search["alphas"], color=colors)
        ax.set_xticks(range(len(search["candidates"])), search["candidates"], rotation=90)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_ylabel("alpha")
        ax.set_title(f"round {entry['round']}: parent {search['parent']} at {search['target']}")
    return fig
