"""DSD's joint latent (jitlab/core/models/dsd.py), the effective rank (jitlab/core/models/rank.py) and issue 15's grid
files."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from jitlab.core.data import EmbeddedDataModule
from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig
from jitlab.experiments.grid.plan import build_meta_net
from jitlab.experiments.grid.spec import load_spec
from jitlab.core.models.dsd import LatentJiT
from jitlab.core.models.protocol import AuxLossBackbone, DiagnosedBackbone, StateBackbone
from jitlab.core.models.rank import effective_rank
from jitlab.train.module import JiTModule, OptimConfig
from jitlab.score.preflight import Report, check_net_files

TINY = dict(img_size=16, patch_size=4, in_channels=3, latent_dim=8, hidden_size=48, depth=2, num_heads=3,
            num_classes=10, attn_impl="sdpa")


# -- effective rank ---------------------------------------------------------------------------------------------

def orthonormal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q  # (rows, cols), orthonormal columns


def test_effective_rank_of_known_matrices():
    u, v = orthonormal(50, 5, 1), orthonormal(12, 5, 2)
    for k in (1, 3, 5):  # k equal singular values: exactly k
        a = u[:, :k] @ torch.diag(torch.full((k,), 2.0, dtype=torch.float64)) @ v[:, :k].T  # (50, 12), rank k
        assert effective_rank(a, center=False).item() == pytest.approx(k, rel=1e-5)
    s = torch.tensor([3.0, 1.0], dtype=torch.float64)  # p = (0.75, 0.25)
    a = u[:, :2] @ torch.diag(s) @ v[:, :2].T
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(a, center=False).item() == pytest.approx(expected, rel=1e-5)
    assert effective_rank(1e-3 * a, center=False).item() == pytest.approx(expected, rel=1e-5)  # scale-invariant
    assert effective_rank(torch.zeros(4, 3)).item() == 0.0
    offset = torch.ones(30, 6) * 5 + torch.randn(30, 1) @ torch.randn(1, 6)  # an offset and one direction
    assert effective_rank(offset).item() == pytest.approx(1.0, rel=1e-4)
    assert effective_rank(torch.randn(2000, 6)).item() > 5.8  # isotropic: close to full
    with pytest.raises(ValueError, match="matrix"):
        effective_rank(torch.zeros(2, 3, 4))


# -- the latent model -------------------------------------------------------------------------------------------

def test_the_latent_model_is_a_state_backbone_with_a_reconstruction_loss_and_its_rank_logged():
    net = LatentJiT(**TINY)
    assert isinstance(net, StateBackbone) and isinstance(net, AuxLossBackbone) and isinstance(net, DiagnosedBackbone)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    state = net.encode(x)
    assert state.shape == (2, 8, 4, 4) == (2, *net.sample_shape) and net.decode(state).shape == x.shape
    assert net(state, torch.rand(2), torch.tensor([0, 1])).shape == state.shape
    logged = net.diagnostics(state)
    assert set(logged) == {"latent_erank", "latent_std"} and 1.0 <= logged["latent_erank"] <= 8.0
    with pytest.raises(ConfigError, match="model.net.init_args.target: unknown target"):
        LatentJiT(**TINY, target="detach")


def encoder_grad_of_the_flow_loss(target: str, pred: str = "v") -> torch.Tensor:
    """The encoder's gradient from the flow loss alone at init (the denoiser's zero output layer: no path through
    the network), so only the target can carry one."""
    torch.manual_seed(0)
    net = LatentJiT(**TINY, target=target)
    module = JiTModule(net, flow=FlowConfig(pred=pred, loss="v"))
    module.train()
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    per_sample, _, aux, _ = module.loss_terms(x, y, y, torch.Generator().manual_seed(0))
    assert set(aux) == {"recon"}
    per_sample.mean().backward()
    grad = net.encoder.weight.grad
    return torch.zeros_like(net.encoder.weight) if grad is None else grad


def test_the_stop_gradient_variants_decide_whether_the_target_reaches_the_encoder():
    assert encoder_grad_of_the_flow_loss("state").abs().sum() > 0  # v's target pulls the latent (the collapse)
    assert encoder_grad_of_the_flow_loss("stop_gradient").abs().sum() == 0
    assert encoder_grad_of_the_flow_loss("ema", pred="x").abs().sum() == 0


def test_the_ema_target_follows_the_encoder_in_training_only():
    net = LatentJiT(**TINY, target="ema", ema_decay=0.5)
    assert torch.equal(net.ema_weight, net.encoder.weight)
    with torch.no_grad():
        net.encoder.weight.add_(1.0)
    x = torch.rand(2, 3, 16, 16)
    net.eval()
    net.target_state(x, None, net.encode(x))
    assert torch.allclose(net.ema_weight + 1.0, net.encoder.weight)  # evaluation does not move it
    net.train()
    target = net.target_state(x, None, net.encode(x))
    assert torch.allclose(net.ema_weight + 0.5, net.encoder.weight)  # half way (decay 0.5)
    assert not target.requires_grad and "ema_weight" in net.state_dict()


def test_a_latent_cell_trains_logs_rank_and_reconstruction_and_generates_images(tmp_path):
    torch.manual_seed(0)
    module = JiTModule(LatentJiT(**TINY, target="stop_gradient"), flow=FlowConfig(pred="x", loss="v"),
                       optim=OptimConfig(lr=1e-3, warmup_steps=0))
    data = EmbeddedDataModule(kind="shapes", resolution=16, global_batch_size=8, train_size=64, val_size=8, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    assert {"train/recon_loss", "train/latent_erank", "train/latent_std"} <= set(trainer.callback_metrics)
    images = module.generate([0, 1], torch.tensor([0, 1]), steps=2)
    assert images.shape == (2, 3, 16, 16) and module.sample_shape == (3, 16, 16)


# -- the grid files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", ["reg_token", "table11", "dsd_latent"])
def test_issue15_grids_expand_at_every_scale_and_build_their_networks(grid):
    spec = load_spec(grid)
    assert spec.train_seeds("mini") == 2 and spec.rules
    for scale in ("mini", "lab", "paper"):
        cells = spec.cells(scale, train_seeds=1)
        assert len({c.id for c in cells}) == len(cells) > 1
        for cell in cells:
            net = build_meta_net(cell.config)  # shapes only: no weights read, nothing downloaded
            assert net.sample_shape


def test_table11_carries_the_papers_numbers_and_reg_refuses_without_its_encoder_file():
    paper = {c.id: c.paper_value for c in load_spec("table11").cells("paper")}
    assert paper == {"model-B_cls-none_budget-full": 4.37, "model-B_cls-cls_budget-full": 4.14,
                     "model-L_cls-none_budget-full": 2.79, "model-L_cls-cls_budget-full": 2.50}
    mini = {c.id: c.paper_value for c in load_spec("table11").cells("mini")}
    # the paper's values are at its full budget: the mini half-budget cells have none
    assert mini["model-B_cls-cls_budget-half"] is None and mini["model-B_cls-cls_budget-full"] == 4.14
    assert all(c.paper_value is None for c in load_spec("reg_token").cells("paper"))  # not in paper.md
    rep = next(c for c in load_spec("reg_token").cells("paper") if c.labels["token"] == "rep")
    report = Report()
    check_net_files(rep.config, report)
    assert len(report.problems) == 1 and "model.net.init_args.encoder_weights" in report.problems[0]
    assert "dinov2_vitb14_pretrain.pth: no such file" in report.problems[0]
