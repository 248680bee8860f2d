"""MultiEMA against hand-computed averages, through resume, evaluation swaps and checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from jitlab.train.ema import MultiEMA, ema_state_dicts
from jitlab.errors import ConfigError

BATCHES_PER_EPOCH = 4


def loader(n_batches: int = BATCHES_PER_EPOCH, seed: int = 0) -> DataLoader:
    """A fixed, unshuffled regression set: y = sin(3 x)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n_batches, 4, generator=g)
    return DataLoader(TensorDataset(x, torch.sin(3 * x)), batch_size=4, shuffle=False)


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


class Tiny(L.LightningModule):
    """A small MLP as ``self.net``; records the weights after every optimizer step."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
        self.after_step: list[dict[str, torch.Tensor]] = []
        self.seen_in_validation: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(snapshot(self.net))

    def test_step(self, batch, batch_idx):
        self.seen_in_validation.append(snapshot(self.net))

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0])

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.after_step.append(snapshot(self.net))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)


def trainer(max_steps: int, callbacks: list, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


def hand_ema(init: dict, weights: list[dict], decay: float, warmup: bool = False) -> dict:
    """The EMA recurrence written out, in float64."""
    ema = {name: t.double() for name, t in init.items()}
    for n, w in enumerate(weights):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        for name in ema:
            ema[name] = d * ema[name] + (1 - d) * w[name].double()
    return {name: t.float() for name, t in ema.items()}


def differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_matches_hand_computed_ema():
    model = Tiny()
    init = snapshot(model.net)
    ema = MultiEMA(decays=[0.9, 0.5])
    trainer(8, [ema]).fit(model, loader())

    assert len(model.after_step) == 8 and ema.num_updates == 8
    for i, decay in enumerate(ema.decays):
        expected = hand_ema(init, model.after_step, decay)
        assert_close(ema.averages[i], expected, rtol=1e-5, atol=1e-6)
        assert all(t.dtype == torch.float32 for t in ema.averages[i].values())
    # the averages lag the weights, each by its own amount
    assert differs(ema.averages[0], model.after_step[-1])
    assert differs(ema.averages[0], ema.averages[1])
    assert_close(snapshot(model.net), model.after_step[-1])  # training weights untouched


def test_gradient_accumulation_and_update_every():
    model = Tiny()
    init = snapshot(model.net)
    ema = MultiEMA(decays=[0.9, 0.5], update_every=2)
    trainer(6, [ema], accumulate_grad_batches=2).fit(model, loader(n_batches=12))

    assert len(model.after_step) == 6  # 12 batches, 6 optimizer steps
    assert ema.num_updates == 3 and ema.last_step == 6
    every_second = model.after_step[1::2]  # after optimizer steps 2, 4, 6
    for i, decay in enumerate(ema.decays):
        assert_close(ema.averages[i], hand_ema(init, every_second, decay), rtol=1e-5, atol=1e-6)
        # updating on every step would have given something else
        assert differs(ema.averages[i], hand_ema(init, model.after_step, decay))


def test_warmup_formula():
    ema = MultiEMA(decays=[0.9999], warmup=True)
    assert ema.effective_decay(0.9999, 0) == pytest.approx(0.1)
    assert ema.effective_decay(0.9999, 90) == pytest.approx(0.91)
    assert ema.effective_decay(0.9999, 10**6) == 0.9999
    assert MultiEMA(warmup=False).effective_decay(0.9999, 0) == 0.9999

    model = Tiny()
    init = snapshot(model.net)
    trainer(5, [ema]).fit(model, loader())
    assert_close(ema.averages[0], hand_ema(init, model.after_step, 0.9999, warmup=True), rtol=1e-5, atol=1e-6)
    # with the fixed decay the average would barely have moved from the initial weights
    assert differs(ema.averages[0], hand_ema(init, model.after_step, 0.9999))


def test_resume_restores_averages_exactly(tmp_path):
    full_model, full_ema = Tiny(), MultiEMA(decays=[0.9, 0.5])
    trainer(10, [full_ema]).fit(full_model, loader())

    # stop at an epoch boundary: a plain DataLoader cannot resume mid-epoch in the same order
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=8, save_top_k=-1, filename="{step}")
    first = MultiEMA(decays=[0.9, 0.5])
    trainer(8, [first, ckpt], enable_checkpointing=True).fit(Tiny(), loader())
    path = tmp_path / "step=8.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)["callbacks"][first.state_key]
    assert (state["num_updates"], state["last_step"], state["decays"]) == (8, 8, [0.9, 0.5])

    model = Tiny(seed=1)  # different initial weights: only the checkpoint can make them agree
    resumed = MultiEMA(decays=[0.9, 0.5])
    trainer(10, [resumed]).fit(model, loader(), ckpt_path=path)

    assert resumed.num_updates == 10 and resumed.last_step == 10
    assert_close(snapshot(model.net), snapshot(full_model.net), rtol=1e-6, atol=1e-7)
    for i in range(2):
        assert_close(resumed.averages[i], full_ema.averages[i], rtol=1e-6, atol=1e-7)
        assert differs(resumed.averages[i], first.averages[i])  # it did train on after resuming


def test_state_key_is_stable_and_distinct():
    assert MultiEMA([0.9, 0.5]).state_key == MultiEMA([0.9, 0.5]).state_key
    assert MultiEMA([0.9, 0.5]).state_key != MultiEMA([0.9]).state_key
    assert MultiEMA([0.9]).state_key != MultiEMA([0.9], attr="other").state_key


def test_load_state_dict_rejects_other_decays():
    ema = MultiEMA([0.9, 0.5])
    ema.reset(Tiny())
    with pytest.raises(ValueError, match="decays"):
        MultiEMA([0.9, 0.6]).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("bad", [dict(decays=[]), dict(decays=[1.5]), dict(decays=[0.9, 0.9]), dict(update_every=0)])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        MultiEMA(**bad)


def test_validation_sees_first_ema_and_training_resumes_with_training_weights():
    class Watch(L.Callback):
        """Copies MultiEMA's first average and the last training weights at each validation."""

        def __init__(self, ema):
            self.ema, self.first, self.training = ema, [], []

        def on_validation_epoch_start(self, trainer, pl_module):
            self.first.append({k: v.clone() for k, v in self.ema.averages[0].items()})
            self.training.append(pl_module.after_step[-1])

    model, ema = Tiny(), MultiEMA(decays=[0.9, 0.5])
    watch = Watch(ema)
    trainer(6, [ema, watch], val_check_interval=2, limit_val_batches=1).fit(model, loader(), loader())

    plain = Tiny()  # the same run without EMA or validation
    trainer(6, []).fit(plain, loader())

    assert len(model.seen_in_validation) == 3
    for seen, first, training in zip(model.seen_in_validation, watch.first, watch.training):
        assert_close(seen, first)
        assert differs(seen, training)
    assert not ema.is_swapped
    assert_close(snapshot(model.net), snapshot(plain.net))  # swapped back every time


def test_test_and_predict_use_first_ema():
    model, ema = Tiny(), MultiEMA(decays=[0.9, 0.5])
    t = trainer(6, [ema])
    t.fit(model, loader())
    training = snapshot(model.net)

    t.test(model, loader(n_batches=1), verbose=False)
    assert_close(model.seen_in_validation[-1], ema.averages[0])
    assert differs(model.seen_in_validation[-1], training)

    data = loader(n_batches=1)
    (pred,) = t.predict(model, data)
    reference = Tiny()
    reference.net.load_state_dict(ema.averages[0])
    assert_close(pred, reference.net(next(iter(data))[0]))
    assert_close(snapshot(model.net), training)


def test_checkpoint_saved_during_validation_holds_training_weights(tmp_path):
    path = tmp_path / "val.ckpt"

    class SaveInValidation(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            self.training = pl_module.after_step[-1]
            self.swapped_in = snapshot(pl_module.net)
            trainer.save_checkpoint(path)

    model, ema, saver = Tiny(), MultiEMA(decays=[0.9, 0.5]), SaveInValidation()
    trainer(4, [ema, saver], val_check_interval=4, limit_val_batches=1).fit(model, loader(), loader())

    assert differs(saver.swapped_in, saver.training)  # the EMA really was in the weights
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert_close({k: saved[f"net.{k}"] for k in saver.training}, saver.training)
    assert_close(snapshot(model.net), saver.training)  # and still are after saving


def test_ema_state_dicts_round_trip(tmp_path):
    model, ema = Tiny(), MultiEMA(decays=[0.9, 0.5])
    t = trainer(5, [ema])
    t.fit(model, loader())
    t.save_checkpoint(tmp_path / "last.ckpt")

    checkpoint = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    found = ema_state_dicts(checkpoint)
    assert sorted(found) == [0.5, 0.9]
    for i, decay in enumerate(ema.decays):
        net = Tiny(seed=3).net
        result = net.load_state_dict(found[decay], strict=False)
        assert not result.missing_keys and not result.unexpected_keys
        assert_close(snapshot(net), ema.averages[i])
    assert differs(found[0.9], found[0.5])

    # a fresh callback restores the averages for evaluation from the checkpoint alone
    fresh_model, fresh = Tiny(seed=3), MultiEMA(decays=[0.9, 0.5])
    trainer(5, [fresh]).validate(fresh_model, loader(n_batches=1), ckpt_path=tmp_path / "last.ckpt", verbose=False)
    assert_close(fresh_model.seen_in_validation[-1], ema.averages[0])
    assert_close(snapshot(fresh_model.net), snapshot(model.net))  # the checkpoint's training weights

    with pytest.raises(KeyError, match="ModelCheckpoint|no callback states"):
        ema_state_dicts({"callbacks": {"ModelCheckpoint{}": {"best": None}}, "state_dict": {}})
    with pytest.raises(KeyError, match="weights_only"):
        ema_state_dicts({"state_dict": {}})


def test_swapped_context_manager_is_robust():
    model, ema = Tiny(), MultiEMA(decays=[0.9, 0.5])
    ema.reset(model)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    ema.update(model)  # averages now sit between the old and the new weights
    training = snapshot(model.net)

    with ema.swapped(model, index=1) as net:
        assert net is model.net
        assert_close(snapshot(net), ema.averages[1])
        with ema.swapped(model, index=1):  # re-entering is a no-op
            assert_close(snapshot(net), ema.averages[1])
        with ema.swapped(model, index=0):
            assert_close(snapshot(net), ema.averages[0])
        assert_close(snapshot(net), ema.averages[1])
        with pytest.raises(RuntimeError, match="swapped"):
            ema.update(model)
    assert_close(snapshot(model.net), training)
    assert differs(ema.averages[0], training) and differs(ema.averages[1], training)

    with pytest.raises(ZeroDivisionError):
        with ema.swapped(model):
            1 / 0
    assert not ema.is_swapped
    assert_close(snapshot(model.net), training)


def test_bf16_weights_keep_fp32_averages():
    model, ema = Tiny(), MultiEMA(decays=[0.5])
    model.net.to(torch.bfloat16)
    ema.reset(model)
    start = {k: v.clone() for k, v in ema.averages[0].items()}
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    ema.update(model)
    avg = ema.averages[0]
    assert all(t.dtype == torch.float32 for t in avg.values())
    expected = {k: 0.5 * start[k] + 0.5 * p.float() for k, p in model.net.named_parameters()}
    assert_close(avg, expected)
