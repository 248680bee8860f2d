"""Shared fixtures: small networks and data modules that train in seconds on CPU."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_fit_config(max_steps: int, **groups) -> dict:
    """A `jitlab fit` config that trains in seconds: 16x16 shapes, patch 4, width 32, one block, batch 8, a
    checkpoint every 5 steps; ``groups`` replace whole top-level groups (``ema=...``, ``samples=...``)."""
    return {
        "seed_everything": 0,
        "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {
            "patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2, "bottleneck_dim": None, "rope": False,
            "qk_norm": False, "in_context_len": 0, "attn_impl": "sdpa"}},
            "optim": {"blr": 4e-3, "warmup_steps": 2}},
        "data": {"class_path": "jitlab.core.data.EmbeddedDataModule",
                 "init_args": {"kind": "shapes", "resolution": 16, "global_batch_size": 8, "num_workers": 0}},
        "samples": {"every_n_steps": 0},
        "checkpoint": {"save_last": True, "every_n_train_steps": 5, "save_top_k": 0},
        "trainer": {"max_steps": max_steps, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "precision": "32-true", "enable_progress_bar": False, "log_every_n_steps": 5,
                    "accelerator": "cpu", "devices": 1},
        **groups,
    }


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``jitlab ARGS`` in this process: its exit code and everything it printed."""
    from jitlab.commands.cli import main

    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def one_thread():
    """Tiny matmuls: one thread is faster than two contending ones on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def tiny_net(img_size: int = 16, num_classes: int = 10, **overrides):
    from jitlab.core.models import JiT

    kwargs = dict(img_size=img_size, patch_size=4, hidden_size=48, depth=2, num_heads=3, bottleneck_dim=16,
                  in_context_len=2, in_context_start=1, num_classes=num_classes, attn_impl="sdpa")
    kwargs.update(overrides)
    return JiT(**kwargs)


@pytest.fixture
def tiny_net_factory():
    return tiny_net


def fit_one_step(module, root):
    """One optimizer step of ``module`` on 64 embedded 16x16 shapes (batch 8); returns the Trainer."""
    import lightning as L

    from jitlab.core.data import EmbeddedDataModule

    data = EmbeddedDataModule(kind="shapes", resolution=16, global_batch_size=8, train_size=64, val_size=8, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root)
    trainer.fit(module, datamodule=data)
    return trainer
