"""ArchGraph: the one architecture encoding every tuner emits.

A directed acyclic graph of layer nodes. Each node names an op (see :mod:`nasfw.ops`), the op's
params, the ids of its inputs (``"input"`` is the network input) and how several inputs merge
(``concat`` along channels, or ``add``). One node is the output; the model builder adds the task
head after it.

Example:
    >>> g = ArchGraph(
    ...     [Node("c0", "conv2d", {"filters": 16, "kernel_size": 3}),
    ...      Node("d0", "dense", {"units": 32}, inputs=("c0",))],
    ...     output="d0")
    >>> ArchGraph.from_json(g.to_json()) == g
    True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nasfw.config import ConfigError
from nasfw.ops import OpSpec

INPUT = "input"
MERGE_KINDS = ("concat", "add")
FORMAT_VERSION = 1


class GraphError(ValueError):
    """An ArchGraph is malformed or breaks a constraint; the message names the node."""


@dataclass(frozen=True)
class Node:
    """One layer: ``op`` with ``params``, fed by ``inputs`` merged with ``merge``."""

    id: str
    op: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = (INPUT,)
    merge: str = "concat"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "op": self.op,
            "params": dict(self.params),
            "inputs": list(self.inputs),
            "merge": self.merge,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "node") -> Node:
        if not isinstance(data, Mapping):
            raise GraphError(f"{where}: expected an object, got {data!r}")
        missing = {"id", "op"} - set(data)
        if missing:
            raise GraphError(f"{where}: missing field(s) {sorted(missing)}")
        unknown = set(data) - {"id", "op", "params", "inputs", "merge"}
        if unknown:
            raise GraphError(f"node {data['id']!r}: unknown field(s) {sorted(unknown)}")
        inputs = data.get("inputs", [INPUT])
        if isinstance(inputs, str) or not isinstance(inputs, Iterable):
            raise GraphError(f"node {data['id']!r}: 'inputs' must be a list of node ids")
        return cls(
            id=str(data["id"]),
            op=str(data["op"]),
            params=dict(data.get("params") or {}),
            inputs=tuple(str(i) for i in inputs),
            merge=str(data.get("merge", "concat")),
        )


class ArchGraph:
    """An immutable DAG of :class:`Node` with one output node.

    ``train`` holds the training settings a search space searches together with the layers
    (a space whose genes include them, e.g. FCNet's learning rate and batch size: Klein and
    Hutter, arXiv:1905.04970): part of the graph's identity (its JSON and :attr:`hash`), and
    the candidate's training overrides where it trains. Empty for most spaces; an empty
    ``train`` leaves the JSON and the hash as they were before it existed.
    """

    __slots__ = ("_hash", "_nodes", "output", "train")

    def __init__(
        self, nodes: Iterable[Node], output: str, train: Mapping[str, Any] | None = None
    ) -> None:
        self._nodes: dict[str, Node] = {}
        for node in nodes:
            if node.id in self._nodes:
                raise GraphError(f"node {node.id!r}: duplicate node id")
            if node.id == INPUT:
                raise GraphError(f"node id {INPUT!r} is reserved for the network input")
            self._nodes[node.id] = node
        self.output = output
        self.train: dict[str, Any] = dict(train or {})
        # Computed once (the graph is immutable): a search reads it several times per trial.
        self._hash: str | None = None

    # -- access -------------------------------------------------------------------------
    @property
    def nodes(self) -> dict[str, Node]:
        return dict(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __getitem__(self, node_id: str) -> Node:
        return self._nodes[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __eq__(self, other: object) -> bool:
        # Content equality, like the hash: node order does not matter.
        return isinstance(other, ArchGraph) and self.hash == other.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        chain = ", ".join(f"{n.id}:{n.op}" for n in self._nodes.values())
        train = f", train={self.train!r}" if self.train else ""
        return f"ArchGraph([{chain}], output={self.output!r}{train})"

    def consumers(self, node_id: str) -> list[Node]:
        """Nodes that take ``node_id`` as an input."""
        return [n for n in self._nodes.values() if node_id in n.inputs]

    def replace(self, nodes: Iterable[Node] | None = None, output: str | None = None) -> ArchGraph:
        return ArchGraph(
            self._nodes.values() if nodes is None else nodes, output or self.output, self.train
        )

    def with_node(self, node: Node) -> ArchGraph:
        """A copy where the node with ``node.id`` is replaced by ``node``."""
        return self.replace([node if n.id == node.id else n for n in self._nodes.values()])

    def with_params(self, node_id: str, **params: Any) -> ArchGraph:
        node = self._nodes[node_id]
        return self.with_node(replace(node, params={**node.params, **params}))

    # -- structure ----------------------------------------------------------------------
    def topological_order(self) -> list[Node]:
        """Nodes so that every node comes after its inputs (ties kept in insertion order).

        Raises :class:`GraphError` naming the nodes of a cycle or an input that does not exist.
        """
        for node in self._nodes.values():
            for src in node.inputs:
                if src != INPUT and src not in self._nodes:
                    raise GraphError(f"node {node.id!r}: input {src!r} is not a node of the graph")
            if not node.inputs:
                raise GraphError(f"node {node.id!r}: has no inputs")
        # A node's wave is 1 + the latest wave of its inputs (the input's is 0): the order is
        # the nodes sorted by wave, ties in insertion order, one pass over the edges (waves
        # found by rescanning every pending node made it quadratic: a sizeable share of
        # nasfw's own cost per trial, which summarises each graph).
        wave: dict[str, int] = {}
        for node in self._nodes.values():
            if node.id not in wave and not self._wave(node, wave, set()):
                break  # a cycle: named below
        else:
            return sorted(self._nodes.values(), key=lambda n: wave[n.id])
        done: dict[str, None] = {}
        pending = dict(self._nodes)
        while pending:
            ready = [n for n in pending.values() if all(s == INPUT or s in done for s in n.inputs)]
            if not ready:
                raise GraphError(f"cycle among nodes {sorted(pending)}")
            for n in ready:
                done[n.id] = None
                del pending[n.id]
        return [self._nodes[i] for i in done]

    def _wave(self, node: Node, wave: dict[str, int], visiting: set[str]) -> bool:
        """Set ``wave`` of ``node`` and of its inputs; False on a cycle."""
        stack = [node]
        while stack:
            top = stack[-1]
            later = [s for s in top.inputs if s != INPUT and s not in wave]
            if not later:
                wave[top.id] = 1 + max((wave[s] for s in top.inputs if s != INPUT), default=0)
                visiting.discard(top.id)
                stack.pop()
                continue
            visiting.add(top.id)
            for src in later:
                if src in visiting:
                    return False
                stack.append(self._nodes[src])
        return True

    def validate(self, ops: Mapping[str, OpSpec] | None = None) -> ArchGraph:
        """Check structure (and ops and params, given the op registry); return ``self``.

        Structure: an existing output, no cycle, inputs that exist, merge kinds known, and every
        node on a path from the input to the output (no dangling node).
        """
        if not self._nodes:
            raise GraphError("the graph has no nodes")
        if self.output not in self._nodes:
            raise GraphError(f"output {self.output!r} is not a node of the graph")
        order = self.topological_order()
        for node in order:
            if node.merge not in MERGE_KINDS:
                raise GraphError(
                    f"node {node.id!r}: merge {node.merge!r} is not one of {list(MERGE_KINDS)}"
                )
        from_input: set[str] = set()
        for node in order:
            if any(s == INPUT or s in from_input for s in node.inputs):
                from_input.add(node.id)
        to_output = {self.output}
        for node in reversed(order):
            if node.id in to_output:
                to_output.update(s for s in node.inputs if s != INPUT)
        dangling = [n.id for n in order if n.id not in from_input or n.id not in to_output]
        if dangling:
            raise GraphError(
                f"node(s) {dangling} are not on a path from the input to output {self.output!r}"
            )
        if ops is not None:
            for node in order:
                spec = ops.get(node.op)
                if spec is None:
                    raise GraphError(
                        f"node {node.id!r}: unknown op {node.op!r} (known ops: {sorted(ops)})"
                    )
                problems = spec.check_params(node.params)
                if problems:
                    raise GraphError(f"node {node.id!r} ({node.op}): " + "; ".join(problems))
        return self

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "nodes": [n.to_dict() for n in self._nodes.values()],
            "output": self.output,
        }
        if self.train:
            found["train"] = dict(self.train)
        return found

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:  # compact: one line, as stored with every trial
            return json.dumps(self.to_dict(), separators=(",", ":"))
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchGraph:
        if not isinstance(data, Mapping) or "nodes" not in data or "output" not in data:
            raise GraphError("an ArchGraph needs the fields 'nodes' (a list) and 'output'")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise GraphError(f"unsupported ArchGraph format version {version!r}")
        nodes = data["nodes"]
        if not isinstance(nodes, list):
            raise GraphError("'nodes' must be a list")
        train = data.get("train") or {}
        if not isinstance(train, Mapping):
            raise GraphError("'train' must be an object of training settings")
        return cls(
            (Node.from_dict(n, where=f"nodes[{i}]") for i, n in enumerate(nodes)),
            str(data["output"]),
            train,
        )

    @classmethod
    def from_json(cls, text: str) -> ArchGraph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GraphError(f"not valid JSON: {err}") from err
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ArchGraph:
        """Read a graph from a JSON file; errors name the file."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except OSError as err:
            raise GraphError(f"{path}: cannot read ArchGraph file ({err.strerror})") from err
        except UnicodeDecodeError as err:
            raise GraphError(f"{path}: not a text (JSON) file ({err.reason})") from err
        except GraphError as err:
            raise GraphError(f"{path}: {err}") from err

    @property
    def hash(self) -> str:
        """Stable content hash: equal for graphs with equal nodes, whatever their order."""
        found = getattr(self, "_hash", None)  # None, or unset in a graph unpickled from before
        if found is None:
            found = self._hash = self._content_hash()
        return found

    def _content_hash(self) -> str:
        canonical: dict[str, Any] = {
            "nodes": sorted((n.to_dict() for n in self._nodes.values()), key=lambda d: d["id"]),
            "output": self.output,
        }
        if self.train:
            canonical["train"] = self.train
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> str:
        """A short readable form, one layer per arrow in topological order, e.g.
        ``conv2d(41,5,relu) → maxpool2d(3,same) → dense(96,relu)``: a layer's values in order,
        a flag by its name when set and not at all when not (``maxpool2d(3,same)``, not
        ``maxpool2d(3,True)``); a node that merges inputs names the others by position
        (``identity[add 0]``: also fed by the first layer)."""
        order = self.topological_order()
        position = {n.id: i for i, n in enumerate(order)}
        position[INPUT] = -1
        parts = []
        for node in order:
            values = ",".join(
                k if v is True else _short(v) for k, v in node.params.items() if v is not False
            )
            text = f"{node.op}({values})" if values else node.op
            others = node.inputs[1:]
            if others:
                names = ",".join("input" if o == INPUT else str(position[o]) for o in others)
                text += f"[{node.merge} {names}]"
            parts.append(text)
        if self.train:
            parts.append(
                "train(" + ",".join(f"{k}={_short(v)}" for k, v in self.train.items()) + ")"
            )
        return " → ".join(parts)

    def hyperparameters(self) -> dict[str, Any]:
        """The graph as flat ``{"<node>.op": ..., "<node>.<param>": ...}`` values."""
        flat: dict[str, Any] = {}
        for node in self._nodes.values():
            flat[f"{node.id}.op"] = node.op
            for key, value in sorted(node.params.items()):
                flat[f"{node.id}.{key}"] = value
            if len(node.inputs) > 1:
                flat[f"{node.id}.inputs"] = ",".join(node.inputs)
                flat[f"{node.id}.merge"] = node.merge
        for key, value in sorted(self.train.items()):
            flat[f"train.{key}"] = value
        return flat


def _short(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


ARCH_PRESETS = "arch"


def load_arch(name: str | None) -> ArchGraph:
    """``tuner.init_arch``: an ArchGraph JSON file, or a preset in ``conf/arch/`` by name
    (``lenet_small``, ...). Raises :class:`nasfw.ConfigError` naming the key."""
    from importlib import resources

    if not name:
        raise ConfigError("tuner.init_arch is not set")
    path = Path(name)
    if path.suffix == ".json" or path.exists():
        try:
            return ArchGraph.load(path)
        except (GraphError, UnicodeDecodeError) as err:
            raise ConfigError(f"tuner.init_arch: {err}") from err
    presets = resources.files("nasfw.conf").joinpath(ARCH_PRESETS)
    preset = presets.joinpath(f"{name}.json")
    if not preset.is_file():
        known = sorted(p.name.removesuffix(".json") for p in presets.iterdir() if p.is_file())
        raise ConfigError(
            f"tuner.init_arch={name!r} is neither a graph file nor a preset (presets: {known})"
        )
    try:
        return ArchGraph.from_json(preset.read_text())
    except GraphError as err:
        raise ConfigError(f"tuner.init_arch={name!r}: {err}") from err
