"""The `jitlab` command: info, configs under experiments/, invalid values, the default run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (REPO / "experiments").glob("*.yaml"))

# a cheap single step for any config: small images, batch 2, fp32, no compile, no validation
ONE_STEP = [
    "--data.init_args.resolution=32", "--data.init_args.global_batch_size=2", "--data.init_args.num_workers=0",
    "--trainer.max_steps=1", "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
    "--trainer.precision=32-true", "--model.compile=false", "--trainer.enable_progress_bar=false",
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--samples.num_images=2", "--samples.steps=1",
]


@pytest.mark.parametrize("name,img,params,gmacs", [
    ("JiT-B/16", 256, 131.3e6, 25.2), ("JiT-B/32", 512, 133.4e6, 25.8), ("JiT-L/16", 256, 459.1e6, 87.9),
    ("JiT-H/16", 256, 952.8e6, 182.0), ("JiT-G/16", 256, 2007.6e6, 383.7),
])
def test_info_json_matches_the_release(name, img, params, gmacs, capsys):
    code, out = run_cli(["info", "--model", name, "--img_size", str(img), "--json"], capsys)
    assert code == 0
    row = json.loads(out.strip().splitlines()[-1])
    assert isinstance(row["params"], int) and abs(row["params"] / params - 1) < 0.01
    assert abs(row["gmacs"] / gmacs - 1) < 0.01


def test_info_table_and_bad_size(capsys):
    code, out = run_cli(["info", "--model", "JiT-B/16", "--img_size", "256"], capsys)
    assert code == 0 and "131.3M" in out and "GMACs" in out
    code, out = run_cli(["info", "--model", "JiT-B/16", "--img_size", "100"], capsys)
    assert code == 2 and "patch_size" in out and "100" in out


@pytest.mark.parametrize("args,flag", [
    (["grid", "run", "table2", "--dry-run"], "--dry-run"),
    (["info", "--model", "JiT-B/16", "--img-size", "32"], "--img-size"),
])
def test_one_flag_spelling_the_dashed_one_is_refused(args, flag, capsys):
    code, output = run_cli(args, capsys)
    assert code == 2 and "unrecognized arguments" in output and flag in output


def test_every_verb_s_usage_error_is_one_line_naming_its_help(capsys):
    """One parser class for every argparse verb: no usage block, the one `jitlab: error:` line a ConfigError has."""
    from jitlab.commands.cli import VERBS

    for verb in VERBS:
        code, output = run_cli([verb, "--no-such-flag"], capsys)
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1, (verb, output)
        named = "--no-such-flag" in lines[0] or "arguments are required" in lines[0]  # argparse's first complaint
        assert lines[0].startswith("jitlab: error: ") and named, (verb, output)
        assert lines[0].endswith(f"(see `jitlab {verb} --help`)"), (verb, output)


def test_the_dispatcher_hands_itself_to_the_grid_verb(monkeypatch):
    from jitlab.commands import cli
    from jitlab.commands import grid

    seen = {}
    monkeypatch.setattr(grid, "main", lambda argv, entry=None: seen.update(argv=argv, entry=entry) or 0)
    assert cli.main(["grid", "list"]) == 0 and seen == {"argv": ["list"], "entry": cli.main}


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_experiment_yaml_parses_and_runs_one_step(config, tmp_path, capsys):
    code, out = run_cli(["fit", "--config", str(config), "--print_config"], capsys)
    assert code == 0, out
    printed = yaml.safe_load(out[out.index("seed_everything"):])
    assert printed["model"]["net"]["class_path"]
    extra, one_step = [], ONE_STEP
    if printed["data"]["class_path"].endswith("SpiralDataModule"):  # the toy's points have no resolution
        one_step = [a for a in ONE_STEP if not a.startswith("--data.init_args.resolution")]
        extra = ["--data.init_args.num_points=64"]
    if printed["data"]["class_path"].endswith("ImageNetDataModule"):  # a small generated tree stands in
        from jitlab.core.data.synth_imagenet import write_tree

        write_tree(tmp_path / "imagenet", classes=3, train_per_class=4, val_per_class=1)
        extra = [f"--data.init_args.root={tmp_path / 'imagenet'}"]
    code, out = run_cli(["fit", "--config", str(config), *one_step, *extra,
                         f"--trainer.default_root_dir={tmp_path}"], capsys)
    assert code == 0, out
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"


def test_mini_yaml_equals_the_builtin_default(capsys):
    code, default = run_cli(["fit", "--print_config"], capsys)
    assert code == 0
    code, mini = run_cli(["fit", "--config", str(REPO / "experiments" / "mini.yaml"), "--print_config"], capsys)
    assert code == 0

    def strip(text: str) -> dict:
        return yaml.safe_load(text[text.index("seed_everything"):])

    assert strip(default) == strip(mini)


@pytest.mark.parametrize("args,field,hint", [
    (["--model.flow.pred=xx"], "pred", "eps"),
    (["--model.flow.loss=velocity"], "loss", "eps"),
    (["--model.net.init_args.patch_size=5"], "patch_size", "divide"),
    (["--model.net.init_args.hidden_size=100"], "hidden_size", "num_heads"),
    (["--model.net.init_args.in_context_start=9"], "in_context_start", "depth"),
    (["--model.flow.sigma=-0.5"], "sigma", "> 0"),
    (["--model.net.init_args.img_size=64"], "img_size", "data"),
    (["--data.init_args.kind=mnist"], "kind", "shapes"),
    (["--model.optim.schedule=linear"], "schedule", "cosine"),
])
def test_invalid_values_fail_naming_the_field(args, field, hint, tmp_path, capsys):
    code, out = run_cli(["fit", *args, "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}"], capsys)
    assert code != 0
    assert field in out and hint in out, out[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_console_script_fit_writes_checkpoint_logs_and_grids(tmp_path):
    """The acceptance command, as a user types it (a subprocess of the installed console script)."""
    exe = Path(sys.executable).with_name("jitlab")
    result = subprocess.run([str(exe), "fit", "--trainer.max_steps=30", f"--trainer.default_root_dir={tmp_path}",
                             "--trainer.enable_progress_bar=false", "--samples.steps=5"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.rglob("*.ckpt"))
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    run = next(tmp_path.rglob("samples.png")).parent
    assert (run / "data.png").exists() and (run / "config.yaml").exists()


def test_ddp_on_two_cpu_processes_trains_and_checkpoints(tmp_path):
    """Lightning DDP (gloo) with 2 processes: the global batch of 64 splits into 2 x 32."""
    exe = Path(sys.executable).with_name("jitlab")
    result = subprocess.run([str(exe), "fit", "--trainer.devices=2", "--trainer.strategy=ddp",
                             "--trainer.accelerator=cpu", "--trainer.max_steps=3", "--samples.steps=2",
                             f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 64" in result.stderr + result.stdout
    import torch

    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3


def test_micro_batch_is_global_batch_over_processes_and_accumulation():
    from types import SimpleNamespace

    from jitlab.core.data import EmbeddedDataModule
    from jitlab.errors import ConfigError

    dm = EmbeddedDataModule(global_batch_size=1024)
    dm.trainer = SimpleNamespace(world_size=8, accumulate_grad_batches=1, global_rank=0)
    assert dm.micro_batch_size() == 128
    dm.trainer = SimpleNamespace(world_size=16, accumulate_grad_batches=2, global_rank=0)
    assert dm.micro_batch_size() == 32
    dm.trainer = SimpleNamespace(world_size=3, accumulate_grad_batches=1, global_rank=0)
    with pytest.raises(ConfigError, match="multiple of 3"):
        dm.micro_batch_size()
