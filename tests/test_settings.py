"""One typed settings object for sampling and evaluation (issue 17): checked at construction, the one source of
the verbs' defaults, the callbacks' flags and the JSON file a grid hands to `jitlab eval`."""

from __future__ import annotations

import json

import pytest

from jitlab.errors import ConfigError
from jitlab.core.sampling import FinalStep, Sampler
from jitlab.core.settings import (EvalSettings, PeriodicSettings, PreviewSettings, SamplerSettings, SampleSettings,
                                  ScoreSettings)


@pytest.mark.parametrize("kwargs,field", [
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"cfg_scale": -1}, "cfg_scale"),
    ({"cfg_scale": float("nan")}, "cfg_scale"), ({"cfg_interval": (0.9, 0.1)}, "cfg_interval"),
    ({"cfg_interval": (0.1,)}, "cfg_interval"), ({"sampler": "rk4"}, "sampler"), ({"final_step": "eps"}, "final_step"),
    ({"precision": "fp16"}, "precision"), ({"seed": "zero"}, "seed"),
])
def test_a_bad_sampler_value_fails_at_construction_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        SamplerSettings(**kwargs)
    assert error.value.field == field


def test_values_are_typed_once_checked():
    s = SamplerSettings("euler", 3, 2, [0, 1], 1, "x", "bf16")
    assert s.sampler is Sampler.euler and s.final_step is FinalStep.x and s.cfg_interval == (0.0, 1.0)
    assert s.record()["nfe"] == 3 and s.generate_kwargs()["method"] is Sampler.euler
    assert PreviewSettings().steps == 25 and SamplerSettings().steps == 50
    with pytest.raises(ConfigError, match="num_images"):
        ScoreSettings(num_images=1)
    with pytest.raises(ConfigError, match="ref_images"):
        ScoreSettings(ref_images=1)
    ScoreSettings(ref_images=1, ref_stats="stats.npz")  # real images are not needed with a statistics file
    with pytest.raises(ConfigError, match="score_resolution"):
        ScoreSettings(score_resolution="big")
    with pytest.raises(ConfigError, match="ema"):
        SampleSettings(ema="first")


def test_the_sweep_and_its_flat_json_form_round_trip(tmp_path):
    grid_eval = {"features": "refnet", "num_images": 500, "sampler": "heun", "steps": 25, "final_step": "x",
                 "cfg": [2.0, 3.0], "cfg_interval": [[0.0, 1.0]], "ema": [0, "none"], "inception_score": True}
    settings = EvalSettings.from_dict(grid_eval)
    assert [(ema, p.cfg_scale, p.cfg_interval, p.steps) for ema, p in settings.points()] == [
        (0, 2.0, (0.0, 1.0), 25), (0, 3.0, (0.0, 1.0), 25), (None, 2.0, (0.0, 1.0), 25), (None, 3.0, (0.0, 1.0), 25)]
    assert settings.score.inception_score and settings.sampling.final_step is FinalStep.x
    path = settings.dump(tmp_path / "eval.json")
    assert EvalSettings.load(path) == settings
    assert json.loads(path.read_text())["cfg_interval"] == [[0.0, 1.0]]
    assert EvalSettings.from_dict({"cfg_interval": [0.1, 1.0]}).cfg_interval == ((0.1, 1.0),)  # one pair


def test_a_bad_settings_file_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match="not an evaluation setting; valid: .*cfg") as error:
        EvalSettings.from_dict({"cfg_scale": 2.0}, where="grid.yaml")
    assert error.value.field == "grid.yaml: cfg_scale"  # the sweep's key is cfg
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps({"steps": 0}))
    with pytest.raises(ConfigError) as error:
        EvalSettings.load(bad)
    assert error.value.field == f"{bad}: steps"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="--settings"):
        EvalSettings.load(bad)


def test_eval_reads_a_settings_file_and_flags_override_it(tmp_path, capsys):
    from tests.conftest import run_cli

    path = EvalSettings.from_dict({"num_images": 4, "steps": 0 + 1}).dump(tmp_path / "eval.json")
    path.write_text(path.read_text().replace('"steps": 1', '"steps": 0'))
    code, output = run_cli(["eval", str(tmp_path / "x.ckpt"), "--settings", str(path), "--device", "cpu"], capsys)
    assert code == 2 and f"{path}" in output and "steps" in output and "Traceback" not in output
    code, output = run_cli(["eval", str(tmp_path / "x.ckpt"), "--settings", str(path), "--steps", "-2",
                            "--device", "cpu"], capsys)
    assert code == 2 and "--steps" in output  # the flag given wins, and is named
    code, output = run_cli(["eval", str(tmp_path / "x.ckpt"), "--settings", str(path), "--steps", "2",
                            "--device", "cpu"], capsys)
    assert code == 2 and "x.ckpt" in output and "no such file" in output  # settings valid: the checkpoint is next


def test_the_grid_hands_its_eval_section_over_as_a_settings_file(tmp_path):
    from jitlab.experiments.grid import runner

    section = {"features": "refnet", "num_images": 8, "sampler": "euler", "steps": 2, "cfg": [1.0],
               "cfg_interval": [[0.0, 1.0]], "ema": [0], "batch_size": 8}
    args = runner.eval_args(tmp_path, section)
    assert args[:2] == ["eval", str(tmp_path / "checkpoints" / "last.ckpt")] and "--steps" not in args
    handed = EvalSettings.load(args[args.index("--settings") + 1])
    assert handed == EvalSettings.from_dict(section)
    assert args[args.index("--out") + 1] == str(tmp_path / "metrics.json")
    dry = tmp_path / "dry"
    runner.eval_args(dry, section, write=False)
    assert not dry.exists()  # a dry run writes nothing
    with pytest.raises(ConfigError, match="steps"):
        runner.eval_args(tmp_path, {**section, "steps": 0})


def test_the_callbacks_flags_are_the_settings_fields():
    """`--samples.*` and `--evaluation.*` come from PreviewSettings / PeriodicSettings: same names, checked values."""
    from jsonargparse import ArgumentParser

    from jitlab.train.callbacks import SampleGrid
    from jitlab.score.periodic_eval import PeriodicEval

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SampleGrid, "samples")
    parser.add_class_arguments(PeriodicEval, "evaluation")
    parsed = parser.parse_args(["--samples.cfg_scale", "2.5", "--evaluation.ref_images", "40"])
    assert parsed.samples.steps == PreviewSettings().steps and parsed.samples.cfg_scale == 2.5
    assert parsed.evaluation.ref_images == 40 and parsed.evaluation.num_images == PeriodicSettings().num_images
    grid = SampleGrid(num_images=4, cfg_scale=2.5, final_step="x")
    assert grid.settings == PreviewSettings(cfg_scale=2.5, final_step="x")
    with pytest.raises(ConfigError, match="cfg_interval"):
        SampleGrid(cfg_interval=(0.9, 0.1))
    periodic = PeriodicEval(every_n_steps=2, num_images=12, steps=2, ref_images=40)
    assert (periodic.sampling == SamplerSettings(steps=2)
            and periodic.score == ScoreSettings(num_images=12, ref_images=40))
