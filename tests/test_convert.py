"""jitlab.train.convert: release checkpoints (built here in the release's layout) load, convert and refuse foreign
pickles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from jitlab.train.checkpoint import load_module
from jitlab.train.convert import (
    OfficialCheckpointError,
    convert_official,
    estimate_steps_per_epoch,
    infer_architecture,
    load_official,
)
from jitlab.commands.convert_official import main
from jitlab.core.models import JiT
from jitlab.core.models.registry import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "official_jit_b16_keys.json"
WEIGHT_SETS = ("model", "model_ema1", "model_ema2")
IMG = 16
CLASSES = 10


def release_args(**overrides) -> argparse.Namespace:
    """The release's training flags for a JiT-P/4 at 16 px (field names of the authors' main script)."""
    fields = dict(
        model="JiT-P/4", img_size=IMG, class_num=CLASSES, attn_dropout=0.0, proj_dropout=0.0, P_mean=-0.6,
        P_std=0.9, noise_scale=1.5, t_eps=0.04, label_drop_prob=0.2, ema_decay1=0.999, ema_decay2=0.99,
        cfg=2.9, interval_min=0.1, interval_max=1.0, num_sampling_steps=50, sampling_method="heun",
        blr=5e-5, batch_size=128, epochs=600, warmup_epochs=5, world_size=8, output_dir="./out",
    )
    fields.update(overrides)
    return argparse.Namespace(**fields)


def random_net(seed: int, **overrides) -> JiT:
    """A JiT-P/4 (or ``overrides``) with every weight random, so the output is far from zero."""
    kwargs = dict(img_size=IMG, num_classes=CLASSES)
    kwargs.update(overrides)
    net = build_model("JiT-P/4", **kwargs) if "depth" not in overrides else JiT(**kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1  # same shape as p
            p.copy_(noise + 1.0 if "norm" in name else noise)
    return net.eval()


def release_layout(nets: dict[str, JiT], args: argparse.Namespace | None, epoch: int = 9) -> dict:
    """A checkpoint dict as the release saves it: wrapper state dicts (``net.*``), optimizer, epoch, args."""
    ckpt = {key: {f"net.{k}": v.clone() for k, v in net.state_dict().items()} for key, net in nets.items()}
    ckpt.update(optimizer={"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}, epoch=epoch)
    if args is not None:
        ckpt["args"] = args
    return ckpt


@pytest.fixture(scope="module")
def nets() -> dict[str, JiT]:
    return {key: random_net(seed) for seed, key in enumerate(WEIGHT_SETS)}


@pytest.fixture(scope="module")
def release_ckpt(nets, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("release") / "checkpoint-last.pth"
    torch.save(release_layout(nets, release_args()), path)
    return path


def inputs(net: JiT, n: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    x = torch.rand(n, *net.sample_shape, generator=gen) * 2 - 1  # (N, C, H, W) in [-1, 1]
    t = torch.rand(n, generator=gen)  # (N,)
    y = torch.tensor([0, 3, CLASSES])[:n]  # (N,), the last one the null class
    return x, t, y


@torch.no_grad()
def assert_same_function(net: torch.nn.Module, ref: JiT) -> None:
    x, t, y = inputs(ref)
    expected = ref(x, t, y)  # (N, C, H, W)
    assert expected.abs().mean() > 1e-2  # random weights: a real, non-zero output
    torch.testing.assert_close(net(x, t, y), expected, rtol=0, atol=0)


def arch_of(net: JiT) -> dict:
    return {k: v for k, v in net.init_args.items() if k not in ("attn_impl", "checkpointing")}  # not in the weights


# -- architecture inference ----------------------------------------------------------------------


def test_b16_key_list_is_fully_covered_by_the_inference():
    ref = json.loads(FIXTURE.read_text())
    shapes = {k.removeprefix("net."): v for k, v in ref["keys"].items()}
    arch = infer_architecture(shapes, {"model": "JiT-B/16", "img_size": 256, "class_num": 1000})
    with torch.device("meta"):  # shapes only: no 0.5 GB of weights
        net = JiT(**arch)
        expected = build_model("JiT-B/16", img_size=256, num_classes=1000)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == shapes
    assert arch_of(net) == arch_of(expected)
    assert (arch["depth"], arch["hidden_size"], arch["num_heads"], arch["in_context_start"]) == (12, 768, 12, 4)


def test_b16_without_args_uses_the_paper_default_for_the_size():
    shapes = {k.removeprefix("net."): v for k, v in json.loads(FIXTURE.read_text())["keys"].items()}
    with pytest.warns(UserWarning, match="default of size B"):
        arch = infer_architecture(shapes, {})
    assert arch["in_context_start"] == 4 and arch["img_size"] == 256 and arch["num_classes"] == 1000


@pytest.mark.parametrize("overrides", [
    {},
    dict(depth=3, hidden_size=64, num_heads=4, patch_size=8, bottleneck_dim=None, in_context_len=0),
    dict(depth=3, hidden_size=48, num_heads=2, patch_size=4, mlp="gelu", norm="layer", in_context_len=3,
         in_context_start=2, mlp_ratio=2.0, in_channels=1),
])
def test_inferred_architecture_equals_the_original(overrides):
    net = random_net(0, **overrides)
    start = net.init_args["in_context_start"] if overrides else None  # not in the registry: must be given
    args = {} if overrides else {"model": "JiT-P/4", "img_size": IMG, "class_num": CLASSES}
    arch = infer_architecture(net.state_dict(), args, in_context_start=start)
    assert {k: arch[k] for k in arch_of(net)} == arch_of(net)


def test_unknown_in_context_start_fails_clearly():
    net = random_net(0, depth=3, hidden_size=48, num_heads=2, patch_size=4, in_context_len=2, in_context_start=1)
    with pytest.warns(UserWarning, match="not a jitlab registry name"), \
            pytest.raises(OfficialCheckpointError, match="in_context_start"):
        infer_architecture(net.state_dict(), {"model": "my-own-jit"})


def test_args_contradicting_the_weights_fail(nets, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save(release_layout(nets, release_args(model="JiT-T/4")), path)
    with pytest.raises(OfficialCheckpointError, match="args.model is 'JiT-T/4'"):
        load_official(path)
    torch.save(release_layout(nets, release_args(img_size=32)), path)
    with pytest.raises(OfficialCheckpointError, match="args.img_size is 32"):
        load_official(path)


# -- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", WEIGHT_SETS)
def test_load_official_matches_the_released_network(release_ckpt, nets, weights):
    net = load_official(release_ckpt, weights)
    assert not net.training
    assert arch_of(net) == arch_of(nets[weights])
    assert_same_function(net, nets[weights])


def test_default_weights_are_ema1(release_ckpt, nets):
    assert_same_function(load_official(release_ckpt), nets["model_ema1"])


# -- conversion ----------------------------------------------------------------------------------


def test_cli_converts_and_load_module_reads_every_weight_set(release_ckpt, nets, tmp_path, capsys):
    out = tmp_path / "jit.ckpt"
    assert main([str(release_ckpt), "--out", str(out), "--steps_per_epoch", "7"]) == 0
    assert "wrote" in capsys.readouterr().out
    for ema, key in ((0, "model_ema1"), (1, "model_ema2"), (None, "model")):
        module = load_module(out, ema=ema)
        assert_same_function(module.net, nets[key])
    assert module.flow.config.mu == -0.6 and module.flow.config.sigma == 0.9
    assert module.flow.config.noise_scale == 1.5 and module.flow.config.t_eps == 0.04 and module.label_drop == 0.2
    assert load_module(out, ema=0).ema_decay == 0.999 and load_module(out, ema=1).ema_decay == 0.99

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["official_sampling"] == {"cfg_scale": 2.9, "cfg_interval": [0.1, 1.0], "steps": 50, "method": "heun"}
    assert ckpt["epoch"] == 9 and ckpt["global_step"] == 10 * 7  # epochs 0..9 done
    assert ckpt["jitlab_source"]["args"]["model"] == "JiT-P/4" and ckpt["jitlab_source"]["epoch"] == 9
    raw = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert raw.keys() == nets["model"].state_dict().keys()
    assert all(torch.equal(v, nets["model"].state_dict()[k]) for k, v in raw.items())


def test_steps_per_epoch_estimate():
    assert estimate_steps_per_epoch(dict(batch_size=128, world_size=8, class_num=1000)) == 1251  # ImageNet-1k
    assert estimate_steps_per_epoch(dict(batch_size=128)) is None  # GPUs unknown
    assert estimate_steps_per_epoch(dict(batch_size=128, world_size=8, class_num=10)) is None  # not ImageNet


def test_refuses_to_overwrite(release_ckpt, tmp_path, capsys):
    out = tmp_path / "jit.ckpt"
    out.write_bytes(b"keep me")
    assert main([str(release_ckpt), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    with pytest.raises(FileExistsError):
        convert_official(release_ckpt, out)
    assert main([str(release_ckpt), "--out", str(out), "--overwrite"]) == 0
    assert load_module(out).net.num_classes == CLASSES
    assert not list(tmp_path.glob(".jit.ckpt.tmp-*"))


def test_missing_args_fall_back_and_say_so(nets, tmp_path):
    src, out = tmp_path / "no-args.pth", tmp_path / "out.ckpt"
    torch.save(release_layout(nets, None), src)
    with pytest.warns(UserWarning), pytest.raises(OfficialCheckpointError, match="no noise_scale .* at 16px"):
        convert_official(src, out)  # no args at all: nothing tells the noise scale at 16 px
    torch.save(release_layout(nets, argparse.Namespace(noise_scale=1.0)), src)
    with pytest.warns(UserWarning, match="default of size P"):
        converted = convert_official(src, out)
    assert converted["global_step"] == 0 and "unknown" in converted["jitlab_source"]["global_step"]
    assert any("P_mean" in note for note in converted["jitlab_source"]["assumptions"])
    assert_same_function(load_module(out, ema=0).net, nets["model_ema1"])


# -- refusals ------------------------------------------------------------------------------------


def _touch(path: str) -> None:
    Path(path).write_text("this ran")


class Payload:
    """Unpickling this would call ``_touch`` and write a file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


def test_foreign_pickle_is_refused_and_never_run(nets, tmp_path, capsys):
    marker, path = tmp_path / "ran.txt", tmp_path / "evil.pth"
    ckpt = release_layout(nets, release_args())
    ckpt["extra"] = Payload(marker)
    torch.save(ckpt, path)
    with pytest.raises(OfficialCheckpointError, match=r"refusing to load .*_touch"):
        load_official(path)
    assert main([str(path), "--out", str(tmp_path / "out.ckpt")]) == 2
    assert "refusing" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


def test_clear_errors(nets, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_official(tmp_path / "nope.pth")
    path = tmp_path / "c.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(OfficialCheckpointError, match="not a checkpoint dict"):
        load_official(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(OfficialCheckpointError, match="none of the weights"):
        load_official(path)
    torch.save({"model": release_layout(nets, None)["model"]}, path)
    with pytest.raises(OfficialCheckpointError, match="no 'model_ema2'"):
        load_official(path, "model_ema2")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="cannot read"):
        load_official(path)


def test_missing_and_unexpected_tensors_are_listed(nets, tmp_path):
    ckpt = release_layout(nets, release_args())
    weights = ckpt["model_ema1"]
    weights.pop("net.blocks.1.attn.proj.bias")
    weights["net.blocks.0.extra.weight"] = torch.zeros(2)
    path = tmp_path / "keys.pth"
    torch.save(ckpt, path)
    with pytest.raises(OfficialCheckpointError, match=r"missing \(1\).*attn.proj.bias.*unexpected \(1\).*extra"):
        load_official(path)
