"""The example third-party plugin package (examples/nasfw-example-plugin), installed and used.

It is installed with ``pip --target`` into a temporary directory (a copy of it is built, so
nothing is written into the repository and this environment is not modified) and reaches the
CLI through ``PYTHONPATH`` alone: its entry point is its only link to nasfw.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import pytest
from cli import help_groups
from omegaconf import OmegaConf

from nasfw import OpSpec, Result, SearchSpace, SearchSpaceConfig
from nasfw.testing import TunerContract

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nasfw-example-plugin"
ADDED = {"tuner": "hillclimb", "problem": "moons", "search_space": "moons_mlp"}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, installed (``pip install --target``) into a temporary directory."""
    tmp = tmp_path_factory.mktemp("example")
    src = tmp / "src"
    shutil.copytree(
        EXAMPLE, src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    )
    site = tmp / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "nasfw_example" / "moons_mlp.yaml").is_file()
    return site


def nasfw_cli(
    args: list[str], site: Path, cwd: Path, disable: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m nasfw ARGS`` in ``cwd`` with the plugin on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "NASFW_DISABLE_PLUGINS"}}
    env["PYTHONPATH"] = str(site)
    if disable is not None:
        env["NASFW_DISABLE_PLUGINS"] = disable
    return subprocess.run(
        [sys.executable, "-m", "nasfw", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_not_installed_here() -> None:
    """The tests below see the plugin only through the temporary install."""
    assert importlib.util.find_spec("nasfw_example") is None


def test_help_lists_the_plugin_options(plugin_site: Path, tmp_path: Path) -> None:
    proc = nasfw_cli(["--help"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = help_groups(proc.stdout)
    for group, option in ADDED.items():
        assert option in groups[group], (group, groups)
    assert {"random", "tpe"} <= groups["tuner"]

    blocked = nasfw_cli(["--help"], plugin_site, tmp_path, disable="example")
    assert blocked.returncode == 0, blocked.stderr
    groups = help_groups(blocked.stdout)
    for group, option in ADDED.items():
        assert option not in groups[group], (group, groups)
    assert {"random", "tpe"} <= groups["tuner"]
    assert "digits" in groups["problem"]


def test_search_with_the_plugin(plugin_site: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = nasfw_cli(
        [
            "tuner=hillclimb",
            "problem=moons",
            "search_space=moons_mlp",
            "tuner.generations=2",
            "tuner.batch_size=2",
            "train.epochs=2",
            "tracking=none",
            "launcher.workers=0",
            f"storage.url={url}",
        ],
        plugin_site,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="hillclimb-moons-moons_mlp-seed0", storage=url)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.user_attrs["generation"] for t in trials] == [0, 0, 1, 1]
    # The candidates' own attrs (set by HillClimb.ask) are stored with them.
    assert [t.user_attrs["attrs"]["generation"] for t in trials] == [0, 0, 1, 1]
    assert all(0.0 <= t.value <= 1.0 for t in trials)  # accuracy on the moons validation split
    (export,) = tmp_path.glob("outputs/*/*/best_model")
    assert (export / "graph.json").is_file()


def test_plugin_config_is_typed(plugin_site: Path, tmp_path: Path) -> None:
    """The plugin's dataclass schema rejects a wrong type before anything runs."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = nasfw_cli(
        [
            "tuner=hillclimb",
            "problem=moons",
            "search_space=moons_mlp",
            "tuner.generations=abc",
            "tracking=none",
            "launcher.workers=0",
            f"storage.url={url}",
        ],
        plugin_site,
        tmp_path,
    )
    assert proc.returncode != 0
    assert "tuner.generations" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.db").exists()


# -- the tuner contract suite, run against the example's tuner ------------------------------


@pytest.fixture(scope="module")
def example(plugin_site: Path) -> Iterator[ModuleType]:
    """The installed ``nasfw_example`` module, imported without putting its directory on
    ``sys.path`` (where its entry point would reach this process's plugin registry)."""
    init = plugin_site / "nasfw_example" / "__init__.py"
    spec = importlib.util.spec_from_file_location("nasfw_example", init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nasfw_example"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("nasfw_example", None)


@pytest.fixture(scope="module")
def moons_space(example: ModuleType, ops: dict[str, OpSpec]) -> SearchSpace:
    """The search space the plugin registers (a YAML file), typed by nasfw's schema."""
    registered: dict[str, Any] = {}
    example.register_search_spaces(register=registered.__setitem__)
    assert set(registered) == {"moons_mlp"}
    cfg = OmegaConf.merge(
        OmegaConf.structured(SearchSpaceConfig), OmegaConf.load(registered["moons_mlp"])
    )
    return SearchSpace(cfg, ops)


class TestHillClimb(TunerContract):
    @pytest.fixture
    def make_tuner(self, example: ModuleType, moons_space: SearchSpace) -> Callable[[int], Any]:
        config = example.HillClimbConfig(generations=3, batch_size=2)
        return lambda seed: example.HillClimb(config, moons_space, seed)

    def test_generations_and_batches(self, make_tuner: Callable[[int], Any]) -> None:
        assert [len(g) for g in self.run(make_tuner(0))] == [2, 2, 2]

    def test_later_generations_mutate_the_best(self, make_tuner: Callable[[int], Any]) -> None:
        tuner = make_tuner(0)
        first = tuner.ask()
        tuner.tell(first, [Result(status="ok", metric=m) for m in (0.2, 0.9)])
        assert tuner.best == (0.9, first[1].graph.to_json())
        for candidate in tuner.ask():
            tuner.space.check(candidate.graph)
            assert candidate.attrs == {"generation": 1}
