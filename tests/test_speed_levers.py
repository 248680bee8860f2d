"""The speed levers of the mini grid keep what is computed (issue 16).

Measured (A/B interleaved, one thread per cell as the grid runs them): ``torch.compile`` of the network
(``model.compile``) is the one lever that pays for a mini cell's training steps; the evaluation's sampling batch
is free to choose. These tests hold the numbers: a compiled forward and backward give the eager loss and
gradients up to float rounding, and the images do not depend on the sampling batch.
"""

from __future__ import annotations

import torch

from jitlab.flow import FlowConfig
from jitlab.generate import SamplerSettings, generate_uint8, labels_for
from jitlab.models import JiT
from jitlab.module import JiTModule
from jitlab.sampling import FinalStep, Sampler


def mini_shaped_net(seed: int = 0) -> JiT:
    """The mini grid's baseline block layout (SwiGLU, RMSNorm, SDPA, 16 tokens), narrowed to compile fast,
    with small non-zero adaLN and output weights (a fresh JiT's are zero, which would hide the blocks)."""
    torch.manual_seed(seed)
    net = JiT(img_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, bottleneck_dim=None, rope=False,
              qk_norm=False, in_context_len=0, attn_impl="sdpa", num_classes=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def loss_and_grads(module: JiTModule, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    module.net.zero_grad(set_to_none=True)
    per_sample, _ = module.loss_per_sample(x, y, torch.Generator().manual_seed(3))  # (N,)
    loss = per_sample.mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.net.named_parameters() if p.grad is not None}


def test_compiled_network_gives_the_eager_loss_and_gradients():
    flow = FlowConfig(pred="x", loss="v", mu=-0.8, sigma=0.8)
    eager = JiTModule(mini_shaped_net(), flow=flow)
    compiled = JiTModule(mini_shaped_net(), flow=flow, compile=True)
    compiled.configure_model()
    assert compiled._forward is not compiled.net  # the lever is on: the forward runs through torch.compile
    x = torch.rand(16, 3, 8, 8) * 2 - 1  # (N, C, H, W)
    y = torch.arange(16) % 5  # (N,) including the null class 4
    loss_e, grads_e = loss_and_grads(eager, x, y)
    loss_c, grads_c = loss_and_grads(compiled, x, y)
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-7)
    assert grads_e.keys() == grads_c.keys() and len(grads_e) > 20
    for name, g in grads_e.items():
        scale = g.abs().max().item() + 1e-12
        assert (grads_c[name] - g).abs().max().item() <= 1e-4 * scale, name


def test_the_sampling_batch_does_not_change_the_images():
    module = JiTModule(mini_shaped_net(seed=1), flow=FlowConfig(pred="x", loss="v")).eval()
    indices = list(range(6))
    labels = labels_for(indices, module.null_class)  # (6,)
    settings = SamplerSettings(Sampler.heun, 3, 2.0, (0.0, 1.0), 0, FinalStep.x)

    def images(batch: int) -> torch.Tensor:
        return torch.cat([b[1] for b in generate_uint8(module, indices, labels, settings, batch, progress=False)])

    whole, pieces = images(6), images(4)  # one batch of 6; batches of 4 and 2
    assert whole.shape == (6, 3, 8, 8) and whole.dtype == torch.uint8
    assert whole.float().std() > 0  # real pictures, not a constant
    assert (whole.int() - pieces.int()).abs().max().item() <= 1  # at most a rounding flip of one uint8 level
