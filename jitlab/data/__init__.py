"""Data modules: the embedded offline data sets (and, later, ImageNet and the toy spiral)."""

from jitlab.data.base import ImageDataModule
from jitlab.data.embedded import EmbeddedDataModule
from jitlab.data.toy import SpiralDataModule

__all__ = ["ImageDataModule", "EmbeddedDataModule", "SpiralDataModule"]
