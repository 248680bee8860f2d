"""Build one report: a grid's run directories -> OUT/STEM.{csv,md,tex,png} and OUT/STEM-NAME.png per figure of the
grid file's ``figures:`` (jitlab.experiments.report.extras), every file written atomically."""

from __future__ import annotations

from pathlib import Path

from jitlab.atomic import atomic_path, write_text
from jitlab.experiments.grid.spec import GridSpec


class ReportError(Exception):
    """Nothing to report (no result yet); the message names what was searched."""


def build_report(spec: GridSpec, scale: str, runs: Path, out: Path, png: bool = True,
                 keep: Path | None = None) -> dict[str, Path]:
    """Write the report; returns the paths (keys csv, md, tex, png, png-NAME, and kept: the directory of the kept
    files). Raises ReportError when no cell has a result. ``keep``: also copy the reported trainings' small files
    there (``jitlab.experiments.report.keep``)."""
    # imported here for start-up time: pandas (and matplotlib, below) take seconds, `jitlab report -h` none
    from jitlab.experiments.report.collect import collect
    from jitlab.experiments.report.extras import figure_data, figure_lines, render_figure
    from jitlab.experiments.report.layout import report_stem, view_of
    from jitlab.experiments.report.markdown import markdown
    from jitlab.experiments.report.provenance import provenance
    from jitlab.experiments.report.rules import parse_rules
    from jitlab.experiments.report.tables import latex
    from jitlab.experiments.report.verdict import verdict

    parse_rules(spec)  # a malformed rule fails before anything is read
    collected = collect(spec, scale, runs)
    if all(result is None for result in collected.results.values()):
        raise ReportError(f"no cell of grid {spec.name!r} at scale {scale!r} has a result yet: searched "
                          f"{collected.directory} for CELL/result.json ({len(collected.plain_cells)} cells); "
                          f"run `jitlab grid run {spec.name} --scale {scale}` first, or pass --runs DIR")
    view, name, out = view_of(spec), report_stem(spec, scale), Path(out)
    prov = provenance(collected)
    extras = {figure.name: figure_data(collected, figure) for figure in spec.figures}  # the grid's `figures:`
    figures = figure_lines(collected, extras, name, png) if extras else None
    # everything is made in memory first, so a failure leaves the previous report whole
    texts = {"csv": collected.frame.to_csv(index=False, float_format="%.6g"),
             "md": markdown(collected, view, prov, verdict(spec, collected.frame), figures),
             "tex": latex(collected, view, prov)}
    images = {}  # "" (the main figure) or "-NAME" (an extra figure) -> PNG bytes
    if png:
        from jitlab.experiments.report.plots import render_png

        images = {"": render_png(collected, view),
                  **{f"-{f.name}": render_figure(collected, f, extras[f.name]) for f in spec.figures}}
    paths = {kind: out / f"{name}.{kind}" for kind in texts} | {f"png{k}": out / f"{name}{k}.png" for k in images}
    for kind, text in texts.items():
        write_text(paths[kind], text)
    for key, data in images.items():
        with atomic_path(paths[f"png{key}"], suffix=".png") as tmp:
            tmp.write_bytes(data)
    if keep is not None:
        from jitlab.experiments.report.keep import keep_results

        if keep_results(collected, keep):
            paths["kept"] = Path(keep) / spec.name / scale
    return paths
