"""Storage outages while a search runs (#25, kind 9): a disk that fills up, a storage that turns
read-only for a while. Real faults: a small tmpfs of its own (a mount namespace, so nothing is
left mounted) filled up by ``dd``, and a search run as an unprivileged user whose database
directory is made read-only for a few seconds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli import TINY, nasfw, trials

SEARCH = [
    *[a for a in TINY if not a.startswith(("tuner.n_trials", "tuner.batch_size"))],
    "tuner.n_trials=60",
    "tuner.batch_size=2",
    "study_name=outage",
    "storage.retry_seconds=1",
]

# Run inside a mount namespace of its own: a 2 MB tmpfs at $DISK holds the storage. The first
# search runs until its first generation is stored, then dd fills the disk; it must stop. The
# disk is then freed and the same command run again.
FILL_MID_RUN = textwrap.dedent(
    """
    set -u
    mount -t tmpfs -o size=2m tmpfs "$DISK" || exit 90
    "$PYTHON" -m nasfw "$@" >first.out 2>first.err &
    search=$!
    until grep -q "generation 0" first.out first.err || ! kill -0 $search 2>/dev/null; do
        sleep 0.1
    done
    dd if=/dev/zero of="$DISK/fill" bs=4k 2>/dev/null
    wait $search; echo $? >first.rc
    ls "$DISK" >listing.txt
    rm "$DISK/fill"
    "$PYTHON" -m nasfw "$@" >second.out 2>second.err; echo $? >second.rc
    cp -a "$DISK/." kept/
    """
)

# The same, with the disk full before the search starts.
FULL_AT_START = textwrap.dedent(
    """
    set -u
    mount -t tmpfs -o size=1m tmpfs "$DISK" || exit 90
    dd if=/dev/zero of="$DISK/fill" bs=4k 2>/dev/null
    "$PYTHON" -m nasfw "$@" >first.out 2>first.err; echo $? >first.rc
    ls "$DISK" >listing.txt
    rm "$DISK/fill"
    "$PYTHON" -m nasfw "$@" >second.out 2>second.err; echo $? >second.rc
    cp -a "$DISK/." kept/
    """
)


def on_small_disk(work: Path, script: str, url: str) -> dict[str, str]:
    """Run ``script`` in a user and mount namespace of its own (unprivileged users may: the
    test fails, never skips, where the kernel refuses) with ``$DISK`` its tmpfs and the search's
    arguments ``SEARCH`` plus ``storage.url=url``; return its files' texts."""
    (work / "disk").mkdir()
    (work / "kept").mkdir()
    (work / "script.sh").write_text(script)
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "script.sh",
            *SEARCH,
            f"storage.url={url}",
        ],
        cwd=work,
        env={**os.environ, "DISK": str(work / "disk"), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 90, f"cannot mount a tmpfs in a namespace: {done.stderr}"
    assert done.returncode == 0, done.stderr
    return {p.name: p.read_text() for p in work.glob("*.*") if p.is_file()}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_disk_that_fills_up_mid_search_stops_it_in_one_line_and_loses_nothing(tmp_path, kind):
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'disk' / 'nasfw.db'}",
        "journal": f"journal://{tmp_path / 'disk' / 'nasfw.log'}",
    }[kind]
    out = on_small_disk(tmp_path, FILL_MID_RUN, url)
    assert out["first.rc"].strip() == "2", out["first.err"][-3000:]
    assert "Traceback" not in out["first.err"]
    last = out["first.err"].strip().splitlines()[-1]
    assert last.startswith(f"nasfw: error: storage.url={url}: the disk is full"), last
    assert "storage.retry_seconds" in last and "rerun the same command to resume" in last
    # It said it would retry before it gave up.
    assert "retrying for up to 1 s (storage.retry_seconds)" in out["first.out"]
    saved = int(last.split(". ", 1)[1].split(" evaluations saved")[0])
    assert 2 <= saved < 60

    # Freed, the same command resumes and ends with every trial once.
    assert out["second.rc"].strip() == "0", out["second.err"][-3000:]
    said = " ".join((out["second.out"] + out["second.err"]).split())  # unwrapped
    # After the last generation whose state was saved: the last stored one, or the one before
    # when the disk filled between a generation's last trial and its state (that generation's
    # stored trials are then reused, not evaluated again: checked below).
    resumed = re.search(r"Resuming study outage after generation (-?\d+) ", said)
    assert resumed, said[:2000]
    assert saved // 2 - 2 <= int(resumed.group(1)) <= saved // 2 - 1, (saved, resumed.group(0))
    assert_each_candidate_once(url.replace(str(tmp_path / "disk"), str(tmp_path / "kept")))
    # The journal's writes cut short by the full disk were cut back off: no torn record.
    assert "unfinished record" not in out["second.err"]
    assert not list((tmp_path / "kept").glob("*.torn-*"))


def test_a_disk_full_at_start_is_said_and_leaves_no_half_made_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'disk' / 'nasfw.db'}"
    out = on_small_disk(tmp_path, FULL_AT_START, url)
    assert out["first.rc"].strip() == "2"
    assert out["first.err"].strip().splitlines() == [
        f"nasfw: error: storage.url={url}: cannot open the Optuna storage: the disk is full "
        "(database or disk is full); the file it began was removed"
    ]
    assert out["listing.txt"].split() == ["fill"]  # no nasfw.db left to misread later
    assert out["second.rc"].strip() == "0", out["second.err"][-3000:]
    assert len(trials(f"sqlite:///{tmp_path / 'kept' / 'nasfw.db'}", "outage")) == 60


@pytest.mark.parametrize("made", [["studies", "version_info"], ["studies", "study_directions"]])
def test_an_optuna_storage_whose_creation_was_cut_short_is_completed(tmp_path, made):
    """A file with some of Optuna's tables only (an earlier start that met a full disk) is
    Optuna's unfinished schema, not another program's database."""
    import sqlalchemy
    from optuna.storages._rdb import models

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'nasfw.db'}")
    models.BaseModel.metadata.create_all(
        engine, tables=[models.BaseModel.metadata.tables[t] for t in made]
    )
    engine.dispose()
    done = nasfw(tmp_path, *TINY, "storage.url=sqlite:///nasfw.db", "study_name=s")
    assert done.returncode == 0, done.stderr
    assert len(trials(f"sqlite:///{tmp_path / 'nasfw.db'}", "s")) == 2


def test_optuna_schema_is_every_table_optuna_creates():
    from optuna.storages._rdb import models

    from nasfw.dbfiles import OPTUNA_SCHEMA

    assert set(models.BaseModel.metadata.tables) | {"alembic_version"} == OPTUNA_SCHEMA


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach and write (pytest's own is private)."""
    path = Path(tempfile.mkdtemp(prefix="nasfw-outage-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_storage_read_only_for_a_while_delays_the_search_and_loses_nothing(shared_dir):
    """The database's directory turns read-only for 6 s mid-search (as a remounted or
    unreachable file system does); the search waits it out within storage.retry_seconds and
    ends as an uninterrupted one. Run as user nobody: root writes to read-only files."""
    db = shared_dir / "db"
    db.mkdir()
    db.chmod(0o777)
    args = [*SEARCH[:-1], "storage.retry_seconds=60", f"storage.url=sqlite:///{db}/nasfw.db"]
    out = (shared_dir / "out.txt").open("w")
    search = subprocess.Popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "nasfw",
            *args,
        ],
        cwd=shared_dir,
        env={**os.environ, "HOME": str(shared_dir)},
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "generation 0" not in (shared_dir / "out.txt").read_text():
            assert search.poll() is None, (shared_dir / "out.txt").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        db.chmod(0o555)
        (db / "nasfw.db").chmod(0o444)
        during = len(trials(f"sqlite:///{db}/nasfw.db", "outage"))
        time.sleep(6)
        assert len(trials(f"sqlite:///{db}/nasfw.db", "outage")) == during  # nothing written
        assert search.poll() is None  # still waiting, not crashed
        db.chmod(0o777)
        (db / "nasfw.db").chmod(0o666)
        assert search.wait(300) == 0, (shared_dir / "out.txt").read_text()
    finally:
        search.kill()
        out.close()
    text = (shared_dir / "out.txt").read_text()
    assert "is read-only (attempt to write a readonly database); retrying for up to 60 s" in text
    assert text.count("retrying for up to") == 1  # said once, not per thread meeting it
    assert "answers again after" in text
    assert_each_candidate_once(f"sqlite:///{db}/nasfw.db")


def assert_each_candidate_once(url: str) -> None:
    """The study holds the 60 candidates of 30 generations of 2, each once and finished."""
    from nasfw.ledger import Ledger

    records = Ledger(url, "outage").records()
    assert sorted((r.generation, r.index) for r in records) == [
        (g, i) for g in range(30) for i in range(2)
    ]
    assert all(r.result.status == "ok" for r in records)
