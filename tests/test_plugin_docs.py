"""docs/plugins.md taken at its word: its files become a package that is installed and run.

The blocks titled with a file name (```python title="myplugin/climb.py"```) are written out as
``nasfw-myplugin``, installed with ``pip --target`` into a temporary directory as
tests/test_examples.py installs the example plugin, and reach nasfw through ``PYTHONPATH``
alone (their entry points). The CLI then runs the page's own command line, and pytest runs
the page's test module. Also here: every hook is in the page with its arguments, and the
docs tooling (scripts/docs_hooks.py, scripts/docs_griffe.py) does what mkdocs.yml uses it for.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import optuna
import pytest

from nasfw import hookspecs

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
FILES = {
    "pyproject.toml",
    "myplugin/__init__.py",
    "myplugin/climb.py",
    "myplugin/threshold.py",
    "myplugin/blobs.py",
    "myplugin/trial_csv.py",
}
TEST_FILE = "tests/test_climb.py"


def doc_files() -> dict[str, str]:
    """The page's files: title -> content."""
    return dict(FILE_BLOCK.findall(DOC.read_text()))


def doc_command() -> list[str]:
    """The arguments of the page's ``python -m nasfw tuner=climb ...`` command line."""
    (line,) = re.findall(r"^python -m nasfw tuner=climb .*$", DOC.read_text(), re.MULTILINE)
    return shlex.split(line)[3:]


def test_the_page_has_the_whole_package() -> None:
    assert set(doc_files()) == {*FILES, TEST_FILE}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's package, written out from its blocks (tests included)."""
    src = tmp_path_factory.mktemp("docs") / "nasfw-myplugin"
    for name, text in doc_files().items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


@pytest.fixture(scope="module")
def site(package: Path) -> Path:
    """The package installed (``pip install --target``) into a temporary directory."""
    target = package.parent / "site"
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
            str(target),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def run(
    args: list[str], site: Path | None, cwd: Path, disable: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd`` with the installed package (if any) in front of
    ``PYTHONPATH``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "NASFW_DISABLE_PLUGINS" and not k.startswith("PYTEST_")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site) if site else None, env.get("PYTHONPATH")])
    )
    if disable is not None:
        env["NASFW_DISABLE_PLUGINS"] = disable
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_not_installed_here() -> None:
    """The tests below see the package only through the temporary install."""
    assert importlib.util.find_spec("myplugin") is None


def test_the_pages_command_runs_the_tuner_and_writes_the_csv(site: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = doc_command()
    assert "plugins.trial_csv.path=trials.csv" in args
    quick = [
        "tuner.generations=2",
        "tuner.batch_size=2",
        "train.epochs=1",
        "launcher.workers=0",
        "tracking=none",
        f"storage.url={url}",
    ]
    proc = run(["-m", "nasfw", *args, *quick], site, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="climb-iris-tabular_mlp-seed0", storage=url)
    trials = sorted(study.trials, key=lambda t: t.number)
    # The tuner ran: two generations of two, the second mutating the first's best.
    assert [t.user_attrs["attrs"]["climb_generation"] for t in trials] == [0, 0, 1, 1]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    with (tmp_path / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [t.number for t in trials]
    assert [r["generation"] for r in rows] == ["0", "0", "1", "1"]
    assert all(r["status"] == "ok" and r["error"] == "" for r in rows)
    # The metric column: plugins.trial_csv.digits (4) decimal places of the trial's value.
    assert [r["metric"] for r in rows] == [f"{t.value:.4f}" for t in trials]


def test_the_pages_problem_is_searched(site: Path, tmp_path: Path) -> None:
    (line,) = re.findall(r"`(python -m nasfw tuner=climb problem=blobs [^`]*)`", DOC.read_text())
    url = f"sqlite:///{tmp_path / 's.db'}"
    quick = ["tuner.generations=1", "train.epochs=3", "launcher.workers=0", "tracking=none"]
    proc = run(
        ["-m", "nasfw", *shlex.split(line)[3:], *quick, f"storage.url={url}"], site, tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="climb-blobs-tabular_mlp-seed0", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert max(t.value for t in study.trials) > 0.5  # three blobs: chance is 1/3
    # The loader's own refusal names the key, before any training.
    proc = run(
        ["-m", "nasfw", *shlex.split(line)[3:], "problem.n_samples=12", *quick], site, tmp_path
    )
    assert proc.returncode == 2
    assert "problem.n_samples=12: blobs needs at least 30 points" in proc.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("plugins.trial_csv.digits=-1", "plugins.trial_csv.digits=-1 is out of range"),
        ("plugins.trial_csv.digits=many", "plugins.trial_csv.digits"),
        ("plugins.trial_csv.dgits=2", "plugins.trial_csv.dgits"),
        ("plugins.trial_csv.path=.", "plugins.trial_csv.path=. is a directory; name a file"),
    ],
)
def test_the_pages_config_node_is_checked(
    site: Path, tmp_path: Path, override: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = [a for a in doc_command() if not a.startswith("plugins.")]
    proc = run(
        ["-m", "nasfw", *base, override, "tracking=none", f"storage.url={url}"], site, tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "s.db").exists()  # refused before the study was created


def test_blocking_the_csv_writer_names_it(site: Path, tmp_path: Path) -> None:
    proc = run(["-m", "nasfw", *doc_command(), "tracking=none"], site, tmp_path, "trial_csv")
    assert proc.returncode == 2
    assert (
        "nasfw: note: plugins.trial_csv is not available because "
        "NASFW_DISABLE_PLUGINS=trial_csv blocks plugin 'trial_csv', which provides it"
    ) in proc.stderr, proc.stderr[-3000:]


def test_the_pages_pruner_stops_networks_where_they_train(site: Path, tmp_path: Path) -> None:
    """pruner=threshold above any accuracy: every network stops after its first epoch, a
    PRUNED trial. The worker process finds the pruner through the entry point, as the CLI."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = [a for a in doc_command() if not a.startswith("plugins.")]
    quick = [
        "tuner.generations=1",
        "tuner.batch_size=2",
        "train.epochs=3",
        "launcher.workers=1",
        "tracking=none",
        f"storage.url={url}",
    ]
    proc = run(["-m", "nasfw", *base, "pruner=threshold", "pruner.lower=2", *quick], site, tmp_path)
    # No network trained to the end, so there is no best one to export.
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trained successfully (2x pruned)" in proc.stderr, proc.stderr[-3000:]
    study = optuna.load_study(study_name="climb-iris-tabular_mlp-seed0", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for t in study.trials:
        assert list(t.intermediate_values) == [1] and t.user_attrs["epochs"] == 1
        assert t.value == t.intermediate_values[1] < 2

    blocked = run(["-m", "nasfw", *base, "pruner=threshold", *quick], site, tmp_path, "myplugin")
    assert blocked.returncode == 2
    assert (
        "nasfw: note: pruner=threshold is not available because NASFW_DISABLE_PLUGINS=myplugin "
        "blocks plugin 'myplugin', which provides it"
    ) in blocked.stderr, blocked.stderr[-3000:]


def test_the_pages_tests_pass(site: Path, package: Path) -> None:
    """The page's test module, run by pytest as the plugin's author runs it: the contract
    suite's ``space`` fixture comes from nasfw's pytest plugin."""
    proc = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_FILE], site, package)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Tuner 6, pruner 3, problem 5, lifecycle 4, and the page's own 2.
    assert re.search(r"^20 passed", proc.stdout, re.MULTILINE), proc.stdout[-3000:]


def test_the_testing_modules_example_runs_as_written(tmp_path: Path) -> None:
    import nasfw.testing

    doc = nasfw.testing.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1].split("\n\n``space``", 1)[0])
    (tmp_path / "test_example.py").write_text(example)
    proc = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"], None, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^6 passed", proc.stdout, re.MULTILINE), proc.stdout[-3000:]


def test_every_hook_is_on_the_page_with_its_arguments() -> None:
    text = DOC.read_text()
    hooks = [
        (name, spec)
        for name, spec in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(spec, "nasfw_spec")
    ]
    assert {"register_tuners", "nasfw_trial_complete"} <= {name for name, _ in hooks}
    for name, spec in hooks:
        call = f"`{name}({', '.join(inspect.signature(spec).parameters)})`"
        assert f"| {call} |" in text, call


# -- the docs tooling --------------------------------------------------------------------


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_page_gets_every_public_name() -> None:
    import nasfw

    hooks = load_script("docs_hooks")
    page = f"# API\n\n::: nasfw.Tuner\n\n{hooks.MARKER}\n"
    out = hooks.on_page_markdown(page, page=None, config=None, files=None)
    assert hooks.MARKER not in out
    added = re.findall(r"^::: nasfw\.(\w+)$", out, re.MULTILINE)
    assert sorted(added) == sorted(nasfw.__all__) and added.count("Tuner") == 1
    api = (REPO / "docs" / "reference" / "api.md").read_text()
    assert hooks.MARKER in api


def test_field_comments_become_docstrings_and_roles_code(tmp_path: Path) -> None:
    import griffe  # mkdocstrings[python]'s, a dev dependency: missing, this test fails

    (tmp_path / "schema_demo.py").write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass


            @dataclass
            class Demo:
                """Checked by :func:`nasfw.check_settings`, see :class:`~nasfw.Tuner`."""

                # Facts logged as trial_<key>, see `<key>`;
                # two lines.
                extra: dict = None
                plain: int = 0
            '''
        )
    )
    extension = load_script("docs_griffe").CommentsAndRoles()
    module = griffe.load(
        "schema_demo", search_paths=[str(tmp_path)], extensions=griffe.load_extensions(extension)
    )
    demo = module["Demo"]
    assert demo.docstring.value == "Checked by `nasfw.check_settings`, see `nasfw.Tuner`."
    assert (
        demo["extra"].docstring.value == "Facts logged as trial_&lt;key>, see `<key>`; two lines."
    )
    assert demo["plain"].docstring is None


def test_the_api_reference_gives_task_modality_values_and_split_dtypes() -> None:
    """What a problem's author must return, as the API reference renders it (through the
    docs' griffe extension): every value of ``Task`` and ``Modality``, and the dtypes and
    shapes of ``Split.x``/``Split.y``."""
    from typing import get_args

    import griffe  # mkdocstrings[python]'s, a dev dependency: missing, this test fails

    from nasfw.problem import Modality, Task

    extension = load_script("docs_griffe").CommentsAndRoles()
    module = griffe.load(
        "nasfw.problem",
        search_paths=[str(REPO)],
        extensions=griffe.load_extensions(extension),
    )
    problem = module["Problem"]
    for field, values in (("task", get_args(Task)), ("modality", get_args(Modality))):
        text = problem[field].docstring.value
        assert all(f'"{value}"' in text for value in values), (field, text)
    split = module["Split"].docstring.value
    assert all(word in split for word in ("float32", "int64", "(n, *input_shape)", "(n,)"))
