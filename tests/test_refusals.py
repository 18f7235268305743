"""Issue 25, faults 7, 12, 13, 14: bad input is refused before anything is created or written.

Each refused input runs in an empty directory (or beside the one file it points at): exit 2,
one line ``nasfw: error: ...`` naming the key, and afterwards the directory holds what it held,
the files byte for byte, plus only Hydra's own run directory (``outputs/<date>/<time>_<study>/``
with ``.hydra/`` and ``cli.log``: the record of the refused run, written before nasfw starts).
No study, no DB file, no ``nasfw-jobs/``, no artifacts, no exported model.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nasfw import ConfigError, SearchSpaceError, check_settings, load_arch_in
from tests.cli import TINY, nasfw

REPO = Path(__file__).resolve().parents[1]

BASE = [a for a in TINY if not a.startswith("tuner")]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` but Hydra's run directory, with file contents."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if p.relative_to(root).parts[0] != "outputs"
    }


def sqlite_file(path: Path, *tables: str) -> Path:
    conn = sqlite3.connect(path)
    for table in tables:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    return path


def optuna_storage(path: Path) -> Path:
    import optuna

    optuna.create_study(storage=f"sqlite:///{path}", study_name="theirs")
    return path


def bad_arch(path: Path) -> Path:
    graph = {
        "version": 1,
        "nodes": [
            {"id": "d0", "op": "dense", "params": {"units": 100000}, "inputs": ["input"]},
        ],
        "output": "d0",
    }
    path.write_text(json.dumps(graph))
    return path


def petridish(*args: str) -> list[str]:
    return [*BASE, "tuner=petridish", "tuner.rounds=1", *args]


# (arguments, what the one error line must name); a callable makes the files it points at.
REFUSED = {
    "hyperband-min-above-max": (
        [*TINY, "pruner=hyperband", "pruner.min_resource=5", "pruner.max_resource=2"],
        "pruner.min_resource=5",
    ),
    "hyperband-min-at-epochs": (
        [*TINY, "pruner=hyperband", "pruner.min_resource=3", "train.epochs=2"],
        "pruner.min_resource=3",
    ),
    "petridish-kernel-0": (petridish("tuner.kernel_sizes=[0]"), "tuner.kernel_sizes[0]=0"),
    "petridish-kernel-neg": (petridish("tuner.kernel_sizes=[3,-3]"), "tuner.kernel_sizes[1]=-3"),
    "petridish-kernel-empty": (petridish("tuner.kernel_sizes=[]"), "tuner.kernel_sizes=[]"),
    "petridish-nas-ignores-init-arch": (
        petridish("tuner.init_arch=mlp_small"),
        "tuner.init_arch=mlp_small",
    ),
    "gpus-negative": ([*TINY, "launcher.gpus=[-1]"], "launcher.gpus[0]=-1"),
    "gpus-empty": ([*TINY, "launcher.gpus=[]"], "launcher.gpus=[]"),
    "screen-huge": ([*TINY, "evaluation.screen=100000000"], "evaluation.screen=100000000"),
    "evolution-sample-size": (
        [*BASE, "tuner=evolution", "tuner.sample_size=99"],
        "tuner.sample_size",
    ),
    "artifacts-unwritable": ([*TINY, "storage.artifacts=/proc/x"], "storage.artifacts"),
    "tracking-uri-garbage": (
        [*TINY, "tracking=mlflow", "tracking.tracking_uri=garbage://x"],
        "tracking.tracking_uri",
    ),
    "warm-start-missing": ([*TINY, "tuner.warm_start=nope"], "tuner.warm_start=nope"),
    "init-arch-param-out-of-range": (
        lambda d: petridish("tuner.mode=adapt", f"tuner.init_arch={bad_arch(d / 'a.json')}"),
        "param 'units'",
    ),
    "storage-is-minibench-db": (
        lambda d: [
            *TINY,
            f"storage.url=sqlite:///{sqlite_file(d / 'm.db', 'problems', 'models', 'info')}",
        ],
        "storage.url",
    ),
    "storage-is-mlflow-db": (
        lambda d: [
            *TINY,
            f"storage.url=sqlite:///{sqlite_file(d / 'm.db', 'experiments', 'runs')}",
        ],
        "storage.url",
    ),
    "tracking-is-optuna-storage": (
        lambda d: [
            *TINY,
            "tracking=mlflow",
            f"tracking.tracking_uri=sqlite:///{optuna_storage(d / 'o.db')}",
        ],
        "tracking.tracking_uri",
    ),
    "auto-on-empty-file": (
        lambda d: [
            *BASE,
            "tuner=random",
            "search_space=auto",
            f"minibench.db={(d / 'e.db').touch() or d / 'e.db'}",
        ],
        "minibench.db",
    ),
    "auto-on-foreign-db": (
        lambda d: [
            *BASE,
            "tuner=random",
            "search_space=auto",
            f"minibench.db={sqlite_file(d / 'f.db', 'x')}",
        ],
        "minibench.db",
    ),
    "minibench-into-optuna-storage": (
        lambda d: [
            *TINY,
            "mode=minibench",
            "minibench.problems=[iris]",
            f"minibench.db={optuna_storage(d / 'nasfw.db')}",
        ],
        "minibench.db",
    ),
    "minibench-db-is-storage": (
        lambda d: [
            *TINY,
            "mode=minibench",
            "minibench.problems=[iris]",
            f"minibench.db={d / 's.db'}",
            f"storage.url=sqlite:///{d / 's.db'}",
        ],
        "minibench.db",
    ),
    "minibench-entry-bad-data": (
        [*TINY, "mode=minibench", "minibench.problems=[iris,mnist]"],
        "minibench.problems[1]",
    ),
    # Not a device name, on a problem that trains and on one looked up in a table (which
    # never resolves the device, and once took any word).
    "device-not-a-name": ([*TINY, "train.device=banana"], "train.device='banana'"),
    "device-bad-index": ([*TINY, "train.device=cuda:x"], "train.device='cuda:x'"),
    "device-not-a-name-table": (
        [
            "problem=nb201_cifar10",
            "search_space=nasbench201",
            "tuner=evolution",
            "tuner.n_trials=20",
            "tracking=none",
            "train.device=gpu",
        ],
        "train.device='gpu'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_input_leaves_everything_as_it_was(tmp_path, case):
    args, key = REFUSED[case]
    if callable(args):
        args = args(tmp_path)
    if not any(a.startswith("storage.url=") for a in args):
        args = [*args, f"storage.url=sqlite:///{tmp_path}/s.db"]
    before = snapshot(tmp_path)
    out = nasfw(tmp_path, *args)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("nasfw: error:")]
    assert len(errors) == 1 and key in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert snapshot(tmp_path) == before, out.stderr
    runs = [p for p in tmp_path.glob("outputs/*/*/*") if p.name not in (".hydra", "cli.log")]
    assert not runs


@pytest.mark.parametrize("without", ["cluster", "commands"])
def test_slurm_without_slurm_says_how_to_get_a_test_cluster(tmp_path, without):
    # No cluster answers whether or not the SLURM commands are installed (a test cluster of
    # the suite may be up): a slurm.conf that names none; or no SLURM command on PATH at all.
    empty = tmp_path.parent / f"{tmp_path.name}-slurm.conf"
    empty.write_text("")
    env = {"SLURM_CONF": str(empty)}
    if without == "commands":
        no_commands = tmp_path.parent / f"{tmp_path.name}-bin"
        no_commands.mkdir()
        env["PATH"] = str(no_commands)
    args = [a for a in TINY if not a.startswith("launcher")]
    out = nasfw(
        tmp_path, *args, "launcher=slurm", f"storage.url=sqlite:///{tmp_path}/s.db", env=env
    )
    assert out.returncode == 2, out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("nasfw: error: launcher=slurm"), line
    if without == "commands":
        assert "needs the SLURM commands sbatch, sacct, scancel on PATH" in line
    # The script exists where the message sends the reader, and starts what it says.
    assert "sudo python3 scripts/services.py start slurm" in line
    assert "start slurm" in (REPO / "scripts" / "services.py").read_text()
    assert snapshot(tmp_path) == {}


# -- in process: the mechanisms ---------------------------------------------------------------


def test_list_items_are_checked_against_the_fields_range():
    from launchers.local import LocalLauncherConfig

    with pytest.raises(ConfigError, match=r"launcher\.gpus\[1\]=-2 is out of range"):
        check_settings(LocalLauncherConfig(gpus=[0, -2]), "launcher")
    check_settings(LocalLauncherConfig(gpus=[0, 1]), "launcher")
    check_settings(LocalLauncherConfig(gpus=None), "launcher")


def test_a_schema_check_names_its_keys_under_the_prefix():
    from plugins.pruners.optuna_pruners import HyperbandPrunerConfig

    with pytest.raises(ConfigError, match=r"pruner\.min_resource=2 must be below pruner\.max"):
        check_settings(HyperbandPrunerConfig(min_resource=2, max_resource=2), "pruner")
    check_settings(HyperbandPrunerConfig(min_resource=1, max_resource=2), "pruner")


def _text_space(ops, **attention):
    from omegaconf import OmegaConf

    from nasfw import SearchSpace
    from nasfw.config import SearchSpaceConfig
    from nasfw.registry import preset

    node = OmegaConf.merge(
        OmegaConf.structured(SearchSpaceConfig), preset("search_space", "text_small")
    )
    for param, value in attention.items():
        node.ops.attention[param] = value
    return SearchSpace(node, ops)


@pytest.mark.parametrize(
    ("attention", "key"),
    [
        ({"heads": {"choices": [3]}}, r"search_space\.ops\.attention\.(heads|width)"),
        ({"heads": {"choices": [2, 5]}}, "search_space.ops.attention.heads: heads=5"),
        ({"width": {"choices": [30, 32]}, "heads": {"choices": [4]}}, "attention.width: width=30"),
    ],
)
def test_attention_heads_that_divide_no_width_are_refused(attention, key):
    from nasfw import registry

    with pytest.raises(SearchSpaceError, match=key):
        _text_space(registry().ops, **attention)


def test_an_architecture_is_checked_in_full_naming_file_node_and_param(tmp_path):
    from nasfw import registry

    space = _text_space(registry().ops)
    graph = {
        "version": 1,
        "nodes": [
            {"id": "e", "op": "embedding", "params": {"dim": 32}, "inputs": ["input"]},
            {"id": "a", "op": "attention", "params": {"width": 30, "heads": 4}, "inputs": ["e"]},
            {"id": "p", "op": "global_avgpool", "params": {}, "inputs": ["a"]},
        ],
        "output": "p",
    }
    path = tmp_path / "theta0.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(ConfigError, match=r"tuner\.init_arch=.*theta0\.json.*node 'a'.*width 30"):
        load_arch_in(str(path), space, structure=False)
    graph["nodes"][1]["params"] = {"width": 32, "heads": "four"}
    path.write_text(json.dumps(graph))
    with pytest.raises(ConfigError, match=r"node 'a' \(attention\): param 'heads'"):
        load_arch_in(str(path), space, structure=False)


def test_every_arch_preset_is_valid_over_the_ops():
    from importlib.resources import files

    from nasfw import ArchGraph, registry

    presets = [
        p for p in files("nasfw.conf").joinpath("arch").iterdir() if p.name.endswith(".json")
    ]
    assert presets
    for preset in presets:
        ArchGraph.from_json(preset.read_text()).validate(registry().ops)


def test_a_minibench_db_of_the_previous_version_gets_the_marker(tmp_path):
    from nasfw.minibench.db import FORMAT, MARKER, BestModelDB

    path = tmp_path / "old.db"
    BestModelDB(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM info WHERE key = 'kind'")  # as the previous version wrote it
    conn.commit()
    conn.close()
    BestModelDB(str(path), must_exist=True).close()
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT key, value FROM info").fetchall()) == {
        "format": str(FORMAT),
        "kind": MARKER,
    }
    conn.close()


@pytest.mark.parametrize(
    "tables", [("studies", "trials", "version_info"), ("experiments", "runs"), ("x",)]
)
def test_a_foreign_sqlite_file_is_never_written_as_a_minibench_db(tmp_path, tables):
    from nasfw.minibench.db import BestModelDB

    path = sqlite_file(tmp_path / "f.db", *tables)
    before = path.read_bytes()
    for must_exist in (False, True):
        with pytest.raises(ConfigError, match=r"minibench\.db=.*not a nasfw mini-benchmark DB"):
            BestModelDB(str(path), must_exist=must_exist)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("key", "tables", "setting"),
    [
        ("storage.url", ("studies", "trials", "version_info"), "storage.url=sqlite:///{path}"),
        (
            "tracking.tracking_uri",
            ("experiments", "runs"),
            "tracking.tracking_uri=sqlite:///{path}",
        ),
        ("minibench.db", ("problems", "models", "info"), "minibench.db={path}"),
    ],
)
def test_a_sqlite_file_locked_by_another_process_is_said_to_be_locked(
    tmp_path, key, tables, setting
):
    """A file another process is writing to (here: holding SQLite's exclusive lock) cannot be
    read for what it is: one line naming the key says it is locked, not that it is "not a
    SQLite database" (as a paused driver's storage once was), and nothing is written."""
    path = sqlite_file(tmp_path / "held.db", *tables)
    extra = {
        "tracking.tracking_uri": ["tracking=mlflow"],
        "minibench.db": ["minibench.warm_start=true"],
    }.get(key, [])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        args = [
            a for a in TINY if not (a == "tracking=none" and key.startswith("tracking"))
        ] + extra
        out = nasfw(tmp_path, *args, setting.format(path=path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"{key}: cannot read {path} now (database is locked)" in lines[0], lines[0]
    assert "not a SQLite database" not in lines[0]
    assert sqlite_tables_of(path) == set(tables)


def sqlite_tables_of(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
