"""JiT's forward up to its final layer, with room for extra leading tokens (REG's token) and a features tap.

``JiT.forward`` returns only the image; REG appends a token to the sequence and Table 11 reads the blocks'
output. Both run this instead: the same steps as ``JiT.forward`` (tested equal), on JiT's own modules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jitlab.core.models.jit import JiT
from jitlab.core.models.layers import Rope2D


def jit_trunk(net: JiT, x: Tensor, t: Tensor, y: Tensor, prefix: Tensor | None = None,
              ropes: tuple[Rope2D | None, Rope2D | None] | None = None) -> tuple[Tensor, Tensor]:
    """The blocks' output (N, [P +] [K +] L, D) and the conditioning c (N, D) of JiT ``net``.

    x: (N, C, H, W) noisy image; ``prefix``: (N, K, D) extra tokens placed before the image tokens from the first
    block on (the in-context class tokens, if any, go before them at ``in_context_start``); ``ropes``: the rotary
    embeddings before and after the in-context tokens join (default ``net.rope``, ``net.rope_in_context``), which
    must leave the K prefix tokens unrotated. The last L tokens are the image's.
    """
    t_emb = net.t_embedder(t)  # (N, D)
    y_emb = net.y_embedder(y)  # (N, D)
    c = t_emb + y_emb  # (N, D)
    h = net.x_embedder(x) + net.pos_embed.to(x.dtype)  # (N, L, D)
    if prefix is not None:
        h = torch.cat([prefix.to(h.dtype), h], dim=1)  # (N, K + L, D)
    rope, rope_in_context = ropes if ropes is not None else (net.rope, net.rope_in_context)
    for i in range(net.depth):
        if net.in_context_len > 0 and i == net.in_context_start:
            tokens = y_emb.unsqueeze(1) + net.in_context_posemb  # (N, P, D)
            h = torch.cat([tokens.to(h.dtype), h], dim=1)  # (N, P + K + L, D)
            rope = rope_in_context
        h = net.run_block(i, h, c, rope)  # (N, [P +] [K +] L, D): compiled / checkpointed as switched on
    return h, c
