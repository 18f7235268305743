from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nasfw import OpSpec, SearchSpace, SearchSpaceConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# The constraint sets among the presets (search_space=auto is not one: mini-benchmarking picks
# a constraint set for it).
SPACE_NAMES = sorted(p.stem for p in (CONF / "search_space").glob("*.yaml") if p.stem != "auto")


@pytest.fixture(scope="session")
def ops() -> dict[str, OpSpec]:
    from nasfw.plugins.ops import image as ops
    from nasfw.plugins.ops import sequence as sequence_ops
    from nasfw.plugins.ops import text as text_ops

    return {spec.name: spec for module in (ops, sequence_ops, text_ops) for spec in module.OPS}


def load_space(
    name: str, ops: dict[str, OpSpec], overrides: dict[str, object] | None = None
) -> SearchSpace:
    """The search space preset ``conf/search_space/<name>.yaml``, typed by its schema."""
    preset = OmegaConf.load(CONF / "search_space" / f"{name}.yaml")
    preset.pop("defaults")  # the schema it extends, merged here
    cfg = OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), preset, overrides or {})
    return SearchSpace(cfg, ops)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database on a server started for this test session (skips if it cannot)."""
    from services import running

    with running("postgres") as info:
        yield info["url"]


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM with accounting started for this session; SLURM_CONF points to it."""
    import os

    from services import running

    with running("slurm") as info:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = info["SLURM_CONF"]
        try:
            yield info
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before


@contextmanager
def ray_cluster_running() -> Iterator[dict[str, str]]:
    """A two-node Ray cluster on this machine (scripts/services.py start ray), whose token the
    environment names while it runs (drivers started by the tests inherit it); a cluster that
    cannot start fails the test, never skips it (Ray is a dev dependency)."""
    import os

    from services import running

    with running("ray", required=True) as info:
        names = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
        before = {name: os.environ.get(name) for name in names}
        os.environ.update({name: info[name] for name in names})
        _reread_ray_auth()
        try:
            yield info
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _reread_ray_auth()


def _reread_ray_auth() -> None:
    """Let this process (a driver of the cluster in the contract tests) see the token the
    environment names now: Ray reads RAY_AUTH_MODE and the token once, when imported. Test
    only, through Ray's private API; the searches the tests start inherit the environment."""
    import sys

    if "ray._raylet" not in sys.modules:
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray before token authentication: nothing to read again
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="session")
def ray_cluster():
    """One two-node Ray cluster for the test session (``address``, the raylets' pids, ...)."""
    with ray_cluster_running() as info:
        yield info


def run_together(target: Callable[..., object], args: tuple[object, ...], n: int) -> list[object]:
    """Run ``target(*args)`` in ``n`` spawned processes released at the same moment.

    ``target`` must be importable (module level) and return something picklable; the results
    come back in the order the processes finished (``"raised <error>"`` for one that raised).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(n), context.Queue()
    procs = [
        context.Process(target=_released, args=(target, args, barrier, results)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return outcomes


def _released(target: Callable[..., object], args: tuple[object, ...], barrier, results) -> None:
    barrier.wait()
    try:
        results.put(target(*args))
    except Exception as err:  # reported, not lost: the caller would wait for it otherwise
        results.put(f"raised {type(err).__name__}: {err}")


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """This process believes it sees ``count`` CUDA GPUs (no CUDA call is made)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def evaluator(tmp_path):
    """An evaluator on iris (2 epochs, CPU) that keeps weights in ``tmp_path/artifacts``."""
    from nasfw import ProblemConfig, TrainConfig
    from nasfw.evaluate import Evaluator
    from nasfw.weights import WeightStore

    return Evaluator(
        problem=ProblemConfig(name="iris"),
        train=TrainConfig(epochs=2, device="cpu"),
        seed=0,
        max_params=100_000,
        weights=WeightStore(str(tmp_path / "artifacts"), "study"),
    )


# -- mini-benchmark DBs (tests/minibench) -------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    """A mini-benchmark DB of hand-made best networks (tests/minibench/synthetic.py)."""
    from synthetic import PROBLEMS, fill

    from nasfw.minibench.db import BestModelDB

    found = BestModelDB(str(tmp_path / "minibench.db"))
    fill(found, PROBLEMS)
    yield found
    found.close()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A mini-benchmark DB of four problems built through the CLI (tests/minibench/
    minibench_cli.py), and the command's stdout + stderr."""
    from cli import nasfw
    from minibench_cli import QUICK, SUITE

    folder = tmp_path_factory.mktemp("minibench")
    out = nasfw(folder, *QUICK, SUITE)
    assert out.returncode == 0, out.stderr
    return folder, out.stdout + out.stderr
