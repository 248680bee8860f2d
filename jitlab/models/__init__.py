"""Denoiser backbones: ``net(z, t, y)`` returns an output in the configured prediction space."""

from jitlab.models.jit import JiT
from jitlab.models.mlp import ToyMLP
from jitlab.models.registry import MODELS, build_model, model_kwargs
from jitlab.models.skip import LearnedSkip
from jitlab.models.wide_head import WideHead

__all__ = ["JiT", "ToyMLP", "MODELS", "build_model", "model_kwargs", "LearnedSkip", "WideHead"]
