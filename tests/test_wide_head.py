"""RAE's DiT-DH backbone (jitlab.core.models.WideHead): shapes, the contract, the rank warning, one training step."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from jitlab.core.data import EmbeddedDataModule
from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig
from jitlab.core.models import WideHead
from jitlab.core.models.protocol import Backbone, PatchBackbone
from jitlab.core.models.spec import build_net, net_spec
from jitlab.train.module import JiTModule, OptimConfig, warn_noise_through_bottleneck

TINY = dict(img_size=16, patch_size=4, hidden_size=24, depth=2, num_heads=2, bottleneck_dim=None, rope=True,
            qk_norm=True, in_context_len=2, in_context_start=1, num_classes=10, attn_impl="sdpa")


def head(**kwargs) -> WideHead:
    return WideHead(**{**TINY, "head_width": 64, "head_depth": 2, "head_heads": 4, **kwargs})


def test_shapes_contract_and_widths():
    net = head()
    assert isinstance(net, Backbone) and isinstance(net, PatchBackbone)
    assert net.patch_dim == 48 and net.noise_widths() == {"head_width": 64}
    assert not hasattr(net, "final_layer")  # the trunk's output layer is gone: no parameter without a gradient
    assert len(net.head_blocks) == 2 and net.head_out.in_features == 64 and net.head_out.out_features == 48
    z, t, y = torch.randn(3, 3, 16, 16), torch.rand(3), torch.tensor([0, 9, 10])
    out = net(z, t, y)
    assert out.shape == z.shape and torch.equal(out, torch.zeros_like(z))  # zero output layer and adaLN at init
    assert isinstance(build_net(net_spec(net)), WideHead)


def test_the_head_reads_z_and_is_conditioned_per_token_on_the_trunk():
    torch.manual_seed(0)
    net = head()
    for p in net.parameters():  # leave the zero init: every path carries signal
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    z, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 2])
    cond = {}
    net.head_cond.register_forward_hook(lambda m, i, o: cond.update(shape=tuple(o.shape)))
    out = net(z, t, y)
    assert cond["shape"] == (2, net.num_patches, 64)  # one condition per token, at the head's width
    out.pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing  # DDP without find_unused_parameters needs every parameter used
    z2 = z.clone()
    z2[:, :, :4, :4] += 1.0  # one patch changes: its own output changes through the head's embedding
    assert not torch.allclose(net(z2, t, y)[:, :, :4, :4], out[:, :, :4, :4])


def test_the_rank_warning_reads_the_head_not_the_narrow_trunk():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_noise_through_bottleneck(head(hidden_size=24, head_width=64), FlowConfig(pred="v"))  # 24 < 48 < 64
    with pytest.warns(UserWarning, match="head_width=32 < patch dimension 48"):
        warn_noise_through_bottleneck(head(head_width=32), FlowConfig(pred="v"))


@pytest.mark.parametrize("kwargs, field", [(dict(head_width=30), "head_width"), (dict(head_depth=0), "head_depth"),
                                           (dict(head_heads=3), "head_heads"), (dict(head_heads=32), "head_heads")])
def test_bad_head_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        head(**kwargs)
    assert error.value.field == f"model.net.init_args.{field}"


def test_one_training_step_and_sampling(tmp_path):
    torch.manual_seed(0)
    module = JiTModule(head(), flow=FlowConfig(pred="v", loss="v"), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    before = [p.detach().clone() for p in module.net.head_out.parameters()]
    data = EmbeddedDataModule(kind="shapes", resolution=16, global_batch_size=8, train_size=64, val_size=8, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.head_out.parameters()))
    samples = module.generate([0, 1], torch.tensor([0, 3]), steps=2, cfg_scale=1.5, seed=0)
    assert samples.shape == (2, 3, 16, 16) and torch.isfinite(samples).all()
