"""The memory plan: its order (accumulate, checkpoint, shard), explicit settings, refusals; grid plan and fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jitlab.errors import ConfigError
from jitlab.train.fitplan import GiB, Choices, choose, fixed_bytes_per_param, micro_batches, plan_config
from jitlab.experiments.grid.spec import load_config
from jitlab.core.models.memory import ActivationCount
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
# per sample: eager 1 GiB, compiled 0.5, checkpointed 0.1 / 0.08; 1e8 parameters (ddp: 26 B each = 2.4 GiB)
COUNT = ActivationCount(eager=1.0 * GiB, compiled=0.5 * GiB, checkpointed=0.1 * GiB,
                        checkpointed_compiled=0.08 * GiB, attention=0.0, block_params=10 ** 6, params=10 ** 8,
                        method="made up for the test")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def plan(gib: float, choices: Choices = Choices(), global_batch: int = 1024):
    return choose(COUNT, "JiT-X", gib * GiB, 8, global_batch, compiled=True, choices=choices)


def test_fixed_bytes_per_param_by_strategy():
    assert sum(fixed_bytes_per_param("ddp").values()) == 26  # 4 + 4 + 0 (bucket view) + 8 + 8 + 2
    assert sum(fixed_bytes_per_param("ddp", bucket_view=False).values()) == 30  # Lightning's plain ddp
    assert sum(fixed_bytes_per_param("ddp", bf16=False).values()) == 24
    assert sum(fixed_bytes_per_param("fsdp2", world=8).values()) == 3  # 24 bytes sharded over 8


def test_the_plan_accumulates_then_checkpoints_then_shards():
    roomy = plan(80)  # 2.4 + 128 x 0.5 GiB
    assert (roomy.micro_batch, roomy.accumulate, roomy.checkpointing, roomy.strategy) == (128, 1, False, "ddp")
    assert roomy.fits and roomy.peak_bytes == pytest.approx(2.6e9 + 128 * 0.5 * GiB)
    half = plan(40)
    assert (half.micro_batch, half.accumulate, half.checkpointing, half.strategy) == (64, 2, False, "ddp")
    tight = plan(16)  # 32 x 0.5 GiB does not fit: checkpointing before a micro-batch below 32
    assert (tight.micro_batch, tight.checkpointing, tight.strategy, tight.flops_factor) == (128, True, "ddp", 4 / 3)
    small = plan(3)  # the replicated 2.4 GiB leaves too little: sharded
    assert (small.micro_batch, small.accumulate, small.checkpointing, small.strategy) == (32, 4, True, "fsdp2")
    tiny = plan(0.5)  # nothing fits at 32: below it, in the same order
    assert tiny.fits and tiny.micro_batch < 32 and tiny.strategy == "fsdp2"
    assert all(p.global_batch == p.micro_batch * p.accumulate * 8 for p in (roomy, half, tight, small, tiny))
    one_gpu = choose(COUNT, "JiT-X", 3 * GiB, 1, 128, compiled=True)  # nothing to shard over: never fsdp2
    assert (one_gpu.strategy, one_gpu.micro_batch, one_gpu.accumulate) == ("ddp", 1, 128)


def test_explicit_settings_win_and_a_config_that_cannot_fit_is_refused():
    kept = plan(80, Choices(accumulate=4))
    assert (kept.micro_batch, kept.accumulate) == (32, 4)
    assert plan(80, Choices(strategy="fsdp2")).strategy == "fsdp2"
    assert plan(80, Choices(checkpointing=True)).checkpointing
    assert plan(80, Choices(strategy="ddp", checkpointing=False, accumulate=1)).fits  # 2.4 + 128 x 0.5 GiB
    refused = plan(40, Choices(accumulate=1, checkpointing=False, strategy="ddp"))
    assert not refused.fits
    line = refused.refusal()
    assert "JiT-X" in line and "66.4 GiB" in line and "40.0 GiB are available" in line and "short" in line
    assert "leave trainer.accumulate_grad_batches" in line and "\n" not in line
    assert not plan(0.01).fits and "leave" not in plan(0.01).refusal()
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        plan(80, Choices(accumulate=3))


def test_micro_batches_are_the_per_gpu_batch_and_its_powers_of_two():
    assert micro_batches(128) == [128, 64, 32, 16, 8, 4, 2, 1]
    assert micro_batches(96) == [96, 32, 16, 8, 4, 2, 1]
    assert plan(80, global_batch=768).micro_batch == 96


def grid_plan(capsys, *args: str) -> list[dict]:
    code, out = run_cli(["grid", "plan", "table7", "--scale", "paper", "--json", *args], capsys)
    assert code == 0, out
    return {row["cell"]: row for row in json.loads(out)}


def test_grid_plan_fits_table7_in_80_gib_and_accumulates_b16_in_24(capsys, monkeypatch):
    """Eager counts (model.compile=false; compiled ones are smaller) keep the test in seconds."""
    monkeypatch.chdir(REPO)
    rows = grid_plan(capsys, "--gpu_memory", "80", "--set", "model.compile=false")
    assert sorted(rows) == ["model-B", "model-G", "model-H", "model-L"]
    for row in rows.values():
        assert row["fits"] and row["peak_bytes_per_gpu"] <= 80 * GiB, row
        assert {"micro_batch", "accumulate", "checkpointing", "strategy"} <= set(row)
        assert row["micro_batch"] * row["accumulate"] * 8 == 1024
    g = rows["model-G"]
    assert g["checkpointing"] or g["strategy"] == "fsdp2"
    assert g["plan_model"].startswith("JiT-G/16")
    b24 = grid_plan(capsys, "--gpu_memory", "24", "--set", "model.compile=false", "--only", "model-B")["model-B"]
    assert b24["accumulate"] > 1 or "refusal" in b24
    code, out = run_cli(["grid", "plan", "table7", "--scale", "paper", "--gpu_memory", "1", "--set",
                         "model.compile=false", "--only", "model-G"], capsys)
    refused = [line for line in out.splitlines() if line.startswith("refused: cell model-G")]
    assert code == 0 and len(refused) == 1 and "short" in refused[0] and "JiT-G/16" in refused[0]


def test_every_paper_recipe_fits_8_gpus_of_80_gib():
    for path in sorted((REPO / "experiments" / "recipes").glob("jit-*.yaml")):
        config = load_config(path)
        config["model"]["compile"] = False  # eager counts: an upper bound of the compiled ones
        found = plan_config(config, 80, 8)
        assert found.fits, (path.name, found.line())
