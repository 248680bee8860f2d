"""experiments/docs/extending.md stays true: its grid loads as written and every file it names exists."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from jitlab.experiments.grid.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "experiments" / "docs" / "extending.md"
NEW = {"experiments/grids/t_eps.yaml", "jitlab/core/models/pixel_mlp.py"}  # the files the walk-throughs create


def named_paths(text: str) -> set[str]:
    """Every repository path in backquotes (``reports/t_eps.{csv,...}``-style outputs left out)."""
    found = re.findall(r"`((?:jitlab|experiments|tests|reports)/[\w./-]+)`", text)
    return {p.rstrip(".") for p in found if "{" not in p}


def test_every_file_the_walkthroughs_name_exists():
    named = named_paths(GUIDE.read_text())
    assert len(named) >= 10, named  # the guide names its files (the regex reads them)
    missing = sorted(p for p in named - NEW if not (ROOT / p).exists())
    assert not missing, f"extending.md names files that do not exist: {missing}"


def test_a_missing_file_would_be_found():
    assert named_paths("edit `jitlab/core/nothing_here.py` and `tests/test_x.py`.") == {
        "jitlab/core/nothing_here.py", "tests/test_x.py"}


def test_the_grid_of_the_walkthrough_loads_with_its_cells_and_rule(tmp_path):
    block = re.search(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S).group(1)
    grids = tmp_path / "experiments" / "grids"
    grids.mkdir(parents=True)
    (grids / "t_eps.yaml").write_text(textwrap.dedent(block))
    (tmp_path / "experiments" / "scales").symlink_to(ROOT / "experiments" / "scales")
    spec = load_spec("t_eps", root=tmp_path)
    cells = spec.cells("mini")
    assert len(cells) == 3 * 2 * 2  # t_eps x pred x 2 training seeds
    assert {c.config["model"]["flow"]["t_eps"] for c in cells} == {0.01, 0.05, 0.2}
    assert [r["kind"] if isinstance(r, dict) else r.kind for r in spec.rules] == ["within_factor"]
