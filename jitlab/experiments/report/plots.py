"""The report's figure (seaborn, Agg): our numbers on top, the paper's below (never on one axis: different
metrics), one column per panel. heatmap: annotated with the mean and sd, one log colour scale per heat map (panels
of different resolutions are scored in different feature spaces); line (mu, d' sweeps; d' = none at the right
end), points, bar / ladder: seaborn averages every training's value and draws the sd as an error bar.
"""

from __future__ import annotations

import io
import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from jitlab.experiments.report.collect import Collected  # noqa: E402
from jitlab.experiments.report.evidence import fmt_sd  # noqa: E402
from jitlab.experiments.report.layout import View, axis_title, value_text  # noqa: E402
from jitlab.experiments.report.tables import (Panel, fmt, fmt_paper, has_paper, ours_label,  # noqa: E402
                                              panels, paper_label)

MISSING_COLOUR = "#d9d9d9"


@plt.rc_context()  # global matplotlib settings are left as they were
def render_png(collected: Collected, view: View) -> bytes:
    """The figure as PNG bytes (deterministic: no timestamp in the file)."""
    sns.set_theme(style="white" if view.kind == "heatmap" else "whitegrid", context="notebook", font_scale=0.85)
    parts = panels(collected, view)
    show_paper = has_paper(collected)
    heat = view.kind == "heatmap"
    # ours on top, the paper's below, a column per panel; a single panel puts the two side by side
    side = len(parts) <= 1
    nrows, ncols = (1, 2 if show_paper else 1) if side else ((2 if show_paper else 1), len(parts))
    cell = (4.3, 3.7) if heat else (4.8, 3.6)
    size = (cell[0] * ncols + 0.6, cell[1] * nrows + 1.1)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    ours, paper = ours_label(collected), paper_label(collected)
    for i, panel in enumerate(parts):
        sources = [(axes[0][i], "ours", ours)]
        if show_paper:
            sources.append((axes[0][1] if side else axes[1][i], "paper", paper))
        for ax, which, label in sources:
            where = " / ".join(panel.data) if which == "ours" else ""
            head = ", ".join(t for t in (panel.title, where) if t)
            title = f"{head}\n{label}" if head else label
            (_heatmap if heat else _sweep)(ax, collected, view, panel, which, label)
            ax.set_title(title, fontsize=9)
    width = int(size[0] * 12)
    lines = [textwrap.fill(collected.spec.title, width),
             textwrap.fill(f"{'left' if side else 'top'}: {ours}"
                           + (f"; {'right' if side else 'bottom'}: {paper} (the paper's numbers)" if show_paper else "")
                           + (" - one colour scale per heat map" if heat else ""), width)]
    fig.suptitle("\n".join(lines), fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _matrix(panel: Panel, which: str) -> tuple[np.ndarray, list[list[str]]]:
    values = np.full((len(panel.rows), len(panel.cols)), np.nan)
    text = [["-" for _ in panel.cols] for _ in panel.rows]
    for r, row in enumerate(panel.rows):
        for c, col in enumerate(panel.cols):
            entry = panel.entries.get((row, col))
            if entry is not None:
                values[r, c] = entry.paper if which == "paper" else entry.mean if entry.status == "done" else math.nan
                spread = f"\n± {fmt_sd(entry.sd)}" if entry.n >= 2 and math.isfinite(entry.sd) else ""
                text[r][c] = (fmt_paper(entry.paper) if which == "paper" else
                              fmt(entry.mean) + spread if math.isfinite(values[r, c]) else entry.status)
    return values, text


def _norm(values: np.ndarray):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    if low > 0:
        if high <= low * 1.0001:
            low, high = low / 1.5, high * 1.5
        return LogNorm(vmin=low, vmax=high)
    if high <= low:
        low, high = low - 1, high + 1
    return Normalize(vmin=low, vmax=high)


def nice_ticks(low: float, high: float) -> list[float]:
    """Readable ticks for a log colour bar: 1-2-5 x 10^k over wide ranges, evenly spaced round values over narrow."""
    span = math.log10(high / low)
    if span <= 0.5:
        ticks = [float(f"{t:.6g}") for t in MaxNLocator(nbins=5).tick_values(low, high)]
    else:
        mantissas = (1,) if span > 2.2 else (1, 2, 5) if span > 1.2 else (1, 1.5, 2, 3, 5, 7)
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [float(f"{m * 10.0 ** k:.6g}") for k in decades for m in mantissas]
    ticks = sorted({t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)})
    return ticks if len(ticks) >= 2 else [float(f"{low:.3g}"), float(f"{high:.3g}")]


def _heatmap(ax, collected: Collected, view: View, panel: Panel, which: str, label: str) -> None:
    spec = collected.spec
    values, text = _matrix(panel, which)
    frame = pd.DataFrame(values, index=[value_text(spec, view.rows, r) for r in panel.rows],
                         columns=[value_text(spec, view.cols, c) if c is not None else "" for c in panel.cols])
    norm = _norm(values)
    ax.set_facecolor(MISSING_COLOUR)
    kind = "log scale" if isinstance(norm, LogNorm) else "linear"
    limits = {} if norm is not None else {"vmin": 0.0, "vmax": 1.0}  # all cells missing: nothing to scale
    sns.heatmap(frame, ax=ax, norm=norm, cmap="viridis", **limits, annot=np.array(text, dtype=object), fmt="",
                linewidths=1, linecolor="white", cbar=norm is not None,
                cbar_kws={"label": f"{label.split(': ', 1)[-1]}, {kind}"} if norm is not None else None,
                annot_kws={"fontsize": 9})
    ax.grid(False)
    if isinstance(norm, LogNorm) and ax.collections and ax.collections[0].colorbar is not None:
        bar = ax.collections[0].colorbar
        ticks = nice_ticks(norm.vmin, norm.vmax)
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.ax.yaxis.set_minor_locator(NullLocator())
    # seaborn leaves masked (NaN) cells blank: say what they are
    for r, c in zip(*np.nonzero(~np.isfinite(values))):
        ax.text(c + 0.5, r + 0.5, text[r][c], ha="center", va="center", fontsize=8, color="#444444", style="italic")
    ax.set_ylabel(axis_title(view.rows))
    ax.set_xlabel(axis_title(view.cols))
    ax.tick_params(axis="y", rotation=0)


def positions(values: list[str]) -> tuple[list[float], bool]:
    """x positions of an axis' values: numeric ones at their value (log2 when they span >= 8x, all positive),
    'none' (and other words) one step past the right end; all-words axes are categorical (0, 1, 2, ...)."""
    numbers: list[float | None] = []
    for v in values:
        try:
            numbers.append(float(v))
        except ValueError:
            numbers.append(None)
    finite = [n for n in numbers if n is not None]
    if len(finite) < 2:
        return [float(i) for i in range(len(values))], False
    log = min(finite) > 0 and max(finite) / min(finite) >= 8
    placed = [None if n is None else (math.log2(n) if log else n) for n in numbers]
    known = sorted(p for p in placed if p is not None)
    step = float(np.median(np.diff(known))) if len(known) > 1 else 1.0
    step = step if step > 0 else 1.0
    out, right = [], known[-1]
    for p in placed:  # words one step apart past the right end
        right += step if p is None else 0.0
        out.append(right if p is None else p)
    return out, True


def _sweep(ax, collected: Collected, view: View, panel: Panel, which: str, label: str) -> None:
    """Lines (a numeric sweep), points (one marker per value) or bars (a ladder of components)."""
    spec = collected.spec
    bars = view.kind in ("bar", "ladder")
    xs, numeric = ([float(i) for i in range(len(panel.rows))], False) if bars else positions(panel.rows)
    ticks = [textwrap.fill(value_text(spec, view.rows, r).replace(" (", "\n("), 18) for r in panel.rows]
    hues = [value_text(spec, view.cols, c) if c is not None else "value" for c in panel.cols]
    colours = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    records, missing = [], []
    for r, row in enumerate(panel.rows):
        for col, hue in zip(panel.cols, hues):
            entry = panel.entries.get((row, col))
            if entry is None:
                continue
            value = entry.mean if which == "ours" else entry.paper
            if math.isfinite(value) and (which == "paper" or entry.status == "done"):
                finite = [v for v in entry.values if math.isfinite(v)]  # every training's value: the error bars
                trainings = finite if which == "ours" and finite else (value,)
                records += [{"x": xs[r], "value": v, "hue": hue, "label": ticks[r], "mean": value}
                            for v in trainings]
            elif which == "ours":
                missing.append((xs[r], hue, entry.status))
    frame = pd.DataFrame(records, columns=["x", "value", "hue", "label", "mean"])
    legend = view.cols is not None and not frame.empty
    if bars and not frame.empty:
        sns.barplot(frame, x="label", y="value", hue="hue", order=ticks, hue_order=hues, palette=colours,
                    ax=ax, legend=legend, errorbar="sd", capsize=0.15)
        for container in ax.containers:  # inside the bar, clear of its error bar
            ax.bar_label(container, fmt="%.3g", fontsize=7, label_type="center", color="white")
    elif not frame.empty:
        sns.lineplot(frame, x="x", y="value", hue="hue", hue_order=hues, palette=colours, marker="o",
                     markersize=7, ax=ax, linestyle="-" if view.kind == "line" and numeric else "",
                     legend=legend, sort=True, errorbar="sd", err_style="bars", err_kws={"capsize": 3})
        if view.kind != "line":
            for _, point in frame.drop_duplicates(["x", "hue"]).iterrows():
                ax.annotate(fmt(point["mean"]), (point["x"], point["mean"]), textcoords="offset points",
                            xytext=(7, 3), fontsize=7, color=colours[point["hue"]])
    ax.set_xticks(xs, ticks)
    pad = (max(xs) - min(xs)) * 0.08 or 0.5
    ax.set_xlim(*((-0.6, len(xs) - 0.4) if bars else (min(xs) - pad, max(xs) + pad)))
    ax.set_xlabel(axis_title(view.rows))
    positive = frame["value"][frame["value"] > 0]
    if not bars and len(positive) == len(frame) and len(positive) and positive.max() / positive.min() > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    if frame.empty:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="#444444")
        ax.set_yticks([])
    ax.set_ylabel(label)
    if ax.get_legend() is not None:
        ax.get_legend().set_title(axis_title(view.cols))
    # a cell without a value: its status at its x position, in its hue's colour
    where = blended_transform_factory(ax.transData, ax.transAxes)
    stacked: dict[float, int] = {}
    for x, hue, status in missing:
        k = stacked[x] = stacked.get(x, -1) + 1
        ax.text(x, 0.03 + 0.08 * k, f"{hue}: {status}" if view.cols else status, transform=where, ha="center",
                va="bottom", fontsize=7, style="italic", color=colours[hue],
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})


def _minor_label(value: float, _pos) -> str:
    """Label the 2 and 5 minor ticks of a log axis (a plain number, not 2 x 10^1)."""
    if value <= 0:
        return ""
    lead = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if lead in (2.0, 5.0) else ""
