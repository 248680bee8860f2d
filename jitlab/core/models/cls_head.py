"""The paper's Table 11: JiT with an extra classification loss on the backbone's features.

A linear head on the mean of the image tokens after the last block (before the final layer) predicts the class;
its cross-entropy with the true label is an auxiliary loss of weight ``cls_weight`` (``AuxLossBackbone``). The
paper gives neither the weight nor where the head sits (paper.md: "an extra classification loss"); both are knobs.

Which samples: the network is told the class, so on a conditional sample the head can read the label back and the
loss teaches nothing about images. ``cls_on: dropped`` (default) applies it only where CFG's label drop left the
null class (the unconditional branch must infer the class from the noisy image); ``all``: to every sample.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from jitlab.core.models.jit import JiT, MlpKind
from jitlab.core.models.layers import AttnImpl, NormKind
from jitlab.core.models.protocol import CleanBatch
from jitlab.core.models.spec import need, record_init_args

ClsOn = Literal["dropped", "all"]


class ClsJiT(JiT):
    """JiT + a classification head. Args: JiT's, and ``cls_weight`` (the cross-entropy's weight in the training
    loss; 0 = logged only) and ``cls_on`` (``dropped``: only samples whose label was dropped, or ``all``)."""

    def __init__(self, img_size: int | None = None, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = 128, rope: bool = True, qk_norm: bool = True, in_context_len: int = 32,
                 in_context_start: int = 4, mlp: MlpKind = "swiglu", norm: NormKind = "rms",
                 num_classes: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", checkpointing: bool | None = None, cls_weight: float = 0.1,
                 cls_on: ClsOn = "dropped"):
        init_args = record_init_args(locals())  # explicit JiT arguments: the CLI and preflight read the signature
        super().__init__(**{k: v for k, v in init_args.items() if k not in ("cls_weight", "cls_on")})
        self.init_args = init_args
        need(cls_weight >= 0, "cls_weight", f"must be >= 0, got {cls_weight}")
        need(cls_on in ("dropped", "all"), "cls_on", f"unknown choice {cls_on!r}; valid: dropped, all")
        self.cls_on = cls_on
        self.loss_weights = {"cls": float(cls_weight)}
        self.cls_head = nn.Linear(self.hidden_size, self.num_classes)
        nn.init.normal_(self.cls_head.weight, std=0.02)  # not zero: the loss reaches the blocks from step one
        nn.init.zeros_(self.cls_head.bias)

    def forward_losses(self, z: Tensor, t: Tensor, y: Tensor, clean: CleanBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The prediction (as ``forward``) and the cross-entropy of the head on the blocks' image tokens."""
        h, c = self.trunk(z, t, y)  # (N, [P +] L, D), (N, D)
        h = h[:, -self.num_patches:]  # (N, L, D)
        out = self.unpatchify(self.final_layer(h, c))  # (N, C, H, W)
        logits = self.cls_head(h.mean(1)).float()  # (N, classes)
        ce = F.cross_entropy(logits, clean.y, reduction="none")  # (N,)
        if self.cls_on == "dropped":
            mask = (clean.y_in == self.num_classes).float()  # (N,) 1 where the label was dropped
            ce = (ce * mask).sum() / mask.sum().clamp_min(1.0)  # 0 (with its graph) when none was dropped
        else:
            ce = ce.mean()
        return out, {"cls": ce}
