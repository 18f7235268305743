"""Op rules over a search space: whether every value a space gives one param of an op passes
the op's rule (:attr:`nasfw.OpSpec.rule`, e.g. attention heads dividing the width) with some
values of the others. A value that passes with none would make every network drawn with it a
failed trial, so the space is refused when it is built."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from nasfw.config import ParamRange
from nasfw.ops import OpSpec

# The most combinations of an op's param values listed to check the op's rule.
RULE_COMBINATIONS = 100_000


def unsatisfiable(op: str, spec: OpSpec, ranges: Mapping[str, ParamRange]) -> str | None:
    """Why a value of one of ``op``'s params (its ``ranges`` in a space) passes ``spec``'s rule
    with no value of the others (a message naming ``search_space.ops.<op>.<param>``), or None.
    Checked where the values can be listed (choices, int ranges: at most
    :data:`RULE_COMBINATIONS` combinations); float ranges pass."""
    if spec.rule is None:
        return None
    values: dict[str, list[Any]] = {}
    for param, pspec in spec.params.items():
        rng = ranges.get(param)
        if rng is None:
            values[param] = [pspec.default]
        elif rng.choices is not None:
            values[param] = list(rng.choices)
        elif pspec.kind == "int" and rng.low is not None and rng.high is not None:
            values[param] = list(range(int(rng.low), int(rng.high) + 1))
        else:
            return None  # a float range: nothing to list
    if math.prod(len(v) for v in values.values()) > RULE_COMBINATIONS:
        return None
    names = list(values)
    passing = [
        combo
        for combo in itertools.product(*values.values())
        if spec.rule(dict(zip(names, combo, strict=True))) is None
    ]
    for i, param in enumerate(names):
        for value in values[param]:
            if not any(combo[i] == value for combo in passing):
                example = dict(zip(names, [v[0] for v in values.values()], strict=True))
                reason = spec.rule({**example, param: value})
                return (
                    f"search_space.ops.{op}.{param}: {param}={value!r} fits none of the "
                    f"space's values of the other params of {op} "
                    f"({ {p: values[p] for p in names if p != param} }; e.g. {reason}), so "
                    "every network drawn with it would fail"
                )
    return None
