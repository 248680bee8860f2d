"""experiments/recipes/: the release's 600-epoch commands as small diffs over the paper scale; grids table7/table8.

Each value lives once: what the recipes share (600 epochs, the release's evaluation) is in recipes/common/, the
scales' scoring defaults in experiments/scales/, and no recipe, common file or grid says again what it includes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from jitlab.errors import ConfigError
from jitlab.experiments.grid.spec import load_config, load_spec, recipe_eval
from jitlab.core.models.registry import MODELS
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "experiments" / "recipes"
COMMON = RECIPES / "common"  # what the recipes at one resolution share: release-256.yaml, release-512.yaml
# The release's training commands (its README: B/16, B/32, H/16) and the paper's per-model CFG ranges
# (B 2.9-3.0, L 2.4-2.5, H 2.2-2.3); "assumed" names the values neither states exactly.
RELEASED = dict(P_mean=-0.8, P_std=0.8, batch_size=128, gpus=8, blr=5e-5, epochs=600, warmup_epochs=5,
              interval=[0.1, 1.0], num_images=50000, steps=50, sampler="heun")
RELEASE = {
    "jit-b-16-256": dict(model="JiT-B/16", img_size=256, noise_scale=1.0, proj_dropout=0.0, cfg=2.9, assumed=()),
    "jit-l-16-256": dict(model="JiT-L/16", img_size=256, noise_scale=1.0, proj_dropout=0.0, cfg=2.4, assumed=("cfg",)),
    "jit-h-16-256": dict(model="JiT-H/16", img_size=256, noise_scale=1.0, proj_dropout=0.2, cfg=2.2, assumed=()),
    "jit-g-16-256": dict(model="JiT-G/16", img_size=256, noise_scale=1.0, proj_dropout=0.2, cfg=2.2,
                         assumed=("cfg", "proj_dropout")),
    "jit-b-32-512": dict(model="JiT-B/32", img_size=512, noise_scale=2.0, proj_dropout=0.0, cfg=2.9, assumed=()),
    "jit-l-32-512": dict(model="JiT-L/32", img_size=512, noise_scale=2.0, proj_dropout=0.0, cfg=2.4, assumed=("cfg",)),
    "jit-h-32-512": dict(model="JiT-H/32", img_size=512, noise_scale=2.0, proj_dropout=0.2, cfg=2.2, assumed=("cfg",)),
    "jit-g-32-512": dict(model="JiT-G/32", img_size=512, noise_scale=2.0, proj_dropout=0.2, cfg=2.2,
                         assumed=("cfg", "proj_dropout")),
}
PAPER = {"table7": {"B": 3.66, "L": 2.36, "H": 1.86, "G": 1.82}, "table8": {"B": 4.02, "L": 2.53, "H": 1.94, "G": 1.78}}
# what a recipe may change in the paper scale's resolved config (anything else: not a small diff)
MAY_DIFFER = re.compile(r"^(trainer\.(max_epochs|default_root_dir)|data\.init_args\.resolution|model\.flow\.noise_scale"
                        r"|model\.net\.init_args\.(hidden_size|depth|num_heads|bottleneck_dim|in_context_start|"
                        r"patch_size|proj_drop)|samples\.cfg_scale|evaluation\..*)$")


def printed(capsys, *args: str) -> dict:
    code, out = run_cli(["fit", *args, "--print_config"], capsys)
    assert code == 0, out[-2000:]
    return yaml.safe_load(out[out.index("seed_everything"):])


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_there_is_one_recipe_per_model_and_resolution():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(RELEASE)


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_recipe_resolves_to_the_releases_command(name, capsys):
    want = {**RELEASED, **RELEASE[name]}
    config = printed(capsys, "--config", str(RECIPES / f"{name}.yaml"), "--data.root", "/data/imagenet",
                     "--trainer.devices", "8")
    net, flow, optim = config["model"]["net"]["init_args"], config["model"]["flow"], config["model"]["optim"]
    assert {k: net[k] for k in MODELS[want["model"]]} == MODELS[want["model"]]
    assert (net["proj_drop"], net["attn_drop"]) == (want["proj_dropout"], 0.0)
    assert (flow["pred"], flow["loss"], flow["mu"], flow["sigma"]) == ("x", "v", want["P_mean"], want["P_std"])
    assert flow["noise_scale"] == want["noise_scale"]
    data = config["data"]
    assert data["class_path"].endswith("ImageNetDataModule") and data["init_args"]["root"] == "/data/imagenet"
    assert data["init_args"]["resolution"] == want["img_size"]
    assert data["init_args"]["global_batch_size"] == want["batch_size"] * want["gpus"]  # 128 per GPU
    assert int(config["trainer"]["devices"]) == want["gpus"]
    assert (optim["blr"], optim["warmup_epochs"], optim["lr"]) == (want["blr"], want["warmup_epochs"], None)
    assert (config["trainer"]["max_epochs"], config["trainer"]["max_steps"]) == (want["epochs"], -1)
    assert config["ema"]["decays"] == [0.9999, 0.9996]
    evaluation = config["evaluation"]
    assert (evaluation["cfg_scale"], evaluation["cfg_interval"]) == (want["cfg"], want["interval"])
    assert config["samples"]["cfg_scale"] == want["cfg"] and config["samples"]["cfg_interval"] == want["interval"]
    assert (evaluation["num_images"], evaluation["steps"], evaluation["sampler"]) == (
        want["num_images"], want["steps"], want["sampler"])
    assert evaluation["features"] == "inception" and evaluation["every_n_steps"] == 0  # off while training
    assert evaluation["ref_stats"] == f"fid_stats/jit_in{want['img_size']}_stats.npz"


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_assumed_values_are_marked_assumed_and_the_releases_are_not(name):
    lines = (RECIPES / f"{name}.yaml").read_text().splitlines()
    line = {"cfg": next(x for x in lines if x.startswith("evaluation.cfg_scale:")),
            "proj_dropout": next(x for x in lines if x.startswith("model.net.init_args.proj_drop:"))}
    for field, text in line.items():
        assert ("assumed" in text) == (field in RELEASE[name]["assumed"]), text


def test_a_recipe_is_a_small_diff_that_keeps_every_other_value_of_the_paper_scale(capsys):
    base = flat(printed(capsys, "--config", str(REPO / "experiments" / "scales" / "paper.yaml")))
    config = flat(printed(capsys, "--config", str(RECIPES / "jit-h-32-512.yaml")))
    changed = sorted(k for k in base if config[k] != base[k])
    assert changed and all(MAY_DIFFER.match(k) for k in changed), [k for k in changed if not MAY_DIFFER.match(k)]
    assert config["model.net.init_args.patch_size"] == 32 and config["trainer.precision"] == base["trainer.precision"]
    keys = [x for x in (RECIPES / "jit-h-32-512.yaml").read_text().splitlines() if x and not x.startswith("#")]
    assert len(keys) <= 12 and keys[0] == "config: common/release-512.yaml"
    # the grid loader reads a recipe as `jitlab fit` does
    resolved = flat(load_config(RECIPES / "jit-h-32-512.yaml"))
    assert all(config[k] == v for k, v in resolved.items() if k in config)


def includes(path: Path) -> list[Path]:
    """The chain of files ``path`` includes (``config: FILE``), its own first."""
    chain = [path]
    while (include := yaml.safe_load(chain[-1].read_text()).get("config")) is not None:
        chain.append((chain[-1].parent / include).resolve())
    return chain


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")) + sorted(COMMON.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_no_recipe_says_again_what_it_includes(path):
    """Each dotted key changes what the included file resolves to, and the scoring lives in common/ alone."""
    chain = includes(path)
    assert chain[-1] == (REPO / "experiments" / "scales" / "paper.yaml").resolve()
    base = flat(load_config(chain[1]))
    own = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "config"}
    assert own and not [k for k, v in own.items() if base.get(k) == v], "repeats its include"
    if path.parent == RECIPES:  # a model's recipe: its network, dropout, run folder and CFG scale only
        assert [k for k in own if k.startswith("evaluation.")] == ["evaluation.cfg_scale"]
        assert own.get("samples.cfg_scale", base["samples.cfg_scale"]) == own["evaluation.cfg_scale"]


@pytest.mark.parametrize("grid", ["table7", "table8"])
def test_the_grids_eval_says_nothing_its_recipes_or_the_paper_scale_say(grid):
    """One owner: a cell's scoring is its recipe's evaluation.* (recipe_eval); the grid adds only what neither the
    recipes nor the paper scale's defaults say (the IS), and no axis value sets an eval key."""
    defaults = yaml.safe_load((REPO / "experiments" / "scales" / "eval.yaml").read_text())["paper"]
    raw = yaml.safe_load((REPO / "experiments" / "grids" / f"{grid}.yaml").read_text())
    values = raw["axes"]["model"]["values"].values()
    assert not [k for value in values for k in value["paper"] if k.startswith("eval.")]
    own = raw["scales"]["paper"]["eval"]
    for value in values:
        said = recipe_eval(load_config(REPO / value["paper"]["config"]))
        assert said["cfg"] and said["ref_stats"] and not set(own) & set(said), value["label"]
    assert own and not [k for k, v in own.items() if defaults.get(k) == v]


def test_a_recipe_s_evaluation_becomes_a_cell_s_scoring_and_a_later_eval_key_wins(tmp_path):
    (tmp_path / "scale.yaml").write_text("trainer: {max_steps: 1}\n")
    (tmp_path / "recipe.yaml").write_text("config: scale.yaml\ntrainer.max_steps: 5\nevaluation.cfg_scale: 2.7\n"
                                          "evaluation.cfg_interval: [0.2, 0.9]\nevaluation.steps: 40\n"
                                          "evaluation.every_n_steps: 100\nevaluation.inception_weights: /w.pth\n")
    assert recipe_eval(load_config(tmp_path / "recipe.yaml")) == {"cfg": [2.7], "cfg_interval": [[0.2, 0.9]],
                                                                   "steps": 40}
    (tmp_path / "grid.yaml").write_text(
        "name: g\ntitle: g\nclaim: c\npaper_metric: FID-50K\nlayout: {kind: points, x: m}\n"
        "axes: {m: {values: {a: {paper: {config: recipe.yaml}}, b: {paper: {config: recipe.yaml, eval.cfg: [3.0]}}}}}\n"
        "scales: {paper: {config: scale.yaml, eval: {cfg: [1.5], ema: [0], num_images: 10}}}\n")
    a, b = load_spec(tmp_path / "grid.yaml", root=tmp_path).cells("paper")
    assert a.config["trainer"]["max_steps"] == 5 and a.eval["steps"] == 40
    assert a.eval["cfg"] == [2.7] and a.eval["cfg_interval"] == [[0.2, 0.9]] and b.eval["cfg"] == [3.0]
    assert a.config_hash != b.config_hash


def test_an_include_needs_dotted_keys_and_resolves_relative_to_its_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("model: {flow: {mu: -0.8, sigma: 0.8}}\ntrainer: {max_epochs: 200}\n")
    (tmp_path / "sub" / "good.yaml").write_text("config: ../base.yaml\nmodel.flow.mu: -1.2\n")
    assert load_config(tmp_path / "sub" / "good.yaml") == {"model": {"flow": {"mu": -1.2, "sigma": 0.8}},
                                                            "trainer": {"max_epochs": 200}}
    (tmp_path / "sub" / "nested.yaml").write_text("config: ../base.yaml\nmodel: {flow: {mu: -1.2}}\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: .*dotted keys.*model"):
        load_config(tmp_path / "sub" / "nested.yaml")


@pytest.mark.parametrize("grid", ["table7", "table8"])
def test_grid_cells_are_the_recipes_with_their_evaluation(grid):
    spec = load_spec(grid, root=REPO)
    assert set(spec.scales) == {"paper"}  # no mini stand-in (see the grid's why)
    resolution = 256 if grid == "table7" else 512
    for cell in spec.cells("paper"):
        size = cell.labels["model"]
        name = f"jit-{size.lower()}-{16 if grid == 'table7' else 32}-{resolution}"
        recipe = load_config(RECIPES / f"{name}.yaml")
        assert cell.config == recipe, name
        evaluation, want = recipe["evaluation"], {**RELEASED, **RELEASE[name]}
        assert cell.eval["cfg"] == [evaluation["cfg_scale"]] == [want["cfg"]]
        assert cell.eval["cfg_interval"] == [evaluation["cfg_interval"]] == [want["interval"]]
        for key in ("num_images", "steps", "sampler", "ref_stats", "precision", "final_step"):
            assert cell.eval[key] == evaluation[key], (name, key)
        assert cell.eval["ema"] == [0] and cell.eval["inception_score"] is True  # model_ema1, FID and IS
        assert cell.paper_value == PAPER[grid][size] and cell.paper_metric == "FID-50K"


def test_table7_plan_prints_every_cells_gpu_hours_and_the_report_carries_fid_and_is(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    code, out = run_cli(["grid", "plan", "table7", "--scale", "paper"], capsys)
    assert code == 0, out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| model-")]
    hours = [float(r[6]) + float(r[7]) for r in rows]
    assert [r[1].strip() for r in rows] == ["model-B", "model-L", "model-H", "model-G"]
    assert all(h > 0 for h in hours) and hours == sorted(hours)  # B < L < H < G
    from jitlab.experiments.report.build import build_report

    spec = load_spec("table7", root=REPO)
    for cell in spec.cells("paper")[:1]:  # one finished cell is enough for a report
        directory = tmp_path / "runs" / "table7" / "paper" / cell.id
        directory.mkdir(parents=True)
        rows = [{"metric": "FID-50K", "value": 3.9, "n_samples": 50000}, {"metric": "IS-50K", "value": 260.0}]
        (directory / "result.json").write_text(json.dumps({"status": "done", "config_hash": cell.config_hash,
                                                           "rows": rows}))
    paths = build_report(spec, "paper", tmp_path / "runs", tmp_path / "reports", png=False)
    md = paths["md"].read_text()
    assert "3.66" in md and "1.82" in md and "275.1" in md and "292.6" in md  # the paper's FID and IS


def test_table7_and_table8_dry_runs_resolve_every_cell(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for grid in ("table7", "table8"):
        code, out = run_cli(["grid", "run", grid, "--scale", "paper", "--dry_run", "--data_root", "/data/imagenet",
                             "--runs", "/nonexistent/runs"], capsys)
        assert code == 0, out[-2000:]
        assert "# 4 cells, 0 invalid" in out and out.count("max_epochs: 600") == 4
        assert out.count("root: /data/imagenet") == 4
