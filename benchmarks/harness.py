"""What the benchmark scripts share: running the nasfw command line with a budget, reading a
study's finished trials (and failing on a search that finished none), best-so-far curves, one
MLflow run per invocation, and the machine and commit measured.

The scripts run as ``python benchmarks/<script>.py``, so ``benchmarks/`` is ``sys.path[0]`` and
``import harness`` finds this module; the tests put ``benchmarks/`` on ``sys.path`` to import a
script, which imports this module at its top. Units: durations are seconds (``*_seconds``), and
moments (``Run.launched``, a trial's ``result.finished``) are seconds since the epoch.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasfw.ledger import Ledger
    from nasfw.search import TrialRecord
    from nasfw.weights import WeightStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXPERIMENT_NAME = "nasfw-benchmarks"

Curve = list[tuple[float, float]]


class BenchmarkError(SystemExit):
    """A run that cannot give its figures (the CLI failed, a search finished no trial): ends
    the script with this message and exit status 1, where a table would otherwise show "—"."""


# -- running the command line -------------------------------------------------------------------


@dataclass
class Run:
    """One finished subprocess."""

    command: list[str]
    returncode: int
    launched: float  # seconds since the epoch, just before the process started
    wall_seconds: float  # from launch to exit
    cpu_seconds: float  # user + system seconds of the process and the children it waited for
    stopped_by_budget: bool = False  # sent SIGINT at ``interrupt_after``
    timed_out: bool = False  # killed at ``timeout`` (or ``grace`` seconds after the SIGINT)
    log: Path | None = None  # stdout and stderr together, when written to a file
    stdout: str = ""  # when captured
    stderr: str = ""
    # (moment, CPU seconds of the process tree since launch), sampled while it ran (with a
    # ``cpu_budget``): :meth:`cpu_at` turns a trial's moments into CPU seconds.
    cpu_timeline: list[tuple[float, float]] = field(default_factory=list)
    stopped_at_cpu: float | None = None  # CPU seconds since the origin when SIGINT was sent

    def cpu_at(self, moment: float) -> float:
        """CPU seconds the process tree had used by ``moment`` (seconds since the epoch),
        interpolated linearly between the samples of :attr:`cpu_timeline`.

        Raises:
            ValueError: the run has no timeline (it ran without ``cpu_budget``).
        """
        if not self.cpu_timeline:
            raise ValueError("this run has no CPU timeline: run it with cpu_budget")
        return _cpu_at(self.cpu_timeline, moment)

    def tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the log (or of the captured stderr)."""
        text = self.log.read_text(errors="replace") if self.log else self.stderr
        return "\n".join(text.splitlines()[-lines:])

    def check(self, what: str, hint: str = "") -> Run:
        """This run, if it exited with status 0; else :class:`BenchmarkError` with the tail of
        its output (``what`` names the run, ``hint`` is added to the message)."""
        if self.returncode == 0 and not self.timed_out:
            return self
        why = "timed out" if self.timed_out else f"exit code {self.returncode}"
        where = f"; log {self.log}" if self.log else ""
        raise BenchmarkError(
            f"{what}: run failed ({why}){where}:\n{self.tail()}" + (f"\n\n{hint}" if hint else "")
        )


def run_command(
    command: Sequence[str],
    *,
    cwd: Path,
    log: Path | None = None,
    capture: bool = False,
    timeout: float | None = None,
    interrupt_after: float | None = None,
    grace: float = 600.0,
    env: Mapping[str, str] | None = None,
    header: bool = False,
    cpu_budget: float | None = None,
    cpu_origin: Callable[[], float | None] | None = None,
) -> Run:
    """Run ``command`` in ``cwd`` (created if missing) to its end or its budget.

    Output: to the file ``log`` (stdout and stderr together; ``header`` writes the command line
    first), else kept in :attr:`Run.stdout` / :attr:`Run.stderr` with ``capture``, else
    discarded. Budget, in wall seconds from the launch: ``interrupt_after`` sends SIGINT (a
    user's Ctrl-C: the search keeps its study and exits), then the process gets ``grace``
    seconds to exit before it is killed; ``timeout`` kills it outright. ``env`` adds to this
    process's environment. CPU seconds come from ``getrusage(RUSAGE_CHILDREN)`` before and after.

    A budget in CPU seconds instead (the rule of every benchmark here: wall time on a shared
    machine measures the neighbours too): ``cpu_budget`` sends SIGINT once the process tree
    (the search, its workers, their children) has used that many CPU seconds since the moment
    ``cpu_origin`` returns (seconds since the epoch; polled, None while not known yet, e.g.
    the first training step before the first trial has finished; no ``cpu_origin``: since the
    launch). The tree's CPU is sampled every 0.2 s into :attr:`Run.cpu_timeline`.
    """
    command = list(command)
    if cpu_budget is not None and capture:
        raise ValueError("a run with cpu_budget logs to a file: captured pipes would fill up")
    cwd.mkdir(parents=True, exist_ok=True)
    sink: IO[str] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = log.open("w")
        if header:
            sink.write(shlex.join(command) + "\n\n")
            sink.flush()
        stdout, stderr = sink, subprocess.STDOUT
    elif capture:
        stdout = stderr = subprocess.PIPE
    else:
        stdout = stderr = subprocess.DEVNULL
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
        # A background job ignores SIGINT, and Python keeps an ignored SIGINT: restore it so
        # the Ctrl-C at the budget's end (in wall or CPU seconds) reaches the contender.
        preexec_fn=_default_sigint if interrupt_after is not None or cpu_budget else None,
    )
    stopped = timed_out = False
    timeline: list[tuple[float, float]] = []
    stopped_at_cpu = None
    if cpu_budget is not None:
        watched = _watch_cpu(proc, launched, cpu_budget, cpu_origin, timeout, grace)
        timeline, stopped_at_cpu = watched
        stopped = stopped_at_cpu is not None
        if proc.poll() is None:  # past its grace or its timeout
            proc.kill()
            timed_out = True
    interrupt = interrupt_after is not None and (timeout is None or interrupt_after < timeout)
    try:
        out, err = proc.communicate(timeout=interrupt_after if interrupt else timeout)
    except subprocess.TimeoutExpired:
        if interrupt:
            assert interrupt_after is not None
            proc.send_signal(signal.SIGINT)
            stopped = True
            left = grace if timeout is None else min(grace, timeout - interrupt_after)
            try:
                out, err = proc.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                proc.kill()
                timed_out = True
                out, err = proc.communicate()
        else:
            proc.kill()
            timed_out = True
            out, err = proc.communicate()
    finally:
        if sink is not None:
            sink.close()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(
        command=command,
        returncode=proc.returncode,
        launched=launched,
        wall_seconds=wall,
        cpu_seconds=cpu,
        stopped_by_budget=stopped,
        timed_out=timed_out,
        log=log,
        stdout=out or "",
        stderr=err or "",
        cpu_timeline=timeline,
        stopped_at_cpu=stopped_at_cpu,
    )


def _tree_cpu(root: Any) -> float:
    """User + system CPU seconds of ``root`` (a psutil.Process), its live descendants and the
    children it has waited for."""
    import psutil

    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _watch_cpu(
    proc: subprocess.Popen[str],
    launched: float,
    budget: float,
    origin: Callable[[], float | None] | None,
    deadline: float | None,
    grace: float,
) -> tuple[list[tuple[float, float]], float | None]:
    """Sample the tree's CPU until ``proc`` exits; SIGINT once ``budget`` CPU seconds have
    passed since ``origin()`` (the launch without one), then keep sampling to the exit (the
    search finishes its running trials; killed after ``grace`` seconds). Returns the timeline
    and the CPU seconds since the origin at the SIGINT (None: it exited on its own)."""
    import psutil

    root = psutil.Process(proc.pid)
    timeline: list[tuple[float, float]] = []
    sent: float | None = None
    sent_moment = math.inf
    start_cpu: float | None = 0.0 if origin is None else None
    while proc.poll() is None:
        now = time.time()
        try:
            cpu = _tree_cpu(root)
        except psutil.NoSuchProcess:
            break
        timeline.append((now, cpu))
        if start_cpu is None and origin is not None and (moment := origin()) is not None:
            start_cpu = _cpu_at(timeline, moment)
        if sent is None and start_cpu is not None and cpu - start_cpu >= budget:
            proc.send_signal(signal.SIGINT)
            sent, sent_moment = cpu - start_cpu, now
        if now - sent_moment > grace or (deadline is not None and now - launched > deadline):
            break  # communicate() kills it
        time.sleep(0.2)
    return timeline, sent


def _cpu_at(points: Sequence[tuple[float, float]], moment: float) -> float:
    if moment <= points[0][0]:
        return points[0][1]
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if moment <= t1:
            return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1
    return points[-1][1]


def run_cli(overrides: Sequence[str], **options: Any) -> Run:
    """``python -m nasfw <overrides>`` through :func:`run_command` (same options)."""
    return run_command([sys.executable, "-m", "nasfw", *overrides], **options)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- reading a study ----------------------------------------------------------------------------


def open_ledger(url: str, study: str) -> Ledger:
    """The study ``study`` in storage ``url`` (created empty if missing), Optuna kept quiet."""
    import optuna

    from nasfw.ledger import Ledger

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "Using an existing study"
    return Ledger(url, study)


def finished_trials(url: str, study: str, until: float | None = None) -> list[TrialRecord]:
    """The study's finished evaluations (ok, failed or pruned), oldest first; with ``until``
    (seconds since the epoch) only those that finished by then."""
    end = math.inf if until is None else until
    records = open_ledger(url, study).records()
    return [r for r in records if r.result.finished is not None and r.result.finished <= end]


def require_trials(name: str, trials: Sequence[Any], log: Path | str | None = None) -> None:
    """Fail the benchmark (:class:`BenchmarkError`) when the search or contender ``name``
    finished no trial: it has no figures, and a table would show "—" as if it had run."""
    if not trials:
        where = f"; see {log}" if log else ""
        raise BenchmarkError(f"{name}: no finished trial, so nothing to report{where}")


def best_full_budget(
    records: Sequence[TrialRecord], epochs: int, top: int = 1, numbers: set[int] | None = None
) -> list[TrialRecord]:
    """The ``top`` best networks nasfw would export among ``records`` (only the trial numbers
    in ``numbers`` when given): ``ok``, exportable, trained to ``epochs``, by nasfw's rank (as
    :meth:`nasfw.SearchContext.best` chooses), best first."""
    full = [
        r
        for r in records
        if (numbers is None or r.number in numbers)
        and r.result.ok
        and r.exportable
        and r.result.metric is not None
        and r.result.trained_budget >= epochs
    ]
    return sorted(full, key=lambda r: r.rank, reverse=True)[:top]


def retrain_on_test(
    record: TrialRecord,
    problem: Mapping[str, Any],
    seed: int,
    train: Mapping[str, Any],
    weights: WeightStore | None = None,
) -> float:
    """The deliverable's score: the network of ``record`` as ``nasfw.export.export_best`` hands
    it over, scored on the test split: its stored weights when its trial kept them (Petridish's
    networks, Hyperband's finalists: they may have inherited weights no retraining gives), else
    retrained full size exactly as ``export_best`` retrains it (the same initial weights and
    seed, from the search's ``seed``; a network that continued or inherited weights loads them
    first). ``problem``: ``problem.*`` settings (``name`` included); ``train``: ``train.*``
    settings (``threads`` also sets torch's); ``weights``: the search's weight store
    (``storage.artifacts`` and its study), needed by the stored and inherited cases.

    Raises:
        ValueError: ``record`` needs stored weights and ``weights`` is None.
        RuntimeError: the stored weights do not fit the record's graph.
        nasfw.weights.WeightsError: the weights it needs are not in ``weights``.
    """
    import torch

    from nasfw import ProblemConfig, TrainConfig
    from nasfw.builder import build_model
    from nasfw.evaluate import candidate_seed, load_problem
    from nasfw.train import evaluate_model, train_model
    from nasfw.weights import load_matching

    def store() -> WeightStore:
        if weights is None:
            raise ValueError(
                f"trial {record.number} needs its search's stored weights: pass weights"
            )
        return weights

    config = TrainConfig(**train)
    loaded = load_problem(ProblemConfig(**problem))
    if config.threads:
        torch.set_num_threads(config.threads)
    trial_seed = candidate_seed(seed, record.candidate)
    torch.manual_seed(trial_seed)
    model = build_model(record.graph, loaded)
    if "weights" in record.result.extra:
        state = store().load(record.key).state
        if load_matching(model, state) != len(model.state_dict()):
            raise RuntimeError(f"the stored weights of trial {record.number} do not fit its graph")
        model.eval()
        return evaluate_model(model, loaded, loaded.test)
    source = record.resume_from or record.init_from
    if source is not None:
        load_matching(model, store().load(source).state)
    train_model(model, loaded, config, trial_seed, overrides=record.candidate.overrides)
    return evaluate_model(model, loaded, loaded.test)


def best_so_far(points: Iterable[tuple[float, float | None]], digits: int | None = None) -> Curve:
    """The best-so-far curve of ``(seconds, value)`` points: in time order, each point that
    beats every earlier value (None and non-finite values skipped); seconds rounded to
    ``digits`` decimals when given."""
    curve: Curve = []
    for moment, value in sorted(points, key=lambda p: p[0]):
        if value is None or not math.isfinite(value):
            continue
        if not curve or value > curve[-1][1]:
            curve.append((round(moment, digits) if digits is not None else moment, float(value)))
    return curve


def time_to(
    curve: Sequence[Sequence[float]], target: float | None, tolerance: float = 1e-9
) -> float | None:
    """Seconds at which a best-so-far ``curve`` first reaches ``target`` (less ``tolerance``);
    None when it never does, or when there is no target."""
    if target is None:
        return None
    return next((moment for moment, value in curve if value >= target - tolerance), None)


# -- judging a search by its CPU seconds from the first training step --------------------------

# nasfw prints this line once the first training step's moment is known (after the first
# evaluation); the seconds count from its process's start.
FIRST_STEP_LINE = re.compile(r"first training step ([0-9.]+) s after start")


def run_dir_of(out: Path, problem: str, seed: int, arm: str) -> Path:
    """The folder of one run, ``<out>/runs/<problem>/seed<seed>/<arm>`` (``+`` written ``_``);
    its raw result is that path with ``.json``."""
    return out / "runs" / problem / f"seed{seed}" / arm.replace("+", "_")


def schedule(
    seeds: int, problems: Sequence[str], names: Sequence[str]
) -> list[tuple[int, str, str]]:
    """Every ``(seed, problem, name)`` in the order the runs go: seed by seed, problem by
    problem, the names' order rotated by one place per seed (so no contender always runs
    first, on a cold cache, or last, beside a neighbour that has warmed up)."""
    order = []
    for seed in range(seeds):
        shift = seed % len(names) if names else 0
        for problem in problems:
            order += [(seed, problem, n) for n in [*names[shift:], *names[:shift]]]
    return order


def problem_overrides(settings: Mapping[str, Any]) -> list[str]:
    """The CLI overrides of ``problem.*`` settings (``name`` included): ``problem=<name>``,
    then ``problem.<key>=<value>`` for the others."""
    return [f"problem={settings['name']}"] + [
        f"problem.{k}={v}" for k, v in settings.items() if k != "name"
    ]


def cli_first_step(log: Path, launched: float) -> Callable[[], float | None]:
    """A ``cpu_origin`` poller for :func:`run_command`: the moment (seconds since the epoch) of
    a nasfw search's first training step, read from its ``log`` (:data:`FIRST_STEP_LINE`,
    counted from its process's start, ~``launched``); None until the line is written."""

    def origin() -> float | None:
        if not log.exists():
            return None
        found = FIRST_STEP_LINE.search(log.read_text(errors="replace"))
        return launched + float(found.group(1)) if found else None

    return origin


def nasfw_trials(
    url: str, launched: float, study: str = "bench"
) -> tuple[float | None, list[dict[str, Any]], list[TrialRecord]]:
    """The first step, the evaluations and the records of the nasfw study ``study`` in ``url``
    (the first step from the study's ``nasfw:first_step_seconds``, counted from its process's
    start, ~``launched``; None when no step was taken). Evaluations as :func:`judged` takes
    them: ``finished`` (seconds since the epoch), ``ok``, ``value``, ``state``, ``number``."""
    import optuna

    from nasfw.ledger import FIRST_STEP_ATTR

    records = finished_trials(url, study)
    storage = optuna.storages.RDBStorage(url)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study))
    first = launched + float(attrs[FIRST_STEP_ATTR]) if FIRST_STEP_ATTR in attrs else None
    trials = [
        {
            "finished": r.result.finished,
            "ok": r.result.ok and r.result.metric is not None and math.isfinite(r.result.metric),
            "value": r.result.metric,
            "state": r.result.status.upper(),
            "number": r.number,
        }
        for r in records
    ]
    return first, trials, records


def judged(
    what: str,
    run: Run,
    first: float | None,
    trials: list[dict[str, Any]],
    budget: float,
    log: Path,
) -> dict[str, Any]:
    """A search judged by the trials it finished within ``budget`` CPU seconds of its process
    tree from its first training step (``first``, seconds since the epoch; ``run`` ran with a
    ``cpu_budget``): best validation metric against CPU seconds.

    ``trials``: dicts with ``finished`` (seconds since the epoch), ``ok``, ``value``, ``state``
    (``PRUNED`` for pruned ones), optionally ``number`` and ``full`` (False: a score short of
    the full training budget, e.g. a lower Hyperband rung: counted, never on the curve); each
    gets its ``cpu``.

    Raises:
        BenchmarkError: no first step, or no trial finished within the budget (``what`` names
            the search, ``log`` is where to look).
    """
    if first is None:
        require_trials(what, [], log)
    assert first is not None
    origin_cpu = run.cpu_at(first)
    for t in trials:
        t["cpu"] = round(run.cpu_at(t["finished"]) - origin_cpu, 2)
    within = sorted((t for t in trials if t["cpu"] <= budget), key=lambda t: t["cpu"])
    require_trials(what, within, log)
    ok = [t for t in within if t["ok"] and t.get("full", True)]
    curve = best_so_far(((t["cpu"], t["value"]) for t in ok), digits=2)
    return {
        "trials": len(within),
        "failed": sum(not t["ok"] and t["state"] != "PRUNED" for t in within),
        "pruned": sum(t["state"] == "PRUNED" for t in within),
        "after_budget": len(trials) - len(within),
        "best": curve[-1][1] if curve else None,
        "curve": curve,
        "startup_cpu_seconds": round(origin_cpu, 2),
        "startup_wall_seconds": round(first - run.launched, 2),
        "within": [t.get("number") for t in within],
        # Every trial, as raw results: CPU seconds since the first step, value, state.
        "per_trial": [
            {"cpu": t["cpu"], "value": t["value"], "state": t["state"]}
            | {k: t[k] for k in ("number", "full") if k in t}
            for t in sorted(trials, key=lambda t: t["cpu"])
        ],
    }


def plot_best_so_far(
    curves: Mapping[str, Sequence[Curve]],
    budget: float,
    path: Path,
    *,
    title: str,
    dashed: Iterable[str] = (),
) -> Path:
    """Each name's median best-so-far over its runs (``curves``: one curve per run, seconds are
    CPU seconds since the first training step) against CPU seconds up to ``budget``, the range
    over runs as a band (``dashed``: names drawn dashed); written as a PNG at ``path``."""
    import warnings

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 200)
    dashes = set(dashed)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, runs) in enumerate(curves.items()):
        if not runs:
            continue
        rows = []
        for curve in runs:
            ys = np.full(grid.shape, np.nan)
            for t, v in curve:
                ys[grid >= t] = v
            rows.append(ys)
        stack = np.vstack(rows)
        with warnings.catch_warnings():  # before a run's first result: all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(stack, axis=0)
            low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
        style = "--" if name in dashes else "-"
        ax.plot(grid, median, style, color=f"C{i % 10}", label=name, linewidth=1.6)
        ax.fill_between(grid, low, high, color=f"C{i % 10}", alpha=0.12)
    ax.set_xlabel("CPU seconds since the first training step")
    ax.set_ylabel("best validation accuracy (median over seeds, range as band)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def require_scoring(what: str, command: Sequence[str]) -> None:
    """Refuse a benchmark's search that leaves its scoring to the problem: with
    ``evaluation=auto`` (the default) ``mnist``, ``fashion_mnist`` and ``cifar10`` pick the
    seeds' regularized scoring, so an arm meant as plain would quietly be regularized on them
    and a pruner arm refused. Every arm names ``evaluation=...``.

    Raises:
        BenchmarkError: ``command`` has no ``evaluation=`` override (``what`` names the run).
    """
    if not any(str(part).startswith("evaluation=") for part in command):
        raise BenchmarkError(
            f"{what}: the command names no evaluation=...: its scoring would be the problem's "
            "preset (regularized on mnist, fashion_mnist and cifar10); name it in the arm"
        )


def run_cli_arm(
    what: str,
    command: Sequence[str],
    run_dir: Path,
    *,
    budget: float,
    epochs: int,
    problem: Mapping[str, Any],
    seed: int,
    grace: float,
) -> tuple[dict[str, Any], list[TrialRecord]]:
    """One nasfw search (``command``: ``python -m nasfw ...`` with ``storage.url`` at
    ``<run_dir>/nasfw.db``, ``study_name=bench``, ``storage.artifacts=nasfw-artifacts``, one
    torch thread) run in ``run_dir`` for ``budget`` CPU seconds of its process tree from its
    first training step, then SIGINT (killed ``grace`` wall seconds later), and judged:
    :func:`judged` on its networks trained to the full ``epochs`` (a pruned network or a lower
    Hyperband rung counts, never on the curve), ``epochs_trained`` and ``short`` (evaluations
    that ended short of ``epochs``) within the budget, and its deliverable: its best
    full-budget network within the budget as ``export_best`` hands it over
    (:func:`retrain_on_test` with ``problem`` and ``seed``), ``test`` on the test split.

    Returns the raw result and the records that finished within the budget.

    Raises:
        BenchmarkError: nothing finished within the budget, or no full-budget network to
            deliver (``what`` names the search).
    """
    from nasfw.weights import WeightStore

    require_scoring(what, command)
    log = run_dir / "run.log"
    launched = time.time()
    run = run_command(
        command, cwd=run_dir, log=log, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        cpu_budget=budget, cpu_origin=cli_first_step(log, launched), grace=grace,
        timeout=budget * 60 + grace,
    )  # fmt: skip
    what = f"{what} (exit code {run.returncode})"
    url = f"sqlite:///{run_dir / 'nasfw.db'}"
    stored = (run_dir / "nasfw.db").exists()
    first, trials, records = nasfw_trials(url, launched) if stored else (None, [], [])
    trained = {r.number: r.result for r in records}
    for t in trials:
        t["full"] = trained[t["number"]].trained_budget >= epochs
    result = judged(what, run, first, trials, budget, log)
    within = set(result.pop("within"))
    best = best_full_budget(records, epochs, numbers=within)
    if not best:
        raise BenchmarkError(f"{what}: no network to deliver (no full-budget result)")
    store = WeightStore(str(run_dir / "nasfw-artifacts"), "bench")
    test = retrain_on_test(best[0], problem, seed, {"threads": 1, "epochs": epochs}, store)
    doc = {
        "command": shlex.join(command),
        "returncode": run.returncode,
        "stopped_by_budget": run.stopped_by_budget,
        "wall_seconds": round(run.wall_seconds, 1),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "log": log,
        **result,
        "epochs_trained": sum(trained[n].epochs for n in within),
        "short": sum(trained[n].trained_budget < epochs for n in within),
        "test": test,
        "delivered_trial": best[0].number,
    }
    return doc, [r for r in records if r.number in within]


def load_raw_runs(
    what: str, out: Path, seeds: int, problems: Sequence[str], names: Sequence[str]
) -> list[dict[str, Any]]:
    """The raw results ``<out>/runs/<problem>/seed<k>/<name>.json`` of every seed, problem and
    name (a ``--report`` run's input).

    Raises:
        BenchmarkError: one is missing (``what``: the benchmark's name, in the message).
    """
    import json

    runs = []
    for seed in range(seeds):
        for problem in problems:
            for name in names:
                raw = run_dir_of(out, problem, seed, name).with_suffix(".json")
                if not raw.exists():
                    raise BenchmarkError(
                        f"{what} {problem} seed {seed} {name}: no raw result "
                        f"({raw.relative_to(out)}): rerun without --report"
                    )
                runs.append(json.loads(raw.read_text()))
    return runs


def runs_by_problem(
    what: str, runs: Sequence[Mapping[str, Any]], field: str, names: Sequence[str]
) -> Iterator[tuple[str, dict[str, list[Mapping[str, Any]]]]]:
    """Per problem (in the order the runs name them): each of ``names``' runs (``run[field]``,
    e.g. ``"arm"``) on it, by seed.

    Raises:
        BenchmarkError: a name has no run on a problem (``what`` names the benchmark).
    """
    for problem in dict.fromkeys(r["problem"] for r in runs):
        of = {n: sorted((r for r in runs if r["problem"] == problem and r[field] == n),
                        key=lambda r: r["seed"]) for n in names}  # fmt: skip
        for name, mine in of.items():
            if not mine:
                raise BenchmarkError(f"{what} {problem} {name}: no run to report")
        yield problem, of


def time_ratio(times: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Seconds to a target over seeds (inf: never reached) against a baseline's: the median
    ``seconds``, its ``ratio`` to the baseline's median (inf when the baseline never got
    there), the bootstrap ``interval`` of the ratio and how many seeds ``reached`` it."""
    import spread

    median, own = spread.median_time(times), spread.median_time(base)
    return {
        "seconds": median,
        "ratio": median / own if own > 0 and math.isfinite(own) else math.inf,
        "interval": spread.ratio_interval(times, base),
        "reached": sum(math.isfinite(t) for t in times),
    }


def compare_arms(
    what: str,
    runs: Sequence[Mapping[str, Any]],
    arms: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    keys: Sequence[str] = ("trials", "short", "epochs_trained", "best", "test"),
) -> dict[str, Any]:
    """Per problem: each arm's ``keys`` over seeds (``spread.describe``), and per pair
    ``(arm, partner)`` (keyed ``"<arm> vs <partner>"``; both ran on the same seeds) the
    partner's target (its median final ``best``), both arms' median CPU seconds to it (a seed
    that never reached it: inf), their ratio with its bootstrap interval over seeds, how many
    of the arm's seeds reached it, and the paired per-seed differences (arm minus partner) of
    ``best`` and ``test``. ``runs``: raw results with ``arm``, ``problem``, ``seed``,
    ``curve`` and ``keys``.

    Raises:
        BenchmarkError: an arm has no run on a problem, or a pair's arms ran on other seeds.
    """
    import spread

    out: dict[str, Any] = {}
    for problem, of in runs_by_problem(what, runs, "arm", arms):
        rows: dict[str, Any] = {}
        for arm, mine in of.items():
            rows[arm] = {
                "seeds": len(mine),
                **{k: spread.describe([r[k] for r in mine]).to_dict() for k in keys},
            }
        paired: dict[str, Any] = {}
        for arm, partner in pairs:
            if [r["seed"] for r in of[arm]] != [r["seed"] for r in of[partner]]:
                raise BenchmarkError(f"{what} {problem}: {arm} and {partner} ran on other seeds")
            target = rows[partner]["best"]["median"]
            times = {
                a: [time_to(r["curve"], target) or math.inf for r in of[a]] for a in (arm, partner)
            }
            paired[f"{arm} vs {partner}"] = {
                "arm": arm,
                "partner": partner,
                "target": target,
                "partner_seconds": spread.median_time(times[partner]),
                **time_ratio(times[arm], times[partner]),
                **{
                    f"{k}_difference": spread.paired(
                        [r[k] for r in of[arm]], [r[k] for r in of[partner]]
                    ).to_dict()
                    for k in ("best", "test")
                },
            }
        out[problem] = {"arms": rows, "pairs": paired}
    return out


def finite_text(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or "never" when it is infinite (never reached)."""
    return "never" if not math.isfinite(value) else f"{value:.{digits}f}"


def arms_markdown(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The Markdown table of :func:`compare_arms`'s arms of one problem."""
    import spread

    lines = [
        "| arm | evaluations | short of the full budget | epochs trained | "
        "best validation accuracy (full budget) | deliverable: test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for arm, r in rows.items():
        lines.append(
            f"| {arm} | {r['trials']['median']:.0f} | {r['short']['median']:.0f} | "
            f"{r['epochs_trained']['median']:.0f} | {spread.Spread(**r['best']).text(4)} | "
            f"{spread.Spread(**r['test']).text(4)} |"
        )
    return lines


def pairs_markdown(pairs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The Markdown table of :func:`compare_arms`'s pairs of one problem."""
    import spread

    def paired(doc: Mapping[str, Any]) -> spread.Paired:
        return spread.Paired(**{**doc, "difference": spread.Spread(**doc["difference"])})

    lines = [
        "| arm vs partner (target) | partner's s | arm's s | ratio [bootstrap interval] | "
        "reached | best validation difference | test difference |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for name, t in pairs.items():
        low, high = t["interval"]
        best, test = paired(t["best_difference"]), paired(t["test_difference"])
        lines.append(
            f"| {name} ({t['target']:.4f}) | {finite_text(t['partner_seconds'])} | "
            f"{finite_text(t['seconds'])} | {finite_text(t['ratio'], 2)} "
            f"[{finite_text(low, 2)}, {finite_text(high, 2)}] | {t['reached']}/{best.n} | "
            f"{best.text(4)} | {test.text(4)} |"
        )
    return lines


def problem_settings(
    problem: str, data_dir: Path, fashion_train: int, fashion_val_fraction: float
) -> dict[str, Any]:
    """``problem.*`` of the benchmarks' two problems (for the CLI through
    :func:`problem_overrides`, and for scoring a deliverable in the benchmark's process):
    ``digits``, or real Fashion-MNIST from ``<data_dir>/fashion_mnist`` with ``fashion_train``
    training images and a ``fashion_val_fraction`` validation split.

    Raises:
        SystemExit: another problem.
    """
    if problem == "digits":
        return {"name": "digits"}
    if problem == "fashion_mnist":
        return {
            "name": "fashion_mnist",
            "data_dir": str((data_dir / "fashion_mnist").resolve()),
            "max_train_samples": fashion_train,
            "val_fraction": fashion_val_fraction,
        }
    raise SystemExit(f"unknown problem {problem!r} (digits, fashion_mnist)")


def pair_criteria(
    pairs: Sequence[tuple[str, str]], ratio: float, max_test_loss: float
) -> list[Criterion]:
    """One criterion per pair ``(arm, partner)`` of :func:`compare_arms`: on every problem the
    arm's median CPU seconds to the partner's median final best is <= ``ratio`` of the
    partner's own, and the median of the paired per-seed differences of the deliverable's test
    accuracy (arm minus partner) is >= ``-max_test_loss``."""

    def holds(key: str) -> Callable[[Mapping[str, Any]], bool]:
        def check(figures: Mapping[str, Any]) -> bool:
            rows = [p["pairs"][key] for p in figures["problems"].values()]
            return all(
                r["ratio"] <= ratio
                and r["test_difference"]["difference"]["median"] >= -max_test_loss
                for r in rows
            )

        return check

    return [
        Criterion(
            f"{arm} vs {partner}",
            f"on every problem, {arm} reaches {partner}'s median final best validation "
            f"accuracy in <= {ratio} of {partner}'s median CPU seconds to it (medians over "
            f"seeds, never reached = never), and its deliverable's test accuracy is at most "
            f"{max_test_loss * 100:.1f} pt below {partner}'s (median of the paired per-seed "
            "differences)",
            holds(f"{arm} vs {partner}"),
        )
        for arm, partner in pairs
    ]


@dataclass(frozen=True)
class ArmsBenchmark:
    """A benchmark of nasfw searches ("arms") through the command line, by the rules: each arm
    on each problem and seed gets ``budget`` CPU seconds from its first training step
    (:func:`run_cli_arm`), the arms' order rotated per seed (:func:`schedule`); the criteria of
    its pairs declared before the first run (:func:`pair_criteria`); raw runs at
    ``<out>/runs/<problem>/seed<k>/<arm>.json``, resumable, and ``--report`` from them alone;
    ``<name>.json``, ``<name>.md``, ``<name>_<problem>.png`` and one MLflow run. The scripts
    ``multifidelity.py`` and ``petridish.py`` are one each; their docstrings give protocols."""

    name: str  # the script is benchmarks/<name>.py; its files and messages are named so
    title: str  # the report's heading
    setting: str  # the report's sentence on what every arm shares
    pairs_text: str  # the report's sentence before the table of pairs
    arms: Mapping[str, Sequence[str]]  # arm -> its CLI overrides
    common: Sequence[str]  # the CLI overrides of every arm (search space, scoring)
    pairs: Callable[[Sequence[str]], list[tuple[str, str]]]  # (arm, partner) among the arms
    ratio: float  # the criterion's ratio of CPU seconds, and its test accuracy loss at most
    max_test_loss: float
    budget: float  # defaults of --budget (CPU seconds) and --epochs (train.epochs)
    epochs: int
    fashion_train: int = 4000
    fashion_val_fraction: float = 0.05
    grace: float = 1800.0  # wall seconds after the SIGINT to finish and exit
    # More raw fields of one run: (arm, its records within the budget, its raw result, epochs).
    extra: Callable[[str, list[TrialRecord], dict[str, Any], int], dict[str, Any]] | None = None

    def criteria(self, arms: Sequence[str]) -> list[Criterion]:
        return pair_criteria(self.pairs(arms), self.ratio, self.max_test_loss)

    def parse_args(self, argv: Sequence[str] | None, description: str) -> Any:
        import argparse

        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--problems", nargs="+", default=["digits", "fashion_mnist"])
        parser.add_argument("--budget", type=float, default=self.budget,
                            help="CPU seconds per search from its first training step")  # fmt: skip
        parser.add_argument("--seeds", type=int, default=3)
        parser.add_argument("--epochs", type=int, default=self.epochs,
                            help="train.epochs: the full budget")  # fmt: skip
        parser.add_argument("--arms", nargs="+", default=list(self.arms), choices=list(self.arms))
        parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
        parser.add_argument("--out", type=Path, default=HERE / "results" / self.name)
        parser.add_argument(
            "--override", action="append", default=[], metavar="KEY=VALUE",
            help="one more CLI override for every arm (repeatable)",
        )  # fmt: skip
        add_run_options(parser)
        args = parser.parse_args(argv)
        args.out = args.out.resolve()
        return args

    def settings(self, problem: str, data_dir: Path) -> dict[str, Any]:
        return problem_settings(problem, data_dir, self.fashion_train, self.fashion_val_fraction)

    def run_one(self, arm: str, problem: str, seed: int, args: Any) -> dict[str, Any]:
        """One arm on one problem and seed, or its raw result when already on disk."""
        import json
        import shutil

        run_dir = run_dir_of(args.out, problem, seed, arm)
        raw = run_dir.with_suffix(".json")
        if raw.exists() and not args.fresh:
            print(f"  on disk: {raw.relative_to(args.out)}", flush=True)
            return dict(json.loads(raw.read_text()))
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        settings = self.settings(problem, args.data_dir)
        command = [
            sys.executable, "-m", "nasfw", *problem_overrides(settings), *self.common,
            *self.arms[arm], "launcher.workers=0", "tracking=none", f"train.epochs={args.epochs}",
            "train.threads=1", f"seed={seed}", f"storage.url=sqlite:///{run_dir / 'nasfw.db'}",
            "study_name=bench", "storage.artifacts=nasfw-artifacts",
            f"export_dir={run_dir / 'best_model'}", *args.override,
        ]  # fmt: skip
        result, within = run_cli_arm(
            f"{self.name} {problem} seed {seed} {arm}", command, run_dir, budget=args.budget,
            epochs=args.epochs, problem=settings, seed=seed, grace=self.grace,
        )  # fmt: skip
        doc = {"arm": arm, "problem": problem, "seed": seed, **result}
        if self.extra is not None:
            doc.update(self.extra(arm, within, result, args.epochs))
        write_raw(raw, doc)
        return dict(json.loads(raw.read_text()))

    def markdown(self, doc: Mapping[str, Any], verdicts: Mapping[str, bool]) -> str:
        p = doc["protocol"]
        lines = [
            f"# {self.title}",
            "",
            f"{doc['machine']['description']}; {p['budget']:.0f} CPU seconds per search from "
            f"its first training step, networks trained {p['epochs']} epochs, {p['seeds']} "
            f"seed(s), one torch thread, no worker process; {self.setting}. Figures: median "
            "[95 % bootstrap CI] (n, range).",
            "",
            f"Command: `{doc['command']}`",
        ]
        for problem, s in doc["summary"].items():
            lines += ["", f"## {problem}", "", *arms_markdown(s["arms"])]
            if s["pairs"]:
                lines += ["", self.pairs_text, "", *pairs_markdown(s["pairs"])]
        lines += ["", "## Criteria (declared before the run)", ""]
        if not verdicts:
            lines.append("- none: no pair of arms ran")
        lines += [f"- {c.claim}: **{'met' if verdicts[c.name] else 'missed'}**"
                  for c in self.criteria(p["arms"])]  # fmt: skip
        if p["seeds"] < 5:
            lines += [
                "",
                f"With {p['seeds']} seed(s) the bootstrap intervals are wide (or absent below "
                "3): a verdict on the medians, not a significant difference.",
            ]
        return "\n".join(lines)

    def main(self, argv: Sequence[str] | None, description: str) -> int:
        """The script: run what is not on disk yet (or ``--report`` only), then report."""
        import json

        import optuna

        args = self.parse_args(argv, description)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        summary_path = args.out / f"{self.name}.json"
        if args.report:  # from the raw runs alone
            if not summary_path.exists():
                raise SystemExit(f"{self.name}: {summary_path} not found: run without --report")
            before = json.loads(summary_path.read_text())
            protocol, command = before["protocol"], before["command"]
            runs = load_raw_runs(
                self.name, args.out, protocol["seeds"], protocol["problems"], protocol["arms"]
            )
        else:
            for problem in args.problems:
                settings = self.settings(problem, args.data_dir)
                if "data_dir" in settings and not Path(settings["data_dir"]).is_dir():
                    raise SystemExit(f"{self.name}: {settings['data_dir']} not found (--data-dir)")
            protocol = {
                "problems": args.problems,
                "budget": args.budget,
                "budget_unit": "CPU seconds of the process tree from the first training step",
                "seeds": args.seeds,
                "epochs": args.epochs,
                "threads": 1,
                "arms": args.arms,
                "overrides": args.override,
                "fashion_mnist_train_images": self.fashion_train,
                "fashion_mnist_val_fraction": self.fashion_val_fraction,
            }
            args.out.mkdir(parents=True, exist_ok=True)
            declare(self.criteria(args.arms), args.out)
            command = invocation(f"{self.name}.py", argv)
            runs = []
            for seed, problem, arm in schedule(args.seeds, args.problems, args.arms):
                print(f"[{problem} seed {seed}] {arm}: {args.budget:.0f} CPU s", flush=True)
                run = self.run_one(arm, problem, seed, args)
                print(f"  {run['trials']} evaluations ({run['short']} short), best "
                      f"{run['best']}, test {run['test']:.4f}", flush=True)  # fmt: skip
                runs.append(run)
        pairs = self.pairs(protocol["arms"])
        doc = {
            "protocol": protocol,
            "command": command,
            "machine": machine(),
            **git_state(),
            "summary": compare_arms(self.name, runs, protocol["arms"], pairs),
            "runs": runs,
        }
        verdicts = judge(self.criteria(protocol["arms"]), {"problems": doc["summary"]})
        doc["criteria"] = verdicts
        text = self.markdown(doc, verdicts)
        (args.out / f"{self.name}.md").write_text(text + "\n")
        write_raw(summary_path, {k: v for k, v in doc.items() if k != "runs"})
        partners = {partner for _, partner in pairs}
        paths = [
            plot_best_so_far(
                {arm: [r["curve"] for r in runs if r["problem"] == problem and r["arm"] == arm]
                 for arm in protocol["arms"]},
                protocol["budget"], args.out / f"{self.name}_{problem}.png",
                title=f"{problem}: {self.title} (partners dashed)", dashed=partners,
            )
            for problem in doc["summary"]
        ]  # fmt: skip
        print(text)
        if not args.no_mlflow:
            metrics: dict[str, float | None] = {}
            for problem, s in doc["summary"].items():
                for arm, r in s["arms"].items():
                    key = f"{problem}.{arm.replace('+', '_')}"  # MLflow takes no "+" in names
                    metrics[f"{key}.best_median"] = r["best"]["median"]
                    metrics[f"{key}.test_median"] = r["test"]["median"]
                for name, t in s["pairs"].items():
                    key = f"{problem}.{name.replace('+', '_').replace(' ', '_')}.ratio"
                    metrics[key] = t["ratio"] if math.isfinite(t["ratio"]) else None
            uri = args.tracking_uri or default_tracking_uri(args.out)
            log_report(doc, args.out, uri, benchmark=self.name, metrics=metrics,
                       artifacts=[args.out / f"{self.name}.md", summary_path, *paths])  # fmt: skip
        return 0


# -- MLflow -------------------------------------------------------------------------------------


def default_tracking_uri(out: Path) -> str:
    """The MLflow store a benchmark uses without ``--tracking-uri``: ``<out>/mlflow.db``."""
    return f"sqlite:///{out / 'mlflow.db'}"


def log_to_mlflow(
    out: Path,
    tracking_uri: str | None,
    *,
    benchmark: str,
    run_name: str | None = None,
    experiment: str = EXPERIMENT_NAME,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    series: Mapping[str, Iterable[tuple[int, float]]] | None = None,
    artifacts: Iterable[Path] = (),
) -> dict[str, str]:
    """One finished MLflow run in ``experiment`` of ``tracking_uri`` (None: the default store
    in ``out``, whose new experiment keeps its artifacts in ``<out>/mlartifacts``).

    ``params``: lists and dicts as JSON, the rest as text; ``tags`` (plus ``benchmark``);
    ``metrics`` at step 0 and ``series`` as ``(step, value)`` pairs, None and non-finite values
    left out; ``artifacts``: files (the report's Markdown, JSON, plots). Returns the run's
    ``tracking_uri``, ``experiment_id`` and ``run_id``.
    """
    import json

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = tracking_uri or default_tracking_uri(out)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        default = uri == default_tracking_uri(out)
        location = (out / "mlartifacts").resolve().as_uri() if default else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        experiment_id = found.experiment_id
    run = client.create_run(
        experiment_id, run_name=run_name or benchmark, tags={**(tags or {}), "benchmark": benchmark}
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    points = [(key, value, 0) for key, value in (metrics or {}).items()]
    points += [(key, v, step) for key, pairs in (series or {}).items() for step, v in pairs]
    try:
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, float(value), now, int(step))
                for key, value, step in points
                if value is not None and math.isfinite(float(value))
            ],
            params=[
                Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v))
                for k, v in (params or {}).items()
            ],
        )
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return {"tracking_uri": uri, "experiment_id": str(experiment_id), "run_id": run_id}


def log_report(
    doc: Mapping[str, Any],
    out: Path,
    tracking_uri: str | None,
    *,
    benchmark: str,
    metrics: Mapping[str, float | None],
    artifacts: Iterable[Path],
    run_name: str | None = None,
) -> str:
    """A benchmark's report as one MLflow run (:func:`log_to_mlflow`): ``doc``'s ``protocol``
    as params, its ``command``, machine and ``git_commit`` as tags; returns the run's id."""
    logged = log_to_mlflow(
        out, tracking_uri, benchmark=benchmark, run_name=run_name, params=doc["protocol"],
        tags={"command": doc["command"], "machine": doc["machine"]["description"],
              "git_commit": doc.get("git_commit") or ""},
        metrics=metrics, artifacts=artifacts,
    )  # fmt: skip
    return logged["run_id"]


def add_run_options(parser: Any) -> None:
    """The options every resumable benchmark takes (``parser``: an argparse parser):
    ``--fresh``, ``--no-mlflow``, ``--report`` and ``--tracking-uri``."""
    parser.add_argument("--fresh", action="store_true", help="rerun runs already on disk")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="only the report, from the raw runs under <out>/runs")  # fmt: skip
    parser.add_argument("--tracking-uri", default=None, help="default sqlite:///<out>/mlflow.db")


# -- the rules: criteria written before the run, raw results that travel ----------------------


@dataclass(frozen=True)
class Criterion:
    """A success criterion, written in the script before the run (so the run cannot choose
    it): ``claim`` in words, ``holds`` computes it from the report's figures (True or False;
    a figure it needs is missing: KeyError, which :func:`judge` turns into a failed run)."""

    name: str
    claim: str
    holds: Callable[[Mapping[str, Any]], bool]


def declare(criteria: Sequence[Criterion], out: Path) -> Path:
    """Print the criteria and write them to ``<out>/criteria.json`` with the moment, before
    any run starts; returns the file. A resumed run whose criteria are unchanged keeps the
    moment they were first declared (so the file still shows they came before the first
    results); changed criteria are declared anew."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    path = out / "criteria.json"
    claims = {c.name: c.claim for c in criteria}
    declared = time.time()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        before = json.loads(path.read_text())
        if before["criteria"] == claims:
            declared = float(before["declared"])
    doc = {"declared": declared, "criteria": claims}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    for c in criteria:
        print(f"criterion {c.name}: {c.claim}", flush=True)
    return path


def judge(criteria: Sequence[Criterion], figures: Mapping[str, Any]) -> dict[str, bool]:
    """Each criterion's verdict on ``figures``, printed.

    Raises:
        BenchmarkError: a criterion's figure is missing (a contender produced nothing).
    """
    verdicts: dict[str, bool] = {}
    for c in criteria:
        try:
            verdicts[c.name] = bool(c.holds(figures))
        except KeyError as missing:
            raise BenchmarkError(f"criterion {c.name}: no figure {missing} to judge") from None
        print(f"criterion {c.name}: {'met' if verdicts[c.name] else 'MISSED'} ({c.claim})")
    return verdicts


def relative_paths(doc: Any, base: Path) -> Any:
    """``doc`` (JSON-like) with every path under ``base``, the repository or the folder that
    holds it (the shared data beside the checkout, ``../shared/data``) written relative to
    ``base``, whole values and paths inside text alike (a command line, a ``sqlite:///`` URL,
    a data directory inside a JSON argument): committed raw results must not carry the
    measuring machine's absolute paths."""
    if isinstance(doc, Mapping):
        return {k: relative_paths(v, base) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [relative_paths(v, base) for v in doc]
    if not isinstance(doc, Path | str):
        return doc
    text = str(doc)
    here = base.resolve()
    # Deepest first.
    roots = sorted({here, REPO, REPO.parent}, key=lambda p: len(str(p)), reverse=True)
    for root in roots:
        relative = os.path.relpath(root, here)
        if text == str(root):
            return relative
        prefix = "" if relative == "." else relative + os.sep
        text = text.replace(str(root) + os.sep, prefix)
    return text


def write_raw(path: Path, doc: Any) -> Path:
    """Write raw results ``doc`` as JSON at ``path``, paths relative to its folder."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(relative_paths(doc, path.parent), indent=1, default=str)
    path.write_text(text + "\n")
    return path


# -- what was measured --------------------------------------------------------------------------


def invocation(script: str, argv: Sequence[str] | None) -> str:
    """The command line that ran ``benchmarks/<script>`` (``argv``: None for ``sys.argv``)."""
    given = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *given])


def machine() -> dict[str, Any]:
    """CPU model, cores, GPU (None without one) and Python version, with a one-line summary."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        gpu = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "gpu": gpu,
        "python": platform.python_version(),
        "description": f"{cores}-core CPU ({cpu}), {'GPU ' + gpu if gpu else 'no GPU'}",
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and the framework's files that differ from it (if any)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    changed = git("status", "--porcelain", "--", "nasfw", "plugins", "launchers", "conf")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": changed.splitlines() if changed else [],
    }


def tests_cli() -> ModuleType:
    """``tests/cli.py``, the tests' own helpers: its ``TINY`` search (iris, two MLPs, one epoch,
    evaluations in the driver) and ``compose`` (a run's config, composed in this process)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import cli

    return cli
