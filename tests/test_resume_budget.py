"""A resumed search ends at its budget, counted from the study's stored evaluations (#25 fault
2): killed at any moment (mid-generation, just after a generation's state was saved), every
asynchronous tuner ends with exactly ``tuner.n_trials`` evaluations, none stored twice."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cli import compose, nasfw, start, wait_for_trials

from nasfw import asynchronous as asynchronous_loop
from nasfw.ledger import CHECKPOINT_ATTR, STATE_ATTR, Ledger

IRIS = ["problem=iris", "search_space=tabular_mlp", "train.epochs=1", "tracking=none"]
TUNERS = {
    "random": ["tuner=random"],
    "evolution": ["tuner=evolution", "tuner.population_size=4", "tuner.sample_size=2"],
    "tpe": ["tuner=tpe", "tuner.n_startup_trials=4"],
}
BUDGET = ["tuner.n_trials=12", "tuner.batch_size=2"]


def _told(name: str, state: dict) -> int:
    return {"random": lambda s: s["told"] or s["asked"], "evolution": lambda s: s["evaluated"]}.get(
        name, lambda s: len(s["told"])
    )(state)


def _check(url: str, study: str, tuner: str) -> None:
    records = Ledger(url, study).records()
    places = Counter((r.generation, r.index) for r in records)
    assert len(records) == 12, sorted(places)
    assert max(places.values()) == 1, places  # no evaluation stored twice
    generation, state = Ledger(url, study).load_state()
    assert _told(tuner, state) == 12
    assert generation == max(g for g, _ in places)


@pytest.mark.parametrize("tuner", sorted(TUNERS))
@pytest.mark.parametrize("asynchronous", [True, False], ids=["async", "sync"])
def test_a_search_killed_three_times_ends_at_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuner: str, asynchronous: bool
) -> None:
    """Killed at 3 stored trials, just after a generation's state was saved, and at 9 stored
    trials; the fourth run ends the search at exactly 12 evaluations."""
    from nasfw import generation as gen
    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    cfg = compose(
        *IRIS,
        *TUNERS[tuner],
        *BUDGET,
        f"tuner.asynchronous={str(asynchronous).lower()}",
        "launcher.workers=0",
        "study_name=killed",
        f"storage.url={url}",
        f"storage.artifacts={tmp_path / 'art'}",
    )
    record_result, set_attr = gen.record_result, Ledger._set

    def killed_at(count: int):
        def record(search, *args, **kw):
            stored = record_result(search, *args, **kw)
            if len(search.context.history) == count:
                raise KeyboardInterrupt
            return stored

        return record

    def killed_after_save(self: Ledger, key: str, value: object) -> None:
        # Right after the tuner's state is written (before any write that follows it).
        set_attr(self, key, value)
        if key in (CHECKPOINT_ATTR, STATE_ATTR) and self.load_state()[0] >= 1:
            raise KeyboardInterrupt

    for kill in (killed_at(3), None, killed_at(9)):
        with monkeypatch.context() as patch:
            if kill is None:
                patch.setattr(Ledger, "_set", killed_after_save)
            else:
                patch.setattr(asynchronous_loop, "record_result", kill)
                patch.setattr(gen, "record_result", kill)
            with pytest.raises(KeyboardInterrupt):
                run_search(cfg, tmp_path)
    context = run_search(cfg, tmp_path)
    assert len(context.history) == 12
    _check(url, "killed", tuner)


def test_an_asynchronous_search_killed_with_sigkill_resumes_to_its_budget(tmp_path: Path) -> None:
    """The issue's input, real processes: evolution, two workers, SIGKILL to the driver's
    group at 3 and at 9 stored trials; the rerun ends at 12 evaluations."""
    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    args = [
        *IRIS,
        *TUNERS["evolution"],
        *BUDGET,
        "tuner.asynchronous=true",
        "launcher.workers=2",
        "study_name=sigkill",
        f"storage.url={url}",
    ]
    for count in (3, 9):
        proc = start(tmp_path, *args)
        try:
            wait_for_trials(url, "sigkill", count, proc)
        finally:
            import os

            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        time.sleep(0.5)
    done = nasfw(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    _check(url, "sigkill", "evolution")
