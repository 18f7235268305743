"""Runs: the tracking store, the parent run (tags, description, params) and generation runs."""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    FLUSH_SECONDS,
    MAX_FAILURES,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    MlflowTrackingConfig,
    TrackingError,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nasfw import Candidate, SearchContext, TrialRecord

_log = logging.getLogger("nasfw.plugins.tracking.mlflow_tracking")

STATE_KEY = "mlflow"
RUN_ID_ATTR = "mlflow_run_id"  # the study's user attr: its MLflow parent run


# -- the plugin's state in a search ---------------------------------------------------------


def enabled(context: SearchContext) -> bool:
    return select(context.cfg, "tracking.name") == "mlflow"


def setting(context: SearchContext, key: str) -> Any:
    """``tracking.<key>`` of the run (an :class:`MlflowTrackingConfig` when enabled)."""
    tracking: MlflowTrackingConfig = context.cfg.tracking
    return getattr(tracking, key)


def generation_runs(context: SearchContext) -> bool:
    """Whether generations get nested runs: ``tracking.generation_runs``, by default yes
    unless the problem is evaluated by lookup (:attr:`nasfw.Problem.table`)."""
    chosen = setting(context, "generation_runs")
    return bool(chosen) if chosen is not None else context.problem.table is None


def queue_metrics(state: dict[str, Any], run_id: str, metrics: list[Any]) -> None:
    """Keep ``metrics`` for run ``run_id`` until the next :func:`flush` (fewer writes)."""
    state.setdefault("pending", {}).setdefault(run_id, []).extend(metrics)


def flush(state: dict[str, Any], force: bool = True) -> None:
    """Send the metrics :func:`queue_metrics` kept, one ``log_batch`` per run and 1,000
    metrics; unless ``force``, only when ``FLUSH_SECONDS`` passed since the last flush."""
    import time

    now = time.monotonic()
    if not force and now - state.get("flushed_at", 0.0) < FLUSH_SECONDS:
        return
    pending: dict[str, list[Any]] = state.pop("pending", {})
    state["flushed_at"] = now
    for run_id, batch in pending.items():
        for i in range(0, len(batch), METRICS_PER_BATCH):
            state["client"].log_batch(run_id, metrics=batch[i : i + METRICS_PER_BATCH])


def state_of(context: SearchContext) -> dict[str, Any] | None:
    """This search's tracking state, or None when tracking is off, ended or gave up."""
    if not enabled(context):
        return None
    state = context.plugin_state.get(STATE_KEY)
    return state if state is not None and not (state.get("ended") or state.get("off")) else None


@contextmanager
def guard(state: dict[str, Any], what: str) -> Iterator[None]:
    """Log a tracking failure as a warning instead of stopping the search.

    After ``MAX_FAILURES`` failures in a row (a tracking server that went away: each call then
    waits for MLflow's HTTP retries) the later hooks of this search log nothing.
    """
    try:
        yield
    except Exception as err:
        state["failures"] = state.get("failures", 0) + 1
        _log.warning(
            "MLflow tracking: %s failed (%s: %s); the search goes on",
            what,
            type(err).__name__,
            err,
            exc_info=_log.isEnabledFor(logging.DEBUG),
        )
        if state["failures"] >= MAX_FAILURES and not state.get("off"):
            state["off"] = True
            _log.warning(
                "MLflow tracking failed %d times in a row: nothing more is logged to run %s",
                state["failures"],
                state.get("run_id"),
            )
    else:
        state["failures"] = 0


# -- the store --------------------------------------------------------------------------------


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative to the working dir)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def check_store(uri: str) -> None:
    """Before the study exists: MLflow has a store for the URI's scheme, the SQLite file can
    be written and is MLflow's (or new), the server answers."""
    from nasfw import check_writable, describe_sqlite

    _check_scheme(uri)
    path = sqlite_path(uri)
    if path is not None:
        # MLflow would retry an unwritable database for about 100 s before saying so.
        check_writable(path.parent, "tracking.tracking_uri")
        if path.exists() and not os.access(path, os.W_OK):
            raise TrackingError(f"tracking.tracking_uri={uri!r}: {path} is not writable")
        found, what = describe_sqlite(path, "tracking.tracking_uri")
        if found is None or (found and not {"experiments", "runs"} <= found):
            # MLflow would add its tables to another program's (or nasfw's other) file.
            raise TrackingError(
                f"tracking.tracking_uri={uri!r}: {path} is {what}, not an MLflow tracking "
                "store; nothing was written to it. Point it at a new file (sqlite:///mlflow.db)"
            )
    elif uri.startswith(("http://", "https://")):
        probe(uri)


def _check_scheme(uri: str) -> None:
    """MLflow has a tracking store for ``uri``'s scheme (without connecting)."""
    if uri.startswith(("sqlite:///", "http://", "https://")):
        return  # MLflow's own schemes: no need to import MLflow (~1.5 s) to know it
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:  # another MLflow layout: connect() names a bad URI instead
        return
    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception as err:
        raise TrackingError(
            f"tracking.tracking_uri={redact(uri)!r}: MLflow has no tracking store for this "
            f"URI ({type(err).__name__}). Use e.g. 'sqlite:///mlflow.db' or 'http://host:5000'"
        ) from None


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``, checked by one query; the global URI is set too (for log_model).

    Opening a SQLite store creates or migrates its schema; searches started together would
    race through MLflow's migrations and leave a half-migrated database, so for ``sqlite:///``
    URIs they take turns under a lock file beside the database (``<file>.lock``).
    """
    import mlflow
    from filelock import FileLock
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        probe(uri)
    path = sqlite_path(uri)
    turn = FileLock(f"{path}.lock", timeout=300) if path is not None else nullcontext()
    try:
        with turn:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as err:
        hint = (
            f" The database {path} may have been left half-migrated by an older start; move it "
            "aside and rerun, or point tracking.tracking_uri at another file."
            if path is not None and path.exists()
            else " Use e.g. 'sqlite:///mlflow.db' or 'http://host:5000'."
        )
        raise TrackingError(
            f"tracking.tracking_uri={redact(uri)!r} cannot be used as an MLflow tracking store "
            f"({type(err).__name__}: {first_line(err)}).{hint}"
        ) from err
    mlflow.set_tracking_uri(uri)
    return client


def probe(uri: str, timeout: float = 10.0) -> None:
    """Fail fast on a tracking server that does not answer (MLflow retries for minutes).

    Any HTTP answer, even an error status or a TLS problem, leaves the verdict to MLflow.
    """
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except OSError as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(reason, ssl.SSLError | ssl.CertificateError):
            return
        raise TrackingError(
            f"tracking.tracking_uri={redact(uri)!r}: no MLflow tracking server answers there "
            f"({reason}). Start one (mlflow server ...) or use e.g. 'sqlite:///mlflow.db'."
        ) from err


def experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the trash) when needed."""
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name)
            except MlflowException:  # another process created it meanwhile
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    except Exception as err:
        raise TrackingError(
            f"tracking.experiment_name={name!r}: cannot get or create this experiment in "
            f"tracking.tracking_uri={redact(uri)!r} ({type(err).__name__}: {first_line(err)})"
        ) from err


def reopen(client: MlflowClient, run_id: str, experiment_id: str) -> str | None:
    """``run_id`` set back to RUNNING if it still exists in this experiment, else None."""
    try:
        run = client.get_run(run_id)
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != experiment_id:
            raise LookupError("deleted or in another experiment")
        client.update_run(run_id, status="RUNNING")
    except Exception as err:
        _log.warning(
            "cannot continue MLflow run %s of the resumed study (%s); starting a new run",
            run_id,
            first_line(err),
        )
        return None
    return run_id


# -- the parent run: tags, description, params ------------------------------------------------


def run_tags(context: SearchContext) -> dict[str, str]:
    """Where the search comes from: groups, study, storage, user, command and git commits."""
    import nasfw

    cfg = context.cfg
    tags = {
        f"nasfw.{group}": str(select(cfg, f"{group}.name"))
        for group in ("tuner", "problem", "search_space", "launcher")
    }
    storage = select(cfg, "storage.url") or select(cfg, "storage.name")
    tags |= {
        "nasfw.study": context.study.study_name,
        "nasfw.storage": redact(str(storage)),
        "nasfw.version": nasfw.__version__,
        "nasfw.command": redact(command_line())[:MAX_TAG_VALUE],
        "mlflow.user": _user(),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "python -m nasfw",
        "mlflow.note.content": description(context, None),
    }
    project = git_commit(Path.cwd())  # the user's project, where the search was started
    if project:
        tags["mlflow.source.git.commit"] = project
    install = git_commit(Path(nasfw.__file__).parent)  # nasfw itself, when run from a checkout
    if install:
        tags["nasfw.git_commit"] = install
    return tags


def parent_name(context: SearchContext) -> str:
    """The parent run's default name: the study's, with what tells searches apart first.

    MLflow's run lists cut names to a column's width, so the default study name
    ``<tuner>-<problem>-<space>-seed<N>`` becomes ``seed<N> · <tuner>-<problem>-<space>``: the
    seeds of a sweep differ in what is shown. Any other study name is kept as it is.
    """
    study = context.study.study_name
    found = re.fullmatch(r"(?P<rest>.+)-(?P<seed>seed-?\d+)", study)
    return f"{found['seed']} · {found['rest']}" if found else study


def command_line() -> str:
    return shlex.join(["python", "-m", "nasfw", *sys.argv[1:]])


def description(context: SearchContext, best: TrialRecord | None) -> str:
    """The run's description (markdown; MLflow shows it on the run page)."""
    metric = f"val_{context.problem.metric}"
    lines = [
        f"nasfw search, study `{context.study.study_name}`: "
        f"{select(context.cfg, 'tuner.name')} on {context.problem.name} "
        f"(search space {select(context.cfg, 'search_space.name')}).",
        "",
        f"- command: `{redact(command_line())}`",
        f"- output directory: `{context.output_dir}`",
    ]
    if best is not None:
        lines.append(
            f"- best: trial {best.number} (generation {best.generation}), {metric} "
            f"{best.result.metric:.4f}: `{best.graph.summary()}`"
        )
    processed = [row for row in context.postproc_report if "trial" in row]
    if processed:
        row = processed[0]  # the post-processor's first row is the best's (results ranked)
        name = select(context.cfg, "postproc.name")
        lines.append(
            f"- postproc={name} on trial {row['trial']}"
            + (" (the best)" if best is not None and row["trial"] == best.number else "")
            + ": "
            + ", ".join(
                f"{key} {_number(row[key])}"
                for key in ("params_before", "params_after", "val_before", "val_after")
                if isinstance(row.get(key), int | float)
            )
            + f" (all {len(processed)} rows: postproc.json)"
        )
    return "\n".join(lines)[:MAX_TAG_VALUE]


def _number(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:.4f}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def select(cfg: Any, key: str) -> Any:
    """The dotted ``key`` of a typed config (or a config node), None where it has none."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def git_commit(directory: Path) -> str | None:
    """The commit checked out in the repository holding ``directory``, if any."""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha) else None


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://[^/:@\s]*:)[^@/\s]+@")


def redact(text: str) -> str:
    """URLs with ``user:password@`` lose the password."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def resolved(cfg: Any) -> Any:
    """The run's config as plain values (a typed config, or a config node as composed)."""
    import dataclasses

    from omegaconf import OmegaConf

    if dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation that does not resolve: log it as written
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted keys; lists of scalars stay one JSON value, lists of nodes get an index; a None
    (an unset option) is left out rather than logged as the word "None"."""
    if isinstance(node, Mapping):
        items: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list) and any(isinstance(v, Mapping | list) for v in node):
        items = enumerate(node)
    elif node is None:
        return
    else:
        value = json.dumps(node, default=str) if isinstance(node, list) else str(node)
        value = redact(value)
        if len(value) > MAX_PARAM_VALUE:
            value = value[: MAX_PARAM_VALUE - 3] + "..."
        yield prefix, value
        return
    for key, value in items:
        name = re.sub(r"[^\w./\- ]", "_", str(key))
        yield from flatten(value, f"{prefix}.{name}" if prefix else name)


def log_params(
    client: MlflowClient, run_id: str, flat: Iterable[tuple[str, str]], resumed: bool
) -> None:
    from mlflow.entities import Param

    params = dict(flat)
    if resumed:  # MLflow refuses to change a logged param: log new keys, report changed ones
        logged = client.get_run(run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            _log.warning(
                "the resumed search's config differs from the one logged to MLflow run %s in "
                "%s; the run keeps the first values",
                run_id,
                ", ".join(changed),
            )
        params = {k: v for k, v in params.items() if k not in logged}
    entries = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(entries), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=entries[i : i + PARAMS_PER_BATCH])


# -- generation runs --------------------------------------------------------------------------


def existing_generation_run(state: dict[str, Any], generation: int) -> str | None:
    """The id of the nested run a previous process opened for ``generation``, or None; read
    only (the run keeps its status)."""
    found = state["client"].search_runs(
        [state["experiment_id"]],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{state['run_id']}' "
            f"and tags.`nasfw.generation` = '{generation}'"
        ),
        max_results=1,
    )
    return found[0].info.run_id if found else None


def generation_run(
    context: SearchContext,
    state: dict[str, Any],
    generation: int,
    candidates: list[Candidate] | None = None,
    started: float | None = None,
) -> str:
    """The nested run of ``generation``: the open one, the one a killed search left, or new.

    Opened when the generation starts (so its duration is the generation's; ``started``, in
    seconds since the epoch, backdates one opened after the fact), named after the study,
    with the generation's params.
    """
    client: MlflowClient = state["client"]
    runs: dict[int, str] = state["generation_runs"]
    if generation in runs:
        return runs[generation]
    parent_id = state["run_id"]
    run_id = existing_generation_run(state, generation) if state["resumed"] else None
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
    if run_id is None:
        run = client.create_run(
            state["experiment_id"],
            start_time=int(started * 1000) if started is not None else None,
            # The generation first (names are cut to a column's width); search_space=auto's
            # probe is generation -1.
            run_name=(f"gen {generation}" if generation >= 0 else "probe (gen -1)")
            + f" · {parent_name(context)}",
            tags={
                "mlflow.parentRunId": parent_id,
                "nasfw.generation": str(generation),
                "nasfw.study": context.study.study_name,
                "mlflow.user": _user(),
                "mlflow.source.type": "LOCAL",
                "mlflow.source.name": "python -m nasfw",
            },
        )
        run_id = run.info.run_id
        params = {"generation": str(generation), "tuner": str(select(context.cfg, "tuner.name"))}
        if candidates:  # none with asynchronous evaluation: they are asked one by one
            params["candidates"] = str(len(candidates))
        log_params(client, run_id, params.items(), resumed=False)
    runs[generation] = run_id
    return run_id
