"""The speed levers of the mini grid keep what is computed (issue 16).

Measured (A/B interleaved, one thread per cell as the grid runs them): ``torch.compile`` of the network
(``model.compile``) is the one lever that pays for a mini cell's training steps; the evaluation's sampling batch
is free to choose. These tests hold the numbers: the images do not depend on the sampling batch; that the
compiled blocks give the eager loss and gradients up to float rounding is tests/test_blocks.py's.
"""

from __future__ import annotations

import torch

from jitlab.core.flow import FlowConfig
from jitlab.score.generate import SamplerSettings, generate_uint8, labels_for
from jitlab.core.models import JiT
from jitlab.train.module import JiTModule
from jitlab.core.sampling import FinalStep, Sampler


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
