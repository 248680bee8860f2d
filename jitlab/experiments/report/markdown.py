"""The Markdown report: provenance, verdict, the tables in the paper's layout, every training seed, every run.

With several training seeds a table cell shows the mean ± sd over the cell's trainings and their number; every
training's value is in the table of training seeds, and every run directory in the list of runs.
"""

from __future__ import annotations

import math

from jitlab.experiments.report.collect import NOT_RUN, Collected
from jitlab.experiments.report.evidence import fmt_sd
from jitlab.experiments.report.layout import View, axis_title, report_stem, value_text
from jitlab.experiments.report.provenance import Provenance
from jitlab.experiments.report.tables import (best_cfgs, fmt, fmt_paper, has_paper, metric_names, ours_label,
                                              ours_text, panels, paper_label, stats_of)
from jitlab.experiments.report.verdict import level_note
from jitlab.experiments.rundir import clock


def markdown(collected: Collected, view: View, prov: Provenance, verdict_lines: list[str],
             figures: list[str] | None = None) -> str:
    """``figures``: the "## Figures" section of a grid with extra figures (``extras``), after the seeds."""
    spec = collected.spec
    ours, paper = ours_label(collected), paper_label(collected)
    intro = (f"Grid `{spec.name}` at the **{prov.scale}** scale: {prov.metric} on "
             f"{'; '.join(d for d, _ in prov.datasets)}. "
             f"Our numbers are in columns headed *{ours}*; the paper's only in columns headed *{paper}*.")
    lines = [f"# {spec.title}", "", intro, ""]
    if spec.claim:
        lines += [f"**The paper's claim:** {' '.join(spec.claim.split())}", ""]
    lines += provenance_lines(collected, prov)
    lines += ["## Verdict (computed from the numbers below)", ""]
    if verdict_lines:
        measured = any(stat.n >= 2 for stat in stats_of(collected))  # a spread to test against, or declared margins
        lines += [level_note(len(verdict_lines) - 1, measured), ""]
        lines += [f"- {line}" for line in verdict_lines]
    else:
        lines.append("- No automatic verdict for this grid: compare the tables below with the claim.")
    lines.append("")
    lines += results_lines(collected, view)
    if collected.train_seeds > 1:
        lines += seed_lines(collected)
    lines += figures or []
    lines += run_lines(collected)
    stem = report_stem(spec, collected.scale)
    lines.append(f"The same numbers, one row per cell, metric and training seed: `{stem}.csv`; the plot: `{stem}.png`.")
    return "\n".join(lines) + "\n"


def provenance_lines(collected: Collected, prov: Provenance) -> list[str]:
    total, cells = sum(prov.counts.values()), len(collected.plain_cells)
    of = f"of {total}" if total == cells else f"of {total} trainings of {cells} cells"
    lines = ["## Provenance", "", f"- **scale**: {prov.scale}" + (f". {prov.why}" if prov.why else "")]
    lines += [f"- **data set**{'' if where == 'every cell' else f' ({where})'}: {description}"
              for description, where in prov.datasets]
    lines.append(f"- **our metric**: {', '.join(prov.metrics) or 'none yet'}; "
                 f"{', '.join(str(s) for s in prov.samples) or '-'} generated samples per cell")
    lines += [f"  - {note}" for note in prov.metric_notes]
    lines += [f"- **the paper's metric**: {prov.paper}", f"- **evaluation**: {prov.evaluation}",
              f"- **training**: {prov.training}"]
    if prov.varies:
        lines.append(f"- **what differs between cells**: {', '.join(f'`{k}`' for k in prov.varies)}")
    lines += ["- **cells**: " + ", ".join(f"{n} {status}" for status, n in prov.counts.items()) + f" ({of})",
              f"- **commands**: `{prov.commands[0]}` (runs the cells), then `{prov.commands[1]}` (this report)",
              f"- **date**: generated {prov.generated}"
              + (f"; last cell finished {prov.last_finished}" if prov.last_finished else ""),
              f"- **compute**: {prov.compute}"]
    lines += [f"- **note**: {note}" for note in prov.notes]
    if prov.history:  # choices made after seeing a result: the reader weighs the verdict knowing them
        lines.append("- **design history** (changes to this grid made after a run, from its grid file's `history:`):")
        lines += [f"  - {change}" for change in prov.history]
    return lines + [""]


def results_lines(collected: Collected, view: View) -> list[str]:
    spec = collected.spec
    mixed, show_n = len(metric_names(collected)) > 1, collected.train_seeds > 1
    ours, paper = ours_label(collected), paper_label(collected)
    show_paper = has_paper(collected)
    legend = (f"Each table: {axis_title(view.rows)} down"
              + (f", {axis_title(view.cols)} across" if view.cols else "")
              + f"; *{ours}* (lower is better) beside *{paper}*. "
              + ("Ours is the mean ± sd over the cell's training seeds (n = the trainings it rests on). "
                 if show_n else "Ours is one training per cell. ")
              + ("@ CFG: the guidance scale of the cell's best point (per training). " if best_cfgs(collected) else "")
              + f"failed / diverged / {NOT_RUN}: the cell has no value (see the list of runs).")
    lines = ["## Results", "", legend, ""]
    for panel in panels(collected, view):
        lines += [f"### {panel.title or spec.name}" + (f": {' / '.join(panel.data)}" if panel.data else ""), ""]
        header = [f"{view.rows} \\ {view.cols}" if view.cols else view.rows]
        for col in panel.cols:
            prefix = f"{value_text(spec, view.cols, col)}, " if col is not None else ""
            header += [f"{prefix}{ours}"] + ([f"{prefix}{paper}"] if show_paper else [])
        lines.append("| " + " | ".join(_md(h) for h in header) + " |")
        lines.append("|" + "---|" + "---:|" * (len(header) - 1))
        for row in panel.rows:
            cells = [value_text(spec, view.rows, row)]
            for col in panel.cols:
                item = panel.entries.get((row, col))
                cells.append(ours_text(item, mixed, show_n) if item else "-")
                if show_paper:
                    cells.append(fmt_paper(item.paper) if item else "-")
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")
    return lines


def seed_lines(collected: Collected) -> list[str]:
    """Every training seed's value of every cell, beside the cell's mean, sd and sd / mean."""
    seeds = list(range(collected.train_seeds))
    lines = ["## Every training seed", "",
             "Each cell's primary metric under each training seed (`CELL` is seed 0, `CELL_seed-K` seed K); "
             "diverged counts as worse than any number, '-' is a training without a result.", "",
             "| cell | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd | sd / mean |",
             "|---|" + "---:|" * (len(seeds) + 3)]
    for stat in stats_of(collected):
        by_seed = dict(zip(stat.seeds, stat.values))
        values = [_seed_value(by_seed.get(s, math.nan)) for s in seeds]
        relative = stat.sd / stat.mean if math.isfinite(stat.sd) and stat.mean > 0 else math.nan
        lines.append(f"| `{stat.cell}` | " + " | ".join(values) + f" | {_seed_value(stat.mean)} | {fmt_sd(stat.sd)} | "
                     f"{'-' if math.isnan(relative) else f'{relative:.1%}'} |")
    return lines + [""]


def _seed_value(value: float) -> str:
    return "diverged" if value == math.inf else fmt(value)


def run_lines(collected: Collected) -> list[str]:
    """One row per run directory (cell and training seed) and metric."""
    paper = paper_label(collected)
    several = collected.train_seeds > 1
    head = ["cell", *(["seed"] if several else []), "status", "metric", "ours", paper, "CFG", "EMA", "step",
            "train time", "note"]
    lines = ["## Every cell" + (" and training seed" if several else ""), "",
             "| " + " | ".join(head) + " |",
             "|---|" + ("---:|" if several else "") + "---|---|---:|---:|---:|---:|---:|---:|---|"]
    for (cell, seed), rows in collected.frame.groupby(["cell", "train_seed"], sort=False):
        directory = cell if seed == 0 else f"{cell}_seed-{seed}"
        for i, (_, row) in enumerate(rows.iterrows()):
            note = [row["error"].replace("|", "/")] if isinstance(row["error"], str) and row["error"] else []
            note += ["stale: run with another config, or scored short of its last step"] if bool(row["stale"]) else []
            if i == 0 and isinstance(row["reused_from"], str) and row["reused_from"]:
                note.append(f"same run as `{row['reused_from']}`")
            weights = (collected.results.get(directory) or {}).get("weights") or {}
            if i == 0 and weights.get("label"):  # jitlab.experiments.grid.converted: not a training
                note.append(f"{weights['label']} from `{weights.get('path')}`")
            metric = row["metric"] if isinstance(row["metric"], str) else "-"
            train = row["train_seconds"]
            lines.append("| " + " | ".join([
                f"`{directory}`" if i == 0 else "", *([str(seed)] if several else []), str(row["status"]), metric,
                fmt(row["value"]), fmt_paper(row["paper_value"]), _plain(row.get("cfg_scale")),
                _plain(row.get("ema")), _plain(row.get("step")),
                clock(train) if i == 0 and math.isfinite(train) else "", "; ".join(note)]) + " |")
    return lines + [""]


def _md(text: str) -> str:
    """A Markdown table cell: a '|' in a label would end the cell."""
    return str(text).replace("|", "\\|")


def _plain(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
