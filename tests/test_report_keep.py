"""`jitlab report --keep DIR`: the trainings' small files kept beside a report regenerate it, and every committed
report that has its files under reports/runs regenerates from them (its numbers come from runs that happened)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jitlab.commands.report import main as report_main
from jitlab.experiments.grid.spec import load_spec
from jitlab.experiments.report import build_report
from tests.test_report_extras import log_scalars, write_results

ROOT = Path(__file__).resolve().parents[1]
KEPT_RUNS = ROOT / "reports" / "runs"
# the lines that name the runs directory a report was read from and when it was written (Markdown, LaTeX)
MADE = ("- **commands**:", "- **date**:", "% made by:")


def comparable(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(MADE))


def dsd_fixture(tmp_path: Path):
    """dsd_latent's first two variants, two trainings each, one failed, every training with its logged effective
    rank and a checkpoint (which is not kept)."""
    grid = load_spec("dsd_latent", root=ROOT)
    grid.axes = tuple(dataclasses.replace(a, scale_values={**a.scale_values, "mini": ("v", "v_sg")})
                      if a.name == "variant" else a for a in grid.axes)
    runs = tmp_path / "runs"
    write_results(runs, grid, lambda cell: 40.0 + cell.train_seed, not_done={"variant-v_sg_seed-1"})
    for cell in grid.cells("mini", train_seeds=2):
        directory = runs / "dsd_latent" / "mini" / cell.id
        log_scalars(directory, "train/latent_erank", [(0, 16.0), (100, 4.0 + cell.train_seed)])
        (directory / "config.yaml").write_text("seed_everything: 0\n")
        (directory / "checkpoints").mkdir()
        (directory / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return grid, runs


def test_kept_files_regenerate_the_report_and_leave_checkpoints_behind(tmp_path):
    grid, runs = dsd_fixture(tmp_path)
    kept = tmp_path / "kept"
    first = build_report(grid, "mini", runs, tmp_path / "a", png=False, keep=kept)
    again = build_report(grid, "mini", kept, tmp_path / "b", png=False)
    assert first["csv"].read_text() == again["csv"].read_text()
    assert comparable(first["tex"].read_text()) == comparable(again["tex"].read_text())
    md, md_again = first["md"].read_text(), again["md"].read_text()
    assert "| v-prediction | 4.5 ± 0.71 (n=2) |" in md  # the log-curve figure read the kept event files too
    assert comparable(md) == comparable(md_again) and md != md_again  # only the runs directory named differs
    assert f"--runs {kept}" in md_again
    assert first["kept"] == kept / "dsd_latent" / "mini" and "kept" not in again  # what the verb names as written
    cell = kept / "dsd_latent" / "mini" / "variant-v_sg_seed-1"  # a failed training is kept: the report shows it
    assert sorted(p.name for p in cell.iterdir()) == ["config.yaml", "lightning_logs", "result.json"]
    assert not list(kept.rglob("*.ckpt")) and len(list(kept.rglob("events.out.*"))) == 4


def test_keeping_twice_brings_the_kept_files_up_to_date_and_the_verb_takes_keep(tmp_path, capsys):
    grid, runs = dsd_fixture(tmp_path)
    kept = tmp_path / "kept"
    build_report(grid, "mini", runs, tmp_path / "a", png=False, keep=kept)
    result = runs / "dsd_latent" / "mini" / "variant-v" / "result.json"
    result.write_text(result.read_text().replace('"value": 40.0', '"value": 45.0'))
    code = report_main(["dsd_latent", "--runs", str(runs), "--out", str(tmp_path / "c"), "--keep", str(kept)])
    assert code == 0, capsys.readouterr().err
    assert '"value": 45.0' in (kept / "dsd_latent" / "mini" / "variant-v" / "result.json").read_text()
    assert not list(kept.rglob(".*.tmp"))  # written through temporary files, none left


def committed_reports() -> list[str]:
    return sorted(p.name for p in KEPT_RUNS.iterdir() if (p / "mini").is_dir()) if KEPT_RUNS.is_dir() else []


def test_reports_runs_holds_kept_files_of_committed_reports():
    names = committed_reports()
    assert names, "reports/runs holds no grid's kept trainings"
    for name in names:
        assert (ROOT / "reports" / f"{name}.md").is_file(), f"reports/runs/{name} has no report beside it"


@pytest.mark.parametrize("name", committed_reports())
def test_a_committed_report_regenerates_from_its_kept_trainings(tmp_path, name):
    paths = build_report(load_spec(name, root=ROOT), "mini", KEPT_RUNS, tmp_path)  # PNGs: the Markdown names them
    assert paths["csv"].read_text() == (ROOT / "reports" / f"{name}.csv").read_text()
    for kind in ("md", "tex"):
        committed = (ROOT / "reports" / f"{name}.{kind}").read_text()
        assert comparable(paths[kind].read_text()) == comparable(committed), f"reports/{name}.{kind}"
