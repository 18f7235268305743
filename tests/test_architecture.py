"""The dependency rule: the core's layers (import-linter's contract in pyproject.toml), no
import cycle among the core's modules, and plugins and launchers on nasfw's public API only."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_core_keeps_its_layers() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is part of the dev extra"
    run = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_no_import_cycle_among_the_core_modules() -> None:
    """Type-only imports (under TYPE_CHECKING) included: no two modules need each other even to
    name their types."""
    import grimp

    graph = grimp.build_graph("nasfw")
    core = sorted(m for m in graph.modules if m != "nasfw")  # the package's face re-exports
    cycles = [
        (a, b)
        for i, a in enumerate(core)
        for b in core[i + 1 :]
        if graph.chain_exists(a, b) and graph.chain_exists(b, a)
    ]
    assert cycles == []


def _nasfw_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] == "nasfw"]


@pytest.mark.parametrize("folder", ["plugins", "launchers"])
def test_first_party_plugins_use_only_the_public_api(folder: str) -> None:
    """``from nasfw import ...`` and their own package; never a core module (what a
    third-party plugin can rely on is what the first-party ones use)."""
    own = f"nasfw.{folder}"
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, name in _nasfw_imports(path)
        if name != "nasfw" and not (name == own or name.startswith(own + "."))
    ]
    assert wrong == []
