"""The shipped reference classifiers: every grid's is shipped, each loads with its digest and validation accuracy,
a wrong digest or a missing file is a clear error, `jitlab train-ref` says match or mismatch, reports name the
digest."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pandas as pd
import pytest
import torch

from jitlab.errors import ConfigError
from jitlab.score.metrics import refnet, shipped
from jitlab.score.metrics.features import build_extractor
from tests.conftest import run_cli

MANIFEST = shipped.read_manifest()
ACCURACY_TOLERANCE = 0.002  # two of the 1,000 validation images: float32 convolutions on another CPU


def no_training(*_, **__):
    raise AssertionError("a shipped classifier was retrained")


def grid_classifiers() -> set[tuple[str, int]]:
    from jitlab.experiments.grid.runner import reference_key
    from jitlab.experiments.grid.spec import list_grids, load_spec

    keys = set()
    for name in list_grids():
        spec = load_spec(name)
        if "mini" in spec.scales:
            keys |= {k for k in map(reference_key, spec.cells("mini")) if k is not None}
    return keys


def test_every_classifier_the_mini_grids_score_with_is_shipped():
    keys = grid_classifiers()
    assert ("shapes", 32) in keys and ("shapes", 8) in keys
    for kind, resolution in sorted(keys):
        config = refnet.RefNetConfig(kind=kind, resolution=resolution)
        entry = shipped.find(kind, resolution, config.key())
        assert entry is not None, f"{kind}-{resolution} (key {config.key()}) is not in {shipped.manifest_path()}"
        assert entry.path().is_file() and entry.config == asdict(config)
        assert entry.path().stat().st_size < 2_000_000  # about 1 MB each


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_shipped_classifier_has_its_digest_and_validation_accuracy(name, monkeypatch, tmp_path, one_thread):
    entry = MANIFEST[name]
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    config = refnet.RefNetConfig(**entry.config)
    assert (config.kind, config.resolution, config.key()) == (entry.kind, entry.resolution, entry.key)
    net, info = refnet.load_refnet(config, cache_dir=tmp_path, train_if_missing=False)
    assert info["shipped"] and info["digest"] == entry.digest == refnet.weights_digest(net)
    state = torch.load(entry.path(), weights_only=True)  # a plain float32 state_dict
    assert all(t.dtype in (torch.float32, torch.int64) for t in state.values())
    # the validation set the data set generates deterministically (seed + 1), as training measured it
    images, labels = refnet._tensors(config.kind, config.resolution, config.val_size, config.seed + 1)
    accuracy = refnet.accuracy(net, images, labels)
    assert abs(accuracy - entry.val_accuracy) <= ACCURACY_TOLERANCE, (accuracy, entry.val_accuracy)
    assert accuracy > 3 * info["chance"]


def copy_of_weights(tmp_path, name: str):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(shipped.manifest_path(), folder)
    shutil.copy(MANIFEST[name].path(), folder)
    raw = json.loads((folder / shipped.MANIFEST_NAME).read_text())
    raw["classifiers"] = {name: raw["classifiers"][name]}
    (folder / shipped.MANIFEST_NAME).write_text(json.dumps(raw))
    return folder, refnet.RefNetConfig(**MANIFEST[name].config)


SMALLEST = min(MANIFEST, key=lambda n: MANIFEST[n].resolution)


def test_a_wrong_digest_in_the_manifest_fails_naming_the_file_and_both_digests(tmp_path, monkeypatch):
    folder, config = copy_of_weights(tmp_path, SMALLEST)
    raw = json.loads((folder / shipped.MANIFEST_NAME).read_text())
    raw["classifiers"][SMALLEST]["digest"] = "0" * 64
    (folder / shipped.MANIFEST_NAME).write_text(json.dumps(raw))
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    with pytest.raises(ConfigError) as error:
        refnet.load_refnet(config, cache_dir=tmp_path, weights_dir=folder)
    message = str(error.value)
    assert str(folder / SMALLEST) in message and "digest mismatch" in message
    assert "0" * 64 in message and MANIFEST[SMALLEST].digest in message


def test_altered_weights_fail_their_digest(tmp_path, monkeypatch):
    folder, config = copy_of_weights(tmp_path, SMALLEST)
    state = torch.load(folder / SMALLEST, weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone()
    state[first].view(-1)[0] += 1e-6  # one weight, one part in a million
    torch.save(state, folder / SMALLEST)
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    with pytest.raises(ConfigError, match="digest mismatch"):
        refnet.load_refnet(config, cache_dir=tmp_path, weights_dir=folder)


def test_a_listed_file_that_is_missing_is_an_error_naming_it_never_a_retraining(tmp_path, monkeypatch):
    folder, config = copy_of_weights(tmp_path, SMALLEST)
    (folder / SMALLEST).unlink()
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    with pytest.raises(ConfigError, match=f"{folder / SMALLEST}.*weights file is missing"):
        refnet.load_refnet(config, cache_dir=tmp_path, weights_dir=folder)


def test_the_digest_is_of_the_weights_not_of_a_file(tmp_path):
    state = refnet.RefNet(10, 8, width=16).state_dict()
    digest = shipped.weights_digest(state)
    assert len(digest) == 64
    assert shipped.weights_digest(dict(reversed(list(state.items())))) == digest  # key order, not dict order
    torch.save(state, tmp_path / "a.pt")
    torch.save(dict(reversed(list(state.items()))), tmp_path / "b.pt")  # other file bytes, same weights
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()
    assert shipped.weights_digest(torch.load(tmp_path / "b.pt", weights_only=True)) == digest
    state = {k: v.clone() for k, v in state.items()}
    state["head.bias"][0] += 1.0
    assert shipped.weights_digest(state) != digest


def test_features_read_the_shipped_classifier_and_name_its_digest(monkeypatch, tmp_path):
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = MANIFEST[SMALLEST]
    extractor = build_extractor("refnet", kind=entry.kind, resolution=entry.resolution)
    assert extractor.digest == entry.digest and extractor.accuracy == entry.val_accuracy
    assert extractor.fingerprint == f"refnet-{entry.kind}-{entry.resolution}-{entry.key}-{entry.digest[:12]}"
    from jitlab.score.evaluation import ScoredAt

    scored = ScoredAt(extractor, entry.resolution)  # samples resized first: the same instrument, the same digest
    assert scored.digest == entry.digest and scored.fingerprint == extractor.fingerprint


def test_train_ref_ships_then_rebuilds_and_says_match_or_mismatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    tiny = ["train-ref", "--kind", "shapes", "--resolution", "8", "--train_size", "128", "--epochs", "1"]
    code, out = run_cli(tiny, capsys)
    assert code == 2 and "jitlab: error:" in out and "manifest.json" in out and "is missing" in out  # no weights
    shipped.WEIGHTS_DIR.mkdir()
    shipped.manifest_path().write_text(json.dumps({"format": shipped.FORMAT, "classifiers": {}}))
    code, out = run_cli(tiny + ["--ship"], capsys)
    assert code == 0 and "shipped shapes-8" in out
    (name, entry), = shipped.read_manifest().items()
    code, out = run_cli(tiny, capsys)
    assert code == 0 and f"digest match: the rebuilt weights are the shipped ones ({entry.digest})" in out
    raw = json.loads(shipped.manifest_path().read_text())
    raw["classifiers"][name]["digest"] = "f" * 64
    shipped.manifest_path().write_text(json.dumps(raw))
    code, out = run_cli(tiny, capsys)
    assert code == 1 and f"digest mismatch: rebuilt {entry.digest}, shipped {'f' * 64}" in out
    assert "another CPU" in out
    monkeypatch.setattr(refnet, "train_refnet", no_training)
    raw["classifiers"][name]["digest"] = entry.digest
    shipped.manifest_path().write_text(json.dumps(raw))
    code, out = run_cli(tiny + ["--if_missing"], capsys)  # what `jitlab grid run` asks: check, never train
    assert code == 0 and "shipped, digest checked" in out


def test_reports_name_the_classifiers_digest_and_whether_it_is_shipped():
    from jitlab.experiments.report.provenance import feature_notes

    entry = MANIFEST[SMALLEST]
    frame = pd.DataFrame([
        {"feature_space": "refnet-shapes-8", "feature_accuracy": entry.val_accuracy, "feature_digest": entry.digest},
        {"feature_space": "refnet-shapes-24", "feature_accuracy": 0.9, "feature_digest": "ab" * 32},
        {"feature_space": "refnet-shapes-4", "feature_accuracy": 0.5, "feature_digest": None}])
    shipped_note, other, old = feature_notes(frame)
    assert f"weights sha256 {entry.digest[:16]}" in shipped_note and SMALLEST in shipped_note
    assert "not a shipped classifier" in other and "abababab" in other
    assert "digest was not recorded" in old
