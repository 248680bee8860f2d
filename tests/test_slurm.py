"""Clusters: SLURM submission (sbatch checked first, job ids recorded, no resubmission of a live job, Lightning's
requeue signal), a cell's identity without its data location, the plan's assumptions and job-limit warnings."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from jitlab.commands.cli import main
from jitlab.experiments.grid import runner
from jitlab.experiments.grid.spec import load_spec
from tests.test_grid import tiny_grid

REPO = Path(__file__).resolve().parents[1]


def test_plan_states_its_assumptions_and_names_cells_over_the_job_limit(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["grid", "plan", "table6", "--scale", "paper", "--utilisation", "0.3", "--time", str(72 * 60)]) == 0
    out = capsys.readouterr().out
    assert "Assumed: 989 TFLOP/s peak per GPU at 30% model FLOP utilisation" in out and "data loader" in out
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warned and all("over the 72 h job limit" in line for line in warned)
    assert any("model-G" in line for line in warned) and not any("model-B" in line for line in warned)
    assert main(["grid", "plan", "table6", "--scale", "paper", "--nodes", "2"]) == 0
    assert "warning:" not in capsys.readouterr().out  # 16 GPUs: every cell within 72 h


def test_the_data_location_is_not_part_of_a_cells_identity(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_spec("table2", root=REPO)
    here = spec.cells("paper")[0]
    moved = spec.cells("paper", {"data.init_args.root": "/elsewhere/imagenet", "data.init_args.cache_dir": "/c"})[0]
    assert here.config_hash == moved.config_hash
    other = spec.cells("paper", {"data.init_args.resolution": 512})[0]
    assert other.config_hash != here.config_hash  # what the data are is part of it


def test_slurm_without_sbatch_fails_at_once_naming_it_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    started = time.time()
    code = main(["grid", "run", "table2", "--scale", "paper", "--launcher", "slurm", "--runs", str(tmp_path / "runs"),
                 "--data_root", str(tmp_path / "imagenet")])
    err = capsys.readouterr().err
    assert code == 2 and time.time() - started < 30
    assert err.strip().count("\n") == 0 and "sbatch" in err and "--launcher local" in err
    assert not (tmp_path / "runs").exists() and not list(REPO.glob("slurm*")) and not Path("%j").exists()


FAKE_SBATCH = """#!/bin/sh
echo "$@" >> {log}
echo "Submitted batch job 4242"
"""
FAKE_SQUEUE = """#!/bin/sh
cat {state} 2>/dev/null
"""


def fake_slurm(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """sbatch and squeue stand-ins on PATH: sbatch records its calls, squeue prints what the test wants."""
    bin_dir, log, state = tmp_path / "bin", tmp_path / "sbatch.log", tmp_path / "squeue.out"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH.format(log=log)), ("squeue", FAKE_SQUEUE.format(state=state)),
                       ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log, state


def test_slurm_records_job_ids_and_does_not_resubmit_a_queued_or_running_cell(tmp_path, monkeypatch):
    from jitlab.experiments.grid import slurm

    log, state = fake_slurm(tmp_path, monkeypatch)
    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]
    runs = tmp_path / "runs"
    lines: list[str] = []
    slurm.submit([cell], runs, slurm.SlurmOptions(gpus_per_node=2), dry_run=False, echo=lines.append,
                     entry=main)
    directory = runner.cell_dir(runs, cell)
    assert json.loads((directory / "slurm_job.json").read_text())["job_id"] == "4242"
    assert "submitted job 4242" in lines[-1] and log.read_text().count("\n") == 1
    script = next(directory.rglob("*submission.sh")).read_text()
    assert "#SBATCH --signal=USR1@300" in script and "USR2" not in script  # Lightning's requeue signal
    for running in ("PENDING", "RUNNING"):
        state.write_text(running + "\n")
        slurm.submit([cell], runs, slurm.SlurmOptions(gpus_per_node=2), dry_run=False, echo=lines.append,
                     entry=main)
        assert f"job 4242 is {running}, not submitted again" in lines[-1]
    state.write_text("")  # the job has ended without a result: submitted again
    slurm.submit([cell], runs, slurm.SlurmOptions(gpus_per_node=2), dry_run=False, echo=lines.append,
                     entry=main)
    assert "submitted job 4242" in lines[-1] and log.read_text().count("\n") == 2


def test_slurm_fit_arguments_parse_and_use_lightnings_slurm_environment(tmp_path):
    from jitlab.score.fitconfig import check_fit_config
    from jitlab.experiments.grid import slurm

    tiny_grid(tmp_path, preds=("x",))
    cell = load_spec("tiny", root=tmp_path).cells("mini")[0]
    directory = runner.cell_dir(tmp_path / "runs", cell)
    runner.prepare_cell(cell, directory)
    args = runner.fit_args(directory, slurm.SlurmOptions(nodes=2, gpus_per_node=4).trainer_args())
    assert "--ckpt_path=auto" in args  # a requeued job resumes from the newest checkpoint
    config = check_fit_config([a for a in args[1:] if a != "--ckpt_path=auto"])  # (parsed without the verb)
    assert str(config["trainer"]["devices"]) == "4" and config["trainer"]["num_nodes"] == 2
    plugin = config["trainer"]["plugins"][0]
    assert plugin["class_path"].endswith("SLURMEnvironment")
    assert plugin["init_args"]["auto_requeue"] is True and plugin["init_args"]["requeue_signal"] == signal.SIGUSR1
