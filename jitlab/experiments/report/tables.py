"""The tables in the paper's layout (panels of entries, one entry per cell over its training seeds), and LaTeX.

Every table puts our number and the paper's in separate columns, each headed by its own metric
("ours: FD-ref-500 (mini)", "paper: FID-50K"): the two are never in one column, and ours is never
called FID unless it is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jitlab.experiments.report.collect import Collected, primary_frame
from jitlab.experiments.report.evidence import Stat, cell_stats, fmt_sd
from jitlab.experiments.report.layout import View, axis_title, axis_values, panel_keys, panel_title, value_text
from jitlab.experiments.report.provenance import Provenance, data_description


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def fmt_paper(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:g}"


@dataclass
class Entry:
    """One cell of a results table: its value over its trainings (the mean, with the sd from two on)."""

    cell: str | None
    status: str
    value: float  # the mean over the cell's trainings
    metric: str | None
    paper: float
    stale: bool = False
    sd: float = math.nan
    n: int = 1  # trainings with evidence
    missing: int = 0  # trainings without a result
    values: tuple[float, ...] = ()  # every finite training value (the plots' error bars)
    cfg: tuple[float, ...] = ()  # the CFG scale of its best point per training, when the grid sweeps CFG

    def ours(self, mixed: bool, show_n: bool = False) -> str:
        if self.cell is None:
            return "-"
        if self.status != "done" or not math.isfinite(self.value):
            return self.status if self.status != "done" else "no value"
        text = fmt(self.value)
        if self.n >= 2 and math.isfinite(self.sd):
            text += f" ± {fmt_sd(self.sd)}"
        if show_n:
            text += f" (n={self.n}" + (f" of {self.n + self.missing})" if self.missing else ")")
        if self.cfg:
            text += " @ CFG " + "/".join(f"{c:g}" for c in self.cfg)
        if mixed and self.metric:
            text += f" ({self.metric})"
        return text + (" (stale)" if self.stale else "")


def entry(stat: Stat, cfg: tuple[float, ...] = ()) -> Entry:
    return Entry(stat.cell, stat.status, stat.mean, stat.metric, stat.paper, stat.stale, stat.sd, stat.n,
                 stat.missing, tuple(v for v in stat.values if math.isfinite(v)), cfg)


def best_cfgs(collected: Collected) -> dict[str, tuple[float, ...]]:
    """Cell -> the distinct CFG scales its trainings' best points were scored at, when some cell sweeps more than
    one (the table then names them beside each value; with one CFG the provenance names it); else empty."""
    if not any(len(cell.eval.get("cfg") or []) > 1 for cell in collected.plain_cells):
        return {}
    primary = primary_frame(collected.frame)
    if "cfg_scale" not in primary:
        return {}
    done = primary[(primary["status"] == "done") & primary["cfg_scale"].notna()]
    return {str(cell): tuple(dict.fromkeys(float(c) for c in rows["cfg_scale"]))
            for cell, rows in done.groupby("cell", sort=False)}


@dataclass
class Panel:
    key: tuple[str, ...]
    title: str
    rows: list[str]
    cols: list[str | None]
    entries: dict[tuple[str, str | None], Entry]
    data: list[str]  # the data set(s) of the panel's cells

    @property
    def values(self) -> list[Entry]:
        return list(self.entries.values())


def stats_of(collected: Collected) -> list[Stat]:
    """One Stat per cell: its primary metric over every training seed."""
    return cell_stats(collected.frame, [axis.name for axis in collected.spec.axes])


def panels(collected: Collected, view: View) -> list[Panel]:
    spec, scale = collected.spec, collected.scale
    by_cell = {s.cell: s for s in stats_of(collected)}
    cfgs = best_cfgs(collected)
    rows = axis_values(spec, view.rows, scale)
    cols: list[str | None] = axis_values(spec, view.cols, scale) if view.cols else [None]
    out = []
    for key in panel_keys(spec, view, scale):
        entries: dict[tuple[str, str | None], Entry] = {}
        data = []
        for cell in collected.plain_cells:
            labels = cell.labels
            if any(labels[a] != v for a, v in zip(view.panels, key)):
                continue
            entries[(labels[view.rows], labels[view.cols] if view.cols else None)] = entry(by_cell[cell.id],
                                                                                          cfgs.get(cell.id, ()))
            description = data_description(cell.config)
            if description not in data:
                data.append(description)
        out.append(Panel(key, panel_title(spec, view, key), rows, cols, entries, data))
    return out


def several_seeds(collected: Collected) -> bool:
    """Whether some cell has more than one training (the tables then name each cell's count)."""
    return collected.train_seeds > 1


def metric_names(collected: Collected) -> list[str]:
    primary = primary_frame(collected.frame)
    return list(dict.fromkeys(m for m in primary["metric"] if isinstance(m, str)))


def ours_label(collected: Collected) -> str:
    names = metric_names(collected)
    name = names[0] if len(names) == 1 else ("metric per cell" if names else "no value yet")
    return f"ours: {name} ({collected.scale})"


def paper_label(collected: Collected) -> str:
    return f"paper: {collected.spec.paper_metric or 'value'}"


def has_paper(collected: Collected) -> bool:
    return bool(collected.frame["paper_value"].notna().any())


def col_text(spec, view: View, col: str | None) -> str:
    return "" if col is None else value_text(spec, view.cols, col)


# -- LaTeX ------------------------------------------------------------------------------------------

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex(collected: Collected, view: View, prov: Provenance) -> str:
    spec = collected.spec
    mixed = len(metric_names(collected)) > 1
    ours, paper = ours_label(collected), paper_label(collected)
    show_paper = has_paper(collected)
    per = 2 if show_paper else 1
    show_n = several_seeds(collected)
    out = [f"% {spec.title}",
           (f"% grid {spec.name}, scale {prov.scale}; ours: {prov.metric}, "
            f"{', '.join(map(str, prov.samples)) or '-'} samples per cell; paper: {spec.paper_metric}"),
           f"% data: {'; '.join(d for d, _ in prov.datasets)}",
           f"% made by: {prov.commands[0]} && {prov.commands[1]}  ({prov.generated})",
           "% needs \\usepackage{booktabs}", ""]
    for panel in panels(collected, view):
        ncols = len(panel.cols) * per
        out += [r"\begin{table}[t]", r"\centering", r"\small"]
        caption = (f"{spec.title}" + (f" {panel.title}" if panel.title else "")
                   + f". Ours: {prov.metric} at the {prov.scale} scale ({'; '.join(panel.data)}); "
                   + ("; the mean ± sd over a cell's training seeds (n trainings)" if show_n else "")
                   + f"; paper: {spec.paper_metric}. Lower is better.")
        out.append(r"\caption{" + tex_escape(caption) + "}")
        out.append(r"\begin{tabular}{l" + "r" * ncols + "}")
        out.append(r"\toprule")
        if view.cols:
            groups = [r"\multicolumn{%d}{c}{%s}" % (per, tex_escape(col_text(spec, view, c))) for c in panel.cols]
            out.append(tex_escape(axis_title(view.cols)) + " & " + " & ".join(groups) + r" \\")
            out.append(" ".join(r"\cmidrule(lr){%d-%d}" % (2 + i * per, 1 + (i + 1) * per)
                                for i in range(len(panel.cols))))
        sub = [tex_escape(ours)] + ([tex_escape(paper)] if show_paper else [])
        out.append(tex_escape(axis_title(view.rows)) + " & " + " & ".join(sub * len(panel.cols)) + r" \\")
        out.append(r"\midrule")
        for row in panel.rows:
            cells = [tex_escape(value_text(spec, view.rows, row))]
            for col in panel.cols:
                item = panel.entries.get((row, col))
                text = item.ours(mixed, show_n) if item else "-"
                done = item is not None and item.status == "done"
                cells.append(tex_escape(text) if done else r"\textit{" + tex_escape(text) + "}")
                if show_paper:
                    cells.append(tex_escape(fmt_paper(item.paper) if item else "-"))
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)
