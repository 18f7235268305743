"""``python -m nasfw``: compose the config with Hydra, run the search, print a summary.

Exit codes: 0 done; 2 the input is wrong (a config key, a value out of range, a file, a
storage), whether Hydra or nasfw found it, in one line naming the key, or a storage or cluster
that stopped answering (the study intact: rerun to resume); 130 interrupted with
Ctrl-C and 143 stopped with SIGTERM (``kill``, ``scancel``, a scheduler's time limit,
Kubernetes, systemd), at any moment from the start to the exit, in one line: the finished
evaluations are saved, rerun the same command to resume; 1 anything else (a bug: the traceback
is printed).
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

# When `python -m nasfw` started, where /proc cannot tell (nasfw.clock.process_started): taken
# as early as this module can, after the standard library's few imports above (nasfw.signals
# is standard library only).
from nasfw import signals
from nasfw.clock import STARTED  # noqa: F401  (imported first, so the clock starts here)
from nasfw.pareto import front_path, pareto_front

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from rich.table import Table

    from nasfw.search import SearchContext

# Errors that mean "the user's input is wrong": printed as one paragraph, exit code 2.
USER_ERRORS = (
    "nasfw.settings.ConfigError",
    "nasfw.graph.GraphError",
    "nasfw.search_space.SearchSpaceError",
    "nasfw.problem.DataError",
    "nasfw.registry.PluginError",
    "nasfw.storage.LedgerError",
    "nasfw.lease.LeaseError",
    "nasfw.weights.WeightsError",
)


def _is_user_error(err: BaseException) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in USER_ERRORS for cls in type(err).__mro__)


INPUT_ERROR = 2
INTERRUPTED = 130
# Set when an exception escaped a search: Hydra then exits 1 as it does for its own compose
# errors, which main() turns into INPUT_ERROR.
_crashed = False
# The run's config once Hydra composed it, for an interrupt's message wherever it comes.
_run_cfg: DictConfig | None = None


def _fail(message: str) -> None:
    print(f"nasfw: error: {message}", file=sys.stderr)
    sys.exit(INPUT_ERROR)


def _interrupted(cfg: DictConfig | None) -> None:
    """Say what an interrupt (Ctrl-C, SIGTERM) kept, in one line, and exit 130 or 143."""
    code = signals.exit_code()
    how = "interrupted" if code == INTERRUPTED else "interrupted by SIGTERM"
    if cfg is None:  # before the search was set up
        print(f"nasfw: {how} before the search started; nothing was saved.", file=sys.stderr)
        sys.exit(code)
    if str(cfg.mode) == "minibench":
        print(
            f"nasfw: {how}; minibench.db={cfg.minibench.db} keeps every problem searched "
            "to its end, and the interrupted problem's study its finished evaluations. Rerun "
            "the same command to resume.",
            file=sys.stderr,
        )
        sys.exit(code)
    saved = _saved_evaluations(cfg)
    print(
        f"nasfw: {how}; {saved} saved in study {cfg.study_name!r} ({cfg.storage.url}). "
        "Rerun the same command to resume.",
        file=sys.stderr,
    )
    sys.exit(code)


def _saved_evaluations(cfg: DictConfig) -> str:
    """How many evaluations study ``cfg.study_name`` holds, in words (``"12 evaluations"``):
    read after the search stopped, so a storage still busy with its last write, or still in
    the outage that stopped it, is tried three times."""
    import time

    import optuna

    from nasfw.storage import count_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(3):
        try:
            count = count_trials(str(cfg.storage.url), str(cfg.study_name))
            return "no evaluations" if count is None else f"{count} evaluations"
        except Exception:  # busy, or the storage is the reason to stop
            time.sleep(0.5 * (attempt + 1))
    return "every finished evaluation"


def _summary(context: SearchContext, top: int = 5) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not context.history:
        console.print(f"{context.cfg.study_name}: the tuner proposed no network; nothing to train")
        return
    # Networks that only serve the tuner (Petridish's candidate trainings) are no result.
    # Like the best model, the table compares networks at the full budget only.
    full = context.full_budget()
    finished = [t for t in context.history if t.result.ok and t.exportable]
    partial = sum(1 for t in finished if not t.is_result(full))
    ok = sorted(
        (t for t in finished if t.is_result(full)),
        key=lambda t: t.rank,
        reverse=True,
    )[:top]
    failed = sum(1 for t in context.history if t.result.status == "failed")
    pruned = sum(1 for t in context.history if t.result.pruned)
    internal = sum(1 for t in context.history if not t.exportable)
    metric = context.problem.metric
    table = Table(
        title=f"{context.cfg.study_name}: {len(context.history)} evaluations, {failed} failed"
        + (f", {pruned} pruned" if pruned else "")
        + (f", {partial} trained < {full} epochs (not listed)" if partial else "")
        + (f", {internal} the tuner's own (not listed)" if internal else "")
    )
    for column in ("trial", "gen", f"val {metric}", "MFLOPs", "params", "nodes", "train s"):
        table.add_column(column, justify="right")
    for t in ok:
        r = t.result
        table.add_row(
            str(t.number),
            str(t.generation),
            f"{r.metric:.4f}",
            f"{(r.flops or 0) / 1e6:.2f}",
            f"{r.n_params or 0:,}",
            str(len(t.graph)),
            f"{r.train_seconds:.1f}",
        )
    console.print(table)
    front = _pareto_table(context)
    if front is not None:
        console.print(front)
        path = front_path(context)
        if path.is_file():  # a caption would wrap a long path to the table's width
            console.print(f"Pareto front: {path}")
    best = context.best()
    if context.simulated_seconds:
        wall = sum(context.generation_seconds.values())
        console.print(
            f"clock: {context.simulated_total():,.0f} s of simulated training (the table's "
            f"recorded times) in {wall:.1f} s of wall time"
        )
    if best is not None and context.problem.table is not None and context.export_dir:
        console.print(
            f"best: trial {best.number}, val {metric} {best.result.metric:.4f} (looked up in the "
            f"table); {best.graph.summary()}; exported to {context.export_dir}"
        )
    if best is not None and "test_metric" in best.result.extra:
        console.print(
            f"best: trial {best.number}, val {metric} {best.result.metric:.4f}, "
            f"test {metric} {best.result.extra['test_metric']:.4f}; exported to "
            f"{context.export_dir}"
        )
    postproc = _postproc_table(context)
    if postproc is not None:
        from nasfw.export import postproc_report_path

        console.print(postproc)
        console.print(f"post-processing report: {postproc_report_path(context)}")
    console.print(f"study: {context.cfg.study_name} in {context.cfg.storage.url}")
    if context.cfg.tracking.name == "mlflow":
        console.print(
            f"mlflow: experiment {context.cfg.tracking.experiment_name!r} in "
            f"{context.cfg.tracking.tracking_uri} (open with: mlflow ui --backend-store-uri "
            f"{context.cfg.tracking.tracking_uri})"
        )


def _postproc_table(context: SearchContext) -> Table | None:
    """The post-processor's rows (``postproc=morphnet``: each shrunk network's size and
    scores before and after), the best's first; None without a report."""
    from rich.table import Table

    rows = context.postproc_report
    if not rows:
        return None
    metric = context.problem.metric
    table = Table(title=f"postproc={context.cfg.postproc.name} (before → after)")
    columns = {
        "params": ("params_before", "params_after", "{:,.0f}"),
        "MFLOPs": ("flops_before", "flops_after", "{:.2f}"),
        f"val {metric}": ("val_before", "val_after", "{:.4f}"),
    }
    table.add_column("trial", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_column(f"test {metric}", justify="right")

    def shown(value: Any, form: str, scale: float = 1.0) -> str:
        return form.format(value / scale) if isinstance(value, int | float) else "-"

    for row in rows:
        cells = [str(row.get("trial", "-"))]
        for name, (before, after, form) in columns.items():
            scale = 1e6 if name == "MFLOPs" else 1.0
            cells.append(
                f"{shown(row.get(before), form, scale)} → {shown(row.get(after), form, scale)}"
            )
        cells.append(shown(row.get("test_after"), "{:.4f}"))
        table.add_row(*cells)
    return table


def _pareto_table(context: SearchContext) -> Table | None:
    """The search's validation metric x FLOPs Pareto front (FLOPs: multiply-adds x 2) as a
    table, cheapest first; None when no ok trial has both."""
    from rich.table import Table

    front = pareto_front(context.history, context.full_budget())
    if not front:
        return None
    metric = context.problem.metric
    table = Table(title=f"Pareto front (val {metric} vs FLOPs)")
    for column in ("trial", "gen", f"val {metric}", "FLOPs", "params"):
        table.add_column(column, justify="right")
    for t in front:
        r = t.result
        # Exact FLOPs: small networks differ by less than the 0.01 MFLOPs the table above shows.
        table.add_row(
            str(t.number),
            str(t.generation),
            f"{r.metric:.4f}",
            f"{r.flops:,}",
            f"{r.n_params or 0:,}",
        )
    return table


def _task(cfg: DictConfig) -> float | None:
    """One search: one job of a multirun too (:func:`nasfw.sweep.run_job`)."""
    from nasfw.sweep import run_job

    return run_job(cfg, _search)


def _search(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from nasfw.search import run_search

    global _crashed, _run_cfg
    _run_cfg = cfg
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if str(cfg.mode) == "minibench":
            from nasfw.minibench.build import build_db

            build_db(cfg, output_dir)
            return None
        context = run_search(cfg, output_dir)
    except Exception as err:
        from nasfw.launcher import LauncherOutage
        from nasfw.storage import StorageOutage

        if isinstance(err, StorageOutage | LauncherOutage):
            what = "storage" if isinstance(err, StorageOutage) else "cluster"
            _fail(
                f"{err}. {_saved_evaluations(cfg).capitalize()} saved in study "
                f"{cfg.study_name!r}, intact; once the {what} answers, rerun the same command "
                "to resume."
            )
        if _is_user_error(err):
            _fail(str(err))
        _crashed = True
        raise
    _summary(context)
    best = context.best()
    if best is None and context.history:
        reasons = Counter(
            (t.result.error or ("pruned" if t.result.pruned else "failed")).split(" (at ")[0]
            for t in context.history
        )
        listing = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(5))
        _fail(
            f"no candidate of study {cfg.study_name!r} trained successfully ({listing}). "
            f"The failed trials and their reasons are in {cfg.storage.url}."
        )
    return best.result.metric if best is not None else None


def main() -> None:
    signals.install(deliver=False)  # the nasfw script may not have installed it yet
    try:
        signals.install()
        signals.check()  # a signal that came while the modules imported
        _main()
    except KeyboardInterrupt:  # from the first import to the exit, the search included
        _interrupted(_run_cfg)


def _main() -> None:
    import hydra

    from nasfw.compose import store_schemas
    from nasfw.registry import PluginError, PluginWarning, registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        try:
            store_schemas(registry())
        except PluginError as err:
            _fail(str(err))
    for warning in caught:  # one line each, not Python's two with a source line
        if issubclass(warning.category, PluginWarning):
            print(f"nasfw: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    _register_resolvers()
    _share_config_store()
    try:
        hydra.main(version_base="1.3", config_path="pkg://nasfw.conf", config_name="config")(
            _task
        )()
    except SystemExit as exit:
        if exit.code == 1 and not _crashed:  # Hydra could not compose the config
            _blocked_plugins_note()
            sys.exit(INPUT_ERROR)
        raise
    from nasfw.sweep import exit_if_jobs_failed

    exit_if_jobs_failed(INPUT_ERROR)


def _share_config_store() -> None:
    """Let Hydra's copies of its config repository read the one ConfigStore, not copies of it.

    Hydra 1.3 deep-copies its config repository, and with it the ConfigStore holding every
    structured config (Hydra's own, the schema, each plugin's), each time it lists a config
    group: ``--help`` lists every group, about a hundred copies and most of its seconds. The
    copies only read the store (``ConfigStore.load`` hands out a deep copy of the node), and
    the store is a process-wide singleton that a ``StructuredConfigSource`` always takes from
    ``ConfigStore.instance()``: sharing it changes no result. Upstream Hydra does the same
    (facebookresearch/hydra#2928: the source reads ``ConfigStore.instance()`` on each use).
    """
    import copy

    try:
        from hydra._internal.sources_registry import SourcesRegistry
        from hydra.core.plugins import Plugins

        # Hydra's plugin scan (once per process, which hydra.main would do anyway) re-executes
        # the module defining StructuredConfigSource: patch the class it registers, after it.
        Plugins.instance()
        source = SourcesRegistry.instance().resolve("structured")
    except (ImportError, ValueError):  # another Hydra layout: it is only slower
        return
    if "__deepcopy__" in vars(source):
        return

    def deepcopy_sharing_store(self: object, memo: dict[int, object]) -> object:
        clone = copy.copy(self)  # provider and path are strings; store stays the singleton
        memo[id(self)] = clone
        return clone

    source.__deepcopy__ = deepcopy_sharing_store  # type: ignore[attr-defined]


def _register_resolvers() -> None:
    """``${nasfw.unique:}``: one random word per process, so runs never share a directory;
    ``${nasfw.help_config:}``: the config ``--help`` shows, annotated."""
    import secrets

    from omegaconf import OmegaConf

    word = secrets.token_hex(3)
    OmegaConf.register_new_resolver("nasfw.unique", lambda: word, replace=True)
    from nasfw.helptext import register_resolver

    register_resolver()  # ${nasfw.help_config:}: --help's annotated config


def _blocked_plugins_note() -> None:
    """After a compose error, say which options NASFW_DISABLE_PLUGINS made unavailable, and
    from which blocked plugin each would come."""
    import os
    from importlib.metadata import entry_points

    from nasfw.registry import (
        DISABLE_ENV,
        ENTRY_POINT_GROUP,
        blocked_names,
        blocked_provider,
        blocked_registries,
    )

    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    blocked = [name for name in blocked_names() if name in installed]
    if not blocked:  # a name that blocks nothing was warned about when plugins were loaded
        return
    setting = f"{DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    for option, key in _unavailable_options(sys.argv[1:]):
        provider = blocked_provider("configs", key)
        if provider is None and set(blocked) <= set(blocked_registries()):
            continue  # no blocked plugin has it: a misspelt option, which Hydra's error shows
        reason = (
            f"blocks plugin {provider!r}, which provides it"
            if provider is not None
            else f"blocks the plugin(s) {', '.join(blocked)}"
        )
        print(
            f"nasfw: note: {option} is not available because {setting} {reason}; "
            "unset it or choose another option.",
            file=sys.stderr,
        )


def _unavailable_options(argv: list[str]) -> list[tuple[str, tuple[str, str]]]:
    """The options (the defaults' and ``argv``'s ``group=option`` choices, and the
    ``plugins.<name>`` that ``argv`` sets) that no config provides, each as it reads on the
    command line and as its ``(group, name)`` key in :attr:`nasfw.Registry.configs`."""
    import re
    from importlib import resources

    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from nasfw.registry import PLUGINS_GROUP, registry

    conf = resources.files("nasfw.conf")
    chosen: dict[str, tuple[str, bool]] = {}
    for entry in OmegaConf.load(str(conf / "config.yaml")).defaults:
        if not isinstance(entry, str):
            chosen.update((str(g), (str(o), True)) for g, o in entry.items())
    plugin_nodes: list[str] = []
    for arg in argv:
        match = re.fullmatch(r"([A-Za-z_]\w*)=([\w.-]+)", arg)
        if match and match[1] in chosen:
            chosen[match[1]] = (match[2], False)
        node = re.match(rf"\+*{PLUGINS_GROUP}\.(\w+)[.=]", arg)
        if node and node[1] not in plugin_nodes:
            plugin_nodes.append(node[1])
    missing = []
    for group, (option, default) in chosen.items():
        try:
            stored = ConfigStore.instance().list(group)
        except OSError:
            stored = []
        files = [p.name for p in (conf / group).iterdir()] if (conf / group).is_dir() else []
        if f"{option}.yaml" not in {*stored, *files}:
            text = f"{group}={option}" + (" (the default)" if default else "")
            missing.append((text, (group, option)))
    missing += [
        (f"{PLUGINS_GROUP}.{name}", (PLUGINS_GROUP, name))
        for name in plugin_nodes
        if (PLUGINS_GROUP, name) not in registry().configs
    ]
    return missing
