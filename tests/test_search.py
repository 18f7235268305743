"""The search loop's own rules (nasfw/search.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasfw import ArchGraph, Candidate, Node, Result, SearchContext, TrialRecord


def _record(number: int, generation: int, index: int, metric: float | None) -> TrialRecord:
    graph = ArchGraph([Node(f"n{number}", "dense", {"units": 8}, ("input",))], f"n{number}")
    result = Result(status="ok", metric=metric) if metric is not None else Result.failed("x")
    return TrialRecord(number, generation, index, Candidate(graph), result)


def test_ties_go_to_the_earliest_candidate_not_the_first_to_finish():
    # Two workers: candidate (1, 2) finished before (1, 0), so trial numbers say nothing.
    history = [
        _record(0, 0, 0, 0.5),
        _record(1, 0, 1, None),
        _record(2, 1, 2, 0.9),
        _record(3, 1, 0, 0.9),
        _record(4, 1, 1, 0.7),
        _record(5, 2, 0, 0.9),
    ]
    context = SearchContext(None, None, None, None, None, None, history=history)  # type: ignore[arg-type]
    best = context.best()
    assert best is not None and (best.generation, best.index) == (1, 0)
    context.history = history[::-1]  # the order the records arrive in does not matter either
    assert context.best() is best
    context.history = [history[1]]
    assert context.best() is None


def _at(number: int, metric: float, budget: int, status: str = "ok") -> TrialRecord:
    record = _record(number, 0, number, metric)
    record.result = Result(status=status, metric=metric, epochs=budget)  # type: ignore[arg-type]
    return record


def test_the_best_is_chosen_among_networks_trained_to_the_full_budget():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"train": {"epochs": 3}})
    early = [_at(0, 0.95, 1), _at(1, 0.99, 2, status="pruned")]
    context = SearchContext(cfg, None, None, None, None, None, history=early)  # type: ignore[arg-type]
    # Before any network reaches 3 epochs, the largest budget reached is the full one.
    assert context.full_budget() == 1 and context.best() is early[0]
    context.history = [*early, _at(2, 0.80, 3)]
    assert context.full_budget() == 3 and context.best() is context.history[2]
    # Budget counts the epochs of the weights a network continued from.
    continued = _at(3, 0.90, 1)
    continued.result.budget = 3
    context.history.append(continued)
    assert context.best() is continued


def test_the_running_figures_follow_a_growing_history_as_a_full_scan_does():
    """best(), full_budget(), simulated_total(), last_number(), by_key(), records_of() are
    kept up to date as the history grows (one record at a time, or several) and start again
    when it is replaced: always what a scan of the whole history gives."""
    import random

    from omegaconf import OmegaConf

    rng = random.Random(0)
    cfg = OmegaConf.create({"train": {"epochs": 3}})
    context = SearchContext(cfg, None, None, None, None, None, history=[])  # type: ignore[arg-type]

    def scan() -> tuple[object, ...]:
        h = context.history
        ok = [t for t in h if t.result.ok and t.exportable]
        full = min(3, max((t.result.trained_budget for t in ok), default=0))
        top = [t for t in ok if t.result.trained_budget >= full]
        simulated = [
            t for t in h if t.result.extra.get("clock") == "simulated"
            and "reused_from" not in t.result.extra
        ]  # fmt: skip
        return (
            max(top, key=lambda t: t.rank) if top else None,
            full,
            sum(t.result.train_seconds for t in simulated),
            sum(t.result.train_seconds for t in simulated if t.generation <= 2),
            max((t.number for t in h), default=-1),
            {t.key: t for t in h},
            [t for t in h if t.generation == 2],
        )

    def figures() -> tuple[object, ...]:
        return (
            context.best(), context.full_budget(), context.simulated_total(),
            context.simulated_total(2), context.last_number(), context.by_key(),
            context.records_of(2),
        )  # fmt: skip

    assert figures() == scan()
    number = 0
    for generation in range(8):
        for _ in range(rng.randint(1, 4)):
            record = _at(number, round(rng.random(), 1), rng.choice([1, 2, 3]),
                         rng.choice(["ok", "ok", "pruned", "failed"]))  # fmt: skip
            record.generation = generation
            record.result.train_seconds = rng.random()
            record.result.extra = {"clock": "simulated"}
            if rng.random() < 0.3:
                record.result.extra["reused_from"] = 0
            context.history.append(record)
            number += rng.randint(1, 3)
            if rng.random() < 0.5:
                assert figures() == scan()
        assert figures() == scan()
    context.history = context.history[::2]  # another list: counted again
    assert figures() == scan()


def test_with_several_workers_the_costliest_networks_start_first(tmp_path, monkeypatch):
    """A generation ends with its slowest network: the launcher gets them longest-first (FLOPs
    x epochs), and the generation's worker utilisation is busy / (workers x wall)."""
    from cli import compose

    from nasfw.generation import cost_estimates
    from nasfw.launchers.local import LocalLauncher
    from nasfw.search import run_search

    handed: list[str] = []  # the networks in the order the launcher got them
    original_map = LocalLauncher.map

    def map_recording(self, fn, items, on_result=None):
        handed.extend((item[1] if isinstance(item, tuple) else item).key for item in items)
        return original_map(self, fn, items, on_result)

    monkeypatch.setattr(LocalLauncher, "map", map_recording)
    cfg = compose(
        "problem=iris",
        "search_space=tabular_mlp",
        "tuner=random",
        "tuner.n_trials=6",
        "tuner.batch_size=6",
        "train.epochs=1",
        "launcher.workers=2",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"storage.url=sqlite:///{tmp_path / 'nasfw.db'}",
    )
    context = run_search(cfg, tmp_path)
    records = sorted(context.history, key=lambda t: t.index)
    epochs = context.cfg.train.epochs
    candidates = [Candidate(r.graph) for r in records]
    cost = cost_estimates(context.problem, epochs, candidates)
    assert len(set(cost)) == 6  # distinct, so the order is the estimate's
    # Which worker starts first is the operating system's choice (trials of a few ms on a
    # busy machine finish out of order); the order the launcher is handed them is ours.
    longest_first = sorted(range(6), key=lambda i: -cost[i])
    assert handed == [candidates[i].key for i in longest_first]
    assert context.workers == 2
    utilisation = context.worker_utilisation(0)
    busy = sum(r.result.finished - r.result.started for r in records)
    assert utilisation == pytest.approx(busy / (2 * context.generation_seconds[0]))
    assert 0 < utilisation <= 1
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    generation = next(r for r in runs if r.data.tags.get("nasfw.generation") == "0")
    assert generation.data.metrics["worker_utilisation"] == pytest.approx(utilisation)


def test_a_study_written_by_nasfw_0_1_resumes(tmp_path):
    """tests/data/study_written_by_0.1.db: a search run by the layout before the search's
    redesign (one generation of random search on iris, then Ctrl-C). Resumed now, it keeps
    its fingerprint, its two trials and its tuner state, and ends as an uninterrupted search
    of today's code does."""
    import shutil

    from cli import TINY, nasfw, trials

    args = [
        *[a for a in TINY if not a.startswith(("tuner.n_trials", "tuner.batch_size"))],
        "tuner.n_trials=6",
        "tuner.batch_size=2",
        "study_name=old-layout",
        "storage.artifacts=art",
    ]
    shutil.copy(Path(__file__).parent / "data" / "study_written_by_0.1.db", tmp_path / "old.db")
    before = trials("sqlite:///" + str(tmp_path / "old.db"), "old-layout")
    assert len(before) == 2
    resumed = nasfw(tmp_path, *args, "storage.url=sqlite:///old.db")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming study old-layout after generation 0 (2 evaluations on record)" in " ".join(
        resumed.stderr.split()
    )
    fresh = nasfw(tmp_path, *args, "storage.url=sqlite:///new.db")
    assert fresh.returncode == 0, fresh.stderr

    def evaluations(db: str) -> list[tuple[int, int, str, float | None]]:
        found = trials(f"sqlite:///{tmp_path / db}", "old-layout")
        return sorted(
            (t.user_attrs["generation"], t.user_attrs["index"], t.user_attrs["graph_hash"], t.value)
            for t in found
        )

    after = evaluations("old.db")
    assert len(after) == 6
    assert [t.number for t in trials(f"sqlite:///{tmp_path / 'old.db'}", "old-layout")][:2] == [
        t.number for t in before
    ]
    assert after == evaluations("new.db")


def test_the_workers_are_released_before_the_export_retrains(tmp_path, monkeypatch):
    """The export retrains the best network in the driver: the launcher is closed first, so
    the export has the machine's cores and depends on no worker or cluster (a Ray head lost
    during the export cannot end the search)."""
    from cli import compose

    import nasfw.search as search_module
    from nasfw.launchers.local import LocalLauncher
    from nasfw.search import run_search

    events: list[str] = []
    export, close = search_module.export, LocalLauncher.close

    def exporting(search):
        events.append("export")
        return export(search)

    def closing(launcher):
        events.append("close")
        close(launcher)

    monkeypatch.setattr(search_module, "export", exporting)
    monkeypatch.setattr(LocalLauncher, "close", closing)
    cfg = compose(
        "problem=iris",
        "search_space=tabular_mlp",
        "tuner=random",
        "tuner.n_trials=2",
        "train.epochs=1",
        "launcher.workers=1",
        "tracking=none",
        f"storage.url=sqlite:///{tmp_path / 's.db'}",
    )
    context = run_search(cfg, tmp_path)
    assert len(context.history) == 2
    assert events == ["close", "export"]
