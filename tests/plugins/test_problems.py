"""Built-in problems: sklearn sets, IDX (MNIST-like) and CIFAR-10 files, and ``split_arrays``."""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest

from nasfw import DataError, Problem, ProblemConfig, Split, hookspecs, split_arrays
from nasfw.plugins.problems import standard as plugin

Loader = Callable[[ProblemConfig], Problem]
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="module")
def registered() -> dict[str, tuple[Loader, ProblemConfig]]:
    """What the plugin registers, through a plugin manager that checks the hook spec."""
    pm = pluggy.PluginManager("nasfw")
    pm.add_hookspecs(hookspecs)
    pm.register(plugin)
    pm.check_pending()
    found: dict[str, tuple[Loader, ProblemConfig]] = {}

    def register(name: str, loader: Loader, node: Any) -> None:
        assert name not in found, f"{name} registered twice"
        found[name] = (loader, node)

    pm.hook.register_problems(register=register)
    return found


@pytest.fixture
def load(registered: dict[str, tuple[Loader, ProblemConfig]]) -> Callable[..., Problem]:
    def load(name: str, **overrides: Any) -> Problem:
        loader, node = registered[name]
        return loader(dataclasses.replace(node, **overrides))

    return load


def test_registers_every_builtin_problem(registered: dict[str, tuple[Loader, ProblemConfig]]):
    assert set(registered) == {
        "digits", "digits_noisy", "digits_shifted", "iris", "wine", "breast_cancer", "diabetes",
        "friedman1", "mnist", "fashion_mnist", "cifar10",
    }  # fmt: skip
    for name, (loader, node) in registered.items():
        assert isinstance(node, ProblemConfig)
        assert node.name == name
        assert node.data_dir is None
        # Workers receive loaders by pickling: they must be importable module-level functions.
        assert pickle.loads(pickle.dumps(loader)) is loader


# -- scikit-learn problems --------------------------------------------------------------------

SKLEARN = [
    # name, examples, input shape, outputs, task, modality
    ("digits", 1797, (1, 8, 8), 10, "classification", "image"),
    ("iris", 150, (4,), 3, "classification", "tabular"),
    ("wine", 178, (13,), 3, "classification", "tabular"),
    ("breast_cancer", 569, (30,), 2, "classification", "tabular"),
    ("diabetes", 442, (10,), 1, "regression", "tabular"),
]


@pytest.mark.parametrize(("name", "n", "shape", "outputs", "task", "modality"), SKLEARN)
def test_sklearn_problem_loads(
    load: Callable[..., Problem],
    name: str,
    n: int,
    shape: tuple[int, ...],
    outputs: int,
    task: str,
    modality: str,
):
    p = load(name)
    assert (p.name, p.task, p.modality, p.input_shape, p.n_outputs) == (
        name, task, modality, shape, outputs,
    )  # fmt: skip
    assert p.metric == ("accuracy" if task == "classification" else "r2")
    assert len(p.train) + len(p.val) + len(p.test) == n
    assert abs(len(p.val) - 0.2 * n) <= 1 and abs(len(p.test) - 0.2 * n) <= 1
    for split in (p.train, p.val, p.test):
        assert split.x.shape == (len(split), *shape)
        assert split.x.dtype == np.float32
        assert split.y.shape == (len(split),)
    if task == "classification":
        assert p.train.y.dtype == np.int64
        assert set(np.unique(p.train.y)) == set(range(outputs))
        assert p.class_names is not None and len(p.class_names) == outputs
    else:
        assert p.train.y.dtype == np.float32
        assert p.class_names is None


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "diabetes"])
def test_train_is_standardised_and_val_test_use_its_statistics(
    load: Callable[..., Problem], name: str
):
    p = load(name)
    axes = (0,) if p.modality == "tabular" else (0, 2, 3)
    assert np.allclose(p.train.x.mean(axis=axes), 0, atol=1e-5)
    assert np.allclose(p.train.x.std(axis=axes), 1, atol=1e-4)
    # Val and test were not standardised on their own: near 0 and 1, but not to float precision.
    for split in (p.val, p.test):
        mean, std = split.x.mean(axis=axes), split.x.std(axis=axes)
        assert 1e-4 < np.abs(mean).max() < 1
        assert 1e-4 < np.abs(std - 1).max() < 1


def test_classification_splits_are_stratified(load: Callable[..., Problem]):
    p = load("digits")
    all_y = np.concatenate([p.train.y, p.val.y, p.test.y])
    for split in (p.val, p.test):
        expected = np.bincount(all_y) * len(split) / len(all_y)
        assert np.abs(np.bincount(split.y, minlength=10) - expected).max() <= 1


def test_same_split_seed_same_splits_other_seed_other_splits(load: Callable[..., Problem]):
    a, b, c = load("iris"), load("iris", split_seed=0), load("iris", split_seed=1)
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert np.array_equal(sa.x, sb.x) and np.array_equal(sa.y, sb.y)
    assert not np.array_equal(a.val.x, c.val.x)
    assert not np.array_equal(a.train.x, c.train.x)


def test_max_train_samples_caps_only_the_train_split(load: Callable[..., Problem]):
    full, small = load("digits"), load("digits", max_train_samples=50)
    assert len(small.train) == 50
    assert (len(small.val), len(small.test)) == (len(full.val), len(full.test))
    # Statistics come from the 50 kept examples.
    assert abs(float(small.train.x.mean())) < 1e-4
    assert abs(float(small.train.x.std()) - 1) < 1e-3


def test_fractions_follow_the_config(load: Callable[..., Problem]):
    p = load("breast_cancer", val_fraction=0.1, test_fraction=0.3)
    assert abs(len(p.val) - 0.1 * 569) <= 1
    assert abs(len(p.test) - 0.3 * 569) <= 1


# -- split_arrays -----------------------------------------------------------------------------


def _ids(splits: tuple[Split, Split, Split]) -> list[np.ndarray]:
    """Row ids of each split, read back from column 0 (the raw id, standardised)."""
    column = np.sort(np.concatenate([s.x[:, 0] for s in splits]))
    # The same increasing affine map standardised every split, so ranks are the raw ids.
    return [np.searchsorted(column, s.x[:, 0]) for s in splits]


def _raw(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.arange(n), rng.normal(5.0, 3.0, (n, 3))])
    return x, np.arange(n) % 4


def test_split_arrays_is_disjoint_and_uses_train_statistics():
    x, y = _raw(200)
    splits = split_arrays(x, y, ProblemConfig(name="t"), stratify=True)
    ids = _ids(splits)
    assert sorted(np.concatenate(ids).tolist()) == list(range(200))
    assert [len(i) for i in ids] == [120, 40, 40]
    train_ids = ids[0]
    mean, std = x[train_ids].mean(axis=0), x[train_ids].std(axis=0)
    for split, rows in zip(splits, ids, strict=True):
        assert np.array_equal(split.y, y[rows])
        assert np.allclose(split.x, (x[rows] - mean) / std, atol=1e-5)


def test_split_arrays_with_an_official_test_set():
    x, y = _raw(100)
    x_test, y_test = _raw(30, seed=1)
    # test_fraction does not apply when the test set is given.
    config = ProblemConfig(name="t", val_fraction=0.25, test_fraction=0.9)
    train, val, test = split_arrays(x, y, config, stratify=True, test=(x_test, y_test))
    assert (len(train), len(val), len(test)) == (75, 25, 30)
    assert np.array_equal(test.y, y_test)  # kept whole and in order
    assert sorted(np.bincount(val.y).tolist()) == [6, 6, 6, 7]  # stratified: 25 of 4 classes
    mean, std = train.x.mean(axis=0), train.x.std(axis=0)
    assert np.allclose(mean, 0, atol=1e-5) and np.allclose(std, 1, atol=1e-5)
    # Test standardised with the train statistics: an affine image of the raw test features.
    ids = _ids((train, val, Split(train.x[:0], train.y[:0])))
    raw_train = x[ids[0]]
    expected = (x_test - raw_train.mean(axis=0)) / raw_train.std(axis=0)
    assert np.allclose(test.x, expected, atol=1e-5)
    again = split_arrays(x, y, config, stratify=True, test=(x_test, y_test))
    assert np.array_equal(again[1].x, val.x)


def test_split_arrays_max_train_samples_with_test_set():
    x, y = _raw(100)
    config = ProblemConfig(name="t", max_train_samples=10)
    train, val, test = split_arrays(x, y, config, stratify=True, test=_raw(30, seed=1))
    assert (len(train), len(val), len(test)) == (10, 20, 30)


def test_split_arrays_falls_back_to_a_plain_shuffle_when_stratifying_is_impossible():
    x = np.random.default_rng(0).normal(size=(30, 2))
    y = np.arange(30) % 10  # 10 classes but only 6 validation rows
    train, val, test = split_arrays(x, y, ProblemConfig(name="t"), stratify=True)
    assert (len(train), len(val), len(test)) == (18, 6, 6)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"val_fraction": 0.0}, "problem.val_fraction"),
        ({"test_fraction": 1.0}, "problem.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
        ({"max_train_samples": 0}, "problem.max_train_samples"),
    ],
)
def test_split_arrays_rejects_bad_config(overrides: dict[str, Any], key: str):
    x, y = _raw(50)
    with pytest.raises(DataError, match=key):
        split_arrays(x, y, ProblemConfig(name="t", **overrides), stratify=True)


def test_split_arrays_rejects_a_mismatched_test_set():
    x, y = _raw(50)
    with pytest.raises(DataError, match="do not match"):
        split_arrays(x, y, ProblemConfig(name="t"), False, test=(np.zeros((5, 2)), np.zeros(5)))


# -- MNIST and Fashion-MNIST (IDX files) ------------------------------------------------------


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _mnist_dir(root: Path, gz: bool, n_train: int = 30, n_test: int = 10) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    data = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10, 2049),
    }
    root.mkdir(exist_ok=True)
    paths = {name: _write(root / name, _idx_bytes(a, m), gz) for name, (a, m) in data.items()}
    return {"dir": root, "paths": paths, **{name: a for name, (a, _) in data.items()}}


def _assert_affine(standardised: np.ndarray, raw: np.ndarray) -> None:
    """``standardised`` is raw pixels under one increasing affine map (same order, same layout)."""
    a, b = standardised.ravel().astype(np.float64), raw.ravel().astype(np.float64)
    assert np.corrcoef(a, b)[0, 1] > 0.9999


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_loads_idx_files(
    load: Callable[..., Problem], tmp_path: Path, name: str, gz: bool
):
    files = _mnist_dir(tmp_path / "data", gz)
    p = load(name, data_dir=str(files["dir"]))
    assert (p.task, p.modality, p.input_shape, p.n_outputs) == ("classification", "image",
                                                               (1, 28, 28), 10)  # fmt: skip
    assert (len(p.train), len(p.val), len(p.test)) == (24, 6, 10)
    assert p.train.x.shape == (24, 1, 28, 28) and p.train.x.dtype == np.float32
    assert p.train.y.dtype == np.int64 and p.test.y.dtype == np.int64
    # The official test set is the test split, whole and in file order.
    assert np.array_equal(p.test.y, files["t10k-labels-idx1-ubyte"])
    _assert_affine(p.test.x, files["t10k-images-idx3-ubyte"])
    train_and_val = np.concatenate([p.train.y, p.val.y])
    assert sorted(train_and_val.tolist()) == sorted(files["train-labels-idx1-ubyte"].tolist())
    assert abs(float(p.train.x.mean())) < 1e-4 and abs(float(p.train.x.std()) - 1) < 1e-3
    assert p.class_names is not None and len(p.class_names) == 10
    assert (p.class_names[0] == "T-shirt/top") == (name == "fashion_mnist")


def test_mnist_mixed_plain_and_gzip_files(load: Callable[..., Problem], tmp_path: Path):
    files = _mnist_dir(tmp_path, gz=False)
    plain = files["paths"]["t10k-images-idx3-ubyte"]
    _write(plain, plain.read_bytes(), gz=True)
    plain.unlink()
    p = load("mnist", data_dir=str(tmp_path), max_train_samples=5)
    assert (len(p.train), len(p.test)) == (5, 10)


def test_mnist_without_data_dir(load: Callable[..., Problem]):
    with pytest.raises(DataError) as err:
        load("mnist")
    message = str(err.value)
    assert "problem=mnist" in message and "problem.data_dir is not set" in message
    assert all(f"{n}[.gz]" in message for n in IDX_NAMES)


def test_mnist_missing_directory(load: Callable[..., Problem], tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        load("fashion_mnist", data_dir=str(missing))
    assert str(missing) in str(err.value) and "Fashion-MNIST" in str(err.value)


def test_mnist_missing_file_is_named(load: Callable[..., Problem], tmp_path: Path):
    files = _mnist_dir(tmp_path, gz=True)
    files["paths"]["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DataError) as err:
        load("mnist", data_dir=str(tmp_path))
    message = str(err.value)
    assert f"{tmp_path} has no t10k-labels-idx1-ubyte[.gz];" in message
    assert "expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in message
    assert "(the standard MNIST files)" in message


def test_mnist_bad_magic_number_is_named(load: Callable[..., Problem], tmp_path: Path):
    files = _mnist_dir(tmp_path, gz=False)
    path = files["paths"]["train-images-idx3-ubyte"]
    # A labels file where the images belong.
    path.write_bytes(_idx_bytes(np.zeros(30), 2049))
    with pytest.raises(DataError, match="magic number 2049, expected 2051") as err:
        load("mnist", data_dir=str(tmp_path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_mnist_truncated_file_is_named(load: Callable[..., Problem], tmp_path: Path, gz: bool):
    files = _mnist_dir(tmp_path, gz=gz)
    path = files["paths"]["t10k-images-idx3-ubyte"]
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    _write(path.with_name("t10k-images-idx3-ubyte"), data[:-100], gz=gz)
    with pytest.raises(DataError, match="truncated") as err:
        load("mnist", data_dir=str(tmp_path))
    assert str(path) in str(err.value)


def test_mnist_broken_gzip_is_named(load: Callable[..., Problem], tmp_path: Path):
    files = _mnist_dir(tmp_path, gz=True)
    path = files["paths"]["train-labels-idx1-ubyte"]
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read") as err:
        load("mnist", data_dir=str(tmp_path))
    assert str(path) in str(err.value)


def test_mnist_count_mismatch(load: Callable[..., Problem], tmp_path: Path):
    _mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(9), 2049))
    with pytest.raises(DataError, match=r"10 images but .* 9 labels"):
        load("mnist", data_dir=str(tmp_path))


# -- CIFAR-10 (python batches) ----------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]  # fmt: skip


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles bytes as Python 2 ``str`` and numpy under its 1.x module name, as in the
    original CIFAR-10 files (Python 3's protocol 2 goes through ``_codecs.encode`` instead)."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _cifar_dir(root: Path, meta: bool = True, py2: bool = False) -> dict[str, np.ndarray]:
    """Five train batches of 6 images and a test batch of 10, pickled like the originals."""
    dumps = _py2_dumps if py2 else pickle.dumps
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, np.ndarray] = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = 10 if name == "test_batch" else 6
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        # Distinct channel levels show that rows are read channel-major.
        images[:, 0] //= 4
        images[:, 2] = images[:, 2] // 4 + 190
        labels = [(i * 6 + k) % 10 for k in range(n)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": images.reshape(n, 3072),
            b"filenames": [f"{k}.png".encode() for k in range(n)],
        }
        (root / name).write_bytes(dumps(batch))
        written[name] = images
        written[f"{name}/labels"] = np.array(labels)
    if meta:
        names = [n.encode() for n in CIFAR_NAMES]
        meta_dict = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
        (root / "batches.meta").write_bytes(dumps(meta_dict))
    return written


@pytest.mark.parametrize(
    "subdir", [False, True], ids=["flat-py3-pickles", "cifar-10-batches-py-py2-pickles"]
)
def test_cifar10_loads_python_batches(load: Callable[..., Problem], tmp_path: Path, subdir: bool):
    root = tmp_path / "cifar-10-batches-py" if subdir else tmp_path
    written = _cifar_dir(root, meta=subdir, py2=subdir)
    p = load("cifar10", data_dir=str(tmp_path))
    assert (p.task, p.modality, p.input_shape, p.n_outputs) == ("classification", "image",
                                                               (3, 32, 32), 10)  # fmt: skip
    assert (len(p.train), len(p.val), len(p.test)) == (24, 6, 10)
    assert p.test.x.shape == (10, 3, 32, 32) and p.test.x.dtype == np.float32
    assert p.test.y.dtype == np.int64
    assert np.array_equal(p.test.y, written["test_batch/labels"])
    for channel in range(3):
        _assert_affine(p.test.x[:, channel], written["test_batch"][:, channel])
    assert np.allclose(p.train.x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(p.train.x.std(axis=(0, 2, 3)), 1, atol=1e-3)
    assert p.class_names == (CIFAR_NAMES if subdir else None)


def test_cifar10_missing_file_is_named(load: Callable[..., Problem], tmp_path: Path):
    _cifar_dir(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError) as err:
        load("cifar10", data_dir=str(tmp_path))
    message = str(err.value)
    assert f"problem=cifar10: {tmp_path} has no test_batch;" in message
    assert "data_batch_1, data_batch_2" in message and "cifar-10-batches-py" in message


def test_cifar10_without_data_dir(load: Callable[..., Problem]):
    with pytest.raises(DataError, match=r"problem\.data_dir is not set.*data_batch_1"):
        load("cifar10")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR-10 python batch"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "0..9"),
        (pickle.dumps({b"data": Path("x"), b"labels": [0]}), "refusing to load global"),
        (b"not a pickle at all", "not a readable CIFAR-10 pickle"),
        (pickle.dumps({b"data": 1})[:10], "not a readable CIFAR-10 pickle"),
    ],
    ids=["list", "width", "labels", "label-range", "foreign-global", "garbage", "truncated"],
)
def test_cifar10_malformed_batch_is_named(
    load: Callable[..., Problem], tmp_path: Path, content: bytes, match: str
):
    _cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        load("cifar10", data_dir=str(tmp_path))
    assert str(tmp_path / "data_batch_3") in str(err.value)


def test_cifar10_malformed_meta_is_named(load: Callable[..., Problem], tmp_path: Path):
    _cifar_dir(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    with pytest.raises(DataError, match=r"batches\.meta"):
        load("cifar10", data_dir=str(tmp_path))


# -- the real data sets on these machines (../shared/data, see its README) --------------------
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.parametrize(
    ("name", "folder", "train_rows", "test_rows"),
    [("mnist", "mnist10k", 8000, 2000), ("fashion_mnist", "fashion_mnist", 60000, 10000)],
)
def test_the_real_idx_files_load_unchanged(name, folder, train_rows, test_rows):
    data_dir = SHARED_DATA / folder
    if not data_dir.is_dir():
        pytest.skip(f"no real {name} data at {data_dir}")
    from nasfw.evaluate import load_problem

    problem = load_problem(ProblemConfig(name=name, data_dir=str(data_dir), val_fraction=0.1))
    assert problem.input_shape == (1, 28, 28) and problem.n_outputs == 10
    assert len(problem.train) + len(problem.val) == train_rows and len(problem.test) == test_rows
    assert sorted(set(problem.test.y.tolist())) == list(range(10))
