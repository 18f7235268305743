"""Ray launcher: evaluations as Ray tasks, on a Ray cluster or on a Ray started for the search.

``python -m nasfw launcher=ray`` starts a Ray on this machine for the search and stops it at
the end (nothing to set up: the same command works on a laptop); ``launcher.address=auto`` (the
cluster this machine belongs to) or ``launcher.address=<head>:6379`` / ``ray://<head>:10001``
sends the evaluations to an existing cluster. Each evaluation is one Ray task asking for
``launcher.num_cpus`` CPUs and ``launcher.num_gpus`` GPUs (fractions share a GPU, as Ray
allows).

- **Results stream back** as they finish (``ray.wait``): ``tuner.asynchronous=true`` asks for a
  new candidate as soon as a task ends, and a generation's tasks are submitted in the order the
  search gives them (longest first), at most ``launcher.max_concurrent`` at once.
- **The driver writes the trials.** Tasks return their :class:`nasfw.Result` through Ray's
  object store and the driver stores each one, as with ``launcher=local``: any storage the
  driver can open works (SQLite on the driver's disk included), nothing on the cluster needs to
  reach the database, and a task Ray runs twice (a retry after its node died) can never write
  a trial twice. (With a pruner each task reports its learning curve to the study itself, so
  then the nodes must reach ``storage.url``.)
- **The problem's data goes to the object store once per search**: the driver loads it (it
  does anyway) and ``ray.put``\\ s it; each worker process takes it from there on its first
  evaluation (:func:`nasfw.provide_problem`) instead of reading or generating it again.
- **Faults**: a task whose worker process or node died is run again elsewhere, up to
  ``launcher.max_retries`` times (Ray's ``max_retries``); then it is a failed trial with that
  reason. An exception in an evaluation is a failed trial at once (never retried: it would fail
  again). A driver that dies takes its tasks with it (Ray ends a job's tasks when its driver is
  gone); the rerun resumes from the study. A head node that stops answering for
  ``launcher.head_timeout_s`` stops the search with one line (:class:`nasfw.LauncherOutage`).
- **Resources are checked before the study exists**: a request no node of the cluster can
  satisfy (``launcher.num_gpus=1`` on a cluster without GPUs) is refused naming the key, where
  Ray would leave the task pending forever.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nasfw import (
    ConfigError,
    Launcher,
    LauncherConfig,
    LauncherOutage,
    MapResults,
    ProblemConfig,
    Result,
    hookimpl,
    setting,
)

# Seconds ray.wait waits before the driver checks that the head still answers.
WAIT_S = 1.0


@dataclass
class RayLauncherConfig(LauncherConfig):
    name: str = "ray"
    # Where the evaluations run. None: a Ray started on this machine for the search and stopped
    # at its end. "auto": the cluster this machine is part of (RAY_ADDRESS, or a `ray start`ed
    # node here). "<host>:<port>" (the head's GCS, 6379 by default) or "ray://<host>:10001"
    # (Ray Client, e.g. KubeRay's head service): that cluster.
    address: str | None = None
    # CPUs Ray reserves for one evaluation (also its torch threads, rounded up); fractions of 1
    # allowed, above 1 whole numbers, as Ray allows.
    num_cpus: float = setting(1.0, ge=0)
    # GPUs per evaluation: 0.5 puts two evaluations on one GPU; above 1 whole numbers.
    num_gpus: float = setting(0.0, ge=0)
    # At most this many evaluations at once. None: as many as the cluster's resources allow
    # when the search starts (set it on an autoscaling cluster, whose resources grow).
    max_concurrent: int | None = setting(None, ge=1)
    # Reruns of an evaluation whose worker process or node died, before it is a failed trial.
    max_retries: int = setting(2, ge=0)
    # Environment variables of the evaluations' worker processes (Ray's runtime_env env_vars),
    # e.g. {CUBLAS_WORKSPACE_CONFIG: ":4096:8"}.
    env: dict[str, str] = field(default_factory=dict)
    # Seconds the head node may stay unreachable before the search stops (exit 2, the study
    # intact: rerun to resume once the cluster is back). Ray itself ends a driver after 60 s.
    head_timeout_s: float = setting(20.0, gt=0)

    def check(self, key: str) -> None:
        """Ray takes fractions of one CPU or GPU, or whole numbers.

        Raises:
            nasfw.ConfigError: naming ``launcher.num_cpus`` or ``launcher.num_gpus``.
        """
        for name in ("num_cpus", "num_gpus"):
            value = float(getattr(self, name))
            if value > 1 and not value.is_integer():
                raise ConfigError(
                    f"{key}.{name}={value}: Ray gives a task a fraction of one "
                    f"{name[4:].upper()} (< 1) or whole ones, not {value}"
                )


class RayLauncher(Launcher[Any]):
    """Evaluations as Ray tasks, results taken as they finish (``ray.wait``).

    Connects (or starts the embedded Ray) when made, and checks there that some node can give
    one evaluation what it asks for, so a refusal comes before the study exists.

    Example::

        python -m nasfw tuner=evolution tuner.asynchronous=true launcher=ray
        python -m nasfw launcher=ray launcher.address=auto launcher.num_gpus=0.5

    Raises:
        nasfw.ConfigError: Ray is not installed, no cluster answers at ``launcher.address``,
            or no node has the ``launcher.num_cpus`` / ``launcher.num_gpus`` one evaluation
            asks for.
    """

    config_class = RayLauncherConfig
    config: RayLauncherConfig

    def __init__(self, config: Any) -> None:
        if not isinstance(config, RayLauncherConfig):
            from omegaconf import OmegaConf

            config = OmegaConf.to_object(
                OmegaConf.merge(OmegaConf.structured(RayLauncherConfig), config)
            )
        super().__init__(config)
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "launcher=ray needs Ray on this machine: pip install 'nasfw[ray]' "
                f"({type(err).__name__}: {err})"
            ) from err
        self._ray = ray
        self._owned = False  # whether close() ends this process's Ray session
        self._fn: Any = None
        self._fn_ref: Any = None
        self._problems: dict[str, Any] = {}
        self._running: dict[Any, Any] = {}
        self._head: tuple[str, int] | None = None
        self._head_lost = False
        self._connect()
        try:
            slots = self._check_resources()
        except BaseException:
            self.close()
            raise
        self._slots = slots
        options: dict[str, Any] = {
            "num_cpus": self.config.num_cpus,
            "num_gpus": self.config.num_gpus,
            "max_retries": self.config.max_retries,
            "retry_exceptions": False,
        }
        env = {k: str(v) for k, v in self.config.env.items()}
        if not self.config.num_gpus:
            # Ray leaves a task that asked for no GPU the node's view of them: it would train
            # on a GPU Ray gave another task (train.device=auto picks one if it sees one).
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        options["runtime_env"] = {"env_vars": env}
        self._task = ray.remote(_evaluate).options(**options)

    # -- the cluster ----------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self._ray
        # Ray reports usage statistics over the network unless told not to: nasfw runs offline.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if ray.is_initialized():  # this process's own Ray session (a notebook, a test): kept
            self._note_head()
            return
        address = self.config.address
        if address not in (None, "auto") and "://" not in str(address):
            # ray.init waits minutes for a GCS that is not there: ask the port first.
            host, _, port = str(address).rpartition(":")
            if not port.isdigit() or not _answers(host or "127.0.0.1", int(port)):
                raise ConfigError(
                    f"launcher.address={address}: no Ray head answers there (expected "
                    "<host>:<port> of a running head, 6379 by default, 'auto', or "
                    "ray://<host>:10001); leave it unset for a Ray of the search's own"
                )
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        # Ray warns at every start of a local Ray that it turned token authentication on.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        try:
            if address is None:
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
        except Exception as err:
            where = "a local Ray (launcher.address unset)" if address is None else address
            reason = " ".join(str(err).split())[:400] or type(err).__name__
            raise ConfigError(
                f"launcher.address={address}: cannot start or reach {where}: {reason}"
            ) from err
        self._owned = True
        self._note_head()

    def _note_head(self) -> None:
        """The head's GCS (host, port), which the driver watches while it waits (not through
        Ray Client, whose server is all a driver outside the cluster can reach: there a lost
        head raises in ``ray.wait``)."""
        if str(self.config.address or "").startswith("ray://"):
            self._head = None
            return
        try:
            host, _, port = str(self._ray.get_runtime_context().gcs_address).rpartition(":")
            self._head = (host, int(port))
        except Exception:  # Ray Client: no GCS address here; a lost head raises in ray.wait
            self._head = None

    def _check_resources(self) -> int:
        """How many evaluations the cluster can run at once.

        Raises:
            nasfw.ConfigError: no live node has what one evaluation asks for.
        """
        want = {"CPU": float(self.config.num_cpus), "GPU": float(self.config.num_gpus)}
        want = {k: v for k, v in want.items() if v > 0}
        nodes = [n["Resources"] for n in self._ray.nodes() if n.get("Alive")]

        def fits(resources: dict[str, float]) -> int:
            if not want:
                return int(resources.get("CPU", 1)) or 1
            return min(int(resources.get(k, 0.0) / v + 1e-9) for k, v in want.items())

        slots = sum(fits(r) for r in nodes)
        if slots == 0:
            gpus = want.get("GPU", 0.0)
            no_gpu = gpus > 0 and not any(r.get("GPU", 0.0) >= gpus for r in nodes)
            kind = "GPU" if no_gpu else "CPU"
            key = f"launcher.num_{kind.lower()}s"
            have = (
                ", ".join(f"{r.get('CPU', 0):g} CPU {r.get('GPU', 0):g} GPU" for r in nodes)
                or "no live node"
            )
            where = self.config.address or "the local Ray"
            raise ConfigError(
                f"{key}={want[kind]:g}: no node of the Ray cluster at {where} has {want[kind]:g} "
                f"{kind}(s) for one evaluation (its nodes: {have}); Ray would leave the "
                f"evaluations pending forever. Lower {key}, or add such a node"
            )
        return slots

    @property
    def workers(self) -> int:
        """``launcher.max_concurrent``, or the evaluations the cluster's resources allow."""
        return self.config.max_concurrent or self._slots

    @property
    def threads(self) -> int:
        """The CPUs each evaluation is given (``launcher.num_cpus``, rounded up)."""
        return max(1, math.ceil(self.config.num_cpus))

    def check_device(self, spec: str) -> None:
        """Evaluations train on the nodes: a CUDA device needs ``launcher.num_gpus`` > 0 (the
        evaluations of ``launcher.num_gpus=0`` see no GPU: none was reserved for them)."""
        if spec.startswith("cuda") and self.config.num_gpus <= 0:
            raise ConfigError(
                f"train.device={spec!r} needs launcher.num_gpus > 0: an evaluation is given no "
                "GPU otherwise (train.device=auto trains on the GPU a task gets, if any)"
            )

    # -- evaluating -------------------------------------------------------------------------------
    def warm_up(self, fn: Callable[[Any], Result]) -> None:
        """Start a worker per slot (up to 8), each taking the problem from the object store
        and running ``fn.warm_up()``; not waited for."""
        if not callable(getattr(fn, "warm_up", None)):
            return
        fn_ref, problem = self._ship(fn)
        for _ in range(min(self.workers, 8)):
            self._task.remote(fn_ref, None, problem, True)

    def map(
        self,
        fn: Callable[[Any], Result],
        items: Sequence[Any],
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]:
        results = MapResults(len(items), on_result)
        order = iter(range(len(items)))

        def ask(pending: int) -> int | None:
            return next(order, None)

        self._stream(fn, ask, lambda i: items[i], results.deliver, refill_first=True)
        return results.in_order()

    def map_streaming(
        self,
        fn: Callable[[Any], Result],
        ask: Callable[[int], Any | None],
        on_result: Callable[[Any, Result], None],
    ) -> None:
        """A new item is asked for as soon as a task finishes (see
        :meth:`nasfw.Launcher.map_streaming`)."""
        self._stream(fn, ask, lambda item: item, on_result, refill_first=False)

    def _stream(
        self,
        fn: Callable[[Any], Result],
        ask: Callable[[int], Any | None],
        item_of: Callable[[Any], Any],
        deliver: Callable[[Any, Result], None],
        refill_first: bool,
    ) -> None:
        """Keep up to :attr:`workers` tasks in flight (one more when the cluster's resources set
        the limit: Ray queues it and starts it the moment a task ends, while the driver stores
        the result), deliver each result as it arrives, until ``ask`` has nothing left.

        ``refill_first``: the items do not depend on the results (a generation), so the tasks
        that replace the finished ones are submitted before their results are stored.
        """
        fn_ref, problem = self._ship(fn)
        ahead = 1 if self.config.max_concurrent is None else 0
        running = self._running

        def refill() -> None:
            while len(running) < self.workers + ahead:
                tag = ask(len(running))
                if tag is None:
                    return
                running[self._task.remote(fn_ref, item_of(tag), problem, False)] = tag

        try:
            while True:
                refill()
                if not running:
                    return
                finished = [(ref, running.pop(ref)) for ref in self._wait(list(running))]
                if refill_first:
                    refill()
                for ref, tag in finished:
                    deliver(tag, self._result(ref))
        except BaseException:  # Ctrl-C, a lost head, an error in deliver: stop the tasks
            self._cancel()
            raise

    def _wait(self, refs: list[Any]) -> list[Any]:
        """The tasks among ``refs`` that finished; blocks until one does.

        Raises:
            nasfw.LauncherOutage: the head stayed unreachable for ``launcher.head_timeout_s``.
        """
        ray = self._ray
        lost_since: float | None = None
        while True:
            try:
                done, _ = ray.wait(refs, num_returns=1, timeout=WAIT_S)
            except ConnectionError as err:  # Ray Client lost its server
                raise LauncherOutage(self._lost(f"{type(err).__name__}: {err}")) from err
            if done:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                return ready or done
            if self._head is None or _answers(*self._head):
                lost_since = None
                continue
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            if now - lost_since >= self.config.head_timeout_s:
                host, port = self._head
                raise LauncherOutage(
                    self._lost(
                        f"its head ({host}:{port}) refused connections for "
                        f"{now - lost_since:.0f} s (launcher.head_timeout_s)"
                    )
                )

    def _lost(self, reason: str) -> str:
        self._head_lost = True
        where = self.config.address or "the local Ray"
        return f"launcher=ray: the Ray cluster at {where} stopped answering: {reason}"

    def _result(self, ref: Any) -> Result:
        """The task's Result, or a failed one saying what Ray reported."""
        exceptions = self._ray.exceptions
        attempts = self.config.max_retries + 1
        try:
            value = self._ray.get(ref)
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError) as err:
            what = "worker process" if isinstance(err, exceptions.WorkerCrashedError) else "node"
            return Result.failed(
                f"the Ray {what} running it died, {attempts} time(s) (launcher.max_retries="
                f"{self.config.max_retries}): killed, out of memory, or a crash in native code"
            )
        except exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            lines = [line for line in str(cause).splitlines() if line.strip()]
            return Result.failed(
                f"Ray: {type(cause).__name__}: {lines[-1].strip() if lines else ''}"[:800]
            )
        if not isinstance(value, Result):
            return Result.failed(f"returned {type(value).__name__}, not a Result")
        return value

    def _ship(self, fn: Callable[[Any], Result]) -> tuple[Any, tuple[Any, list[Any]] | None]:
        """``fn`` in the object store (once per ``fn``), and the problem it evaluates on (once
        per search) as ``(config, [ref])``: a ref inside a list is handed to the task as is, so
        a worker that has the problem already never fetches it again."""
        from nasfw import load_problem

        ray = self._ray
        if fn is not self._fn:
            self._fn, self._fn_ref = fn, ray.put(fn)
        config = _problem_config(fn)
        if config is None:
            return self._fn_ref, None
        key = repr(config)
        if key not in self._problems:
            self._problems[key] = ray.put(load_problem(config))  # the driver's, already loaded
        return self._fn_ref, (config, [self._problems[key]])

    def _cancel(self) -> None:
        """Stop the tasks in flight (their worker processes are killed)."""
        running, self._running = dict(self._running), {}
        if self._head_lost:
            return  # nobody to ask: the tasks end with the job
        for ref in running:
            # Finished meanwhile, or the cluster is going: nothing to stop.
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    def close(self) -> None:
        """End this process's Ray session if the launcher opened it: the embedded Ray stops,
        a cluster keeps running (the job's leftover tasks end with it)."""
        if self._owned and not self._head_lost:
            self._owned = False
            self._ray.shutdown()

    def abort(self) -> None:
        self._cancel()
        self.close()


def _answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _problem_config(fn: Any) -> ProblemConfig | None:
    """The problem an :class:`nasfw.Evaluator` (or a job wrapping one in ``evaluate``, as
    :class:`nasfw.job.StoredEvaluation` does) evaluates on; None for other functions."""
    for candidate in (fn, getattr(fn, "evaluate", None)):
        config = getattr(candidate, "problem", None)
        if isinstance(config, ProblemConfig):
            return config
    return None


def _evaluate(
    fn: Callable[[Any], Result],
    item: Any,
    problem: tuple[ProblemConfig, list[Any]] | None,
    warm_up: bool,
) -> Result | None:
    """One Ray task: take the problem from the object store if this worker has none yet, then
    ``fn(item)`` (or ``fn.warm_up()``), noting the node that ran it in ``extra["ray_node"]``."""
    import ray

    from nasfw import provide_problem

    if problem is not None:
        config, (ref,) = problem
        provide_problem(config, lambda: ray.get(ref))
    if warm_up:
        # A failure is the first evaluation's to report (it meets the same problem, as a trial).
        with contextlib.suppress(Exception):
            fn.warm_up()  # type: ignore[attr-defined]
        return None
    try:
        result = fn(item)
    except Exception as err:  # an evaluation's failure is its trial's, never Ray's to retry
        where = traceback.extract_tb(err.__traceback__)[-1]
        return Result.failed(
            f"{type(err).__name__}: {err} (at {os.path.basename(where.filename)}:{where.lineno})"
        )
    if isinstance(result, Result):
        result.extra["ray_node"] = ray.get_runtime_context().get_node_id()
    return result


@hookimpl
def register_launchers(register: Callable[[type[Launcher[Any]]], None]) -> None:
    register(RayLauncher)
