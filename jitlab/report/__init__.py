"""`jitlab report NAME`: a grid's run directories -> reports/NAME.{csv,md,tex,png} (NAME-paper.* at paper scale).

collect (result.json -> tidy frame), provenance (what produced it), tables (Markdown, LaTeX),
plots (seaborn PNG), verdict (does the paper's claim hold, computed from the numbers).
"""

from jitlab.report.cli import build_report, main
from jitlab.report.verdict import verdict

__all__ = ["build_report", "main", "verdict"]
