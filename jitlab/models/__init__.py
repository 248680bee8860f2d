"""Denoiser backbones: ``net(z, t, y)`` returns an output in the configured prediction space."""

from jitlab.models.jit import JiT
from jitlab.models.registry import MODELS, build_model, model_kwargs

__all__ = ["JiT", "MODELS", "build_model", "model_kwargs"]
