"""benchmarks/table1.py (the seeds' Table 1) end to end in its --quick configuration."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "table1.py"


def first_generation(url: str, study: str) -> list[str]:
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    gen0 = sorted((t for t in trials if t.user_attrs["generation"] == 0),
                  key=lambda t: t.user_attrs["index"])  # fmt: skip
    return [t.user_attrs["graph_hash"] for t in gen0]


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
