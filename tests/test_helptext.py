"""``python -m nasfw --help``: every key with its meaning, range and the providing plugin."""

from __future__ import annotations

from pathlib import Path

from cli import install_plugin, nasfw

ROWS = """
from dataclasses import dataclass

from nasfw import hookimpl, setting


@dataclass
class RowsConfig:
    # The CSV file, relative to where the search starts ($PWD); None writes nothing.
    # A second line of the comment is not shown.
    path: str | None = None
    digits: int = setting(3, ge=0, le=12)


@hookimpl
def register_configs(register):
    register("plugins", "rows", RowsConfig)
"""


def config_section(text: str) -> list[str]:
    return text.split("== Config ==", 1)[1].split("\nResults:", 1)[0].splitlines()


def note(lines: list[str], start: str) -> str:
    """The note after the first line that starts with ``start``."""
    (line,) = [line for line in lines if line.startswith(start)][:1]
    return line.split(" # ", 1)[1] if " # " in line else ""


def test_help_annotates_every_key(tmp_path: Path) -> None:
    out = nasfw(tmp_path, "--help")
    assert out.returncode == 0, out.stderr
    lines = config_section(out.stdout)
    assert note(lines, "tuner:") == "tuner=codeepneat, from plugin 'codeepneat' (nasfw 0.1.0)"
    assert note(lines, "search_space:") == "search_space=image_small, a preset of nasfw"
    assert note(lines, "  epochs: 5") == (
        "Epochs each network trains: the full budget networks are compared at. [>= 1]"
    )
    assert note(lines, "  optimizer: adam") == (
        "The optimizer every network trains with (a tuner may choose per network). "
        "[one of adam, adamw, sgd]"
    )
    assert note(lines, "  parent_fraction: 0.5") == "[> 0 and <= 1]"
    assert note(lines, "  precision: fp32").startswith("fp32, or bf16 / fp16 autocast")
    # The values are those of the composed config, interpolations as written.
    assert "study_name: ${tuner.name}-${problem.name}-${search_space.name}-seed${seed}" in (
        "\n".join(lines)
    )


def test_help_follows_the_options_chosen(tmp_path: Path) -> None:
    out = nasfw(tmp_path, "tuner=tpe", "problem=iris", "--help")
    assert out.returncode == 0, out.stderr
    lines = config_section(out.stdout)
    assert note(lines, "tuner:") == "tuner=tpe, from plugin 'tpe' (nasfw 0.1.0)"
    assert note(lines, "problem:") == "problem=iris, from plugin 'problems' (nasfw 0.1.0)"
    assert note(lines, "  n_startup_trials:").endswith("[>= 0]")


def test_a_plugins_field_comment_shows_in_help(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site", "nasfw-rows", "1.0", {"rows": ROWS}, "rows = rows")
    out = nasfw(tmp_path, "--help", env=env)
    assert out.returncode == 0, out.stderr
    lines = config_section(out.stdout)
    assert note(lines, "  rows:") == "from plugin 'rows' (nasfw-rows 1.0)"
    assert note(lines, "    path: null") == (
        "The CSV file, relative to where the search starts ($PWD); None writes nothing."
    )
    assert note(lines, "    digits: 3") == "[>= 0 and <= 12]"
