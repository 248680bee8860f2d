"""Class subsets of ImageNet: ``data.classes`` (first N, a list file, a shipped list) on folder trees and shards.

The acceptance test of issue 20: a synthetic tree of 12 classes, 5 chosen by a list file and 3 by
count, one training step on each from the folder tree and from shards, the labels renumbered
0..N-1 in sorted order and the class list recorded in the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jitlab.core.data.imagenet import ImageFolderDataset, ImageNetDataModule
from jitlab.core.data.subsets import STATE_KEY, checkpoint_classes, read_class_list, select_classes, shipped_class_lists
from jitlab.core.data.synth_imagenet import write_tree
from jitlab.errors import ConfigError
from tests.conftest import run_cli

NAMES = [f"n{c:08d}" for c in range(12)]  # the folder names write_tree gives
FIVE = [NAMES[i] for i in (9, 2, 11, 4, 7)]  # the list file's order: not sorted on purpose
TRAIN, VAL = 2, 1  # images per class


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet12")
    write_tree(root, classes=12, train_per_class=TRAIN, val_per_class=VAL, short=(40, 72), seed=3, bad_files=False)
    return root


@pytest.fixture(scope="module")
def five_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "five.txt"
    path.write_text(f"# five classes of the synthetic tree\n{FIVE[0]}\n{FIVE[1]}  # an inline comment\n\n"
                    + "\n".join(FIVE[2:]) + "\n")
    return path


@pytest.fixture(scope="module")
def selections(five_file) -> dict[str, tuple[int | str, list[str]]]:
    """name -> (the ``classes`` argument, the classes it selects in label order)."""
    return {"list": (str(five_file), sorted(FIVE)), "count": (3, NAMES[:3])}


@pytest.fixture(scope="module")
def shards(tree, selections, tmp_path_factory) -> dict[str, Path]:
    """The shards ``prepare-imagenet --classes`` writes for each selection (32 x 32)."""
    from jitlab.commands.prepare_imagenet import main

    out = {}
    for name, (spec, _) in selections.items():
        out[name] = tmp_path_factory.mktemp("shards") / name
        assert main(["--src", str(tree), "--out", str(out[name]), "--resolution", "32", "--workers", "0",
                     "--no_progress", "--classes", str(spec)]) == 0
    return out


def folder_of(dataset: ImageFolderDataset, index: int) -> str:
    return Path(dataset.path(index)).parent.name


# -- the labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["list", "count"])
def test_folder_subset_renumbers_labels_in_sorted_order(tree, selections, name):
    spec, chosen = selections[name]
    dm = ImageNetDataModule(root=str(tree), resolution=32, global_batch_size=4, num_workers=0, classes=spec)
    assert dm.classes == chosen and dm.num_classes == len(chosen) and dm.state_dict() == {"classes": chosen}
    assert ImageNetDataModule.net_defaults(root=str(tree), resolution=32, classes=spec)["num_classes"] == len(chosen)
    for split, per_class in (("train", TRAIN), ("val", VAL)):
        dataset = dm.train_dataset() if split == "train" else dm.val_dataset()
        assert len(dataset) == per_class * len(chosen)  # the other classes' images are left out
        labels = [int(label) for label in dataset.labels]
        assert [chosen.index(folder_of(dataset, i)) for i in range(len(dataset))] == labels
        assert sorted(set(labels)) == list(range(len(chosen)))
    _, label = dm.train_dataset()[len(dm.train_dataset()) - 1]
    assert label == len(chosen) - 1  # the last folder in sorted order has the last label


@pytest.mark.parametrize("name", ["list", "count"])
def test_shards_of_a_subset_record_it_and_read_as_it(tree, selections, shards, name):
    from litdata import StreamingDataset

    spec, chosen = selections[name]
    meta = json.loads((shards[name] / "jitlab_shards.json").read_text())
    assert meta["classes"] == chosen
    assert meta["splits"]["train"]["images"] == TRAIN * len(chosen)
    assert meta["splits"]["val"]["images"] == VAL * len(chosen)
    folder = ImageFolderDataset(tree / "train", 32, chosen)  # the file list prepare-imagenet numbered
    raw = StreamingDataset(str(shards[name] / "train"))
    labels = [raw[i]["label"] for i in range(len(raw))]
    assert [chosen.index(folder_of(folder, raw[i]["index"])) for i in range(len(raw))] == labels
    assert sorted(set(labels)) == list(range(len(chosen)))
    for asked in (None, spec):  # not asking for a subset reads the recorded one; asking for the same one too
        dm = ImageNetDataModule(root=str(shards[name]), resolution=32, global_batch_size=4, num_workers=0,
                                classes=asked)
        assert dm.source == "shards" and dm.classes == chosen and dm.state_dict() == {"classes": chosen}
        assert ImageNetDataModule.net_defaults(root=str(shards[name]), resolution=32,
                                               classes=asked)["num_classes"] == len(chosen)


# -- one training step, and the checkpoint --------------------------------------------------------------


@pytest.mark.parametrize("source,name", [("folder", "list"), ("folder", "count"), ("shards", "list"),
                                         ("shards", "count")])
def test_one_step_on_a_subset_records_the_class_list(tree, selections, shards, source, name, tmp_path, capsys):
    spec, chosen = selections[name]
    root = tree if source == "folder" else shards[name]
    asked = [] if (source, name) == ("shards", "list") else ["--data.classes", str(spec)]  # shards: recorded list
    args = ["fit", "--data", "ImageNetDataModule", "--data.root", str(root), "--data.resolution", "32",
            "--data.num_workers=0", "--data.global_batch_size=4", *asked, "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--samples.num_images=2",
            "--samples.steps=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
            f"--trainer.default_root_dir={tmp_path}"]
    code, out = run_cli(args, capsys)
    assert code == 0, out[-3000:]
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 1
    assert ckpt["hyper_parameters"]["net"]["init_args"]["num_classes"] == len(chosen)  # followed the subset
    assert STATE_KEY == ImageNetDataModule.__qualname__ and ckpt[STATE_KEY] == {"classes": chosen}
    assert checkpoint_classes(ckpt) == chosen
    assert ckpt["datamodule_hyper_parameters"]["classes"] == (spec if asked else None)  # what was asked
    weight = ckpt["state_dict"]["net.y_embedder.embedding_table.weight"]
    assert weight.shape[0] == len(chosen) + 1  # N classes and the null class of CFG


# -- the lists and the errors ------------------------------------------------------------------------


def test_shipped_lists_are_package_data_with_their_source():
    lists = shipped_class_lists()
    assert set(lists) >= {"imagenette", "imagenet100"}
    for name, size in (("imagenette", 10), ("imagenet100", 100)):
        wnids, path = read_class_list(name)
        assert len(wnids) == len(set(wnids)) == size and all(w[0] == "n" and len(w) == 9 and w[1:].isdigit()
                                                             for w in wnids)
        comments = [line for line in Path(path).read_text().splitlines() if line.startswith("#")][:2]
        assert Path(path).read_text().startswith("# ") and "https://github.com/" in "".join(comments)  # the source
    imagenette, _ = read_class_list("imagenette")
    tree = sorted(imagenette + NAMES)
    assert select_classes(tree, "imagenette", "a tree") == sorted(imagenette)
    assert "n03888257" in imagenette  # parachute (n03888605 is parallel bars)


def test_a_class_missing_from_the_tree_is_one_line_naming_it_and_the_list(tree, five_file, tmp_path):
    stray = tmp_path / "stray.txt"
    stray.write_text(f"{NAMES[1]}\nn09999999\n")
    with pytest.raises(ConfigError) as error:
        ImageNetDataModule(root=str(tree), resolution=32, classes=str(stray))
    message = str(error.value)
    assert error.value.field == "data.classes" and "\n" not in message
    assert "n09999999" in message and str(stray) in message and str(tree / "train") in message
    with pytest.raises(ConfigError, match=r"imagenette\.txt"):
        ImageNetDataModule(root=str(tree), resolution=32, classes="imagenette")  # the shipped file is named
    for bad, match in ((13, "is 13 but .* has 12 classes; choose 1..12"), (0, "choose 1..12"),
                       ("no-such-list", "neither a class list file .* nor a shipped list .*imagenette")):
        with pytest.raises(ConfigError, match=match):
            ImageNetDataModule(root=str(tree), resolution=32, classes=bad)
    twice = tmp_path / "twice.txt"
    twice.write_text(f"{NAMES[1]}\n{NAMES[1]}\n")
    with pytest.raises(ConfigError, match=f"twice.txt:2: {NAMES[1]} is listed twice"):
        ImageNetDataModule(root=str(tree), resolution=32, classes=str(twice))


def test_shards_refuse_another_subset_and_prepare_refuses_a_bad_list(tree, shards, tmp_path, capsys):
    from jitlab.commands.prepare_imagenet import main

    with pytest.raises(ConfigError, match="data.classes: selects a part of the 5 classes .*prepare-imagenet"):
        ImageNetDataModule(root=str(shards["list"]), resolution=32, classes=2)
    stray = tmp_path / "stray.txt"
    stray.write_text("n09999999\n")
    assert main(["--src", str(tree), "--out", str(tmp_path / "o"), "--resolution", "32", "--workers", "0",
                 "--classes", str(stray)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jitlab: error: --classes: n09999999 of ") and str(stray) in err[0]
    assert not (tmp_path / "o").exists()


def test_resuming_on_other_classes_is_refused(tree, selections):
    dm = ImageNetDataModule(root=str(tree), resolution=32, global_batch_size=4, num_workers=0, classes=3)
    dm.load_state_dict({"classes": NAMES[:3]})  # the same classes: resumes
    with pytest.raises(ConfigError, match="data.classes: the checkpoint's 3 classes are not the 3 .*from label 2"):
        dm.load_state_dict({"classes": [*NAMES[:2], NAMES[5]]})
    with pytest.raises(ConfigError, match="checkpoint's 5 classes are not the 3 .*from label 0"):
        dm.load_state_dict({"classes": selections["list"][1]})


def test_a_validation_class_that_train_lacks_is_still_an_error(tmp_path):
    write_tree(tmp_path / "t", classes=2, train_per_class=1, val_per_class=1, short=(40, 48), bad_files=False)
    (tmp_path / "t" / "train" / NAMES[1]).rename(tmp_path / "t" / "train" / "n00000005")
    dm = ImageNetDataModule(root=str(tmp_path / "t"), resolution=32, global_batch_size=1, num_workers=0, classes=1)
    with pytest.raises(ConfigError, match=f"class folders that train/ does not have: \\['{NAMES[1]}'\\]"):
        dm.val_dataset()
