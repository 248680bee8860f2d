"""`jitlab report NAME`: a grid's run directories -> reports/NAME.{csv,md,tex,png} (NAME-paper.* at paper scale).

collect -> evidence, rules, kinds, verdict, provenance -> tables, markdown, plots, extras. Reading goes one way:
grid/ writes run directories and never imports report/.
"""

from jitlab.experiments.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
