"""`jitlab fit` fits the GPUs: the plan applied and recorded, explicit settings kept, a misfit refused first."""

from __future__ import annotations

import pytest
import yaml

from jitlab.score.fitconfig import plan_memory
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


MINI = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--samples.every_n_steps=0",
        "--data.init_args.num_workers=0", "--samples.num_images=2", "--samples.steps=1"]


def test_fit_applies_the_plan_keeps_explicit_settings_and_refuses_what_cannot_fit(tmp_path, capsys):
    # the mini model: ~19 MiB fixed, ~3 MiB per sample (fp32): 0.15 GiB holds 32 of the 64 images, not 64
    code, out = run_cli(["fit", *MINI, "--gpu_memory=0.15", f"--trainer.default_root_dir={tmp_path / 'a'}"], capsys)
    assert code == 0, out[-2000:]
    line = next(line for line in out.splitlines() if line.startswith("jitlab plan:"))
    assert "micro-batch 32 x 2 accumulated" in line and "prediction" in line
    saved = yaml.safe_load(next((tmp_path / "a").rglob("config.yaml")).read_text())
    assert saved["trainer"]["accumulate_grad_batches"] == 2 and saved["gpu_memory"] == 0.15
    assert saved["model"]["net"]["init_args"]["checkpointing"] is False
    code, out = run_cli(["fit", *MINI, "--gpu_memory=0.15", "--trainer.accumulate_grad_batches=4",
                         f"--trainer.default_root_dir={tmp_path / 'b'}"], capsys)
    assert code == 0, out[-2000:]
    saved = yaml.safe_load(next((tmp_path / "b").rglob("config.yaml")).read_text())
    assert saved["trainer"]["accumulate_grad_batches"] == 4  # the user's setting wins
    code, out = run_cli(["fit", *MINI, "--gpu_memory=0.01", f"--trainer.default_root_dir={tmp_path / 'c'}"], capsys)
    assert code != 0 and "JiT-P/4" in out and "MiB are available" in out and "fix:" in out
    assert not list((tmp_path / "c").rglob("*.ckpt"))


def test_no_plan_on_cpu_without_gpu_memory(monkeypatch):
    from jsonargparse import dict_to_namespace

    config = dict_to_namespace({"gpu_memory": None, "trainer": {"accelerator": "cpu", "accumulate_grad_batches": 1}})
    plan_memory(config)
    assert config.trainer.accumulate_grad_batches == 1 and config.gpu_memory is None


def test_skip_preflight_starts_a_predicted_misfit_unchanged():
    from importlib.resources import files

    from jitlab.errors import ConfigError
    from jitlab.train.fitplan import plan_fit

    config = yaml.safe_load(files("jitlab").joinpath("mini.yaml").read_text())
    with pytest.raises(ConfigError, match="short"):
        plan_fit(config, 0.01, 1)
    plan, keys = plan_fit(config, 0.01, 1, refuse=False)
    assert not plan.fits and keys == {}


def test_an_explicit_checkpointing_false_is_kept_by_the_plan():
    # parsed as `jitlab fit` parses (the network's defaults filled in): unset is None, so the plan may choose, and
    # an explicit false is the user's setting; at 0.1 GiB the mini model checkpoints 64 images, or accumulates 16 x 4
    from jitlab.score.fitconfig import check_fit_config
    from jitlab.train.fitplan import plan_fit

    unset = check_fit_config([])
    assert unset["model"]["net"]["init_args"]["checkpointing"] is None
    plan, keys = plan_fit(unset, 0.1, 1)
    assert (plan.micro_batch, plan.checkpointing) == (64, True) and keys["model.net.init_args.checkpointing"] is True
    off = check_fit_config(["--model.net.init_args.checkpointing=false"])
    plan, keys = plan_fit(off, 0.1, 1)
    assert (plan.micro_batch, plan.accumulate, plan.checkpointing) == (16, 4, False) and plan.fits
    assert keys == {"trainer.accumulate_grad_batches": 4}  # the user's false is left as it is


def test_an_explicit_accumulation_of_one_is_kept_by_the_plan():
    # Lightning's default is 1, so `jitlab fit` leaves it null to tell an explicit 1 from unset: at 0.15 GiB the mini
    # model accumulates 32 x 2 when free to, and with accumulation pinned at 1 checkpoints all 64 images instead
    from jitlab.score.fitconfig import check_fit_config
    from jitlab.train.fitplan import plan_fit

    unset = check_fit_config([])
    assert unset["trainer"]["accumulate_grad_batches"] is None
    plan, keys = plan_fit(unset, 0.15, 1)
    assert (plan.micro_batch, plan.accumulate, plan.checkpointing) == (32, 2, False)
    assert keys["trainer.accumulate_grad_batches"] == 2
    one = check_fit_config(["--trainer.accumulate_grad_batches=1"])
    plan, keys = plan_fit(one, 0.15, 1)
    assert (plan.micro_batch, plan.accumulate, plan.checkpointing) == (64, 1, True) and plan.fits
    assert "trainer.accumulate_grad_batches" not in keys and keys["model.net.init_args.checkpointing"] is True
