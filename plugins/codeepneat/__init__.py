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
from dataclasses import dataclass, field
from typing import Any

from nasfw import Tuner, TunerConfig, hookimpl, setting

from .tuner import CoDeepNEAT


@dataclass
class CoDeepNEATConfig(TunerConfig):
    name: str = "codeepneat"
    # nas: grow from minimal blueprints; adapt: refine tuner.init_arch.
    mode: str = "nas"
    # ArchGraph JSON file, or the name of a preset in conf/arch/ (adapt mode).
    init_arch: str | None = None
    # Start from these initial populations (a file written with save_init_population).
    init_population: str | None = None
    # Write the initial populations to this file.
    save_init_population: str | None = None
    generations: int = setting(5, ge=0)
    blueprint_population: int = setting(6, ge=1)
    module_population: int = setting(12, ge=1)
    genomes_per_blueprint: int = setting(2, ge=1)
    # mean or max of a blueprint's / module's networks.
    fitness_aggregation: str = "mean"
    module_max_layers: int = setting(3, ge=1)
    blueprint_max_nodes: int = setting(8, ge=1)
    # Speciation: thresholds move toward the target number of species.
    module_species_target: int = setting(4, ge=1)
    module_species_distance: float = setting(0.3, ge=0)
    blueprint_species_target: int = setting(2, ge=1)
    blueprint_species_distance: float = setting(0.3, ge=0)
    # Selection.
    module_elitism: int = setting(1, ge=0)
    blueprint_elitism: int = setting(1, ge=0)
    parent_fraction: float = setting(0.5, gt=0, le=1)
    min_offspring: int = setting(1, ge=1)
    max_stagnation: int = setting(5, ge=1)
    species_elitism: int = setting(2, ge=0)
    # Module variation.
    module_crossover_prob: float = setting(0.2, ge=0, le=1)
    module_add_layer_prob: float = setting(0.15, ge=0, le=1)
    module_remove_layer_prob: float = setting(0.1, ge=0, le=1)
    module_param_fraction: float = setting(0.3, ge=0, le=1)
    # Blueprint variation (relative weights of the mutations; crossover is tried first).
    blueprint_crossover_prob: float = setting(0.15, ge=0, le=1)
    blueprint_add_node_prob: float = setting(0.25, ge=0, le=1)
    blueprint_add_conn_prob: float = setting(0.15, ge=0, le=1)
    blueprint_remove_conn_prob: float = setting(0.05, ge=0, le=1)
    blueprint_remove_node_prob: float = setting(0.05, ge=0, le=1)
    blueprint_species_prob: float = setting(0.25, ge=0, le=1)
    blueprint_hyper_prob: float = setting(0.25, ge=0, le=1)
    optimizers: list[str] = field(default_factory=lambda: ["adam", "sgd"])
    lr_min: float = setting(1e-4, gt=0)
    lr_max: float = setting(1e-2, gt=0)


@hookimpl
def register_tuners(register: Callable[[str, type[Tuner]], None]) -> None:
    register("codeepneat", CoDeepNEAT)


@hookimpl
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    register("tuner", "codeepneat", CoDeepNEATConfig)


__all__ = ["CoDeepNEAT", "CoDeepNEATConfig"]
