"""The shipped reference classifiers: weights files in the package and their manifest (the one owner of that format).

FD-ref is a measuring instrument only if every machine measures with the same weights, so the refnets the
grids score with are trained once and ship inside the package (``jitlab/score/metrics/weights/``), each as a plain
float32 ``state_dict`` (``torch.load(..., weights_only=True)`` reads it) named ``<kind>-<res>-<key>.pt``.
``manifest.json`` beside them records, per file, the config key, the weights' digest and the validation
accuracy measured when it was trained. A file whose digest differs from its manifest entry, a manifest entry
without its file, or no manifest, is an error naming the file; a config with no manifest entry is not shipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from jitlab.atomic import atomic_path, write_json
from jitlab.errors import ConfigError

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST_NAME = "manifest.json"
FORMAT = 1
DIGEST_RULE = ("sha256 over the state_dict's entries in sorted key order: for each, the key (utf-8), a zero byte, "
               "the dtype and shape as text, a zero byte, then the tensor's bytes (float32 / int64, little-endian)")


@dataclass(frozen=True)
class Shipped:
    """One manifest entry: which file, which config, which weights, how well they classify."""

    file: str
    kind: str
    resolution: int
    key: str
    digest: str
    val_accuracy: float
    train_seconds: float
    config: dict[str, Any]
    trained_with: str

    def path(self, weights_dir: str | os.PathLike | None = None) -> Path:
        return Path(weights_dir or WEIGHTS_DIR) / self.file


def file_name(kind: str, resolution: int, key: str) -> str:
    return f"{kind}-{resolution}-{key}.pt"


def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """The sha256 of the weights themselves (see ``DIGEST_RULE``), not of a pickle file's bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        array = state_dict[name].detach().cpu().contiguous().numpy()
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)  # (...): one byte order on every machine
        digest.update(name.encode() + b"\0" + f"{array.dtype.str} {tuple(array.shape)}".encode() + b"\0")
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def canonical(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, floating tensors in float32: what ships and what the digest is taken of."""
    out = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        out[name] = tensor.float() if tensor.is_floating_point() else tensor
    return out


def manifest_path(weights_dir: str | os.PathLike | None = None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / MANIFEST_NAME


def read_manifest(weights_dir: str | os.PathLike | None = None, missing_ok: bool = False) -> dict[str, Shipped]:
    """``{file name: entry}``; a malformed or absent manifest is an error naming it (``missing_ok``: absent is empty,
    for the first classifier shipped into a new folder)."""
    path = manifest_path(weights_dir)
    if not path.is_file():
        if missing_ok:
            return {}
        raise ConfigError(str(path), "the manifest of the shipped reference classifiers is missing; reinstall jitlab "
                                     "(it ships in the package with the weights)")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        return {name: Shipped(file=name, **entry) for name, entry in raw["classifiers"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(str(path), f"is not a reference-classifier manifest: {error}") from None


def find(kind: str, resolution: int, key: str, weights_dir: str | os.PathLike | None = None) -> Shipped | None:
    """The manifest entry of this classifier config, or None if it is not shipped."""
    return read_manifest(weights_dir).get(file_name(kind, resolution, key))


def load(entry: Shipped, weights_dir: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The entry's state_dict, its digest checked against the manifest's."""
    path = entry.path(weights_dir)
    if not path.is_file():
        raise ConfigError(str(path), f"the shipped reference classifier {entry.kind}-{entry.resolution} (key "
                                     f"{entry.key}) is listed in {MANIFEST_NAME} but its weights file is missing; "
                                     "reinstall jitlab (the file ships in the package)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or not a torch file: name it
        raise ConfigError(str(path), f"cannot be read as a state_dict: {error}") from None
    found = weights_digest(state)
    if found != entry.digest:
        raise ConfigError(str(path), f"digest mismatch: the file's weights hash to {found}, {MANIFEST_NAME} "
                                     f"says {entry.digest}; the shipped classifier was altered")
    return state


def ship(state_dict: Mapping[str, Tensor], kind: str, resolution: int, key: str, config: dict[str, Any],
         info: dict[str, Any], weights_dir: str | os.PathLike | None = None) -> Shipped:
    """Write the weights file (float32, atomic) and its manifest entry; returns the entry."""
    state = canonical(state_dict)
    entry = Shipped(file=file_name(kind, resolution, key), kind=kind, resolution=resolution, key=key,
                    digest=weights_digest(state), val_accuracy=round(float(info["val_accuracy"]), 4),
                    train_seconds=round(float(info["train_seconds"]), 1), config=dict(config),
                    trained_with=f"torch {torch.__version__}, {info.get('threads', '?')} thread(s), "
                                 f"{torch.backends.cpu.get_cpu_capability()}")
    path = entry.path(weights_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    entries = read_manifest(weights_dir, missing_ok=True)
    entries[entry.file] = entry
    body = {name: {k: v for k, v in vars(e).items() if k != "file"} for name, e in sorted(entries.items())}
    write_json(manifest_path(weights_dir), {"format": FORMAT, "digest_rule": DIGEST_RULE, "classifiers": body})
    return entry
