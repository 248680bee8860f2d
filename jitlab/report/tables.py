"""The Markdown and LaTeX reports: provenance, verdict, and the tables in the paper's layout.

Every table puts our number and the paper's in separate columns, each headed by its own metric
("ours: FD-ref-500 (mini)", "paper: FID-50K"): the two are never in one column, and ours is never
called FID unless it is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jitlab.report.collect import NOT_RUN, Collected, primary_frame
from jitlab.report.layout import View, axis_title, axis_values, panel_keys, panel_title, value_text
from jitlab.report.provenance import Provenance, clock, data_description


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
    """One cell of a results table."""

    cell: str | None
    status: str
    value: float
    metric: str | None
    paper: float
    stale: bool = False

    def ours(self, mixed: bool) -> str:
        if self.cell is None:
            return "-"
        if self.status != "done" or not math.isfinite(self.value):
            return self.status if self.status != "done" else "no value"
        text = fmt(self.value)
        if mixed and self.metric:
            text += f" ({self.metric})"
        return text + (" (stale)" if self.stale else "")


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


def panels(collected: Collected, view: View) -> list[Panel]:
    spec, scale = collected.spec, collected.scale
    primary = primary_frame(collected.frame)
    by_cell = {row["cell"]: row for _, row in primary.iterrows()}
    rows = axis_values(spec, view.rows, scale)
    cols: list[str | None] = axis_values(spec, view.cols, scale) if view.cols else [None]
    out = []
    for key in panel_keys(spec, view, scale):
        entries: dict[tuple[str, str | None], Entry] = {}
        data = []
        for cell in collected.cells:
            labels = cell.labels
            if any(labels[a] != v for a, v in zip(view.panels, key)):
                continue
            row = by_cell[cell.id]
            metric = row["metric"] if isinstance(row["metric"], str) else None
            entries[(labels[view.rows], labels[view.cols] if view.cols else None)] = Entry(
                cell.id, str(row["status"]), float(row["value"]), metric, float(row["paper_value"]), bool(row["stale"]))
            description = data_description(cell.config)
            if description not in data:
                data.append(description)
        out.append(Panel(key, panel_title(spec, view, key), rows, cols, entries, data))
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


def _col_text(spec, view: View, col: str | None) -> str:
    return "" if col is None else value_text(spec, view.cols, col)


# -- Markdown ---------------------------------------------------------------------------------------

def markdown(collected: Collected, view: View, prov: Provenance, verdict_lines: list[str]) -> str:
    spec = collected.spec
    mixed = len(metric_names(collected)) > 1
    ours, paper = ours_label(collected), paper_label(collected)
    show_paper = has_paper(collected)
    lines = [f"# {spec.title}", ""]
    lines += [(f"Grid `{spec.name}` at the **{prov.scale}** scale: {prov.metric} on "
               f"{'; '.join(d for d, _ in prov.datasets)}. "
               f"Our numbers are in columns headed *{ours}*; the paper's only in columns headed *{paper}*."), ""]
    if spec.claim:
        lines += [f"**The paper's claim:** {' '.join(spec.claim.split())}", ""]

    lines += ["## Provenance", ""]
    lines.append(f"- **scale**: {prov.scale}" + (f". {prov.why}" if prov.why else ""))
    for description, where in prov.datasets:
        lines.append("- **data set**" + ("" if where == "every cell" else f" ({where})") + f": {description}")
    samples = ", ".join(str(s) for s in prov.samples) or "-"
    lines.append(f"- **our metric**: {', '.join(prov.metrics) or 'none yet'}; {samples} generated samples per cell")
    lines += [f"  - {note}" for note in prov.metric_notes]
    lines.append(f"- **the paper's metric**: {prov.paper}")
    lines.append(f"- **evaluation**: {prov.evaluation}")
    lines.append(f"- **training**: {prov.training}")
    if prov.varies:
        lines.append(f"- **what differs between cells**: {', '.join(f'`{k}`' for k in prov.varies)}")
    total = sum(prov.counts.values())
    lines.append("- **cells**: " + ", ".join(f"{n} {status}" for status, n in prov.counts.items())
                 + f" (of {total})")
    lines.append(f"- **commands**: `{prov.commands[0]}` (runs the cells), then `{prov.commands[1]}` (this report)")
    lines.append(f"- **date**: generated {prov.generated}"
                 + (f"; last cell finished {prov.last_finished}" if prov.last_finished else ""))
    lines.append(f"- **compute**: {prov.compute}")
    if prov.seed_spread:
        lines.append(f"- **sampling-seed spread**: {prov.seed_spread}")
    lines += [f"- **note**: {note}" for note in prov.notes]
    lines.append("")

    lines += ["## Verdict (computed from the numbers below)", ""]
    if verdict_lines:
        lines += [f"- {line}" for line in verdict_lines]
    else:
        lines.append("- No automatic verdict for this grid: compare the tables below with the claim.")
    lines.append("")

    lines += ["## Results", ""]
    legend = (f"Each table: {axis_title(view.rows)} down"
              + (f", {axis_title(view.cols)} across" if view.cols else "")
              + f"; *{ours}* (lower is better) beside *{paper}*. "
              + f"failed / diverged / {NOT_RUN}: the cell has no value (see the list of cells).")
    lines += [legend, ""]
    for panel in panels(collected, view):
        heading = panel.title or spec.name
        lines += [f"### {heading}" + (f": {' / '.join(panel.data)}" if panel.data else ""), ""]
        corner = f"{view.rows} \\ {view.cols}" if view.cols else view.rows
        header = [corner]
        for col in panel.cols:
            prefix = f"{_col_text(spec, view, col)}, " if col is not None else ""
            header.append(f"{prefix}{ours}")
            if show_paper:
                header.append(f"{prefix}{paper}")
        lines.append("| " + " | ".join(_md(h) for h in header) + " |")
        lines.append("|" + "---|" + "---:|" * (len(header) - 1))
        for row in panel.rows:
            cells = [value_text(spec, view.rows, row)]
            for col in panel.cols:
                entry = panel.entries.get((row, col))
                cells.append(entry.ours(mixed) if entry else "-")
                if show_paper:
                    cells.append(fmt_paper(entry.paper) if entry else "-")
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")

    lines += ["## Every cell", ""]
    head = ["cell", "status", "metric", "ours", paper, "CFG", "EMA", "step", "train time", "note"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    frame = collected.frame
    for cell in collected.cells:
        rows = frame[frame["cell"] == cell.id]
        for i, (_, row) in enumerate(rows.iterrows()):
            note = []
            if isinstance(row["error"], str) and row["error"]:
                note.append(row["error"].replace("|", "/"))
            if bool(row["stale"]):
                note.append("stale: run with another config")
            if i == 0 and isinstance(row["reused_from"], str) and row["reused_from"]:
                note.append(f"same run as `{row['reused_from']}`")
            metric = row["metric"] if isinstance(row["metric"], str) else "-"
            train = row["train_seconds"]
            lines.append("| " + " | ".join([
                f"`{cell.id}`" if i == 0 else "", str(row["status"]), metric, fmt(row["value"]),
                fmt_paper(row["paper_value"]), _plain(row.get("cfg_scale")), _plain(row.get("ema")),
                _plain(row.get("step")), clock(train) if i == 0 and math.isfinite(train) else "",
                "; ".join(note)]) + " |")
    lines.append("")
    lines.append(f"The same numbers, one row per cell and metric: `{report_stem(collected)}.csv`; "
                 f"the plot: `{report_stem(collected)}.png`.")
    return "\n".join(lines) + "\n"


def report_stem(collected: Collected) -> str:
    return collected.spec.name if collected.scale == "mini" else f"{collected.spec.name}-{collected.scale}"


def _md(text: str) -> str:
    """A Markdown table cell: a '|' in a label would end the cell."""
    return str(text).replace("|", "\\|")


def _plain(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- LaTeX ------------------------------------------------------------------------------------------

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex(collected: Collected, view: View, prov: Provenance) -> str:
    spec = collected.spec
    mixed = len(metric_names(collected)) > 1
    ours, paper = ours_label(collected), paper_label(collected)
    show_paper = has_paper(collected)
    per = 2 if show_paper else 1
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
                   + f"paper: {spec.paper_metric}. Lower is better.")
        out.append(r"\caption{" + tex_escape(caption) + "}")
        out.append(r"\begin{tabular}{l" + "r" * ncols + "}")
        out.append(r"\toprule")
        if view.cols:
            groups = [r"\multicolumn{%d}{c}{%s}" % (per, tex_escape(_col_text(spec, view, c))) for c in panel.cols]
            out.append(tex_escape(axis_title(view.cols)) + " & " + " & ".join(groups) + r" \\")
            out.append(" ".join(r"\cmidrule(lr){%d-%d}" % (2 + i * per, 1 + (i + 1) * per)
                                for i in range(len(panel.cols))))
        sub = [tex_escape(ours)] + ([tex_escape(paper)] if show_paper else [])
        out.append(tex_escape(axis_title(view.rows)) + " & " + " & ".join(sub * len(panel.cols)) + r" \\")
        out.append(r"\midrule")
        for row in panel.rows:
            cells = [tex_escape(value_text(spec, view.rows, row))]
            for col in panel.cols:
                entry = panel.entries.get((row, col))
                text = entry.ours(mixed) if entry else "-"
                cells.append(tex_escape(text) if entry and entry.status == "done" else r"\textit{" + tex_escape(text) + "}")
                if show_paper:
                    cells.append(tex_escape(fmt_paper(entry.paper) if entry else "-"))
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)
