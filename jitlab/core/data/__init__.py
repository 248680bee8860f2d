"""Data modules: the embedded offline data sets, ImageNet (folder tree or shards) and the toy spiral."""

from jitlab.core.data.base import ImageDataModule
from jitlab.core.data.embedded import EmbeddedDataModule
from jitlab.core.data.imagenet import ImageNetDataModule
from jitlab.core.data.toy import SpiralDataModule

__all__ = ["ImageDataModule", "EmbeddedDataModule", "ImageNetDataModule", "SpiralDataModule"]
