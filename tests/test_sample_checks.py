"""Cheap checks first: every bad input of `jitlab sample` / `jitlab eval` is one `jitlab: error:` line naming the flag
(or file), exit code 2, no traceback and nothing written, before the first forward (issue 18, items 5, 7 and 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (the module-scoped fixture)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    text = root / "notes.ckpt"
    text.write_text("this is a text file, not a checkpoint\n")
    foreign = root / "other_model.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}, "epoch": 3}, foreign)
    plain = root / "a_file"
    plain.write_text("x")
    (root / "a_dir").mkdir()
    return {"text": text, "foreign": foreign, "file": plain, "dir": root / "a_dir"}


def files_under(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*")}


# (flags after the checkpoint, the flag or file the message must name); CKPT / DIR / FILE are replaced below
SAMPLE_CASES = [
    (["--npz", "DIR"], "--npz"),
    (["--png", "DIR"], "--png"),
    (["--npz", "FILE/out.npz"], "--npz"),
    (["--ema", "5"], "--ema"),
    (["--ema", "first"], "--ema"),
    (["--classes", "99"], "--classes"),
    (["--classes", "3", "-1"], "--classes"),
    (["--device", "cuda"], "--device"),
    (["--device", "gpu7"], "--device"),
    (["--num_images", "0"], "--num_images"),
    (["--num_images", "-3"], "--num_images"),
    (["--cfg", "-1"], "--cfg"),
    (["--cfg", "nan"], "--cfg"),
    (["--cfg_interval", "0.9", "0.1"], "--cfg_interval"),
    (["--cfg_interval", "0.1", "1.5"], "--cfg_interval"),
    (["--steps", "0"], "--steps"),
    (["--batch_size", "0"], "--batch_size"),
    (["--nrow", "0"], "--nrow"),
    (["--sampler", "rk4"], "--sampler"),
    (["--final_step", "eps"], "--final_step"),
    (["--precision", "fp16"], "--precision"),
]
EVAL_CASES = [
    (["--out", "DIR"], "--out"),
    (["--out", "FILE/metrics.json"], "--out"),
    (["--out", "FILE"], "--out"),  # exists, but is no metrics.json: never overwritten
    (["--ema", "0", "5"], "--ema"),
    (["--num_images", "1"], "--num_images"),
    (["--num_images", "0"], "--num_images"),
    (["--cfg", "2.0", "-1"], "--cfg"),
    (["--cfg_interval", "0.5,0.2"], "--cfg_interval"),
    (["--cfg_interval", "0.1"], "--cfg_interval"),
    (["--steps", "0"], "--steps"),
    (["--device", "cuda"], "--device"),
    (["--score_resolution", "4"], "--score_resolution"),
    (["--score_resolution", "big"], "--score_resolution"),
    (["--ref_images", "1"], "--ref_images"),
    (["--features", "dino"], "--features"),
]
CHECKPOINT_CASES = [("text", "notes.ckpt"), ("foreign", "other_model.ckpt"), ("missing", "absent.ckpt")]


def substitute(flags: list[str], files: dict[str, Path]) -> list[str]:
    out = []
    for flag in flags:
        for key, name in (("DIR", "dir"), ("FILE", "file")):
            flag = flag.replace(key, str(files[name])) if flag.startswith(key) else flag
        out.append(flag)
    return out


def assert_one_error_line(code: int, output: str, names: str) -> None:
    lines = output.strip().splitlines()
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("jitlab: error: "), output
    assert names in lines[0], f"the message does not name {names}: {lines[0]}"
    assert "Traceback" not in output


@pytest.fixture
def no_gpu_no_scoring(monkeypatch):
    """No GPU here whatever the machine; and nothing may reach the scoring instruments or the sampler."""
    from jitlab.score import evaluation as evaluate
    from jitlab.train.module import JiTModule

    def forbidden(*_, **__):
        raise AssertionError("a bad input reached expensive work")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(evaluate, "instruments", forbidden)
    monkeypatch.setattr(JiTModule, "generate", forbidden)


@pytest.mark.parametrize("flags,names", SAMPLE_CASES, ids=[" ".join(c[0]) for c in SAMPLE_CASES])
def test_bad_sample_input(flags, names, tiny_checkpoint, bad_files, tmp_path, capsys, no_gpu_no_scoring):  # noqa: F811
    before = files_under(tmp_path, tiny_checkpoint.parent, bad_files["text"].parent)
    args = ["sample", str(tiny_checkpoint), "--device", "cpu", "--npz", str(tmp_path / "ok.npz"),
            *substitute(flags, bad_files)]
    code, output = run_cli(args, capsys)
    assert_one_error_line(code, output, names)
    assert files_under(tmp_path, tiny_checkpoint.parent, bad_files["text"].parent) == before


@pytest.mark.parametrize("flags,names", EVAL_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES])
def test_bad_eval_input(flags, names, tiny_checkpoint, bad_files, tmp_path, capsys, no_gpu_no_scoring):  # noqa: F811
    before = files_under(tmp_path, tiny_checkpoint.parent, bad_files["text"].parent)
    args = ["eval", str(tiny_checkpoint), "--device", "cpu", "--out", str(tmp_path / "metrics.json"),
            *substitute(flags, bad_files)]
    code, output = run_cli(args, capsys)
    assert_one_error_line(code, output, names)
    assert files_under(tmp_path, tiny_checkpoint.parent, bad_files["text"].parent) == before


@pytest.mark.parametrize("verb", ["sample", "eval"])
@pytest.mark.parametrize("kind,name", CHECKPOINT_CASES)
def test_bad_checkpoint(verb, kind, name, bad_files, tmp_path, capsys, no_gpu_no_scoring):
    path = bad_files[kind] if kind in bad_files else tmp_path / name
    before = files_under(tmp_path, bad_files["text"].parent)
    out = ["--npz", str(tmp_path / "x.npz")] if verb == "sample" else ["--out", str(tmp_path / "m.json")]
    code, output = run_cli([verb, str(path), "--device", "cpu", *out], capsys)
    assert_one_error_line(code, output, f"checkpoint {path}")
    assert "jitlab fit" in output or "no such file" in output  # says what a valid checkpoint is
    assert files_under(tmp_path, bad_files["text"].parent) == before


def test_eval_ema_out_of_range_fails_before_evaluating_anything(tiny_checkpoint, tmp_path, capsys,  # noqa: F811
                                                               no_gpu_no_scoring):
    code, output = run_cli(["eval", str(tiny_checkpoint), "--ema", "0", "5", "--out", str(tmp_path / "m.json")], capsys)
    assert_one_error_line(code, output, "--ema")
    assert "0..1 or none" in output and not (tmp_path / "m.json").exists()


def test_a_real_process_prints_one_line_and_exits_2(tiny_checkpoint, tmp_path):  # noqa: F811
    """Outside pytest's capture: the installed command, stderr, exit code (the message names --num_images)."""
    jitlab = Path(sys.executable).parent / "jitlab"
    run = subprocess.run([str(jitlab), "sample", str(tiny_checkpoint), "--num_images", "0", "--npz",
                          str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert_one_error_line(run.returncode, run.stderr, "--num_images")
    assert "--num " not in run.stderr and run.stdout == "" and not any(tmp_path.iterdir())


@pytest.mark.parametrize("verb,default", [("sample", "(default: 40)"), ("eval", "(default: 500)")])
def test_help_shows_the_defaults(verb, default, capsys):
    code, output = run_cli([verb, "--help"], capsys)
    assert code == 0 and default in output
    assert "(default: euler)" in output and "(default: fp32)" in output and "(default: heun)" in output
