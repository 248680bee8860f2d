"""FID / FD-ref, Inception Score and KID of generated images, all computed by torchmetrics metrics.

The extractor runs once per batch; its features and logits feed the metrics through a pass-through feature module.
Each rank updates with its slice; ``compute`` syncs the states and returns the same results on every rank.
"""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from jitlab.score.metrics.features import FeatureExtractor
from jitlab.score.metrics.frechet import FrechetDistance

MetricKind = Literal["FID", "FD-ref", "IS", "IS-ref", "KID", "KD-ref"]
METRIC_KINDS = get_args(MetricKind)


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
    """Scores of generated (fake) uint8 images in ``extractor``'s feature space.

    ``reference``: ``(mu, sigma)`` (e.g. ``load_stats(...).pair``); without it, ``update(real=True)`` gives them.
    ``is_splits``: 10, as torch-fidelity and the paper's evaluation; ``kid_subset_size`` is capped at the number of
    samples; ``seed`` fixes the random splits and subsets of IS and KID.
    """

    def __init__(self, extractor: FeatureExtractor, reference: tuple | None = None, frechet: bool = True,
                 inception_score: bool = False, kid: bool = False, is_splits: int = 10, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, seed: int = 0):
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
        results = []

        def row(kind: str, value: Tensor, **extra) -> dict:
            return {"metric": metric_name(self.names[kind], n_fake), "value": float(value), "n_samples": n_fake,
                    "feature_space": self.extractor.name, **extra}

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
