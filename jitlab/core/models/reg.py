"""REG (representation entanglement): JiT denoising the image and one global representation token jointly.

The flow's state is the image and the token packed in one flat vector, (C*H*W + token_dim,) (``StateBackbone``):
the flow noises both with the same ``t`` and ``eps``. The token enters as one extra token before the image tokens
(first, so that 2-D RoPE leaves it unrotated as it does the in-context tokens) and leaves through its own final
layer; its loss is the flow loss on its coordinates, inside the joint mean. The token (``token``):

- ``encoder``: a frozen pretrained encoder's CLS (REG: DINOv2 through timm) from a local weights file, the image
  resized to ``encoder_size`` and normalised as the encoder expects; standardised per token (the image's scale).
- ``thumbnail``: the image average-pooled to side s (token_dim = C s^2): the mini scale's honest stand-in.
- ``projection``: a fixed random Gaussian projection of the image (seeded, never trained).
- ``constant``: zeros, the control: the same extra token and parameters, no information about the image.

REPA's alignment loss of REG is ``jitlab.score.reg_align.AlignedRegJiT`` (its encoder may be a shipped reference
classifier, so it sits in the scoring layer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jitlab.errors import ConfigError
from jitlab.core.models.jit import FinalLayer, JiT, MlpKind
from jitlab.core.models.layers import AttnImpl, NormKind, Rope2D, init_zero
from jitlab.core.models.spec import need, record_init_args

TokenKind = Literal["encoder", "thumbnail", "projection", "constant"]
TOKEN_KINDS = ("encoder", "thumbnail", "projection", "constant")
REG_ARGS = ("token", "token_dim", "encoder", "encoder_weights", "encoder_size", "encoder_args", "projection_seed")


def on_meta_device() -> bool:
    """Inside ``with torch.device("meta")`` (preflight, plan): build shapes, load nothing."""
    return torch.empty(()).device.type == "meta"


def load_encoder(name: str, weights: str | None, size: int, extra: dict[str, Any] | None = None) -> nn.Module:
    """A frozen timm encoder ``name`` at input side ``size``, its weights from the local file ``weights`` (timm
    adapts Meta's or timm's DINOv2 layout and resamples the position embedding). On the meta device (the plan's and
    preflight's shape-only build) nothing is read: preflight checks the file (``FILE_ARGS``)."""
    import timm

    field = "model.net.init_args.encoder_weights"
    if weights is None:
        raise ConfigError(field, f"must be set when token is encoder: a local file of the {name} weights "
                                 "(jitlab never downloads)")
    kwargs = dict(extra or {}, img_size=size, num_classes=0)
    if on_meta_device():
        return timm.create_model(name, pretrained=False, **kwargs).requires_grad_(False)
    if not Path(weights).is_file():
        raise ConfigError(field, f"{weights}: no such file; give the {name} weights as a local file "
                                 "(timm's or Meta's DINOv2 state dict; jitlab never downloads)")
    encoder = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
    return encoder.eval().requires_grad_(False)


class RegJiT(JiT):
    """JiT + REG's representation token. Args: JiT's, and ``token`` (see the module docstring), ``token_dim`` (the
    token's dimension: thumbnail C s^2 with s dividing img_size; encoder its width), ``encoder``, ``encoder_weights``,
    ``encoder_size``, ``encoder_args`` (the timm model name, its local weights file, the input side images are resized
    to, extra ``timm.create_model`` arguments) and ``projection_seed`` (the seed of the fixed projection)."""

    FILE_ARGS = ("encoder_weights",)  # read at construction: preflight checks they exist (jitlab.score.preflight)

    def __init__(self, img_size: int | None = None, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = 128, rope: bool = True, qk_norm: bool = True, in_context_len: int = 32,
                 in_context_start: int = 4, mlp: MlpKind = "swiglu", norm: NormKind = "rms",
                 num_classes: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", checkpointing: bool | None = None, token: TokenKind = "thumbnail",
                 token_dim: int = 48,
                 encoder: str = "vit_base_patch14_dinov2", encoder_weights: str | None = None,
                 encoder_size: int = 224, encoder_args: dict[str, Any] | None = None, projection_seed: int = 0):
        init_args = record_init_args(locals())  # explicit JiT arguments: the CLI and preflight read the signature
        super().__init__(**{k: v for k, v in init_args.items() if k not in REG_ARGS})
        self.init_args = init_args
        self.token, self.token_dim = token, token_dim
        self.image_numel = in_channels * img_size * img_size
        self._check_token()
        frozen = load_encoder(encoder, encoder_weights, encoder_size, encoder_args) if token == "encoder" else None
        if frozen is not None and frozen.num_features != token_dim:
            raise ConfigError("model.net.init_args.token_dim", f"is {token_dim} but {encoder}'s CLS token is "
                                                               f"{frozen.num_features}-d; set token_dim: "
                                                               f"{frozen.num_features}")
        object.__setattr__(self, "_encoder", frozen)  # not a submodule: frozen, outside checkpoints and the EMA
        if token == "projection":
            gen = torch.Generator().manual_seed(projection_seed)
            proj = torch.randn(self.image_numel, token_dim, generator=gen, device="cpu") / math.sqrt(self.image_numel)
            self.register_buffer("projection", proj, persistent=False)  # (C*H*W, token_dim), rebuilt from the seed
        self.token_embed = nn.Linear(token_dim, hidden_size)
        self.token_posemb = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.token_final = FinalLayer(hidden_size, token_dim, norm)
        head_dim = hidden_size // num_heads
        # the token is a prefix: RoPE leaves it unrotated before and after the in-context tokens join
        self.reg_ropes = (Rope2D(head_dim, self.grid, num_prefix=1) if rope else None,
                          Rope2D(head_dim, self.grid, num_prefix=in_context_len + 1) if rope and in_context_len
                          else None)
        nn.init.xavier_uniform_(self.token_embed.weight)  # as JiT's: the token's output starts at 0
        nn.init.zeros_(self.token_embed.bias)
        nn.init.normal_(self.token_posemb, std=0.02)
        init_zero([self.token_final.adaLN_modulation[-1], self.token_final.linear])

    def _check_token(self) -> None:
        need(self.token in TOKEN_KINDS, "token", f"unknown token {self.token!r}; valid: {', '.join(TOKEN_KINDS)}")
        need(self.token_dim > 0, "token_dim", f"must be positive, got {self.token_dim}")
        if self.token == "thumbnail":
            side = math.isqrt(self.token_dim // self.in_channels)
            need(self.in_channels * side * side == self.token_dim and self.img_size % side == 0, "token_dim",
                 f"a thumbnail token is C s^2 with s dividing img_size={self.img_size} (C={self.in_channels}), got "
                 f"{self.token_dim}; e.g. {self.in_channels * 16} (s = 4)")

    # -- the state ---------------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int]:
        """The flow's state: the flat image and token, (C*H*W + token_dim,)."""
        return (self.image_numel + self.token_dim,)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.img_size, self.img_size)

    @torch.no_grad()
    def representation(self, x: Tensor) -> Tensor:
        """The clean image's token (N, token_dim); x: (N, C, H, W) in [-1, 1]. Never trained."""
        n = x.shape[0]
        if self.token == "constant":
            return x.new_zeros(n, self.token_dim)  # (N, K)
        if self.token == "thumbnail":
            side = math.isqrt(self.token_dim // self.in_channels)
            return F.adaptive_avg_pool2d(x, side).flatten(1)  # (N, C s^2)
        if self.token == "projection":
            return x.flatten(1) @ self.projection.to(x.dtype)  # (N, K)
        cls = self.encoder_tokens(x)[:, 0]  # (N, D): the class token comes first
        return F.layer_norm(cls.float(), (cls.shape[-1],)).to(x.dtype)  # (N, D), standardised per token

    @torch.no_grad()
    def encoder_tokens(self, x: Tensor) -> Tensor:
        """The frozen timm encoder's output tokens (N, prefix + L', D) of x (N, C, H, W) in [-1, 1], resized to its
        input side and normalised as it expects (REG's token reads the class token, its alignment the patches)."""
        encoder = self._encoder.to(x.device)
        cfg = encoder.pretrained_cfg
        size = encoder.patch_embed.img_size
        x01 = F.interpolate((x.float() + 1) / 2, size=size, mode="bicubic", antialias=True, align_corners=False)
        mean = torch.tensor(cfg["mean"], device=x.device).view(1, -1, 1, 1)  # (1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device).view(1, -1, 1, 1)
        return encoder.forward_features((x01 - mean) / std)  # (N, prefix + L', D)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(N, C, H, W) -> the clean state (N, C*H*W + token_dim)."""
        return torch.cat([x.flatten(1), self.representation(x)], dim=1)

    def decode(self, state: Tensor) -> Tensor:
        """(N, C*H*W + token_dim) -> the image (N, C, H, W); the token is dropped."""
        return state[:, : self.image_numel].reshape(state.shape[0], *self.image_shape)

    def target_state(self, x: Tensor, y: Tensor | None, state: Tensor) -> Tensor:
        return state  # the token is fixed by the image: nothing to stop

    def split(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C*H*W + K) -> the image (N, C, H, W) and the token (N, K)."""
        return self.decode(state), state[:, self.image_numel:]

    # -- the network -------------------------------------------------------------------------------------
    def forward(self, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """z: (N, C*H*W + K) noisy image and token at the same t; returns both in the prediction space."""
        if z.ndim != 2 or z.shape[1] != self.sample_shape[0]:
            raise ValueError(f"RegJiT takes the packed state (N, {self.sample_shape[0]}), got {tuple(z.shape)}")
        image, token = self.split(z)  # (N, C, H, W), (N, K)
        prefix = self.token_embed(token).unsqueeze(1) + self.token_posemb  # (N, 1, D)
        h, c = self.trunk(image, t, y, prefix, self.reg_ropes)  # (N, [P +] 1 + L, D)
        out_image = self.unpatchify(self.final_layer(h[:, -self.num_patches:], c))  # (N, C, H, W)
        out_token = self.token_final(h[:, -self.num_patches - 1: -self.num_patches], c)[:, 0]  # (N, K)
        return torch.cat([out_image.flatten(1), out_token.to(out_image.dtype)], dim=1)  # (N, C*H*W + K)
