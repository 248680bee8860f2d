"""DSD's question at mini scale: a latent learned jointly with its diffusion model, and what keeps it alive.

A per-patch linear encoder maps each p x p patch to a ``latent_dim``-d latent token; a JiT with patch size 1
denoises the (latent_dim, H/p, W/p) latent; a per-patch linear decoder maps it back, trained by a reconstruction
loss (``AuxLossBackbone``). The flow's state is the latent (``StateBackbone``): the flow loss reaches the encoder
through ``z = t s + (1 - t) eps`` and, unless stopped, through the target built from the clean latent ``s``:

- ``state``: from ``s`` itself (v-prediction can lower its loss by shrinking or flattening the latent: DSD's collapse);
- ``stop_gradient``: from ``s.detach()``;
- ``ema``: from an EMA copy of the encoder (decay ``ema_decay``, moved at every training forward), no gradient.

``latent_scale``: ``free`` (a stop-gradient latent may grow far above the noise's unit std, which shifts the noise
schedule) or ``unit_rms`` (each sample's latent at the noise's scale: a collapse can only be one of rank).
Logged (``DiagnosedBackbone``): the effective rank of the batch's latent tokens and their standard deviation.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jitlab.core.models.jit import JiT, MlpKind
from jitlab.core.models.layers import AttnImpl, NormKind, init_conv_as_linear
from jitlab.core.models.protocol import CleanBatch
from jitlab.core.models.rank import effective_rank
from jitlab.core.models.spec import need, record_init_args

Target = Literal["state", "stop_gradient", "ema"]
TARGETS = ("state", "stop_gradient", "ema")
LatentScale = Literal["free", "unit_rms"]
LATENT_SCALES = ("free", "unit_rms")


def unit_rms(latent: Tensor, eps: float = 1e-6) -> Tensor:
    """Each sample's latent (N, d, g, g) divided by its root mean square over (d, g, g): rms 1, the noise's scale."""
    rms = latent.float().pow(2).mean(dim=(1, 2, 3), keepdim=True).add(eps).sqrt()  # (N, 1, 1, 1)
    return latent / rms.to(latent.dtype)  # (N, d, g, g)


class LatentJiT(nn.Module):
    """Encoder, JiT on the latent and decoder as one model. Args: img_size, patch_size, in_channels (the image's),
    latent_dim (values per latent token), the JiT knobs of the latent denoiser (``bottleneck_dim`` embeds the
    latent token through d'), target, ema_decay, recon_weight, latent_scale, checkpointing (per block, as JiT's)."""

    def __init__(self, img_size: int | None = None, patch_size: int = 8, in_channels: int = 3, latent_dim: int = 16,
                 hidden_size: int = 192, depth: int = 4, num_heads: int = 3, mlp_ratio: float = 4.0,
                 rope: bool = False, qk_norm: bool = False, in_context_len: int = 0, in_context_start: int = 0,
                 mlp: MlpKind = "swiglu", norm: NormKind = "rms", num_classes: int | None = None,
                 bottleneck_dim: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", target: Target = "state", ema_decay: float = 0.99,
                 recon_weight: float = 1.0, latent_scale: LatentScale = "free", checkpointing: bool | None = None):
        self.init_args = record_init_args(locals())
        super().__init__()
        _validate(self.init_args)
        self.img_size, self.patch_size, self.in_channels = img_size, patch_size, in_channels
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.hidden_size, self.depth = hidden_size, depth
        self.target, self.ema_decay, self.latent_scale = target, ema_decay, latent_scale
        self.loss_weights = {"recon": float(recon_weight)}
        self.grid = img_size // patch_size
        self.encoder = nn.Conv2d(in_channels, latent_dim, patch_size, stride=patch_size)  # a linear map per patch
        self.decoder = nn.ConvTranspose2d(latent_dim, in_channels, patch_size, stride=patch_size)
        init_conv_as_linear(self.encoder)
        init_conv_as_linear(self.decoder)
        jit_args = {k: v for k, v in self.init_args.items() if k in inspect.signature(JiT).parameters}
        self.denoiser = JiT(**{**jit_args, "img_size": self.grid, "patch_size": 1, "in_channels": latent_dim})
        if target == "ema":  # buffers: saved with the model, never given to the optimizer
            self.register_buffer("ema_weight", self.encoder.weight.detach().clone())
            self.register_buffer("ema_bias", self.encoder.bias.detach().clone())

    # -- the contract ------------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The flow's state: the latent (latent_dim, H/p, W/p)."""
        return (self.latent_dim, self.grid, self.grid)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.img_size, self.img_size)

    @property
    def patch_dim(self) -> int:  # PatchBackbone: the values per output token of the latent denoiser
        return self.latent_dim

    def noise_widths(self) -> dict[str, int]:
        return self.denoiser.noise_widths()

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(N, C, H, W) -> the latent (N, latent_dim, H/p, W/p); trained."""
        return self._scaled(self.encoder(x))

    def _scaled(self, latent: Tensor) -> Tensor:
        return unit_rms(latent) if self.latent_scale == "unit_rms" else latent  # (N, d, g, g)

    def decode(self, state: Tensor) -> Tensor:
        """(N, latent_dim, H/p, W/p) -> (N, C, H, W)."""
        return self.decoder(state)

    def target_state(self, x: Tensor, y: Tensor | None, state: Tensor) -> Tensor:
        """The clean latent the flow's target is built from (see ``target``)."""
        if self.target == "state":
            return state
        if self.target == "stop_gradient":
            return state.detach()
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.ema_weight.lerp_(self.encoder.weight.detach(), 1.0 - self.ema_decay)
                self.ema_bias.lerp_(self.encoder.bias.detach(), 1.0 - self.ema_decay)
        with torch.no_grad():
            ema = F.conv2d(x, self.ema_weight.to(x.dtype), self.ema_bias.to(x.dtype), stride=self.patch_size)
            return self._scaled(ema)  # (N, d, g, g)

    def compile_blocks(self, **options) -> None:
        """Regional compilation of the latent denoiser's blocks (``JiT.compile_blocks``)."""
        self.denoiser.compile_blocks(**options)

    def forward(self, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """z: (N, latent_dim, H/p, W/p) noisy latent; returns the latent in the prediction space."""
        return self.denoiser(z, t, y)

    def forward_losses(self, z: Tensor, t: Tensor, y: Tensor, clean: CleanBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The prediction and the decoder's reconstruction loss of the clean latent (gradients to both maps)."""
        recon = (self.decode(clean.state).float() - clean.x.float()).pow(2).mean()
        return self.forward(z, t, y), {"recon": recon}

    @torch.no_grad()
    def diagnostics(self, state: Tensor) -> dict[str, Tensor]:
        """The effective rank of the batch's latent tokens (N * H/p * W/p rows of latent_dim) and their std."""
        tokens = state.detach().float().permute(0, 2, 3, 1).reshape(-1, self.latent_dim)  # (N * G * G, d)
        return {"latent_erank": effective_rank(tokens), "latent_std": tokens.std()}


def _validate(args: dict) -> None:
    img, p = args["img_size"], args["patch_size"]
    need(img is not None, "img_size", "must be set (the CLI fills it from data.resolution)")
    need(p > 0 and img % p == 0, "patch_size", f"patch_size={p} must divide img_size={img}")
    need(args["latent_dim"] > 0, "latent_dim", f"must be positive, got {args['latent_dim']}")
    need(args["target"] in TARGETS, "target", f"unknown target {args['target']!r}; valid: {', '.join(TARGETS)}")
    need(0.0 <= args["ema_decay"] < 1.0, "ema_decay", f"must lie in [0, 1), got {args['ema_decay']}")
    need(args["recon_weight"] >= 0, "recon_weight", f"must be >= 0, got {args['recon_weight']}")
    need(args["latent_scale"] in LATENT_SCALES, "latent_scale",
         f"unknown latent_scale {args['latent_scale']!r}; valid: {', '.join(LATENT_SCALES)}")
