"""The grid file's extra figures (``figures:``, jitlab.experiments.grid.figures): STEM-NAME.png, a "## Figures" section.

width: each cell's value (mean +- sd over its trainings, the main figure's numbers: the collected frame's
cell statistics) at the figure's x, a line per series, a dashed line at the threshold. log_curve: a scalar
of the done cells' training logs against the step (jitlab.experiments.report.logs), a line per hue value (the mean over
training seeds, a +- sd band where two or more trainings logged the step), a panel per combination of the
other axes; the Markdown gets the tag's last logged value per hue value and per training seed. A done cell
that never logged the tag is listed as missing, never dropped. scatter (Figure 2's toy): each cell's generated
points on the plane (its first done training's Chamfer row keeps them) over the true spiral, a panel per cell titled
with its metrics over the training seeds. ``figure_data`` returns what is drawn.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import pandas as pd

from jitlab.experiments.grid.spec import Figure, LogCurveFigure, WidthFigure  # the grid file's `figures:` format
from jitlab.experiments.report.collect import Collected, cell_key, train_seed
from jitlab.experiments.report.evidence import fmt_sd
from jitlab.experiments.report.layout import axis_values, value_text
from jitlab.experiments.report.logs import last_value, log_source, scalars
from jitlab.experiments.report.tables import fmt, ours_label, stats_of

WIDTH_COLUMNS = ["value", "series", "x", "mean", "sd", "n", "status"]
CURVE_COLUMNS = ["cell", "train_seed", "hue", "panel", "step", "value"]
SCATTER_COLUMNS = ["row", "col", "cell", "points", "title"]
VIEW = 2.6  # the true spiral reaches radius 2 (plus its thickness); points beyond the view are counted


@dataclass
class WidthData:
    points: pd.DataFrame  # WIDTH_COLUMNS: one row per placed cell (mean nan: no value, see status)
    unplaced: list[str]  # axis values at this scale the figure's x does not name


@dataclass
class Curves:
    points: pd.DataFrame  # CURVE_COLUMNS: one row per logged point of each training
    trainings: list[tuple[str, int, str, str]] = field(default_factory=list)  # (cell, seed, hue, panel) with the tag
    missing: list[str] = field(default_factory=list)  # done trainings (directories) that never logged the tag
    not_done: list[str] = field(default_factory=list)  # trainings without a done result: not read


@dataclass
class Scatter:
    panels: pd.DataFrame  # SCATTER_COLUMNS: one row per panel (points: the first done training's, or None)
    noise: float  # the spiral's thickness, for the true points drawn beneath


def figure_data(collected: Collected, figure: Figure) -> WidthData | Curves | Scatter:
    if isinstance(figure, WidthFigure):
        return width_data(collected, figure)
    if figure.kind == "scatter":
        return scatter_data(collected, figure)
    return log_curves(collected, figure)


def scatter_data(collected: Collected, figure: Figure) -> Scatter:
    """Per cell: its first done training's points (the ``points`` of its rows) and a title with each metric's
    mean ± sd over its done trainings."""
    spec, frame = collected.spec, collected.frame
    done = frame[(frame["status"] == "done") & frame["metric"].notna()]
    records = []
    for cell in collected.plain_cells:
        key = cell_key(cell)
        results = [collected.results.get(c.id) or {} for c in collected.cells if cell_key(c) == key]
        rows = [r for result in results if result.get("status") == "done" for r in result.get("rows") or []
                if r.get("points")]
        lines = [", ".join(_panel_label(spec, axis, cell.labels[axis]) for axis in (figure.rows, figure.cols))]
        for metric, values in done[done["cell"] == key].groupby("metric", sort=False)["value"]:
            spread = f" ± {fmt_sd(values.std())}" if len(values) >= 2 else ""
            lines.append(f"{metric.rsplit('-', 1)[0]} {fmt(values.mean())}{spread} (n={len(values)})")
        records.append({"row": cell.labels[figure.rows], "col": cell.labels[figure.cols], "cell": key,
                        "points": rows[0]["points"] if rows else None, "title": "\n".join(lines)})
    noise = float(collected.cells[0].config.get("data", {}).get("init_args", {}).get("noise", 0.02))
    return Scatter(pd.DataFrame.from_records(records, columns=SCATTER_COLUMNS), noise)


def width_data(collected: Collected, figure: WidthFigure) -> WidthData:
    """The cells' means and sds (as the main figure and tables: ``stats_of``) at the figure's x positions."""
    spec = collected.spec
    others = [a.name for a in spec.axes if a.name != figure.axis]
    records = []
    for stat in stats_of(collected):
        value = stat.labels.get(figure.axis)
        if value not in figure.x:
            continue
        series = ", ".join([figure.series[value], *(value_text(spec, a, stat.labels[a]) for a in others)])
        done = stat.status == "done" and math.isfinite(stat.mean)
        records.append({"value": value, "series": series, "x": figure.x[value],
                        "mean": stat.mean if done else math.nan, "sd": stat.sd if done else math.nan,
                        "n": stat.n, "status": stat.status})
    unplaced = [v for v in axis_values(spec, figure.axis, collected.scale) if v not in figure.x]
    return WidthData(pd.DataFrame.from_records(records, columns=WIDTH_COLUMNS), unplaced)


def log_curves(collected: Collected, figure: LogCurveFigure) -> Curves:
    """Every done training's points of ``figure.tag``; the trainings without it and those not done, named."""
    spec = collected.spec
    base = collected.directory
    curves = Curves(pd.DataFrame(columns=CURVE_COLUMNS))
    records = []
    for cell in collected.cells:
        result = collected.results.get(cell.id)
        if result is None or result.get("status") != "done":
            curves.not_done.append(cell.id)
            continue
        points = scalars(log_source(base / cell.id, result), figure.tag)
        if not points:
            curves.missing.append(cell.id)
            continue
        hue = value_text(spec, figure.hue, cell.labels[figure.hue])
        panel = ", ".join(f"{a} {value_text(spec, a, cell.labels[a])}" for a in figure.panels)
        curves.trainings.append((cell_key(cell), train_seed(cell), hue, panel))
        records += [{"cell": cell_key(cell), "train_seed": train_seed(cell), "hue": hue, "panel": panel,
                     "step": step, "value": value} for step, value in points]
    if records:
        curves.points = pd.DataFrame.from_records(records, columns=CURVE_COLUMNS)
    return curves


def last_values(curves: Curves) -> pd.DataFrame:
    """One row per (panel, hue): the mean, sd and number of the trainings' last logged values, each training's
    last value (``seed K`` columns) and the last steps."""
    lasts = []
    for cell, seed, hue, panel in curves.trainings:
        rows = curves.points[(curves.points["cell"] == cell) & (curves.points["train_seed"] == seed)]
        step, value = last_value(list(zip(rows["step"], rows["value"])))
        lasts.append({"panel": panel, "hue": hue, "train_seed": seed, "step": step, "value": value})
    frame = pd.DataFrame.from_records(lasts, columns=["panel", "hue", "train_seed", "step", "value"])
    out = []
    for (panel, hue), rows in frame.groupby(["panel", "hue"], sort=False):
        values = rows["value"].astype(float)
        row = {"panel": panel, "hue": hue, "mean": float(values.mean()),
               "sd": float(values.std()) if len(values) >= 2 else math.nan, "n": len(values),
               "steps": sorted({int(s) for s in rows["step"]})}
        row.update({f"seed {int(s)}": float(v) for s, v in zip(rows["train_seed"], values)})
        out.append(row)
    return pd.DataFrame.from_records(out)


# -- figures --------------------------------------------------------------------------------------------------

def render_figure(collected: Collected, figure: Figure, data: WidthData | Curves) -> bytes:
    """The figure as PNG bytes (no timestamp in the file); global matplotlib settings are left as they were."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    with plt.rc_context():
        sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
        if isinstance(data, WidthData):
            fig = _width_figure(plt, sns, collected, figure, data)
        elif isinstance(data, Scatter):
            fig = _scatter_figure(plt, collected, figure, data)
        else:
            fig = _curve_figure(plt, sns, collected, figure, data)
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=110, format="png", metadata={"Software": None})
        plt.close(fig)
    return buffer.getvalue()


def _width_figure(plt, sns, collected: Collected, figure: WidthFigure, data: WidthData):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = data.points
    series = list(dict.fromkeys(points["series"]))
    colours = dict(zip(series, sns.color_palette("colorblind", len(series))))
    for name in series:
        # drawn from width_data's own table (mean, sd), so the figure is exactly the numbers tested and reported
        rows = points[(points["series"] == name) & points["mean"].notna()].sort_values("x", kind="stable")
        if len(rows):
            ax.errorbar(rows["x"], rows["mean"], yerr=rows["sd"].fillna(0.0), marker="o", capsize=3,
                        linestyle="-" if len(rows) > 1 else "", color=colours[name], label=name)
    if figure.threshold is not None:
        ax.axvline(figure.threshold, linestyle="--", color="#555555", linewidth=1.2,
                   label=figure.threshold_label or f"threshold {figure.threshold:g}")
    lacking = points[points["mean"].isna()]
    if len(lacking):
        note = "no value: " + ", ".join(f"{v} ({s})" for v, s in zip(lacking["value"], lacking["status"]))
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, style="italic", color="#444444")
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel or ours_label(collected))
    ax.legend(fontsize=7)
    ax.set_title(figure.title or f"{collected.spec.name}: {ours_label(collected)} vs {figure.xlabel}\n"
                 "mean ± sd over the training seeds", fontsize=9)
    fig.tight_layout()
    return fig


def _panel_label(spec, axis: str, value: str) -> str:
    """'x-pred', 'D=512': the value's label, or the axis and the value when it has none."""
    text = value_text(spec, axis, value)
    return text if text != value else f"{axis}={value}"


def _scatter_figure(plt, collected: Collected, figure: Figure, data: Scatter):
    import numpy as np
    import torch

    from jitlab.core.data.toy import spiral_points
    from jitlab.score.metrics.spiral import TRUE_SEED

    rows = axis_values(collected.spec, figure.rows, collected.scale)
    cols = axis_values(collected.spec, figure.cols, collected.scale)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.3 * len(cols), 3.8 * len(rows)), squeeze=False)
    truth = spiral_points(2000, data.noise, torch.Generator().manual_seed(TRUE_SEED)).numpy()  # (2000, 2)
    colours = plt.get_cmap("tab10").colors
    for _, panel in data.panels.iterrows():
        ax = axes[rows.index(panel["row"])][cols.index(panel["col"])]
        ax.scatter(truth[:, 0], truth[:, 1], s=2.5, color="0.75", lw=0, rasterized=True)
        title = panel["title"]
        if isinstance(panel["points"], list):
            s = np.asarray(panel["points"], dtype=np.float64)  # (n, 2)
            inside = np.all(np.abs(s) <= VIEW, axis=1)  # (n,)
            ax.scatter(s[inside, 0], s[inside, 1], s=2.5, lw=0, alpha=0.8, rasterized=True,
                       color=colours[rows.index(panel["row"]) % len(colours)])
            title += f"; {1 - inside.mean():.0%} outside view" if inside.mean() <= 0.995 else ""
        else:
            title += "\nno points (not done)"
        ax.set(xlim=(-VIEW, VIEW), ylim=(-VIEW, VIEW), aspect="equal", xticks=[], yticks=[])
        ax.set_title(title, fontsize=8)
    fig.suptitle(figure.title or f"{collected.spec.name}: generated points (first training) over the true spiral "
                 "(grey), projected back with P^T; mean ± sd over the training seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _curve_figure(plt, sns, collected: Collected, figure: LogCurveFigure, curves: Curves):
    points = curves.points
    names = list(dict.fromkeys(points["panel"])) or [""]
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 4.2), squeeze=False)
    hues = [value_text(collected.spec, figure.hue, v) for v in axis_values(collected.spec, figure.hue,
                                                                             collected.scale)]
    for ax, name in zip(axes[0], names):
        rows = points[points["panel"] == name]
        if rows.empty:
            ax.text(0.5, 0.5, f"no cell logged {figure.tag}", ha="center", va="center", transform=ax.transAxes)
        else:
            # seaborn averages the trainings at each step; its sd band needs >= 2 trainings at a step
            sns.lineplot(rows, x="step", y="value", hue="hue", hue_order=[h for h in hues if h in set(rows["hue"])],
                         palette="colorblind", errorbar="sd", ax=ax)
            ax.get_legend().set_title(figure.hue)
        ax.set_xlabel("training step")
        ax.set_ylabel(figure.ylabel)
        ax.set_title(name, fontsize=9)
    title = figure.title or f"{collected.spec.name}: {figure.tag} vs training step (mean ± sd over training seeds)"
    if curves.missing:
        title += f"\nnot logged by: {', '.join(curves.missing)}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# -- markdown -------------------------------------------------------------------------------------------------

def figure_lines(collected: Collected, data: dict[str, WidthData | Curves | Scatter], stem: str,
                 drawn: bool) -> list[str]:
    """The report's "## Figures" section: each file, and for a log curve its last values and missing cells."""
    lines = ["## Figures", ""]
    for figure in collected.spec.figures:
        item = data[figure.name]
        path = f"`{stem}-{figure.name}.png`" + ("" if drawn else " (not drawn: PNGs were not asked for)")
        if isinstance(item, Scatter):
            lines.append(f"- {path}: each cell's generated points (its first done training) projected back to the "
                         f"plane, over the true spiral; panel titles: each metric's mean ± sd over the trainings")
        elif isinstance(item, WidthData):
            lines.append(f"- {path}: {ours_label(collected)} against {figure.xlabel}, a line per series, "
                         f"mean ± sd over the training seeds"
                         + (f"; dashed: {figure.threshold_label or 'threshold'} at {figure.threshold:g}"
                            if figure.threshold is not None else ""))
            lacking = item.points[item.points["mean"].isna()]
            if len(lacking):
                lines.append("  - without a value: " + ", ".join(f"`{v}` ({s})" for v, s in
                                                                 zip(lacking["value"], lacking["status"])))
            if item.unplaced:
                lines.append(f"  - not placed (no x given): {', '.join(f'`{v}`' for v in item.unplaced)}")
        else:
            lines.append(f"- {path}: `{figure.tag}` from the training logs against the step, one line per "
                         f"{figure.hue}; mean over the training seeds, ± sd band where >= 2")
    lines.append("")
    for figure in collected.spec.figures:
        if isinstance(data[figure.name], Curves):
            lines += curve_table(figure, data[figure.name], collected.train_seeds)
    return lines


def curve_table(figure: LogCurveFigure, curves: Curves, seeds: int) -> list[str]:
    lines = [f"### `{figure.tag}`: the last logged value", ""]
    table = last_values(curves)
    panelled = bool(figure.panels)
    head = [*(["panel"] if panelled else []), figure.hue, "mean ± sd (n trainings)", "step",
            *(f"seed {s}" for s in range(seeds))]
    numeric = len(head) - 1 - panelled  # every column after the hue
    lines += ["| " + " | ".join(head) + " |", "|---|" + ("---|" if panelled else "") + "---:|" * numeric]
    for _, row in table.iterrows():
        spread = f" ± {fmt_sd(row['sd'])}" if row["n"] >= 2 else ""
        cells = [*([row["panel"]] if panelled else []), row["hue"], f"{fmt(row['mean'])}{spread} (n={row['n']})",
                 "/".join(str(s) for s in row["steps"])]
        cells += [fmt(row.get(f"seed {s}", math.nan)) for s in range(seeds)]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if table.empty:
        lines.append(f"| no done training logged `{figure.tag}` |" + " |" * (len(head) - 1))
    lines.append("")
    lines.append("- missing (done, never logged the tag): "
                 + (", ".join(f"`{c}`" for c in curves.missing) if curves.missing else "none"))
    if curves.not_done:
        lines.append(f"- not read (no done result): {', '.join(f'`{c}`' for c in curves.not_done)}")
    return lines + [""]
