"""The tables in the paper's layout (panels of cells, each over its training seeds), and LaTeX.

Our number and the paper's are in separate columns, each headed by its own metric ("ours: FD-ref-500 (mini)",
"paper: FID-50K"): ours is never called FID unless it is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from jitlab.experiments.report.collect import Collected, primary_frame
from jitlab.experiments.report.evidence import Stat, cell_stats, fmt_sd
from jitlab.experiments.report.layout import View, axis_title, axis_values, panel_keys, panel_title, value_text
from jitlab.experiments.report.provenance import Provenance, data_description


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def fmt_paper(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:g}"


def ours_text(stat: Stat, mixed: bool, show_n: bool = False) -> str:
    """Our value of a results table's cell: the mean over its trainings (± the sd from two on)."""
    if stat.status != "done" or not math.isfinite(stat.mean):
        return stat.status if stat.status != "done" else "no value"
    text = fmt(stat.mean)
    if stat.n >= 2 and math.isfinite(stat.sd):
        text += f" ± {fmt_sd(stat.sd)}"
    if show_n:
        text += f" (n={stat.n}" + (f" of {stat.n + stat.missing})" if stat.missing else ")")
    if stat.cfg:
        text += " @ CFG " + "/".join(f"{c:g}" for c in stat.cfg)
    if mixed and stat.metric:
        text += f" ({stat.metric})"
    return text + (" (stale)" if stat.stale else "")


def best_cfgs(collected: Collected) -> dict[str, tuple[float, ...]]:
    """Cell -> the distinct CFG scales its trainings' best points were scored at, when some cell sweeps more than
    one (the table then names them beside each value; with one CFG the provenance names it); else empty."""
    if not any(len(cell.eval.get("cfg") or []) > 1 for cell in collected.plain_cells):
        return {}
    primary = primary_frame(collected.frame)
    done = primary[(primary["status"] == "done") & primary["cfg_scale"].notna()]
    return {str(cell): tuple(dict.fromkeys(float(c) for c in rows["cfg_scale"]))
            for cell, rows in done.groupby("cell", sort=False)}


@dataclass
class Panel:
    key: tuple[str, ...]
    title: str
    rows: list[str]
    cols: list[str | None]
    entries: dict[tuple[str, str | None], Stat]  # (row, col) -> the cell there (its cfg set when CFG is swept)
    data: list[str]  # the data set(s) of the panel's cells


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
        entries: dict[tuple[str, str | None], Stat] = {}
        data = []
        for cell in collected.plain_cells:
            labels = cell.labels
            if any(labels[a] != v for a, v in zip(view.panels, key)):
                continue
            at = (labels[view.rows], labels[view.cols] if view.cols else None)
            entries[at] = replace(by_cell[cell.id], cfg=cfgs.get(cell.id, ()))
            data.append(data_description(cell.config))
        out.append(Panel(key, panel_title(spec, view, key), rows, cols, entries, list(dict.fromkeys(data))))
    return out


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
    show_n = collected.train_seeds > 1  # some cell has several trainings: name each cell's count
    out = [f"% {spec.title}",
           (f"% grid {spec.name}, scale {prov.scale}; ours: {prov.metric}, "
            f"{', '.join(map(str, prov.samples)) or '-'} samples per cell; paper: {spec.paper_metric}"),
           f"% data: {'; '.join(d for d, _ in prov.datasets)}",
           f"% made by: {prov.commands[0]} && {prov.commands[1]}  ({prov.generated})",
           "% needs \\usepackage{booktabs}", ""]
    for panel in panels(collected, view):
        caption = (f"{spec.title}" + (f" {panel.title}" if panel.title else "")
                   + f". Ours: {prov.metric} at the {prov.scale} scale ({'; '.join(panel.data)}); "
                   + ("; the mean ± sd over a cell's training seeds (n trainings)" if show_n else "")
                   + f"; paper: {spec.paper_metric}. Lower is better.")
        out += [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + tex_escape(caption) + "}",
                r"\begin{tabular}{l" + "r" * (len(panel.cols) * per) + "}", r"\toprule"]
        if view.cols:
            titles = [tex_escape(value_text(spec, view.cols, c)) for c in panel.cols]
            groups = [r"\multicolumn{%d}{c}{%s}" % (per, title) for title in titles]
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
                text = ours_text(item, mixed, show_n) if item else "-"
                done = item is not None and item.status == "done"
                cells.append(tex_escape(text) if done else r"\textit{" + tex_escape(text) + "}")
                if show_paper:
                    cells.append(tex_escape(fmt_paper(item.paper) if item else "-"))
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)
