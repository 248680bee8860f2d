"""FID / FD-ref, Inception Score and KID of generated images, all computed by torchmetrics metrics.

``SampleScores`` runs the feature extractor once per batch and feeds the features (and logits) to
torchmetrics' ``FrechetInceptionDistance`` (through ``FrechetDistance``), ``InceptionScore`` and
``KernelInceptionDistance``, whose feature module is then a pass-through. In a distributed run every
rank updates with its own slice; ``compute`` syncs the states (torchmetrics does) and returns the same
results on every rank.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from jitlab.score.metrics.features import FeatureExtractor
from jitlab.score.metrics.frechet import FrechetDistance

MetricKind = Literal["FID", "FD-ref", "IS", "IS-ref", "KID", "KD-ref"]
METRIC_KINDS = ("FID", "FD-ref", "IS", "IS-ref", "KID", "KD-ref")


def metric_name(kind: MetricKind, n_samples: int) -> str:
    """``("FID", 50000) -> "FID-50K"``, ``("FD-ref", 500) -> "FD-ref-500"``: K only for whole thousands."""
    if kind not in METRIC_KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; valid: {', '.join(METRIC_KINDS)}")
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    n = int(n_samples)
    return f"{kind}-{n // 1000}K" if n % 1000 == 0 else f"{kind}-{n}"


class Precomputed(nn.Module):
    """The metrics' feature module when the features were extracted already: checks them and passes them on."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features (N, {self.num_features}), got {tuple(features.shape)}")
        return features.double()  # (N, F)


class SampleScores(nn.Module):
    """Scores of generated (fake) uint8 images against a reference: statistics from an ``.npz`` or real images.

    Args:
        extractor: the feature space (``InceptionV3Features`` for FID/IS/KID, a refnet for FD-ref...).
        reference: ``(mu, sigma)`` (e.g. ``load_stats(...).pair``); without it, ``update(real=True)`` gives them.
        frechet, inception_score, kid: which scores to compute.
        is_splits: splits of the Inception Score (10, as torch-fidelity and the paper's evaluation).
        kid_subsets, kid_subset_size: KID subsets (subset size is capped at the number of samples).
        seed: fixes the random splits and subsets of IS and KID.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        reference: tuple | None = None,
        frechet: bool = True,
        inception_score: bool = False,
        kid: bool = False,
        is_splits: int = 10,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        super().__init__()
        if inception_score and not extractor.has_logits:
            raise ValueError(f"{extractor.name} has no logits: no Inception Score in this feature space")
        self.extractor = extractor
        self.seed = seed
        self.kid_subset_size = kid_subset_size
        self.names = extractor.metric_names
        width = extractor.num_features
        self.n_fake, self.n_real = SumMetric(), SumMetric()
        with warnings.catch_warnings():  # IS and KID warn that they keep all features: we know
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.frechet = FrechetDistance(Precomputed(width), reference) if frechet else None
            self.inception_score = InceptionScore(
                feature=Precomputed(extractor.logits_dim), splits=is_splits) if inception_score else None
            self.kid = KernelInceptionDistance(feature=Precomputed(width), subsets=kid_subsets,
                                               subset_size=kid_subset_size) if kid else None

    @torch.no_grad()
    def update(self, images: Tensor, real: bool = False) -> None:
        """uint8 (N, 3, H, W) images (``jitlab.core.data.base.to_uint8`` of the samples), this rank's slice."""
        out = self.extractor.extract(images)  # {"features": (N, F), "logits": (N, K)}
        features = out["features"]
        (self.n_real if real else self.n_fake).update(float(len(features)))
        if self.frechet is not None:
            self.frechet.update(features, real=real)
        if self.kid is not None:
            self.kid.update(features, real=real)
        if self.inception_score is not None and not real:
            self.inception_score.update(out["logits"])

    def compute(self) -> list[dict]:
        """One dict per score: ``metric`` (e.g. "FID-50K"), ``value``, ``n_samples``, ``feature_space`` (+ ``std``)."""
        n_fake = int(self.n_fake.compute())
        space = self.extractor.name
        results = []

        def row(kind: str, value: Tensor, **extra) -> dict:
            return {"metric": metric_name(self.names[kind], n_fake), "value": float(value), "n_samples": n_fake,
                    "feature_space": space, **extra}

        if self.frechet is not None:
            results.append(row("frechet", self.frechet.compute()))
        with torch.random.fork_rng(devices=[]):  # IS and KID draw random splits from torch's global generator
            if self.inception_score is not None:
                torch.manual_seed(self.seed)
                with warnings.catch_warnings():  # one split: torch's std of one value warns (handled below)
                    warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
                    mean, std = self.inception_score.compute()
                splits = len(torch.arange(n_fake).chunk(self.inception_score.splits))  # as compute() splits
                # torchmetrics' std is the sample std over splits; report torch-fidelity's population std
                std = std * ((splits - 1) / splits) ** 0.5 if splits > 1 else torch.zeros(())
                results.append(row("inception_score", mean, std=float(std)))
            if self.kid is not None:
                n_real = int(self.n_real.compute())
                if n_real == 0:
                    raise ValueError("KID needs real images (update(images, real=True)); a reference .npz has no "
                                     "features to compare kernels with")
                self.kid.subset_size = min(self.kid_subset_size, n_fake, n_real)
                torch.manual_seed(self.seed)
                mean, std = self.kid.compute()
                results.append(row("kernel", mean, std=float(std), subset_size=self.kid.subset_size))
        return results

    def reset(self) -> None:
        for metric in (self.n_fake, self.n_real, self.frechet, self.inception_score, self.kid):
            if metric is not None:
                metric.reset()
