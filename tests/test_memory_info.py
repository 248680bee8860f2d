"""`jitlab info --memory`: the eager count of JiT-B/16 against a count of saved tensors made here, whole model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from jitlab.core.models.registry import build_model
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # compiled counts traced here, not read


def independent_count(net: torch.nn.Module, batch: int) -> int:
    """Bytes of the storages packed for backward by a forward and an MSE loss under bf16 autocast (this test's
    own hooks: storages kept alive and told apart by identity)."""
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages.setdefault(id(storage), storage)
        return t

    x = torch.randn(batch, 3, 256, 256)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, torch.rand(batch), torch.zeros(batch, dtype=torch.long))
        loss = F.mse_loss(out.float(), x)
    del loss
    return sum(s.nbytes() for s in storages.values())


def test_info_memory_of_b16_agrees_with_an_independent_count(capsys):
    code, out = run_cli(["info", "--model", "JiT-B/16", "--img_size", "256", "--batch_size", "8", "--memory",
                         "--json"], capsys)
    assert code == 0, out
    row = json.loads(out)
    with FakeTensorMode():  # the whole model, no scaling, batch 8 against batch 4
        net = build_model("JiT-B/16", img_size=256).train()
        own = (independent_count(net, 8) - independent_count(net, 4)) / 4
    eager, compiled = row["activation_bytes_per_sample"], row["activation_bytes_per_sample_compiled"]
    assert abs(eager / own - 1) < 0.05, (eager, own)
    assert compiled < eager  # the partitioner recomputes cheap ops instead of saving them
    assert row["fixed_bytes_per_param"] == 26  # 4 + 4 + 0 (bucket view) + 8 + 8 + 2 (ddp, the default)
    assert row["attention_bytes_per_sample"] > 0
    assert row["peak_bytes_per_gpu"] == pytest.approx(sum(row["fixed_bytes"].values()) + 8 * compiled, abs=2)




def test_info_without_memory_prints_no_memory(capsys):
    code, out = run_cli(["info", "--model", "JiT-B/16", "--json"], capsys)
    assert code == 0 and "activation_bytes_per_sample" not in json.loads(out)
    code, out = run_cli(["info", "--model", "JiT-B/16", "--memory", "--batch_size", "0"], capsys)
    assert code == 2 and "--batch_size" in out
