"""Kinds of search space beside the core's stages: a fixed cell (:mod:`.cell`) and dense
layers with their genes on a grid (:mod:`.grid`). Registered as a third-party plugin registers
its own (``register_search_space_kinds``)."""

from __future__ import annotations

from collections.abc import Callable

from nasfw import BaseSearchSpace, hookimpl

from .cell import CellSpace, CellSpaceConfig
from .grid import GridSpace, GridSpaceConfig

__all__ = ["CellSpace", "CellSpaceConfig", "GridSpace", "GridSpaceConfig"]


@hookimpl
def register_search_space_kinds(register: Callable[[type[BaseSearchSpace]], None]) -> None:
    register(CellSpace)
    register(GridSpace)
