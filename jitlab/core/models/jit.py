"""JiT: a plain ViT on pixel patches (paper.md section 3), with every ablation knob as an argument.

The backbone holds no diffusion logic: ``net(z, t, y)`` maps a noisy image, a time and a class to
an image-shaped output whose meaning (x, eps or v) is decided by ``jitlab.core.flow``.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from einops import rearrange
from timm.layers import Mlp
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jitlab.errors import ConfigError
from jitlab.core.models.spec import record_init_args
from jitlab.core.models.layers import (
    Attention,
    AttnImpl,
    LabelEmbedder,
    NormKind,
    PatchEmbed,
    Rope2D,
    SwiGLU,
    TimestepEmbedder,
    init_conv_as_linear,
    init_linears_xavier,
    init_zero,
    make_norm,
    modulate,
    sincos_pos_embed_2d,
)

MlpKind = Literal["swiglu", "gelu"]


class JiTBlock(nn.Module):
    """norm -> modulate -> attention -> gated residual; norm -> modulate -> MLP -> gated residual.

    The condition c is one per sample (N, D) or one per token (N, L, D) (DiT-DH's head, ``WideHead``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, mlp: MlpKind, norm: NormKind,
                 qk_norm: bool, attn_drop: float, proj_drop: float, attn_impl: AttnImpl):
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, num_heads, qk_norm, attn_drop, proj_drop, attn_impl)
        self.norm2 = make_norm(norm, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, hidden, drop=proj_drop) if mlp == "swiglu" else \
            Mlp(dim, hidden, act_layer=lambda: nn.GELU(approximate="tanh"), drop=proj_drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: Rope2D | None) -> Tensor:
        mods = self.adaLN_modulation(c)  # (N, 6D) or (N, L, 6D)
        if mods.ndim == 2:
            mods = mods.unsqueeze(1)  # (N, 1, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=-1)  # (N, 1|L, D) each
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)  # (N, L, D)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, L, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_dim: int, norm: NormKind):
        super().__init__()
        self.norm_final = make_norm(norm, dim)
        self.linear = nn.Linear(dim, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # (N, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, L, p*p*C)


class JiT(nn.Module):
    """Just image Transformer.

    Args:
        img_size: image height = width; ``None`` lets the CLI take it from the data module.
        patch_size: pixels per patch side; must divide ``img_size``.
        in_channels: image channels.
        hidden_size, depth, num_heads, mlp_ratio: the ViT's width, blocks, heads and MLP ratio.
        bottleneck_dim: the width ``d'`` of the bottleneck patch embedding; ``None`` = one linear map.
        rope, qk_norm: 2-D rotary embedding on q and k; RMSNorm on each head's q and k.
        in_context_len: number of in-context class tokens (0 = none).
        in_context_start: the block before which they are prepended.
        mlp: ``swiglu`` (paper) or ``gelu``; norm: ``rms`` (paper) or ``layer``.
        num_classes: classes of the label table (plus one null class); ``None`` = from the data.
        attn_drop, proj_drop: dropout in the middle half of the blocks only.
        attn_impl: ``fp32`` (the paper's float32 softmax) or ``sdpa`` (fused).
        checkpointing: per-block activation checkpointing in training: each block keeps only its inputs and runs
            its forward again in backward (less memory, about one more forward of compute, the same gradients);
            ``None``: off unless `jitlab fit`'s memory plan turns it on, ``False``: off, and the plan keeps it off.
    """

    def __init__(self, img_size: int | None = None, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = 128, rope: bool = True, qk_norm: bool = True, in_context_len: int = 32,
                 in_context_start: int = 4, mlp: MlpKind = "swiglu", norm: NormKind = "rms",
                 num_classes: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", checkpointing: bool | None = None):
        init_args = record_init_args(locals())
        super().__init__()
        _validate(init_args)
        self.init_args = init_args
        self.img_size, self.patch_size, self.in_channels = img_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.num_classes = num_classes
        self.checkpointing = bool(checkpointing)
        self._compiled_blocks: tuple[Callable[..., Tensor], ...] = ()  # compile_blocks(): views outside the module tree
        self.in_context_len, self.in_context_start = in_context_len, in_context_start
        self.grid = img_size // patch_size
        self.num_patches = self.grid ** 2
        self.patch_dim = patch_size * patch_size * in_channels

        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size, bottleneck_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size), requires_grad=False)
        if in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, in_context_len, hidden_size))
        head_dim = hidden_size // num_heads
        self.rope = Rope2D(head_dim, self.grid) if rope else None
        self.rope_in_context = (Rope2D(head_dim, self.grid, num_prefix=in_context_len)
                                if rope and in_context_len else None)
        middle = range(depth // 4, depth // 4 * 3)  # dropout only in the middle half of the blocks
        self.blocks = nn.ModuleList([
            JiTBlock(hidden_size, num_heads, mlp_ratio, mlp, norm, qk_norm,
                     attn_drop if i in middle else 0.0, proj_drop if i in middle else 0.0, attn_impl)
            for i in range(depth)
        ])
        self.final_layer = FinalLayer(hidden_size, self.patch_dim, norm)
        self.initialize_weights()

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape of one image: (C, H, W)."""
        return (self.in_channels, self.img_size, self.img_size)

    def noise_widths(self) -> dict[str, int]:
        """The widths every token passes through from ``z`` to the output (``PatchBackbone``), by config field."""
        widths = {"hidden_size": self.hidden_size}
        if self.init_args.get("bottleneck_dim") is not None:
            widths = {"bottleneck_dim": self.init_args["bottleneck_dim"], **widths}
        return widths

    def initialize_weights(self) -> None:
        """As in the paper: xavier linears, N(0, 0.02) tables, zero adaLN and output (output is exactly 0)."""
        init_linears_xavier(self.modules())
        if self.pos_embed.device.type != "meta":
            self.pos_embed.data.copy_(sincos_pos_embed_2d(self.hidden_size, self.grid).unsqueeze(0))
        for conv in self.x_embedder.children():
            init_conv_as_linear(conv)
        if self.in_context_len > 0:
            nn.init.normal_(self.in_context_posemb, std=0.02)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        init_zero([*(b.adaLN_modulation[-1] for b in self.blocks), self.final_layer.adaLN_modulation[-1],
                   self.final_layer.linear])

    def compile_blocks(self, **options) -> None:
        """Regional compilation: each block on its own (DDP's buckets and FSDP's per-block shards never split a
        graph), for the training forwards only (sampling on one rank never compiles while the others wait), the
        views outside the module tree (plain state-dict keys); with ``checkpointing`` of the ``training_view``."""
        object.__setattr__(self, "_compiled_blocks", tuple(torch.compile(training_view(block, self.checkpointing),
                                                                         **options) for block in self.blocks))

    def unpatchify(self, x: Tensor) -> Tensor:
        """(N, L, p*p*C) with per-token order (p, p, C) -> (N, C, H, W)."""
        p = self.patch_size
        return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=self.grid, p=p, q=p)

    def trunk(self, x: Tensor, t: Tensor, y: Tensor, prefix: Tensor | None = None,
              ropes: tuple[Rope2D | None, Rope2D | None] | None = None) -> tuple[Tensor, Tensor]:
        """The blocks' output (N, [P +] [K +] L, D) and the conditioning c (N, D); the last L tokens are the image's.

        Heads that need more than the image run this (REG's token, Table 11's features, DiT-DH's head). x: (N, C, H, W)
        noisy image; ``prefix``: (N, K, D) extra tokens before the image tokens from the first block on (the
        in-context class tokens go before them at ``in_context_start``); ``ropes``: the rotary embeddings before and
        after the in-context tokens join (default ``rope``, ``rope_in_context``), leaving the K prefix unrotated.
        """
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y)  # (N, D)
        c = t_emb + y_emb  # (N, D)
        h = self.x_embedder(x) + self.pos_embed.to(x.dtype)  # (N, L, D)
        if prefix is not None:
            h = torch.cat([prefix.to(h.dtype), h], dim=1)  # (N, K + L, D)
        rope, rope_in_context = ropes if ropes is not None else (self.rope, self.rope_in_context)
        for i, block in enumerate(self.blocks):
            if self.in_context_len > 0 and i == self.in_context_start:
                tokens = y_emb.unsqueeze(1) + self.in_context_posemb  # (N, P, D)
                h = torch.cat([tokens.to(h.dtype), h], dim=1)  # (N, P + K + L, D)
                rope = rope_in_context
            compiled = self._compiled_blocks[i] if self._compiled_blocks else None
            h = block_forward(block, compiled, self.checkpointing, h, c, rope)  # (N, [P +] [K +] L, D)
        return h, c

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x: (N, C, H, W) noisy image z; t: (N,) in [0, 1]; y: (N,) labels, ``num_classes`` = null."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input of size {tuple(x.shape[-2:])} does not match img_size={self.img_size}")
        h, c = self.trunk(x, t, y)  # (N, [P +] L, D), (N, D)
        return self.unpatchify(self.final_layer(h[:, -self.num_patches:], c))  # image tokens only: (N, C, H, W)


def training_view(block: nn.Module, checkpointing: bool) -> Callable[..., Tensor]:
    """What a training forward runs: the block, or the block recomputed in backward (it keeps only its inputs;
    ``use_reentrant=False`` replays the RNG state, so dropout draws the same masks). This is the unit
    ``compile_blocks`` compiles: the recomputation then happens inside the compiled graph (a checkpoint around a
    compiled block could recompute through another graph than the forward's after a recompilation)."""
    if not checkpointing:
        return block

    def recomputed(h: Tensor, c: Tensor, rope: Rope2D | None) -> Tensor:
        if not torch.is_grad_enabled():
            return block(h, c, rope)  # (N, L, D)
        return checkpoint(block, h, c, rope, use_reentrant=False)  # (N, L, D)

    return recomputed


def block_forward(block: nn.Module, compiled: Callable[..., Tensor] | None, checkpointing: bool, h: Tensor,
                  c: Tensor, rope: Rope2D | None) -> Tensor:
    """One block's forward: in training its compiled view (``compile_blocks``) or its training view; in eval mode
    the plain block."""
    if not block.training:
        return block(h, c, rope)  # (N, L, D)
    run = compiled if compiled is not None else training_view(block, checkpointing)
    return run(h, c, rope)  # (N, L, D)


def _validate(args: dict) -> None:
    def need(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ConfigError(field, message)

    img, p = args["img_size"], args["patch_size"]
    need(img is not None, "img_size", "must be set (the CLI fills it from data.resolution)")
    need(args["num_classes"] is not None, "num_classes", "must be set (the CLI fills it from the data module)")
    need(p > 0 and img > 0, "patch_size", f"patch_size and img_size must be positive, got {p} and {img}")
    need(img % p == 0, "patch_size", f"patch_size={p} does not divide img_size={img}; valid: a divisor of {img}")
    d, heads = args["hidden_size"], args["num_heads"]
    need(heads > 0 and d % heads == 0, "hidden_size", f"hidden_size={d} is not divisible by num_heads={heads}")
    need(d % 4 == 0, "hidden_size", f"hidden_size={d} must be divisible by 4 (2-D sin-cos position embedding)")
    need(not args["rope"] or (d // heads) % 4 == 0, "num_heads",
         f"2-D RoPE needs a head dimension divisible by 4, got {d // heads} (hidden_size={d}, num_heads={heads})")
    depth = args["depth"]
    need(depth > 0, "depth", f"must be positive, got {depth}")
    need(args["in_context_len"] >= 0, "in_context_len", "must be >= 0 (0 = no in-context class tokens)")
    start = args["in_context_start"]
    need(args["in_context_len"] == 0 or 0 <= start < depth, "in_context_start",
         f"in_context_start={start} is beyond the depth; valid: 0 to {depth - 1} (depth={depth})")
    bottleneck = args["bottleneck_dim"]
    need(bottleneck is None or bottleneck > 0, "bottleneck_dim", f"must be positive or null, got {bottleneck}")
    for name in ("attn_drop", "proj_drop"):
        need(0.0 <= args[name] < 1.0, name, f"must lie in [0, 1), got {args[name]}")
