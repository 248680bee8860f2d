"""Feature extractors: uint8 images (N, 3, H, W) in, float64 features (N, F) out.

``inception-v3-pool3``: torch-fidelity's InceptionV3 (the paper's FID and IS), from a local weights file.
``refnet-<kind>-<res>``: the penultimate layer of a small classifier of embedded data (``jitlab.score.metrics.refnet``),
whose Frechet distance is FD-ref, never FID.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from jitlab.core.data.base import to_model_range
from jitlab.errors import ConfigError

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
INCEPTION_WEIGHTS_ENV = "JITLAB_INCEPTION_WEIGHTS"


def check_images(images: Tensor) -> None:
    """Feature extractors take uint8 (N, 3, H, W), quantised as a PNG round trip would leave them."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"expected uint8 images (N, 3, H, W) (see jitlab.core.data.base.to_uint8), got {kind}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")


class FeatureExtractor(nn.Module):
    """``extract``: uint8 (N, 3, H, W) -> float64 features (and logits); ``name``: the feature space,
    ``fingerprint``: the exact weights (reference statistics record it), ``metric_names``: what its scores are called.
    """

    name: str
    num_features: int
    has_logits: bool = False
    logits_dim: int = 0
    metric_names: dict[str, str] = {"frechet": "FID", "inception_score": "IS", "kernel": "KID"}

    @property
    def fingerprint(self) -> str:
        return self.name

    def extract(self, images: Tensor) -> dict[str, Tensor]:
        """``{"features": (N, F)}`` float64, plus ``"logits": (N, K)`` when ``has_logits``."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        return self.extract(images)["features"]  # (N, F)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)  # a fixed measuring instrument: BatchNorm stays in eval mode


def inception_weights_cache_path() -> Path:
    """Where torch-fidelity's own download would have put the file (torch hub's checkpoint folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def missing_weights_message(looked_in: list[str]) -> str:
    return (
        f"InceptionV3 weights not found (looked in: {', '.join(looked_in)}). jitlab never downloads at run time. "
        f"Get torch-fidelity's file {INCEPTION_WEIGHTS_FILE} (on a machine with internet: {INCEPTION_WEIGHTS_URL}) "
        f"and either pass its path with --inception_weights FILE, or set {INCEPTION_WEIGHTS_ENV}=FILE, "
        f"or copy it to {inception_weights_cache_path()}"
    )


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file: ``path``, else ``$JITLAB_INCEPTION_WEIGHTS``, else torch hub's cache; never a download."""
    for candidate, origin in ((path, "argument"), (os.environ.get(INCEPTION_WEIGHTS_ENV), INCEPTION_WEIGHTS_ENV)):
        if candidate:
            if Path(candidate).is_file():
                return Path(candidate)
            # an explicit path that is wrong is an error, not a reason to look elsewhere
            raise ConfigError("inception_weights", f"{origin} names {candidate}, which is not a file. "
                              + missing_weights_message([str(candidate)]))
    cached = inception_weights_cache_path()
    if cached.is_file():
        return cached
    raise ConfigError("inception_weights", missing_weights_message([str(cached)]))


class InceptionV3Features(FeatureExtractor):
    """torch-fidelity's InceptionV3: 2048-d pool3 features (FID, KID) and 1008 unbiased logits (IS).

    Images are resized to 299 inside with torch-fidelity's TF1-compatible bilinear resize, as the paper's evaluation
    (torchmetrics' default antialiased resize would differ).
    """

    name = "inception-v3-pool3"
    num_features = 2048
    has_logits = True
    logits_dim = 1008

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = find_inception_weights(weights_path)
        try:
            # an explicit path: torch-fidelity loads the file and never reaches its download branch
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path))
        except Exception as error:  # unpickling or state-dict mismatch: name the file
            raise ConfigError("inception_weights", f"{path} is not a usable {INCEPTION_WEIGHTS_FILE} "
                              f"(torch-fidelity InceptionV3 state dict): {error}") from error
        self.weights_path = path

    @torch.no_grad()
    def extract(self, images: Tensor) -> dict[str, Tensor]:
        check_images(images)
        pool3, logits = self.net(images)  # (N, 2048), (N, 1008) float32
        return {"features": pool3.double(), "logits": logits.double()}


class RefNetFeatures(FeatureExtractor):
    """The penultimate features (and class logits) of a trained refnet; its scores are FD-ref etc."""

    has_logits = True
    metric_names = {"frechet": "FD-ref", "inception_score": "IS-ref", "kernel": "KD-ref"}

    def __init__(self, refnet: nn.Module, kind: str, resolution: int, key: str, accuracy: float | None = None,
                 digest: str | None = None):
        super().__init__()
        self.net = refnet.eval()
        self.resolution = resolution
        self.name = f"refnet-{kind}-{resolution}"
        self.key = key
        self.digest = digest  # sha256 of the weights: statistics of another training under the same key do not match
        self.accuracy = accuracy  # validation accuracy of the classifier: how much its features can tell apart
        self.num_features = refnet.num_features
        self.logits_dim = refnet.head.out_features

    @property
    def fingerprint(self) -> str:
        return f"{self.name}-{self.key}" + (f"-{self.digest[:12]}" if self.digest else "")

    @torch.no_grad()
    def extract(self, images: Tensor) -> dict[str, Tensor]:
        check_images(images)
        if images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"{self.name} measures {self.resolution}x{self.resolution} images, "
                             f"got {tuple(images.shape[-2:])}")
        features = self.net.features(to_model_range(images))  # (N, F)
        logits = self.net.head(features)  # (N, K)
        return {"features": features.double(), "logits": logits.double()}


def build_extractor(features: str, kind: str | None = None, resolution: int | None = None,
                    inception_weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                    train_if_missing: bool = True) -> FeatureExtractor:
    """``features="inception"`` or ``"refnet"`` (which needs ``kind`` and ``resolution`` of embedded data)."""
    if features == "inception":
        return InceptionV3Features(inception_weights)
    if features == "refnet":
        if kind is None or resolution is None:
            raise ConfigError("features", "refnet features need the data kind and resolution")
        from jitlab.score.metrics.refnet import RefNetConfig, load_refnet

        config = RefNetConfig(kind=kind, resolution=resolution)
        net, info = load_refnet(config, cache_dir=cache_dir, train_if_missing=train_if_missing)
        return RefNetFeatures(net, kind, resolution, info["key"], info.get("val_accuracy"), info.get("digest"))
    raise ConfigError("features", f"unknown feature space {features!r}; valid choices: inception, refnet")
