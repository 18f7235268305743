"""What users see: the MLflow UI and optuna-dashboard on finished searches, in real Chromium.

``scripts/results_ui.py`` runs the searches, starts ``mlflow server`` and ``optuna-dashboard``
on loopback ports and drives Debian's Chromium (installed by ``scripts/services.py``) with
Playwright; each check there raises on what would mislead a user. Skipped, with the reason,
where Chromium cannot be installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def results_ui():
    from services import running

    with running("chromium"):
        sys.path.insert(0, str(SCRIPTS))
        try:
            import results_ui
        finally:
            sys.path.remove(str(SCRIPTS))
        yield results_ui


def test_the_uis_show_the_search_truthfully(results_ui, tmp_path):
    shots = tmp_path / "screenshots"
    facts = results_ui.run_all(shots, tmp_path / "work")
    mlflow = facts["mlflow"]
    # The compare view showed each seed's real best (checked on the page against the study).
    assert sorted(mlflow["compare_bests"]) == [
        "random-iris-tabular_mlp-seed0",
        "random-iris-tabular_mlp-seed1",
    ]
    assert mlflow["run_page_best_val_accuracy"] > 0.5
    assert len(mlflow["generation_durations"]) == 2
    for _, seconds, expected in mlflow["generation_durations"]:
        assert abs(seconds - expected) <= 0.2 * expected
    assert mlflow["model"]["raw_test_accuracy"] > 0.5  # on raw 0..16 digits, via pyfunc
    assert all(s > 0 for s in facts["optuna_dashboard"]["trial_seconds"])
    for name in ("mlflow-run", "mlflow-compare", "mlflow-runs", "optuna-dashboard-history",
                 "optuna-dashboard-trial"):  # fmt: skip
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
