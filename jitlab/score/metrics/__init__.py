"""Evaluation metrics: FID / FD-ref, Inception Score and KID through torchmetrics, and their feature spaces."""

from jitlab.score.metrics.features import (FeatureExtractor, InceptionV3Features, RefNetFeatures, build_extractor,
                                           find_inception_weights)
from jitlab.score.metrics.frechet import FrechetDistance
from jitlab.score.metrics.refnet import RefNet, RefNetConfig, load_refnet, train_refnet
from jitlab.score.metrics.scores import SampleScores, metric_name
from jitlab.score.metrics.stats import (ReferenceStats, StatsFileError, build_stats, dataset_stats, load_stats,
                                        save_stats)

__all__ = [
    "FeatureExtractor", "InceptionV3Features", "RefNetFeatures", "build_extractor", "find_inception_weights",
    "FrechetDistance", "RefNet", "RefNetConfig", "load_refnet", "train_refnet", "SampleScores", "metric_name",
    "ReferenceStats", "StatsFileError", "build_stats", "dataset_stats", "load_stats", "save_stats",
]
