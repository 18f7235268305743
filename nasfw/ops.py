"""Op specifications: the layer kinds ArchGraph nodes refer to.

Ops are a registry like every other plugin kind (hook ``register_ops``); the built-in image and
dense ops live in ``nasfw.plugins.ops.image``. An op knows its parameters (with hard limits, so a
graph can be checked without a search space) and how to build its ``torch.nn.Module`` for a
given input shape. Shapes never include the batch dimension; channels come first, so an image is
``(C, H, W)``, a sequence ``(C, L)`` and a feature vector ``(F,)``. A text problem's input is
``(L,)`` token ids (ints, not features): only *token ops* (``OpSpec.tokens``, e.g. ``embedding``)
read it, and they read nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, ...]
ParamKind = Literal["int", "float", "categorical", "bool"]


@dataclass(frozen=True)
class ParamSpec:
    """One op parameter: its kind, hard limits (inclusive) or choices, and default."""

    kind: ParamKind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    default: Any = None

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or ``None`` when it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected a bool, got {value!r}"
        if self.kind == "categorical":
            if self.choices is not None and value not in self.choices:
                return f"{value!r} is not one of {list(self.choices)}"
            return None
        numeric = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return f"expected {'an int' if self.kind == 'int' else 'a number'}, got {value!r}"
        if self.low is not None and value < self.low:
            return f"{value} is below the minimum {self.low:g}"
        if self.high is not None and value > self.high:
            return f"{value} is above the maximum {self.high:g}"
        return None


# build(params, input_shape) for value ops; build(params, input_shape, vocab_size) for token ops.
BuildFn = Callable[..., "tuple[nn.Module, Shape]"]


@dataclass(frozen=True)
class OpSpec:
    """A layer kind.

    ``build(params, input_shape) -> (module, output_shape)`` makes the module. ``input_rank`` is
    the rank the op needs (3 for ``(C, H, W)``, 1 for features, ``None`` for any); the model
    builder flattens a larger input before an op that needs rank 1 and refuses other mismatches.
    A token op (``tokens=True``) reads a text problem's ``(L,)`` token ids and nothing else;
    its build takes the problem's vocabulary size as a third argument:
    ``build(params, (L,), vocab_size)``.

    ``rule(params) -> str | None`` is a rule between the params (e.g. ``width`` a multiple of
    ``heads``): why a complete set of params cannot build, or ``None``. Graphs are checked
    against it (:meth:`check_params`), and a search space must give each value of a param at
    least one combination of the others that passes it (:class:`nasfw.SearchSpace`).
    """

    name: str
    build: BuildFn
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    input_rank: int | None = None
    description: str = ""
    tokens: bool = False
    rule: Callable[[Mapping[str, Any]], str | None] | None = None

    def check_params(self, params: Mapping[str, Any]) -> list[str]:
        """Return one message per problem with ``params`` (unknown, missing or out of limits)."""
        problems = [f"unknown param {name!r}" for name in params if name not in self.params]
        for name, spec in self.params.items():
            if name not in params:
                if spec.default is None:
                    problems.append(f"missing param {name!r}")
                continue
            reason = spec.check(params[name])
            if reason:
                problems.append(f"param {name!r}: {reason}")
        if not problems and self.rule is not None:
            reason = self.rule(self.with_defaults(params))
            if reason:
                problems.append(reason)
        return problems

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **{k: s.default for k, s in self.params.items() if s.default is not None},
            **params,
        }
