"""ImageNet data under DDP and across a resume: every sample of an epoch once, nothing repeated or skipped.

- Two CPU processes (gloo) iterate the training loader of the folder source and of the shard
  source for two epochs: together they see every image exactly once per epoch.
- A run checkpointed mid-epoch (and at the end of an epoch) and resumed consumes exactly the
  batches the uninterrupted run consumed after that step.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import ModelCheckpoint

from jitlab.core.data.synth_imagenet import write_tree

RESOLUTION = 32


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    """3 classes x 16 training images (distinct photographs crops), 2 validation images per class."""
    root = tmp_path_factory.mktemp("clean")
    write_tree(root, classes=3, train_per_class=16, val_per_class=2, short=(40, 120), seed=2, bad_files=False)
    return root


@pytest.fixture(scope="module")
def clean_shards(clean_tree, tmp_path_factory) -> Path:
    from jitlab.commands.prepare_imagenet import main

    out = tmp_path_factory.mktemp("clean_shards") / "s"
    assert main(["--src", str(clean_tree), "--out", str(out), "--resolution", str(RESOLUTION), "--workers", "0",
                 "--no_progress", "--part_size", "7"]) == 0
    return out


def identity(image: torch.Tensor, exact: bool = False) -> str:
    """A name for an image (uint8 (3, R, R)), the same for its mirror image unless ``exact``."""
    digest = hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()
    if exact:
        return digest
    return min(digest, hashlib.sha1(image.flip(2).contiguous().numpy().tobytes()).hexdigest())


def all_identities(root: Path) -> list[str]:
    from jitlab.core.data.imagenet import ImageFolderDataset, crop_file

    dataset = ImageFolderDataset(root / "train", RESOLUTION)
    return [identity(crop_file(dataset.path(i), RESOLUTION)) for i in range(len(dataset))]


# -- two processes ----------------------------------------------------------------------------------


def _rank_main(rank: int, port: int, roots: list[str], settings: list[tuple[int, int]], queue) -> None:
    import multiprocessing

    import torch.distributed as dist

    # a spawned process would spawn its loader workers too (slow); DDP launched by Lightning forks them
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from jitlab.core.data import ImageNetDataModule

    result = {}
    for global_batch, workers in settings:
        for root in roots:
            dm = ImageNetDataModule(root=root, resolution=RESOLUTION, global_batch_size=global_batch,
                                    num_workers=workers)
            dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, accumulate_grad_batches=1)
            loader = dm.train_dataloader()
            epochs = []
            for epoch in range(2):
                if hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)  # what Lightning does; litdata counts epochs itself
                epochs.append([identity(image) for x, _ in loader for image in x])
            result[dm.source, global_batch, workers] = (len(loader), epochs)
    queue.put((rank, result))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_see_every_image_once_per_epoch(clean_tree, clean_shards):
    """48 images on 2 ranks. Global batch 8: all 48 in each epoch; 10: 4 steps of 10, no image twice."""
    settings = [(8, 0), (10, 2)]  # (global batch, loader workers per rank)
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank_main, args=(rank, port, [str(clean_tree), str(clean_shards)],
                                                          settings, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    everything = all_identities(clean_tree)
    assert len(set(everything)) == len(everything) == 48
    for global_batch, workers in settings:
        steps = len(everything) // global_batch
        for source in ("folder", "shards"):
            key = (source, global_batch, workers)
            (len0, epochs0), (len1, epochs1) = results[0][key], results[1][key]
            assert len0 == len1 == steps, key
            for epoch in range(2):
                seen = epochs0[epoch] + epochs1[epoch]
                assert len(epochs0[epoch]) == len(epochs1[epoch]) == steps * global_batch // 2, (key, epoch)
                assert len(set(seen)) == len(seen), f"{key}: an image twice in epoch {epoch}"
                assert set(seen) <= set(everything)
                if len(everything) % global_batch == 0:
                    assert sorted(seen) == sorted(everything), f"{key}: not every image in epoch {epoch}"
            assert epochs0[0] != epochs0[1], f"{key}: the same order in both epochs"


# -- resuming mid-epoch -----------------------------------------------------------------------------


class Recorder(L.LightningModule):
    """Records what each training step consumed; one parameter so that there is something to optimise."""

    def __init__(self, exact: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.exact = exact
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        x, _ = batch  # (N, 3, R, R) in [-1, 1]
        images = ((x + 1) * 127.5).round().to(torch.uint8)
        self.seen.append([identity(image, self.exact) for image in images])
        return self.weight * x.mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(root: Path, workers: int, steps: int, run_dir: Path, ckpt_path: str | None = None,
        save_every: int = 0) -> Recorder:
    from jitlab.core.data import ImageNetDataModule

    # shards flip with a coin of (seed, epoch, item): a resumed run sees the very same pixels
    module = Recorder(exact=root.name == "s")
    callbacks = [ModelCheckpoint(dirpath=run_dir, every_n_train_steps=save_every, save_top_k=-1,
                                 filename="{step}")] if save_every else []
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=run_dir, callbacks=callbacks, enable_checkpointing=bool(save_every))
    data = ImageNetDataModule(root=str(root), resolution=RESOLUTION, global_batch_size=8, num_workers=workers, seed=3)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize("source,workers", [("folder", 0), ("folder", 2), ("shards", 2)])
def test_resumed_run_continues_where_it_stopped(clean_tree, clean_shards, source, workers, tmp_path):
    """48 images, batch 8: 6 steps an epoch. Stop after 4 (mid-epoch) or 6 (epoch end), resume to 9."""
    root = clean_tree if source == "folder" else clean_shards
    full = fit(root, workers, 9, tmp_path / "full", save_every=2)
    assert len(full.seen) == 9
    epoch = [image for batch in full.seen[:6] for image in batch]
    assert len(set(epoch)) == 48  # the first epoch: every image once
    for stop in (4, 6):
        resumed = fit(root, workers, 9, tmp_path / f"resumed{stop}",
                      ckpt_path=str(tmp_path / "full" / f"step={stop}.ckpt"))
        assert resumed.seen == full.seen[stop:], f"resumed after step {stop}: other batches than the uninterrupted run"


def test_sampler_resumes_on_another_number_of_processes():
    """Positions consumed by 4 ranks are skipped exactly when the run continues on 2 or 3."""
    from jitlab.core.data.base import ResumableDistributedSampler

    dataset = list(range(101))
    order = ResumableDistributedSampler(dataset, num_replicas=1, rank=0, seed=5)
    order.set_epoch(2)
    everything = list(order)
    four = [ResumableDistributedSampler(dataset, num_replicas=4, rank=r, seed=5) for r in range(4)]
    for sampler in four:
        sampler.set_epoch(2)
    consumed = [i for sampler in four for i in list(sampler)[:5]]  # 5 samples each: 20 positions
    assert sorted(consumed) == sorted(everything[:20])
    for world in (2, 3):
        rest = []
        for rank in range(world):
            sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, seed=5)
            sampler.skip(2, 20)
            sampler.set_epoch(2)  # Lightning calls it after loading the state: the same epoch keeps the skip
            rest += list(sampler)
        usable = 101 // world * world  # as torch's DistributedSampler with drop_last
        assert not set(rest) & set(consumed) and len(rest) == (usable - 20) // world * world
        assert set(rest) <= set(everything[20:])
