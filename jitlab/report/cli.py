"""`jitlab report`: turn a grid's run directories into a CSV, a Markdown and a LaTeX table, and a figure.

    jitlab report table2                     # runs/grids/table2/mini/* -> reports/table2.{csv,md,tex,png}
    jitlab report table2 --scale paper       # runs/grids/table2/paper/* -> reports/table2-paper.*
    jitlab report table2 --runs /scratch/runs --out /tmp/reports

Every training seed of a cell (``CELL``, ``CELL_seed-K``) is read: the CSV has one row per cell, metric
and training seed, the tables the mean ± sd over the trainings, and the verdict follows the grid
file's ``rules:``. Cells without a result yet are listed as "not run"; failed and diverged cells are
kept with their status. Every file is written atomically (a reader never sees half a report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jitlab.atomic import atomic_path, write_text
from jitlab.errors import ConfigError
from jitlab.grid.spec import SCALES, GridSpec, load_spec

DEFAULT_RUNS = Path("runs/grids")
DEFAULT_OUT = Path("reports")


class ReportError(Exception):
    """Nothing to report (no result yet); the message names what was searched."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jitlab report", description=__doc__.splitlines()[0])
    p.add_argument("name", help="a grid name (experiments/grids/NAME.yaml) or a path to a grid file")
    p.add_argument("--scale", choices=SCALES, default="mini", help="which runs to report (default mini)")
    p.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"run directories (default {DEFAULT_RUNS})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the report files go (default {DEFAULT_OUT})")
    return p


def build_report(spec: GridSpec, scale: str, runs: Path, out: Path, png: bool = True) -> dict[str, Path]:
    """Write OUT/STEM.{csv,md,tex,png}; returns the paths. Raises ReportError when no cell has a result."""
    # imported here for start-up time: pandas (and matplotlib, below) take seconds, `jitlab report -h` none
    from jitlab.report.collect import collect, sampling_seeds
    from jitlab.report.layout import report_stem, view_of
    from jitlab.report.markdown import markdown
    from jitlab.report.provenance import provenance
    from jitlab.report.rules import parse_rules
    from jitlab.report.tables import latex
    from jitlab.report.verdict import verdict

    parse_rules(spec)  # a malformed rule fails before anything is read
    collected = collect(spec, scale, runs)
    if collected.n_results == 0:
        raise ReportError(f"no cell of grid {spec.name!r} at scale {scale!r} has a result yet: searched "
                          f"{collected.directory} for CELL/result.json ({len(collected.plain_cells)} cells); "
                          f"run `jitlab grid run {spec.name} --scale {scale}` first, or pass --runs DIR")
    view = view_of(spec)
    name = report_stem(spec, scale)
    prov = provenance(collected)
    sampling, source = sampling_seeds(collected, Path(out), name)
    paths = {kind: Path(out) / f"{name}.{kind}" for kind in ("csv", "md", "tex", "png")}
    # everything is made in memory first, so a failure leaves the previous report whole
    texts = {"csv": collected.frame.to_csv(index=False, float_format="%.6g"),
             "md": markdown(collected, view, prov, verdict(spec, collected.frame, sampling, source)),
             "tex": latex(collected, view, prov)}
    if png:
        from jitlab.report.plots import render_png

        image = render_png(collected, view)
    else:
        paths.pop("png")
    for kind, text in texts.items():
        write_text(paths[kind], text)
    if png:
        with atomic_path(paths["png"], suffix=".png") as tmp:
            tmp.write_bytes(image)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.name)
        paths = build_report(spec, args.scale, args.runs, args.out)
    except (ConfigError, ReportError) as error:
        print(f"jitlab report: error: {error}", file=sys.stderr)
        return 2
    print(f"jitlab report: wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
