"""The declared rules of a grid file (its ``rules:`` list), parsed strictly into typed rules.

A rule restates one sentence of the paper's claim as a comparison of cells (lower is better)::

    rules:
      - name: (a)                  # how the verdict line and the overall line call it
        claim: only x-prediction works with high-dimensional patches   # the sentence it judges
        kind: below                # below | within_factor | ladder | argmin_in | beats | far_below | under | over
        where: {setting: a}        # optional: the cells the rule looks at (default: every cell)
        a: {pred: x}               # the cells that must be lower ...
        b: {pred: [eps, v]}        # ... than these
        per: [mu]                  # optional: judged separately for each value of these axes
        margin: 0.05               # relative; used only when every cell rests on one training (with more, a
                                   # t test at evidence.LEVEL on the spread of the rule's own cells decides)

A selector maps an axis to a value, a list of values, ``{not: VALUES}`` (every other value of the axis at
the report's scale) or ``{index: I}`` (the I-th value in the grid's order at that scale; -1 is the last).
Keys by kind (besides name, claim, kind, margin, where, per):

- ``below``: a, b. Every cell of a is lower than every cell of b.
- ``within_factor``: factor, optional cells (default: every cell) and of. max(cells) <= factor x min(of)
  (of defaults to cells: max/min <= factor).
- ``ladder``: axis. Along the axis, in the grid's order, each step lowers the metric (one chain per
  combination of the other axes).
- ``argmin_in``: axis, values. The lowest cell along the axis has one of these values: the best of them is
  lower than the best of the axis' other values.
- ``beats``: a, b. The best cell of a is lower than the best cell of b (b usually names one cell).

A factor or a constant (Figure 2's toy); these kinds may also read another metric than each cell's primary row
(its Frechet distance, else its first row): ``metric: NAME`` (``residual`` reads ``residual-2000``).

- ``far_below``: a, b, factor. Every cell of a times factor is lower than every cell of b.
- ``under`` / ``over``: cells, threshold. Every cell is below (above) the absolute threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import GridSpec

Kind = Literal["below", "within_factor", "ladder", "argmin_in", "beats", "far_below", "under", "over"]
COMMON = {"name", "claim", "kind", "margin", "where", "per"}
REQUIRED = {"name", "claim", "kind", "margin"}
KEYS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (its required keys, its optional keys)
    "below": ({"a", "b"}, set()),
    "within_factor": ({"factor"}, {"cells", "of"}),
    "ladder": ({"axis"}, set()),
    "argmin_in": ({"axis", "values"}, set()),
    "beats": ({"a", "b"}, set()),
    "far_below": ({"a", "b", "factor"}, {"metric"}),
    "under": ({"cells", "threshold"}, {"metric"}),
    "over": ({"cells", "threshold"}, {"metric"}),
}


@dataclass(frozen=True)
class Choice:
    """The values of one axis a selector keeps: named ones, all but named ones, or by position."""

    names: tuple[str, ...] = ()
    exclude: bool = False
    index: tuple[int, ...] = ()

    def resolve(self, order: list[str]) -> list[str]:
        """The chosen values among ``order`` (the axis' values at the report's scale), in that order."""
        if self.index:
            picked = {order[i] for i in self.index if -len(order) <= i < len(order)}
        elif self.exclude:
            picked = set(order) - set(self.names)
        else:
            picked = set(self.names)
        return [value for value in order if value in picked]


Selector = tuple[tuple[str, Choice], ...]  # (axis, choice) pairs; a cell must match every one


@dataclass(frozen=True)
class Rule:
    name: str
    claim: str
    kind: Kind
    margin: float
    source: str  # "FILE: rules[I] (NAME)", for messages
    where: Selector = ()
    per: tuple[str, ...] = ()
    a: Selector = ()
    b: Selector = ()
    cells: Selector = ()
    of: Selector | None = None
    axis: str | None = None
    values: tuple[str, ...] = ()
    factor: float | None = None
    threshold: float | None = None
    metric: str | None = None  # None: each cell's primary row


def parse_rules(spec: GridSpec) -> list[Rule]:
    """The grid file's rules; a malformed one raises ConfigError naming the file, the rule and what is valid."""
    raw = spec.rules if spec.rules is not None else []
    if not isinstance(raw, list):
        raise ConfigError(f"{spec.path}: rules", "must be a list of rules (mappings with name, claim, kind, margin)")
    rules = [_parse_rule(spec, i, body) for i, body in enumerate(raw)]
    names = [rule.name for rule in rules]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{spec.path}: rules", f"names {repeated} more than once; each rule needs its own name")
    return rules


def _parse_rule(spec: GridSpec, i: int, body: Any) -> Rule:
    where = f"{spec.path}: rules[{i}]"
    if not isinstance(body, dict):
        raise ConfigError(where, "a rule is a mapping with name, claim, kind and margin")
    if isinstance(body.get("name"), str):
        where += f" ({body['name']})"
    kind = body.get("kind")
    if kind not in KEYS:
        raise ConfigError(f"{where}.kind", f"unknown kind {kind!r}; valid: {', '.join(KEYS)}")
    required, optional = KEYS[kind]
    unknown = set(body) - COMMON - required - optional
    if unknown:
        raise ConfigError(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} for kind {kind}; valid: "
                                 f"{', '.join(sorted(COMMON | required | optional))}")
    absent = (REQUIRED | required) - set(body)
    if absent:
        raise ConfigError(where, f"missing key(s) {', '.join(sorted(absent))} (kind {kind} needs "
                                 f"{', '.join(sorted(REQUIRED | required))})")
    for key in ("name", "claim"):
        if not isinstance(body[key], str) or not body[key].strip():
            raise ConfigError(f"{where}.{key}", "must be a non-empty string")
    axes = {axis.name: [v.name for v in axis.values] for axis in spec.axes}
    fields: dict[str, Any] = {
        "name": body["name"].strip(), "claim": " ".join(body["claim"].split()), "kind": kind, "source": where,
        "margin": _number(body["margin"], f"{where}.margin", low=0.0, high=1.0, open_high=True),
        "where": _selector(body.get("where", {}), axes, f"{where}.where"),
        "per": _axes(body.get("per", []), axes, f"{where}.per"),
    }
    for key in ("a", "b", "cells"):
        if key in body:
            fields[key] = _selector(body[key], axes, f"{where}.{key}")
    if "of" in body:
        fields["of"] = _selector(body["of"], axes, f"{where}.of")
    if "factor" in body:
        fields["factor"] = _number(body["factor"], f"{where}.factor", low=1.0)
    if "threshold" in body:
        fields["threshold"] = _number(body["threshold"], f"{where}.threshold", low=0.0)
    if "metric" in body:
        if not isinstance(body["metric"], str) or not body["metric"].strip():
            raise ConfigError(f"{where}.metric", f"must name a metric (e.g. residual), got {body['metric']!r}")
        fields["metric"] = body["metric"].strip()
    if "axis" in body:
        (fields["axis"],) = _axes([body["axis"]], axes, f"{where}.axis")
    if "values" in body:
        fields["values"] = _names(body["values"], axes[fields["axis"]], f"{where}.values")
    return Rule(**fields)


def _number(value: Any, where: str, low: float, high: float | None = None, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(where, f"must be a number, got {value!r}")
    value = float(value)
    above = high is not None and (value >= high if open_high else value > high)
    if value < low or above:
        bound = "" if high is None else f" and {'below' if open_high else 'at most'} {high:g}"
        raise ConfigError(where, f"must be at least {low:g}{bound}, got {value:g}")
    return value


def _axes(value: Any, axes: dict[str, list[str]], where: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(where, f"must name an axis or list axes; the grid's axes: {', '.join(axes)}")
    unknown = [n for n in names if n not in axes]
    if unknown:
        raise ConfigError(where, f"unknown axis {unknown[0]!r}; the grid's axes: {', '.join(axes)}")
    return tuple(names)


def _names(value: Any, known: list[str], where: str) -> tuple[str, ...]:
    """Value names (strings or numbers: ``-0.8``, ``16``, ``none``) that must exist on the axis."""
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, bool) or item is None or isinstance(item, (dict, list)):
            raise ConfigError(where, f"{item!r} is not a value name (quote it); valid: {', '.join(known)}")
        names.append(str(item))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(where, f"unknown value {unknown[0] if unknown else '(none given)'!r}; "
                                 f"valid: {', '.join(known)}")
    return tuple(names)


def _selector(value: Any, axes: dict[str, list[str]], where: str) -> Selector:
    if not isinstance(value, dict):
        raise ConfigError(where, "a selector maps axes to values, e.g. {pred: [eps, v]}")
    pairs = []
    for axis, choice in value.items():
        (axis,) = _axes([axis], axes, where)
        pairs.append((axis, _choice(choice, axes[axis], f"{where}.{axis}")))
    return tuple(pairs)


def _choice(value: Any, known: list[str], where: str) -> Choice:
    if not isinstance(value, dict):
        return Choice(names=_names(value, known, where))
    if len(value) != 1 or next(iter(value)) not in ("not", "index"):
        raise ConfigError(where, "is a value, a list of values, {not: VALUES} or {index: I}")
    if "not" in value:
        return Choice(names=_names(value["not"], known, f"{where}.not"), exclude=True)
    index = value["index"] if isinstance(value["index"], list) else [value["index"]]
    if not index or not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise ConfigError(f"{where}.index", f"must be a position or a list of positions (0 first, -1 last), "
                                            f"got {value['index']!r}")
    return Choice(index=tuple(index))
