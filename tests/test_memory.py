"""The memory model counts what autograd saves: scaled = full, fake = real, info = an independent count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jitlab.core.flow import Flow, FlowConfig
from jitlab.core.models.jit import JiT
from jitlab.core.models.memory import (
    COMPILED_BATCH,
    NotCountable,
    compiled_block,
    count_full,
    counted_activations,
    fake_mode,
    probe,
)

# a small JiT with every kind of block: before and after the in-context tokens, with and without dropout
SMALL = dict(img_size=32, patch_size=4, hidden_size=48, depth=8, num_heads=3, bottleneck_dim=16, in_context_len=4,
             in_context_start=3, num_classes=10, proj_drop=0.2, attn_impl="fp32")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # compiled counts traced here, not read


def spec(**args) -> dict:
    return {"class_path": "jitlab.core.models.JiT", "init_args": args}


def test_scaled_count_equals_a_full_count_of_the_whole_model():
    scaled = counted_activations(spec(**SMALL), compiled=False)
    with fake_mode():
        full, attention = count_full(JiT(**SMALL), Flow(FlowConfig()), bf16=True)
    assert scaled.eager == pytest.approx(full, rel=1e-9)
    assert scaled.attention == pytest.approx(attention, rel=1e-9)
    # the kinds matter: without the dropout masks the count is smaller
    assert counted_activations(spec(**{**SMALL, "proj_drop": 0.0}), compiled=False).eager < scaled.eager
    # checkpointed blocks keep their inputs only
    assert scaled.checkpointed < scaled.eager


def test_fake_tensors_count_what_real_cpu_tensors_save():
    torch.manual_seed(0)
    args = {**SMALL, "proj_drop": 0.0}  # dropout masks are bool either way; real draws are not needed
    real, real_attention = count_full(JiT(**args), Flow(FlowConfig()), bf16=True)
    with fake_mode():
        fake, fake_attention = count_full(JiT(**args), Flow(FlowConfig()), bf16=True)
    assert fake == real and fake_attention == real_attention > 0
    real32, _ = count_full(JiT(**args), Flow(FlowConfig()), bf16=False)
    assert real32 > real  # float32 keeps wider activations than bf16 autocast: the precision is followed


def test_compiled_count_is_what_a_compiled_block_saves():
    """The trace (never run) against torch.compile with the same partitioner, run under counting hooks."""
    args = {**SMALL, "proj_drop": 0.0}
    traced = compiled_block(args, (True, False), torch.float32, bf16=True)
    net = probe(args, (True, False), 1)
    block, rope = net.blocks[0], net.rope_in_context
    compiled = torch.compile(lambda h, c: block(h, c, rope), backend="aot_eager_decomp_partition", dynamic=False)
    tokens = net.num_patches + net.in_context_len
    counts = []
    for n in (COMPILED_BATCH, 2 * COMPILED_BATCH):
        found: dict[int, int] = {}

        def pack(t):
            found.setdefault(id(t.untyped_storage()), t.untyped_storage().nbytes())
            return t

        h = torch.randn(n, tokens, 48, requires_grad=True)  # (N, L, D)
        c = torch.randn(n, 48, requires_grad=True)  # (N, D)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            out = compiled(h, c)  # (N, L, D)
        counts.append(sum(found.values()))
        del out
    run = (counts[1] - counts[0]) / COMPILED_BATCH
    assert traced == pytest.approx(run, rel=0.02), (traced, run)
    with fake_mode():
        eager_block = counted_activations(spec(**args), compiled=False)
    assert traced > 0 and eager_block.eager > 0


class DataDependent(nn.Module):
    """A backbone whose forward branches on its data: fake tensors cannot follow it."""

    def __init__(self, img_size: int = 8, num_classes: int = 10):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.num_patches, self.sample_shape = 4, (3, img_size, img_size)

    def forward(self, x, t, y):
        return x * self.scale if x.sum() > 0 else x  # (N, C, H, W)


def test_a_backbone_fake_tensors_cannot_follow_is_named_not_guessed():
    with pytest.raises(NotCountable, match="DataDependent: activations not counted"):
        counted_activations({"class_path": "tests.test_memory.DataDependent", "init_args": {}})
