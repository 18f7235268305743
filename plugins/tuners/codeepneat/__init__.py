"""CoDeepNEAT (Miikkulainen et al., "Evolving Deep Neural Networks", 2019) as a nasfw tuner.

Two populations co-evolve. *Modules* are short chains of layers drawn from one stage of the
search space; *blueprints* are DAGs whose nodes point to module species and that carry the
optimizer and learning rate. Each generation every blueprint is assembled
``genomes_per_blueprint`` times (one random module per referenced species, the same module at
every node of that species, weights not shared); all networks of a generation are one launcher
batch. Fitness flows back: a blueprint gets the mean (or max) of its networks, a module the mean
over the networks it was part of.

``tuner.mode=nas`` starts from minimal blueprints (one node per stage, θ0 = 0);
``tuner.mode=adapt`` starts from ``tuner.init_arch`` (an ArchGraph JSON file or a preset in
``conf/arch/``), its populations being mutations of that architecture.
``tuner.save_init_population=<file>`` writes the initial populations and
``tuner.init_population=<file>`` starts from such a file, so paired experiments share them.
"""

from __future__ import annotations

from collections.abc import Callable

from nasfw import hookimpl

from .config import CoDeepNEATConfig
from .tuner import CoDeepNEAT

__all__ = ["CoDeepNEAT", "CoDeepNEATConfig"]


@hookimpl
def register_tuners(register: Callable[..., None]) -> None:
    register(CoDeepNEAT)


__all__ = ["CoDeepNEAT", "CoDeepNEATConfig"]
