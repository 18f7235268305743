"""The benchmarks end to end at a tiny size: benchmarks/table1.py (the seeds' Table 1) and
benchmarks/petridish.py are long runs (``pytest -m slow``), benchmarks/gpu.py is quick."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
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
    assert Path(runs["plain"]["population"]).is_file()
    assert runs["plain"]["storage"] != runs["regularized"]["storage"]
    hashes = {g: first_generation(r["storage"], r["study"]) for g, r in runs.items()}
    assert len(hashes["plain"]) == 4
    assert hashes["plain"] == hashes["regularized"]
    assert digits["same_initial_population"] is True

    # One MLflow run with the protocol, the per-problem metrics and the Fig. 4 plots.
    from mlflow.tracking import MlflowClient

    info = doc["mlflow"]
    client = MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("nasfw-benchmarks").experiment_id
    assert run.data.params["generations"] == "2"
    assert math.isclose(run.data.metrics["digits.speedup"], digits["speedup"])
    assert "digits.acc_degradation" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fig4a_time.png", "fig4b_accuracy.png", "table1.md", "table1.json"} <= artifacts


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
def test_petridish_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/petridish.py on digits with one round: every tuner judged at Petridish's time."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "petridish.py"), "--problems", "digits",
         "--rounds", "1", "--epochs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    digits = json.loads((out / "petridish.json").read_text())["digits"]
    budget = digits["budget_seconds"]
    for tuner in ("petridish", "codeepneat", "random"):
        row = digits[tuner]
        assert row["trials"] >= 1 and 0 < row["best_val"] <= 1 and 0 < row["best_test"] <= 1
        assert row["wall_seconds"] <= budget + 1e-6 and row["hull"]
    assert [r["round"] for r in digits["petridish_rounds"]] == [0, 1]
    assert "| petridish |" in proc.stdout


@pytest.mark.slow
def test_multifidelity_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/multifidelity.py on digits, tiny: each search judged at the full budget."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "multifidelity.py"), "--problems", "digits",
         "--epochs", "3", "--trials", "4", "--generations", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    digits = json.loads((out / "multifidelity.json").read_text())["digits"]
    assert set(digits) == {"tpe", "tpe+hyperband", "codeepneat", "codeepneat+median",
                           "hyperband tuner"}  # fmt: skip
    for row in digits.values():
        assert 0 < row["best"] <= 1 and row["curve"][-1][1] == row["best"]
        assert row["epochs_trained"] <= 3 * row["trials"]
    assert digits["tpe"]["pruned"] == 0 and digits["tpe"]["epochs_trained"] == 12
    assert "| codeepneat+median |" in proc.stdout


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
    assert "large-2workers-async vs 1 worker" in (tmp_path / "throughput.md").read_text()


@pytest.mark.slow
def test_peers_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/peers.py --quick: plain Optuna and every nasfw tuner on digits at the same
    budget, each judged from its own trials; the ratios against plain Optuna's final best."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "peers.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "peers.json").read_text())
    budget = doc["protocol"]["budget"]
    names = ["optuna", "tpe", "codeepneat", "codeepneat+regularized", "evolution", "random"]
    summary = doc["summary"]["digits"]
    assert list(summary["contenders"]) == names
    runs = {r["contender"]: r for r in doc["runs"]}
    assert list(runs) == names  # one round, in the protocol's order
    for name, run in runs.items():
        assert run["stopped_by_budget"], name  # more trials than the budget allows
        assert run["trials"] >= 1 and run["curve"], (name, run["log"])
        times = [t for t, _ in run["curve"]]
        values = [v for _, v in run["curve"]]
        assert times == sorted(times) and times[0] > 0 and times[-1] <= budget
        assert values == sorted(values) and len(set(values)) == len(values)
        assert 0.1 <= run["best"] == values[-1] <= 1
        if name != "optuna":
            assert "launcher.workers=0" in run["command"] and "tracking=none" in run["command"]
    plain = summary["contenders"]["optuna"]
    assert plain["ratio"] == 1.0 and plain["best"] == summary["plain_final_best"]
    for name in names[1:]:
        row = summary["contenders"][name]
        reached = row["best"] >= summary["plain_final_best"] - 1e-9
        assert (row["ratio"] is not None) == reached, name
    text = (out / "peers.md").read_text()
    assert "| plain Optuna TPE |" in text and "| nasfw codeepneat+regularized |" in text
    assert (out / "peers_digits.png").stat().st_size > 10_000

    from mlflow.tracking import MlflowClient

    client = MlflowClient(doc["mlflow"]["tracking_uri"])
    run = client.get_run(doc["mlflow"]["run_id"])
    assert run.data.metrics["digits.optuna.best"] == plain["best"]
    assert {"peers.json", "peers.md", "peers_digits.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }


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
