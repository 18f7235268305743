"""The README and the docs site: the README is the site's home page (scripts/readme.py), the
README's test command is what CI runs, every page is in the site, and every ``python -m
nasfw`` command of the README and the guide is run through the CLI (``--cfg job``: composed,
so a wrong key, option or argument order fails here). Each search among them that needs
nothing CI lacks (a dataset directory, a GPU, a scheduler, a database server, a Ray cluster,
the mini-benchmark DB) also runs for real, at a tiny budget, and must export its best model."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli import compose, nasfw

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# docs/plugins.md's commands need its own package installed: tests/test_plugin_docs.py runs them.
GUIDE = sorted(p for p in DOCS.glob("*.md") if p.name != "plugins.md")
EXAMPLE = REPO / "examples" / "nasfw-example-plugin"
COMMAND = re.compile(r"(?:[A-Z_]+=\S+ )*python -m nasfw\b[^`\n]*")
# What a command needs that CI has not got: a dataset directory, a GPU, a scheduler (SLURM, LSF),
# a PostgreSQL server, a Ray cluster (launcher=ray starts one of its own: ~20 s), or the
# mini-benchmark DB (mode=minibench builds it: hours; search_space=auto, evaluation.screen and
# minibench.warm_start read it). Such commands are composed only; tests/launchers/ run each
# launcher on a real local cluster, tests/minibench/ build and read a small DB. The example
# package's search (tuner=hillclimb) runs in tests/test_examples.py; --cfg and --help run as
# written above.
NOT_RUN_HERE = re.compile(
    r"/data/|launcher=(?:slurm|lsf|ray)|submitit_slurm|postgresql|train\.device=|"
    r"mode=minibench|search_space=auto|evaluation\.screen|minibench\.warm_start|"
    r"tuner=hillclimb|--cfg|--help"
)
# Tiny budgets, appended to a command that runs for real (the last value of a key wins): per
# tuner, per problem, and for every search.
TINY_TUNER = {
    "random": {"tuner.n_trials": "2", "tuner.batch_size": "2"},
    "tpe": {"tuner.n_trials": "2", "tuner.batch_size": "2"},
    "evolution": {
        **{"tuner.n_trials": "2", "tuner.batch_size": "1"},
        **{"tuner.population_size": "2", "tuner.sample_size": "1"},
    },
    "codeepneat": {
        **{"tuner.generations": "1", "tuner.blueprint_population": "2"},
        **{"tuner.module_population": "4", "tuner.genomes_per_blueprint": "1"},
    },
    "petridish": {
        **{"tuner.init_models": "1", "tuner.rounds": "1"},
        **{"tuner.max_parents": "1", "tuner.max_candidates": "1"},
    },
}
TINY_PROBLEM = {
    "digits": {"problem.max_train_samples": "200"},
    "mnist1d": {"problem.n_samples": "200"},
}
TINY = {"train.epochs": "1", "launcher.workers": "0", "tracking": "none"}


def readme_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import readme

        return readme
    finally:
        sys.path.pop(0)


def test_the_readme_is_the_docs_home_page() -> None:
    readme = readme_module()
    assert (REPO / "README.md").read_text() == readme.render((DOCS / "index.md").read_text()), (
        "README.md differs from docs/index.md: run python scripts/readme.py"
    )
    # Its links lead into the docs site, and every one exists.
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links and all((REPO / link).is_file() for link in links), links


def test_the_readme_is_an_entry_page_starting_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert 80 <= len(text.splitlines()) <= 200
    first_block = text.split("```\n", 2)[1]
    assert [line.split()[:2] for line in first_block.splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
    # CI runs exactly the README's test command.
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "make test"


def test_every_page_is_in_the_site() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name etc.
    nav = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(nav))
    assert listed == {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}


def commands() -> list[tuple[str, str]]:
    """(page, command) for every ``python -m nasfw`` line of a code block and every inline
    code span holding one, in the README and the guide."""
    found = []
    for page in [REPO / "README.md", *GUIDE]:
        text = page.read_text()
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        for block in blocks:
            joined = re.sub(r"\\\n\s*", "", block)  # continued lines
            found += [(page.name, m.group(0)) for m in COMMAND.finditer(joined)]
        for span in re.findall(r"`([^`\n]*python -m nasfw[^`]*)`", text):
            found += [(page.name, m.group(0)) for m in COMMAND.finditer(span)]
    first = {}
    for page, command in found:  # the README's are docs/index.md's: each command once
        first.setdefault(command, page)
    return sorted((page, command) for command, page in first.items())


def split_command(command: str, cwd: Path) -> tuple[dict[str, str], list[str]]:
    """``command``'s environment assignments and its arguments after ``python -m nasfw``."""
    tokens = shlex.split(command.replace("$PWD", str(cwd)), comments=True)
    start = tokens.index("python")
    assert tokens[start : start + 3] == ["python", "-m", "nasfw"], command
    return dict(token.split("=", 1) for token in tokens[:start]), tokens[start + 3 :]


def parse_through_the_cli(command: str, cwd: Path, env: dict[str, str]):
    """``command`` run as ``--cfg job`` in ``cwd``; a multirun is its first job, its ``-m``
    replaced in place by ``--cfg job``, so that its position is checked as it would be."""
    extra, rest = split_command(command, cwd)
    multirun = bool({"-m", "--multirun"} & set(rest))
    args = []
    for token in rest:
        if token in ("-m", "--multirun"):
            args += ["--cfg", "job"]
            continue
        sweep = re.fullmatch(r"([\w./+~-]+)=([^\[\]{}'\"(),]+),[^\[\]{}'\"()]*", token)
        args.append(f"{sweep[1]}={sweep[2]}" if multirun and sweep else token)  # 1st job
    if not {"--cfg", "--help", "--hydra-help"} & set(args):
        args += ["--cfg", "job"]
    return nasfw(cwd, *args, env={**env, **extra})


def runs_here(command: str) -> bool:
    return not NOT_RUN_HERE.search(command)


def run_tiny(command: str, cwd: Path, env: dict[str, str]) -> tuple[object, int]:
    """``command`` run for real in ``cwd`` with tiny budgets appended, and how many searches
    it makes (a multirun: the product of its sweeps' lengths). In a multirun the budgets are
    one-value sweeps (``key=choice(2)``): Hydra composes a multirun's plain overrides with the
    default tuner first, where another tuner's keys do not exist (docs/command-line.md)."""
    extra, args = split_command(command, cwd)
    given = dict(token.split("=", 1) for token in args if "=" in token)
    default = compose()
    tuners = given.get("tuner", default.tuner.name).split(",")
    problems = given.get("problem", default.problem.name).split(",")
    multirun = bool({"-m", "--multirun"} & set(args))
    budget: dict[str, str] = {}
    for name in tuners:
        budget |= TINY_TUNER[name]
    for name in problems:
        budget |= TINY_PROBLEM.get(name, {})
    budget = {k: f"choice({v})" if multirun else v for k, v in budget.items()}
    budget |= TINY
    jobs = 1
    for value in given.values():
        if multirun and re.fullmatch(r"[^\[\]{}'\"()]+(,[^\[\]{}'\"()]+)+", value):
            jobs *= len(value.split(","))
    tiny = [f"{k}={v}" for k, v in budget.items()]
    return nasfw(cwd, *args, *tiny, env={**env, **extra}), jobs


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example plugin package installed (``pip --target``), which the README's plugin
    commands use."""
    tmp = tmp_path_factory.mktemp("example")
    src = tmp / "src"
    shutil.copytree(
        EXAMPLE, src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-q", "--target", str(tmp / "site"), str(src)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"PYTHONPATH": str(tmp / "site")}


@pytest.mark.parametrize(("page", "command"), commands())
def test_the_docs_command_runs(
    page: str, command: str, tmp_path: Path, example_site: dict[str, str]
) -> None:
    # What the mini-benchmarking page's hand-use of its spaces directory needs.
    spaces = tmp_path / "minibench_spaces" / "search_space"
    spaces.mkdir(parents=True)
    preset = (REPO / "conf" / "search_space" / "image_small.yaml").read_text()
    (spaces / "mb_image_0.yaml").write_text(preset.replace("image_small", "mb_image_0"))
    out = parse_through_the_cli(command, tmp_path, example_site)
    assert out.returncode == 0, f"{page}: {command}\n{out.stderr[-2000:]}"
    assert "study_name:" in out.stdout or "== Configuration groups ==" in out.stdout


@pytest.mark.parametrize(
    ("page", "command"), [(page, command) for page, command in commands() if runs_here(command)]
)
def test_the_docs_search_runs(
    page: str, command: str, tmp_path: Path, example_site: dict[str, str]
) -> None:
    """The command searches, at a tiny budget, and every search of it exports its best model."""
    out, jobs = run_tiny(command, tmp_path, example_site)
    assert out.returncode == 0, f"{page}: {command}\n{out.stderr[-3000:]}"
    summaries = sorted(tmp_path.rglob("best_model/summary.json"))
    assert len(summaries) == jobs, (command, summaries)
    assert len(set(json.loads(p.read_text())["study"] for p in summaries)) == jobs


def test_the_commands_are_found_and_a_wrong_one_fails(tmp_path: Path) -> None:
    found = [command for _, command in commands()]
    assert "python -m nasfw -m tuner=random,tpe seed=0,1" in [
        c.split("  #")[0].strip() for c in found
    ]
    assert any("-m tuner=tpe seed=0,1 tuner.n_trials=5" in c for c in found)
    assert len(found) >= 25
    # The searches that run for real: the README's sweep and the defaults among them.
    run = [c.split("  #")[0].strip() for c in found if runs_here(c)]
    assert {"python -m nasfw -m tuner=random,tpe seed=0,1", "python -m nasfw"} <= set(run)
    assert len(run) >= 6
    # The sweep as the README once wrote it: -m after an override.
    out = parse_through_the_cli("python -m nasfw tuner=tpe -m seed=0,1", tmp_path, {})
    assert out.returncode == 2 and "unrecognized arguments: seed=0" in out.stderr
    out = parse_through_the_cli("python -m nasfw tuner=tpee", tmp_path, {})
    assert out.returncode == 2
