"""The benchmarks end to end at a tiny size: the long ones are marked slow (``pytest -m
slow``); a benchmark whose contender finished nothing must fail, and those tests are quick."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import optuna
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "table1.py"


def benchmark(name: str) -> ModuleType:
    """The module ``benchmarks/<name>.py``, imported as the scripts import each other."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def first_generation(url: str, study: str) -> list[str]:
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    gen0 = sorted((t for t in trials if t.user_attrs["generation"] == 0),
                  key=lambda t: t.user_attrs["index"])  # fmt: skip
    return [t.user_attrs["graph_hash"] for t in gen0]


@pytest.mark.slow
def test_table1_quick(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "speedup" in proc.stdout and "acc. degradation" in proc.stdout

    doc = json.loads((out / "table1.json").read_text())
    digits = doc["problems"]["digits"]
    assert math.isfinite(digits["speedup"]) and digits["speedup"] > 0
    assert math.isfinite(digits["acc_degradation"])
    assert "failed trials count as accuracy 0" in doc["note"]
    assert (out / "table1.md").read_text().count("speedup") >= 1

    # Both groups started from the same initial-population file, and their first generations
    # are the same networks (regularized scoring records the unmodified genomes).
    runs = {r["group"]: r for r in doc["runs"] if r["problem"] == "digits"}
    assert set(runs) == {"plain", "regularized"}
    assert runs["plain"]["population"] == runs["regularized"]["population"]
    assert (out / runs["plain"]["population"]).is_file()  # paths relative to the results
    assert runs["plain"]["storage"] != runs["regularized"]["storage"]
    urls = {
        g: "sqlite:///" + str(out / r["storage"].removeprefix("sqlite:///"))
        for g, r in runs.items()
    }
    hashes = {g: first_generation(urls[g], r["study"]) for g, r in runs.items()}
    assert len(hashes["plain"]) == 4
    assert hashes["plain"] == hashes["regularized"]
    assert digits["same_initial_population"] is True

    # One MLflow run with the protocol, the per-problem metrics and the Fig. 4 plots.
    from mlflow.tracking import MlflowClient

    info = doc["mlflow"]  # its store's path relative to the results, as every path there
    client = MlflowClient("sqlite:///" + str(out / info["tracking_uri"].removeprefix("sqlite:///")))
    run = client.get_run(info["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("nasfw-benchmarks").experiment_id
    assert run.data.params["generations"] == "2"
    assert math.isclose(run.data.metrics["digits.speedup"], digits["speedup"])
    assert "digits.acc_degradation" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fig4a_time.png", "fig4b_accuracy.png", "table1.md", "table1.json"} <= artifacts

    # The issue #27 rules: per-pair figures with their spread, the deliverable (each group's
    # top networks retrained full size, scored on test), criteria declared before the run,
    # raw runs with relative paths only.
    pairs = digits["pairs"]
    assert [row["experiment"] for row in pairs["pairs"]] == [0]
    for key in ("speedup_cpu", "speedup_evolution_after_first", "deliverable_degradation"):
        assert pairs["figures"][key]["n"] == 1, key
    for run in runs.values():
        delivered = run["deliverable_test"]
        assert 1 <= len(delivered) <= 3 and all(0 < d["test"] <= 1 for d in delivered)
        assert set(run["generation_seconds"]) == {"0", "1"}
    assert "criterion table1:" in proc.stdout
    assert (out / "criteria.json").is_file()
    assert "Per pair, digits" in (out / "table1.md").read_text()
    raw = (out / "runs.jsonl").read_text()
    assert str(out) not in raw and '"storage": "sqlite:///' in raw


def test_table1_finds_the_shared_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--data-dir: mnist/ or else mnist10k/ (the shared data's name) is mnist; a relative
    directory is made absolute, since the runs start in the repository root."""
    table1 = benchmark("table1")
    for folder in ("mnist10k", "fashion_mnist", "empty"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        if folder != "empty":
            (tmp_path / "data" / folder / "train-images-idx3-ubyte.gz").write_bytes(b"")
    found = table1.find_data_problems(tmp_path / "data")
    assert found == {"mnist": tmp_path / "data" / "mnist10k",
                     "fashion_mnist": tmp_path / "data" / "fashion_mnist"}  # fmt: skip
    (tmp_path / "data" / "mnist").mkdir()
    (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte").write_bytes(b"")
    assert table1.find_data_problems(tmp_path / "data")["mnist"] == tmp_path / "data" / "mnist"

    monkeypatch.chdir(tmp_path)
    args = table1.parse_args(["--data-dir", "data", "--problems", "mnist", "--out", "o"])
    assert args.problem_list == ["mnist"]
    assert args.problem_dirs["mnist"] == (tmp_path / "data" / "mnist").resolve()
    assert "problem.data_dir=" + str(tmp_path.resolve() / "data" / "mnist") in (
        table1.common_overrides(args, "mnist")
    )


SHARED_DATA = REPO.parent / "shared" / "data"  # the real data sets (../shared/data/README)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist10k").is_dir(), reason="no ../shared/data/mnist10k")
def test_table1_quick_real_mnist(tmp_path: Path) -> None:
    """table1.py --quick on the real MNIST 10k of ../shared/data, as the README runs it."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--data-dir", str(SHARED_DATA), "--problems",
         "mnist", "--max-train-samples", "500", "--workers", "1", "--no-mlflow", "--out",
         str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "table1.json").read_text())
    assert doc["protocol"]["data_dirs"]["mnist"] == str((SHARED_DATA / "mnist10k").resolve())
    assert doc["protocol"]["max_train_samples"] == 500
    mnist = doc["problems"]["mnist"]
    assert math.isfinite(mnist["speedup"]) and mnist["speedup"] > 0
    assert math.isfinite(mnist["acc_degradation"])
    runs = [r for r in doc["runs"] if r["problem"] == "mnist"]
    assert {r["group"] for r in runs} == {"plain", "regularized"}
    for r in runs:
        assert "problem=mnist " in r["command"] and "problem.max_train_samples=500" in r["command"]
        assert "problem.data_dir=" + str((SHARED_DATA / "mnist10k").resolve()) in r["command"]
    for group in ("plain", "regularized"):
        row = mnist[group]
        assert row["failed"] == 0 and row["trials"] == 8
        # 28x28 digits, learnt: far above chance (0.1) after two epochs on 500 images.
        assert row["best_val"] > 0.6 and row["accuracy"] > 0.3
        assert row["flops"] > 15_000  # at least the 784 x 10 linear classifier
    assert "| | mnist |" in (out / "table1.md").read_text()


def test_harness_fails_a_search_without_finished_trials(tmp_path: Path) -> None:
    """benchmarks/harness.py: a search whose study holds no finished trial (an empty study, or
    one whose only trial never finished) fails the benchmark instead of showing "—"."""
    harness = benchmark("harness")
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="bench", storage=url, direction="maximize")
    with pytest.raises(harness.BenchmarkError, match="tpe: no finished trial"):
        harness.require_trials("tpe", harness.finished_trials(url, "bench"))
    study.ask()  # a RUNNING trial: started, never finished
    assert harness.finished_trials(url, "bench") == []
    with pytest.raises(SystemExit) as failed:
        harness.require_trials("tpe", harness.finished_trials(url, "bench"), tmp_path / "x.log")
    assert str(failed.value).endswith(f"nothing to report; see {tmp_path / 'x.log'}")
    harness.require_trials("tpe", [object()])  # one finished trial is enough

    curve = harness.best_so_far([(3.0, 0.5), (1.0, 0.4), (2.0, None), (4.0, 0.45), (5.0, 0.9)])
    assert curve == [(1.0, 0.4), (3.0, 0.5), (5.0, 0.9)]
    assert harness.time_to(curve, 0.5) == 3.0
    assert harness.time_to(curve, 0.95) is None and harness.time_to(curve, None) is None


@pytest.mark.slow
def test_gpu_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/gpu.py on small Fashion-MNIST-format files: the CPU rows (and GPU rows where
    torch sees a GPU), the search part reported as not run without one."""
    sys.path.insert(0, str(REPO / "tests" / "plugins"))
    try:
        from test_problems import _mnist_dir
    finally:
        sys.path.pop(0)
    data = _mnist_dir(tmp_path / "fmnist", gz=True, n_train=200, n_test=50)["dir"]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick", "--cpu-samples", "100",
         "--data-dir", str(data), "--out", str(out), "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "gpu.json").read_text())
    cpu = [r for r in doc["networks"] if r["device"] == "cpu"]
    assert [r["network"] for r in cpu] == ["mlp-256", "conv-16-32", "conv-32-64", "conv-32-64-64"]
    assert all(r["samples_per_second"] > 0 and 0 <= r["overhead_share"] < 1 for r in cpu)
    assert cpu[-1]["flops"] > 5e7  # the largest is ~10^8 FLOPs
    assert "samples / s" in (out / "gpu.md").read_text()


def test_problems_benchmark_baselines() -> None:
    """benchmarks/problems.py's baselines, scored with each problem's own metric."""
    problems = benchmark("problems")
    from nasfw import ProblemConfig
    from nasfw.evaluate import load_problem

    review = load_problem(ProblemConfig(name="review_sentiment"))
    assert 0.4 < problems.trivial(review) < 0.6
    name, score = problems.classic(review)
    assert name == "logistic regression on word counts"
    assert score > problems.trivial(review) + 0.05  # word counts know "good" from "bad"
    ppg = load_problem(ProblemConfig(name="ppg_heart_rate", n_samples=300))
    assert problems.trivial(ppg) < -25  # the mean predictor is ~35 bpm off
    name, score = problems.classic(ppg)
    assert name == "spectral peak" and problems.trivial(ppg) < score < 0


@pytest.mark.slow
def test_petridish_benchmark_tiny(tmp_path: Path) -> None:
    """benchmarks/petridish.py at a tiny size: Petridish and random search on digits over two
    seeds at equal CPU budgets, paired by seed, Petridish's hull and rounds kept, its
    deliverable its stored network scored on test; ``--report`` gives the same tables."""
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "benchmarks" / "petridish.py"), "--problems", "digits",
               "--seeds", "2", "--budget", "6", "--epochs", "2", "--arms", "petridish", "random",
               "--no-mlflow", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("criterion petridish vs random: on every problem")
    for seed in range(2):
        for arm in ("petridish", "random"):
            path = out / "runs" / "digits" / f"seed{seed}" / f"{arm}.json"
            run = json.loads(path.read_text())
            assert str(tmp_path) not in path.read_text() and run["stopped_by_budget"]
            assert run["trials"] >= 1 and 0.5 < run["best"] <= 1 and 0.5 < run["test"] <= 1
            assert run["curve"][-1][0] <= 6 and run["hull"]
            errors = [e for _, e in run["hull"]]
            assert errors == sorted(errors, reverse=True)  # more FLOPs, lower error
            assert min(errors) == pytest.approx(1 - run["best"], abs=1e-4)
        rounds = json.loads((out / "runs" / "digits" / f"seed{seed}" / "petridish.json")
                            .read_text())["rounds"]  # fmt: skip
        assert [r["round"] for r in rounds] == list(range(len(rounds))) and rounds[0]["pool"] == 4
    # Petridish's deliverable is its stored network, as export_best hands it over; retrained
    # it would be another network (its weights were inherited), so without them: an error.
    harness = benchmark("harness")
    from nasfw.weights import WeightStore

    run_dir = out / "runs" / "digits" / "seed0" / "petridish"
    run = json.loads(run_dir.with_suffix(".json").read_text())
    records = harness.finished_trials(f"sqlite:///{run_dir / 'nasfw.db'}", "bench")
    delivered = next(r for r in records if r.number == run["delivered_trial"])
    store = WeightStore(str(run_dir / "nasfw-artifacts"), "bench")
    train = {"threads": 1, "epochs": 2}
    assert harness.retrain_on_test(delivered, {"name": "digits"}, 0, train, store) == run["test"]
    with pytest.raises(ValueError, match="needs its search's stored weights"):
        harness.retrain_on_test(delivered, {"name": "digits"}, 0, train)
    doc = json.loads((out / "petridish.json").read_text())
    pair = doc["summary"]["digits"]["pairs"]["petridish vs random"]
    assert pair["best_difference"]["n"] == pair["test_difference"]["n"] == 2
    assert set(doc["criteria"]) == {"petridish vs random"}
    assert (out / "petridish_digits.png").stat().st_size > 10_000
    table = (out / "petridish.md").read_text()
    assert "| petridish vs random (" in table
    report = subprocess.run([*command, "--report"], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "petridish.md").read_text() == table


def test_petridish_benchmark_fails_on_an_arm_that_finished_nothing(tmp_path: Path) -> None:
    """An arm refused at the door (exit 2, no trial) fails the benchmark with its name."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "petridish.py"), "--problems", "digits",
         "--seeds", "1", "--budget", "1", "--arms", "petridish", "random", "--no-mlflow",
         "--override", "train.batch_size=-1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "petridish digits seed 0 petridish (exit code 2): no finished trial" in proc.stderr
    assert not (tmp_path / "out" / "petridish.md").exists()


@pytest.mark.slow
def test_multifidelity_benchmark_tiny(tmp_path: Path) -> None:
    """benchmarks/multifidelity.py at a tiny size: TPE with and without the Hyperband pruner on
    digits over two seeds, each judged in CPU seconds from its first training step, paired by
    seed, the deliverable scored on test; a rerun resumes (runs nothing), ``--report``
    regenerates the tables from the raw runs alone and fails on an arm whose raw run is gone."""
    out = tmp_path / "out"
    arms = ["tpe", "tpe+hyperband"]
    command = [sys.executable, str(REPO / "benchmarks" / "multifidelity.py"), "--problems",
               "digits", "--seeds", "2", "--budget", "4", "--epochs", "3", "--arms", *arms,
               "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("criterion tpe+hyperband vs tpe: on every problem")  # first
    criteria = json.loads((out / "criteria.json").read_text())["criteria"]
    assert (
        set(criteria) == {"tpe+hyperband vs tpe"}
        and "<= 0.7 of tpe's" in criteria["tpe+hyperband vs tpe"]
    )
    for arm in arms:
        for seed in range(2):
            path = out / "runs" / "digits" / f"seed{seed}" / f"{arm.replace('+', '_')}.json"
            run = json.loads(path.read_text())
            assert str(tmp_path) not in path.read_text()  # relative paths only
            assert run["log"] == f"{arm.replace('+', '_')}/run.log" and run["stopped_by_budget"]
            cpus = [t["cpu"] for t in run["per_trial"]]
            assert cpus == sorted(cpus) and run["curve"][-1][0] <= 4
            assert run["trials"] >= 1 and 0.5 < run["best"] <= 1 and 0.5 < run["test"] <= 1
            full = [t for t in run["per_trial"] if t["full"] and t["cpu"] <= 4]
            assert run["best"] == max(t["value"] for t in full)  # only full-budget networks
            if arm == "tpe":
                assert run["short"] == 0 and run["epochs_trained"] == 3 * run["trials"]
    doc = json.loads((out / "multifidelity.json").read_text())
    assert doc["protocol"]["budget_unit"].startswith("CPU seconds")
    summary = doc["summary"]["digits"]
    assert list(summary["arms"]) == arms
    assert summary["arms"]["tpe"]["best"]["n"] == summary["arms"]["tpe"]["test"]["n"] == 2
    pair = summary["pairs"]["tpe+hyperband vs tpe"]
    assert pair["partner"] == "tpe" and pair["target"] == summary["arms"]["tpe"]["best"]["median"]
    assert pair["best_difference"]["n"] == pair["test_difference"]["n"] == 2
    assert 0 <= pair["reached"] <= 2 and pair["interval"][0] <= pair["interval"][1]
    assert set(doc["criteria"]) == {"tpe+hyperband vs tpe"}
    assert (out / "multifidelity_digits.png").stat().st_size > 10_000
    assert mlflow_runs(out / "mlflow.db") == 1
    table = (out / "multifidelity.md").read_text()
    assert "| tpe+hyperband vs tpe (" in table

    report = subprocess.run([*command, "--report", "--no-mlflow"], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "multifidelity.md").read_text() == table
    again = subprocess.run([*command, "--no-mlflow"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("on disk: runs/digits/seed") == 4  # resumed: nothing ran

    (out / "runs" / "digits" / "seed1" / "tpe_hyperband.json").unlink()
    gone = subprocess.run([*command, "--report", "--no-mlflow"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert gone.returncode == 1
    assert "multifidelity digits seed 1 tpe+hyperband: no raw result" in gone.stderr


def test_multifidelity_benchmark_fails_on_an_arm_that_finished_nothing(tmp_path: Path) -> None:
    """An arm refused at the door (exit 2, no trial) fails the benchmark with its name, instead
    of a table that shows a dash for it."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "multifidelity.py"), "--problems", "digits",
         "--seeds", "1", "--budget", "1", "--arms", "tpe", "tpe+hyperband", "--no-mlflow",
         "--override", "train.batch_size=-1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "multifidelity digits seed 0 tpe (exit code 2): no finished trial" in proc.stderr
    assert not (tmp_path / "out" / "multifidelity.md").exists()
    assert not (tmp_path / "out" / "runs" / "digits" / "seed0" / "tpe.json").exists()


@pytest.mark.slow
def test_startup_benchmark_quick() -> None:
    """benchmarks/startup.py with one run per command: its table, and the tiny search's row."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "startup.py"), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| command | best s | median s | target s | result |" in proc.stdout
    for command in ("--help`", "--cfg job`", "import nasfw'`"):
        row = next(line for line in proc.stdout.splitlines() if command in line)
        assert row.endswith(("| pass |", "| FAIL |")), row  # timed (the verdict is the machine's)
    search = next(line for line in proc.stdout.splitlines() if "first training step" in line)
    assert float(search.split("|")[2]) > 0, search


@pytest.mark.slow
def test_minibench_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/minibench.py --quick: a six-problem DB, two problems left out, every search
    judged at the budget; the classifier and screening figures."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "minibench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "minibench.json").read_text())
    runs = {(r["problem"], r["space"]): r for r in doc["runs"]}
    assert set(runs) == {
        ("mnist1d", "petridish_full_sequence"),
        ("mnist1d", "auto"),
        ("mnist1d", "sequence_small"),
        ("review_sentiment", "text_small"),
        ("review_sentiment", "auto"),
    }
    for (problem, space), row in runs.items():
        assert row["trials"] >= 1 and row["best"] is not None, (problem, space)
        if space == "auto":
            assert row["probe_trials"] >= 1 and row["class"].startswith("mb_")
    # Left out: the DB the auto search used had no mnist1d.
    from nasfw.minibench.db import BestModelDB

    kept = {p.id for p in BestModelDB(str(out / "dbs" / "without-mnist1d.db")).problems()}
    assert not any(pid.startswith("mnist1d") for pid in kept) and len(kept) == 5
    assert [row["folding"] for row in doc["classifier"]] == [1, 4]
    assert doc["screening"]["problems"] >= 4
    assert "| mnist1d | codeepneat | auto" in proc.stdout


@pytest.mark.slow
def test_overhead_profile_quick() -> None:
    """benchmarks/overhead.py on a few networks: every category in the table, training first."""
    script = str(REPO / "benchmarks" / "overhead.py")
    proc = subprocess.run(
        [sys.executable, script, "--trials", "4", "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == [
        "training", "scoring", "build and size check", "Optuna writes", "MLflow", "export",
        "problem load", "other",
    ]  # fmt: skip
    assert float(rows[0].split("|")[2]) > 0
    assert "wall / train_seconds" in proc.stdout


@pytest.mark.slow
def test_throughput_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/throughput.py --quick: every configuration's figures from its study, the
    2-worker ratio against the 1-worker baseline."""
    script = str(REPO / "benchmarks" / "throughput.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "throughput.json").read_text())
    assert [r["config"] for r in doc["rows"]] == [
        "small-driver", "large-1worker-1thread", "large-2workers-async",
    ]  # fmt: skip
    for row in doc["rows"]:
        assert row["trials"] == 8
        assert row["overhead"] > 1 and row["cli_over_training"] > row["overhead"]
        assert 0 < row["utilisation"] <= 1
        assert 0 < row["span_seconds"] <= row["generation_seconds"]
        assert row["overhead_in_span"] <= row["overhead"] + 1e-9
    markdown = (tmp_path / "throughput.md").read_text()
    assert "large-2workers-async vs 1 worker" in markdown
    assert "in the evaluating span (the workers' start left out)" in markdown


def test_throughput_span_leaves_out_what_precedes_the_first_evaluation() -> None:
    """The evaluating span runs from the first evaluation's start to the last one's end: the
    workers' start before it is ``start_seconds``, not counted in the span's figures."""
    throughput = benchmark("throughput")
    trials = [
        {"started": 104.0, "finished": 105.0, "train_seconds": 0.8},
        {"started": 104.5, "finished": 106.0, "train_seconds": 1.2},
    ]
    row = {"workers": 2, "generation_seconds": 6.0, "per_trial": trials}
    span = throughput.with_span(row)
    assert span["span_seconds"] == pytest.approx(2.0)
    assert span["start_seconds"] == pytest.approx(4.0)
    assert span["throughput_in_span"] == pytest.approx(1.0)
    assert span["overhead_in_span"] == pytest.approx(2 * 2.0 / 2.0)


@pytest.mark.slow
def test_peers_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/peers.py at a tiny size: peers and nasfw on digits over three seeds, each
    judged in CPU seconds from its first training step, the deliverable scored on test, the
    figures with their spread; ``--report`` regenerates the tables from the raw runs alone."""
    out = tmp_path / "out"
    names = ["optuna_tpe", "handmade_cnn", "tpe"]
    command = [sys.executable, str(REPO / "benchmarks" / "peers.py"), "--quick", "--budget", "6",
               "--contenders", *names, "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("criterion peers: on every problem")  # declared first
    doc = json.loads((out / "peers.json").read_text())
    assert doc["protocol"]["budget_unit"].startswith("CPU seconds")
    summary = doc["summary"]["digits"]
    assert list(summary["contenders"]) == names
    for name in names:
        row = summary["contenders"][name]
        assert row["seeds"] == 3 and row["best"]["n"] == row["test"]["n"] == 3
        assert row["best"]["ci_low"] <= row["best"]["median"] <= row["best"]["ci_high"]
        for seed in range(3):
            run = json.loads((out / "runs" / "digits" / f"seed{seed}" / f"{name}.json").read_text())
            assert run["log"] == f"{name}/run.log"  # relative to the raw file
            cpus = [t["cpu"] for t in run["per_trial"]]
            assert cpus == sorted(cpus) and run["curve"][-1][0] <= 6
            assert 0.5 < run["test"] <= 1 and run["startup_cpu_seconds"] > 0
            if name != "handmade_cnn":
                assert run["stopped_by_budget"], (name, seed)
    assert set(summary["targets"]) == {"optuna_tpe", "handmade_cnn"}
    assert set(summary["targets"]["optuna_tpe"]["nasfw"]) == {"tpe"}
    assert (out / "peers_digits.png").stat().st_size > 10_000
    table = (out / "peers.md").read_text()
    again = subprocess.run([*command, "--report"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "peers.md").read_text() == table


def test_peers_benchmark_fails_on_a_contender_that_finished_nothing(tmp_path: Path) -> None:
    """A nasfw contender refused at the door (exit 2, no trial) fails the benchmark with its
    name, instead of a table that shows a dash for it."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "peers.py"), "--quick", "--seeds", "1",
         "--budget", "1", "--contenders", "tpe", "optuna_tpe", "--no-mlflow",
         "--nasfw-override", "train.batch_size=-1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "peers digits seed 0 tpe (exit code 2): no finished trial" in proc.stderr
    assert not (tmp_path / "out" / "peers.md").exists()


# -- the rules every benchmark follows (benchmarks/harness.py, benchmarks/spread.py) -----------

BURN = """
import multiprocessing, signal, sys, time
def burn():
    while True:
        pass
if __name__ == "__main__":
    # Exit 3 on the budget's SIGINT wherever it lands (on a loaded machine, maybe before the
    # child has started); the child is a daemon: it ends with the parent.
    signal.signal(signal.SIGINT, lambda *_: sys.exit(3))
    multiprocessing.Process(target=burn, daemon=True).start()
    time.sleep(600) if "--idle-parent" in sys.argv else burn()
"""


def test_a_cpu_budget_counts_the_whole_process_tree_and_stops_it(tmp_path: Path) -> None:
    """The budget is CPU seconds of the process and its children (a search's workers), not
    wall time: a parent that sleeps while its child burns is stopped by the child's CPU."""
    harness = benchmark("harness")
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    run = harness.run_command(
        [sys.executable, str(script), "--idle-parent"], cwd=tmp_path, log=tmp_path / "log",
        cpu_budget=1.5, timeout=120, grace=20,
    )  # fmt: skip
    assert run.stopped_by_budget and not run.timed_out and run.returncode == 3
    # Sampled every 0.2 s: a little past the budget (more on a loaded machine), never before.
    assert 1.5 <= run.stopped_at_cpu < 10.0
    first, last = run.cpu_timeline[0], run.cpu_timeline[-1]
    assert last[1] >= 1.5 and run.cpu_at(last[0]) == last[1]
    assert run.cpu_at(first[0] - 10) == first[1]


BURN_UNTIL_CTRL_C = """
import sys
try:
    while True:
        pass
except KeyboardInterrupt:  # Python's own SIGINT handler, as a hand-written Optuna script has
    sys.exit(3)
"""


def test_a_cpu_budget_stops_a_contender_launched_from_a_background_job(tmp_path: Path) -> None:
    """A benchmark started in the background (``nohup ... &``) ignores SIGINT, and its children
    inherit that: the budget's Ctrl-C must still reach a contender that relies on Python's
    KeyboardInterrupt (a peer's ``study.optimize`` once ran on for 25 minutes past its budget,
    until killed, its deliverable lost)."""
    import signal

    harness = benchmark("harness")
    script = tmp_path / "burn.py"
    script.write_text(BURN_UNTIL_CTRL_C)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = harness.run_command(
            [sys.executable, str(script)], cwd=tmp_path, log=tmp_path / "log", cpu_budget=1.0,
            timeout=120, grace=20,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert run.stopped_by_budget and not run.timed_out and run.returncode == 3


def test_a_cpu_budget_counts_from_its_origin(tmp_path: Path) -> None:
    """With ``cpu_origin`` (the first training step, once known) the CPU spent before it is
    not charged: the process is stopped one budget after the origin, not after the launch."""
    harness = benchmark("harness")
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    marker: list[float] = []

    def origin() -> float | None:
        # The origin becomes known 1 s after the launch (as a search's first step is known
        # only once its first trial has finished), and lies 0.5 s after the launch.
        if not marker:
            return None
        return marker[0]

    import threading

    launched = time.time()
    threading.Timer(1.0, lambda: marker.append(launched + 0.5)).start()
    run = harness.run_command(
        [sys.executable, str(script)], cwd=tmp_path, log=tmp_path / "log", cpu_budget=1.0,
        cpu_origin=origin, timeout=120, grace=20,
    )  # fmt: skip
    assert run.stopped_by_budget
    at_origin = run.cpu_at(marker[0])
    at_stop = run.cpu_timeline[-1][1]
    assert at_origin > 0 and at_stop - at_origin >= 1.0


def test_a_cpu_budget_cannot_capture_output(tmp_path: Path) -> None:
    harness = benchmark("harness")
    with pytest.raises(ValueError, match="logs to a file"):
        harness.run_command(["true"], cwd=tmp_path, capture=True, cpu_budget=1.0)


def test_a_figure_is_a_median_with_its_interval_and_range() -> None:
    spread = benchmark("spread")
    s = spread.describe([0.90, 0.92, 0.91, 0.95, 0.89])
    assert s.n == 5 and s.median == 0.91 and (s.low, s.high) == (0.89, 0.95)
    assert s.low <= s.ci_low <= s.median <= s.ci_high <= s.high
    assert s.text() == f"0.910 [{s.ci_low:.3f}, {s.ci_high:.3f}] (n=5, range 0.890 to 0.950)"
    assert spread.describe([0.90, 0.92, 0.91, 0.95, 0.89]) == s  # seeded: reports reprint it
    two = spread.describe([1.0, 2.0])
    assert "[no CI]" in two.text() and two.ci_low == two.ci_high == 1.5
    for bad in ([], [1.0, float("nan")], [float("inf")]):
        with pytest.raises(ValueError):
            spread.describe(bad)


def test_paired_arms_are_compared_pair_by_pair() -> None:
    spread = benchmark("spread")
    a = [0.91, 0.93, 0.90, 0.94, 0.92, 0.95, 0.93, 0.96]
    b = [0.90, 0.91, 0.90, 0.92, 0.91, 0.93, 0.92, 0.93]
    p = spread.paired(a, b, tolerance=1e-9)
    assert (p.n, p.wins, p.ties, p.losses) == (8, 7, 1, 0)
    assert p.difference.median > 0 and p.p_value is not None and p.p_value < 0.05
    assert spread.paired(b, b).p_value is None  # no difference: no test to run
    assert "Wilcoxon p=" in p.text()
    with pytest.raises(ValueError, match="as many runs"):
        spread.paired(a, b[:-1])


def test_criteria_are_declared_before_and_judged_after(tmp_path: Path) -> None:
    harness = benchmark("harness")
    criteria = [
        harness.Criterion("speedup", "median speedup >= 1.48", lambda f: f["speedup"] >= 1.48),
        harness.Criterion("loss", "degradation <= 0.5 pt", lambda f: f["degradation"] <= 0.5),
    ]
    declared = json.loads(harness.declare(criteria, tmp_path).read_text())
    assert declared["criteria"] == {
        "speedup": "median speedup >= 1.48",
        "loss": "degradation <= 0.5 pt",
    }
    assert harness.judge(criteria, {"speedup": 1.6, "degradation": 0.7}) == {
        "speedup": True, "loss": False,
    }  # fmt: skip
    with pytest.raises(harness.BenchmarkError, match="criterion loss: no figure 'degradation'"):
        harness.judge(criteria, {"speedup": 1.6})


def test_a_resumed_run_keeps_the_moment_its_criteria_were_declared(tmp_path: Path) -> None:
    harness = benchmark("harness")
    speedup = harness.Criterion("speedup", "median speedup >= 1.48", lambda f: True)
    first = json.loads(harness.declare([speedup], tmp_path).read_text())["declared"]
    time.sleep(0.01)
    again = json.loads(harness.declare([speedup], tmp_path).read_text())["declared"]
    assert again == first
    changed = harness.Criterion("speedup", "median speedup >= 1.9", lambda f: True)
    anew = json.loads(harness.declare([changed], tmp_path).read_text())
    assert anew["declared"] > first and anew["criteria"] == {"speedup": "median speedup >= 1.9"}


def test_raw_results_carry_relative_paths_only(tmp_path: Path) -> None:
    harness = benchmark("harness")
    out = tmp_path / "results"
    doc = {
        "log": out / "runs" / "a.log",
        "runs": [{"storage": str(out / "nasfw.db")}],
        "script": str(REPO / "benchmarks" / "peers.py"),
        "elsewhere": "/usr/bin/python3",
        "url": f"sqlite:///{out / 'studies' / 'a.db'}",
        "command": f"python -m nasfw tuner.init_population={out / 'pop.json'} seed=0",
        "value": 0.5,
        # The data beside the checkout, inside a JSON argument (peers' --problem-json).
        "data": f'peers.py --problem-json \'{{"data_dir": "{REPO.parent}/shared/data/x"}}\'',
    }
    written = json.loads(harness.write_raw(out / "raw.json", doc).read_text())
    data_dir = written["data"].split('"data_dir": "')[1].split('"')[0]
    assert not data_dir.startswith("/")
    assert (out / data_dir).resolve() == (REPO.parent / "shared" / "data" / "x").resolve()
    assert written["log"] == "runs/a.log" and written["runs"][0]["storage"] == "nasfw.db"
    assert not written["script"].startswith("/")
    assert written["script"].endswith("benchmarks/peers.py")
    assert written["url"] == "sqlite:///studies/a.db"
    assert written["command"] == "python -m nasfw tuner.init_population=pop.json seed=0"
    assert written["elsewhere"] == "/usr/bin/python3" and written["value"] == 0.5
    assert str(tmp_path) not in json.dumps(written)


@pytest.mark.slow
def test_table1_pairs_quick(tmp_path: Path) -> None:
    """benchmarks/table1_pairs.py at a tiny size: each genome of one initial population scored
    plain and by two regularized arms, interleaved; figures with their spread; --report
    regenerates the table from the raw lines alone."""
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "benchmarks" / "table1_pairs.py"), "--quick",
               "--out", str(out), "--no-mlflow"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("criterion method:")
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(12))
    for r in rows:
        for arm in ("plain", "seeds", "strong"):
            assert r[arm]["cpu"] >= 0 and 0 <= r[arm]["accuracy"] <= 1
    doc = json.loads((out / "table1_pairs.json").read_text())
    seeds = doc["figures"]["seeds"]
    assert seeds["n"] == 12 and seeds["ratio"]["n"] == 12
    assert seeds["difference"]["ci_low"] <= seeds["difference"]["median"]
    assert doc["protocol"]["arms"]["strong"]["strength"] == 4.0
    table = (out / "table1_pairs.md").read_text()
    again = subprocess.run([*command, "--report"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "table1_pairs.md").read_text() == table
    # Resumable: a rerun scores nothing again.
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "genome 0 (" not in rerun.stdout


@pytest.mark.slow
def test_tabular_benchmark_tiny(tmp_path: Path) -> None:
    """benchmarks/tabular.py at a tiny size: every arm's raw file, the report, plots, the docs
    page and one MLflow run; a second run resumes (runs nothing); an arm whose raw results are
    gone fails --report (exit 1, naming it)."""
    script = str(REPO / "benchmarks" / "tabular.py")
    out = tmp_path / "out"
    size = ["--tables", "nb201_cifar10,fcnet_naval", "--seeds", "2", "--evals", "12"]

    def tabular(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, *size, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=900,
        )

    proc = tabular("--docs", str(tmp_path / "docs" / "tabular.md"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mod = benchmark("tabular")
    raw = sorted(p.relative_to(out).as_posix() for p in (out / "raw").rglob("*.json"))
    assert len(raw) == 2 * len(mod.ARMS) * 2
    one = json.loads((out / "raw" / "fcnet_naval" / "re_reference" / "seed1.json").read_text())
    assert len(one["trials"]["true"]) == 12 and str(tmp_path) not in json.dumps(one)
    doc = json.loads((out / "tabular.json").read_text())
    assert set(doc["summary"]["nb201_cifar10"]) == set(mod.ARMS)
    mean, se = doc["summary"]["nb201_cifar10"]["nasfw_evolution"]["10"]
    assert 50 < mean < 100 and se >= 0  # a true NAS-Bench-201 accuracy in percent
    assert {b["table"] for b in doc["beyond"]} == {"nb201_cifar10", "fcnet_naval"}
    assert (out / "anytime_evals.png").stat().st_size > 0
    assert (tmp_path / "docs" / "images" / "tabular" / "anytime_simulated.png").exists()
    assert "nb201_cifar10" in (tmp_path / "docs" / "tabular.md").read_text()
    runs = mlflow_runs(out / "mlflow.db")
    assert runs == 1

    again = tabular("--no-mlflow")
    assert again.returncode == 0 and "evaluations in" not in again.stdout  # all skipped

    for path in (out / "raw" / "fcnet_naval" / "nasfw_tpe").iterdir():
        path.unlink()
    empty = tabular("--report", "--no-mlflow")
    assert empty.returncode == 1
    assert "nasfw_tpe on fcnet_naval, seed 0: 0 of 12 evaluations" in empty.stderr


def mlflow_runs(db: Path) -> int:
    """The runs in an MLflow SQLite store, read with sqlite3."""
    import sqlite3

    with sqlite3.connect(db) as con:
        return int(con.execute("select count(*) from runs").fetchone()[0])


def test_throughput_pairs_each_ray_row_with_the_local_launcher_of_its_repeat() -> None:
    """benchmarks/throughput.py's Ray rows: ratios per repeat against the same repeat's local
    launcher, their median and range, and the criterion fixed in the script."""
    throughput = benchmark("throughput")

    def row(config: str, repeat: int, rate: float, after: float) -> dict:
        return {
            "config": config,
            "repeat": repeat,
            "throughput": rate,
            "throughput_after_start": after,
        }

    rows = [
        row("second-local-2workers", 0, 2.0, 2.0),
        row("second-ray-local", 0, 1.6, 2.0),  # 25 % more wall time per evaluation
        row("second-local-2workers", 1, 1.0, 1.0),
        row("second-ray-local", 1, 1.0, 0.8),
        row("second-local-2workers", 2, 4.0, 4.0),
        row("second-ray-local", 2, 4.0, 4.0),
    ]
    ratios = throughput.ray_ratios(rows)
    assert list(ratios) == ["second-ray-local"]  # no cluster row: none made up
    extra = ratios["second-ray-local"]["extra_wall_per_evaluation"]
    assert extra["per_repeat"] == pytest.approx([0.25, 0.0, 0.0])
    assert (extra["median"], extra["min"], extra["max"]) == pytest.approx((0.0, 0.0, 0.25))
    after = ratios["second-ray-local"]["extra_wall_after_start"]["per_repeat"]
    assert after == pytest.approx([0.0, 0.25, 0.0])
    assert ratios["second-ray-local"]["criterion"] == {"allowance": 0.10, "met": True}
    markdown = throughput.table({}, 3, ratios)
    assert "| second-ray-local | 1.00x (0.80 … 1.00) | +0.0% (+0.0% … +25.0%) |" in markdown
    assert "at most 10% more wall time per evaluation: met." in markdown


def test_transfer_benchmark_tiny(tmp_path: Path) -> None:
    """benchmarks/transfer.py at a tiny size: the DB, every arm's raw file (the warm arms'
    probe counted in their evaluations, seeded from donors other than the held-out table), the
    report and the docs page; a rerun resumes; an arm whose raw results are gone fails
    --report (exit 1, naming it)."""
    script = str(REPO / "benchmarks" / "transfer.py")
    out = tmp_path / "out"
    size = ["--tables", "nb201_cifar10,fcnet_naval", "--seeds", "2", "--evals", "40"]

    def transfer(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, *size, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=900,
        )

    proc = transfer("--docs", str(tmp_path / "transfer.md"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mod = benchmark("transfer")
    raw = sorted((out / "raw").rglob("*.json"))
    assert len(raw) == 2 * len(mod.ARMS) * 2
    warm = json.loads((out / "raw" / "nb201_cifar10" / "warm_tpe" / "seed0.json").read_text())
    assert len(warm["trials"]["true"]) == 40 and str(tmp_path) not in json.dumps(warm)
    assert "minibench.warm_start=true" in warm["overrides"]
    assert set(mod.ARMS) == {f"{k}_{t}" for k in ("cold", "warm", "auto", "autowarm")
                             for t in ("evolution", "tpe")}  # fmt: skip
    for arm, has, lacks in (
        ("auto_evolution", "search_space=auto", "minibench.warm_start=true"),
        ("autowarm_tpe", "minibench.warm_start=true", None),
    ):
        doc = json.loads((out / "raw" / "fcnet_naval" / arm / "seed1.json").read_text())
        assert len(doc["trials"]["true"]) == 40
        assert has in doc["overrides"] and "search_space=auto" in doc["overrides"]
        assert lacks is None or lacks not in doc["overrides"]
        assert any("without_fcnet_naval.db" in o for o in doc["overrides"])
    from nasfw.minibench.db import BestModelDB

    held = BestModelDB(str(out / "db" / "without_nb201_cifar10.db"), must_exist=True)
    assert "nb201_cifar10" not in {p.id for p in held.problems()}
    assert len(held.problems()) == len(mod.TABLES) - 1
    held.close()
    doc = json.loads((out / "transfer.json").read_text())
    mean, se = doc["summary"]["nb201_cifar10"]["warm_evolution"]["25"]
    assert 50 < mean < 100 and se >= 0  # a true NAS-Bench-201 accuracy in percent
    assert set(doc["wilcoxon"]) == {"nb201_cifar10", "fcnet_naval"}
    assert set(doc["wilcoxon"]["fcnet_naval"]) == {a for a in mod.ARMS if not a.startswith("cold")}
    assert set(doc["never_worse"]["nb201_cifar10"]) == {
        f"{k}_{t}" for k in ("auto", "autowarm") for t in ("evolution", "tpe")
    }
    assert doc["summary"]["fcnet_naval"]["quarter"]["arm"] in doc["wilcoxon"]["fcnet_naval"]
    declared = json.loads((out / "criteria.json").read_text())["criteria"]
    assert declared["quarter_budget"] and declared["never_worse"]
    assert "nb201_cifar10" in (tmp_path / "transfer.md").read_text()

    again = transfer()
    assert again.returncode == 0 and " s\n" not in again.stdout  # every search skipped

    for arm in ("cold_tpe", "autowarm_evolution"):  # a cold arm empty, then a transfer one
        for path in (out / "raw" / "fcnet_naval" / arm).iterdir():
            path.unlink()
        empty = transfer("--report")
        assert empty.returncode == 1
        assert f"{arm} on fcnet_naval, seed 0: 0 of 40 evaluations" in empty.stderr


def test_a_search_that_leaves_its_scoring_to_the_problem_is_refused() -> None:
    """With evaluation=auto, fashion_mnist picks regularized scoring: a benchmark arm meant as
    plain would be regularized there, and a pruner arm refused (the Fashion-MNIST peers met
    it). Every arm of the scripts names its scoring, and the harness refuses one that does not."""
    harness = benchmark("harness")
    with pytest.raises(harness.BenchmarkError, match=r"tpe .*names no evaluation="):
        harness.require_scoring("tpe on fashion_mnist", ["python", "-m", "nasfw", "tuner=tpe"])
    harness.require_scoring("tpe", ["python", "-m", "nasfw", "tuner=tpe", "evaluation=plain"])
    peers = benchmark("peers")
    multifidelity, petridish = benchmark("multifidelity"), benchmark("petridish")
    for overrides in peers.NASFW.values():
        harness.require_scoring("peers", overrides)
    for bench in (multifidelity.BENCHMARK, petridish.BENCHMARK):
        for arm in bench.arms.values():
            harness.require_scoring(bench.name, [*bench.common, *arm])
