"""The study fingerprint (nasfw.search.fingerprint): every setting that changes which
evaluations run or what they return is in it, so a resume with another one is refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cli import compose
from omegaconf import OmegaConf

from nasfw.ledger import Ledger, LedgerError
from nasfw.search import (
    ADDED_TO_FINGERPRINT,
    NOT_IN_FINGERPRINT,
    USED_ONLY_BY,
    fingerprint,
    fingerprint_of,
)

IRIS = ["problem=iris", "search_space=tabular_mlp", "train.epochs=1"]
FLIPPED = "<flipped>"


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf (a scalar, a list, an empty mapping) of ``node``."""
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def _flipped(full: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(full)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[last] = _other(node[last])
    return changed


def _other(value: Any) -> Any:
    """A value of the same kind as ``value``, but another."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, FLIPPED]
    if isinstance(value, dict):
        return {FLIPPED: 1}
    return FLIPPED


def _classified(path: str) -> bool:
    return any(path == k or path.startswith(f"{k}.") for k in NOT_IN_FINGERPRINT)


@pytest.mark.parametrize(
    "overrides",
    [
        [*IRIS, "tuner=tpe", "pruner=median"],
        [*IRIS, "tuner=evolution", "pruner=hyperband", "evaluation=plain"],
        ["tuner=codeepneat", "search_space=auto", "problem=iris"],
        [*IRIS, "tuner=random", "evaluation.screen=3", "tuner=petridish"],
    ],
    ids=["tpe-median", "evolution-hyperband", "codeepneat-auto", "petridish-screen"],
)
def test_every_setting_is_in_the_fingerprint_or_listed_as_not_affecting_results(overrides):
    """Each leaf of the composed config, flipped, changes the fingerprint, or is listed in
    NOT_IN_FINGERPRINT with its reason (a new setting must be classified)."""
    full = OmegaConf.to_container(compose(*overrides), resolve=True, enum_to_str=True)
    assert isinstance(full, dict)
    base = fingerprint_of(full)
    unclassified = []
    for path in _leaves(full):
        top = path.split(".")[0]
        differs = fingerprint_of(_flipped(full, path)) != base
        if _classified(path):
            assert not differs, f"{path} is listed as not affecting results but is fingerprinted"
        elif top in USED_ONLY_BY and not (
            full["search_space"]["name"] == "auto" or full["evaluation"]["screen"] > 1
        ):
            assert not differs, path
        elif not differs:
            unclassified.append(path)
    assert not unclassified, (
        f"settings neither in the fingerprint nor in NOT_IN_FINGERPRINT: {unclassified}"
    )


def test_the_not_affecting_list_says_why_and_names_real_settings():
    full = OmegaConf.to_container(compose(*IRIS), resolve=False)
    assert isinstance(full, dict)
    for key, reason in NOT_IN_FINGERPRINT.items():
        node: Any = full
        for part in key.split("."):
            assert part in node, key
            node = node[part]
        assert len(reason) > 10


def test_settings_added_later_keep_older_studies_resumable():
    """A fingerprint stored before pruner and reuse_evaluations were in it equals today's
    when they hold their defaults; another value is a difference."""
    cfg = compose(*IRIS, "tuner=tpe")
    stored = fingerprint(cfg)
    assert not set(ADDED_TO_FINGERPRINT) & set(stored)
    for override, key in (("pruner=median", "pruner"), ("reuse_evaluations=false", "reuse")):
        now = fingerprint(compose(*IRIS, "tuner=tpe", override))
        assert now != stored, override
        assert any(k.startswith(key) for k in now), override


def _killed_after_generation_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str):
    """A TPE study on iris killed just after generation 0's state was saved."""
    from nasfw.search import run_search

    url = f"sqlite:///{tmp_path / 'nasfw.db'}"
    base = [
        *IRIS,
        "tuner=tpe",
        "tuner.n_trials=4",
        "tuner.batch_size=2",
        "tuner.n_startup_trials=2",
        "launcher.workers=0",
        "tracking=none",
        "study_name=fp",
        f"storage.url={url}",
        f"storage.artifacts={tmp_path / 'art'}",
        *extra,
    ]
    save_state = Ledger.save_state

    def killed(self: Ledger, generation: int, *args: object, **kw: object) -> None:
        save_state(self, generation, *args, **kw)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "save_state", killed)
        with pytest.raises(KeyboardInterrupt):
            run_search(compose(*base), tmp_path)
    return base, url


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (["pruner=median", "pruner.n_startup_trials=1"], "pruner"),
        (["reuse_evaluations=false"], "reuse_evaluations"),
        (["tuner.group=false"], "tuner.group"),
    ],
)
def test_resuming_with_another_result_changing_setting_is_refused(
    tmp_path, monkeypatch, override, named
):
    from nasfw.search import run_search

    base, url = _killed_after_generation_0(tmp_path, monkeypatch)
    with pytest.raises(LedgerError, match=rf"{named}.*differ"):
        run_search(compose(*base, *override), tmp_path)
    assert len(Ledger(url, "fp").records()) == 2  # nothing written by the refused rerun
    # And the other way round: a study made with the setting refuses a rerun without it.
    other = tmp_path / "other"
    other.mkdir()
    base2, _ = _killed_after_generation_0(other, monkeypatch, *override)
    with pytest.raises(LedgerError, match=rf"{named}.*differ"):
        run_search(compose(*[a for a in base2 if a not in override]), other)


def test_resuming_with_settings_that_do_not_affect_results_is_accepted(tmp_path, monkeypatch):
    from nasfw.search import run_search

    base, _ = _killed_after_generation_0(tmp_path, monkeypatch)
    context = run_search(compose(*base, "train.curve_every=0", "export_dir=elsewhere"), tmp_path)
    assert len(context.history) == 4
