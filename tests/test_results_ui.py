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
    """A Petridish search with MorphNet post-processing and a pruned two-seed multirun, seen
    through both UIs and their stores: each of issue 30's six results-UI items is a check in
    ``scripts/results_ui.py`` (it raises on the first that fails); here, what they found."""
    shots = tmp_path / "screenshots"
    facts = results_ui.run_all(shots, tmp_path / "work")
    mlflow, stores, dashboard = facts["mlflow"], facts["stores"], facts["optuna_dashboard"]
    # The compare view showed each seed's real best (checked on the page against the study).
    assert sorted(mlflow["compare_bests"]) == [
        "random-iris-tabular_mlp-seed0",
        "random-iris-tabular_mlp-seed1",
    ]
    assert mlflow["run_page_best_val_accuracy"] > 0.5
    assert len(mlflow["generation_durations"]) >= 3
    assert mlflow["model"]["raw_test_accuracy"] > 0.5  # on raw iris features, via pyfunc
    # 1: optuna-dashboard's Best Trial is the run's (and Optuna's) best, not a candidate training.
    petridish = "petridish-iris-tabular_mlp-seed0"
    assert dashboard["best_trial"] == stores["best_trial"][petridish]
    # 2: the model page's n_trials is the search's total (10 evaluations), not the best's step.
    assert mlflow["model"]["model_page_n_trials"] == 10
    # 3-4 are checked on every parent run; the pruner stopped networks in the sweep.
    assert sum(stores["pruned"].values()) > 0
    assert stores["postproc"]["rows"] == 2
    # 5: the population table's columns.
    assert {"val_accuracy", "train", "epochs", "reused_from", "result"} <= set(stores["population"])
    # 6: trial pages fit the 1400 px window.
    assert max(dashboard["trial_page_widths"].values()) <= 1400
    assert all(s > 0 for s in dashboard["trial_seconds"])
    for name in ("mlflow-run", "mlflow-compare", "mlflow-runs", "optuna-dashboard-history",
                 "optuna-dashboard-trial"):  # fmt: skip
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
