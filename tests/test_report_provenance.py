"""The design's history (a grid file's ``history:``, checked at load, printed in the report's provenance) and the
CFG each cell was scored at (in the results table when the grid sweeps CFG). Report numbers are FIXTURES."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from jitlab.errors import ConfigError
from jitlab.experiments.grid.history import parse_history
from jitlab.experiments.grid.spec import list_grids, load_spec
from jitlab.experiments.report import build_report
from tests.test_report import REPRODUCING, spec as table2_spec, write_fixture

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"date": "2026-11-30", "commit": "9708dfe", "what": "moved (b)", "why": "the ratio", "shown": "4.63x"}


def test_a_change_is_typed_and_reads_as_one_sentence():
    (change,) = parse_history([GOOD], "g.yaml: history")
    assert change.date == datetime.date(2026, 11, 30) and change.commit == "9708dfe"
    assert change.text() == "2026-11-30 (9708dfe): moved (b). Why: the ratio. The run before had shown: 4.63x."
    (dated,) = parse_history([{**GOOD, "date": datetime.date(2026, 12, 1), "commit": None}], "g.yaml: history")
    assert dated.text().startswith("2026-12-01: moved (b).")  # YAML's own date; no commit
    assert parse_history(None, "g.yaml: history") == []


@pytest.mark.parametrize("entry, key, says", [
    ({**GOOD, "when": "x"}, "history[0].when", "unknown key; valid: commit, date, shown, what, why"),
    ({k: v for k, v in GOOD.items() if k != "shown"}, "history[0].shown", "is required"),
    ({**GOOD, "date": "30.11.2026"}, "history[0].date", "must be a date YYYY-MM-DD, got '30.11.2026'"),
    ({**GOOD, "why": " "}, "history[0].why", "must be a non-empty string"),
    ({**GOOD, "commit": "HEAD"}, "history[0].commit", "must be a commit id"),
    ("moved (b)", "history[0]", "a change is a mapping"),
])
def test_a_bad_history_entry_fails_at_load_naming_the_file_and_key(tmp_path, entry, key, says):
    path = tmp_path / "table2.yaml"
    text = (ROOT / "experiments/grids/table2.yaml").read_text().split("\nhistory:")[0]
    path.write_text(text + "\nhistory:\n  - " + json.dumps(entry) + "\n")
    with pytest.raises(ConfigError, match=says) as error:
        load_spec(path, root=ROOT)
    assert str(error.value).startswith(f"{path}: {key}")
    path.write_text(text + "\nhistory: {date: 2026-11-30}\n")
    with pytest.raises(ConfigError, match="history: must be a list of changes"):
        load_spec(path, root=ROOT)


def test_every_grid_file_loads_its_history_and_the_changes_issue_27_names_are_recorded():
    history = {grid: load_spec(grid, root=ROOT).history for grid in list_grids(ROOT)}
    text = {grid: " ".join(c.text() for c in changes) for grid, changes in history.items()}
    assert "16x16 with patch 4" in text["table2"] and "8x8 with patch 2" in text["table2"] and "4.63x" in text["table2"]
    assert "1.5x" in text["table5"] and "1.32x" in text["table5"]
    for grid in ("table2", "table3", "fig4", "table4", "table5", "table6"):  # the exact final step of a3af202
        assert any(c.commit == "a3af202" and "final_step x" in c.what for c in history[grid]), grid
    assert "x-prediction cells only" in text["table2"] and "x-prediction cells only" in text["table3"]
    for changes in history.values():
        assert [c.date for c in changes] == sorted(c.date for c in changes)  # oldest first


def test_the_report_prints_the_history_in_its_provenance_and_a_grid_without_one_prints_none(tmp_path):
    runs = write_fixture(tmp_path / "runs", REPRODUCING)
    md = build_report(table2_spec(), "mini", runs, tmp_path / "reports", png=False)["md"].read_text()
    provenance = md.split("## Provenance")[1].split("\n## ")[0]
    assert ("- **design history** (changes to this grid made after a run, from its grid file's `history:`):"
            in provenance)
    assert "  - 2026-11-30 (9708dfe): Mini (b) moved from 16x16 with patch 4" in provenance
    assert "The run before had shown: make table2 (committed in a911682): (b)'s nine cells spread 4.63x" in provenance
    bare = table2_spec()
    bare.history = []
    md = build_report(bare, "mini", runs, tmp_path / "bare", png=False)["md"].read_text()
    assert "design history" not in md


def test_the_table_states_each_cells_cfg_when_the_grid_sweeps_cfg(tmp_path):
    grid = table2_spec()
    mini = grid.scales["mini"]
    grid.scales = {**grid.scales, "mini": {**mini, "eval": {**mini["eval"], "cfg": [1.0, 1.5, 2.0]}}}
    runs = write_fixture(tmp_path / "runs", REPRODUCING, seeds=2)
    best = {"setting-a_loss-v_pred-x": 1.5, "setting-a_loss-v_pred-x_seed-1": 3.0}  # one cell's two trainings
    for cell in grid.cells("mini", train_seeds=2):  # the runs as the sweeping grid made them (else: stale)
        path = runs / "table2" / "mini" / cell.id / "result.json"
        result = json.loads(path.read_text())
        result.update(config_hash=cell.config_hash, eval=cell.eval)
        result["rows"][0]["cfg_scale"] = best.get(cell.id, 2.0)
        path.write_text(json.dumps(result))
    md = build_report(grid, "mini", runs, tmp_path / "reports", png=False)["md"].read_text()
    section = md.split("### (a)")[1].split("\n### ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| v-loss"))
    assert "| 38 ± 0.54 (n=2) @ CFG 1.5/3 |" in row and "| 290 ± 4.1 (n=2) @ CFG 2 |" in row
    assert "@ CFG: the guidance scale of the cell's best point (per training)." in md
    # one CFG point: the table is as before (the provenance names the CFG)
    md = build_report(table2_spec(), "mini", runs, tmp_path / "one", png=False)["md"].read_text()
    assert "@ CFG" not in md and "reported: each cell's best point (lowest Frechet distance), CFG 1.5, 2, 3" in md
