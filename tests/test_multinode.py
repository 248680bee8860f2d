"""Two "nodes" of two CPU processes each, launched as a cluster launcher would (Lightning's environment variables).

Each process is `jitlab fit` with MASTER_ADDR / MASTER_PORT / NODE_RANK / LOCAL_RANK / WORLD_SIZE set (gloo),
so Lightning joins them rather than spawning. A recording callback (below, loaded by class path) writes what
each rank saw. Checked: the global batch of 8 splits into 4 x 2, the lr follows the global batch (not the
number of processes), a checkpoint written by the 4 processes at step 3 resumes on 2 processes (batches of
4), and over the epoch (48 images, 6 steps) every image is seen exactly once across both runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BLR, GLOBAL_BATCH = 4e-3, 8


class Recorder(L.Callback):
    """Writes ``OUT/PHASE-rankR.json``: world size, ranks, lr, and the images (by content) of every step."""

    def __init__(self, out: str, phase: str):
        self.out, self.phase, self.steps = Path(out), phase, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, _ = batch  # (N, 3, R, R) in [-1, 1]
        images = ((x + 1) * 127.5).round().to(torch.uint8)
        self.steps.append({"step": trainer.global_step, "lr": trainer.optimizers[0].param_groups[0]["lr"],
                           "images": [_identity(image) for image in images]})

    def on_train_end(self, trainer, pl_module) -> None:
        env = trainer.strategy.cluster_environment
        record = {"world": trainer.world_size, "rank": trainer.global_rank, "node": trainer.node_rank,
                  "local": trainer.local_rank, "external": env.creates_processes_externally, "steps": self.steps}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{self.phase}-rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _identity(image: torch.Tensor) -> str:
    """The same name for an image and its mirror image (training flips)."""
    return min(hashlib.sha1(i.contiguous().numpy().tobytes()).hexdigest() for i in (image, image.flip(2)))


def _config(tmp: Path, tree: Path, phase: str) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"net": {"class_path": "jitlab.core.models.JiT", "init_args": {
            "patch_size": 4, "hidden_size": 24, "depth": 1, "num_heads": 2, "bottleneck_dim": None, "rope": False,
            "qk_norm": False, "in_context_len": 0, "attn_impl": "sdpa"}},
            "optim": {"blr": BLR, "warmup_steps": 0}, "compile": False},
        "data": {"class_path": "jitlab.core.data.ImageNetDataModule",
                 "init_args": {"root": str(tree), "resolution": 16, "global_batch_size": GLOBAL_BATCH,
                               "num_workers": 0}},
        "samples": {"every_n_steps": 0, "num_images": 2, "steps": 1},
        "checkpoint": {"dirpath": str(tmp / "ckpt"), "save_last": True, "every_n_train_steps": 3, "save_top_k": 0},
        "trainer": {"accelerator": "cpu", "strategy": "ddp", "precision": "32-true", "limit_val_batches": 0,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "log_every_n_steps": 1,
                    "default_root_dir": str(tmp / "run"), "logger": False,
                    "callbacks": [{"class_path": "tests.test_multinode.Recorder",
                                   "init_args": {"out": str(tmp / "records"), "phase": phase}}]},
    }
    path = tmp / f"{phase}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(tmp: Path, tree: Path, phase: str, nodes: int, per_node: int, steps: int, resume: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", "jitlab.commands.cli", "fit", "--config", str(_config(tmp, tree, phase)),
            f"--trainer.num_nodes={nodes}", f"--trainer.devices={per_node}", f"--trainer.max_steps={steps}"]
    if resume:
        args.append(f"--ckpt_path={tmp / 'ckpt' / 'last.ckpt'}")
    processes = []
    for node in range(nodes):
        for local in range(per_node):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
                   "LOCAL_RANK": str(local), "WORLD_SIZE": str(nodes * per_node), "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(REPO)}
            log = open(tmp / f"{phase}-{node}-{local}.log", "w")
            processes.append((subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp), log))
    for process, log in processes:
        code = process.wait(timeout=300)
        log.close()
        assert code == 0, Path(log.name).read_text()[-3000:]


def _records(tmp: Path, phase: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp / "records").glob(f"{phase}-rank*.json"))]


def test_two_nodes_of_two_processes_split_resume_on_two_and_see_every_image_once(tmp_path):
    from jitlab.core.data.synth_imagenet import write_tree
    from jitlab.train.checkpoint import checkpoint_state

    tree = tmp_path / "imagenet"
    write_tree(tree, classes=3, train_per_class=16, val_per_class=0, short=(20, 40), seed=4, bad_files=False)
    _launch(tmp_path, tree, "four", nodes=2, per_node=2, steps=3, resume=False)
    assert checkpoint_state(tmp_path / "ckpt" / "last.ckpt").step == 3
    four = _records(tmp_path, "four")
    assert sorted((r["node"], r["local"], r["rank"]) for r in four) == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert all(r["world"] == 4 and r["external"] for r in four)  # joined through the environment, not spawned
    assert all(len(s["images"]) == GLOBAL_BATCH // 4 for r in four for s in r["steps"])  # 8 = 4 processes x 2
    lr = BLR * GLOBAL_BATCH / 256  # the global batch decides the lr, whatever the number of processes
    assert all(abs(s["lr"] - lr) < 1e-12 for r in four for s in r["steps"])

    _launch(tmp_path, tree, "two", nodes=1, per_node=2, steps=6, resume=True)
    assert checkpoint_state(tmp_path / "ckpt" / "last.ckpt").step == 6
    two = _records(tmp_path, "two")
    assert [r["world"] for r in two] == [2, 2]
    assert all(len(s["images"]) == GLOBAL_BATCH // 2 for r in two for s in r["steps"])  # 8 = 2 processes x 4
    assert sorted({s["step"] for r in two for s in r["steps"]}) == [3, 4, 5]  # resumed at step 3
    assert all(abs(s["lr"] - lr) < 1e-12 for r in two for s in r["steps"])
    seen = [i for r in four + two for s in r["steps"] for i in s["images"]]
    assert len(seen) == 48 and len(set(seen)) == 48  # the epoch's 48 images, each exactly once
