"""The JiT backbone against paper.md section 3 and the authors' release (keys, sizes, cost, layers); its knobs
are in test_model_knobs.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from jitlab.errors import ConfigError
from jitlab.core.models.flops import count_gmacs, count_params, describe
from jitlab.core.models import MODELS, JiT, build_model
from jitlab.core.models.layers import Rope2D, sincos_pos_embed_2d, timestep_embedding

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def meta_model(name: str, img_size: int, **overrides) -> JiT:
    with torch.device("meta"):
        return build_model(name, img_size=img_size, **overrides)


def small(name: str = "JiT-P/4", img_size: int = 32, seed: int = 0, **overrides) -> JiT:
    torch.manual_seed(seed)
    return build_model(name, img_size=img_size, num_classes=10, **overrides)


def zero_init_layers(net: JiT) -> list[nn.Linear]:
    """The layers initialised to zero (adaLN-Zero and the output projection)."""
    return [*(b.adaLN_modulation[-1] for b in net.blocks), net.final_layer.adaLN_modulation[-1], net.final_layer.linear]


@torch.no_grad()
def wake(net: JiT, seed: int = 1, std: float = 0.05) -> JiT:
    """Make the zero-initialised layers non-zero so that every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    for layer in zero_init_layers(net):
        for p in (layer.weight, layer.bias):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def inputs(net: JiT, n: int = 2, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *net.sample_shape, generator=g)
    t = torch.rand(n, generator=g)
    y = torch.randint(0, net.num_classes + 1, (n,), generator=g)  # includes the null class
    return x, t, y


# ----------------------------------------------------------------------------------------------
# Registry, parameter counts and cost
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_every_registry_entry_builds_on_meta(name):
    patch = MODELS[name]["patch_size"]
    net = meta_model(name, img_size=4 * patch)
    assert isinstance(net, JiT)
    assert net.num_patches == 16 and net.patch_dim == patch * patch * 3
    assert len(net.blocks) == MODELS[name]["depth"]
    assert net.x_embedder.proj1.weight.shape == (MODELS[name]["bottleneck_dim"], 3, patch, patch)
    assert all(p.device.type == "meta" for p in net.parameters())
    assert count_params(net) > 0


PAPER_COST = [  # (name, img_size, params in millions, GMACs) from paper.md section 3
    ("JiT-B/16", 256, 131.3, 25.2),
    ("JiT-B/32", 512, 133.4, 25.8),
    ("JiT-B/64", 1024, 141.7, 27.9),
    ("JiT-L/16", 256, 459.1, 87.9),
    ("JiT-H/16", 256, 952.8, 182.0),
    ("JiT-G/16", 256, 2007.6, 383.7),
]


@pytest.mark.parametrize("name,img_size,mparams,gmacs", PAPER_COST, ids=[c[0] for c in PAPER_COST])
def test_params_and_gmacs_match_the_release(name, img_size, mparams, gmacs):
    net = meta_model(name, img_size, num_classes=1000)
    assert count_params(net) / 1e6 == pytest.approx(mparams, rel=0.01)
    assert count_gmacs(net) == pytest.approx(gmacs, rel=0.01)
    assert net.num_patches == 256


def test_describe_reports_the_model():
    row = describe("JiT-B/16", 256)
    assert row["params"] / 1e6 == pytest.approx(131.3, rel=0.01)
    assert row["gmacs"] == pytest.approx(25.2, rel=0.01)
    assert (row["tokens"], row["patch_dim"], row["hidden_size"], row["depth"], row["bottleneck_dim"]) == (
        256, 768, 768, 12, 128)


def test_gmacs_scale_with_batch():
    net = meta_model("JiT-B/16", 256)
    assert count_gmacs(net, batch=2) == pytest.approx(2 * count_gmacs(net, batch=1), rel=1e-9)


def test_state_dict_matches_the_released_checkpoint():
    ref = json.loads((FIXTURES / "official_jit_b16_keys.json").read_text())
    assert (ref["model"], ref["img_size"], ref["num_classes"]) == ("JiT-B/16", 256, 1000)
    expected = {k.removeprefix("net."): tuple(shape) for k, shape in ref["keys"].items()}
    assert len(expected) == 183
    net = meta_model("JiT-B/16", 256, num_classes=1000)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(got) - set(expected)) == [], "keys the release does not have"
    assert sorted(set(expected) - set(got)) == [], "release keys we do not have"
    assert {k: s for k, s in got.items() if s != expected[k]} == {}, "shape mismatches"


# ----------------------------------------------------------------------------------------------
# Forward, backward and initialisation on CPU
# ----------------------------------------------------------------------------------------------

SMALL = [("JiT-P/4", 32), ("JiT-T/8", 64)]


@pytest.mark.parametrize("name,img_size", SMALL)
def test_untrained_network_outputs_exactly_zero(name, img_size):
    net = small(name, img_size)
    x, t, y = inputs(net, n=3)
    with torch.no_grad():
        out = net(x, t, y)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize("name,img_size", SMALL)
def test_at_init_only_the_output_layer_gets_gradient(name, img_size):
    """adaLN-Zero: with the final linear at zero, no gradient flows past it."""
    net = small(name, img_size)
    x, t, y = inputs(net)
    target = torch.randn_like(x)
    (net(x, t, y) - target).pow(2).mean().backward()
    nonzero = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert nonzero == {"final_layer.linear.weight", "final_layer.linear.bias"}


@pytest.mark.parametrize("name,img_size", SMALL)
def test_forward_backward_reaches_every_trainable_parameter(name, img_size):
    net = wake(small(name, img_size))
    x, t, y = inputs(net, n=3)
    x.requires_grad_(True)
    out = net(x, t, y)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    out.pow(2).mean().backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    missing = sorted(n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0)
    assert missing == []
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the fixed sin-cos position embedding is not trained
    assert not net.pos_embed.requires_grad and net.pos_embed.grad is None


def test_initialisation_follows_the_paper():
    net = small("JiT-T/8", 64)
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    # xavier-uniform on a block linear: |w| <= sqrt(6 / (fan_in + fan_out)), reaching close to the bound
    qkv = net.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (qkv.shape[0] + qkv.shape[1]))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.99 * bound
    # the patch embedding viewed as a linear map: fan_out = d' (not d' * p * p as for a conv)
    w1 = net.x_embedder.proj1.weight  # (d', C, p, p)
    bound = math.sqrt(6 / (w1.shape[0] + w1[0].numel()))
    assert w1.abs().max() <= bound and w1.abs().max() > 0.99 * bound
    assert torch.equal(net.x_embedder.proj2.bias, torch.zeros_like(net.x_embedder.proj2.bias))
    # N(0, 0.02) tables
    assert net.y_embedder.embedding_table.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert net.t_embedder.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert net.in_context_posemb.std().item() == pytest.approx(0.02, rel=0.2)
    for layer in zero_init_layers(net):
        assert torch.equal(layer.weight, torch.zeros_like(layer.weight))
    assert torch.equal(net.pos_embed[0], sincos_pos_embed_2d(net.hidden_size, net.grid))


def test_wrong_input_size_is_rejected():
    net = small("JiT-P/4", 32)
    with pytest.raises(ValueError, match="img_size=32"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_unpatchify_order_is_p_p_c():
    net = small("JiT-P/4", 8)  # grid 2, patch 4, 3 channels
    p, c, grid = 4, 3, 2
    tokens = torch.arange(1 * grid * grid * p * p * c, dtype=torch.float32).reshape(1, grid * grid, p * p * c)
    img = net.unpatchify(tokens)
    assert img.shape == (1, 3, 8, 8)
    for h in range(grid):
        for w in range(grid):
            for i in range(p):
                for j in range(p):
                    for ch in range(c):
                        assert img[0, ch, h * p + i, w * p + j] == tokens[0, h * grid + w, (i * p + j) * c + ch]


# ----------------------------------------------------------------------------------------------
# RoPE, time and position embeddings
# ----------------------------------------------------------------------------------------------

HEAD_DIM, GRID = 16, 5


def _tok(r: int, c: int) -> int:
    return r * GRID + c  # row-major tokens, as the patch embedding lays them out


def test_rope_preserves_norms():
    rope = Rope2D(HEAD_DIM, GRID)
    x = torch.randn(2, 3, GRID * GRID, HEAD_DIM, dtype=torch.float32)
    rx = rope(x)
    assert not torch.allclose(rx, x)
    assert_close(rx.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-6)


def test_rope_first_half_rotates_with_the_row_second_half_with_the_column():
    rope = Rope2D(HEAD_DIM, GRID)
    half = HEAD_DIM // 2
    freqs = [10000 ** (-2 * i / half) for i in range(half // 2)]  # pair (2i, 2i+1) at 10000^(-2i/half)
    for r, c in [(0, 0), (1, 3), (4, 2), (2, 4)]:
        angles = [r * f for f in freqs for _ in range(2)] + [c * f for f in freqs for _ in range(2)]
        assert_close(rope.cos[_tok(r, c)], torch.tensor([math.cos(a) for a in angles]), rtol=1e-5, atol=1e-6)
        assert_close(rope.sin[_tok(r, c)], torch.tensor([math.sin(a) for a in angles]), rtol=1e-5, atol=1e-6)


def test_rope_rotates_adjacent_pairs_by_hand():
    """Pair (a, b) at angle th -> (a cos th - b sin th, b cos th + a sin th), the release's rotate_half."""
    rope = Rope2D(HEAD_DIM, GRID)
    x = torch.arange(1.0, HEAD_DIM + 1).expand(1, 1, GRID * GRID, HEAD_DIM)
    rx = rope(x)[0, 0]
    for tok in [_tok(1, 2), _tok(4, 3)]:
        for pair in range(HEAD_DIM // 2):
            a, b = x[0, 0, tok, 2 * pair].item(), x[0, 0, tok, 2 * pair + 1].item()
            c, s = rope.cos[tok, 2 * pair].item(), rope.sin[tok, 2 * pair].item()
            assert rope.cos[tok, 2 * pair + 1].item() == c and rope.sin[tok, 2 * pair + 1].item() == s
            assert rx[tok, 2 * pair].item() == pytest.approx(a * c - b * s, abs=1e-5)
            assert rx[tok, 2 * pair + 1].item() == pytest.approx(b * c + a * s, abs=1e-5)


def _rotated_dots(rope: Rope2D, seed: int = 0) -> torch.Tensor:
    """q.k after rotation for the same q and k placed at every position: (L, L)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(HEAD_DIM, generator=g, dtype=torch.float64)
    k = torch.randn(HEAD_DIM, generator=g, dtype=torch.float64)
    n = rope.cos.shape[0]
    rope = rope.double()
    rq = rope(q.expand(1, 1, n, HEAD_DIM))[0, 0]
    rk = rope(k.expand(1, 1, n, HEAD_DIM))[0, 0]
    return rq @ rk.T


def test_rope_dot_product_depends_only_on_the_position_difference():
    dots = _rotated_dots(Rope2D(HEAD_DIM, GRID))

    def dot(a, b):
        return dots[_tok(*a), _tok(*b)]

    pairs_by_offset = {
        (0, 1): [((0, 0), (0, 1)), ((3, 2), (3, 3)), ((4, 3), (4, 4))],  # along a row
        (1, 0): [((0, 0), (1, 0)), ((2, 3), (3, 3)), ((3, 4), (4, 4))],  # along a column
        (2, -3): [((0, 3), (2, 0)), ((1, 4), (3, 1)), ((2, 3), (4, 0))],
        (0, 0): [((0, 0), (0, 0)), ((2, 2), (2, 2)), ((4, 1), (4, 1))],
    }
    per_offset = {}
    for offset, pairs in pairs_by_offset.items():
        values = torch.stack([dot(a, b) for a, b in pairs])
        # float32 angles: agreement to ~1e-7 relative
        assert_close(values, values[0].expand_as(values), rtol=1e-6, atol=1e-6)
        per_offset[offset] = values[0]
    # ... and does depend on it
    vals = torch.stack(list(per_offset.values()))
    assert (vals[:, None] - vals[None]).abs().add(torch.eye(len(vals))).min() > 1e-3


def test_rope_does_not_rotate_in_context_prefix_tokens():
    prefix = 3
    plain, with_prefix = Rope2D(HEAD_DIM, GRID), Rope2D(HEAD_DIM, GRID, num_prefix=prefix)
    assert torch.equal(with_prefix.cos[:prefix], torch.ones(prefix, HEAD_DIM))
    assert torch.equal(with_prefix.sin[:prefix], torch.zeros(prefix, HEAD_DIM))
    x = torch.randn(2, 3, prefix + GRID * GRID, HEAD_DIM)
    rx = with_prefix(x)
    assert torch.equal(rx[:, :, :prefix], x[:, :, :prefix])
    assert torch.equal(rx[:, :, prefix:], plain(x[:, :, prefix:]))
    # the model's in-context rope uses the same layout
    net = small("JiT-P/4", 32)
    assert net.rope_in_context.cos.shape == (4 + 64, 32)
    assert torch.equal(net.rope_in_context.cos[:4], torch.ones(4, 32))
    assert torch.equal(net.rope_in_context.sin[:4], torch.zeros(4, 32))
    assert torch.equal(net.rope_in_context.cos[4:], net.rope.cos)


def test_timestep_embedding_by_hand():
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = timestep_embedding(t)
    assert emb.shape == (3, 256)
    assert torch.equal(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    for n, tv in enumerate([0.0, 0.5, 1.0]):
        freqs = [math.exp(-math.log(10000) * k / 128) for k in range(128)]
        expected = [math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs]  # cos half first
        assert_close(emb[n], torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # t is not scaled to 1000: at t = 1 the lowest frequency's argument is 1 radian
    assert emb[2, 0].item() == pytest.approx(math.cos(1.0), abs=1e-6)


def test_sincos_position_embedding_by_hand():
    dim, grid = 16, 3
    pe = sincos_pos_embed_2d(dim, grid)
    assert pe.shape == (grid * grid, dim)
    q = dim // 4
    # first token: column 0 and row 0 -> [sin(0)... cos(0)... sin(0)... cos(0)...]
    assert torch.equal(pe[0], torch.cat([torch.zeros(q), torch.ones(q), torch.zeros(q), torch.ones(q)]))
    omega = [1 / 10000 ** (k / q) for k in range(q)]

    def expected(r, c):
        return ([math.sin(c * w) for w in omega] + [math.cos(c * w) for w in omega]
                + [math.sin(r * w) for w in omega] + [math.cos(r * w) for w in omega])

    for r, c in [(0, 1), (1, 0), (2, 1)]:  # first half encodes the column, second the row
        assert_close(pe[r * grid + c], torch.tensor(expected(r, c), dtype=torch.float32), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Invalid configurations
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("img_size,overrides,field", [
    (30, dict(), "patch_size"),  # 4 does not divide 30
    (32, dict(hidden_size=100, num_heads=3), "hidden_size"),
    (32, dict(in_context_start=4), "in_context_start"),  # depth 4
    (32, dict(in_context_start=9), "in_context_start"),
    (None, dict(), "img_size"),
    (32, dict(num_classes=None), "num_classes"),
    (32, dict(proj_drop=1.0), "proj_drop"),
    (32, dict(bottleneck_dim=0), "bottleneck_dim"),
])
def test_invalid_configs_name_the_field(img_size, overrides, field):
    kwargs = dict(num_classes=10)
    kwargs.update(overrides)
    with pytest.raises(ConfigError) as info:
        with torch.device("meta"):
            build_model("JiT-P/4", img_size=img_size, **kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_in_context_start_is_free_without_in_context_tokens():
    net = meta_model("JiT-P/4", 32, num_classes=10, in_context_len=0, in_context_start=99)
    assert not hasattr(net, "in_context_posemb")


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(KeyError, match="JiT-B/16"):
        build_model("JiT-Q/16", img_size=256)
