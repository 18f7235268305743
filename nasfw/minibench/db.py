"""The mini-benchmark DB: each suite problem's best networks, in a file a team can share.

Any SQLAlchemy URL works (a path is a SQLite file). Layout (format version 2):

- ``problems``: one row per suite entry: ``id`` (the entry, e.g. ``digits_noisy:noise=0.5``),
  ``problem`` (the preset), ``settings`` (JSON of the entry's problem settings), ``modality``,
  ``task``, ``input_shape`` (JSON, no batch dimension), ``n_outputs``, ``n_train``, ``metric``
  (the validation metric's name, higher is better), ``tuner``, ``search_space``, ``study`` and
  ``storage`` (the Optuna study that searched it), ``fingerprint`` (of the search's settings:
  an entry is searched again when they change), ``trials``, ``search_seconds``, ``added``
  (seconds since the epoch).
- ``models``: the ``top_k`` best networks of each problem, ``problem_id``, ``rank`` (0 best),
  ``trial`` (its number in the study), ``graph`` (ArchGraph JSON), ``value`` (validation
  metric), ``flops`` (multiply-adds x 2, one example), ``params``, ``epoch_seconds`` (training
  seconds per epoch).
- ``evaluations``: every network each problem's search trained to the full budget (the
  screening regressor's data): ``problem_id``, ``trial``, ``graph``, ``value``, ``flops``,
  ``params``, ``epoch_seconds``.
- ``references``: each space family's fixed reference networks
  (:mod:`nasfw.minibench.references`), chosen once: ``family``, ``idx``, ``graph``.
- ``reference_scores``: each problem's score of its family's references: ``problem_id``,
  ``family``, ``idx``, ``value`` (the validation metric, higher is better), ``seconds`` (what
  scoring it cost: training seconds, simulated for a table).
- ``info``: ``key``/``value`` pairs; ``format`` = 2, ``kind`` = ``nasfw-minibench`` (the
  marker: nasfw writes only into a DB it made; one made before the marker existed, with
  exactly these tables, gets it on first open).

A format-1 DB (before the reference tables) is migrated on open: the two tables are added
(empty; ``mode=minibench`` scores its problems' references on its next run) and ``format``
becomes 2. A DB of a newer format is refused.

A file that is none of these (an Optuna storage, an MLflow store, another program's tables)
is refused before anything is written to it; so is an empty file where a DB must exist.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasfw.config import ConfigError
from nasfw.graph import ArchGraph
from nasfw.minibench.encoding import ProblemMeta

FORMAT = 2
#: Formats this version opens (older ones are migrated: their tables are a subset).
READABLE = (1, 2)
#: The ``info`` row that marks a DB as nasfw's (``kind``).
MARKER = "nasfw-minibench"


@dataclass
class ProblemEntry:
    """One suite problem as the DB keeps it (see the module docstring for the fields)."""

    id: str
    problem: str
    meta: ProblemMeta
    metric: str
    settings: dict[str, Any] = field(default_factory=dict)
    tuner: str = ""
    search_space: str = ""
    study: str = ""
    storage: str = ""
    fingerprint: str = ""
    trials: int = 0
    search_seconds: float = 0.0
    added: float = 0.0


@dataclass
class ModelEntry:
    """One of a problem's best networks."""

    problem_id: str
    rank: int
    graph: ArchGraph
    value: float
    flops: int | None = None
    params: int | None = None
    epoch_seconds: float | None = None
    trial: int | None = None


def db_url(location: str) -> str:
    """``minibench.db`` as a SQLAlchemy URL: URLs as they are, paths as absolute SQLite files."""
    if "://" in location:
        return location
    return f"sqlite:///{Path(location).expanduser().absolute()}"


class BestModelDB:
    """The best-model DB at ``location`` (``minibench.db``), created on first write.

    Raises:
        ConfigError: naming ``minibench.db`` when it cannot be opened, is not a nasfw
            mini-benchmark DB, or (``must_exist``) does not exist.
    """

    def __init__(self, location: str, must_exist: bool = False) -> None:
        import sqlalchemy as sa

        self.location = location
        self.url = db_url(location)
        if must_exist and self.url.startswith("sqlite:///"):
            path = Path(self.url.removeprefix("sqlite:///"))
            if not path.is_file():
                raise ConfigError(
                    f"minibench.db={location}: no mini-benchmark DB at {path}; build one with "
                    "python -m nasfw mode=minibench (see docs/minibench.md)"
                )
        meta = sa.MetaData()
        self._problems = sa.Table(
            "problems",
            meta,
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("problem", sa.String(255), nullable=False),
            sa.Column("settings", sa.Text, nullable=False),
            sa.Column("modality", sa.String(32), nullable=False),
            sa.Column("task", sa.String(32), nullable=False),
            sa.Column("input_shape", sa.Text, nullable=False),
            sa.Column("n_outputs", sa.Integer, nullable=False),
            sa.Column("n_train", sa.Integer, nullable=False),
            sa.Column("metric", sa.String(64), nullable=False),
            sa.Column("tuner", sa.String(64)),
            sa.Column("search_space", sa.String(255)),
            sa.Column("study", sa.String(512)),
            sa.Column("storage", sa.Text),
            sa.Column("fingerprint", sa.String(64)),
            sa.Column("trials", sa.Integer),
            sa.Column("search_seconds", sa.Float),
            sa.Column("added", sa.Float),
        )

        def networks(name: str, key: str) -> sa.Table:
            """A table of networks: ``models`` (a problem's best, by ``rank``, with their
            ``trial``) or ``evaluations`` (all a problem's search trained, by ``trial``)."""
            return sa.Table(
                name,
                meta,
                sa.Column(
                    "problem_id", sa.String(255), sa.ForeignKey("problems.id"), primary_key=True
                ),
                sa.Column(key, sa.Integer, primary_key=True),
                *([sa.Column("trial", sa.Integer)] if key == "rank" else []),
                sa.Column("graph", sa.Text, nullable=False),
                sa.Column("value", sa.Float, nullable=False),
                sa.Column("flops", sa.BigInteger),
                sa.Column("params", sa.BigInteger),
                sa.Column("epoch_seconds", sa.Float),
            )

        self._models = networks("models", "rank")
        self._evaluations = networks("evaluations", "trial")
        self._references = sa.Table(
            "references",
            meta,
            sa.Column("family", sa.String(64), primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True),
            sa.Column("graph", sa.Text, nullable=False),
        )
        self._reference_scores = sa.Table(
            "reference_scores",
            meta,
            sa.Column("problem_id", sa.String(255), sa.ForeignKey("problems.id"), primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True),
            sa.Column("family", sa.String(64), nullable=False),
            sa.Column("value", sa.Float, nullable=False),
            sa.Column("seconds", sa.Float),
        )
        self._info = sa.Table(
            "info",
            meta,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        try:
            self._engine = sa.create_engine(self.url)
            self._open(meta, must_exist)
        except sa.exc.SQLAlchemyError as err:
            raise ConfigError(
                f"minibench.db={location}: cannot use it as a mini-benchmark DB "
                f"({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from None

    def _open(self, meta: Any, must_exist: bool) -> None:
        """Create the DB, or check the one there is nasfw's (before anything is written)."""
        import sqlalchemy as sa

        from nasfw.dbfiles import describe, sqlite_file, sqlite_tables

        path = sqlite_file(self.url)
        tables = (
            sqlite_tables(path, "minibench.db")
            if path is not None
            else frozenset(sa.inspect(self._engine).get_table_names())
        )
        ours = tables is not None and {"problems", "models", "info"} <= tables <= set(meta.tables)
        if tables and ours:
            with self._engine.connect() as conn:
                info = dict(conn.execute(sa.select(self._info.c.key, self._info.c.value)).all())
            ours = "format" in info
        if tables or must_exist:
            if not ours:
                what = describe(tables)
                raise ConfigError(
                    f"minibench.db={self.location}: {path or self.location} is {what}, not a "
                    "nasfw mini-benchmark DB; nothing was written to it"
                    + (
                        ". Build one with python -m nasfw mode=minibench"
                        if not tables
                        else ". Point minibench.db at a new file"
                    )
                )
            if int(info["format"]) not in READABLE:
                raise ConfigError(
                    f"minibench.db={self.location}: format {info['format']}, this nasfw reads "
                    f"formats {', '.join(map(str, READABLE))}"
                )
            if (
                info.get("kind") == MARKER
                and tables == set(meta.tables)
                and int(info["format"]) == FORMAT
            ):
                return
        # A new DB, nasfw's own from before the marker, or an older format: its tables (the
        # new ones added empty), the marker and this format.
        meta.create_all(self._engine)
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(self._info).where(self._info.c.key == "format").values(value=str(FORMAT))
            )
            for key, value in (("format", str(FORMAT)), ("kind", MARKER)):
                found = conn.execute(
                    sa.select(self._info.c.value).where(self._info.c.key == key)
                ).scalar()
                if found is None:
                    conn.execute(sa.insert(self._info).values(key=key, value=value))

    def put(
        self,
        entry: ProblemEntry,
        models: Iterable[ModelEntry],
        evaluations: Iterable[ModelEntry] = (),
    ) -> None:
        """Store ``entry`` with its best ``models`` and every network its search trained to
        the full budget (``evaluations``, for the screening regressor; their ``rank`` is not
        kept), replacing what the DB held for it (one transaction: a reader never sees a
        half-written problem)."""
        import sqlalchemy as sa

        m = entry.meta
        row = {
            "id": entry.id,
            "problem": entry.problem,
            "settings": json.dumps(entry.settings, sort_keys=True),
            "modality": m.modality,
            "task": m.task,
            "input_shape": json.dumps(list(m.input_shape)),
            "n_outputs": m.n_outputs,
            "n_train": m.n_train,
            "metric": entry.metric,
            "tuner": entry.tuner,
            "search_space": entry.search_space,
            "study": entry.study,
            "storage": entry.storage,
            "fingerprint": entry.fingerprint,
            "trials": entry.trials,
            "search_seconds": entry.search_seconds,
            "added": entry.added or time.time(),
        }
        with self._engine.begin() as conn:
            self._delete(conn, entry.id)
            conn.execute(sa.insert(self._problems).values(**row))
            trained = [_row(entry.id, e, "trial") for e in evaluations]
            if trained:
                conn.execute(sa.insert(self._evaluations), trained)
            rows = [_row(entry.id, model, "rank") for model in models]
            if rows:
                conn.execute(sa.insert(self._models), rows)

    def problems(self) -> list[ProblemEntry]:
        """Every problem in the DB, by id."""
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(self._problems).order_by(self._problems.c.id)).all()
        return [
            ProblemEntry(
                id=r.id,
                problem=r.problem,
                meta=ProblemMeta(
                    r.modality,
                    r.task,
                    tuple(json.loads(r.input_shape)),
                    r.n_outputs,
                    r.n_train,
                ),
                metric=r.metric,
                settings=json.loads(r.settings),
                tuner=r.tuner or "",
                search_space=r.search_space or "",
                study=r.study or "",
                storage=r.storage or "",
                fingerprint=r.fingerprint or "",
                trials=r.trials or 0,
                search_seconds=r.search_seconds or 0.0,
                added=r.added or 0.0,
            )
            for r in rows
        ]

    def models(self, problem_id: str | None = None) -> list[ModelEntry]:
        """The best networks of ``problem_id`` (None: of every problem), best first."""
        import sqlalchemy as sa

        query = sa.select(self._models).order_by(self._models.c.problem_id, self._models.c.rank)
        if problem_id is not None:
            query = query.where(self._models.c.problem_id == problem_id)
        with self._engine.connect() as conn:
            return [_entry(r, r.rank) for r in conn.execute(query).all()]

    def evaluations(self, problem_id: str | None = None) -> list[ModelEntry]:
        """Every network the search of ``problem_id`` (None: of each problem) trained to the
        full budget, by trial number (``rank`` is -1)."""
        import sqlalchemy as sa

        t = self._evaluations
        query = sa.select(t).order_by(t.c.problem_id, t.c.trial)
        if problem_id is not None:
            query = query.where(t.c.problem_id == problem_id)
        with self._engine.connect() as conn:
            return [_entry(r, -1) for r in conn.execute(query).all()]

    def check_networks(self) -> None:
        """Every network the DB holds is valid over the registered ops (each op known, each
        param of the right type and within the op's limits and rules): checked before a
        search reads them (``search_space=auto``, ``evaluation.screen``).

        Raises:
            ConfigError: naming ``minibench.db``, the problem, the network and its node.
        """
        from nasfw.graph import GraphError
        from nasfw.registry import registry

        ops = registry().ops
        for network in [*self.models(), *self.evaluations()]:
            try:
                network.graph.validate(ops)
            except GraphError as err:
                which = f"rank {network.rank}" if network.rank >= 0 else f"trial {network.trial}"
                raise ConfigError(
                    f"minibench.db={self.location}: network {which} of problem "
                    f"{network.problem_id!r}: {err}"
                ) from None

    def _delete(self, conn: Any, problem_id: str) -> None:
        import sqlalchemy as sa

        for table in (self._models, self._evaluations, self._reference_scores):
            conn.execute(sa.delete(table).where(table.c.problem_id == problem_id))
        conn.execute(sa.delete(self._problems).where(self._problems.c.id == problem_id))

    def references(self, family: str) -> list[ArchGraph]:
        """The reference networks of ``family``, by index (empty: none chosen yet)."""
        import sqlalchemy as sa

        t = self._references
        query = sa.select(t.c.graph).where(t.c.family == family).order_by(t.c.idx)
        with self._engine.connect() as conn:
            return [ArchGraph.from_json(g) for g in conn.execute(query).scalars()]

    def put_references(self, family: str, graphs: Iterable[ArchGraph]) -> None:
        """Store ``family``'s reference networks. They are chosen once: scores of different
        networks would not be comparable.

        Raises:
            ValueError: the family has references already.
        """
        import sqlalchemy as sa

        if self.references(family):
            raise ValueError(f"space family {family!r} has reference networks already")
        rows = [{"family": family, "idx": i, "graph": g.to_json()} for i, g in enumerate(graphs)]
        with self._engine.begin() as conn:
            conn.execute(sa.insert(self._references), rows)

    def put_reference_scores(
        self, problem_id: str, family: str, scores: Iterable[tuple[int, float, float | None]]
    ) -> None:
        """Store ``problem_id``'s scores ``(idx, value, seconds)`` of ``family``'s references,
        replacing any it had."""
        import sqlalchemy as sa

        t = self._reference_scores
        rows = [
            {"problem_id": problem_id, "family": family, "idx": i, "value": v, "seconds": s}
            for i, v, s in scores
        ]
        with self._engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.problem_id == problem_id))
            if rows:
                conn.execute(sa.insert(t), rows)

    def reference_scores(self, family: str | None = None) -> dict[str, dict[int, float]]:
        """Each problem's reference scores (index -> value), of ``family`` (None: every
        family's problems), by problem id."""
        import sqlalchemy as sa

        t = self._reference_scores
        query = sa.select(t.c.problem_id, t.c.idx, t.c.value).order_by(t.c.problem_id, t.c.idx)
        if family is not None:
            query = query.where(t.c.family == family)
        found: dict[str, dict[int, float]] = {}
        with self._engine.connect() as conn:
            for pid, idx, value in conn.execute(query).all():
                found.setdefault(pid, {})[idx] = value
        return found

    def reference_seconds(self) -> dict[str, float]:
        """What scoring its references cost each problem (seconds, summed)."""
        import sqlalchemy as sa

        t = self._reference_scores
        query = sa.select(t.c.problem_id, sa.func.sum(t.c.seconds)).group_by(t.c.problem_id)
        with self._engine.connect() as conn:
            return {pid: float(s or 0.0) for pid, s in conn.execute(query).all()}

    def families(self) -> dict[str, str]:
        """Each scored problem's space family, by problem id."""
        import sqlalchemy as sa

        t = self._reference_scores
        with self._engine.connect() as conn:
            return dict(conn.execute(sa.select(t.c.problem_id, t.c.family).distinct()).all())

    def get(self, problem_id: str) -> ProblemEntry | None:
        return next((p for p in self.problems() if p.id == problem_id), None)

    def remove(self, problem_id: str) -> None:

        with self._engine.begin() as conn:
            self._delete(conn, problem_id)

    def close(self) -> None:
        self._engine.dispose()


def _row(problem_id: str, network: ModelEntry, key: str) -> dict[str, Any]:
    """``network`` as a row of ``models`` (``key="rank"``) or ``evaluations`` (``"trial"``)."""
    row = {
        "problem_id": problem_id,
        "trial": network.trial,
        "graph": network.graph.to_json(),
        "value": network.value,
        "flops": network.flops,
        "params": network.params,
        "epoch_seconds": network.epoch_seconds,
    }
    return {**row, "rank": network.rank} if key == "rank" else row


def _entry(row: Any, rank: int) -> ModelEntry:
    return ModelEntry(
        problem_id=row.problem_id,
        rank=rank,
        graph=ArchGraph.from_json(row.graph),
        value=row.value,
        flops=row.flops,
        params=row.params,
        epoch_seconds=row.epoch_seconds,
        trial=row.trial,
    )
