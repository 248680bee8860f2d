"""Sharded training (FSDP2, ``jitlab.train.strategy``) on 2 CPU processes (gloo), against DDP, with a kill and a resume.

Two launches of two processes each (joined as a cluster launcher would: LOCAL_RANK / WORLD_SIZE / MASTER_*), each
process running `jitlab fit` several times (this file is also the worker: ``python -m tests.test_sharded PLAN``):

1. DDP for 4 steps; FSDP2 for 4 steps; FSDP2 again, killed with SIGKILL at the start of step 3 (after its
   step-2 checkpoint);
2. the killed run again with ``--ckpt_path last`` (its sharded step-2 checkpoint) up to step 4.

Checked: losses, weights and both EMAs of FSDP2 equal DDP's; the EMAs are sharded in memory and on disk; under
DDP only rank 0 copies the EMAs for a checkpoint; the resumed run equals the uninterrupted one; the consolidated
checkpoint loads (``load_module``) and `jitlab eval` scores it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tests.conftest import run_cli
from tests.test_evaluate import quick_refnet  # noqa: F401  (a refnet trained in seconds, as test_evaluate's)

REPO = Path(__file__).resolve().parents[1]
STEPS, KILL_AT = 4, 2  # the killed run dies at the start of step 3, after its step-2 checkpoint
CONFIG = {
    "seed_everything": 0,
    "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {
        "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2, "bottleneck_dim": None, "rope": False,
        "qk_norm": False, "in_context_len": 0, "attn_impl": "sdpa"}},
        "optim": {"blr": 4e-3, "warmup_steps": 1, "weight_decay": 0.05}},
    "data": {"class_path": "jitlab.core.data.EmbeddedDataModule",
             "init_args": {"kind": "shapes", "resolution": 16, "global_batch_size": 8, "num_workers": 0,
                           "train_size": 64, "val_size": 8}},
    "ema": {"decays": [0.9, 0.5]},
    "samples": {"every_n_steps": 0, "num_images": 2, "steps": 1},
    "checkpoint": {"save_last": True, "every_n_train_steps": 2, "save_top_k": -1},
    # a validation at step 2 swaps an EMA in and out: the training after it must not notice
    "trainer": {"max_steps": STEPS, "limit_val_batches": 1, "val_check_interval": 2, "check_val_every_n_epoch": None,
                "num_sanity_val_steps": 0, "precision": "32-true", "enable_progress_bar": False, "logger": False,
                "enable_model_summary": False, "log_every_n_steps": 1, "accelerator": "cpu", "devices": 2},
}


class Recorder(L.Callback):
    """Writes ``OUT/NAME-rankR.json`` (losses by step, how the EMAs are held); ``kill_at``: SIGKILL itself then."""

    def __init__(self, out: str, name: str, kill_at: int = 0):
        self.out, self.name, self.kill_at, self.losses = Path(out), name, kill_at, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.kill_at and trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # as kill -9: nothing more is written

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])

    def on_train_end(self, trainer, pl_module) -> None:
        from torch.distributed.tensor import DTensor

        from jitlab.train.ema import MultiEMA

        ema = next(c for c in trainer.callbacks if isinstance(c, MultiEMA))
        first, saved = ema.averages[0], ema.state_dict()  # what a checkpoint would take from this process
        record = {"rank": trainer.global_rank, "losses": self.losses,
                  "dtensor": all(isinstance(t, DTensor) for t in first.values()),
                  "local_numel": sum((t.to_local() if isinstance(t, DTensor) else t).numel() for t in first.values()),
                  "full_numel": sum(t.numel() for t in first.values()),
                  "host_copy": bool(saved) and not any(isinstance(t, DTensor) for t in saved["averages"][0].values())}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{self.name}-rank{trainer.global_rank}.json").write_text(json.dumps(record))


def fit_args(tmp: Path, name: str, kind: str, kill_at: int = 0, *extra: str) -> list[str]:
    from jitlab.train.strategy import strategy_config

    config = json.loads(json.dumps(CONFIG))
    config["trainer"]["strategy"] = strategy_config(kind)
    config["checkpoint"]["dirpath"] = str(checkpoints(tmp, name))  # where --ckpt_path last looks
    config["trainer"]["callbacks"] = [{"class_path": "tests.test_sharded.Recorder",
                                       "init_args": {"out": str(tmp / "records"), "name": name, "kill_at": kill_at}}]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["fit", "--config", str(path), f"--trainer.default_root_dir={tmp / name}", *extra]


def launch(tmp: Path, plan: list[list[str]], name: str) -> list[int]:
    """Two processes of ``python -m tests.test_sharded PLAN`` (joined through the environment); exit codes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan_path = tmp / f"{name}.plan.json"
    plan_path.write_text(json.dumps(plan))
    processes = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "0",
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        log = open(tmp / f"{name}-{rank}.log", "w")
        command = [sys.executable, "-m", "tests.test_sharded", str(plan_path)]
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp), log))
    codes = []
    for process, log in processes:
        try:
            codes.append(process.wait(timeout=400))
        finally:
            process.kill()
            log.close()
    return codes


def log_tail(tmp: Path, name: str) -> str:
    return "\n".join((tmp / f"{name}-{r}.log").read_text()[-2500:] for r in range(2))


def records(tmp: Path, name: str) -> list[dict]:
    return [json.loads((tmp / "records" / f"{name}-rank{r}.json").read_text()) for r in range(2)]


def checkpoints(tmp: Path, name: str) -> Path:
    return tmp / name / "checkpoints"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sharded")
    plan = [fit_args(tmp, "ddp", "ddp"), fit_args(tmp, "fsdp2", "fsdp2"), fit_args(tmp, "killed", "fsdp2", KILL_AT)]
    codes = launch(tmp, plan, "first")
    assert codes[0] == -signal.SIGKILL, log_tail(tmp, "first")  # the third run killed itself
    assert not (checkpoints(tmp, "killed") / f"epoch=0-step={STEPS}.ckpt").exists()
    resume = fit_args(tmp, "killed", "fsdp2", 0, "--ckpt_path=last")
    assert launch(tmp, [resume], "resumed") == [0, 0], log_tail(tmp, "resumed")
    return tmp


def consolidated(tmp: Path, name: str, ckpt: str = "last.ckpt") -> dict:
    from jitlab.train.strategy import consolidate

    out = consolidate(checkpoints(tmp, name) / ckpt, tmp / f"{name}-{ckpt}")
    return torch.load(out, map_location="cpu", weights_only=True)


def assert_states_close(a: dict, b: dict, exact: bool = False) -> None:
    from jitlab.train.ema import ema_state_dicts

    assert a["global_step"] == b["global_step"] == STEPS
    pairs = [(a["state_dict"], b["state_dict"])]
    emas_a, emas_b = ema_state_dicts(a), ema_state_dicts(b)
    assert list(emas_a) == list(emas_b) == [0.9, 0.5]
    pairs += [(emas_a[d], emas_b[d]) for d in emas_a]
    for sd_a, sd_b in pairs:
        assert sd_a.keys() == sd_b.keys()
        for key in sd_a:
            if exact:
                assert torch.equal(sd_a[key], sd_b[key]), key
            else:
                torch.testing.assert_close(sd_a[key], sd_b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_fsdp2_equals_ddp_in_losses_weights_and_both_emas(runs):
    ddp = torch.load(checkpoints(runs, "ddp") / "last.ckpt", map_location="cpu", weights_only=True)
    assert ddp["state_dict"]["net.blocks.0.attn.qkv.weight"].shape[0] > 1
    fsdp = consolidated(runs, "fsdp2")
    assert_states_close(ddp, fsdp)
    start = consolidated(runs, "fsdp2", "epoch=0-step=2.ckpt")["state_dict"]
    assert any(not torch.equal(start[k], fsdp["state_dict"][k]) for k in start)  # training moved the weights
    for d, f in zip(records(runs, "ddp"), records(runs, "fsdp2")):
        assert sorted(d["losses"]) == sorted(f["losses"]) == [str(s) for s in range(1, STEPS + 1)]
        for step, loss in d["losses"].items():
            assert f["losses"][step] == pytest.approx(loss, rel=1e-5), step


def test_emas_are_sharded_and_ddp_copies_them_on_rank_0_only(runs):
    from torch.distributed.checkpoint import FileSystemReader

    fsdp = records(runs, "fsdp2")
    assert all(r["dtensor"] for r in fsdp)
    assert sum(r["local_numel"] for r in fsdp) == fsdp[0]["full_numel"]  # each process holds its part only
    assert all(r["local_numel"] < r["full_numel"] for r in fsdp)
    ckpt = checkpoints(runs, "fsdp2") / "last.ckpt"
    meta = torch.load(ckpt / "meta.pt", weights_only=True)
    state = next(s for s in meta["callbacks"].values() if "averages" in s)
    assert all(isinstance(v, str) for avg in state["averages"] for v in avg.values())  # no tensors in rank 0's file
    saved = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    ema_keys = [k for k in saved if k.startswith("callbacks.") and k.endswith("blocks.0.attn.qkv.weight")]
    assert len(ema_keys) == 2 and all(len(saved[k].chunks) == 2 for k in ema_keys)  # one shard per process
    ddp = records(runs, "ddp")
    assert [r["dtensor"] for r in ddp] == [False, False]
    assert [r["host_copy"] for r in ddp] == [True, False]


def test_killed_sharded_run_resumes_equal_to_the_uninterrupted_one(runs):
    assert (checkpoints(runs, "killed") / f"epoch=0-step={KILL_AT}.ckpt" / "meta.pt").is_file()  # resumed from
    assert_states_close(consolidated(runs, "fsdp2"), consolidated(runs, "killed"), exact=True)
    uninterrupted, resumed = records(runs, "fsdp2"), records(runs, "killed")
    for u, r in zip(uninterrupted, resumed):
        assert sorted(r["losses"]) == [str(s) for s in range(KILL_AT + 1, STEPS + 1)]  # only the steps after it
        assert all(r["losses"][s] == u["losses"][s] for s in r["losses"])


def test_consolidated_checkpoint_is_read_by_load_module_and_eval(runs, quick_refnet, capsys):
    from jitlab.train.checkpoint import load_module
    from jitlab.train.ema import ema_state_dicts

    path = runs / "one.ckpt"
    code, out = run_cli(["consolidate", str(checkpoints(runs, "fsdp2") / "last.ckpt"), str(path)], capsys)
    assert code == 0 and path.is_file(), out
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in ckpt
    raw = load_module(path, ema=None)
    for name, value in raw.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][name]), name
    ema = load_module(path, ema=0)
    for name, value in ema_state_dicts(ckpt)[0.9].items():
        assert torch.equal(ema.net.get_parameter(name), value), name
    # the grid runner scores the sharded directory itself: read_checkpoint gathers it as consolidate writes it
    from jitlab.train.checkpoint import checkpoint_step, read_checkpoint

    sharded = checkpoints(runs, "fsdp2") / "last.ckpt"
    direct = read_checkpoint(sharded)
    assert checkpoint_step(sharded) == STEPS and "optimizer_states" not in direct
    for name, value in ckpt["state_dict"].items():
        assert torch.equal(direct["state_dict"][name], value), name
    metrics = runs / "metrics.json"
    code, out = run_cli(["eval", str(path), "--num_images", "8", "--steps", "1", "--sampler", "euler", "--ema", "0",
                         "--cfg", "1.0", "--ref_images", "16", "--batch_size", "8", "--out", str(metrics)], capsys)
    assert code == 0, out
    (row,) = json.loads(metrics.read_text())["rows"]
    assert row["step"] == STEPS and row["ema"] == 0.9 and row["value"] > 0


def test_strategy_config_values_and_bad_kind():
    from jitlab.classpath import import_path
    from jitlab.errors import ConfigError
    from jitlab.train.strategy import ShardedStrategy, strategy_config

    ddp = strategy_config("ddp")
    strategy = import_path(ddp["class_path"])(**ddp["init_args"])
    assert strategy._ddp_kwargs == {"gradient_as_bucket_view": True, "find_unused_parameters": False}
    fsdp2 = strategy_config("fsdp2")
    assert isinstance(import_path(fsdp2["class_path"])(**fsdp2["init_args"]), ShardedStrategy)
    with pytest.raises(ConfigError, match="ddp, fsdp2"):
        strategy_config("fsdp")


def test_slurm_cells_pass_the_strategy_config():
    from jitlab.score.fitconfig import check_fit_config
    from jitlab.experiments.grid.slurm import SlurmOptions

    for kind, class_path in (("ddp", "lightning.pytorch.strategies.DDPStrategy"),
                             ("fsdp2", "jitlab.train.strategy.ShardedStrategy")):
        config = check_fit_config(SlurmOptions(nodes=1, gpus_per_node=8).trainer_args(kind))
        assert config["trainer"]["strategy"]["class_path"] == class_path
    ddp = check_fit_config(SlurmOptions(nodes=1, gpus_per_node=8).trainer_args())["trainer"]["strategy"]
    assert ddp["init_args"]["gradient_as_bucket_view"] is True


def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(tmp_path, capsys):
    one_file = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, one_file)
    for given in (one_file, tmp_path / "missing"):
        code, out = run_cli(["consolidate", str(given), str(tmp_path / "out.ckpt")], capsys)
        assert code == 2 and out.count("\n") == 1 and "not a sharded checkpoint" in out, out
    assert not (tmp_path / "out.ckpt").exists()


def test_resume_finds_sharded_directories_and_names_a_broken_one(tmp_path):
    from jitlab.errors import ConfigError
    from jitlab.train.resume import checkpoint_candidates, read_training_checkpoint

    good, broken, plain = tmp_path / "last.ckpt", tmp_path / "epoch=0-step=2.ckpt", tmp_path / "other.ckpt"
    for directory in (good, broken, plain):
        directory.mkdir()
    torch.save({"hyper_parameters": {}, "loops": {}, "global_step": 2}, good / "meta.pt")
    (broken / "meta.pt").write_text("not a torch file")
    assert sorted(p.name for p in checkpoint_candidates(tmp_path, tmp_path)) == sorted([good.name, broken.name])
    assert read_training_checkpoint(good)["global_step"] == 2
    with pytest.raises(ConfigError, match="meta.pt is not readable"):
        read_training_checkpoint(broken)
    with pytest.raises(ConfigError, match="no such file"):  # a directory without meta.pt is no checkpoint
        read_training_checkpoint(plain)


def test_callback_dtensor_markers_round_trip():
    from jitlab.train.strategy import SHARDED, _markers, _pull_dtensors, _put_back

    state = {"k": {"decays": [0.9], "averages": [{"w": 1.0}], "n": 3}}
    assert _pull_dtensors(state, "", {}) == state  # no DTensor: nothing moves
    marked = {"k": {"averages": [{"w": SHARDED + "/k/averages/0/w"}], "n": 3}}
    assert _markers(marked) == ["/k/averages/0/w"]
    assert _put_back(marked, {"/k/averages/0/w": "T"}) == {"k": {"averages": [{"w": "T"}], "n": 3}}


def _worker(plan_path: str) -> int:
    """One process of a launch: each `jitlab fit` of the plan in turn (a failed one ends the process)."""
    import time

    from jitlab.commands.cli import main

    sys.argv[1:] = []  # the plan's arguments are the command line
    for args in json.loads(Path(plan_path).read_text()):
        start = time.perf_counter()
        code = main(args)
        print(f"worker: {args[2]} took {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))


def test_the_step_of_a_sharded_checkpoint_is_read_from_its_meta_without_the_shards(tmp_path):
    from jitlab.train.checkpoint import checkpoint_step, read_checkpoint

    ckpt = tmp_path / "last.ckpt"
    ckpt.mkdir()
    torch.save({"global_step": 7, "hyper_parameters": {}}, ckpt / "meta.pt")  # no shard files at all
    assert checkpoint_step(ckpt) == 7  # the runner picks the newest checkpoint by step: no gathering for it
    with pytest.raises(RuntimeError, match="cannot read sharded checkpoint"):
        read_checkpoint(ckpt)  # the weights themselves do need the shards
    (ckpt / "meta.pt").write_bytes(b"not a checkpoint")
    assert checkpoint_step(ckpt) is None
