"""The paper's layout of a grid (the spec's ``layout``) as rows x columns x panels, and display labels; axes the
layout does not place become panels, so every cell appears in exactly one table.

    {kind: heatmap, rows: loss, cols: pred, panels: setting}   # Table 2: one rows x cols table per panel
    {kind: line, x: mu, hue: pred}                             # a sweep (also points, bar, ladder): x down the table
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import GridSpec

AXIS_TITLES = {"mu": "mu (noise-level shift)", "bottleneck": "bottleneck d'", "pred": "prediction",
               "loss": "loss space", "setting": "setting", "resolution": "resolution", "component": "component"}


@dataclass(frozen=True)
class View:
    kind: str  # heatmap | line | points | bar | ladder | table
    rows: str  # the axis down a table (the x axis of a plot)
    cols: str | None  # the axis across a table (the hue of a plot)
    panels: tuple[str, ...]  # one table (and one plot panel) per combination of these axes' values


def view_of(spec: GridSpec) -> View:
    layout = spec.layout or {}
    names = [axis.name for axis in spec.axes]
    kind = str(layout.get("kind", "table"))
    rows = layout.get("rows") if kind == "heatmap" else layout.get("x", layout.get("rows"))
    cols = layout.get("cols") if kind == "heatmap" else layout.get("hue", layout.get("cols"))
    if rows is None:
        rows = names[0]
        if cols is None and len(names) > 1 and kind in ("heatmap", "table"):
            cols = names[1]
    panels = layout.get("panels") or []
    panels = [panels] if isinstance(panels, str) else list(panels)
    for key, axis in [("rows/x", rows), ("cols/hue", cols), *[("panels", p) for p in panels]]:
        if axis is not None and axis not in names:
            raise ConfigError(f"{spec.path}: layout.{key}", f"names axis {axis!r}; the grid's axes are {names}")
    placed = {rows, cols, *panels}
    panels += [name for name in names if name not in placed]
    return View(kind, rows, cols, tuple(panels))


def axis_values(spec: GridSpec, axis: str, scale: str | None = None) -> list[str]:
    for a in spec.axes:
        if a.name == axis:
            return [v.name for v in (a.for_scale(scale) if scale else a.values)]
    return []


def panel_keys(spec: GridSpec, view: View, scale: str | None = None) -> list[tuple[str, ...]]:
    return list(itertools.product(*(axis_values(spec, a, scale) for a in view.panels)))


def value_text(spec: GridSpec, axis: str, value: str) -> str:
    """The label a reader sees: the spec's label, else 'x-pred' / 'v-loss' for those axes, else the value."""
    label = spec.label_of(axis, value)
    return f"{value}-{axis}" if label == value and axis in ("pred", "loss") else label


def axis_title(axis: str | None) -> str:
    return "" if axis is None else AXIS_TITLES.get(axis, axis)


def panel_title(spec: GridSpec, view: View, key: tuple[str, ...]) -> str:
    texts = [(axis, value, value_text(spec, axis, value)) for axis, value in zip(view.panels, key)]
    return ", ".join(text if text != value else f"{axis} {value}" for axis, value, text in texts)


def report_stem(spec: GridSpec, scale: str) -> str:
    """table2 at mini scale, table2-paper at paper scale (the committed mini reports are not overwritten)."""
    return spec.name if scale == "mini" else f"{spec.name}-{scale}"
