"""The grid file's optional ``figures:``: extra report figures beside the main one, typed and checked at load.

    figures:
      - {name: width, kind: width, axis: model, x: {VALUE: 0.5, ...}, series: {VALUE: "x-pred", ...},
         xlabel: "...", ylabel: "...", threshold: 1.0, threshold_label: "..."}
      - {name: erank, kind: log_curve, tag: train/latent_erank, hue: variant, ylabel: "..."}
      - {name: points, kind: scatter, rows: pred, cols: D}

``width``: each cell's value at a numeric x per value of ``axis``, a line per series. ``log_curve``: a scalar
of the training logs against the step, a line per value of ``hue``, a panel per combination of the other axes.
``scatter`` (``features: spiral``): each cell's generated 2-D points over the true spiral, a row of panels per value
of ``rows``, a column per value of ``cols``.
Drawn as ``reports/STEM-NAME.png`` by jitlab.experiments.report.extras; this module only parses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from jitlab.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a file-name part: STEM-NAME.png
_COMMON = {"name", "kind", "title", "ylabel"}
_KEYS: dict[str, set[str]] = {
    "width": _COMMON | {"axis", "x", "series", "xlabel", "threshold", "threshold_label"},
    "log_curve": _COMMON | {"tag", "hue"},
    "scatter": _COMMON | {"rows", "cols"},
}


@dataclass(frozen=True)
class WidthFigure:
    name: str
    axis: str  # the axis whose values are placed at a numeric x
    x: dict[str, float]  # axis value -> x position (values not named are not in the figure)
    series: dict[str, str]  # axis value -> the line it belongs to
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    threshold: float | None = None  # the dashed vertical line
    threshold_label: str = ""
    kind: Literal["width"] = "width"


@dataclass(frozen=True)
class LogCurveFigure:
    name: str
    tag: str  # the tensorboard scalar (e.g. train/latent_erank)
    hue: str  # the axis with one line per value; the other axes are panels
    ylabel: str = ""
    title: str = ""
    panels: tuple[str, ...] = field(default_factory=tuple)
    kind: Literal["log_curve"] = "log_curve"


@dataclass(frozen=True)
class ScatterFigure:
    name: str
    rows: str  # the axis with a row of panels per value
    cols: str  # the axis with a column of panels per value
    ylabel: str = ""
    title: str = ""
    kind: Literal["scatter"] = "scatter"


Figure = Union[WidthFigure, LogCurveFigure, ScatterFigure]


def parse_figures(raw: Any, axes: dict[str, list[str]], where: str) -> list[Figure]:
    """``figures:`` of a grid file -> typed figures (``axes``: each axis's value names); fails naming entry and key."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(where, f"must be a list of figure mappings, got {type(raw).__name__}")
    figures: list[Figure] = []
    for i, body in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(body, dict):
            raise ConfigError(at, "a figure is a mapping with 'name' and 'kind'")
        kind = body.get("kind")
        if kind not in _KEYS:
            raise ConfigError(f"{at}.kind", f"unknown kind {kind!r}; valid: {', '.join(_KEYS)}")
        unknown = set(map(str, body)) - _KEYS[kind]
        if unknown:
            raise ConfigError(f"{at}.{sorted(unknown)[0]}", f"unknown key(s) {', '.join(sorted(unknown))} of a "
                                                            f"{kind} figure; valid: {', '.join(sorted(_KEYS[kind]))}")
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{at}.name", f"must be a file-name part (letters, digits, '_', '-', '.'), got {name!r}")
        if name in {f.name for f in figures}:
            raise ConfigError(f"{at}.name", f"{name!r} names two figures; each is written as STEM-{name}.png")
        texts = {key: _text(body, key, at) for key in ("title", "ylabel", "xlabel", "threshold_label")}
        if kind == "width":
            figures.append(_width(body, axes, at, name, texts))
        elif kind == "scatter":
            figures.append(ScatterFigure(name, _axis(body, "rows", axes, at), _axis(body, "cols", axes, at),
                                         texts["ylabel"], texts["title"]))
        else:
            hue = _axis(body, "hue", axes, at)
            tag = body.get("tag")
            if not isinstance(tag, str) or not tag.strip():
                raise ConfigError(f"{at}.tag", f"must name a logged scalar (e.g. train/loss), got {tag!r}")
            figures.append(LogCurveFigure(name, tag, hue, texts["ylabel"] or tag, texts["title"],
                                          tuple(a for a in axes if a != hue)))
    return figures


def _width(body: dict, axes: dict[str, list[str]], at: str, name: str, texts: dict[str, str]) -> WidthFigure:
    axis = _axis(body, "axis", axes, at)
    x = _mapping(body, "x", axes[axis], axis, at)
    places = {}
    for value, number in x.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ConfigError(f"{at}.x.{value}", f"must be a number (the x position), got {number!r}")
        places[value] = float(number)
    series = _mapping(body, "series", axes[axis], axis, at) if "series" in body else {v: "value" for v in places}
    unplaced = [v for v in series if v not in places]
    lacking = [v for v in places if v not in series]
    if unplaced or lacking:
        raise ConfigError(f"{at}.series", f"must name exactly the values of x; "
                                          + (f"not in x: {unplaced}" if unplaced else f"without a series: {lacking}"))
    threshold = body.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ConfigError(f"{at}.threshold", f"must be a number (an x position), got {threshold!r}")
    return WidthFigure(name, axis, places, {k: str(v) for k, v in series.items()}, texts["xlabel"] or axis,
                       texts["ylabel"], texts["title"], None if threshold is None else float(threshold),
                       texts["threshold_label"])


def _axis(body: dict, key: str, axes: dict[str, list[str]], at: str) -> str:
    axis = body.get(key)
    if axis not in axes:
        raise ConfigError(f"{at}.{key}", f"names axis {axis!r}; the grid's axes are {list(axes)}")
    return str(axis)


def _mapping(body: dict, key: str, values: list[str], axis: str, at: str) -> dict[str, Any]:
    raw = body.get(key)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{at}.{key}", f"must map values of axis {axis!r} ({values}) to {key} entries")
    unknown = [str(v) for v in raw if str(v) not in values]
    if unknown:
        raise ConfigError(f"{at}.{key}", f"names value(s) {unknown} that axis {axis!r} does not have; "
                                         f"it has {values}")
    return {str(k): v for k, v in raw.items()}


def _text(body: dict, key: str, at: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{at}.{key}", f"must be text, got {value!r}")
    return value
