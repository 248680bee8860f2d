"""Issue 27's new cells and switches: Table 2 (b) at 16x16, Table 4 taken apart, and the controls of the DSD, REG and
RAE grids (jitlab/core/models/dsd.py ``latent_scale``, jitlab/score/reg_align.py, rae_width's rule at equal output
rank).

Every new grid cell smoke-fits one step through `jitlab fit` (its resolved config, a batch of 2); the switches are
checked for what they claim. Every number fed to a rule is a FIXTURE made up for these tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from jitlab.errors import ConfigError
from jitlab.core.flow import FlowConfig
from jitlab.experiments.grid.plan import build_meta_net
from jitlab.experiments.grid.spec import load_spec
from jitlab.score.metrics.refnet import RefNet, RefNetConfig
from jitlab.score import reg_align
from jitlab.core.models.dsd import LatentJiT, unit_rms
from jitlab.core.models.protocol import AuxLossBackbone, CleanBatch, StateBackbone
from jitlab.score.reg_align import AlignedRegJiT
from jitlab.train.module import JiTModule
from tests.conftest import run_cli
from tests.test_rules import RAE, by_axis, judged, outcome

REPO = Path(__file__).resolve().parents[1]
DSD_TINY = dict(img_size=16, patch_size=4, in_channels=3, latent_dim=8, hidden_size=48, depth=2, num_heads=3,
                num_classes=10, attn_impl="sdpa")
REG_TINY = dict(img_size=16, patch_size=4, hidden_size=48, depth=2, num_heads=3, bottleneck_dim=None, rope=False,
                qk_norm=False, in_context_len=0, num_classes=10, attn_impl="sdpa", token="thumbnail", token_dim=12,
                align_depth=1, align_proj_dim=32, align_refnet={"kind": "shapes", "resolution": 16, "seed": 1})


@pytest.fixture
def fixed_reference(monkeypatch):
    """load_refnet stands in: a randomly initialised (seeded) classifier, recording the configs asked for."""
    asked: list[RefNetConfig] = []

    def load(config, *args, **kwargs):
        asked.append(config)
        torch.manual_seed(123)
        return RefNet(10, config.resolution, width=16).eval(), {"key": config.key()}

    monkeypatch.setattr(reg_align, "load_refnet", load)
    return asked


# -- DSD: the latent at a fixed scale -----------------------------------------------------------------------------

def test_a_unit_rms_latent_has_the_noises_scale_whatever_the_encoders():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    free, fixed = LatentJiT(**DSD_TINY), LatentJiT(**DSD_TINY, latent_scale="unit_rms")
    fixed.load_state_dict(free.state_dict())
    with torch.no_grad():
        for net in (free, fixed):
            net.encoder.weight.mul_(12.0)  # a grown encoder, as stop-gradient latents grow to std 11-13
    rms = lambda s: s.pow(2).mean(dim=(1, 2, 3)).sqrt()  # noqa: E731  (N,)
    assert (rms(free.encode(x)) > 3).all()  # the free latent grows with the encoder
    assert torch.allclose(rms(fixed.encode(x)), torch.ones(4), atol=1e-4)  # the control does not
    assert torch.allclose(fixed.encode(x), unit_rms(free.encode(x)), atol=1e-5)  # the same latent, rescaled
    ema = LatentJiT(**DSD_TINY, target="ema", latent_scale="unit_rms")
    assert torch.allclose(rms(ema.target_state(x, None, ema.encode(x))), torch.ones(4), atol=1e-4)
    with pytest.raises(ConfigError, match="model.net.init_args.latent_scale: unknown latent_scale"):
        LatentJiT(**DSD_TINY, latent_scale="unit")


def test_the_unit_rms_flow_loss_is_finite_and_reaches_the_encoder():
    torch.manual_seed(0)
    net = LatentJiT(**DSD_TINY, latent_scale="unit_rms")
    module = JiTModule(net, flow=FlowConfig(pred="x", loss="v"))
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    per_sample, _, aux, _ = module.loss_terms(x, y, y, torch.Generator().manual_seed(0))
    loss = per_sample.mean() + aux["recon"]
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(net.encoder.weight.grad).all()
    assert net.encoder.weight.grad.abs().sum() > 0


# -- REG: the alignment loss ------------------------------------------------------------------------------------

def reg_batch(net: AlignedRegJiT, n: int = 4):
    torch.manual_seed(1)
    x = torch.rand(n, 3, 16, 16) * 2 - 1
    y = torch.arange(n) % 10
    state = net.encode(x, y)  # (N, C*H*W + K)
    t = torch.rand(n)
    z = t.view(-1, 1) * state + (1 - t.view(-1, 1)) * torch.randn_like(state)
    return z, t, y, CleanBatch(x, y, state, y)


def test_the_alignment_loss_trains_the_backbone_and_never_the_frozen_encoder(fixed_reference):
    torch.manual_seed(0)
    net = AlignedRegJiT(**REG_TINY)
    assert isinstance(net, AuxLossBackbone) and isinstance(net, StateBackbone)
    assert net.loss_weights == {"align": 0.5}  # REPA's lambda by default
    assert fixed_reference == [RefNetConfig(kind="shapes", resolution=16, seed=1)]
    z, t, y, clean = reg_batch(net)
    out, aux = net.forward_losses(z, t, y, clean)
    assert out.shape == z.shape and torch.allclose(out, net(z, t, y))  # the prediction is the forward's
    assert set(aux) == {"align"} and aux["align"].shape == () and 0.0 <= aux["align"].item() <= 2.0
    assert net.target_features(clean.x).shape == (4, net.num_patches, 16)  # one 16-d target per token
    reference = net._reference
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    aux["align"].backward()
    assert all(p.grad is None for p in reference.parameters())  # frozen: no gradient reaches the encoder
    assert not any(k.startswith("_reference") for k in net.state_dict())  # outside checkpoints and the EMA
    assert net.projector[0].weight.grad.abs().sum() > 0 and net.x_embedder.proj.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())


def test_the_alignment_loss_decreases_under_its_own_gradient(fixed_reference):
    torch.manual_seed(0)
    net = AlignedRegJiT(**REG_TINY)
    z, t, y, clean = reg_batch(net)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        _, aux = net.forward_losses(z, t, y, clean)
        optimizer.zero_grad()
        aux["align"].backward()
        optimizer.step()
        losses.append(aux["align"].item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], losses


def test_the_module_adds_the_weighted_alignment_loss(fixed_reference):
    net = AlignedRegJiT(**REG_TINY, align_weight=0.25)
    module = JiTModule(net, flow=FlowConfig(pred="x", loss="v"))
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    _, _, aux, _ = module.loss_terms(x, y, y, torch.Generator().manual_seed(0))
    assert set(aux) == {"align"} and net.loss_weights == {"align": 0.25} and torch.isfinite(aux["align"])


def test_an_aligned_reg_net_is_rebuilt_from_its_checkpoint_spec(fixed_reference):
    from jitlab.core.models.spec import build_net, net_spec

    net = AlignedRegJiT(**REG_TINY)
    twin = build_net(net_spec(net))
    assert isinstance(twin, AlignedRegJiT) and twin.init_args == net.init_args
    twin.load_state_dict(net.state_dict())  # the projector is in the checkpoint, the frozen classifier is not
    z, t, y, _ = reg_batch(net)
    assert torch.allclose(twin(z, t, y), net(z, t, y))


@pytest.mark.parametrize("change, field, says", [
    ({"align_refnet": {"kind": "shapes", "resolution": 16}}, "align_refnet", "scores the cells"),
    ({"align_refnet": None}, "align_refnet", "must name the reference classifier"),
    ({"align_refnet": {"kind": "shapes", "seeds": 1}}, "align_refnet", "unknown field"),
    ({"align_encoder": "token"}, "align_encoder", "token is 'thumbnail'"),
    ({"align_encoder": "dino"}, "align_encoder", "unknown align_encoder"),
    ({"align_depth": 3}, "align_depth", "1..depth=2"),
    ({"align_weight": -1.0}, "align_weight", ">= 0"),
])
def test_a_bad_alignment_setting_names_its_field(change, field, says, fixed_reference):
    with pytest.raises(ConfigError, match=f"model.net.init_args.{field}") as error:
        AlignedRegJiT(**{**REG_TINY, **change})
    assert says in str(error.value)


def test_the_reg_grid_aligns_to_a_classifier_other_than_the_scoring_one(fixed_reference):
    cells = [c for c in load_spec("reg_token").cells("mini", train_seeds=1) if c.labels["token"] == "rep_align"]
    assert len(cells) == 3
    for cell in cells:
        args = cell.config["model"]["net"]["init_args"]
        assert args["align_refnet"] == {"kind": "shapes", "resolution": 32, "seed": 1} and args["align_weight"] == 0.5
        assert cell.eval["features"] == "refnet"  # scored by shapes-32 seed 0: another classifier
    for scale in ("lab", "paper"):  # REG as published: DINOv2's CLS token and its patches
        cell = next(c for c in load_spec("reg_token").cells(scale, train_seeds=1) if c.labels["token"] == "rep_align")
        net = build_meta_net(cell.config)
        assert net.align_encoder == "token" and net.token == "encoder"


# -- the rules of the changed grids -----------------------------------------------------------------------------

def test_the_head_rescue_rule_compares_at_equal_output_rank():
    # the head cell below the rank-deficient width-1/2 cell but above the width-1.5 model: no rescue
    lines, _ = judged("rae_width", by_axis("model", {**RAE, "v-w0.5+head": 150.0}))
    line = next(line for line in lines if line.startswith("**the head rescues v**"))
    assert outcome(line) == "Does not reproduce" and "v-w1.5" in line


def test_table2_b_reads_every_panel():
    from tests.test_rules import table2

    lines, overall = judged("table2", table2(b16_high={"b16p2": 45.0}))  # only the 64-token panel is far apart
    line = next(line for line in lines if line.startswith("**(b) at 16x16**"))
    assert outcome(line) == "Does not reproduce" and "setting b16p4" in line and "setting b16p2" in line
    assert "(b) at 16x16 fails" in overall


# -- every new cell: planned with its cost, one step of `jitlab fit` --------------------------------------------

NEW_CELLS = {
    "table2": lambda labels: labels["setting"] in ("b16p4", "b16p2"),
    "table4": lambda labels: labels["component"] in ("rope", "qk_norm"),
    "dsd_latent": lambda labels: labels["variant"].endswith("_unit"),
    "reg_token": lambda labels: labels["token"] == "rep_align",
}
ONE_STEP = ["--data.init_args.global_batch_size=2", "--data.init_args.num_workers=0", "--trainer.max_steps=1",
            "--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.precision=32-true",
            "--model.compile=false", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
            "--trainer.devices=1", "--samples.every_n_steps=0", "--samples.num_images=2", "--samples.steps=1",
            "--checkpoint.every_n_train_steps=1"]


# Table 2's new cells differ from each other in the flow's spaces only: each panel fits the 3 predictions, each with
# another loss (a Latin square: every prediction and every loss once per panel); `grid run --dry_run` checks all 18
FITTED_TABLE2 = {("x", "eps"), ("eps", "v"), ("v", "x")}  # (pred, loss)


def new_cells():
    return [(grid, cell) for grid, new in NEW_CELLS.items()
            for cell in load_spec(grid, root=REPO).cells("mini", train_seeds=1) if new(cell.labels)]


def cells_to_fit():
    return [(grid, cell) for grid, cell in new_cells()
            if grid != "table2" or (cell.labels["pred"], cell.labels["loss"]) in FITTED_TABLE2]


def test_the_new_cells_are_there_and_planned_with_their_costs(capsys, monkeypatch):
    counts = {grid: sum(1 for g, _ in new_cells() if g == grid) for grid in NEW_CELLS}
    assert counts == {"table2": 18, "table4": 2, "dsd_latent": 3, "reg_token": 3}
    fitted = [c.labels for g, c in cells_to_fit() if g == "table2"]
    for panel in ("b16p4", "b16p2"):
        for axis in ("pred", "loss"):
            assert sorted(labels[axis] for labels in fitted if labels["setting"] == panel) == ["eps", "v", "x"]
    monkeypatch.chdir(REPO)
    gmacs = {}
    for grid in NEW_CELLS:
        ids = [c.id for g, c in new_cells() if g == grid] + (["setting-b_loss-v_pred-x"] if grid == "table2" else [])
        code, out = run_cli(["grid", "plan", grid, "--scale", "mini", "--train_seeds", "1", "--only", *ids], capsys)
        assert code == 0, out
        rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
        for cell_id in ids:
            assert cell_id in rows, (grid, cell_id)
            gmacs[cell_id] = float(rows[cell_id][3])
    # the 16x16 panels cost about 1x (p4: 16 tokens) and 4x (p2: 64 tokens) of an 8x8 cell per forward pass
    assert gmacs["setting-b16p4_loss-v_pred-x"] == pytest.approx(gmacs["setting-b_loss-v_pred-x"], rel=0.2)
    assert gmacs["setting-b16p2_loss-v_pred-x"] == pytest.approx(4 * gmacs["setting-b_loss-v_pred-x"], rel=0.2)


FIT = cells_to_fit()


@pytest.mark.parametrize("grid, cell", FIT, ids=[c.id for _, c in FIT])
def test_every_new_cell_fits_one_step(grid, cell, tmp_path, capsys, fixed_reference):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cell.config))
    code, out = run_cli(["fit", "--config", str(path), *ONE_STEP, f"--trainer.default_root_dir={tmp_path}"], capsys)
    assert code == 0, out[-3000:]
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"


# -- Table 4's report states the CFG each cell was scored at ----------------------------------------------------

def test_the_table4_report_names_each_cells_cfg_and_judges_the_single_components(tmp_path):
    import json

    from jitlab.experiments.report import build_report

    spec = load_spec("table4", root=REPO)
    means = {"baseline": 60.0, "rope": 66.0, "qk_norm": 54.0, "rope_qknorm": 47.0, "in_context": 42.0}  # FIXTURE
    best_cfg = {"baseline": 1.5, "rope": 3.0, "qk_norm": 2.0, "rope_qknorm": 1.0, "in_context": 2.0}  # FIXTURE
    for cell in spec.cells("mini"):
        component = cell.labels["component"]
        directory = tmp_path / "runs" / "table4" / "mini" / cell.id
        directory.mkdir(parents=True)
        row = {"metric": "FD-ref-500", "value": means[component] * (1.01 if cell.train_seed else 0.99),
               "n_samples": 500, "seed": 0, "step": 1000, "cfg_scale": best_cfg[component]}
        result = {"grid": "table4", "scale": "mini", "cell": cell.id, "labels": cell.labels, "status": "done",
                  "config_hash": cell.config_hash, "rows": [row], "train_seconds": 10.0, "step": 1000,
                  **({"train_seed": cell.train_seed} if cell.train_seed else {})}
        (directory / "result.json").write_text(json.dumps(result))
    md = build_report(spec, "mini", tmp_path / "runs", tmp_path / "reports")["md"].read_text()
    assert "CFG scale swept over [1.0, 1.5, 2.0, 3.0]" in md
    assert "| `component-rope` | 0 | done | FD-ref-500 |" in md
    rope_row = next(line for line in md.splitlines() if line.startswith("| `component-rope` | 0 | done |"))
    assert "| 3 |" in rope_row or "| 3.0 |" in rope_row  # its best CFG
    verdict = {line.split("**")[1]: line.split("**")[3] for line in md.splitlines()
               if line.startswith("- **") and line.count("**") >= 4}
    assert verdict["RoPE alone"] == "Does not reproduce" and verdict["qk-norm alone"] == "Reproduces (2 seeds)"
    assert verdict["each component helps"] == "Reproduces (2 seeds)"
