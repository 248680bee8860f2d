"""`jitlab report NAME`: a grid's run directories -> reports/NAME.{csv,md,tex,png} (NAME-paper.* at paper scale).

collect (result.json of every cell and training seed -> tidy frame), evidence (a cell's mean, sd and
trainings; the margin a difference must exceed), rules (the grid file's declared ``rules:``), kinds (the
rule kinds), verdict (the rules judged, one line each), provenance (what produced it), tables (the paper's
layout; LaTeX), markdown, plots (seaborn PNG). Reading goes one way: grid/ writes run directories and
never imports report/.
"""

from jitlab.experiments.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
