"""The mini-benchmark classifier: folded encodings of networks (+ their problem's
meta-features) -> the class of problem they serve (the seeds' "building classification model
from DeepNEAT graph representation and corresponding classes from mini-benchmarking stages").

A random forest (scikit-learn) learns from every DB network, labelled with its problem's class.
A new problem is classified by the mean class probabilities of its probe's best networks,
among the classes of its modality. Accuracy is cross-validated leaving problems out (a
problem's networks are never both trained on and tested), per network and per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasfw.graph import ArchGraph
from nasfw.minibench.classes import ProblemClass
from nasfw.minibench.db import BestModelDB, ModelEntry
from nasfw.minibench.encoding import ProblemMeta, fold


def features(graph: ArchGraph, meta: ProblemMeta, folding: int, ops: Sequence[str]) -> np.ndarray:
    """One row of the classifier's input: ``fold(graph)`` then ``meta.vector()``."""
    return np.concatenate([fold(graph, folding, ops), meta.vector()])


@dataclass
class Choice:
    """What the classifier says of a problem: its class, the class's mean probability over the
    networks shown (``confidence``), and every class's probability."""

    name: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass
class ClassModel:
    """A fitted classifier over ``classes`` (see the module docstring)."""

    classes: list[ProblemClass]
    folding: int
    ops: list[str]
    estimator: Any
    labels: list[str]

    def choose(self, graphs: Sequence[ArchGraph], meta: ProblemMeta) -> Choice:
        """The class of a problem whose best networks are ``graphs``, among the classes of its
        modality.

        Raises:
            ValueError: no class of ``meta.modality``, or no graphs.
        """
        allowed = [c.name for c in self.classes if c.modality == meta.modality]
        if not allowed:
            raise ValueError(f"the DB holds no {meta.modality} problem")
        if not graphs:
            raise ValueError("no networks to classify")
        if len(allowed) == 1:
            return Choice(allowed[0], 1.0, {allowed[0]: 1.0})
        rows = np.stack([features(g, meta, self.folding, self.ops) for g in graphs])
        proba = self.estimator.predict_proba(rows).mean(axis=0)
        found = {label: float(p) for label, p in zip(self.labels, proba, strict=True)}
        mass = {name: found.get(name, 0.0) for name in allowed}
        total = sum(mass.values())
        if total <= 0:  # no network of these classes looked like this: equal odds
            mass = {name: 1.0 for name in allowed}
            total = float(len(allowed))
        probabilities = {name: p / total for name, p in mass.items()}
        name = max(allowed, key=lambda n: (probabilities[n], -allowed.index(n)))
        return Choice(name, probabilities[name], probabilities)


def _dataset(
    db: BestModelDB, classes: Sequence[ProblemClass], folding: int, ops: Sequence[str]
) -> tuple[np.ndarray, list[str], list[str], list[ModelEntry]]:
    meta = {p.id: p.meta for p in db.problems()}
    label_of = {pid: c.name for c in classes for pid in c.problems}
    models = [m for m in db.models() if m.problem_id in label_of]
    x = np.stack([features(m.graph, meta[m.problem_id], folding, ops) for m in models])
    return x, [label_of[m.problem_id] for m in models], [m.problem_id for m in models], models


def _forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, random_state=seed, class_weight="balanced")


def train_classifier(
    db: BestModelDB,
    classes: Sequence[ProblemClass],
    folding: int,
    ops: Sequence[str],
    seed: int = 0,
) -> ClassModel:
    """Fit the classifier on every network of the DB's classified problems.

    Raises:
        ValueError: the DB holds no network of ``classes``.
    """
    if not classes:
        raise ValueError("no classes to learn")
    x, y, _, _ = _dataset(db, classes, folding, ops)
    estimator = _forest(seed).fit(x, y)
    return ClassModel(list(classes), folding, list(ops), estimator, list(estimator.classes_))


def cross_validate(
    db: BestModelDB,
    classes: Sequence[ProblemClass],
    folding: int,
    ops: Sequence[str],
    seed: int = 0,
) -> dict[str, float]:
    """Leave-one-problem-out accuracy of the classifier: each problem's class predicted by a
    classifier that never saw it, as :meth:`ClassModel.choose` does (its networks' mean
    probability, among its modality's classes).

    Returns:
        ``problem_accuracy`` (share of problems classified right), ``network_accuracy``
        (share of single networks), ``problems``, ``networks``. A problem alone in its class
        cannot be right (no example of its class remains): that is counted, not hidden.
    """
    x, y, groups, models = _dataset(db, classes, folding, ops)
    meta = {p.id: p.meta for p in db.problems()}
    modality = {c.name: c.modality for c in classes}
    right_problems = right_networks = 0
    problems = sorted(set(groups))
    for held in problems:
        train = [i for i, g in enumerate(groups) if g != held]
        test = [i for i, g in enumerate(groups) if g == held]
        truth = y[test[0]]
        allowed = [c for c in classes if c.modality == modality[truth]]
        if len(allowed) == 1:
            guesses = [allowed[0].name] * len(test)
            choice = allowed[0].name
        elif len({y[i] for i in train}) < 2:
            guesses, choice = [], ""
        else:
            estimator = _forest(seed).fit(x[train], [y[i] for i in train])
            model = ClassModel(
                list(classes), folding, list(ops), estimator, list(estimator.classes_)
            )
            graphs = [models[i].graph for i in test]
            choice = model.choose(graphs, meta[held]).name
            guesses = [model.choose([g], meta[held]).name for g in graphs]
        right_problems += choice == truth
        right_networks += sum(g == truth for g in guesses)
    return {
        "problem_accuracy": right_problems / len(problems),
        "network_accuracy": right_networks / len(groups),
        "problems": float(len(problems)),
        "networks": float(len(groups)),
    }
