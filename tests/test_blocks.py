"""The blocks at scale (issue 26): per-block activation checkpointing, regional compilation, a training step with
no host synchronisation, sampling with the plain blocks, one device per SLURM task, the lab scale's attention note."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from torch import Tensor, nn

from jitlab.devices import local_device_index
from jitlab.core.flow import FlowConfig
from jitlab.score.generate import process_device
from jitlab.core.models import JiT, WideHead
from jitlab.core.models.cls_head import ClsJiT
from jitlab.core.models.dsd import LatentJiT
from jitlab.core.models.reg import RegJiT
from jitlab.train.module import JiTModule, OptimConfig
from tests.conftest import fit_one_step

ROOT = Path(__file__).resolve().parents[1]
JIT = dict(img_size=16, patch_size=4, hidden_size=48, depth=4, num_heads=3, bottleneck_dim=16, in_context_len=2,
           in_context_start=1, num_classes=10, attn_impl="sdpa", attn_drop=0.2, proj_drop=0.2)  # dropout: blocks 1-2
BACKBONES = {
    "jit": lambda **kw: JiT(**JIT, **kw),
    "cls_head": lambda **kw: ClsJiT(**JIT, cls_weight=0.5, cls_on="all", **kw),
    "wide_head": lambda **kw: WideHead(**JIT, head_width=32, head_depth=1, head_heads=2, **kw),
    "reg": lambda **kw: RegJiT(**JIT, token="thumbnail", token_dim=48, **kw),
    "dsd": lambda **kw: LatentJiT(img_size=16, patch_size=4, latent_dim=8, hidden_size=48, depth=2, num_heads=3,
                                  num_classes=10, attn_impl="sdpa", proj_drop=0.2, **kw),
}
FLOW = FlowConfig(pred="x", loss="v", mu=-0.8, sigma=0.8)


def module_of(name: str, **kwargs) -> JiTModule:
    """A backbone with small non-zero weights everywhere (a fresh JiT's zero adaLN and output would hide the
    blocks from the gradients), the same for every ``kwargs``."""
    torch.manual_seed(0)  # the initialisation
    net = BACKBONES[name](**kwargs)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return JiTModule(net, flow=FLOW)


def batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1, torch.tensor([0, 3, 9, 7])  # (N, C, H, W), (N,)


def loss_grads_saved(module: JiTModule) -> tuple[Tensor, dict[str, Tensor], int]:
    """The training loss (flow + weighted auxiliary), every gradient, and the bytes autograd saved for backward."""
    saved = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    x, y = batch()
    torch.manual_seed(2)  # the dropout masks: the same draws in every run
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        per_sample, _, aux, _ = module.loss_terms(x, y, y, torch.Generator().manual_seed(3))  # (N,), ...
        loss = per_sample.mean() + sum(module.net.loss_weights[k] * v for k, v in aux.items())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(saved)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_checkpointed_blocks_give_the_plain_gradients_and_save_less(name):
    plain_loss, plain_grads, plain_saved = loss_grads_saved(module_of(name))
    module = module_of(name, checkpointing=True)
    assert module.net.init_args["checkpointing"] is True  # a config key: model.net.init_args.checkpointing
    loss, grads, saved = loss_grads_saved(module)
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 20
    for key, g in plain_grads.items():
        assert torch.allclose(grads[key], g, rtol=1e-5, atol=1e-8), key
    assert saved < 0.6 * plain_saved, (saved, plain_saved)  # the blocks keep only their inputs


def test_checkpointing_is_for_training_only():
    plain = module_of("jit").eval()
    switched = module_of("jit", checkpointing=True).eval()
    assert loss_grads_saved(switched)[2] == loss_grads_saved(plain)[2]  # eval mode: the plain forward


def test_compiled_blocks_give_the_eager_loss_and_gradients_with_plain_keys():
    """Regional compilation (``compile``): one compiled view per block, the eager numbers, alone and under
    checkpointing (the checkpointed block compiled as one unit, across the recompilation for block 1's longer
    sequence); the state dict has no ``_orig_mod.``; eval forwards do not run the compiled views."""
    from torch._dynamo.utils import counters

    def mini(compile: bool = False) -> JiTModule:  # the mini grid's block layout, narrowed to compile fast
        torch.manual_seed(0)
        net = JiT(img_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, bottleneck_dim=None, rope=False,
                  qk_norm=False, in_context_len=2, in_context_start=1, attn_impl="sdpa", num_classes=4)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        return JiTModule(net, flow=FLOW, compile=compile)

    def loss_and_grads(module: JiTModule) -> tuple[Tensor, dict]:
        module.net.zero_grad(set_to_none=True)
        x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (N, C, H, W)
        y = torch.arange(8) % 5  # (N,) with the null class 4
        loss = module.loss_per_sample(x, y, torch.Generator().manual_seed(3))[0].mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in module.net.named_parameters() if p.grad is not None}

    loss_e, grads_e = loss_and_grads(mini())
    compiled = mini(compile=True)
    compiled.configure_model()
    assert compiled._forward is compiled.net and len(compiled.net._compiled_blocks) == 2  # per block, not the net
    frames = counters["frames"]["ok"]
    for checkpointing in (False, True):  # block 1 sees 2 more tokens: a recompilation, with and without recompute
        compiled.net.checkpointing = checkpointing
        compiled.net.compile_blocks()  # the checkpointed block is the compiled unit
        loss_c, grads_c = loss_and_grads(compiled)
        assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-7)
        assert grads_c.keys() == grads_e.keys() and len(grads_e) > 20
        for name, g in grads_e.items():
            assert (grads_c[name] - g).abs().max().item() <= 1e-4 * (g.abs().max().item() + 1e-12), name
    assert counters["frames"]["ok"] > frames  # the compiled views ran
    assert all(k.startswith("net.") and "_orig_mod" not in k for k in compiled.state_dict())
    frames = counters["frames"]["ok"]
    with torch.no_grad():
        compiled.eval().net(torch.zeros(3, 3, 8, 8), torch.rand(3), torch.tensor([0, 1, 4]))
    assert counters["frames"]["ok"] == frames  # eval (sampling, validation) runs the plain blocks


# -- no host synchronisation in the training step ------------------------------------------------------------

SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


class NoSync:
    """Make every tensor-to-host read raise while active (a CPU stand-in for 'the host waits for the GPU')."""

    def __enter__(self):
        def refuse(name):
            def raise_(*args, **kwargs):
                raise AssertionError(f"host sync: Tensor.{name} in the training step")
            return raise_

        self.patch = pytest.MonkeyPatch()
        for name in SYNCS:
            self.patch.setattr(torch.Tensor, name, refuse(name))

    def __exit__(self, *exc):
        self.patch.undo()
        return False


def test_the_training_step_reads_nothing_back_to_the_host(monkeypatch, tmp_path):
    module = JiTModule(BACKBONES["cls_head"](), flow=FLOW, optim=OptimConfig(lr=1e-3, warmup_steps=0))
    logged, steps = [], []
    step = module.training_step

    def guarded(*args, **kwargs):
        with NoSync():
            out = step(*args, **kwargs)
        steps.append(out)
        return out

    monkeypatch.setattr(module, "training_step", guarded)
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.append((name, value)))
    monkeypatch.setattr(module, "log_dict", lambda values, **kw: logged.extend(values.items()))
    fit_one_step(module, tmp_path)
    assert len(steps) == 1 and isinstance(steps[0], Tensor) and steps[0].requires_grad
    names = {name for name, _ in logged}
    assert {"train/loss", "train/flow_loss", "train/cls_loss"} <= names
    assert all(isinstance(value, Tensor) for name, value in logged if name in names - {"train/lr"})
    with pytest.raises(AssertionError, match="host sync"), NoSync():  # what the old step did
        bool(torch.isfinite(steps[0]))


@pytest.mark.parametrize("log_every", [1, 50])
def test_a_non_finite_loss_still_stops_the_run(tmp_path, log_every):
    """At the next logging step (1: after the first step of 4), or at the end of training (50: never logged)."""
    from jitlab.core.data import EmbeddedDataModule

    module = JiTModule(BACKBONES["jit"](), flow=FLOW, optim=OptimConfig(lr=1e-3, warmup_steps=0))
    with torch.no_grad():
        module.net.final_layer.linear.bias.fill_(float("nan"))
    data = EmbeddedDataModule(kind="shapes", resolution=16, global_batch_size=8, train_size=64, val_size=8, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        log_every_n_steps=log_every)
    with pytest.raises(FloatingPointError, match="not finite at step 0"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == (1 if log_every == 1 else 4)


# -- the sample grid samples with the plain blocks ---------------------------------------------------------------

class CountingView(nn.Module):
    """Stands for a compiled view of a block: counts its calls (and compiles nothing)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        object.__setattr__(self, "block", block)
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self.block(*args)


def test_the_sample_grid_never_runs_or_makes_a_compiled_view(monkeypatch, tmp_path):
    from jitlab.train.callbacks import SampleGrid

    made = []
    monkeypatch.setattr(torch, "compile", lambda block, **kw: made.append(CountingView(block)) or made[-1])
    module = JiTModule(BACKBONES["wide_head"](), flow=FLOW, compile=True)
    module.configure_model()
    assert len(made) == 4 + 1  # the trunk's blocks and the head's, one view each
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[], logger=None, default_root_dir=tmp_path, global_step=0)
    SampleGrid(num_images=4, steps=2).write(trainer, module.train(), "samples.png")
    assert (tmp_path / "samples.png").is_file() and module.training  # written, and training mode given back
    assert len(made) == 5 and sum(view.calls for view in made) == 0
    module.loss_per_sample(*batch())  # a training forward does run them
    assert all(view.calls == 1 for view in made)


# -- one device per SLURM task ------------------------------------------------------------------------------------

@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("task", [0, 1])
def test_each_slurm_task_evaluates_on_its_own_device(no_launcher, task):
    for name, value in {"SLURM_LOCALID": task, "SLURM_PROCID": task, "SLURM_NTASKS": 2, "SLURM_NNODES": 1,
                        "SLURM_NTASKS_PER_NODE": 2, "SLURM_JOB_ID": 42}.items():
        no_launcher.setenv(name, str(value))
    assert local_device_index(device_count=2) == task
    assert process_device("cuda", world=2) == f"cuda:{task}"  # what `jitlab eval` after training runs on
    assert local_device_index(device_count=1) == 0  # one GPU bound per task: each sees it as cuda:0
    no_launcher.setenv("LOCAL_RANK", "3")  # torchrun inside one SLURM task: its own index wins
    assert local_device_index(device_count=8) == 3


def test_without_a_launcher_variable_the_process_group_decides(no_launcher):
    assert local_device_index(device_count=2) == 0 and process_device("cuda", world=2) == "cuda:0"
    no_launcher.setattr(torch.distributed, "is_initialized", lambda: True)
    no_launcher.setattr(torch.distributed, "get_rank", lambda *a, **k: 5)
    assert local_device_index(device_count=4) == 1  # rank 5 of nodes with 4 devices: the second
    assert local_device_index(device_count=0) == 0


# -- the lab scale's attention ------------------------------------------------------------------------------------

def test_the_lab_scale_states_its_attention_differs_from_the_paper_scale():
    scales = ROOT / "experiments" / "scales"
    impl = {s: yaml.safe_load((scales / f"{s}.yaml").read_text())["model"]["net"]["init_args"]["attn_impl"]
            for s in ("lab", "paper")}
    assert impl["paper"] == "fp32"  # the release's attention
    if impl["lab"] != impl["paper"]:  # then the scale's notes and the operations guide say so
        notes = "".join(line for line in (scales / "lab.yaml").read_text().splitlines(True) if line.startswith("#"))
        assert "attn_impl: fp32" in notes and "sdpa" in notes.lower()
        guide = (ROOT / "experiments" / "docs" / "operations.md").read_text()
        assert "lab scale" in guide and "attn_impl: sdpa" in guide


# -- checkpointing is a memory lever: it names no other run --------------------------------------------------------

def test_checkpointing_neither_blocks_a_resume_nor_changes_the_cell():
    from jitlab.identity import content_config
    from jitlab.train.resume import config_differences

    def config(**changed) -> dict:
        return {"model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {**JIT, **changed}}, "flow": {}}}

    old = {"hyper_parameters": {**config()["model"]}}  # a checkpoint from before the switch
    for checkpointing in (False, True):
        assert config_differences(old, config(checkpointing=checkpointing))[0] == []  # resumes, off or on
        assert content_config(config(checkpointing=checkpointing)) == content_config(config())  # the same cell
    assert config_differences(old, config(depth=6))[0] == ["model.net.init_args.depth: checkpoint 4, now 6"]
    assert content_config(config(depth=6)) != content_config(config())


def test_the_module_a_class_lives_in_names_no_other_run():
    """Moving a jitlab class between modules keeps its runs; another class, or a foreign one, is another run."""
    from jitlab.identity import content_config

    def config(path: str) -> dict:
        return {"model": {"net": {"class_path": path, "init_args": dict(JIT)}}, "data": {"class_path": path}}

    assert content_config(config("jitlab.core.models.JiT")) == content_config(config("jitlab.core.models.jit.JiT"))
    assert content_config(config("jitlab.core.models.JiT")) != content_config(config("jitlab.core.models.RaeJiT"))
    assert content_config(config("other.models.JiT")) != content_config(config("jitlab.core.models.JiT"))
    kept = config("jitlab.core.models.JiT")
    content_config(kept)
    assert kept["model"]["net"]["class_path"] == "jitlab.core.models.JiT"  # the input is left alone
