"""The JiT backbone's knobs: no bottleneck, RoPE, qk-norm, in-context tokens, MLP, norm, dropout in the middle
blocks and the two attention implementations each build, run, change what they should and nothing else."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from jitlab.core.models import MODELS, JiT
from jitlab.core.models.flops import count_params
from jitlab.core.models.layers import Rope2D, RMSNorm
from tests.test_models import SMALL, inputs, meta_model, small, wake

def test_bottleneck_none_is_a_single_linear_patch_embedding():
    with_b = small("JiT-P/4", 32)
    without = small("JiT-P/4", 32, bottleneck_dim=None)
    assert hasattr(without.x_embedder, "proj") and not hasattr(without.x_embedder, "proj1")
    assert not hasattr(with_b.x_embedder, "proj") and hasattr(with_b.x_embedder, "proj1")
    assert without.x_embedder.proj.weight.shape == (96, 3, 4, 4)
    patch_dim, d_, hidden = 48, 32, 96
    bottleneck = patch_dim * d_ + d_ * hidden + hidden  # proj1 (no bias) + proj2 (bias)
    single = patch_dim * hidden + hidden
    assert count_params(with_b) - count_params(without) == bottleneck - single
    x, t, y = inputs(wake(without))
    assert without(x, t, y).shape == x.shape


@pytest.mark.parametrize("overrides", [
    dict(rope=False),
    dict(rope=True),
    dict(qk_norm=False),
    dict(in_context_len=0),
    dict(mlp="gelu"),
    dict(norm="layer"),
    dict(rope=False, qk_norm=False, in_context_len=0, mlp="gelu", norm="layer", bottleneck_dim=None),
], ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_knobs_build_and_run(overrides):
    net = wake(small("JiT-P/4", 32, **overrides))
    x, t, y = inputs(net)
    out = net(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0
    out.pow(2).mean().backward()
    assert net.x_embedder.linear_weights()[0].grad.abs().sum() > 0


def test_knobs_change_the_modules():
    from timm.layers import Mlp

    from jitlab.core.models.layers import SwiGLU

    net = small("JiT-P/4", 32, rope=False, qk_norm=False, in_context_len=0, mlp="gelu", norm="layer")
    assert net.rope is None and net.rope_in_context is None
    assert not hasattr(net, "in_context_posemb")
    block = net.blocks[0]
    assert isinstance(block.attn.q_norm, nn.Identity) and isinstance(block.attn.k_norm, nn.Identity)
    assert isinstance(block.mlp, Mlp) and isinstance(block.norm1, nn.LayerNorm)
    assert isinstance(net.final_layer.norm_final, nn.LayerNorm)
    default = small("JiT-P/4", 32)
    block = default.blocks[0]
    assert isinstance(default.rope, Rope2D) and isinstance(default.rope_in_context, Rope2D)
    assert isinstance(block.attn.q_norm, RMSNorm) and isinstance(block.mlp, SwiGLU)
    assert isinstance(block.norm1, RMSNorm) and block.norm1.eps == 1e-6
    # SwiGLU hidden width int(mlp_ratio * hidden * 2/3)
    assert block.mlp.w12.out_features == 2 * int(4 * 96 * 2 / 3)


@torch.no_grad()
def test_rope_and_qk_norm_change_the_output():
    ref = wake(small("JiT-P/4", 32))
    x, t, y = inputs(ref)
    out = ref(x, t, y)
    no_rope = small("JiT-P/4", 32, rope=False)
    no_rope.load_state_dict(ref.state_dict())  # rope buffers are not persistent: same keys
    assert not torch.allclose(no_rope(x, t, y), out, atol=1e-4)
    no_qk = small("JiT-P/4", 32, qk_norm=False)
    no_qk.load_state_dict({k: v for k, v in ref.state_dict().items() if "_norm." not in k or "attn" not in k})
    assert not torch.allclose(no_qk(x, t, y), out, atol=1e-4)


@torch.no_grad()
def test_label_reaches_the_output_through_the_in_context_tokens():
    """With the adaLN inputs cut (weights 0, biases non-zero), the label can act only via the tokens."""
    def label_only_via_tokens(net: JiT) -> JiT:
        wake(net)
        for block_or_final in [*net.blocks, net.final_layer]:
            block_or_final.adaLN_modulation[-1].weight.zero_()
        return net

    with_tokens = label_only_via_tokens(small("JiT-P/4", 32))
    without = small("JiT-P/4", 32, in_context_len=0)
    without.load_state_dict({k: v for k, v in with_tokens.state_dict().items() if k != "in_context_posemb"})
    x, t, _ = inputs(with_tokens)
    y1, y2 = torch.tensor([1, 1]), torch.tensor([2, 10])  # 10 = the null class
    assert torch.equal(without(x, t, y1), without(x, t, y2))
    diff = (with_tokens(x, t, y1) - with_tokens(x, t, y2)).abs()
    assert diff.amax(dim=(1, 2, 3)).min() > 1e-6


def test_in_context_tokens_are_prepended_at_in_context_start_and_dropped():
    net = wake(small("JiT-T/8", 64))  # depth 6, 8 tokens from block 2
    lengths = []
    hooks = [b.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1])) for b in net.blocks]
    final = []
    hooks.append(net.final_layer.register_forward_pre_hook(lambda m, args: final.append(args[0].shape[1])))
    x, t, y = inputs(net)
    with torch.no_grad():
        net(x, t, y)
    for h in hooks:
        h.remove()
    assert lengths == [64, 64, 72, 72, 72, 72]
    assert final == [64]


@pytest.mark.parametrize("name,depth,middle", [
    ("JiT-P/4", 4, {1, 2}),
    ("JiT-T/8", 6, {1, 2}),
    ("JiT-B/16", 12, set(range(3, 9))),
    ("JiT-H/16", 32, set(range(8, 24))),
])
def test_dropout_only_in_the_middle_half_of_the_blocks(name, depth, middle):
    net = meta_model(name, img_size=MODELS[name]["patch_size"] * 2, num_classes=10, attn_drop=0.1, proj_drop=0.2)
    assert len(net.blocks) == depth
    for i, block in enumerate(net.blocks):
        inside = i in middle
        assert block.attn.attn_drop == (0.1 if inside else 0.0), i
        assert block.attn.proj_drop.p == (0.2 if inside else 0.0), i
        assert block.mlp.drop.p == (0.2 if inside else 0.0), i


@torch.no_grad()
def test_dropout_is_off_in_eval_and_on_in_train():
    net = wake(small("JiT-P/4", 32, attn_drop=0.3, proj_drop=0.3))
    plain = small("JiT-P/4", 32)
    plain.load_state_dict(net.state_dict())
    x, t, y = inputs(net)
    net.eval()
    assert torch.equal(net(x, t, y), plain(x, t, y))
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net(x, t, y), plain(x, t, y), atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("name,img_size", SMALL)
def test_sdpa_and_fp32_attention_agree(name, img_size):
    fp32 = wake(small(name, img_size, attn_impl="fp32"))
    sdpa = small(name, img_size, seed=5, attn_impl="sdpa")
    sdpa.load_state_dict(fp32.state_dict())
    x, t, y = inputs(fp32, n=3)
    a, b = fp32(x, t, y), sdpa(x, t, y)
    assert a.abs().max() > 1e-3
    assert_close(a, b, rtol=1e-4, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("impl", ["fp32", "sdpa"])
def test_attention_by_hand(impl):
    """qkv -> per-head RMSNorm on q, k -> RoPE on q and k -> softmax(q k^T / sqrt(c)) v -> proj."""
    from jitlab.core.models.layers import Attention

    torch.manual_seed(3)
    dim, heads, grid = 32, 2, 3
    attn = Attention(dim, heads, qk_norm=True, attn_drop=0.0, proj_drop=0.0, impl=impl)
    for norm in (attn.q_norm, attn.k_norm):
        norm.weight.copy_(torch.rand(dim // heads) + 0.5)
    rope = Rope2D(dim // heads, grid)
    x = torch.randn(2, grid * grid, dim)
    got = attn(x, rope)

    c = dim // heads
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias  # (N, L, 3D) laid out as (three, heads, c)
    q, k, v = (qkv[..., i * dim:(i + 1) * dim].reshape(2, -1, heads, c).transpose(1, 2) for i in range(3))

    def rms(u, w):
        return u / torch.sqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    q, k = rope(rms(q, attn.q_norm.weight)), rope(rms(k, attn.k_norm.weight))
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(2, -1, dim)
    assert_close(got, out @ attn.proj.weight.T + attn.proj.bias, rtol=1e-5, atol=1e-5)
