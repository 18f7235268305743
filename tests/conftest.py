from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nasfw import OpSpec, SearchSpace, SearchSpaceConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SPACE_NAMES = sorted(p.stem for p in (CONF / "search_space").glob("*.yaml"))


@pytest.fixture(scope="session")
def ops() -> dict[str, OpSpec]:
    from nasfw.plugins.ops import OPS

    return {spec.name: spec for spec in OPS}


def load_space(
    name: str, ops: dict[str, OpSpec], overrides: dict[str, object] | None = None
) -> SearchSpace:
    """The search space preset ``conf/search_space/<name>.yaml``, typed by its schema."""
    cfg = OmegaConf.merge(
        OmegaConf.structured(SearchSpaceConfig),
        OmegaConf.load(CONF / "search_space" / f"{name}.yaml"),
        overrides or {},
    )
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
