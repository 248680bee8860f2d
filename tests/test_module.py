"""JiTModule: training lowers the loss, resume continues exactly, lr scaling and schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from jitlab.core.data import EmbeddedDataModule
from jitlab.train.ema import MultiEMA
from jitlab.core.flow import FlowConfig, Space
from jitlab.train.module import JiTModule, OptimConfig, lr_factor
from tests.conftest import tiny_net


def make_module(**flow) -> JiTModule:
    return JiTModule(tiny_net(), flow=FlowConfig(**flow), optim=OptimConfig(lr=2e-3, warmup_steps=0))


def trainer(root, max_steps: int, callbacks=(), **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, default_root_dir=root, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     callbacks=list(callbacks), **kwargs)


def fixed_loss(module: JiTModule, batches: list) -> float:
    """The loss on fixed batches with fixed t and noise (a deterministic yardstick)."""
    module.eval()
    with torch.no_grad():
        losses = [module.loss_per_sample(x, y, torch.Generator().manual_seed(i))[0].mean()
                  for i, (x, y) in enumerate(batches)]
    module.train()
    return float(torch.stack(losses).mean())


def data(**kwargs) -> EmbeddedDataModule:
    args = dict(kind="shapes", resolution=16, global_batch_size=16, train_size=512, val_size=64, seed=0)
    args.update(kwargs)
    return EmbeddedDataModule(**args)


def eval_batches(dm: EmbeddedDataModule, n: int = 4) -> list:
    from jitlab.core.data.base import to_model_range

    ds = dm.val_dataset()
    items = [ds[i] for i in range(16 * n)]
    x = torch.stack([to_model_range(img) for img, _ in items])
    y = torch.tensor([label for _, label in items])
    return list(zip(x.split(16), y.split(16)))


@pytest.mark.parametrize("pred,loss", [("x", "v"), ("eps", "eps"), ("v", "v")])
def test_training_lowers_the_loss(tmp_path, pred, loss):
    L.seed_everything(0)
    module, dm = make_module(pred=pred, loss=loss), data()
    batches = eval_batches(dm)
    before = fixed_loss(module, batches)
    trainer(tmp_path, max_steps=40).fit(module, dm)
    after = fixed_loss(module, batches)
    assert after < 0.85 * before, f"{pred}-pred/{loss}-loss: {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("pred", list(Space))
@pytest.mark.parametrize("loss", list(Space))
def test_every_cell_trains_one_step_with_finite_gradients(pred, loss):
    torch.manual_seed(0)
    module = make_module(pred=pred, loss=loss)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    y = torch.randint(0, 10, (4,))
    per_sample, t = module.loss_per_sample(x, y, torch.Generator().manual_seed(0))
    assert per_sample.shape == (4,) and t.shape == (4,)
    per_sample.mean().backward()
    grads = [p.grad for p in module.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_resume_continues_with_same_step_optimizer_and_both_emas(tmp_path):
    """6 steps + checkpoint + 4 resumed steps == 10 uninterrupted steps (an epoch is 6 steps here)."""

    def run(root, max_steps, ckpt_path=None):
        L.seed_everything(0)
        module = make_module()
        ema = MultiEMA(decays=[0.9, 0.5])
        ckpt = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=6, save_top_k=-1)
        t = trainer(root, max_steps, callbacks=[ema, ckpt])
        t.fit(module, data(train_size=96), ckpt_path=ckpt_path)
        return t, module, ema

    straight_t, straight, ema_straight = run(tmp_path / "straight", 10)
    run(tmp_path / "split", 6)
    ckpt_file = tmp_path / "split" / "last.ckpt"
    saved = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 6
    t, resumed, ema_resumed = run(tmp_path / "split", 10, ckpt_path=ckpt_file)
    assert t.global_step == 10
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"weights differ: {name}")
    for avg_a, avg_b in zip(ema_straight.averages, ema_resumed.averages):
        for name in avg_a:
            torch.testing.assert_close(avg_a[name], avg_b[name], msg=f"EMA differs: {name}")
    state_a = t.optimizers[0].state_dict()["state"]  # the resumed run's AdamW state
    state_b = straight_t.optimizers[0].state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert int(state_a[key]["step"]) == int(state_b[key]["step"]) == 10
        torch.testing.assert_close(state_a[key]["exp_avg"], state_b[key]["exp_avg"])
        torch.testing.assert_close(state_a[key]["exp_avg_sq"], state_b[key]["exp_avg_sq"])


def test_lr_scales_with_global_batch(tmp_path):
    module = JiTModule(tiny_net(), optim=OptimConfig(blr=1e-4, warmup_steps=0))
    t = trainer(tmp_path, max_steps=1)
    t.fit(module, data(global_batch_size=32))
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4 * 32 / 256)


def test_global_batch_must_divide_across_accumulation(tmp_path):
    from jitlab.errors import ConfigError

    module = make_module()
    t = trainer(tmp_path, max_steps=1, accumulate_grad_batches=3)
    with pytest.raises(ConfigError, match="data.global_batch_size"):
        t.fit(module, data(global_batch_size=16))


def test_lr_schedule_warmup_then_constant_or_cosine():
    assert lr_factor(0, 10, 100, "constant", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "constant", 0.0) == pytest.approx(1.0)
    assert lr_factor(50, 10, 100, "constant", 0.0) == 1.0
    assert lr_factor(10, 10, 100, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)


def test_label_drop_uses_the_null_class():
    module = JiTModule(tiny_net(num_classes=10), label_drop=0.5)
    y = torch.zeros(10_000, dtype=torch.long)
    dropped = module.drop_labels(y, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(JiTModule(tiny_net(), label_drop=0.0).drop_labels(y), y)


def test_checkpoint_keys_are_plain_with_compile_switch(tmp_path):
    module = JiTModule(tiny_net(), compile=True)
    module.configure_model()
    keys = module.state_dict().keys()
    assert all(k.startswith("net.") and "_orig_mod" not in k for k in keys)
    assert "net.pos_embed" in keys


def test_hparams_rebuild_the_network(tmp_path):
    from jitlab.core.models.spec import build_net

    module = make_module(pred="eps", loss="v")
    net = build_net(module.hparams["net"])
    assert net.state_dict().keys() == module.net.state_dict().keys()
    assert module.hparams["flow"]["pred"] == "eps"


@pytest.mark.parametrize("pred", [Space.eps, Space.v])
def test_noise_prediction_through_a_narrow_bottleneck_warns(pred):
    # 4x4x3 = 48-d patches through d' = 16: 32 noise directions per patch never reach the network
    with pytest.warns(UserWarning, match=r"bottleneck_dim=16 < patch dimension 48: 32 noise directions"):
        JiTModule(tiny_net(bottleneck_dim=16), flow=FlowConfig(pred=pred))


@pytest.mark.parametrize("pred, bottleneck", [(Space.x, 16), (Space.eps, None), (Space.v, 48)])
def test_no_bottleneck_warning_when_the_noise_fits(pred, bottleneck, recwarn):
    JiTModule(tiny_net(bottleneck_dim=bottleneck), flow=FlowConfig(pred=pred))
    assert not [w for w in recwarn if "noise directions" in str(w.message)]


@pytest.mark.parametrize("pred", [Space.eps, Space.v])
def test_noise_prediction_from_a_model_narrower_than_a_patch_warns_with_the_rank_argument(pred):
    # 8x8 patches of 3 channels = 192-d, width 48: the output layer reaches only 48 of 192 directions
    with pytest.warns(UserWarning, match=r"hidden_size=48 < patch dimension 192: 144 noise directions per patch "
                                         r"lie outside the output layer's span \(its rank is at most the width\)"):
        JiTModule(tiny_net(patch_size=8, bottleneck_dim=None), flow=FlowConfig(pred=pred))


def test_no_rank_warning_for_x_prediction_or_a_full_rank_output(recwarn):
    JiTModule(tiny_net(patch_size=8, bottleneck_dim=None), flow=FlowConfig(pred=Space.x))
    JiTModule(tiny_net(patch_size=2, bottleneck_dim=None), flow=FlowConfig(pred=Space.v))  # 12-d into width 48
    assert not [w for w in recwarn if "noise directions" in str(w.message)]


@pytest.mark.parametrize("precond, lam, says", [("lambda", 0.5, r"precond=lambda \(target_lambda=0.5\)"),
                                               ("edm", None, r"precond=edm")])
def test_a_preconditioned_target_that_carries_noise_warns_with_the_rank_argument(precond, lam, says):
    # x - lambda eps (lambda > 0) and EDM's F hold eps: the same rank argument as eps/v at width 48 < 192
    with pytest.warns(UserWarning, match=says + r" with model.net.init_args.hidden_size=48 < patch dimension 192"):
        JiTModule(tiny_net(patch_size=8, bottleneck_dim=None),
                  flow=FlowConfig(pred=Space.x, precond=precond, target_lambda=lam))


def test_no_rank_warning_for_the_lambda_target_at_lambda_zero(recwarn):
    JiTModule(tiny_net(patch_size=8, bottleneck_dim=None), flow=FlowConfig(pred=Space.x, precond="lambda",
                                                                         target_lambda=0.0))
    assert not [w for w in recwarn if "noise directions" in str(w.message)]
