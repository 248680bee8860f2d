"""The few pieces the JiT backbone needs that no library gives in the right form.

Key names (``proj1``, ``w12``, ``embedding_table``, ``mlp.0`` ...) follow the authors' release so that
released checkpoints load by stripping a prefix (see ``jitlab.train.convert``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

NormKind = Literal["rms", "layer"]
AttnImpl = Literal["fp32", "sdpa"]


def no_autocast(x: Tensor):
    """A context that turns autocast off for ``x``'s device where it is on (a no-op on meta)."""
    kind = x.device.type
    if kind != "meta" and torch.is_autocast_enabled(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x (N, L, D), shift/scale (N, 1, D) one per sample or (N, L, D) one per token."""
    return x * (1 + scale) + shift  # (N, L, D)


class RMSNorm(nn.RMSNorm):
    """torch's RMSNorm, computed in float32 as the release does under bf16 autocast."""

    def forward(self, x: Tensor) -> Tensor:
        with no_autocast(x):
            return super().forward(x.float()).to(x.dtype)


def make_norm(kind: NormKind, dim: int) -> nn.Module:
    return RMSNorm(dim, eps=1e-6) if kind == "rms" else nn.LayerNorm(dim, eps=1e-6)


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of t in [0, 1] (not scaled): cosine half first, then sine. t (N,) -> (N, dim)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)  # (half,)
    freqs = torch.exp(-math.log(max_period) * k / half)  # (half,)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)


class TimestepEmbedder(nn.Module):
    """256-d sinusoidal features, then Linear-SiLU-Linear to the hidden size."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class table with ``num_classes + 1`` rows; the last row is the null class used for CFG."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)  # (N, D)


class PatchEmbed(nn.Module):
    """Patch embedding of Fig. 4: patch dim -> d' (no bias) -> hidden (bias), or one linear map.

    Strided convolutions (a linear map per patch) give the release's weight shapes; timm's has no bottleneck form.
    """

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int, bottleneck_dim: int | None):
        super().__init__()
        self.patch_size = patch_size
        if bottleneck_dim is None:
            self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size, bias=True)
        else:
            self.proj1 = nn.Conv2d(in_channels, bottleneck_dim, patch_size, stride=patch_size, bias=False)
            self.proj2 = nn.Conv2d(bottleneck_dim, hidden_size, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "proj"):
            x = self.proj(x)  # (N, D, H/p, W/p)
        else:
            x = self.proj2(self.proj1(x))  # (N, D, H/p, W/p)
        return rearrange(x, "n d h w -> n (h w) d")  # (N, L, D)

    def linear_weights(self) -> list[Tensor]:
        """The convolutions' weights, in order (each a linear map per patch)."""
        return [conv.weight for conv in self.children()]


def init_linears_xavier(modules) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` among ``modules`` (JiT's initialisation)."""
    for module in modules:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def init_conv_as_linear(conv: nn.Module) -> None:
    """Xavier-uniform on a patch convolution's weight viewed as a linear map (out, in * p * p); zero bias."""
    nn.init.xavier_uniform_(conv.weight.data.view(conv.weight.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_zero(layers) -> None:
    """Zero weights and biases (adaLN and output layers: an untrained net outputs exactly 0)."""
    for layer in layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (grid*grid, dim), row-major tokens: column index in the first half
    of the channels, row index in the second, each [sin | cos] at 1 / 10000^(k / (dim/4)) (MAE/DiT's layout)."""
    assert dim % 4 == 0, "hidden size must be divisible by 4 for the 2-D sin-cos embedding"
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
    index = torch.arange(grid, dtype=torch.float64)  # (G,)
    rows, cols = torch.meshgrid(index, index, indexing="ij")

    def embed_1d(pos: Tensor) -> Tensor:
        out = pos.reshape(-1)[:, None] * omega[None]  # (L, dim/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (L, dim/2)

    return torch.cat([embed_1d(cols), embed_1d(rows)], dim=1).float()  # (L, dim)


class Rope2D(nn.Module):
    """2-D rotary embedding: half of each head's channels rotate with the row, half with the column, in adjacent
    pairs (2i, 2i+1) at frequency 10000^(-2i/half); ``num_prefix`` leading tokens (in-context class tokens) are not
    rotated. Hand-written: timm's rotary embeddings use another frequency layout than the released weights'.
    """

    def __init__(self, head_dim: int, grid: int, num_prefix: int = 0):
        super().__init__()
        half = head_dim // 2
        freqs = 1.0 / 10000 ** (torch.arange(0, half, 2).float() / half)  # (half/2,)
        pos = torch.arange(grid).float()  # (G,)
        ang = repeat(pos[:, None] * freqs[None], "g f -> g (f r)", r=2)  # (G, half)
        ang = torch.cat([
            repeat(ang, "h c -> h w c", w=grid),  # row index drives the first half
            repeat(ang, "w c -> h w c", h=grid),  # column index drives the second half
        ], dim=-1).reshape(grid * grid, 2 * half)  # (L, head_dim)
        cos, sin = ang.cos(), ang.sin()
        if num_prefix:
            cos = torch.cat([torch.ones(num_prefix, 2 * half), cos])  # (P + L, head_dim)
            sin = torch.cat([torch.zeros(num_prefix, 2 * half), sin])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def rotate_pairs(x: Tensor) -> Tensor:
        x = rearrange(x, "... (d r) -> ... d r", r=2)
        x1, x2 = x.unbind(-1)
        return rearrange(torch.stack((-x2, x1), dim=-1), "... d r -> ... (d r)")

    def forward(self, x: Tensor) -> Tensor:
        return x * self.cos + self.rotate_pairs(x) * self.sin  # (N, heads, L, head_dim)


def attention_fp32(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """The paper's attention: q.k and softmax in float32. q/k/v: (N, heads, L, head_dim)."""
    scale = q.shape[-1] ** -0.5
    with no_autocast(q):
        logits = (q.float() @ k.float().transpose(-2, -1)) * scale  # (N, heads, L, L)
        weights = torch.softmax(logits, dim=-1)
    if dropout_p > 0:  # a Python test: under torch.compile dropout_p may be symbolic, which F.dropout's flag refuses
        weights = F.dropout(weights, dropout_p)  # (N, heads, L, L)
    return weights.to(v.dtype) @ v  # (N, heads, L, head_dim)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, attn_drop: float, proj_drop: float, impl: AttnImpl):
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl
        self.attn_drop = attn_drop
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, rope: Rope2D | None) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h c) -> three n h l c", three=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)  # (N, H, L, C)
        if rope is not None:
            q, k = rope(q), rope(k)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (N, H, L, C)
        else:
            out = attention_fp32(q, k, v, dropout_p)  # (N, H, L, C)
        return self.proj_drop(self.proj(rearrange(out, "n h l c -> n l (h c)")))  # (N, L, D)


class SwiGLU(nn.Module):
    """SwiGLU MLP, hidden width int(hidden * 2/3); fused ``w12`` as in the release's keys (timm's splits it)."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        hidden = int(hidden * 2 / 3)
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)  # (N, L, hidden) each
        return self.w3(self.drop(F.silu(gate) * value))  # (N, L, D)
