"""Every mistake a user can make is one line `jitlab ...: error: ...` naming the field, file or flag; exit code 2;
no traceback; nothing written. A table of bad inputs across the verbs, most run in this process (fast), the ones
that would spawn processes or that the issue names through the console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture: no minutes of refnet training)
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (module-scoped fixture: a jitlab checkpoint)

REPO = Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r"^jitlab( [\w-]+)*: error: ")

# (id, argv, a fragment the line must name, where it runs: "tmp" (inputs below) or "repo" (the grids))
# {ckpt}: a real jitlab checkpoint (two EMAs, 10 classes, width 48); {tmp}: the test's directory
CASES = [
    ("fit-batch-0", ["fit", "--data.init_args.global_batch_size=0"], "global_batch_size", "tmp"),
    ("fit-yaml-syntax", ["fit", "--config", "broken.yaml"], "broken.yaml", "tmp"),
    ("fit-group-file-yaml-syntax", ["fit", "--data", "broken.yaml"], "--data: broken.yaml is not valid YAML", "tmp"),
    ("fit-config-missing", ["fit", "--config", "missing.yaml"], "missing.yaml", "tmp"),
    ("fit-pred", ["fit", "--model.flow.pred=xx"], "pred", "tmp"),
    ("fit-loss", ["fit", "--model.flow.loss=velocity"], "loss", "tmp"),
    ("fit-patch", ["fit", "--model.net.init_args.patch_size=5"], "patch_size", "tmp"),
    ("fit-sigma", ["fit", "--model.flow.sigma=-0.5"], "sigma", "tmp"),
    ("fit-kind", ["fit", "--data.init_args.kind=mnist"], "kind", "tmp"),
    ("fit-schedule", ["fit", "--model.optim.schedule=linear"], "schedule", "tmp"),
    ("fit-unknown-key", ["fit", "--model.flow.predd=x"], "predd", "tmp"),
    ("fit-img-size", ["fit", "--model.net.init_args.img_size=64"], "img_size", "tmp"),
    ("unknown-command", ["fitt"], "fitt", "tmp"),
    ("fit-ckpt-last-nothing", ["fit", "--ckpt_path", "last"], "--ckpt_path", "tmp"),
    ("fit-ckpt-text", ["fit", "--ckpt_path", "notes.ckpt"], "notes.ckpt", "tmp"),
    ("fit-ckpt-missing", ["fit", "--ckpt_path", "gone.ckpt"], "gone.ckpt", "tmp"),
    ("fit-ckpt-foreign", ["fit", "--ckpt_path", "foreign.ckpt"], "foreign.ckpt", "tmp"),
    ("fit-ckpt-other-network", ["fit", "--ckpt_path", "{ckpt}"], "model.net.init_args.hidden_size", "tmp"),
    ("fit-dirpath-under-a-file", ["fit", "--checkpoint.dirpath=broken.yaml/ckpts"], "checkpoint.dirpath", "tmp"),
    ("fit-gpu-without-gpu", ["fit", "--trainer.accelerator=gpu"], "accelerator", "tmp"),
    ("info-model", ["info", "--model", "JiT-X/16"], "JiT-X/16", "tmp"),
    ("info-img-size", ["info", "--model", "JiT-B/16", "--img_size", "100"], "patch_size", "tmp"),
    ("grid-unknown", ["grid", "run", "nope", "--runs", "{tmp}/runs"], "nope", "repo"),
    ("grid-slurm-without-sbatch", ["grid", "run", "table2", "--launcher", "slurm", "--runs", "{tmp}/runs"],
     "sbatch", "repo"),
    ("grid-only-unknown", ["grid", "run", "table2", "--only", "nosuch", "--runs", "{tmp}/runs"], "nosuch", "repo"),
    ("grid-scale", ["grid", "plan", "table2", "--scale", "huge"], "huge", "repo"),
    ("convert-missing", ["convert-official", "gone.pth", "--out", "x.ckpt"], "gone.pth", "tmp"),
    # sample / eval (the list)
    ("sample-text-ckpt", ["sample", "notes.ckpt"], "notes.ckpt", "tmp"),
    ("sample-foreign-ckpt", ["sample", "foreign.ckpt"], "foreign.ckpt", "tmp"),
    ("sample-ema-range", ["sample", "{ckpt}", "--ema", "5"], "ema", "tmp"),
    ("sample-classes", ["sample", "{ckpt}", "--classes", "99"], "classes", "tmp"),
    ("sample-cuda", ["sample", "{ckpt}", "--device", "cuda"], "device", "tmp"),
    ("sample-num-0", ["sample", "{ckpt}", "--num_images", "0"], "--num_images", "tmp"),
    ("sample-cfg-negative", ["sample", "{ckpt}", "--cfg", "-1"], "cfg", "tmp"),
    ("sample-interval-inverted", ["sample", "{ckpt}", "--cfg_interval", "0.9", "0.1"], "cfg_interval", "tmp"),
    ("sample-npz-directory", ["sample", "{ckpt}", "--npz", "adir"], "npz", "tmp"),
    ("eval-out-directory", ["eval", "{ckpt}", "--out", "adir"], "--out", "tmp"),
    ("eval-ema-range", ["eval", "{ckpt}", "--ema", "0", "5"], "ema", "tmp"),
    ("eval-text-ckpt", ["eval", "notes.ckpt"], "notes.ckpt", "tmp"),
    ("eval-num-1", ["eval", "{ckpt}", "--num_images", "1"], "num_images", "tmp"),
    ("eval-cuda", ["eval", "{ckpt}", "--device", "cuda"], "device", "tmp"),
]


def make_inputs(directory: Path) -> None:
    """The files the bad inputs name: a broken YAML, a text file and a foreign pickle named .ckpt, a directory."""
    (directory / "broken.yaml").write_text("model:\n  flow: {pred: x\n")
    (directory / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.ones(3)}, directory / "foreign.ckpt")
    (directory / "adir").mkdir()


def snapshot(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


def run_in_process(argv: list[str], capfd) -> tuple[int, str, str]:
    """``jitlab ARGV`` as the console script would end it: exit code, stdout, stderr (a traceback included)."""
    from jitlab.commands.cli import main

    tb = ""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        tb = "" if isinstance(exit_.code, int) or exit_.code is None else f"{exit_.code}\n"
    except Exception:  # what the console script would print
        code, tb = 1, traceback.format_exc()
    out, err = capfd.readouterr()
    return code, out, err + tb


def assert_one_error_line(code: int, out: str, err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err + out, err[-3000:]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err[-2000:]
    assert ERROR_LINE.match(lines[0]), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("name,argv,fragment,where", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_error_line_exit_2_and_writes_nothing(  # noqa: F811  (fixtures)
        name, argv, fragment, where, tiny_checkpoint, quick_refnet, tmp_path, capfd, monkeypatch):
    inputs = tmp_path / "work"
    inputs.mkdir()
    make_inputs(inputs)
    monkeypatch.chdir(REPO if where == "repo" else inputs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, here or not
    if name == "grid-slurm-without-sbatch":
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    argv = [a.format(ckpt=tiny_checkpoint, tmp=tmp_path) for a in argv]
    watched = (tmp_path, tiny_checkpoint.parent)
    before = snapshot(*watched)
    capfd.readouterr()
    code, out, err = run_in_process(argv, capfd)
    assert_one_error_line(code, out, err, fragment)
    assert snapshot(*watched) == before, sorted(snapshot(*watched) - before)


@pytest.mark.parametrize("argv,fragment", [
    (["fit", "--trainer.devices=3", "--trainer.accelerator=cpu", "--trainer.strategy=ddp"], "multiple of 3"),
    (["fit", "--config", "broken.yaml"], "broken.yaml is not valid YAML at line 3"),
    (["fit", "--data.init_args.global_batch_size=0"], "global_batch_size"),
], ids=["ddp-batch-before-spawning", "yaml-syntax", "batch-0"])
def test_the_console_script_prints_the_one_line_too(argv, fragment, tmp_path):
    make_inputs(tmp_path)
    exe = Path(sys.executable).with_name("jitlab")
    before = snapshot(tmp_path)
    done = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_one_error_line(done.returncode, done.stdout, done.stderr, fragment)
    assert snapshot(tmp_path) == before  # no run directory, no spawned process's files


def test_bare_jitlab_lists_every_verb_and_version_prints(capsys):
    from jitlab.commands.cli import LIGHTNING_VERBS, VERBS, main

    assert main([]) == 0
    listing = capsys.readouterr().out
    for verb in [*LIGHTNING_VERBS, *VERBS]:
        assert f"  {verb} " in listing, verb
    assert main(["--version"]) == 0
    from jitlab import __version__

    assert capsys.readouterr().out.strip() == f"jitlab {__version__}"
