"""``tuner=codeepneat``'s settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from nasfw import ConfigError, TunerConfig, check_mode, setting


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

    def check(self, key: str) -> None:
        """Rules between the settings (what the tuner checks against the space: the tuner)."""
        check_mode(self, key)
        if self.fitness_aggregation not in ("mean", "max"):
            raise ConfigError(
                f"{key}.fitness_aggregation={self.fitness_aggregation!r} must be 'mean' or 'max'"
            )
        if not self.optimizers or any(o not in ("adam", "adamw", "sgd") for o in self.optimizers):
            raise ConfigError(f"{key}.optimizers={list(self.optimizers)} must name adam/adamw/sgd")
        if self.lr_min > self.lr_max:
            raise ConfigError(f"{key}.lr_min={self.lr_min} must be <= {key}.lr_max={self.lr_max}")
        if self.init_population and self.init_arch:
            raise ConfigError(
                f"{key}.init_arch={self.init_arch} and {key}.init_population="
                f"{self.init_population}: the population would replace the architecture; "
                "set one of them"
            )
