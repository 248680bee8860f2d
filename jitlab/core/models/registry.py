"""Named models: the paper's JiT-B/L/H/G and small sizes for CPU work.

| size | depth | hidden | heads | d' | in-context | start | use |
|---|---|---|---|---|---|---|---|
| G | 40 | 1664 | 16 | 256 | 32 | 10 | paper |
| H | 32 | 1280 | 16 | 256 | 32 | 10 | paper |
| L | 24 | 1024 | 16 | 128 | 32 | 8 | paper |
| B | 12 | 768 | 12 | 128 | 32 | 4 | paper |
| S | 12 | 384 | 6 | 64 | 16 | 4 | small GPU / long CPU runs |
| T | 6 | 192 | 3 | 32 | 8 | 2 | CPU, minutes |
| P | 4 | 96 | 3 | 32 | 4 | 1 | CPU, tests and the mini grids |

Every size comes with patch sizes 2, 4, 8, 16, 32 and 64 as ``JiT-<size>/<patch>``.
The release uses ``proj_dropout = 0.2`` for H models, 0.0 for B and L; it is a separate knob here.
"""

from __future__ import annotations

from typing import Any

from jitlab.core.models.jit import JiT

SIZES: dict[str, dict[str, Any]] = {
    "G": dict(depth=40, hidden_size=1664, num_heads=16, bottleneck_dim=256, in_context_len=32, in_context_start=10),
    "H": dict(depth=32, hidden_size=1280, num_heads=16, bottleneck_dim=256, in_context_len=32, in_context_start=10),
    "L": dict(depth=24, hidden_size=1024, num_heads=16, bottleneck_dim=128, in_context_len=32, in_context_start=8),
    "B": dict(depth=12, hidden_size=768, num_heads=12, bottleneck_dim=128, in_context_len=32, in_context_start=4),
    "S": dict(depth=12, hidden_size=384, num_heads=6, bottleneck_dim=64, in_context_len=16, in_context_start=4),
    "T": dict(depth=6, hidden_size=192, num_heads=3, bottleneck_dim=32, in_context_len=8, in_context_start=2),
    "P": dict(depth=4, hidden_size=96, num_heads=3, bottleneck_dim=32, in_context_len=4, in_context_start=1),
}
PATCHES = (2, 4, 8, 16, 32, 64)
PAPER_SIZES = ("B", "L", "H", "G")

MODELS: dict[str, dict[str, Any]] = {
    f"JiT-{size}/{patch}": dict(SIZES[size], patch_size=patch) for size in SIZES for patch in PATCHES
}


def model_kwargs(name: str) -> dict[str, Any]:
    """The constructor arguments of a named model (a copy)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return dict(MODELS[name])


def build_model(name: str, *, img_size: int, num_classes: int = 1000, **overrides: Any) -> JiT:
    """Build a named model; ``overrides`` replace any knob (e.g. ``bottleneck_dim=None``)."""
    kwargs = model_kwargs(name)
    kwargs.update(overrides)
    return JiT(img_size=img_size, num_classes=num_classes, **kwargs)
