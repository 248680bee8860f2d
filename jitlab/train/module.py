"""JiTModule: wires a denoiser network, the flow of one Table 1 cell and the optimiser. No math of its own."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from jitlab.errors import ConfigError
from jitlab.core.flow import Flow, FlowConfig, Space
from jitlab.core.models.protocol import (AuxLossBackbone, CleanBatch, DiagnosedBackbone, PatchBackbone, StateBackbone,
                                   check_backbone, check_state_backbone)
from jitlab.core.models.spec import build_net, net_spec
from jitlab.core.sampling import FinalStep, Precision, Sampler, guided, index_seed, initial_noise, integrate


@dataclass
class OptimConfig:
    """AdamW with ``lr = blr * global_batch / 256`` (or ``lr`` if set), linear warm-up (``warmup_steps``, else
    ``warmup_epochs``), then constant or cosine down to ``min_lr_ratio``."""

    blr: float = 5e-5
    lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not self.blr > 0:
            raise ConfigError("optim.blr", f"must be > 0, got {self.blr}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError("optim.lr", f"must be > 0 or null, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError("optim.schedule", f"unknown schedule {self.schedule!r}; valid choices: constant, cosine")
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ConfigError("optim.warmup_epochs", "warm-up must be >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("optim.betas", f"must lie in [0, 1), got {self.betas}")


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """The multiplier of the base lr at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def noisy_target(flow: FlowConfig) -> tuple[str, str] | None:
    """(the config that makes it, what it is) of a network output that carries noise, None for a clean one: eps,
    v, ``x - lambda * eps`` for lambda > 0 and EDM's F (``(x - c_skip z) / c_out`` holds eps when c_skip > 0)."""
    if flow.precond == "lambda" and float(flow.target_lambda or 0.0) > 0.0:
        return f"model.flow.precond=lambda (target_lambda={flow.target_lambda})", "x - lambda * eps target"
    if flow.precond == "edm":
        return "model.flow.precond=edm", "EDM target F"
    pred = Space(flow.pred)
    if flow.precond != "none" or pred is Space.x:
        return None
    return f"model.flow.pred={pred.value}", f"{pred.value}-prediction"


def warn_noise_through_bottleneck(net: nn.Module, flow: FlowConfig) -> None:
    """Warn when an eps- or v-predicting net is narrower than a patch, at its input or at its output.

    eps and v carry the noise of all ``patch_dim`` directions of a patch; a width below it passes (bottleneck) or
    spans (output layer, rank <= width) fewer directions, so the output cannot be right in the others for any
    weights. The paper pairs the bottleneck with x-prediction only (Figure 4) and keeps the width >= the patch
    dimension; the warning keeps such a run valid but loud.
    """
    target = noisy_target(flow)
    if target is None or not isinstance(net, PatchBackbone):  # not patch-based: no rank argument to make
        return
    patch_dim = net.patch_dim
    for field, width in net.noise_widths().items():
        if width >= patch_dim:
            continue
        where = ("never reach the network" if field == "bottleneck_dim"
                 else "lie outside the output layer's span (its rank is at most the width)")
        rank_zero_warn(
            f"jitlab: {target[0]} with model.net.init_args.{field}={width} < patch dimension "
            f"{patch_dim}: {patch_dim - width} noise directions per patch {where}, so its {target[1]} "
            f"cannot be right there for any weights (expect noisy samples); use pred=x or {field} >= {patch_dim}"
        )


class JiTModule(L.LightningModule):
    """Training and sampling of one cell of the ablation grid.

    Args:
        net: the denoiser ``net(z, t, y)`` (``class_path``/``init_args`` in YAML): ``jitlab.core.models.JiT`` or any
            ``jitlab.core.models.protocol.Backbone``. A ``StateBackbone`` (REG, DSD) moves the flow to its state
            (training encodes the clean image, ``generate`` decodes); an ``AuxLossBackbone`` (Table 11, DSD) adds its
            weighted auxiliary losses; a ``DiagnosedBackbone``'s diagnostics are logged every ``log_every_n_steps``.
        flow: prediction space, loss space, time sampler, noise scale, t_eps (Tables 1-3).
        optim: AdamW and learning-rate schedule.
        label_drop: probability of replacing the label by the null class (enables CFG).
        compile: ``torch.compile`` the network for training: block by block where it has ``compile_blocks`` (so
            DDP's buckets and FSDP's shards never split a graph), else its whole forward. Checkpoints keep plain
            key names; sampling and validation run eager.
        t_bins: number of equal-width bins of ``t`` for the per-bin loss logs.
    """

    def __init__(self, net: nn.Module, flow: FlowConfig = FlowConfig(), optim: OptimConfig = OptimConfig(),
                 label_drop: float = 0.1, compile: bool = False, t_bins: int = 4):
        super().__init__()
        if isinstance(net, dict):  # rebuilt from a checkpoint's hyper-parameters
            net = build_net(net)
        check_backbone(net)
        check_state_backbone(net)
        flow = flow if isinstance(flow, FlowConfig) else FlowConfig(**flow)
        optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**optim)
        if not 0.0 <= label_drop < 1.0:
            raise ConfigError("model.label_drop", f"must lie in [0, 1), got {label_drop}")
        if t_bins < 1:
            raise ConfigError("model.t_bins", f"must be >= 1, got {t_bins}")
        self.save_hyperparameters(ignore=["net", "flow", "optim"])
        self.hparams["net"] = net_spec(net)
        self.hparams["flow"] = {k: str(v) if k in ("pred", "loss") else v for k, v in asdict(flow).items()}
        self.hparams["optim"] = asdict(optim)
        self.net = net
        self.flow = Flow(flow)
        self.optim = optim
        self.label_drop = label_drop
        self.null_class: int | None = net.num_classes
        self.compile = compile
        object.__setattr__(self, "_forward", net)  # not a submodule: the weights live under net.* only
        # the optional parts of the contract, decided once (a runtime Protocol check is not free)
        self._state_net, self._aux_net = isinstance(net, StateBackbone), isinstance(net, AuxLossBackbone)
        self._diagnosed_net = isinstance(net, DiagnosedBackbone)
        self.register_buffer("_bin_sum", torch.zeros(t_bins, dtype=torch.float64), persistent=False)
        self.register_buffer("_bin_count", torch.zeros(t_bins, dtype=torch.float64), persistent=False)
        # the first step whose loss was not finite (-1: none), kept on the device: no host sync per step
        self.register_buffer("_nonfinite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._net_compiled = False
        self._last_batch_end: float | None = None
        self._images_per_sec: float | None = None
        self._last_logged_step = -1
        self._generator: torch.Generator | None = None
        warn_noise_through_bottleneck(net, flow)

    # -- set-up ---------------------------------------------------------------------------
    def configure_model(self) -> None:
        from jitlab.train.strategy import ShardedStrategy, is_sharded, shard_net

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, ShardedStrategy) and not is_sharded(self.net):  # FSDP2: each block, then the net
            bf16 = strategy.root_device.type == "cuda" and str(self.trainer.precision).startswith("bf16")
            shard_net(self.net, strategy.shard_mesh, bf16=bf16)
        if self.compile and not self._net_compiled:  # the registered modules stay plain
            self._net_compiled = True
            if callable(getattr(self.net, "compile_blocks", None)):
                self.net.compile_blocks()
            else:  # a compiled view of the whole forward, used in training only
                object.__setattr__(self, "_forward", torch.compile(self.net))

    def configure_optimizers(self) -> dict[str, Any]:
        dm = self.trainer.datamodule
        if not hasattr(dm, "global_batch_size"):
            raise RuntimeError("the data module must define global_batch_size to scale the learning rate")
        optim, global_batch = self.optim, int(dm.global_batch_size)
        lr = optim.lr if optim.lr is not None else optim.blr * global_batch / 256
        total = int(self.trainer.estimated_stepping_batches)
        if optim.warmup_steps is not None:
            warmup = optim.warmup_steps
        else:
            batches = self.trainer.num_training_batches
            per_epoch = math.ceil(batches / self.trainer.accumulate_grad_batches) if math.isfinite(batches) else 0
            warmup = int(round(optim.warmup_epochs * per_epoch))
        rank_zero_info(f"jitlab: lr = {lr:.3g} (blr {optim.blr:g} x global batch {global_batch} / 256), warm-up "
                       f"{warmup} steps, {optim.schedule} schedule over {total} steps")
        # fused AdamW: one kernel for all parameters where torch has it (CPU, CUDA); the loop elsewhere
        fused = all(p.device.type in ("cpu", "cuda") for p in self.net.parameters()) or None
        # two groups as the release: biases and 1-D parameters (norms) without weight decay, the rest with it (not
        # timm's param_groups_weight_decay: it drops the frozen pos_embed, changing the optimizer state's layout)
        params = list(self.net.named_parameters())
        decays = [p.ndim >= 2 and not name.endswith(".bias") for name, p in params]
        groups: list[dict[str, Any]] = [{"params": [p for _, p in params], "weight_decay": 0.0}]
        if optim.weight_decay:
            groups = [{"params": [p for (_, p), d in zip(params, decays) if d == wanted], "weight_decay": wd}
                      for wanted, wd in ((False, 0.0), (True, optim.weight_decay))]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), fused=fused)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total,
                                                                                    optim.schedule, optim.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- training -------------------------------------------------------------------------
    def step_generator(self, batch_idx: int) -> torch.Generator:
        """The training noise (t, eps, label drop) of one micro-batch, drawn from (seed, rank, step, micro-batch):
        a resumed run draws exactly what an uninterrupted one would, and every process draws different noise."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        micro = batch_idx % self.trainer.accumulate_grad_batches
        key = index_seed(seed, (self.global_step * 4096 + micro) * 65536 + self.global_rank)
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        return self._generator.manual_seed(key)

    def drop_labels(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace labels by the null class with probability ``label_drop`` (classifier-free guidance)."""
        if self.null_class is None or self.label_drop == 0:
            return y
        drop = torch.rand(y.shape, device=y.device, generator=generator) < self.label_drop  # (N,)
        return torch.where(drop, torch.full_like(y, self.null_class), y)

    def loss_per_sample(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample flow loss (N,) of the configured cell, and the times t (N,) it was drawn at."""
        per_sample, t, _, _ = self.loss_terms(x, y, y, generator)
        return per_sample, t

    def loss_terms(self, x: Tensor, y_in: Tensor, y: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """The flow loss per sample (N,), t (N,), the auxiliary losses (unweighted, by name) and the clean state.

        ``x``: (N, C, H, W) clean images; ``y_in``: the labels the network sees (after the label drop); ``y``: the
        true ones. A StateBackbone's flow runs on ``encode(x, y)`` towards ``target_state``, an image backbone's on x.
        """
        net = self.net
        state = net.encode(x, y) if self._state_net else x  # (N, *state_shape)
        target = net.target_state(x, y, state) if self._state_net else state  # (N, *state_shape)
        t, eps, z = self.flow.draw(state, generator)  # (N,), (N, ...), (N, ...)
        z_in = self.flow.net_input(z, t)  # (N, ...): z, or EDM's c_in z
        if self._aux_net:
            out, aux = net.forward_losses(z_in, t, y_in, CleanBatch(x, y, state, y_in))  # (N, ...), {name: ()}
        else:
            forward = self._forward if self.training else net  # a compiled whole forward serves training only
            out, aux = forward(z_in, t, y_in), {}  # (N, ...) in the prediction space
        return self.flow.per_sample_loss(out, target, eps, z, t), t, aux, state

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # (N, ...), (N,)
        generator = self.step_generator(batch_idx)
        y_in = self.drop_labels(y, generator)  # (N,)
        per_sample, t, aux, state = self.loss_terms(x, y_in, y, generator)  # (N,), (N,), {name: ()}, (N, ...)
        loss = per_sample.mean()
        if aux:
            self.log_dict({"train/flow_loss": loss} | {f"train/{name}_loss": value for name, value in aux.items()},
                          on_step=True, on_epoch=False, batch_size=x.shape[0])
            loss = loss + sum(self.net.loss_weights[name] * value for name, value in aux.items())
        self._note_nonfinite(loss)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        if self._diagnosed_net and self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({f"train/{k}": v for k, v in self.net.diagnostics(state.detach()).items()},
                          on_step=True, on_epoch=False, batch_size=x.shape[0])
        self._accumulate_bins(per_sample.detach(), t)
        return loss

    def _note_nonfinite(self, loss: Tensor) -> None:
        """Remember the first step with a non-finite loss, on the device (a Python ``if`` on the loss would make
        the host wait for the GPU at every step); ``_check_finite`` raises at the next logging step."""
        first = ~torch.isfinite(loss.detach()) & (self._nonfinite_step < 0)  # ()
        self._nonfinite_step.copy_(torch.where(first, self.global_step, self._nonfinite_step))

    @staticmethod
    def _check_finite(first: Tensor) -> None:
        """Raise if ``first`` (the first step with a non-finite loss, or -1) is a step."""
        if int(first) >= 0:
            raise FloatingPointError(f"training loss is not finite at step {int(first)}: the run diverged")

    def _accumulate_bins(self, per_sample: Tensor, t: Tensor) -> None:
        bins = self._bin_sum.numel()
        index = (t * bins).long().clamp_(0, bins - 1)  # (N,)
        self._bin_sum.index_add_(0, index, per_sample.double())
        self._bin_count.index_add_(0, index, torch.ones_like(per_sample, dtype=torch.float64))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None:
            rate = batch[0].shape[0] * self.trainer.world_size / max(now - self._last_batch_end, 1e-9)
            self._images_per_sec = rate if self._images_per_sec is None else 0.9 * self._images_per_sec + 0.1 * rate
        self._last_batch_end = now
        step = self.global_step
        if step % self.trainer.log_every_n_steps != 0 or step == self._last_logged_step:
            return  # log once per optimizer step, every log_every_n_steps
        self._last_logged_step = step
        # over every process: all stop together (one process stopping alone would leave the others waiting)
        self._check_finite(self.trainer.strategy.reduce(self._nonfinite_step.clone(), reduce_op="max"))
        sums = self.trainer.strategy.reduce(self._bin_sum.clone(), reduce_op="sum")
        counts = self.trainer.strategy.reduce(self._bin_count.clone(), reduce_op="sum")
        bins = sums.numel()
        metrics = {f"train/loss_t{i / bins:.2f}-{(i + 1) / bins:.2f}": (sums[i] / counts[i]).float()
                   for i in range(bins) if counts[i] > 0}
        metrics["train/lr"] = torch.tensor(self.optimizers().param_groups[0]["lr"])
        if self._images_per_sec is not None:
            metrics["train/images_per_sec"] = torch.tensor(self._images_per_sec)
        self.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)
        self._bin_sum.zero_()
        self._bin_count.zero_()

    def on_train_end(self) -> None:
        self._check_finite(self._nonfinite_step)  # a divergence after the last logging step

    # -- validation -----------------------------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        generator = torch.Generator(device=x.device).manual_seed(1000 + batch_idx)  # the same t and eps every time
        loss = self.loss_per_sample(x, y, generator)[0].mean()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=x.shape[0])
        return loss

    # -- sampling -------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one generated sample: the image's for a StateBackbone, else the flow's state."""
        return tuple(self.net.image_shape) if self._state_net else self.state_shape

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of the flow's (and the sampler's) state: the network's ``sample_shape``."""
        return tuple(self.net.sample_shape)

    @torch.no_grad()
    def generate(self, indices: Sequence[int], labels: Tensor | None, *, steps: int = 50,
                 method: Sampler = Sampler.heun, cfg_scale: float = 1.0,
                 cfg_interval: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 final_step: FinalStep = FinalStep.euler, precision: Precision = Precision.fp32) -> Tensor:
        """Generate one sample per global index (noise drawn from the index); returns (N, *sample_shape).

        The ODE runs on the flow's state (``state_shape``); a StateBackbone's final state is decoded to images.
        ``final_step``: ``euler`` (the release) or ``x`` (the last step lands on the x-prediction);
        ``precision``: ``fp32``, or ``bf16`` autocast of the network's forward (the release on GPU).
        """
        z = initial_noise(indices, self.state_shape, seed, self.flow.config.noise_scale, self.device)  # (N, ...)
        if labels is None:
            labels = torch.zeros(len(indices), dtype=torch.long)
        # the plain network: sampling never runs the compiled training views (no recompile on one rank)
        step_args = (self.net, self.flow, labels.to(self.device), self.null_class, cfg_scale, cfg_interval)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=Precision(precision) == Precision.bf16):
            state = integrate(guided(*step_args), z, steps, method, final_step,
                              denoise=guided(*step_args, space=Space.x))
            return self.net.decode(state) if self._state_net else state  # (N, *sample_shape)
