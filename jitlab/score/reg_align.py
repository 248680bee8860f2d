"""REG's full loss: the representation token (``jitlab.core.models.reg``) and REPA's alignment of the backbone's tokens.

REPA (Yu et al. 2025): the image tokens after ``align_depth`` blocks, mapped by a trainable three-linear SiLU MLP
(``projector``) to the encoder's width, are pulled toward a frozen encoder's patch features of the clean image; the
loss (``align``, an ``AuxLossBackbone`` loss of weight ``align_weight``, REPA's lambda 0.5) is one minus their mean
cosine similarity. The frozen encoder is outside the checkpoint and the EMA (rebuilt from the arguments):

- ``refnet``: a reference classifier of the config ``align_refnet`` (RefNetConfig's fields), its last stage pooled
  to the token grid; never the classifier that scores the cells (that config is refused).
- ``token``: the token's own timm encoder (REG: DINOv2-B/14), its patch tokens pooled to the token grid.

Layer: scoring, because it loads a reference classifier's weights.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jitlab.errors import ConfigError
from jitlab.score.metrics.refnet import RefNet, RefNetConfig, load_refnet
from jitlab.core.models.jit import MlpKind
from jitlab.core.models.layers import AttnImpl, NormKind
from jitlab.core.models.protocol import CleanBatch
from jitlab.core.models.reg import RegJiT, TokenKind, on_meta_device
from jitlab.core.models.spec import record_init_args

AlignEncoder = Literal["refnet", "token"]
ALIGN_ENCODERS = ("refnet", "token")
ALIGN_ARGS = ("align_weight", "align_depth", "align_encoder", "align_refnet", "align_proj_dim")


def load_reference_encoder(fields: dict[str, Any] | None) -> tuple[nn.Module, int]:
    """The frozen reference classifier named by ``fields`` (RefNetConfig's) and its input side; on the meta device,
    its shape only."""
    from jitlab.core.data.embedded import num_classes_of

    where = "model.net.init_args.align_refnet"
    if not isinstance(fields, dict) or not fields:
        raise ConfigError(where, "must name the reference classifier to align to, e.g. {kind: shapes, "
                                 "resolution: 32, seed: 1} (RefNetConfig's fields)")
    try:
        config = RefNetConfig(**fields)
    except TypeError:
        valid = ", ".join(RefNetConfig.__dataclass_fields__)
        raise ConfigError(where, f"unknown field(s) in {sorted(fields)}; valid: {valid}") from None
    if config == RefNetConfig(kind=config.kind, resolution=config.resolution):
        raise ConfigError(where, f"{fields} is the classifier that scores the cells (FD-ref); align to another, "
                                 "e.g. seed: 1")
    if on_meta_device():
        net = RefNet(num_classes_of(config.kind), config.resolution, config.width)
    else:
        net, _ = load_refnet(config)
    return net.eval().requires_grad_(False), config.resolution


class AlignedRegJiT(RegJiT):
    """REG with its alignment loss. Args: RegJiT's, and

        align_weight: the alignment loss' weight (REPA: 0.5).
        align_depth: the tokens aligned are the output of this many blocks (REPA on SiT-XL: 8 of 28).
        align_encoder: refnet | token (see the module docstring).
        align_refnet: RefNetConfig's fields of the reference classifier (``align_encoder: refnet``).
        align_proj_dim: the projector's hidden width (REPA: 2048).
    """

    def __init__(self, img_size: int | None = None, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = 128, rope: bool = True, qk_norm: bool = True, in_context_len: int = 32,
                 in_context_start: int = 4, mlp: MlpKind = "swiglu", norm: NormKind = "rms",
                 num_classes: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", checkpointing: bool | None = None, token: TokenKind = "thumbnail",
                 token_dim: int = 48,
                 encoder: str = "vit_base_patch14_dinov2", encoder_weights: str | None = None,
                 encoder_size: int = 224, encoder_args: dict[str, Any] | None = None, projection_seed: int = 0,
                 align_weight: float = 0.5, align_depth: int = 4, align_encoder: AlignEncoder = "refnet",
                 align_refnet: dict[str, Any] | None = None, align_proj_dim: int = 2048):
        init_args = record_init_args(locals())  # explicit arguments: the CLI and preflight read the signature
        super().__init__(**{k: v for k, v in init_args.items() if k not in ALIGN_ARGS})
        self.init_args = init_args
        _validate_align(init_args)
        self.align_encoder, self.align_depth = align_encoder, align_depth
        self.loss_weights = {"align": float(align_weight)}  # AuxLossBackbone
        frozen, self.align_side = load_reference_encoder(align_refnet) if align_encoder == "refnet" else (None, None)
        object.__setattr__(self, "_reference", frozen)  # not a submodule: frozen, outside checkpoints and the EMA
        features = frozen.num_features if frozen is not None else self._encoder.num_features
        self.projector = nn.Sequential(nn.Linear(hidden_size, align_proj_dim), nn.SiLU(),
                                       nn.Linear(align_proj_dim, align_proj_dim), nn.SiLU(),
                                       nn.Linear(align_proj_dim, features))

    @torch.no_grad()
    def target_features(self, x: Tensor) -> Tensor:
        """The frozen encoder's features of the clean image x (N, C, H, W) in [-1, 1], one per token: (N, L, F)."""
        if self.align_encoder == "token":
            tokens = self.encoder_tokens(x)[:, self._encoder.num_prefix_tokens:]  # (N, L', F)
            side = math.isqrt(tokens.shape[1])
            maps = tokens.transpose(1, 2).reshape(x.shape[0], -1, side, side)  # (N, F, s, s)
        else:
            reference = self._reference.to(x.device)
            side = self.align_side
            x_in = x.float() if side == x.shape[-1] else F.interpolate(x.float(), size=side, mode="area")
            maps = reference.body(x_in)  # (N, F, s, s) from (N, C, r, r): the last stage before the pooling
        maps = F.adaptive_avg_pool2d(maps.float(), self.grid)  # (N, F, g, g)
        return maps.flatten(2).transpose(1, 2)  # (N, L, F)

    def forward_losses(self, z: Tensor, t: Tensor, y: Tensor, clean: CleanBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The prediction (as ``forward``) and the alignment loss of block ``align_depth``'s image tokens."""
        tapped: list[Tensor] = []
        # a hook, so the trunk runs unchanged (JiT.trunk); the first call is the forward's (a recompute
        # under activation checkpointing calls it again, after the loss is built)
        hook = self.blocks[self.align_depth - 1].register_forward_hook(lambda _m, _i, out: tapped.append(out))
        try:
            out = self.forward(z, t, y)  # (N, C*H*W + K)
        finally:
            hook.remove()
        h = tapped[0][:, -self.num_patches:]  # (N, L, D): the image tokens
        target = self.target_features(clean.x)  # (N, L, F), no gradient
        cosine = F.cosine_similarity(self.projector(h).float(), target, dim=-1)  # (N, L)
        return out, {"align": 1.0 - cosine.mean()}


def _validate_align(args: dict[str, Any]) -> None:
    def need(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"model.net.init_args.{field}", message)

    need(args["align_encoder"] in ALIGN_ENCODERS, "align_encoder",
         f"unknown align_encoder {args['align_encoder']!r}; valid: {', '.join(ALIGN_ENCODERS)}")
    need(isinstance(args["align_depth"], int) and 1 <= args["align_depth"] <= args["depth"], "align_depth",
         f"must be a block count in 1..depth={args['depth']}, got {args['align_depth']!r}")
    need(isinstance(args["align_weight"], (int, float)) and args["align_weight"] >= 0, "align_weight",
         f"must be a number >= 0, got {args['align_weight']!r}")
    need(isinstance(args["align_proj_dim"], int) and args["align_proj_dim"] > 0, "align_proj_dim",
         f"must be a positive int, got {args['align_proj_dim']!r}")
    need(args["align_encoder"] != "token" or args["token"] == "encoder", "align_encoder",
         f"token aligns to the token's encoder, but token is {args['token']!r}; use refnet or token: encoder")
