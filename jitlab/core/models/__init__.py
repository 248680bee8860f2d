"""Denoiser backbones: ``net(z, t, y)`` returns an output in the configured prediction space."""

from jitlab.core.models.jit import JiT
from jitlab.core.models.mlp import ToyMLP
from jitlab.core.models.registry import MODELS, build_model, model_kwargs
from jitlab.core.models.skip import LearnedSkip
from jitlab.core.models.wide_head import WideHead

__all__ = ["JiT", "ToyMLP", "MODELS", "build_model", "model_kwargs", "LearnedSkip", "WideHead"]
