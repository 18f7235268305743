#!/usr/bin/env python3
"""Look at finished searches as a user does: the MLflow UI and optuna-dashboard in Chromium.

    python scripts/results_ui.py --out docs/screenshots     # the README's screenshots, checked

Runs two small searches in a scratch directory (CoDeepNEAT on ``digits``; a two-seed random
search sweep on ``iris``), starts ``mlflow server`` and ``optuna-dashboard`` on loopback ports
over their stores, drives Debian's Chromium with Playwright (installed by
``scripts/services.py start chromium``), checks that what the pages show is true, and saves
one screenshot per page. ``tests/test_results_ui.py`` runs the same checks in CI. Exits 1 with
the failed check on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Chromium in a container with no network: no sandbox, no GPU, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CODEEPNEAT = [
    "problem=digits",
    "tuner=codeepneat",
    "tuner.generations=2",
    "tuner.blueprint_population=2",
    "tuner.genomes_per_blueprint=2",
    "tuner.module_population=4",
    "train.epochs=4",
    "launcher.workers=0",
]
SWEEP = [
    "-m",
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=random",
    "tuner.n_trials=8",
    "train.epochs=3",
    "launcher.workers=0",
    "seed=0,1",
]


@dataclass
class Workspace:
    """A scratch directory with the searches' stores (``nasfw.db`` and ``mlflow.db``)."""

    root: Path
    studies: dict[str, str] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root / 'nasfw.db'}"

    @property
    def tracking(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def run_searches(root: Path) -> Workspace:
    space = Workspace(root)
    common = [f"storage.url={space.storage}", f"tracking.tracking_uri={space.tracking}"]
    for args in (CODEEPNEAT, SWEEP):
        out = subprocess.run(
            [sys.executable, "-m", "nasfw", *args, *common],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode != 0:
            raise RuntimeError(f"search {' '.join(args)} failed: {out.stderr[-2000:]}")
    space.studies = {
        "codeepneat": "codeepneat-digits-image_small-seed0",
        "seed0": "random-iris-tabular_mlp-seed0",
        "seed1": "random-iris-tabular_mlp-seed1",
    }
    return space


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(command: list[str], url: str, cwd: Path, timeout: float = 90) -> Iterator[str]:
    """Run a server in its own process group until ``url`` answers; stop the group after."""
    log = (cwd / f"{Path(command[2] if command[1] == '-m' else command[0]).name}.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:3]} did not answer at {url}") from None
                time.sleep(0.5)
        yield url.rsplit("/", 1)[0] if url.endswith("/health") else url
    finally:
        with_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with_group(proc, signal.SIGKILL)
        log.close()


def with_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):  # mlflow server's workers outlive its main pid
        os.killpg(proc.pid, sig)


def mlflow_server(space: Workspace) -> Any:
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", space.tracking,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    return serve(command, f"http://127.0.0.1:{port}/health", space.root)


def optuna_dashboard(space: Workspace) -> Any:
    port = free_port()
    executable = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(executable), space.storage, "--host", "127.0.0.1", "--port", str(port)]
    return serve(command, f"http://127.0.0.1:{port}/dashboard", space.root)


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            chromium.close()


# -- what the pages must show -----------------------------------------------------------------


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def wait_text(page: Any, text: str, timeout_ms: int = 30000) -> str:
    """The page's text once it contains ``text`` (the UIs render after their API calls)."""
    page.wait_for_function(
        "t => document.body && document.body.innerText.includes(t)", arg=text, timeout=timeout_ms
    )
    return str(page.inner_text("body"))


def parent_runs(space: Workspace) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(space.tracking)
    experiment = client.get_experiment_by_name("nasfw")
    runs = client.search_runs([experiment.experiment_id])
    return {r.data.tags["nasfw.study"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}


def study_best(space: Workspace, study: str) -> float:
    import optuna

    return float(optuna.load_study(study_name=study, storage=space.storage).best_value)


def check_mlflow(space: Workspace, base: str, page: Any, shots: Path) -> dict[str, Any]:
    """The run page, the compare view of the sweep, generation durations, the logged model."""
    from mlflow import MlflowClient

    client = MlflowClient(space.tracking)
    runs = parent_runs(space)
    facts: dict[str, Any] = {}

    run = runs[space.studies["codeepneat"]]
    best = study_best(space, space.studies["codeepneat"])
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    text = wait_text(page, "best_val_accuracy")
    close_assistant(page)
    check(repr(best) in text, f"the run page does not show the study's best {best!r}")
    check("Description" in text and "best: trial" in text, "the run page has no description")
    page.screenshot(path=str(shots / "mlflow-run.png"))
    facts["run_page_best_val_accuracy"] = best

    seeds = [runs[space.studies["seed0"]], runs[space.studies["seed1"]]]
    ids = json.dumps([r.info.run_id for r in seeds])
    page.goto(
        f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([run.info.experiment_id])}"
    )
    text = wait_text(page, "Comparing 2 Runs")
    bests = {r.info.run_name: study_best(space, r.data.tags["nasfw.study"]) for r in seeds}
    shown = {r.info.run_name: r.data.metrics["best_val_accuracy"] for r in seeds}
    check(shown == bests, f"best_val_accuracy {shown} is not the studies' best {bests}")
    check("trial/" not in text, "the compare view offers per-trial values as run metrics")
    # Its parallel-coordinates plot opens on best_val_accuracy, up to the best of the bests.
    try:
        text = wait_text(page, f"{max(bests.values()):.5f}")
    except Exception:
        raise CheckFailed("the compare plot does not show best_val_accuracy") from None
    facts["compare_bests"] = bests
    page.screenshot(path=str(shots / "mlflow-compare.png"), full_page=True)

    durations = []
    for child in client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
    ):
        seconds = (child.info.end_time - child.info.start_time) / 1000
        expected = child.data.metrics["generation_seconds"]
        check(
            abs(seconds - expected) <= 0.2 * expected,
            f"{child.info.run_name} lasted {seconds:.2f} s, its generation {expected:.2f} s",
        )
        durations.append((child.info.run_name, seconds, expected))
    facts["generation_durations"] = durations

    facts["model"] = check_model(space, run)
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs")
    wait_text(page, space.studies["codeepneat"])
    page.screenshot(path=str(shots / "mlflow-runs.png"))
    return facts


def check_model(space: Workspace, run: Any) -> dict[str, Any]:
    """The logged model, through ``mlflow.pyfunc``, on raw inputs (as the data files hold them)."""
    import mlflow
    import numpy as np

    from nasfw import ProblemConfig
    from nasfw.evaluate import load_problem

    mlflow.set_tracking_uri(space.tracking)
    uri = run.data.tags["nasfw.model_uri"]
    info = mlflow.models.get_model_info(uri)
    check(info.signature is not None, "the logged model has no signature")
    check(info.name == space.studies["codeepneat"], f"the logged model is named {info.name!r}")
    model = mlflow.pyfunc.load_model(uri)
    problem = load_problem(ProblemConfig(name="digits"))
    raw = problem.preprocessing.invert(problem.test.x)
    check(float(raw.max()) > 15, "the raw digits are not raw 0..16 pixels")
    predicted = np.asarray(model.predict(raw)).argmax(axis=1)
    accuracy = float((predicted == problem.test.y).mean())
    expected = run.data.metrics["best_test_accuracy"]
    check(
        abs(accuracy - expected) < 1e-6,
        f"the logged model scores {accuracy} on raw inputs, the search measured {expected}",
    )
    return {"raw_test_accuracy": accuracy}


def check_dashboard(space: Workspace, base: str, page: Any, shots: Path) -> dict[str, Any]:
    """The study's history names the metric; trials have real durations; no state dump."""
    import optuna

    study = optuna.load_study(study_name=space.studies["codeepneat"], storage=space.storage)
    summaries = optuna.get_all_study_summaries(space.storage)
    study_id = next(s._study_id for s in summaries if s.study_name == study.study_name)
    page.goto(f"{base}/studies/{study_id}")
    text = wait_text(page, "val_accuracy")
    check("Objective 0" not in text, "optuna-dashboard still calls the objective 'Objective 0'")
    # The learning curves (the trials' intermediate values) get their plot on the study page.
    wait_text(page, "Intermediate values")
    page.screenshot(path=str(shots / "optuna-dashboard-history.png"))
    page.goto(f"{base}/studies/{study_id}/trials")
    text = wait_text(page, "Duration")
    check("nasfw:tuner_state" not in text, "the trial page shows nasfw's internal state")
    check("architecture" in text, "the trial page has no architecture summary")
    curve = study.get_trials()[0].intermediate_values
    check(
        "Intermediate Values" in text and len(curve) >= 1,
        f"the trial page shows no learning curve (intermediate values: {curve})",
    )
    # The page shows the selected trial's duration in ms, as the study's storage has it:
    # JavaScript Dates hold whole milliseconds, so it is the difference of the truncated times.
    first = study.get_trials()[0]
    whole_ms = datetime.timedelta(milliseconds=1)
    epoch = datetime.datetime(1970, 1, 1)
    start, complete = (
        (t.replace(tzinfo=None) - epoch) // whole_ms
        for t in (first.datetime_start, first.datetime_complete)
    )
    shown_ms = complete - start
    check(shown_ms > 0 and f"\n{shown_ms}\n" in f"\n{text}\n", f"no duration {shown_ms} shown")
    # A reused result (an identical network evaluated before) is a lookup: it takes no time.
    evaluated = [t for t in study.get_trials() if "reused_from" not in t.user_attrs["extra"]]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in evaluated]
    check(bool(durations) and all(d > 0 for d in durations), f"zero durations: {durations}")
    page.screenshot(path=str(shots / "optuna-dashboard-trial.png"))
    return {"trial_seconds": durations}


def close_assistant(page: Any) -> None:
    """MLflow 3.17 opens an assistant panel beside the run; close it for the screenshot."""
    button = page.locator("button[aria-label='Close']").first
    if button.count():
        with suppress(Exception):  # no panel in other versions: nothing to close
            button.click(timeout=2000)


def run_all(shots: Path, scratch: Path) -> dict[str, Any]:
    shots.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    space = run_searches(scratch)
    facts: dict[str, Any] = {}
    with browser() as page, mlflow_server(space) as mlflow_url, optuna_dashboard(space) as dash:
        facts["mlflow"] = check_mlflow(space, mlflow_url, page, shots)
        facts["optuna_dashboard"] = check_dashboard(space, dash, page, shots)
    return facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nasfw-ui-") as scratch:
        try:
            facts = run_all(args.out.resolve(), Path(scratch))
        except CheckFailed as err:
            print(f"results_ui: {err}", file=sys.stderr)
            return 1
    print(json.dumps(facts, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
