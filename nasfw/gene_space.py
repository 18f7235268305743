"""GeneSpace: the base of the kinds of search space whose graphs are a fixed list of genes, each
a choice on a grid (a fixed cell whose genes are the ops of its edges; a fixed-depth network
whose genes are its layers' widths, activations and dropout, and its training settings).

A subclass says what the genes are (:meth:`GeneSpace.genes`, each with its choices), which are
in use given the others (:meth:`GeneSpace.active`, e.g. the layers a depth gene switches on),
and how genes and graphs map to each other (:meth:`GeneSpace.to_graph`,
:meth:`GeneSpace.values`). The base does the rest, the same way for every such kind:

- sampling: each gene in use, in order, one categorical decision named after the gene;
- checking: a graph decodes to genes in use whose values are among their choices;
- mutation: one gene in use changes to another of its choices, drawn uniformly (genes it
  switches on are drawn at random), as the regularized-evolution experiments of NAS-Bench-201
  mutate one edge's op (Dong and Yang, ICLR 2020, arXiv:2001.00326, section 5);
- crossover: uniform, each gene from either parent (half a chance each), where the parent has
  it in use;
- Optuna distributions: one ``CategoricalDistribution`` of the choices per gene in use, under
  the gene's name, as sampling names them;
- spanning (``search_space=auto``'s constraint sets): :meth:`GeneSpace.used` collects the values
  some graphs give each gene and :func:`span_choices` narrows a list of choices to them; a kind maps
  that back onto its config (:meth:`GeneSpace.spanning`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nasfw.choosers import Chooser, categorical_distribution
from nasfw.graph import ArchGraph, GraphError
from nasfw.search_space import BaseSearchSpace

__all__ = ["GeneSpace", "span_choices"]


class GeneSpace(BaseSearchSpace):
    """A space of graphs that are a fixed list of genes on a grid (see the module).

    Example:
        >>> space = load_search_space("nasbench201")  # doctest: +SKIP
        >>> graph = space.sample(RandomChooser(np.random.default_rng(0)))  # doctest: +SKIP
        >>> space.values(graph)["edge_0_1"] in space.genes()["edge_0_1"]  # doctest: +SKIP
        True
    """

    # -- what a kind says -----------------------------------------------------------------
    @abstractmethod
    def genes(self) -> dict[str, tuple[Any, ...]]:
        """Every gene, in decision order, with its choices (JSON values: str, int, float,
        bool). A gene that decides which others are in use comes before them."""

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """The genes in use given the ``values`` decided so far (genes before a deciding gene
        may be read; by default every gene is always in use)."""
        return list(self.genes())

    @abstractmethod
    def to_graph(self, values: Mapping[str, Any]) -> ArchGraph:
        """The graph of the genes in use, ``values``."""

    @abstractmethod
    def values(self, graph: ArchGraph) -> dict[str, Any]:
        """The genes of ``graph`` (those in use). Raises :class:`nasfw.GraphError` naming
        where a graph does not have the space's shape; :meth:`check` then checks each value
        against its choices."""

    def spanning(self, graphs: Sequence[ArchGraph]) -> Any:
        """The narrowest config of this kind (a copy of :attr:`config`, named
        ``auto_<name>``) whose space holds every one of ``graphs``: each list of choices
        narrowed by :func:`span_choices` to the values the graphs use (``search_space=auto``'s
        constraint set spanning the nearest problems' best networks).

        Raises:
            GraphError: a graph outside this space.
            NotImplementedError: a kind that does not say how its config narrows.
        """
        raise NotImplementedError(
            f"search space kind {type(self).__name__} cannot narrow its config to given networks"
        )

    # -- what the base does with it -------------------------------------------------------
    def used(self, graphs: Sequence[ArchGraph]) -> dict[str, list[Any]]:
        """Per gene, the values ``graphs`` give it (each graph checked first; a gene no graph
        uses is absent).

        Raises:
            GraphError: a graph outside this space (:meth:`check`).
        """
        found: dict[str, list[Any]] = {}
        for graph in graphs:
            self.check(graph)
            for name, value in self.values(graph).items():
                if not _among(value, found.setdefault(name, [])):
                    found[name].append(value)
        return found

    def _decide(self, draw: Any, keep: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Genes in use in order, each ``keep``'s value if it has one, else ``draw(name,
        choices)``."""
        genes, values = self.genes(), {}
        for name in genes:
            if name not in self.active(values):
                continue
            if keep is not None and name in keep:
                values[name] = keep[name]
            else:
                values[name] = draw(name, genes[name])
        return values

    def sample(self, chooser: Chooser) -> ArchGraph:
        return self.to_graph(self._decide(lambda n, c: chooser.categorical(n, list(c))))

    def check(self, graph: ArchGraph, structure: bool = True) -> ArchGraph:
        values = self.values(graph)
        genes, used = self.genes(), self.active(values)
        missing = [g for g in used if g not in values]
        if missing:
            raise GraphError(f"graph has no value for gene(s) {missing} of {self.name!r}")
        for name in used:
            if not _among(values[name], genes[name]):
                raise GraphError(
                    f"gene {name!r}={values[name]!r} is outside search space {self.name!r} "
                    f"(choices: {list(genes[name])})"
                )
        extra = sorted(set(values) - set(used))
        if extra:
            raise GraphError(f"gene(s) {extra} are not in use in search space {self.name!r}")
        return graph

    def mutate(self, graph: ArchGraph, rng: np.random.Generator, attempts: int = 50) -> ArchGraph:
        """One gene in use changed to another of its choices (every such edit stays in the
        space, so ``attempts`` is not needed); ``graph`` itself when no gene has a choice."""
        values = self.values(graph)
        genes = self.genes()
        movable = [g for g in self.active(values) if len(genes[g]) > 1]
        if not movable:
            return graph
        name = movable[int(rng.integers(len(movable)))]
        others = [c for c in genes[name] if not _same(c, values[name])]
        changed = {**values, name: others[int(rng.integers(len(others)))]}
        # Genes the change switches on are drawn at random; those it switches off are dropped.
        child = self._decide(lambda n, c: _draw(rng, c), keep=changed)
        return self.to_graph(child)

    def crossover(self, a: ArchGraph, b: ArchGraph, rng: np.random.Generator) -> ArchGraph:
        va, vb = self.values(a), self.values(b)

        def pick(name: str, choices: Sequence[Any]) -> Any:
            found = [v[name] for v in (va, vb) if name in v]
            if not found:
                return _draw(rng, choices)
            return found[0] if len(found) == 1 else found[int(rng.random() < 0.5)]

        return self.to_graph(self._decide(pick))

    def describe(self, graph: ArchGraph) -> tuple[dict[str, Any], dict[str, Any]]:
        values, genes = self.values(graph), self.genes()
        params, dists = {}, {}
        for name in self.active(values):
            if name in values and _among(values[name], genes[name]):
                params[name] = values[name]
                dists[name] = categorical_distribution(genes[name])
        return params, dists


# Ordered choices kept beyond the used range on each side (span_choices): the nearest
# problems' best networks often agree on a value, and the held-out problem's best may lie just
# outside. On the tabular suite (benchmarks/transfer.py, 20 seeds) the range exactly as seen
# left search_space=auto's TPE worse than the cold search beyond 2 SE in 5 arms on FCNet; with
# one more grid step each side, in none.
SPAN_MARGIN = 1


def span_choices(
    choices: Sequence[Any], used: Sequence[Any], margin: int = SPAN_MARGIN
) -> list[Any]:
    """``choices`` narrowed to ``used``, in their order: for numbers (ordered: sizes, rates,
    learning rates) every choice between the smallest and the largest used and ``margin``
    more choices beyond them on each side (fewer at an end of the grid), so the set is a range
    around the values seen rather than the points themselves; otherwise (ops, activations,
    flags) the used ones. With nothing used, every choice."""
    if not used:
        return list(choices)
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
    if numeric:
        order, least, most = sorted(choices), min(used), max(used)
        inside = [i for i, c in enumerate(order) if least <= c <= most]
        low = order[max(0, inside[0] - margin)] if inside else least
        high = order[min(len(order) - 1, inside[-1] + margin)] if inside else most
        return [c for c in choices if low <= c <= high or _among(c, used)]
    return [c for c in choices if _among(c, used)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and bool(np.isclose(a, b))
    return type(a) is type(b) and a == b


def _among(value: Any, choices: Sequence[Any]) -> bool:
    return any(_same(value, c) for c in choices)


def _draw(rng: np.random.Generator, choices: Sequence[Any]) -> Any:
    return choices[int(rng.integers(len(choices)))]
