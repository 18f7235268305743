"""Hand-made best networks of a small problem suite, for the mini-benchmark unit tests."""

from __future__ import annotations

from nasfw.graph import ArchGraph, Node
from nasfw.minibench.db import BestModelDB, ModelEntry, ProblemEntry
from nasfw.minibench.encoding import ProblemMeta

IMAGE = ProblemMeta("image", "classification", (1, 8, 8), 10, 1000)
TABULAR = ProblemMeta("tabular", "classification", (13,), 3, 120)


def conv_net(filters: int, depth: int, kernel: int = 5, skip: bool = False) -> ArchGraph:
    """``depth`` convolutions of ``filters`` (a skip from the first to the third when asked),
    then a dense layer."""
    nodes = []
    prev = "input"
    for i in range(depth):
        inputs: tuple[str, ...] = (prev,)
        merge = "concat"
        if skip and i == 2:
            inputs, merge = (prev, "features0"), "add"
        nodes.append(
            Node(
                f"features{i}", "conv2d", {"filters": filters, "kernel_size": kernel}, inputs, merge
            )
        )
        prev = f"features{i}"
    nodes.append(Node("classifier0", "dense", {"units": 64}, (prev,)))
    return ArchGraph(nodes, output="classifier0")


def pooled_net(filters: int) -> ArchGraph:
    """A shallow network: one 1x1 convolution, pooling, and two dense layers."""
    return ArchGraph(
        [
            Node("features0", "conv2d", {"filters": filters, "kernel_size": 1}),
            Node("features1", "avgpool2d", {"pool_size": 2}, ("features0",)),
            Node("classifier0", "dense", {"units": 256}, ("features1",)),
            Node("classifier1", "dense", {"units": 200}, ("classifier0",)),
        ],
        output="classifier1",
    )


def mlp(units: int, layers: int) -> ArchGraph:
    nodes = [
        Node(f"hidden{i}", "dense", {"units": units}, ("input" if i == 0 else f"hidden{i - 1}",))
        for i in range(layers)
    ]
    return ArchGraph(nodes, output=nodes[-1].id)


# problem id -> (meta, best networks): two kinds of image problem, one kind of tabular.
PROBLEMS: dict[str, tuple[ProblemMeta, list[ArchGraph]]] = {
    "deep_a": (IMAGE, [conv_net(64, 4, skip=True), conv_net(48, 4), conv_net(56, 3)]),
    "deep_b": (IMAGE, [conv_net(60, 4), conv_net(64, 3, skip=True), conv_net(40, 4)]),
    "deep_c": (IMAGE, [conv_net(52, 4, skip=True), conv_net(64, 4), conv_net(44, 3)]),
    "shallow_a": (IMAGE, [pooled_net(8), pooled_net(12), pooled_net(16)]),
    "shallow_b": (IMAGE, [pooled_net(10), pooled_net(8), pooled_net(14)]),
    "shallow_c": (IMAGE, [pooled_net(9), pooled_net(16), pooled_net(11)]),
    "tab_a": (TABULAR, [mlp(32, 2), mlp(64, 1)]),
    "tab_b": (TABULAR, [mlp(16, 3), mlp(48, 2)]),
}


FULL = {"image": "petridish_full", "tabular": "tabular_mlp", "sequence": "petridish_full_sequence"}


def fill(db: BestModelDB, problems: dict[str, tuple[ProblemMeta, list[ArchGraph]]]) -> None:
    for pid, (meta, graphs) in problems.items():
        db.put(
            # Each searched in its modality's full space (as mode=minibench does).
            ProblemEntry(pid, pid, meta, "accuracy", search_space=FULL[meta.modality]),
            [ModelEntry(pid, r, g, 0.9 - 0.01 * r, 1000, 100, 0.1) for r, g in enumerate(graphs)],
        )


def full_spaces() -> dict[str, dict]:
    """The default full spaces of image and tabular problems, as ``minibench.spaces`` names
    them (``petridish_full``, ``tabular_mlp``)."""
    from omegaconf import OmegaConf

    from nasfw.config import MinibenchConfig
    from nasfw.minibench.auto import full_spaces as spaces_of

    cfg = OmegaConf.create({"minibench": OmegaConf.structured(MinibenchConfig)})
    return spaces_of(cfg, ["image", "tabular"])
