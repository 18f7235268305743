#!/usr/bin/env python3
"""Look at finished searches as a user does: the MLflow UI and optuna-dashboard in Chromium.

    python scripts/results_ui.py --out docs/screenshots     # the README's screenshots, checked

Runs small searches in a scratch directory (Petridish on ``iris`` with MorphNet
post-processing: candidate trainings that are no result, networks with skips, a post-processor
report; a two-seed random-search multirun on ``iris`` with a median pruner), starts ``mlflow
server`` and ``optuna-dashboard`` on loopback ports over their stores, drives Debian's Chromium
with Playwright (installed by ``scripts/services.py start chromium``), checks that what the
pages and the stores show is true (issue 30's six results-UI items: a non-result is never the
best, the logged model's page carries the final counts, best-so-far never goes down on the
Step axis, the post-processing summary describes the logged best and reaches the console and
the run directory, readable run and metric names without duplicates or per-trial sections,
trial pages no wider than the window with readable layers, no "None" values, a reused-from
column), and saves one screenshot per page. ``tests/test_results_ui.py`` runs the same checks
in CI. Exits 1 with the failed check on stderr.
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
# Grows networks with skips; its candidate trainings are trials that are no result; MorphNet
# shrinks its two best networks after the search.
PETRIDISH = [
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=petridish",
    "tuner.init_models=2",
    "tuner.rounds=2",
    "tuner.max_parents=2",
    "tuner.max_candidates=2",
    "train.epochs=2",
    "launcher.workers=0",
    "postproc=morphnet",
    "postproc.top_k=2",
]
# A Hydra multirun of two seeds, a pruner stopping networks below the median.
SWEEP = [
    "-m",
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=random",
    "tuner.n_trials=8",
    "train.epochs=3",
    "launcher.workers=0",
    "pruner=median",
    "pruner.n_startup_trials=2",
    "seed=0,1",
]
WINDOW = {"width": 1400, "height": 1000}


@dataclass
class Workspace:
    """A scratch directory with the searches' stores (``nasfw.db`` and ``mlflow.db``) and
    what each search printed (``stdout``, by study)."""

    root: Path
    studies: dict[str, str] = field(default_factory=dict)
    stdout: dict[str, str] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root / 'nasfw.db'}"

    @property
    def tracking(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def run_searches(root: Path) -> Workspace:
    space = Workspace(root)
    common = [f"storage.url={space.storage}", f"tracking.tracking_uri={space.tracking}"]
    printed = []
    for args in (PETRIDISH, SWEEP):
        out = subprocess.run(
            [sys.executable, "-m", "nasfw", *args, *common],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode != 0:
            raise RuntimeError(f"search {' '.join(args)} failed: {out.stderr[-2000:]}")
        printed.append(out.stdout)
    space.studies = {
        "petridish": "petridish-iris-tabular_mlp-seed0",
        "seed0": "random-iris-tabular_mlp-seed0",
        "seed1": "random-iris-tabular_mlp-seed1",
    }
    space.stdout = {space.studies["petridish"]: printed[0]}
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
            yield chromium.new_page(viewport=WINDOW)
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
    """The run page, the compare view of the sweep, generation durations, the logged model,
    the runs list's names."""
    from mlflow import MlflowClient

    client = MlflowClient(space.tracking)
    runs = parent_runs(space)
    facts: dict[str, Any] = {}

    study = space.studies["petridish"]
    run = runs[study]
    best = study_best(space, study)
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    text = wait_text(page, "best_val_accuracy")
    close_assistant(page)
    check(repr(best) in text, f"the run page does not show the study's best {best!r}")
    check("Description" in text and "best: trial" in text, "the run page has no description")
    # Item 4: the post-processing summary beside the model is the logged best's.
    best_trial = int(run.data.tags["nasfw.best_trial"])
    check(
        f"postproc=morphnet on trial {best_trial} (the best)" in text,
        "the run page's description does not say which network the post-processing describes",
    )
    check(
        run.data.metrics.get("postproc/trial") == best_trial,
        f"the run's postproc/* describe trial {run.data.metrics.get('postproc/trial')}, "
        f"the logged best is trial {best_trial}",
    )
    page.screenshot(path=str(shots / "mlflow-run.png"))
    facts["run_page_best_val_accuracy"] = best

    seeds = [runs[space.studies["seed0"]], runs[space.studies["seed1"]]]
    ids = json.dumps([r.info.run_id for r in seeds])
    page.goto(
        f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([run.info.experiment_id])}"
    )
    text = wait_text(page, "Comparing 2 Runs")
    bests = {
        r.data.tags["nasfw.study"]: study_best(space, r.data.tags["nasfw.study"]) for r in seeds
    }
    shown = {r.data.tags["nasfw.study"]: r.data.metrics["best_val_accuracy"] for r in seeds}
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
            abs(seconds - expected) <= 0.2 * expected + 0.05,
            f"{child.info.run_name} lasted {seconds:.2f} s, its generation {expected:.2f} s",
        )
        durations.append((child.info.run_name, seconds, expected))
    facts["generation_durations"] = durations

    facts["model"] = check_model(space, run)
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs")
    # Item 5: the names shown tell the seeds of the sweep apart (MLflow cuts them).
    text = wait_text(page, "seed1 · random-iris")
    check("seed0 · random-iris" in text, "the runs list does not tell the sweep's seeds apart")
    page.screenshot(path=str(shots / "mlflow-runs.png"))
    return facts


def check_model(space: Workspace, run: Any) -> dict[str, Any]:
    """The logged model, through ``mlflow.pyfunc``, on raw inputs (as the data files hold them),
    and the search's counts on its page: the final ones (item 2)."""
    import mlflow
    import numpy as np
    import optuna

    from nasfw import ProblemConfig
    from nasfw.evaluate import load_problem

    mlflow.set_tracking_uri(space.tracking)
    uri = run.data.tags["nasfw.model_uri"]
    info = mlflow.models.get_model_info(uri)
    check(info.signature is not None, "the logged model has no signature")
    study = run.data.tags["nasfw.study"]
    check(info.name == study, f"the logged model is named {info.name!r}")
    model = mlflow.pyfunc.load_model(uri)
    problem = load_problem(ProblemConfig(name="iris"))
    raw = problem.preprocessing.invert(problem.test.x)
    check(float(abs(raw - problem.test.x).max()) > 0.5, "the raw inputs are standardised ones")
    predicted = np.asarray(model.predict(raw)).argmax(axis=1)
    accuracy = float((predicted == problem.test.y).mean())
    expected = run.data.metrics["best_test_accuracy"]
    check(
        abs(accuracy - expected) < 1e-6,
        f"the logged model scores {accuracy} on raw inputs, the search measured {expected}",
    )
    # The model's page shows the run's metrics at the model's step: the search's final ones.
    logged = mlflow.get_logged_model(uri.removeprefix("models:/"))
    on_page = {m.key: m.value for m in logged.metrics}
    trials = len(optuna.load_study(study_name=study, storage=space.storage).trials)
    for key in ("n_trials", "best_val_accuracy", "n_trials_ok", "n_trials_pruned"):
        check(
            on_page.get(key) == run.data.metrics[key],
            f"the logged model's page shows {key} {on_page.get(key)}, the run's final value "
            f"is {run.data.metrics[key]}",
        )
    check(on_page["n_trials"] == trials, f"the model page counts {on_page['n_trials']} trials")
    return {"raw_test_accuracy": accuracy, "model_page_n_trials": on_page["n_trials"]}


def check_stores(space: Workspace) -> dict[str, Any]:
    """What every page is drawn from, against the studies: items 1-6 on all runs."""
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient(space.tracking)
    experiment = client.get_experiment_by_name("nasfw")
    every = client.search_runs([experiment.experiment_id])
    facts: dict[str, Any] = {}
    # Item 1: Optuna's best trial (optuna-dashboard's "Best Trial") is nasfw's best, and no
    # tuner's own training is COMPLETE.
    for name, run in parent_runs(space).items():
        study = optuna.load_study(study_name=name, storage=space.storage)
        best = int(run.data.tags["nasfw.best_trial"])
        check(study.best_trial.number == best, f"{name}: Optuna's best is not trial {best}")
        for trial in study.trials:
            own = trial.user_attrs.get("attrs", {}).get("petridish") == "candidates"
            check(
                not own or trial.state == optuna.trial.TrialState.PRUNED,
                f"{name}: candidate training {trial.number} is {trial.state.name}",
            )
        # Item 3: steps count finished evaluations; best so far never goes down along them.
        n_trials = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "n_trials")
        )
        check(all(s == v for s, v in n_trials), f"{name}: n_trials is not its step: {n_trials}")
        check(len({s for s, _ in n_trials}) == len(n_trials), f"{name}: two points at one step")
        history = sorted(
            (m.step, m.value)
            for m in client.get_metric_history(run.info.run_id, "best_val_accuracy")
        )
        values = [v for _, v in history]
        check(values == sorted(values), f"{name}: best_val_accuracy goes down: {history}")
        check(
            history[-1][0] == len(study.trials) and n_trials[-1][0] == len(study.trials),
            f"{name}: the last step is not the last evaluation's",
        )
        pruned = sum(
            t.state == optuna.trial.TrialState.PRUNED and "not_a_result" not in t.user_attrs
            for t in study.trials
        )
        check(
            run.data.metrics["n_trials_pruned"] == pruned,
            f"{name}: n_trials_pruned {run.data.metrics['n_trials_pruned']}, the study {pruned}",
        )
        facts.setdefault("pruned", {})[name] = pruned
        facts.setdefault("best_trial", {})[name] = best
    # Item 5: names that tell runs apart where MLflow cuts them, one metric per meaning.
    parents = [r.info.run_name for r in every if "mlflow.parentRunId" not in r.data.tags]
    check(len({n[:24] for n in parents}) == len(parents), f"run names look alike: {parents}")
    children = [r for r in every if "mlflow.parentRunId" in r.data.tags]
    check(all(r.info.run_name.startswith("gen ") for r in children), "generation runs unnamed")
    for r in every:
        keys = set(r.data.metrics)
        check(
            not [k for k in keys if k.startswith("curve/")],
            f"per-trial curves in {r.info.run_name}",
        )
        check("mean_fitness" not in keys, f"{r.info.run_name}: mean_fitness repeats a mean")
        if "mlflow.parentRunId" in r.data.tags:
            check("best_val_accuracy" not in keys, f"{r.info.run_name}: a generation's best_*")
        # Item 6: nothing logged as the word "None".
        nones = [k for k, v in {**r.data.params, **r.data.tags}.items() if v == "None"]
        check(not nones, f"{r.info.run_name} logs None as 'None': {nones}")
    facts["population"] = check_population(space, client, children)
    facts["postproc"] = check_postproc(space)
    return facts


def check_population(space: Workspace, client: Any, children: list[Any]) -> list[str]:
    """A generation's population table names its value column after the metric, shows the
    training settings, whether the row is a result and which trial a reused one repeats."""
    import optuna

    from nasfw.ledger import trial_extra

    rows: list[dict[str, Any]] = []
    for child in children:
        path = client.download_artifacts(
            child.info.run_id, "population.json", str(space.root / "dl" / child.info.run_id)
        )
        table = json.loads(Path(path).read_text())
        for column in ("val_accuracy", "result", "epochs", "budget", "train", "reused_from"):
            check(column in table["columns"], f"population.json has no {column} column")
        check("metric" not in table["columns"], "population.json calls the value 'metric'")
        study_name = child.data.tags["nasfw.study"]
        for row in table["data"]:
            rows.append({"study": study_name, **dict(zip(table["columns"], row, strict=True))})
    for name in {r["study"] for r in rows}:
        trials = {
            t.number: t for t in optuna.load_study(study_name=name, storage=space.storage).trials
        }
        for row in (r for r in rows if r["study"] == name):
            trial = trials[row["trial"]]
            reused = trial_extra(trial.user_attrs).get("reused_from")
            check(
                row["reused_from"] == reused,
                f"trial {row['trial']}: reused_from {row['reused_from']}",
            )
            counted = trial.state == optuna.trial.TrialState.COMPLETE
            check(row["result"] == counted, f"trial {row['trial']}: result {row['result']}")
            check(json.loads(row["train"]).get("epochs") is not None, "no training settings")
    return sorted(rows[0]) if rows else []


def check_postproc(space: Workspace) -> dict[str, Any]:
    """Item 4: the MorphNet report reached the console and a file in the run directory, its
    first row the best's."""
    study = space.studies["petridish"]
    (path,) = space.root.glob(f"outputs/*/*{study}*/postproc.json")
    rows = json.loads(path.read_text())
    summary = json.loads((path.parent / "best_model" / "summary.json").read_text())
    check(rows[0]["trial"] == summary["trial"], "postproc.json's first row is not the best's")
    printed = " ".join(space.stdout[study].split())
    check("postproc=morphnet (before → after)" in printed, "no post-processing table printed")
    check("post-processing report:" in printed, "the console does not say where the report is")
    return {"rows": len(rows), "first_trial": rows[0]["trial"]}


def check_dashboard(space: Workspace, base: str, page: Any, shots: Path) -> dict[str, Any]:
    """The study's history names the metric and its best is nasfw's; trials have real
    durations, readable layers, no state dump, and fit the window."""
    import optuna

    from nasfw.ledger import trial_extra

    study = optuna.load_study(study_name=space.studies["petridish"], storage=space.storage)
    summaries = optuna.get_all_study_summaries(space.storage)
    study_id = next(s._study_id for s in summaries if s.study_name == study.study_name)
    page.goto(f"{base}/studies/{study_id}")
    text = wait_text(page, "val_accuracy")
    check("Objective 0" not in text, "optuna-dashboard still calls the objective 'Objective 0'")
    # Item 1: the dashboard's best is nasfw's (a candidate training scored higher).
    best = int(parent_runs(space)[study.study_name].data.tags["nasfw.best_trial"])
    text = wait_text(page, "Best Trial")
    check(f"Best Trial (number={best})" in text, f"the dashboard's best is not trial {best}")
    # The learning curves (the trials' intermediate values) get their plot on the study page.
    wait_text(page, "Intermediate values")
    page.screenshot(path=str(shots / "optuna-dashboard-history.png"))
    page.goto(f"{base}/studies/{study_id}/trials")
    text = wait_text(page, "Duration")
    check("nasfw:tuner_state" not in text, "the trial page shows nasfw's internal state")
    check("architecture" in text, "the trial page has no architecture summary")
    # Item 6: readable layers, and the page no wider than the window (a long graph as one
    # unwrapped line made it 1,800-3,400 px wide): the widest trial selected.
    check("True" not in text and "False" not in text, "a layer reads as True/False")
    widths = {}
    for trial in sorted(study.trials, key=lambda t: -len(t.user_attrs.get("architecture", "")))[:2]:
        page.goto(f"{base}/studies/{study_id}/trials?numbers={trial.number}")
        wait_text(page, "Duration")
        widths[trial.number] = int(page.evaluate("document.documentElement.scrollWidth"))
    check(max(widths.values()) <= WINDOW["width"], f"trial pages wider than the window: {widths}")
    check(not any(t.params for t in study.trials), "Petridish trials carry layer params")
    curve = study.get_trials()[0].intermediate_values
    page.goto(f"{base}/studies/{study_id}/trials")
    text = wait_text(page, "Duration")
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
    evaluated = [t for t in study.get_trials() if "reused_from" not in trial_extra(t.user_attrs)]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in evaluated]
    check(bool(durations) and all(d > 0 for d in durations), f"zero durations: {durations}")
    page.screenshot(path=str(shots / "optuna-dashboard-trial.png"))
    return {"trial_seconds": durations, "trial_page_widths": widths, "best_trial": best}


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
    facts["stores"] = check_stores(space)
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
