"""Built-in problems: scikit-learn's bundled data sets, and MNIST, Fashion-MNIST and CIFAR-10
read from their standard files in ``problem.data_dir``.

Nothing is downloaded: the sklearn sets ship with scikit-learn, the others are read from a
directory the user fills (e.g. ``problem=mnist problem.data_dir=/data/mnist``).

| problem | modality, input shape | task |
|---|---|---|
| ``digits`` (the default) | image (1, 8, 8) | classification, 10 classes |
| ``digits_noisy``, ``digits_shifted`` | image (1, 8, 8) | the same digits, noised / shifted |
| ``iris``, ``wine``, ``breast_cancer`` | tabular (F,) | classification |
| ``diabetes`` | tabular (10,) | regression, 1 output (metric r2) |
| ``friedman1`` | tabular (10,) | regression, generated (metric r2) |
| ``mnist``, ``fashion_mnist`` | image (1, 28, 28) | classification, 10 classes |
| ``cifar10`` | image (3, 32, 32) | classification, 10 classes |

Data sets with an official test set keep it as the test split; validation is carved from their
training set (``val_fraction`` of it).
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nasfw import DataError, Problem, ProblemConfig, hookimpl, split_arrays

Loader = Callable[[ProblemConfig], Problem]


# -- scikit-learn's bundled data sets ---------------------------------------------------------


def fixed_data(config: ProblemConfig) -> None:
    """Refuse generation settings for a data set that is read, not generated."""
    for key in ("n_samples", "noise"):
        if getattr(config, key) is not None:
            raise DataError(
                f"problem={config.name} reads a fixed data set: problem.{key} is only for "
                "generated problems (e.g. mnist1d, ppg_heart_rate, grammar_acceptability, "
                "friedman1); use problem.max_train_samples to train on fewer examples"
            )


def load_digits(config: ProblemConfig) -> Problem:
    """sklearn's 8x8 digits as one-channel images."""
    fixed_data(config)
    return _digits(config, None)


def _digits(
    config: ProblemConfig, vary: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None
) -> Problem:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixels are counts 0..16; scale to [0, 1] like the other image problems.
    x = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)
    if vary is not None:
        x = vary(x, np.random.default_rng([config.split_seed, 4])).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, val, test = split_arrays(x, y, config, stratify=True)
    return Problem(
        name=config.name,
        task="classification",
        modality="image",
        input_shape=(1, 8, 8),
        n_outputs=10,
        train=train,
        val=val,
        test=test,
        class_names=[str(c) for c in bunch.target_names],
        raw_scale=1 / 16,  # sklearn's raw pixels are counts 0..16
    )


def _no_samples(config: ProblemConfig) -> None:
    if config.n_samples is not None:
        raise DataError(
            f"problem={config.name} varies sklearn's 1797 digits: problem.n_samples does not "
            "apply (problem.max_train_samples trains on fewer)"
        )


def load_digits_noisy(config: ProblemConfig) -> Problem:
    """sklearn's digits plus Gaussian pixel noise of standard deviation ``problem.noise``
    (default 0.25, on the 0..1 pixel scale; clipped to 0..1), drawn from ``split_seed``: a
    problem like ``digits`` but not equal to it (mini-benchmarking's variety)."""
    _no_samples(config)
    std = 0.25 if config.noise is None else config.noise

    def vary(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x + rng.normal(0, std, size=x.shape), 0.0, 1.0)

    return _digits(config, vary)


def load_digits_shifted(config: ProblemConfig) -> Problem:
    """sklearn's digits, each moved by up to ``problem.noise`` pixels (default 1, rounded) in
    each direction, the vacated border zero, shifts drawn from ``split_seed``."""
    _no_samples(config)
    reach = round(1 if config.noise is None else config.noise)
    if not 0 <= reach <= 4:
        raise DataError(f"problem={config.name}: problem.noise={config.noise} (a shift) > 4")

    def vary(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros_like(x)
        size = x.shape[-1]
        for i, (dy, dx) in enumerate(rng.integers(-reach, reach + 1, size=(len(x), 2))):
            src = x[i, :, max(0, -dy) : size - max(0, dy), max(0, -dx) : size - max(0, dx)]
            out[
                i, :, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]
            ] = src
        return out

    return _digits(config, vary)


def load_friedman1(config: ProblemConfig) -> Problem:
    """Friedman #1 (Friedman 1991; ``sklearn.datasets.make_friedman1``): 10 uniform features,
    5 of which enter ``10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4``, plus Gaussian noise
    of standard deviation ``problem.noise`` (default 1.0). ``problem.n_samples`` default 2000,
    seeded by ``split_seed``. A tabular regression standing in for NAS-Bench-HPO-Protein."""
    from sklearn.datasets import make_friedman1

    n = config.n_samples or 2000
    noise = 1.0 if config.noise is None else config.noise
    x, y = make_friedman1(n_samples=n, n_features=10, noise=noise, random_state=config.split_seed)
    train, val, test = split_arrays(x, y.astype(np.float32), config, stratify=False)
    return Problem(
        name=config.name,
        task="regression",
        modality="tabular",
        input_shape=(10,),
        n_outputs=1,
        train=train,
        val=val,
        test=test,
    )


def _load_tabular(
    config: ProblemConfig, dataset: str, task: Literal["classification", "regression"]
) -> Problem:
    """``sklearn.datasets.load_<dataset>`` as a tabular problem."""
    from sklearn import datasets

    fixed_data(config)
    bunch = getattr(datasets, f"load_{dataset}")()
    x = np.asarray(bunch.data, dtype=np.float64)
    if task == "classification":
        y = np.asarray(bunch.target, dtype=np.int64)
        n_outputs = len(bunch.target_names)
        class_names: list[str] | None = [str(c) for c in bunch.target_names]
    else:
        y = np.asarray(bunch.target, dtype=np.float32)
        n_outputs, class_names = 1, None
    train, val, test = split_arrays(x, y, config, stratify=task == "classification")
    return Problem(
        name=config.name,
        task=task,
        modality="tabular",
        input_shape=(x.shape[1],),
        n_outputs=n_outputs,
        train=train,
        val=val,
        test=test,
        class_names=class_names,
    )


# Loaders are module-level functions (not closures) so they pickle into worker processes.
def load_iris(config: ProblemConfig) -> Problem:
    """Iris: 4 features, 3 classes."""
    return _load_tabular(config, "iris", "classification")


def load_wine(config: ProblemConfig) -> Problem:
    """Wine: 13 features, 3 classes."""
    return _load_tabular(config, "wine", "classification")


def load_breast_cancer(config: ProblemConfig) -> Problem:
    """Breast cancer (Wisconsin): 30 features, 2 classes."""
    return _load_tabular(config, "breast_cancer", "classification")


def load_diabetes(config: ProblemConfig) -> Problem:
    """Diabetes: 10 features, one float target (disease progression); metric r2."""
    return _load_tabular(config, "diabetes", "regression")


# -- files in problem.data_dir ----------------------------------------------------------------


def _data_dir(config: ProblemConfig, expected: str) -> Path:
    """``config.data_dir`` as an existing directory, or a DataError saying what belongs there."""
    if config.data_dir is None:
        raise DataError(
            f"problem={config.name}: problem.data_dir is not set; set it to a directory with "
            f"{expected} (e.g. problem.data_dir=/data/{config.name})"
        )
    path = Path(config.data_dir).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise DataError(
            f"problem={config.name}: problem.data_dir {path} {what}; expected a directory "
            f"with {expected}"
        )
    return path


def _read_bytes(path: Path, problem: str) -> bytes:
    """The file's bytes, decompressed if its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # unreadable, or a broken gzip stream
        raise DataError(f"problem={problem}: cannot read {path}: {err}") from err


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Magic number of an IDX file of unsigned bytes: 0x0800 + number of dimensions.
IDX_IMAGES, IDX_LABELS = 2051, 2049


def read_idx(path: Path, magic: int, problem: str = "?") -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format; ``.gz`` allowed) as a uint8 array.

    ``magic`` is the expected magic number: 2051 for images (n, rows, cols), 2049 for labels (n,).
    """
    raw = _read_bytes(path, problem)
    ndim = magic - 0x0800
    header = 4 * (1 + ndim)
    kind = "images" if magic == IDX_IMAGES else "labels"
    if len(raw) < header:
        raise DataError(
            f"problem={problem}: {path} is truncated ({len(raw)} bytes, shorter than the "
            f"{header}-byte header of an IDX {kind} file)"
        )
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"problem={problem}: {path} is not an IDX {kind} file (magic number {found}, "
            f"expected {magic})"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(
            f"problem={problem}: {path} holds {len(raw) - header} data bytes but its header "
            f"promises {size} (shape {dims}); the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_files(
    directory: Path, names: tuple[str, ...], problem: str, expected: str, gz: bool
) -> dict[str, Path]:
    """Each of ``names`` in ``directory`` (plain, else ``.gz`` where ``gz``); all must exist."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        candidates = (name, f"{name}.gz") if gz else (name,)
        path = next((directory / c for c in candidates if (directory / c).is_file()), None)
        if path is None:
            missing.append(f"{name}[.gz]" if gz else name)
        else:
            found[name] = path
    if missing:
        raise DataError(
            f"problem={problem}: {directory} has no {', '.join(missing)}; expected {expected}"
        )
    return found


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _load_mnist_like(config: ProblemConfig, title: str, class_names: list[str]) -> Problem:
    """The four IDX files of MNIST or of a drop-in replacement (Fashion-MNIST)."""
    fixed_data(config)
    expected = f"{', '.join(f'{n}[.gz]' for n in IDX_FILES)} (the standard {title} files)"
    directory = _data_dir(config, expected)
    paths = _find_files(directory, IDX_FILES, config.name, expected, gz=True)
    arrays = []
    for images_name, labels_name in (IDX_FILES[:2], IDX_FILES[2:]):
        images = read_idx(paths[images_name], IDX_IMAGES, config.name)
        labels = read_idx(paths[labels_name], IDX_LABELS, config.name)
        if images.shape[1:] != (28, 28):
            raise DataError(
                f"problem={config.name}: {paths[images_name]} holds images of "
                f"{images.shape[1]}x{images.shape[2]} pixels; {title} images are 28x28"
            )
        if len(images) != len(labels):
            raise DataError(
                f"problem={config.name}: {paths[images_name]} holds {len(images)} images "
                f"but {paths[labels_name]} holds {len(labels)} labels"
            )
        if len(labels) and labels.max() >= 10:
            raise DataError(
                f"problem={config.name}: {paths[labels_name]} has label {labels.max()}; "
                f"{title} labels are 0..9"
            )
        x = images[:, None, :, :].astype(np.float32)
        x /= 255.0
        arrays.append((x, labels.astype(np.int64)))
    (x_train, y_train), test = arrays
    train, val, test_split = split_arrays(x_train, y_train, config, stratify=True, test=test)
    return Problem(
        name=config.name,
        task="classification",
        modality="image",
        input_shape=(1, 28, 28),
        n_outputs=10,
        train=train,
        val=val,
        test=test_split,
        class_names=list(class_names),
        raw_scale=1 / 255,  # raw files hold 8-bit pixels
    )


def load_mnist(config: ProblemConfig) -> Problem:
    """MNIST from the four IDX files in ``problem.data_dir``."""
    return _load_mnist_like(config, "MNIST", [str(d) for d in range(10)])


def load_fashion_mnist(config: ProblemConfig) -> Problem:
    """Fashion-MNIST from the four IDX files in ``problem.data_dir``."""
    return _load_mnist_like(config, "Fashion-MNIST", FASHION_MNIST_CLASSES)


CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN, "test_batch")
CIFAR_SUBDIR = "cifar-10-batches-py"
CIFAR_EXPECTED = (
    f"{', '.join(CIFAR_FILES)} (the CIFAR-10 python version, here or in {CIFAR_SUBDIR}/)"
)
# What the CIFAR pickles may reference: numpy's array reconstruction (numpy 1 and 2 module
# names) and the codec Python 3 uses for bytes in protocol-2 pickles.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *(
        (f"numpy.{core}.multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    ),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class _ArrayUnpickler(pickle.Unpickler):
    # Unpickling runs code named in the file; allow only what a CIFAR batch needs, so a file
    # dropped into data_dir cannot execute anything else.
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, problem: str) -> Any:
    try:
        with path.open("rb") as f:
            # The batches were pickled by Python 2: ``bytes`` keeps their str keys as b"data".
            return _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a malformed pickle can fail in many ways; all mean "bad file"
        raise DataError(
            f"problem={problem}: {path} is not a readable CIFAR-10 pickle "
            f"({type(err).__name__}: {err})"
        ) from err


def _entry(batch: dict[Any, Any], key: str) -> Any:
    """``batch[b"key"]``, or ``batch["key"]`` for batches re-pickled by Python 3."""
    return batch.get(key.encode(), batch.get(key))


def read_cifar_batch(path: Path, problem: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch as uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    batch = _unpickle(path, problem)
    data = _entry(batch, "data") if isinstance(batch, dict) else None
    labels = _entry(batch, "labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(
            f"problem={problem}: {path} is not a CIFAR-10 python batch (expected a dict with "
            f'b"data", a uint8 array (N, 3072), and b"labels")'
        )
    labels = np.asarray(labels)
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or labels.ndim != 1
        or len(labels) != len(data)
        or not np.issubdtype(labels.dtype, np.integer)
        or (len(labels) and (labels.min() < 0 or labels.max() >= 10))
    ):
        raise DataError(
            f"problem={problem}: {path} holds data {data.dtype}{data.shape} and "
            f"{len(labels)} labels; a CIFAR-10 batch holds uint8 (N, 3072) and N labels 0..9"
        )
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), so this is channels first.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(config: ProblemConfig) -> Problem:
    """CIFAR-10 from its python-version batches in ``problem.data_dir``."""
    fixed_data(config)
    root = _data_dir(config, CIFAR_EXPECTED)
    # Accept both the directory the archive extracts into and its parent.
    sub = root / CIFAR_SUBDIR
    directory = sub if not (root / CIFAR_FILES[0]).is_file() and sub.is_dir() else root
    paths = _find_files(directory, CIFAR_FILES, config.name, CIFAR_EXPECTED, gz=False)
    parts = [read_cifar_batch(paths[name], config.name) for name in CIFAR_FILES]
    x_train = np.concatenate([x for x, _ in parts[:-1]]).astype(np.float32)
    x_train /= 255.0
    y_train = np.concatenate([y for _, y in parts[:-1]])
    x_test = parts[-1][0].astype(np.float32)
    x_test /= 255.0
    train, val, test = split_arrays(
        x_train, y_train, config, stratify=True, test=(x_test, parts[-1][1])
    )
    return Problem(
        name=config.name,
        task="classification",
        modality="image",
        input_shape=(3, 32, 32),
        n_outputs=10,
        train=train,
        val=val,
        test=test,
        class_names=_cifar_class_names(directory / "batches.meta", config.name),
        raw_scale=1 / 255,  # raw files hold 8-bit pixels
    )


def _cifar_class_names(path: Path, problem: str) -> list[str] | None:
    """``label_names`` from ``batches.meta``; None when the file is absent."""
    if not path.is_file():
        return None
    meta = _unpickle(path, problem)
    names = _entry(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(
            f"problem={problem}: {path} is not CIFAR-10's batches.meta (expected a dict with "
            f'b"label_names", a list of 10 names)'
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# -- registration -----------------------------------------------------------------------------

PROBLEMS: dict[str, Loader] = {
    "digits": load_digits,
    "digits_noisy": load_digits_noisy,
    "digits_shifted": load_digits_shifted,
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
    "friedman1": load_friedman1,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


# Problem classes where the seeds' regularized scoring is on by default (evaluation=auto):
# image sets big enough for the shrunk network to save real training time.
REGULARIZED_BY_DEFAULT = ("mnist", "fashion_mnist", "cifar10")


@hookimpl
def register_problems(register: Callable[[str, Loader, Any], None]) -> None:
    for name, loader in PROBLEMS.items():
        evaluation = "regularized" if name in REGULARIZED_BY_DEFAULT else "plain"
        register(name, loader, ProblemConfig(name=name, evaluation=evaluation))
