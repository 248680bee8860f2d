"""The backbone contract's extension (jitlab/core/models/protocol.py): a flow state that is not the image (REG), an
auxiliary loss (Table 11), and that image backbones train exactly as before."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
from torch import Tensor, nn

from jitlab.core.data import EmbeddedDataModule
from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig
from jitlab.core.models import JiT
from jitlab.core.models.cls_head import ClsJiT
from jitlab.core.models.protocol import AuxLossBackbone, CleanBatch, StateBackbone, check_state_backbone
from jitlab.core.models.reg import RegJiT
from jitlab.core.models.spec import build_net, net_spec, record_init_args
from jitlab.train.module import JiTModule, OptimConfig

JIT = dict(img_size=16, patch_size=4, hidden_size=48, depth=2, num_heads=3, bottleneck_dim=16, in_context_len=2,
           in_context_start=1, num_classes=10, attn_impl="sdpa")


def fit_one_step(module: JiTModule, tmp_path) -> L.Trainer:
    data = EmbeddedDataModule(kind="shapes", resolution=16, global_batch_size=8, train_size=64, val_size=8, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    return trainer


def randomise(net: nn.Module) -> nn.Module:
    """Non-zero everywhere (the zero-initialised adaLN and output layers would hide every dependence)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad and p.ndim >= 2:
                p.normal_(0, 0.05)
    return net


class FlatToy(nn.Module):
    """A protocol-only StateBackbone with an auxiliary loss: the state is the flat image / 2 plus one constant."""

    def __init__(self, size: int = 16, num_classes: int = 10):
        self.init_args = record_init_args(locals())
        super().__init__()
        self.num_classes, self.size = num_classes, size
        self.loss_weights = {"toy": 0.5}
        self.lin = nn.Linear(3 * size * size + 2, 3 * size * size + 1)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3 * self.size * self.size + 1,)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def encode(self, x: Tensor, y: Tensor | None) -> Tensor:
        return torch.cat([x.flatten(1) / 2, x.new_ones(x.shape[0], 1)], 1)  # (N, 3 H W + 1)

    def decode(self, state: Tensor) -> Tensor:
        return 2 * state[:, :-1].reshape(-1, *self.image_shape)  # (N, 3, H, W)

    def target_state(self, x: Tensor, y: Tensor | None, state: Tensor) -> Tensor:
        return state

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        return self.lin(torch.cat([z, t[:, None]], 1))

    def forward_losses(self, z, t, y, clean: CleanBatch):
        out = self.forward(z, t, y)
        return out, {"toy": out.pow(2).mean()}


def test_a_toy_state_backbone_trains_a_step_logs_its_loss_and_generates_decoded_images(tmp_path):
    torch.manual_seed(0)
    module = JiTModule(FlatToy(), flow=FlowConfig(pred="x", loss="v"), optim=OptimConfig(lr=1e-2, warmup_steps=0))
    assert isinstance(module.net, StateBackbone) and isinstance(module.net, AuxLossBackbone)
    assert module.state_shape == (769,) and module.sample_shape == (3, 16, 16)
    before = module.net.lin.weight.detach().clone()
    trainer = fit_one_step(module, tmp_path)
    logged = trainer.callback_metrics
    assert {"train/loss", "train/flow_loss", "train/toy_loss"} <= set(logged)
    total = logged["train/flow_loss"] + 0.5 * logged["train/toy_loss"]
    assert torch.allclose(logged["train/loss"], total)
    assert not torch.equal(before, module.net.lin.weight)
    images = module.generate([0, 1, 2], torch.tensor([0, 1, 10]), steps=3, cfg_scale=1.5)
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()


def test_an_image_backbone_trains_on_the_same_draws_as_before_the_extension():
    torch.manual_seed(0)
    module = JiTModule(JiT(**JIT), flow=FlowConfig(pred="x", loss="v"))
    assert module.sample_shape == module.state_shape == (3, 16, 16)
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    per_sample, t = module.loss_per_sample(x, y, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t0, eps, z = module.flow.draw(x, g)  # what the module drew before the extension, in the same order
    expected = module.flow.per_sample_loss(module.net(z, t0, y), x, eps, z, t0)
    assert torch.equal(t, t0) and torch.equal(per_sample, expected)


def test_the_trunk_is_jit_forward_so_a_head_leaves_the_prediction_alone():
    jit = randomise(JiT(**JIT))
    cls = ClsJiT(**JIT, cls_weight=1.0)
    cls.load_state_dict(jit.state_dict(), strict=False)  # the same JiT weights; the head is extra
    z, t, y = torch.randn(3, 3, 16, 16), torch.rand(3), torch.tensor([1, 2, 10])
    out, losses = cls.forward_losses(z, t, y, CleanBatch(z, torch.tensor([1, 2, 3]), z, y))
    assert torch.equal(out, jit(z, t, y)) and torch.equal(cls(z, t, y), jit(z, t, y))
    assert set(losses) == {"cls"} and losses["cls"].ndim == 0


def test_the_classification_loss_is_weighted_changes_the_gradients_and_counts_only_dropped_labels(tmp_path):
    def backbone_grad(weight: float, y_in: Tensor) -> Tensor:
        torch.manual_seed(0)
        net = ClsJiT(**JIT, cls_weight=weight)
        module = JiTModule(net, flow=FlowConfig(pred="x", loss="v"))
        x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
        per_sample, _, aux, _ = module.loss_terms(x, y_in, y, torch.Generator().manual_seed(0))
        (per_sample.mean() + net.loss_weights["cls"] * aux["cls"]).backward()
        return net.x_embedder.proj1.weight.grad.clone()  # the blocks are identities at init: the patch embedding

    dropped = torch.tensor([10, 1, 10, 3])  # samples 0 and 2 lost their label (10 = the null class)
    assert not torch.allclose(backbone_grad(0.0, dropped), backbone_grad(1.0, dropped))
    kept = torch.tensor([0, 1, 2, 3])  # no label dropped: the loss is 0 and reaches nothing
    assert torch.equal(backbone_grad(0.0, kept), backbone_grad(1.0, kept))
    module = JiTModule(ClsJiT(**JIT, cls_weight=0.3), optim=OptimConfig(lr=1e-3, warmup_steps=0), label_drop=0.5)
    logged = fit_one_step(module, tmp_path).callback_metrics
    assert {"train/cls_loss", "train/flow_loss"} <= set(logged)
    assert torch.allclose(logged["train/loss"], logged["train/flow_loss"] + 0.3 * logged["train/cls_loss"])
    with pytest.raises(ConfigError, match="cls_weight"):
        ClsJiT(**JIT, cls_weight=-1.0)


# -- REG --------------------------------------------------------------------------------------------------------

def test_reg_packs_image_and_token_in_one_state_noised_at_the_same_t():
    net = RegJiT(**JIT, token="thumbnail", token_dim=48)
    assert net.sample_shape == (3 * 256 + 48,) and net.image_shape == (3, 16, 16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    state = net.encode(x)
    assert state.shape == (2, 816) and torch.equal(net.decode(state), x)
    assert torch.allclose(state[:, 768:].view(2, 3, 4, 4), x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)))
    module = JiTModule(net, flow=FlowConfig(pred="x", loss="v"))
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    _, t, _, clean = module.loss_terms(x, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.Generator().manual_seed(3))
    _, eps, z = module.flow.draw(clean, torch.Generator().manual_seed(3))
    assert torch.equal(seen[0], z)  # one draw for both: the token's z is t * token + (1 - t) * eps at the same t
    assert torch.allclose(z[:, 768:], t[:, None] * clean[:, 768:] + (1 - t[:, None]) * eps[:, 768:])


def test_reg_denoises_image_and_token_jointly_and_the_sampler_integrates_both():
    net = randomise(RegJiT(**JIT, token="thumbnail", token_dim=48))
    z = torch.randn(2, 816, requires_grad=True)
    out = net(z, torch.full((2,), 0.5), torch.tensor([0, 1]))
    assert out.shape == (2, 816)
    grad_token = torch.autograd.grad(out[:, :768].sum(), z, retain_graph=True)[0][:, 768:]
    grad_image = torch.autograd.grad(out[:, 768:].sum(), z)[0][:, :768]
    assert grad_token.abs().sum() > 0 and grad_image.abs().sum() > 0  # each part reads the other
    module = JiTModule(net, flow=FlowConfig(pred="x", loss="v"))
    states = []
    net.register_forward_pre_hook(lambda m, args: states.append(args[0].detach().clone()))
    images = module.generate([0, 1], torch.tensor([0, 1]), steps=3)
    assert images.shape == (2, 3, 16, 16)
    assert all(s.shape == (2, 816) for s in states)  # every step sees the packed state
    assert not torch.allclose(states[0][:, 768:], states[-1][:, 768:])  # the token moved along the ODE


def test_the_control_token_carries_no_information():
    net = RegJiT(**JIT, token="constant", token_dim=48)
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(net.representation(a), net.representation(b)) and not net.representation(a).any()
    stand_in = RegJiT(**JIT, token="thumbnail", token_dim=48)
    assert not torch.equal(stand_in.representation(a), stand_in.representation(b))
    with pytest.raises(ConfigError, match="token_dim.*thumbnail"):
        RegJiT(**JIT, token="thumbnail", token_dim=40)
    with pytest.raises(ConfigError, match="model.net.init_args.token: unknown token"):
        RegJiT(**JIT, token="inception")


TINY_DINO = dict(embed_dim=32, depth=1, num_heads=2)


def test_the_encoder_token_loads_a_local_dinov2_file_and_refuses_without_it(tmp_path):
    encoder = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=28,
                                **TINY_DINO)  # a random-weight DINOv2 in timm's layout: nothing downloads
    weights = tmp_path / "tiny_dinov2.pth"
    torch.save(encoder.state_dict(), weights)
    args = dict(JIT, token="encoder", token_dim=32, encoder="vit_small_patch14_dinov2", encoder_size=28,
                encoder_args=TINY_DINO)
    net = RegJiT(**args, encoder_weights=str(weights))
    loaded = net._encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in encoder.state_dict().items())
    assert not any(name.startswith("_encoder") for name in net.state_dict())  # frozen: not in checkpoints
    token = net.representation(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert token.shape == (2, 32) and torch.allclose(token.mean(1), torch.zeros(2), atol=1e-5)
    assert isinstance(build_net(net_spec(net)), RegJiT)
    missing = tmp_path / "absent.pth"
    with pytest.raises(ConfigError, match=f"model.net.init_args.encoder_weights: {missing}: no such file"):
        RegJiT(**args, encoder_weights=str(missing))
    with pytest.raises(ConfigError, match="model.net.init_args.token_dim: is 48 .* 32-d"):
        RegJiT(**{**args, "token_dim": 48}, encoder_weights=str(weights))
    with torch.device("meta"):  # the plan's shape-only build needs no file
        assert RegJiT(**args, encoder_weights=str(missing)).sample_shape == (800,)


def test_preflight_names_the_missing_encoder_file():
    from jitlab.score.preflight import Report, check_net_files

    config = {"model": {"net": {"class_path": "jitlab.core.models.reg.RegJiT",
                                "init_args": {"token": "encoder", "encoder_weights": "weights/absent.pth"}}}}
    report = Report()
    check_net_files(config, report)
    assert report.problems == ["model.net.init_args.encoder_weights: weights/absent.pth: no such file; give it "
                               "as a local file (jitlab never downloads weights)"]


def test_a_state_backbone_with_a_bad_image_shape_or_weight_is_refused():
    toy = FlatToy()
    toy.loss_weights = {"toy": -1.0}
    with pytest.raises(ConfigError, match="auxiliary loss 'toy'"):
        check_state_backbone(toy)
