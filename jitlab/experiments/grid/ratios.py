"""The shape ratios a grid's claim is about, read from a cell's resolved config.

The paper's ablations turn on ratios, not sizes (Tables 2 and 5: patch dimension / width at equal tokens;
Figure 4 and Table 4: ``d'`` / patch dimension; Table 6: width >= patch dimension). A mini grid stands for the
paper only where it keeps them: ``tests/test_ratios.py`` checks every mini grid against the paper scale's cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from jitlab.fitview import FitView


@dataclass(frozen=True)
class Shape:
    resolution: int
    patch_size: int
    channels: int
    width: int
    depth: int
    bottleneck: int | None  # d'; None = one linear patch embedding

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels

    @property
    def tokens(self) -> int:
        return (self.resolution // self.patch_size) ** 2

    @property
    def patch_per_width(self) -> Fraction:
        return Fraction(self.patch_dim, self.width)

    @property
    def bottleneck_per_patch(self) -> Fraction | None:
        return None if self.bottleneck is None else Fraction(self.bottleneck, self.patch_dim)

    @property
    def full_rank_output(self) -> bool:
        """The final layer (width -> patch dimension) can reach every direction of a patch."""
        return self.width >= self.patch_dim

    def line(self) -> str:
        d = "none" if self.bottleneck is None else f"{self.bottleneck} ({self.bottleneck_per_patch} of the patch)"
        rank = "full-rank output" if self.full_rank_output else "output rank below the patch dimension"
        return (f"{self.resolution}x{self.resolution}/p{self.patch_size}: {self.patch_dim}-d patches into width "
                f"{self.width} (patch/width {self.patch_per_width}), {self.tokens} tokens, depth {self.depth}, "
                f"d' {d}, {rank}")


def shape_of(config: dict[str, Any]) -> Shape:
    """The shape of a `jitlab fit` config (a JiT backbone; the image size comes from the data)."""
    net = FitView.of(config).net_args()
    return Shape(resolution=int(net["img_size"]), patch_size=int(net["patch_size"]),
                 channels=int(net.get("in_channels", 3)), width=int(net["hidden_size"]), depth=int(net["depth"]),
                 bottleneck=None if net.get("bottleneck_dim") is None else int(net["bottleneck_dim"]))
