"""The wheel: what it contains, a search run by nasfw installed from it alone, and an install
into a venv with a newer torch, which pip keeps.

The wheel is built from a copy of the source tree (so nothing is written into the repository and
no stale ``build/`` output can leak into it), installed with ``--no-deps`` into a fresh virtual
environment, and run from a directory outside the repository. The dependencies (torch, optuna,
...) come from this test's own environment through a ``.pth`` line: a directory added that way
has its own ``.pth`` files ignored, so the editable install of nasfw there stays inactive and
``nasfw`` can only be imported from the wheel.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[1]
# Not part of the source tree: build outputs, environments, caches, run outputs.
NOT_SOURCE = (
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "outputs",
    "multirun",
    "mlruns",
    "mlartifacts",
    "*.db",
)


def clean_env() -> dict[str, str]:
    """The environment for the fresh venv's processes, free of this one's path settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NASFW_DISABLE_PLUGINS"}
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's working tree, without build outputs."""
    src = tmp_path_factory.mktemp("src") / "nasfw"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return src


@pytest.fixture(scope="module")
def built(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what its build printed (``-v``: the build backend's own output)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("nasfw-*.whl")
    return whl, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


def test_the_build_prints_no_warning_of_the_projects_own(built: tuple[Path, str]) -> None:
    """setuptools says nothing about nasfw's packaging: no "Package would be ignored" block
    for a conf/ folder left out of ``packages`` (six of them, ~120 lines, at every install)."""
    log = built[1]
    assert "nasfw-" in log  # the backend's output is there to be read
    lines = log.splitlines()
    warnings = [line for line in lines if "Warning" in line or "would be ignored" in line]
    assert warnings == []


def test_wheel_contents(wheel: Path, source: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    for required in (
        "nasfw/conf/config.yaml",
        "nasfw/conf/search_space/image_small.yaml",
        "nasfw/plugins/tuners/tpe.py",
        "nasfw/launchers/local.py",
        "nasfw/py.typed",
        "nasfw/cli.py",
    ):
        assert required in names, f"{required} is not in {wheel.name}"
    # Every config file, plugin and launcher of the source tree ships (a YAML file nested
    # deeper than the package-data globs reach would be missing here).
    expected = {f"nasfw/{p.relative_to(source)}" for p in (source / "conf").rglob("*.yaml")}
    for folder in ("plugins", "launchers"):
        expected |= {f"nasfw/{folder}/{p.name}" for p in (source / folder).glob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    # Nothing of the tests, examples or benchmarks, and no top-level package but nasfw.
    assert {n.split("/")[0] for n in names} == {"nasfw", dist_info}

    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    parser.read_string(entry_points)
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    assert dict(parser["nasfw"]) == project["entry-points"]["nasfw"]
    assert {"tpe", "random", "local", "ops", "problems"} <= set(parser["nasfw"])
    assert parser["console_scripts"]["nasfw"] == "nasfw.cli:main"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; dependencies visible through a ``.pth`` line."""
    root = tmp_path_factory.mktemp("venv") / "fresh"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout.strip()
    assert Path(site).is_relative_to(root)
    # Install before the dependencies become visible: pip then sees no other nasfw (this
    # environment has its editable install) that it could skip for, or try to uninstall.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # This environment's site-packages: torch, optuna, hydra, ...
    Path(site, "_nasfw_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_installed_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    probe = """
import importlib.metadata as md, importlib.resources as res, json
import nasfw, nasfw.conf, nasfw.plugins.tuners.tpe, nasfw.launchers.local
dist = md.distribution("nasfw")
print(json.dumps({
    "modules": [m.__file__ for m in
                (nasfw, nasfw.conf, nasfw.plugins.tuners.tpe, nasfw.launchers.local)],
    "dist": str(dist.locate_file("")),
    "config": res.files("nasfw.conf").joinpath("config.yaml").is_file(),
    "entry_points": sorted(ep.name for ep in md.entry_points(group="nasfw")),
}))
"""
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    for path in [*found["modules"], found["dist"]]:
        assert Path(path).resolve().is_relative_to(venv.resolve()), path
    assert found["config"]
    assert {"tpe", "random", "local", "ops", "problems"} <= set(found["entry_points"])


def test_search_with_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """The console script runs a one-trial search outside the repository and exports the best."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    script = venv / "bin" / "nasfw"
    assert script.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}"
    proc = subprocess.run(
        [
            str(script),
            "tuner=random",
            "tuner.n_trials=1",
            "tuner.batch_size=1",
            "train.epochs=1",
            "tracking=none",
            "launcher.workers=1",
            f"storage.url={url}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    study = optuna.load_study(study_name="random-digits-image_small-seed0", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    # Hydra's output directory is relative to the working directory: outputs/<date>/<time>.
    (export,) = tmp_path.glob("outputs/*/*/best_model")
    for name in ("graph.json", "state_dict.pt", "summary.json"):
        assert (export / name).stat().st_size > 0, name
    summary = json.loads((export / "summary.json").read_text())
    assert summary["study"] == "random-digits-image_small-seed0"
    assert summary["trial"] == study.trials[0].number
    assert json.loads((export / "graph.json").read_text()) == json.loads(
        study.trials[0].system_attrs["nasfw:graph"]
    )


def _torch_caps(requirements: list[str]) -> list[str]:
    """The requirements among ``requirements`` that bound torch from above or pin it."""
    from packaging.requirements import Requirement

    caps = []
    for text in requirements:
        req = Requirement(text)
        if req.name.lower() != "torch":
            continue
        if any(spec.operator in ("<", "<=", "==", "===", "~=") for spec in req.specifier):
            caps.append(text)
    return caps


def test_nothing_nasfw_installs_caps_torch() -> None:
    """A user's newer (e.g. CUDA) torch stays: neither nasfw nor any distribution it pulls in
    bounds torch from above, so ``pip install nasfw`` never downgrades it."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _torch_caps(declared["dependencies"]) == []
    assert _torch_caps(["torch>=2.2,<2.14"]) == ["torch>=2.2,<2.14"]  # what it catches
    seen: set[str] = set()
    todo = [Requirement(r).name for r in declared["dependencies"]]
    caps: dict[str, list[str]] = {}
    while todo:
        name = todo.pop().lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # an optional dependency not installed here
            continue
        # What installs here: no extras, markers of this platform.
        required = [
            r
            for r in map(Requirement, requires)
            if r.marker is None or r.marker.evaluate({"extra": ""})
        ]
        found = _torch_caps([f"{r.name}{r.specifier}" for r in required])
        if found:
            caps[name] = found
        todo += [r.name for r in required]
    assert caps == {}
    assert "torch" in seen and len(seen) > 20  # the walk reached the dependency tree


def _fake_torch(version: str) -> dict[str, str]:
    """The files of a ``torch`` distribution's metadata, without torch: what pip reads to decide
    whether an installed torch satisfies a requirement or a wheel can replace it."""
    info = f"torch-{version}.dist-info"
    return {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/INSTALLER": "pip\n",
        f"{info}/RECORD": "",
    }


@pytest.fixture(scope="module")
def newer_torch_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh venv where torch 2.15.0 is installed (as a CUDA build would be), and a wheel
    directory that offers torch 2.13.0, the version a cap at ``<2.14`` would downgrade to.

    The venv sees this environment's other distributions (optuna, hydra, ...) through a ``.pth``
    line naming a directory of links to them; torch and nasfw are left out, so pip finds only
    the fake torch and installs nasfw from the wheel under test."""
    tmp = tmp_path_factory.mktemp("newer-torch")
    root = tmp / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    deps = tmp / "deps"
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or name.startswith(("torch", "nasfw", "__editable__")):
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "_nasfw_test_deps.pth").write_text(f"{deps}\n")
    for name, text in _fake_torch("2.15.0").items():
        (site / name).parent.mkdir(exist_ok=True)
        (site / name).write_text(text)
    links = tmp / "wheels"
    links.mkdir()
    with zipfile.ZipFile(links / "torch-2.13.0-py3-none-any.whl", "w") as zf:
        for name, text in _fake_torch("2.13.0").items():
            if not name.endswith("INSTALLER"):
                zf.writestr(name, text)
    return python, links


def _pip_install(python: Path, links: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pip, run for ``python``'s venv, offline, finding wheels in ``links`` only. No pip
    configuration is read: a machine-wide constraint (a CI image's ``torch<=2.14.1``) or
    ``find-links`` would decide the outcome instead of nasfw's requirements."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install"),
            *("--no-index", "--find-links", str(links), *args),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _planned(python: Path, links: Path, *requirements: str) -> dict[str, str]:
    """What ``pip install --dry-run`` would install for ``requirements``: name -> version."""
    proc = _pip_install(python, links, "--dry-run", "--quiet", "--report", "-", *requirements)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}


def test_installing_nasfw_keeps_a_newer_torch(
    wheel: Path, newer_torch_venv: tuple[Path, Path]
) -> None:
    """``pip install nasfw`` (and its dev extra) into a venv with torch 2.15.0 plans nothing
    for torch, and torch is still 2.15.0 after the install; a cap would downgrade it to the
    2.13.0 on offer, as the control requirement ``torch<2.14`` shows."""
    python, links = newer_torch_venv
    assert _planned(python, links, str(wheel)) == {"nasfw": "0.1.0"}
    assert _planned(python, links, f"nasfw[dev] @ {wheel.as_uri()}") == {"nasfw": "0.1.0"}
    # What the test would see if nasfw capped torch.
    assert _planned(python, links, str(wheel), "torch<2.14") == {
        "nasfw": "0.1.0",
        "torch": "2.13.0",
    }
    proc = _pip_install(python, links, "--quiet", str(wheel))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('torch'), m.version('nasfw'))",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert versions.stdout.split() == ["2.15.0", "0.1.0"], versions.stderr
