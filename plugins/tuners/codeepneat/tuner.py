"""The CoDeepNEAT tuner: initial populations, assembly (ask), fitness and evolution (tell)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from nasfw import (
    INPUT,
    ArchGraph,
    Candidate,
    ConfigError,
    GraphError,
    Node,
    RandomChooser,
    Result,
    SearchSpace,
    Tuner,
    load_arch_in,
    registry,
)

from .config import CoDeepNEATConfig
from .genome import (
    BP_INPUT,
    BP_OUTPUT,
    Blueprint,
    Connection,
    Innovations,
    Layer,
    Module,
    assemble,
    blueprint_distance,
    module_distance,
)
from .population import (
    Speciation,
    Species,
    Variation,
    choice,
    crossover_blueprints,
    crossover_modules,
    crossover_parents,
    minimal_blueprint,
    mutate_blueprint,
    mutate_module,
    select,
    speciate,
)

POPULATION_FORMAT = "nasfw.codeepneat.population"


class CoDeepNEAT(Tuner):
    """See the package docstring for the algorithm."""

    config_class = CoDeepNEATConfig
    # Assembles blueprints of stage modules: proposals of stages only (never a fixed cell).
    space_kinds = (SearchSpace,)

    screening = True

    def __init__(self, config: Any, space: SearchSpace, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        self._validate()
        self.rng = np.random.default_rng(seed)
        self.generation = 0
        self.inn = Innovations()
        self.modules: list[Module] = []
        self.blueprints: list[Blueprint] = []
        self.mod_spec = Speciation(config.module_species_distance, config.module_species_target)
        self.bp_spec = Speciation(
            config.blueprint_species_distance, config.blueprint_species_target
        )
        self.next_id = {"module": 1, "blueprint": 1}
        self.pending: list[dict[str, Any]] = []
        self.report: dict[str, float] = {}
        self.var = Variation(
            module_crossover=config.module_crossover_prob,
            module_add_layer=config.module_add_layer_prob,
            module_remove_layer=config.module_remove_layer_prob,
            module_param_fraction=config.module_param_fraction,
            module_max_layers=config.module_max_layers,
            bp_add_node=config.blueprint_add_node_prob,
            bp_add_conn=config.blueprint_add_conn_prob,
            bp_remove_conn=config.blueprint_remove_conn_prob,
            bp_remove_node=config.blueprint_remove_node_prob,
            bp_species=config.blueprint_species_prob,
            bp_hyper=config.blueprint_hyper_prob,
            bp_crossover=config.blueprint_crossover_prob,
            bp_max_nodes=config.blueprint_max_nodes,
            optimizers=list(config.optimizers),
            lr_min=config.lr_min,
            lr_max=config.lr_max,
            stage_max_nodes=[stage.max_nodes for stage in self.space.stages],
        )
        if config.init_population:
            self._load_population(Path(config.init_population))
        elif config.mode == "adapt":
            # Checked in full (ops, params, merges) like every architecture a user hands in.
            self._init_adapt(load_arch_in(config.init_arch, self.space, structure=False))
        else:
            self._init_nas()
        if config.save_init_population:
            try:
                self.save_population(Path(config.save_init_population))
            except OSError as err:
                raise ConfigError(
                    f"tuner.save_init_population={config.save_init_population}: cannot write "
                    f"the file ({err.strerror or type(err).__name__})"
                ) from err

    def _validate(self) -> None:
        c = self.config  # the settings' own rules: CoDeepNEATConfig.check
        if self.space.stages and len(self.space.stages) * 1 > c.module_population:
            raise ConfigError(
                f"tuner.module_population={c.module_population} is below the number of search "
                f"space stages ({len(self.space.stages)}): every stage needs modules"
            )

    # -- ids and helpers ----------------------------------------------------------------------
    def _new_id(self, kind: str) -> int:
        value = self.next_id[kind]
        self.next_id[kind] += 1
        return value

    def _mutated_blueprint(self, parent: Blueprint, by_stage: dict[int, list[int]]) -> Blueprint:
        """A mutated copy of ``parent`` with a fresh id (``by_stage``: species per stage)."""
        return mutate_blueprint(
            parent,
            self._new_id("blueprint"),
            by_stage,
            self.inn,
            self.var,
            self.rng,
            self.space.skip,
        )

    def _random_module(self, stage: int) -> Module:
        chooser = RandomChooser(self.rng)
        node = self.space.sample_node(chooser, self.space.stages[stage], "x")
        gene = self.inn.new_layer(0, -1, node.op)
        merge = choice(self.rng, list(self.space.merge)) if self.space.merge else "concat"
        return Module(self._new_id("module"), stage, [Layer(gene, node.op, node.params)], merge)

    def _random_lr(self) -> float:
        c = self.config
        return float(math.exp(self.rng.uniform(math.log(c.lr_min), math.log(c.lr_max))))

    def _species_by_stage(self) -> dict[int, list[int]]:
        found: dict[int, set[int]] = {s: set() for s in range(len(self.space.stages))}
        for m in self.modules:
            assert m.species is not None
            found[m.stage].add(m.species)
        for stage, ids in found.items():
            if not ids:  # a stage lost all its modules: seed it again
                module = self._random_module(stage)
                module.species = self.mod_spec.new_species(stage, asdict(module))
                self.modules.append(module)
                ids.add(module.species)
        return {stage: sorted(ids) for stage, ids in found.items()}

    # -- initial populations ------------------------------------------------------------------
    def _init_nas(self) -> None:
        c = self.config
        for i in range(c.module_population):
            self.modules.append(self._random_module(i % len(self.space.stages)))
        for m in self.modules:
            same_stage = [s for s in self.mod_spec.species.values() if s.stage == m.stage]
            m.species = (
                same_stage[0].id if same_stage else self.mod_spec.new_species(m.stage, asdict(m))
            )
        by_stage = self._species_by_stage()
        for _ in range(c.blueprint_population):
            species = [choice(self.rng, by_stage[s]) for s in sorted(by_stage)]
            optimizer = choice(self.rng, list(c.optimizers))
            bp = minimal_blueprint(
                self._new_id("blueprint"), species, self.inn, optimizer, self._random_lr()
            )
            self.blueprints.append(bp)
        self._speciate_blueprints()

    def _init_adapt(self, graph: ArchGraph) -> None:
        c = self.config
        try:
            stages = self.space.stage_of(graph)
        except GraphError as err:
            raise ConfigError(
                f"tuner.init_arch={c.init_arch}: the architecture does not fit search space "
                f"{self.space.name!r}: {err}"
            ) from err
        order = graph.topological_order()
        gene_of: dict[str, int] = {INPUT: BP_INPUT}
        originals: list[Module] = []
        nodes: dict[int, int] = {}
        for node in order:
            gene_of[node.id] = self.inn.fresh()
            module = Module(
                self._new_id("module"),
                stages[node.id],
                [Layer(self.inn.fresh(), node.op, dict(node.params))],
                node.merge,
            )
            module.species = self.mod_spec.new_species(module.stage, asdict(module))
            originals.append(module)
            nodes[gene_of[node.id]] = module.species
        conns = [
            Connection(
                self.inn.connection(gene_of[src], gene_of[n.id]), gene_of[src], gene_of[n.id]
            )
            for n in order
            for src in n.inputs
        ]
        out = gene_of[graph.output]
        conns.append(Connection(self.inn.connection(out, BP_OUTPUT), out, BP_OUTPUT))
        self.modules.extend(originals)
        # The rest of the module population: mutations of the original layers, in their species.
        i = 0
        while len(self.modules) < c.module_population:
            parent = originals[i % len(originals)]
            child = mutate_module(
                parent, self._new_id("module"), self.space, self.inn, self.var, self.rng
            )
            child.species = parent.species
            self.modules.append(child)
            i += 1
        original_bp = Blueprint(
            self._new_id("blueprint"),
            nodes,
            conns,
            c.optimizers[0],
            float(math.sqrt(c.lr_min * c.lr_max)),
        )
        self.blueprints.append(original_bp)
        by_stage = self._species_by_stage()
        while len(self.blueprints) < c.blueprint_population:
            self.blueprints.append(self._mutated_blueprint(original_bp, by_stage))
        self._speciate_blueprints()

    def _speciate_blueprints(self) -> None:
        speciate(
            self.blueprints,
            self.bp_spec,
            blueprint_distance,
            Blueprint.from_dict,
            lambda _: 0,
            max(1, self.config.blueprint_population // 2),
        )

    # -- population files ---------------------------------------------------------------------
    def _population(self) -> dict[str, Any]:
        return {
            "modules": [asdict(m) for m in self.modules],
            "blueprints": [b.to_dict() for b in self.blueprints],
            "module_species": _species_state(self.mod_spec),
            "blueprint_species": _species_state(self.bp_spec),
            "innovations": asdict(self.inn),
            "next_id": dict(self.next_id),
        }

    def _set_population(self, data: dict[str, Any]) -> None:
        self.modules = [Module.from_dict(m) for m in data["modules"]]
        self.blueprints = [Blueprint.from_dict(b) for b in data["blueprints"]]
        self.mod_spec = _species_from(data["module_species"])
        self.bp_spec = _species_from(data["blueprint_species"])
        self.inn = Innovations(**data["innovations"])
        self.next_id = dict(data["next_id"])

    def save_population(self, path: Path) -> None:
        """Write the current populations (with species and innovations) as JSON."""
        document = {
            "format": POPULATION_FORMAT,
            "version": 1,
            "search_space": self.space.name,
            "stages": [s.name for s in self.space.stages],
            **self._population(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))

    def _load_population(self, path: Path) -> None:
        key = f"tuner.init_population={path}"
        try:
            document = json.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"{key}: cannot read the file ({err.strerror})") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{key}: not a JSON file ({err})") from err
        if not isinstance(document, dict) or document.get("format") != POPULATION_FORMAT:
            raise ConfigError(f"{key}: not a CoDeepNEAT population file")
        stages = [s.name for s in self.space.stages]
        if document.get("stages") != stages:
            raise ConfigError(
                f"{key}: written for stages {document.get('stages')} of search space "
                f"{document.get('search_space')!r}, but search space {self.space.name!r} has "
                f"stages {stages}"
            )
        try:
            self._set_population(document)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{key}: malformed population ({type(err).__name__}: {err})") from err
        self._check_population(key)

    def _check_population(self, key: str) -> None:
        """Validate loaded populations in full before the study exists (ConfigError).

        Every module must be a valid chain of its stage's ops with params inside the space,
        every blueprint an acyclic net from input to output over species that have modules,
        with an allowed optimizer and learning rate, and every species must be on record.
        """
        c, space = self.config, self.space
        stages = [s.name for s in space.stages]
        module_species = set(self.mod_spec.species)
        for m in self.modules:
            where = f"{key}: module {m.id}"
            if not (isinstance(m.stage, int) and 0 <= m.stage < len(stages)):
                raise ConfigError(
                    f"{where} has stage {m.stage!r}; search space {space.name!r} has stages "
                    f"0..{len(stages) - 1} ({', '.join(stages)})"
                )
            if m.species not in module_species:
                raise ConfigError(f"{where} belongs to species {m.species}, which is not on record")
            if not m.layers:
                raise ConfigError(f"{where} has no layers")
            for layer in m.layers:
                if layer.op not in space.stages[m.stage].ops:
                    raise ConfigError(
                        f"{where} uses op {layer.op!r}, not allowed in stage "
                        f"{stages[m.stage]!r} of search space {space.name!r}"
                    )
            chain = [
                Node(f"l{j}", layer.op, dict(layer.params), (f"l{j - 1}",) if j else (INPUT,))
                for j, layer in enumerate(m.layers)
            ]
            try:
                space.check(ArchGraph(chain, output=chain[-1].id), structure=False)
            except GraphError as err:
                raise ConfigError(f"{where}: {err}") from err
            if m.merge not in space.merge and space.merge:
                raise ConfigError(f"{where}: merge {m.merge!r} is not one of {list(space.merge)}")
        members = {m.species: m for m in sorted(self.modules, key=lambda m: m.id)}
        for bp in self.blueprints:
            where = f"{key}: blueprint {bp.id}"
            unknown = sorted(bp.referenced_species() - set(members))
            if unknown:
                raise ConfigError(f"{where} names module species {unknown}, which have no module")
            if bp.species is not None and bp.species not in self.bp_spec.species:
                raise ConfigError(f"{where} belongs to species {bp.species}, not on record")
            if bp.optimizer not in c.optimizers:
                raise ConfigError(
                    f"{where}: optimizer {bp.optimizer!r} is not in tuner.optimizers="
                    f"{list(c.optimizers)}"
                )
            if not (isinstance(bp.lr, int | float) and c.lr_min <= bp.lr <= c.lr_max):
                raise ConfigError(
                    f"{where}: lr {bp.lr!r} is outside [tuner.lr_min, tuner.lr_max] = "
                    f"[{c.lr_min:g}, {c.lr_max:g}]"
                )
            try:
                assemble(bp, members).validate(registry().ops)
            except (GraphError, KeyError, ValueError) as err:
                raise ConfigError(f"{where} cannot be assembled: {err}") from err

    # -- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        c = self.config
        if self.generation >= c.generations:
            return []
        members: dict[int, list[Module]] = {}
        for m in sorted(self.modules, key=lambda m: m.id):
            assert m.species is not None
            members.setdefault(m.species, []).append(m)
        by_id = {m.id: m for m in self.modules}
        extra_dists = {
            "optimizer": CategoricalDistribution(list(c.optimizers)),
            "lr": FloatDistribution(c.lr_min, c.lr_max, log=True),
        }
        self.pending = []
        candidates = []
        for bp in sorted(self.blueprints, key=lambda b: b.id):
            for _ in range(c.genomes_per_blueprint):

                def pick(bp: Any = bp) -> tuple[dict[int, int], ArchGraph]:
                    modules = {
                        sid: choice(self.rng, members[sid]).id
                        for sid in sorted(bp.referenced_species())
                    }
                    return modules, assemble(bp, {s: by_id[m] for s, m in modules.items()})

                # With evaluation.screen=k: k module draws, the assembly predicted best.
                chosen, graph = self.screened(pick, lambda drawn: drawn[1])
                # The study's params are what the tuner samples: the blueprint's training
                # settings. The assembled layers are no variables of one space (a layer
                # position means another layer in each assembly), so an importance computed
                # over them would mean nothing; the graph itself is in the trial.
                params: dict[str, Any] = {"optimizer": bp.optimizer, "lr": bp.lr}
                dists = dict(extra_dists)
                attrs = {
                    "blueprint": bp.id,
                    "blueprint_species": bp.species,
                    "modules": sorted(chosen.values()),
                    "module_species": sorted(chosen),
                }
                candidates.append(
                    Candidate(
                        graph,
                        params,
                        dists,
                        train={"optimizer": bp.optimizer, "lr": bp.lr},
                        attrs=attrs,
                    )
                )
                self.pending.append({"blueprint": bp.id, "modules": sorted(chosen.values())})
        return candidates

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        self.assign_fitness(results)
        self._evolve()
        self.generation += 1
        self.report.update(
            module_species=len({m.species for m in self.modules}),
            blueprint_species=len({b.species for b in self.blueprints}),
            module_species_threshold=self.mod_spec.threshold,
            blueprint_species_threshold=self.bp_spec.threshold,
        )
        for sid in sorted({m.species for m in self.modules if m.species is not None}):
            self.report[f"module_species_{sid}_size"] = sum(
                1 for m in self.modules if m.species == sid
            )
        for sid in sorted({b.species for b in self.blueprints if b.species is not None}):
            self.report[f"blueprint_species_{sid}_size"] = sum(
                1 for b in self.blueprints if b.species == sid
            )
        self.pending = []

    def assign_fitness(self, results: list[Result]) -> None:
        """Scores of the networks of the last ``ask()`` back to blueprints and modules."""
        # A network that failed (could not build, diverged, too large) scores 0, or as low as
        # the generation's worst network where metrics go below 0 (R², -MAE, MCC): a failure
        # never outranks a network that trained. A pruned network scores its last value
        # (Result.fitness): it stopped below the median, so it ranks low, but its blueprint and
        # modules keep the credit of a network that learned something.
        ok = [r.fitness for r in results if math.isfinite(r.fitness)]
        floor = min([0.0, *ok])
        scores = [r.fitness if math.isfinite(r.fitness) else floor for r in results]
        aggregate = statistics.fmean if self.config.fitness_aggregation == "mean" else max
        bp_scores: dict[int, list[float]] = {}
        mod_scores: dict[int, list[float]] = {}
        for genome, score in zip(self.pending, scores, strict=True):
            bp_scores.setdefault(genome["blueprint"], []).append(score)
            for mid in genome["modules"]:
                mod_scores.setdefault(mid, []).append(score)
        for bp in self.blueprints:
            bp.fitness = aggregate(bp_scores[bp.id]) if bp.id in bp_scores else None
        for m in self.modules:
            used = m.id in mod_scores
            m.fitness = aggregate(mod_scores[m.id]) if used else None
            m.unused = 0 if used else m.unused + 1
        # The generation's scores are the trackers' to report (generation_mean_val_<metric>):
        # a mean of the tuner's own would only repeat it.
        self.report = {}

    def generation_report(self) -> dict[str, float]:
        return dict(self.report)

    # -- evolution ----------------------------------------------------------------------------
    def _evolve(self) -> None:
        c = self.config
        # Module species stages, before selection removes extinct species.
        stage_before = {sid: sp.stage for sid, sp in self.mod_spec.species.items()}
        selection = select(
            self.modules,
            self.mod_spec,
            c.module_population,
            c.module_elitism,
            c.parent_fraction,
            c.min_offspring,
            c.max_stagnation,
            c.species_elitism,
        )
        modules: list[Module] = list(selection.survivors)
        children: list[Module] = []
        for sid, count in sorted(selection.offspring.items()):
            parents = selection.parents[sid]
            for _ in range(count):
                if len(parents) > 1 and self.rng.random() < c.module_crossover_prob:
                    a, b = crossover_parents(self.rng, parents)
                    child = crossover_modules(a, b, self._new_id("module"), self.rng)
                else:
                    parent = choice(self.rng, parents)
                    child = mutate_module(
                        parent, self._new_id("module"), self.space, self.inn, self.var, self.rng
                    )
                children.append(child)
        self.modules = modules + children
        speciate(
            self.modules,
            self.mod_spec,
            module_distance,
            Module.from_dict,
            lambda m: m.stage,
            max(1, c.module_population // (c.module_elitism + c.min_offspring + 1)),
        )
        by_stage = self._species_by_stage()
        alive = {sid for ids in by_stage.values() for sid in ids}
        species_stage = {sid: stage for stage, ids in by_stage.items() for sid in ids}
        for bp in sorted(self.blueprints, key=lambda b: b.id):
            # Nodes pointing at an extinct module species move to a living one of its stage.
            for node, sid in sorted(bp.nodes.items()):
                if sid not in alive:
                    bp.nodes[node] = choice(self.rng, by_stage[stage_before[sid]])

        selection = select(
            self.blueprints,
            self.bp_spec,
            c.blueprint_population,
            c.blueprint_elitism,
            c.parent_fraction,
            c.min_offspring,
            c.max_stagnation,
            c.species_elitism,
        )
        blueprints: list[Blueprint] = list(selection.survivors)
        for sid, count in sorted(selection.offspring.items()):
            parents = selection.parents[sid]
            for _ in range(count):
                if len(parents) > 1 and self.rng.random() < c.blueprint_crossover_prob:
                    a, b = crossover_parents(self.rng, parents)
                    child = crossover_blueprints(
                        a, b, self._new_id("blueprint"), self.rng, species_stage
                    )
                else:
                    child = self._mutated_blueprint(choice(self.rng, parents), by_stage)
                blueprints.append(child)
        self.blueprints = blueprints
        self._speciate_blueprints()
        for x in [*self.modules, *self.blueprints]:
            x.fitness = None

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "rng": self.rng.bit_generator.state,
            "report": self.report,
            **self._population(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.rng.bit_generator.state = state["rng"]
        self.report = dict(state["report"])
        self._set_population(state)


def _species_state(spec: Speciation) -> dict[str, Any]:
    return {
        "threshold": spec.threshold,
        "target": spec.target,
        "next_id": spec.next_id,
        "species": [asdict(s) for s in spec.species.values()],
    }


def _species_from(data: dict[str, Any]) -> Speciation:
    spec = Speciation(float(data["threshold"]), int(data["target"]), next_id=int(data["next_id"]))
    for s in data["species"]:
        spec.species[int(s["id"])] = Species(**s)
    return spec
