"""Data modules: the embedded offline data sets, ImageNet (folder tree or shards) and the toy spiral."""

from jitlab.data.base import ImageDataModule
from jitlab.data.embedded import EmbeddedDataModule
from jitlab.data.imagenet import ImageNetDataModule
from jitlab.data.toy import SpiralDataModule

__all__ = ["ImageDataModule", "EmbeddedDataModule", "ImageNetDataModule", "SpiralDataModule"]
