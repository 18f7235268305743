"""Shared Optuna storage: PostgreSQL (a real server) and the journal file, written concurrently."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import uuid

import optuna
import pytest
from cli import TINY, nasfw, trials
from conftest import run_together

from nasfw import ArchGraph, Candidate, Node, Result
from nasfw.ledger import Ledger, LedgerError, open_storage

WRITERS, EACH = 3, 20


def _graph(seed: int) -> ArchGraph:
    return ArchGraph([Node(id="n0", op="dense", params={"units": seed + 1})], output="n0")


def write_trials(url: str, study: str, writer: int) -> None:
    """One process of a concurrent search: records EACH trials as (generation=writer, index=i)."""
    ledger = Ledger(url, study)
    for i in range(EACH):
        result = Result(status="ok", metric=writer + i / 100) if i % 5 else Result.failed("boom")
        ledger.record(Candidate(_graph(writer * 100 + i)), result, writer, i)


def _concurrent_writes(url: str) -> list[optuna.trial.FrozenTrial]:
    study = f"concurrent-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=write_trials, args=(url, study, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials()


def _assert_nothing_lost_or_duplicated(stored: list[optuna.trial.FrozenTrial]) -> None:
    keys = sorted((t.user_attrs["generation"], t.user_attrs["index"]) for t in stored)
    assert keys == [(w, i) for w in range(WRITERS) for i in range(EACH)]
    assert sorted(t.number for t in stored) == list(range(WRITERS * EACH))
    failed = [t for t in stored if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == WRITERS * EACH // 5
    assert all(t.user_attrs["fail_reason"] == "boom" for t in failed)


def _open(url: str) -> str:
    open_storage(url)
    return "ok"


def test_processes_creating_one_fresh_sqlite_database_at_once_all_open_it(tmp_path):
    """Array jobs start together on a new database: all must open it, not lose the schema race."""
    for round_ in range(3):
        url = f"sqlite:///{tmp_path}/fresh{round_}.db"
        assert run_together(_open, (url,), 6) == ["ok"] * 6, f"round {round_}"
    assert optuna.get_all_study_summaries(url) == []


def test_postgres_concurrent_writers_lose_and_duplicate_nothing(postgres_url):
    _assert_nothing_lost_or_duplicated(_concurrent_writes(postgres_url))


def test_journal_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    _assert_nothing_lost_or_duplicated(_concurrent_writes(f"journal://{tmp_path}/j.log"))


def test_search_on_postgres_completes_and_resumes(tmp_path, postgres_url):
    study = f"pg-{uuid.uuid4().hex[:8]}"
    args = [*TINY, f"storage.url={postgres_url}", f"study_name={study}"]
    first = nasfw(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert [t.state for t in trials(postgres_url, study)] == [optuna.trial.TrialState.COMPLETE] * 2
    again = nasfw(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert len(trials(postgres_url, study)) == 2


def test_two_searches_on_one_postgres_database_at_once(tmp_path, postgres_url):
    import subprocess
    import sys

    tag = uuid.uuid4().hex[:8]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nasfw",
                *TINY,
                "tuner.n_trials=4",
                f"seed={seed}",
                f"storage.url={postgres_url}",
                f"study_name={tag}-{seed}",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for seed in (0, 1):
        stored = trials(postgres_url, f"{tag}-{seed}")
        keys = sorted((t.user_attrs["generation"], t.user_attrs["index"]) for t in stored)
        assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("url", ["postgresql+psycopg2://nobody@127.0.0.1:1/none"])
def test_unreachable_postgres_fails_naming_the_key(tmp_path, url):
    out = nasfw(tmp_path, *TINY, f"storage.url={url}")
    assert out.returncode == 2
    assert "storage.url" in out.stderr and "Traceback" not in out.stderr


# -- a journal whose last record was torn by a kill -------------------------------------------
TORN = b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_start":"2026-'


def test_a_torn_journal_tail_is_set_aside_before_anything_is_written(tmp_path, caplog):
    path = tmp_path / "j.log"
    Ledger(f"journal://{path}", "study").record(Candidate(_graph(1)), Result("ok", 0.5), 0, 0)
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(TORN)  # what a writer killed mid-record leaves behind

    ledger = Ledger(f"journal://{path}", "study")
    (backup,) = tmp_path.glob("j.log.torn-*")
    assert backup.read_bytes() == TORN
    assert path.read_bytes().startswith(whole) and TORN not in path.read_bytes()
    assert str(backup) in caplog.text
    ledger.record(Candidate(_graph(2)), Result("ok", 0.75), 0, 1)
    again = Ledger(f"journal://{path}", "study").records()  # what used to fail for good
    assert [r.result.metric for r in again] == [0.5, 0.75]
    assert len(list(tmp_path.glob("j.log.torn-*"))) == 1  # a clean journal is left alone


def test_a_journal_of_one_torn_record_is_emptied(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(TORN)
    assert Ledger(f"journal://{path}", "study").records() == []
    assert path.read_bytes().count(b"\n") == path.read_bytes().count(b"}\n")  # whole records


# -- a journal with a damaged record (one changed byte, a foreign line) ---------------------
def _damage(line: bytes, how: str) -> bytes:
    if how == "changed byte":  # JSON no longer: the record's opening brace turned into a letter
        return b"x" + line[1:]
    if how == "foreign line":
        return b"not a journal record\n"
    assert how == "json, not a record"
    return b'{"hello": 1}\n'


@pytest.mark.parametrize("how", ["changed byte", "foreign line", "json, not a record"])
def test_a_damaged_last_record_is_set_aside_before_anything_is_written(tmp_path, caplog, how):
    """Optuna's reader skips a damaged last record, and once anything is appended after it
    every later open fails: it goes to a backup named in a warning, and the journal ends at
    its last valid record."""
    path = tmp_path / "j.log"
    ledger = Ledger(f"journal://{path}", "study")
    ledger.record(Candidate(_graph(1)), Result("ok", 0.5), 0, 0)
    ledger.record(Candidate(_graph(2)), Result("ok", 0.6), 0, 1)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = _damage(lines[-1], how)
    path.write_bytes(b"".join(lines[:-1]) + damaged)

    again = Ledger(f"journal://{path}", "study")
    (backup,) = tmp_path.glob("j.log.damaged-*")
    assert backup.read_bytes() == damaged and str(backup) in caplog.text
    assert path.read_bytes().startswith(b"".join(lines[:-1])) and damaged not in path.read_bytes()
    again.record(Candidate(_graph(3)), Result("ok", 0.75), 0, 2)  # appended after valid ones
    kept = Ledger(f"journal://{path}", "study").records()
    assert kept[0].result.metric == 0.5 and kept[-1].result.metric == 0.75


def test_a_damaged_record_with_valid_ones_after_it_is_refused_naming_the_byte(tmp_path):
    path = tmp_path / "j.log"
    ledger = Ledger(f"journal://{path}", "study")
    for i in range(3):
        ledger.record(Candidate(_graph(i)), Result("ok", 0.5), 0, i)
    lines = path.read_bytes().splitlines(keepends=True)
    at = len(lines) // 2
    offset = sum(len(line) for line in lines[:at])
    lines[at] = _damage(lines[at], "changed byte")
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=rf"damaged at byte {offset} .*nothing was written"):
        Ledger(f"journal://{path}", "study")
    assert path.read_bytes() == before and not list(tmp_path.glob("j.log.damaged-*"))


def test_the_cli_refuses_a_journal_damaged_mid_file_in_one_line(tmp_path):
    url = f"journal://{tmp_path / 'j.log'}"
    assert nasfw(tmp_path, *TINY, f"storage.url={url}").returncode == 0
    path = tmp_path / "j.log"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = _damage(lines[1], "changed byte")
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()
    out = nasfw(tmp_path, *TINY, f"storage.url={url}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"storage.url={url}: the journal is damaged at byte {len(lines[0])}" in " ".join(
        out.stderr.split()
    )
    assert path.read_bytes() == before  # the failing rerun appends nothing


# Long (kill, tear and resume, ~20 s; the torn tail's handling has quick tests above):
# pytest -m slow runs it.
@pytest.mark.slow
def test_killed_journal_search_with_a_torn_record_resumes(tmp_path):
    from cli import start, wait_for_trials

    path = tmp_path / "j.log"
    url = f"journal://{path}"
    study = "random-iris-tabular_mlp-seed0"
    args = [*TINY, "tuner.n_trials=40", "tuner.batch_size=4", f"storage.url={url}"]
    proc = start(tmp_path, *args)
    assert wait_for_trials(url, study, 4, proc) >= 4
    proc.kill()  # a real SIGKILL mid-search, then the torn record such a kill can leave
    proc.communicate()
    with path.open("ab") as f:
        f.write(TORN)
    outs = [nasfw(tmp_path, *args) for _ in range(2)]
    assert [out.returncode for out in outs] == [0, 0], outs[-1].stderr
    (backup,) = tmp_path.glob("j.log.torn-*")
    assert backup.read_bytes() == TORN
    assert str(backup) in outs[0].stdout + outs[0].stderr  # the warning names it
    assert "unfinished record" not in outs[1].stdout + outs[1].stderr
    done = trials(url, study)
    assert len({(t.user_attrs["generation"], t.user_attrs["index"]) for t in done}) == 40
