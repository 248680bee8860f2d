"""The declared backbone contract: a toy backbone that only satisfies the protocol trains and samples."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from jitlab.errors import ConfigError
from tests.conftest import fit_one_step
from jitlab.core.flow import FlowConfig
from jitlab.core.models import JiT
from jitlab.core.models.mlp import ToyMLP
from jitlab.core.models.protocol import Backbone, PatchBackbone, check_backbone
from jitlab.core.models.spec import build_net, net_spec, record_init_args
from jitlab.train.module import JiTModule, OptimConfig, warn_noise_through_bottleneck


class PixelNet(nn.Module):
    """A per-pixel conv denoiser: no JiT class, no patches; only the contract."""

    def __init__(self, channels: int = 3, size: int = 16, num_classes: int = 10):
        self.init_args = record_init_args(locals())
        super().__init__()
        self.num_classes = num_classes
        self._shape = (channels, size, size)
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.labels = nn.Embedding(num_classes + 1, channels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._shape

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        t_map = t.view(-1, 1, 1, 1).expand(-1, 1, *z.shape[-2:])  # (N, 1, H, W)
        out = self.conv(torch.cat([z, t_map], dim=1))  # (N, C, H, W)
        return out + self.labels(y)[:, :, None, None]  # (N, C, H, W)


class NarrowPatchNet(PixelNet):
    """Declares itself patch-based with an output narrower than a patch (for the rank warning)."""

    patch_dim = 48

    def noise_widths(self) -> dict[str, int]:
        return {"hidden_size": 16}


def test_the_release_networks_satisfy_the_contract():
    jit = JiT(img_size=16, patch_size=4, hidden_size=48, depth=1, num_heads=3, num_classes=4, bottleneck_dim=8,
              in_context_len=0)
    assert isinstance(jit, Backbone) and isinstance(jit, PatchBackbone)
    assert jit.noise_widths() == {"bottleneck_dim": 8, "hidden_size": 48}
    toy = ToyMLP(dim=8)
    assert isinstance(toy, Backbone) and not isinstance(toy, PatchBackbone)


def test_a_protocol_only_backbone_trains_a_step_and_samples(tmp_path):
    torch.manual_seed(0)
    module = JiTModule(PixelNet(), flow=FlowConfig(pred="v", loss="v"), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer = fit_one_step(module, tmp_path)
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))
    assert isinstance(build_net(net_spec(module.net)), PixelNet)  # rebuilt from the checkpoint's spec
    samples = module.generate([0, 1], torch.tensor([0, 3]), steps=2, cfg_scale=1.5, seed=0)
    assert samples.shape == (2, 3, 16, 16) and torch.isfinite(samples).all()


class NoShape(nn.Module):
    num_classes = None

    def __init__(self):
        self.init_args = {}
        super().__init__()

    def forward(self, z, t, y):
        return z


def test_a_module_without_the_contract_is_refused_naming_what_it_lacks():
    with pytest.raises(ConfigError, match="model.net.*NoShape.*lacks sample_shape"):
        JiTModule(NoShape())
    bad = PixelNet()
    bad._shape = (3, 0, 16)
    with pytest.raises(ConfigError, match="sample_shape must be a tuple of positive ints"):
        check_backbone(bad)


def test_the_rank_warning_reads_the_declared_widths():
    with pytest.warns(UserWarning, match="hidden_size=16 < patch dimension 48"):
        warn_noise_through_bottleneck(NarrowPatchNet(), FlowConfig(pred="eps", loss="v"))
