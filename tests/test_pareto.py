"""The validation metric x FLOPs Pareto front: which trials, its file and the CLI's table."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nasfw import ArchGraph, Candidate, Node, Result, TrialRecord, pareto_front, pareto_rows
from nasfw.pareto import FILENAME, front_path, write_front

GRAPH = ArchGraph([Node("d0", "dense", {"units": 8})], output="d0")


def trial(number: int, metric: float | None, flops: int | None, ok: bool = True) -> TrialRecord:
    result = (
        Result("ok", metric=metric, flops=flops, n_params=10 * number + 1)
        if ok
        else Result.failed("diverged", metric=metric, flops=flops)
    )
    return TrialRecord(number, number // 3, number % 3, Candidate(GRAPH), result)


def numbers(records: list[TrialRecord]) -> list[int]:
    return [r.number for r in records]


def test_dominated_points_are_dropped_and_the_front_is_cheapest_first() -> None:
    records = [
        trial(0, 0.80, 5000),
        trial(1, 0.60, 1000),
        trial(2, 0.70, 3000),
        trial(3, 0.65, 4000),  # worse and dearer than 2
        trial(4, 0.90, 9000),
        trial(5, 0.55, 2000),  # worse and dearer than 1
    ]
    front = pareto_front(records)
    assert numbers(front) == [1, 2, 0, 4]
    assert [r.result.flops for r in front] == [1000, 3000, 5000, 9000]


def test_ties() -> None:
    records = [
        trial(7, 0.9, 2000),  # a later duplicate of 3, listed first
        trial(3, 0.9, 2000),
        trial(5, 0.9, 2000),
        trial(4, 0.8, 2000),  # same FLOPs, lower metric: dominated by 3
        trial(6, 0.9, 2500),  # same metric, more FLOPs: dominated by 3
        trial(8, 0.7, 1000),
    ]
    assert numbers(pareto_front(records)) == [8, 3]


def test_failed_trials_and_trials_without_metric_or_flops_take_no_part() -> None:
    records = [
        trial(0, 0.99, 10, ok=False),  # would dominate everything
        trial(1, 0.95, None),
        trial(2, None, 100),
        trial(3, float("nan"), 100),
        trial(4, 0.5, 1000),
        trial(5, 0.6, 2000),
    ]
    # a network that only serves the tuner (Petridish's candidate training) is not a result
    internal = trial(6, 0.99, 10)
    internal.candidate.exportable = False
    records.append(internal)
    assert numbers(pareto_front(records)) == [4, 5]


def test_empty_input() -> None:
    assert pareto_front([]) == []
    assert pareto_front(iter([trial(0, None, None, ok=False)])) == []
    assert pareto_rows([], "val_accuracy") == []


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    ma, mb, fa, fb = a.result.metric, b.result.metric, a.result.flops, b.result.flops
    assert ma is not None and mb is not None and fa is not None and fb is not None
    return ma >= mb and fa <= fb and (ma > mb or fa < fb)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 6)), max_size=25), st.randoms())
def test_matches_the_definition(points: list[tuple[int, int]], rng: random.Random) -> None:
    records = [trial(n, m / 5, f * 100) for n, (m, f) in enumerate(points)]
    rng.shuffle(records)  # the input order plays no part
    expected = [
        r
        for r in records
        if not any(dominates(o, r) for o in records)
        # Of exact duplicates, the lowest trial number.
        and not any(
            o.number < r.number
            and (o.result.metric, o.result.flops) == (r.result.metric, r.result.flops)
            for o in records
        )
    ]
    front = pareto_front(records)
    assert sorted(numbers(front)) == sorted(numbers(expected))
    assert [r.result.flops for r in front] == sorted(r.result.flops for r in front)


def context(tmp_path: Path, records: list[TrialRecord], metric: str = "accuracy") -> Any:
    """What write_front and the CLI summary read of a search's context."""
    cfg = OmegaConf.create(
        {
            "study_name": "s",
            "storage": {"url": "sqlite:///s.db"},
            "tracking": {"name": "none"},
        }
    )
    problem = SimpleNamespace(metric=metric, table=None)
    return SimpleNamespace(
        cfg=cfg,
        problem=problem,
        history=records,
        export_dir=None,
        output_dir=tmp_path,
        best=lambda: max((r for r in records if r.result.ok), key=lambda r: r.rank, default=None),
        full_budget=lambda: 0,
        simulated_seconds={},
        postproc_report=[],
    )


def test_the_front_is_written_beside_the_exported_model(tmp_path: Path) -> None:
    records = [trial(0, 0.5, 1000), trial(1, 0.4, 2000), trial(2, 0.75, 3000, ok=False)]
    ctx = context(tmp_path, records, metric="r2")
    assert write_front(ctx) == tmp_path / FILENAME  # nothing exported: the output directory
    ctx.export_dir = tmp_path / "best_model"
    path = write_front(ctx)
    assert path == front_path(ctx) == tmp_path / "best_model" / FILENAME
    assert json.loads(path.read_text()) == [
        {
            "trial": 0,
            "generation": 0,
            "metric": "val_r2",
            "value": 0.5,
            "flops": 1000,
            "n_params": 1,
            "graph_hash": GRAPH.hash,
        }
    ]


def test_summary_prints_the_pareto_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasfw.cli import _summary

    records = [trial(0, 0.5, 1200), trial(1, 0.4, 2000), trial(4, 0.75, 3_400_000)]
    ctx = context(tmp_path, records)
    write_front(ctx)
    _summary(ctx)
    out = capsys.readouterr().out
    table = out[out.index("Pareto front (val accuracy vs FLOPs)") : out.index("Pareto front: ")]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines()[1:]]
    # trial, gen, val accuracy, FLOPs (exact), params; trial 1 is dominated by trial 0.
    assert [row for row in rows if row] == [
        ["0", "0", "0.5000", "1,200", "1"],
        ["4", "1", "0.7500", "3,400,000", "41"],
    ]
    assert f"Pareto front: {tmp_path / FILENAME}" in out.replace("\n", "")


def test_summary_without_a_front_prints_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasfw.cli import _summary

    _summary(context(tmp_path, [trial(0, None, None, ok=False)]))
    assert "Pareto" not in capsys.readouterr().out
