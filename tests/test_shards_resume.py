"""Sampling kept as shards (issue 18, clusters): an interrupted `jitlab sample` / `jitlab eval` resumes from the
finished shards, and its images and metrics equal an uninterrupted run's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jitlab.score import shards
from jitlab.commands.evaluate import main as eval_main
from jitlab.commands.sample import main as sample_main
from jitlab.train.module import JiTModule
from tests.test_evaluate import quick_refnet  # noqa: F401  (fixture: no minutes of refnet training)
from tests.test_sampling import tiny_checkpoint  # noqa: F401  (the module-scoped fixture)


class Interrupt(RuntimeError):
    pass


@pytest.fixture
def count_forwards(monkeypatch):
    """Count the batches ``JiTModule.generate`` makes; ``fail_after[0] = N`` raises at batch N + 1 (a requeue)."""
    calls, fail_after = [], [None]
    real = JiTModule.generate

    def counted(self, indices, *args, **kwargs):
        if fail_after[0] is not None and len(calls) >= fail_after[0]:
            raise Interrupt("the job's time is up")
        calls.append(list(indices))
        return real(self, indices, *args, **kwargs)

    monkeypatch.setattr(JiTModule, "generate", counted)
    return calls, fail_after


def test_blocks_cover_every_index_once_and_give_every_process_some():
    for total, world, batch in ((9, 2, 4), (50, 3, 4), (4, 2, 100), (7, 1, 2)):
        size = shards.block_size(total, world, batch)
        parts = [shards.block_indices(total, size, rank, world) for rank in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(total))
        assert all(parts), (total, world, parts)
    assert shards.block_size(50_000, 8, 128) == 1280  # ten batches a shard at paper scale
    assert shards.split_blocks([0, 1, 2, 6, 7], 3) == [[0, 1, 2], [6, 7]]


def test_an_interrupted_sample_resumes_from_its_shards_and_equals_an_uninterrupted_one(
        tiny_checkpoint, tmp_path, count_forwards):  # noqa: F811
    calls, fail_after = count_forwards
    common = [str(tiny_checkpoint), "--num_images", "10", "--steps", "2", "--batch_size", "2", "--cfg", "2.0",
              "--device", "cpu"]
    assert sample_main([*common, "--npz", str(tmp_path / "plain.npz")]) == 0  # in memory, no shards
    calls.clear()
    fail_after[0] = 3  # 4 images a shard (2 batches): one shard written, then the time is up
    with pytest.raises(Interrupt):
        sample_main([*common, "--shards", str(tmp_path / "shards"), "--shard_size", "4",
                     "--npz", str(tmp_path / "resumed.npz")])
    written = sorted(p.name for p in tmp_path.rglob("images-*.npz"))
    assert written == ["images-00000000-00000004.npz"] and not (tmp_path / "resumed.npz").exists()
    calls.clear()
    fail_after[0] = None
    assert sample_main([*common, "--shards", str(tmp_path / "shards"), "--shard_size", "4",
                        "--npz", str(tmp_path / "resumed.npz")]) == 0
    assert calls == [[4, 5], [6, 7], [8, 9]]  # the finished shard was read back, not made again
    plain, resumed = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "resumed.npz")
    assert np.array_equal(plain["images"], resumed["images"]) and np.array_equal(plain["labels"], resumed["labels"])
    assert len(list(tmp_path.rglob("images-*.npz"))) == 3  # 4 + 4 + 2
    # other settings are other shards: nothing of the first run is read
    calls.clear()
    assert sample_main([*common[:-4], "--cfg", "1.0", "--device", "cpu", "--shards", str(tmp_path / "shards"),
                        "--shard_size", "4", "--npz", str(tmp_path / "other.npz")]) == 0
    assert len(calls) == 5 and not np.array_equal(np.load(tmp_path / "other.npz")["images"], plain["images"])


def test_an_interrupted_eval_point_resumes_from_its_shards_with_the_same_metric(
        tiny_checkpoint, quick_refnet, tmp_path, count_forwards):  # noqa: F811
    calls, fail_after = count_forwards
    base = [str(tiny_checkpoint), "--num_images", "12", "--steps", "1", "--batch_size", "4", "--ref_images", "20",
            "--device", "cpu"]
    assert eval_main([*base, "--out", str(tmp_path / "plain.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())["rows"]
    calls.clear()
    fail_after[0] = 2  # shards of 4 images (one batch): two written, then interrupted
    sharded = [*base, "--shards", str(tmp_path / "shards"), "--shard_size", "4", "--out", str(tmp_path / "m.json")]
    with pytest.raises(Interrupt):
        eval_main(sharded)
    assert len(list(tmp_path.rglob("images-*.npz"))) == 2 and not (tmp_path / "m.json").exists()
    calls.clear()
    fail_after[0] = None
    assert eval_main(sharded) == 0
    assert calls == [[8, 9, 10, 11]]  # only the missing shard was generated
    resumed = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [r["value"] for r in resumed] == pytest.approx([r["value"] for r in plain], rel=1e-6)
    assert not list(tmp_path.rglob("images-*.npz"))  # the point's rows are kept, its shards removed


def test_a_shard_of_other_settings_is_never_read(tmp_path):
    import torch

    store = shards.ShardStore(tmp_path, {"seed": 0}, size=2)
    store.write([0, 1], torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([3, 4]))
    images, labels = store.load([0, 1])
    assert images.shape == (2, 3, 4, 4) and labels.tolist() == [3, 4]
    other = shards.ShardStore(tmp_path, {"seed": 1}, size=2)
    assert other.directory != store.directory and other.load([0, 1]) is None
    other.directory.mkdir(parents=True)
    store.path([0, 1]).rename(other.path([0, 1]))  # a shard moved under another sampling's name
    assert other.load([0, 1]) is None  # its own record says seed 0
    with pytest.raises(FileNotFoundError, match="missing"):
        shards.assemble(store, 2)


def test_sharded_sample_on_two_processes_equals_one_process(tiny_checkpoint, tmp_path):  # noqa: F811
    """`torchrun --nproc_per_node 2` (gloo, CPU) with --shards: each process writes its own blocks, rank 0 reads
    them all back; the images equal a one-process run without shards."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    common = [str(tiny_checkpoint), "--num_images", "9", "--steps", "2", "--batch_size", "2", "--device", "cpu"]
    assert sample_main([*common, "--npz", str(tmp_path / "one.npz")]) == 0
    two = subprocess.run([str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", "29533", "-m",
                          "jitlab.commands.cli", "sample", *common, "--shards", str(tmp_path / "shards"),
                          "--shard_size", "2", "--npz", str(tmp_path / "two.npz")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "one.npz")["images"], np.load(tmp_path / "two.npz")["images"])
    assert len(list(tmp_path.rglob("images-*.npz"))) == 5  # blocks of 2: 0-1 and 4-5 and 8 by rank 0, the rest by 1
