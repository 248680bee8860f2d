"""Resuming as people type it: `--ckpt_path last|auto` after kill -9 and after Ctrl-C, and what it refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from jitlab.errors import ConfigError
from jitlab.train.resume import config_differences, read_training_checkpoint, resolve_ckpt_path
from tests.conftest import run_cli, tiny_fit_config

STEPS = 150
TINY = tiny_fit_config(STEPS, ema={"decays": [0.9, 0.5]},
                       samples={"every_n_steps": 0, "num_images": 2, "steps": 1})  # a run of seconds
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def fit(config: Path, root: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("jitlab")), "fit", "--config", str(config),
            f"--trainer.default_root_dir={root}", *extra]


def final_state(root: Path) -> dict:
    """Weights, both EMAs and the step of the newest last.ckpt under ``root``."""
    from jitlab.train.ema import ema_state_dicts

    path = max(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": ckpt["global_step"], "weights": ckpt["state_dict"], "emas": ema_state_dicts(ckpt), "path": path}


def assert_same(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
    assert list(a["emas"]) == list(b["emas"]) and len(a["emas"]) == 2
    for decay in a["emas"]:
        for key, value in a["emas"][decay].items():
            assert torch.equal(value, b["emas"][decay][key]), (decay, key)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tiny_config, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(fit(tiny_config, root), capture_output=True, text=True, timeout=900, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_state(root)


def start_and_catch(tiny_config: Path, root: Path, at_least: int) -> subprocess.Popen:
    """Start a run and return once its last.ckpt holds at least ``at_least`` steps (the run still going)."""
    proc = subprocess.Popen(fit(tiny_config, root), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        for path in root.glob("lightning_logs/version_0/checkpoints/last.ckpt"):
            try:
                if torch.load(path, map_location="cpu", weights_only=True)["global_step"] >= at_least:
                    return proc
            except Exception:  # being written at this instant
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the run was not caught mid-run: {proc.stderr.read()[-2000:] if proc.stderr else ''}")


def test_sigkill_then_the_same_command_with_ckpt_path_last_equals_the_uninterrupted_run(
        tiny_config, uninterrupted, tmp_path):
    root = tmp_path / "run"
    proc = start_and_catch(tiny_config, root, at_least=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 20 <= killed_at < STEPS
    again = subprocess.run(fit(tiny_config, root, "--ckpt_path", "last"), capture_output=True, text=True,
                           timeout=900, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"--ckpt_path last: resuming from {root}/lightning_logs/version_0/checkpoints/last.ckpt " \
           f"(step {killed_at})" in again.stderr
    assert_same(final_state(root), uninterrupted)


def test_ctrl_c_saves_a_checkpoint_at_its_step_and_auto_resumes_to_the_same_weights(
        tiny_config, uninterrupted, tmp_path):
    root = tmp_path / "run"
    proc = start_and_catch(tiny_config, root, at_least=10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err and "SIGINT at step" in err
    saved = torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert f"SIGINT at step {saved}: saved" in err and 10 <= saved < STEPS
    again = subprocess.run(fit(tiny_config, root, "--ckpt_path", "auto"), capture_output=True, text=True,
                           timeout=900, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"(step {saved})" in again.stderr
    assert_same(final_state(root), uninterrupted)


def test_sighup_stops_like_sigterm_with_a_checkpoint_at_its_step(tiny_config, tmp_path):
    root = tmp_path / "run"
    proc = start_and_catch(tiny_config, root, at_least=10)
    proc.send_signal(signal.SIGHUP)  # a closed terminal: not a kill without a checkpoint
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGHUP, err[-3000:]
    saved = torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert f"SIGHUP at step {saved}: saved" in err and "Traceback" not in err and 10 <= saved < STEPS


def test_auto_starts_fresh_and_says_so_when_there_is_nothing(tmp_path):
    path, line = resolve_ckpt_path("auto", tmp_path / "root", None)
    assert path is None and "nothing to resume" in line and "starting fresh" in line
    with pytest.raises(ConfigError, match="last: nothing to resume"):
        resolve_ckpt_path("last", tmp_path / "root", None)


def test_the_newest_readable_checkpoint_wins(tmp_path):
    root = tmp_path / "root"
    source = {"state_dict": {"net.w": torch.ones(2)}, "hyper_parameters": {}, "optimizer_states": [], "loops": {}}
    older = root / "lightning_logs/version_0/checkpoints/last.ckpt"
    newer = root / "lightning_logs/version_1/checkpoints/last.ckpt"
    cut = root / "lightning_logs/version_2/checkpoints/last.ckpt"
    for path, step in ((older, 7), (newer, 9)):
        path.parent.mkdir(parents=True)
        torch.save({**source, "global_step": step}, path)
        time.sleep(0.05)
    cut.parent.mkdir(parents=True)
    cut.write_bytes(newer.read_bytes()[:100])  # killed while being written
    chosen, line = resolve_ckpt_path("last", root, None)
    assert chosen == str(newer) and "(step 9)" in line and f"passed over unreadable {cut}" in line
    # a configured checkpoint directory is the only place looked at (besides SLURM's hpc checkpoints)
    dirpath = tmp_path / "ckpts"
    dirpath.mkdir()
    assert resolve_ckpt_path("auto", root, dirpath)[0] is None
    torch.save({**source, "global_step": 11}, root / "hpc_ckpt_1.ckpt")
    assert resolve_ckpt_path("last", root, dirpath)[0] == str(root / "hpc_ckpt_1.ckpt")


def resolved(config: Path, *args: str) -> dict:
    """The config `jitlab fit` checks a resume against: parsed, the sizes the data decide filled in."""
    from jitlab.score.fitconfig import check_fit_config

    parsed = check_fit_config(["--config", str(config), *args])
    net = parsed["model"]["net"]["init_args"]
    for key, value in {"img_size": 16, "num_classes": 10, "in_channels": 3}.items():
        net[key] = value if net.get(key) is None else net[key]
    return parsed


def test_a_changed_network_or_flow_is_refused_other_changes_warned(uninterrupted, tiny_config):
    ckpt = read_training_checkpoint(uninterrupted["path"])
    ckpt["datamodule_hyper_parameters"]["root"] = "/old/place"  # where the data lived is not compared
    assert config_differences(ckpt, resolved(tiny_config)) == ([], [])
    refused, warned = config_differences(ckpt, resolved(tiny_config, "--model.net.init_args.hidden_size=48",
                                                        "--model.flow.mu=-1.2", "--model.optim.blr=1e-3"))
    assert refused == ["model.net.init_args.hidden_size: checkpoint 32, now 48",
                       "model.flow.mu: checkpoint -0.8, now -1.2"]
    assert warned == ["model.optim.blr: checkpoint 0.004, now 0.001"]
    refused, warned = config_differences(ckpt, resolved(tiny_config, "--model.net.init_args.bottleneck_dim=8",
                                                        "--data.init_args.global_batch_size=16"))
    assert refused == ["model.net.init_args.bottleneck_dim: checkpoint None, now 8"]
    assert warned == ["data.init_args.global_batch_size: checkpoint 8, now 16"]


def test_a_resume_with_another_network_is_one_error_line_naming_the_difference(uninterrupted, tiny_config, tmp_path,
                                                                                capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    code, out = run_cli(["fit", "--config", str(tiny_config), f"--trainer.default_root_dir={root}",
                         "--ckpt_path", str(uninterrupted["path"]), "--model.net.init_args.hidden_size=48"], capsys)
    assert code == 2
    error = [line for line in out.splitlines() if line.startswith("jitlab: error:")]
    assert len(error) == 1 and "model.net.init_args.hidden_size: checkpoint 32, now 48" in error[0], out[-2000:]
    assert not root.exists()


def test_auto_names_an_unreadable_last_ckpt_it_passes_over(tmp_path):
    dirpath = tmp_path / "checkpoints"
    dirpath.mkdir()
    path, line = resolve_ckpt_path("auto", tmp_path, dirpath)
    assert path is None and "passed over" not in line
    (dirpath / "last.ckpt").write_bytes(os.urandom(4096))
    path, line = resolve_ckpt_path("auto", tmp_path, dirpath)
    assert path is None and f"passed over unreadable {dirpath / 'last.ckpt'}" in line and "starting fresh" in line
    with pytest.raises(ConfigError, match=f"passed over unreadable {dirpath / 'last.ckpt'}"):
        resolve_ckpt_path("last", tmp_path, dirpath)
