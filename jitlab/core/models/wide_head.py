"""RAE's DiT-DH (Zheng et al. 2025, after DDT): a narrow JiT trunk followed by a wide, shallow head.

RAE's Theorem 1: a denoiser of width below the token dimension cannot output the noise (or v) of a token. DiT-DH
keeps a narrow backbone and adds a head of its own width: the head re-embeds the noisy input ``z`` patch-wise at
``head_width`` (no bottleneck), runs ``head_depth`` blocks whose adaLN is conditioned per token on the trunk's output
token (projected to ``head_width``, plus the trunk's conditioning ``c = t_emb + y_emb``), and its output layer maps
``head_width`` to the patch. Every token passes from ``z`` to the output at ``head_width``, so the rank argument
(``noise_widths``) reads the head's width; the trunk's width only shapes the condition. The trunk is a JiT (its
arguments, as RAE's backbone is a DiT) without its output layer (``JiT.trunk``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jitlab.core.models.jit import JiT, JiTBlock, MlpKind, block_forward, training_view
from jitlab.core.models.layers import AttnImpl, NormKind, PatchEmbed, Rope2D, init_conv_as_linear, \
    init_linears_xavier, init_zero, make_norm, modulate, sincos_pos_embed_2d
from jitlab.core.models.spec import need, record_init_args

HEAD_ARGS = ("head_width", "head_depth", "head_heads")


class WideHead(JiT):
    """A narrow JiT trunk + a wide shallow head (DiT-DH). Args: JiT's (the trunk's), and

        head_width: the head's width (RAE at paper scale: 2048 after a 1152-wide DiT-XL for 768-d tokens).
        head_depth: the head's blocks (RAE: 2).
        head_heads: the head's attention heads (``head_width`` must be divisible by it).
    """

    def __init__(self, img_size: int | None = None, patch_size: int = 16, in_channels: int = 3,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = 128, rope: bool = True, qk_norm: bool = True, in_context_len: int = 32,
                 in_context_start: int = 4, mlp: MlpKind = "swiglu", norm: NormKind = "rms",
                 num_classes: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: AttnImpl = "fp32", checkpointing: bool | None = None,
                 head_width: int = 2048, head_depth: int = 2, head_heads: int = 16):
        init_args = record_init_args(locals())  # explicit JiT arguments: the CLI and preflight read the signature
        super().__init__(**{k: v for k, v in init_args.items() if k not in HEAD_ARGS})
        self.init_args = init_args
        _validate_head(head_width, head_depth, head_heads, rope)
        del self.final_layer  # the trunk's output layer: the head writes the output (no unused parameters in DDP)
        self.head_width, self.head_depth = head_width, head_depth
        self.head_embedder = PatchEmbed(patch_size, in_channels, head_width, None)
        self.head_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, head_width), requires_grad=False)
        self.head_cond = nn.Linear(hidden_size, head_width)  # trunk token (+ c) -> the head's per-token condition
        self.head_rope = Rope2D(head_width // head_heads, self.grid) if rope else None
        self.head_blocks = nn.ModuleList([JiTBlock(head_width, head_heads, mlp_ratio, mlp, norm, qk_norm, 0.0, 0.0,
                                                   attn_impl) for _ in range(head_depth)])  # no dropout
        self.head_norm = make_norm(norm, head_width)
        self.head_modulation = nn.Sequential(nn.SiLU(), nn.Linear(head_width, 2 * head_width))
        self.head_out = nn.Linear(head_width, self.patch_dim)
        self._compiled_head: tuple = ()  # compile_blocks(): views outside the module tree
        # as JiT's: xavier linears, fixed sin-cos positions, zero adaLN and output (an untrained net outputs 0)
        init_linears_xavier([self.head_cond, *self.head_blocks.modules()])
        if self.head_pos_embed.device.type != "meta":
            self.head_pos_embed.data.copy_(sincos_pos_embed_2d(self.head_width, self.grid).unsqueeze(0))
        init_conv_as_linear(self.head_embedder.proj)
        init_zero([*(b.adaLN_modulation[-1] for b in self.head_blocks), self.head_modulation[-1], self.head_out])

    def compile_blocks(self, **options) -> None:
        """The trunk's blocks and the head's, each compiled on its own (``JiT.compile_blocks``)."""
        super().compile_blocks(**options)
        object.__setattr__(self, "_compiled_head", tuple(torch.compile(training_view(b, self.checkpointing), **options)
                                                         for b in self.head_blocks))

    def noise_widths(self) -> dict[str, int]:
        """Every token goes from ``z`` to the output through the head only (``PatchBackbone``)."""
        return {"head_width": self.head_width}

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x: (N, C, H, W) noisy image z; t: (N,) in [0, 1]; y: (N,) labels, ``num_classes`` = null."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input of size {tuple(x.shape[-2:])} does not match img_size={self.img_size}")
        s, c = self.trunk(x, t, y)  # (N, [P +] L, D), (N, D)
        s = s[:, -self.num_patches:]  # the image tokens: (N, L, D)
        cond = self.head_cond(s + c.unsqueeze(1))  # (N, L, W)
        h = self.head_embedder(x) + self.head_pos_embed.to(x.dtype)  # (N, L, W): z re-embedded at the head's width
        for i, block in enumerate(self.head_blocks):  # compiled / checkpointed as the trunk's blocks
            compiled = self._compiled_head[i] if self._compiled_head else None
            h = block_forward(block, compiled, self.checkpointing, h, cond, self.head_rope)  # (N, L, W)
        shift, scale = self.head_modulation(cond).chunk(2, dim=-1)  # (N, L, W) each
        out = self.head_out(modulate(self.head_norm(h), shift, scale))  # (N, L, p*p*C)
        return self.unpatchify(out)  # (N, C, H, W)


def _validate_head(width: int, depth: int, heads: int, rope: bool) -> None:
    need(isinstance(width, int) and width > 0 and width % 4 == 0, "head_width",
         f"must be a positive multiple of 4 (2-D sin-cos positions), got {width!r}")
    need(isinstance(depth, int) and depth >= 1, "head_depth", f"must be >= 1, got {depth!r}")
    need(isinstance(heads, int) and heads > 0 and width % heads == 0, "head_heads",
         f"head_width={width} is not divisible by head_heads={heads}")
    need(not rope or (width // heads) % 4 == 0, "head_heads", f"2-D RoPE needs a head dimension divisible by 4, "
         f"got {width // heads} (head_width={width}, head_heads={heads})")
