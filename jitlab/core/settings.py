"""The typed settings of sampling and evaluation: one source for `jitlab sample`, `jitlab eval`, the periodic
evaluation, the sample grids and the grid runner (``jitlab.commands.settings_flags`` makes the flags from them).

``EvalSettings`` sweeps EMA x CFG scale x CFG interval; its flat dict (``to_dict``/``from_dict``, keyed by the flags'
names) is the JSON file a grid hands to the `jitlab eval` subprocess (``--settings``). Every value is checked at
construction: a bad one raises a ``ConfigError`` naming the field and what is valid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from jitlab.errors import ConfigError
from jitlab.core.flow import ValueEnum
from jitlab.core.sampling import FinalStep, Precision, Sampler, nfe


class Features(ValueEnum):
    """The feature space of a Frechet distance: refnet (FD-ref, embedded data) or inception (FID); or spiral:
    Figure 2's toy, its Chamfer distance and off-plane residual (jitlab.score.metrics.spiral)."""

    refnet = "refnet"
    inception = "inception"
    spiral = "spiral"


def _choice(name: str, enum: type[Enum], value: Any) -> Enum:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(e.value for e in enum)}") from None


def _whole(name: str, value: Any, minimum: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(name, f"must be a whole number >= {minimum}{what}, got {value!r}")
    if not value >= minimum:
        raise ConfigError(name, f"must be >= {minimum}{what}, got {value:g}")
    return int(value)


MAX_CFG_SCALE = 100.0  # the paper sweeps 1-3; far above, the guided velocity overflows: saturated, non-finite images


def cfg_scale_of(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {value!r}")
    scale = float(value)
    if not (math.isfinite(scale) and scale >= 0):
        raise ConfigError(name, f"a CFG scale is a number >= 0 (1 = no guidance, 0 = unconditional), got {scale:g}")
    if scale > MAX_CFG_SCALE:  # such images are grey or NaN and could be scored "best" among bad points
        raise ConfigError(name, f"a CFG scale above {MAX_CFG_SCALE:g} makes no images (the guided velocity "
                                f"overflows; the paper uses 1-3), got {scale:g}")
    return scale


def interval_of(name: str, value: Any) -> tuple[float, float]:
    """``(T_MIN, T_MAX)`` from a pair or ``"T_MIN,T_MAX"``, with 0 <= T_MIN < T_MAX <= 1."""
    pair = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ConfigError(name, f"a CFG interval is T_MIN T_MAX (or 'T_MIN,T_MAX'), got {value!r}") from None
    if not 0 <= low < high <= 1:
        raise ConfigError(name, f"T_MIN T_MAX must satisfy 0 <= T_MIN < T_MAX <= 1, got {low:g} {high:g}")
    return low, high


def ema_of(name: str, value: Any) -> int | None:
    """An EMA index (0 = the first decay) or None / ``none`` / ``raw`` for the raw weights."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "raw", "-1")):
        return None
    try:
        return _whole(name, int(value) if isinstance(value, str) else value, 0)
    except (ValueError, ConfigError):
        raise ConfigError(name, f"an EMA index is 0, 1, ... or none (raw weights), got {value!r}") from None


def resolution_of(name: str, value: Any) -> int | None:
    """None / ``none`` or an image side in pixels (>= 8)."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 8:
        raise ConfigError(name, f"a resolution is a whole number of pixels >= 8 or none, got {value!r}")
    return int(text)


def _set(obj: Any, **values: Any) -> None:
    for name, value in values.items():  # frozen dataclasses: the checked, typed values replace the given ones
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that decides a generated image besides the weights; recorded with every result.

    Args:
        sampler: ODE integrator (Heun's last step is plain Euler, as in the release).
        steps: integration steps.
        cfg_scale: CFG scale on the velocity (1 = no guidance, 0 = unconditional).
        cfg_interval: guide where T_MIN < t < T_MAX (t >= 0 when T_MIN = 0), as the release.
        seed: noise seed (each image's noise comes from seed and index).
        final_step: euler (the release's last step; its sample_t_eps clamp leaves some noise) or x (the last
            step lands on the x-prediction).
        precision: the network's forward while sampling: fp32, or bf16 autocast (the release on GPU).
    """

    sampler: Sampler = Sampler.heun
    steps: int = 50
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    seed: int = 0
    final_step: FinalStep = FinalStep.euler
    precision: Precision = Precision.fp32

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError("seed", f"must be a whole number, got {self.seed!r}")
        _set(self, sampler=_choice("sampler", Sampler, self.sampler), steps=_whole("steps", self.steps, 1),
             cfg_scale=cfg_scale_of("cfg_scale", self.cfg_scale),
             cfg_interval=interval_of("cfg_interval", self.cfg_interval),
             final_step=_choice("final_step", FinalStep, self.final_step),
             precision=_choice("precision", Precision, self.precision))

    def record(self) -> dict:
        return {"sampler": str(Sampler(self.sampler)), "steps": self.steps, "nfe": nfe(self.sampler, self.steps),
                "cfg_scale": self.cfg_scale, "cfg_interval": list(self.cfg_interval), "seed": self.seed,
                "final_step": str(FinalStep(self.final_step)), "precision": str(Precision(self.precision))}

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``JiTModule.generate`` that these settings fix."""
        return {"steps": self.steps, "method": self.sampler, "cfg_scale": self.cfg_scale,
                "cfg_interval": tuple(self.cfg_interval), "seed": self.seed, "final_step": self.final_step,
                "precision": self.precision}


@dataclass(frozen=True)
class PreviewSettings(SamplerSettings):
    """The sampler of images made during training (sample grids, periodic evaluation): few steps keep it cheap."""

    steps: int = 25


@dataclass(frozen=True)
class ScoreSettings:
    """How generated images are scored.

    Args:
        num_images: generated images per sweep point (the metric's name carries the count).
        features: refnet (FD-ref in a classifier trained on the embedded data) or inception (FID; needs weights).
        score_resolution: resize generated and real images to this side before the features (and use this
            resolution's refnet); None: the data's resolution.
        inception_score: also the Inception Score.
        ref_stats: reference statistics .npz (keys mu, sigma); None: built from the data (``ref_images`` images).
        ref_images: real images for built reference statistics.
        inception_weights: torch-fidelity InceptionV3 weights file.
        batch_size: images per forward.
    """

    num_images: int = 500
    features: Features = Features.refnet
    score_resolution: int | None = None
    inception_score: bool = False
    ref_stats: Path | None = None
    ref_images: int = 5000
    inception_weights: str | None = None
    batch_size: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.inception_score, bool):
            raise ConfigError("inception_score", f"must be true or false, got {self.inception_score!r}")
        _set(self, num_images=_whole("num_images", self.num_images, 2, " (a Frechet distance needs two images)"),
             features=_choice("features", Features, self.features),
             score_resolution=resolution_of("score_resolution", self.score_resolution),
             ref_stats=None if self.ref_stats is None else Path(self.ref_stats),
             inception_weights=None if self.inception_weights is None else str(self.inception_weights),
             batch_size=_whole("batch_size", self.batch_size, 1))
        if self.ref_stats is None:
            _set(self, ref_images=_whole("ref_images", self.ref_images, 2))


@dataclass(frozen=True)
class PeriodicSettings(ScoreSettings, PreviewSettings):
    """The evaluation during `fit` (``--evaluation.*``): the scoring and one sampler point, fewer real images."""

    ref_images: int = 2000

    def __post_init__(self) -> None:
        SamplerSettings.__post_init__(self)
        ScoreSettings.__post_init__(self)

    def sampling(self) -> SamplerSettings:
        return SamplerSettings(**{f.name: getattr(self, f.name) for f in fields(SamplerSettings)})

    def score(self) -> ScoreSettings:
        return ScoreSettings(**{f.name: getattr(self, f.name) for f in fields(ScoreSettings)})


_SWEPT = {"cfg_scale", "cfg_interval"}  # the sampler fields the sweep varies (`jitlab eval --cfg`, `--cfg_interval`)


def _sequence(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class EvalSettings:
    """What `jitlab eval` measures: the sweep EMA x ``cfg`` x ``cfg_interval`` of ``sampling``, scored by ``score``;
    ``sampling``'s own ``cfg_scale`` / ``cfg_interval`` are replaced by each point's.

    Args:
        ema: EMA indices to try (0 = the first decay, 1, none = raw weights).
        cfg: CFG scales to try.
        cfg_interval: CFG intervals to try, each as T_MIN,T_MAX.
        device: cpu, cuda or cuda:N (None: cuda if available, else cpu).
    """

    score: ScoreSettings = field(default_factory=ScoreSettings)
    sampling: SamplerSettings = field(default_factory=SamplerSettings)
    ema: tuple[int | None, ...] = (0,)
    cfg: tuple[float, ...] = (1.0,)
    cfg_interval: tuple[tuple[float, float], ...] = ((0.1, 1.0),)
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("ema", "cfg", "cfg_interval"):
            if not _sequence(getattr(self, name)):
                raise ConfigError(name, "give at least one value")
        pairs = self.cfg_interval
        if isinstance(pairs, str) or (isinstance(pairs, (list, tuple)) and len(pairs) == 2
                                      and all(isinstance(v, (int, float)) for v in pairs)):
            pairs = [pairs]  # one interval given as a pair
        _set(self, ema=tuple(ema_of("ema", e) for e in _sequence(self.ema)),
             cfg=tuple(cfg_scale_of("cfg", c) for c in _sequence(self.cfg)),
             cfg_interval=tuple(interval_of("cfg_interval", i) for i in pairs),
             device=None if self.device is None else str(self.device))

    def points(self) -> list[tuple[int | None, SamplerSettings]]:
        """(EMA index, sampler settings) of every sweep point, EMA outermost."""
        return [(ema, replace(self.sampling, cfg_scale=scale, cfg_interval=interval))
                for ema in self.ema for scale in self.cfg for interval in self.cfg_interval]

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-ready: the keys are `jitlab eval`'s flags (and a grid file's ``eval:`` keys)."""
        flat = {f.name: _plain(getattr(part, f.name)) for part in (self.score, self.sampling) for f in fields(part)
                if f.name not in _SWEPT}
        return {**flat, "ema": list(self.ema), "cfg": list(self.cfg),
                "cfg_interval": [list(i) for i in self.cfg_interval], "device": self.device}

    @classmethod
    def from_dict(cls, flat: dict[str, Any], where: str = "") -> EvalSettings:
        """From the flat keys (unknown ones refused); a bad value's error names ``where`` (a file) and the key."""
        prefix = f"{where}: " if where else ""
        score_keys = {f.name for f in fields(ScoreSettings)}
        sampler_keys = {f.name for f in fields(SamplerSettings)} - _SWEPT
        own = {"ema", "cfg", "cfg_interval", "device"}
        unknown = sorted(set(flat) - score_keys - sampler_keys - own)
        if unknown:
            raise ConfigError(f"{prefix}{unknown[0]}", f"not an evaluation setting; valid: "
                                                       f"{', '.join(sorted(score_keys | sampler_keys | own))}")
        try:
            return cls(ScoreSettings(**{k: v for k, v in flat.items() if k in score_keys}),
                       SamplerSettings(**{k: v for k, v in flat.items() if k in sampler_keys}),
                       **{k: v for k, v in flat.items() if k in own})
        except ConfigError as error:
            raise ConfigError(f"{prefix}{error.field}", message_of(error)) from None

    @staticmethod
    def read_dict(path: str | Path) -> dict[str, Any]:
        """The flat, unchecked settings of the JSON file ``--settings`` names (``dump`` wrote it)."""
        try:
            flat = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"--settings {path}", f"not a readable JSON file ({type(error).__name__}); "
                                                    "expected the evaluation settings a grid writes") from None
        if not isinstance(flat, dict):
            raise ConfigError(f"--settings {path}", "must hold one JSON object of evaluation settings")
        return flat

    @classmethod
    def load(cls, path: str | Path) -> EvalSettings:
        return cls.from_dict(cls.read_dict(path), where=str(path))

    def dump(self, path: str | Path) -> Path:
        from jitlab.atomic import write_json

        write_json(Path(path), self.to_dict())
        return Path(path)


@dataclass(frozen=True)
class SampleSettings:
    """What `jitlab sample` makes: ``num_images`` images of EMA ``ema`` with ``sampling``.

    Args:
        num_images: number of images.
        classes: labels to cycle through (None: balanced over all classes, label = index mod classes).
        ema: EMA index (0 = the first decay), 1, or none for the raw weights.
        batch_size: images per forward.
    """

    num_images: int = 40
    classes: tuple[int, ...] | None = None
    ema: int | None = 0
    batch_size: int = 64
    sampling: SamplerSettings = field(default_factory=SamplerSettings)

    def __post_init__(self) -> None:
        if self.classes and not all(isinstance(c, int) and not isinstance(c, bool) for c in self.classes):
            raise ConfigError("classes", f"class labels are whole numbers, got {list(self.classes)}")
        classes = tuple(self.classes) if self.classes else None  # their range is the model's: checked with it
        _set(self, num_images=_whole("num_images", self.num_images, 1), classes=classes,
             ema=ema_of("ema", self.ema), batch_size=_whole("batch_size", self.batch_size, 1))


def message_of(error: ConfigError) -> str:
    """A ConfigError's message without its field (to name the field another way, e.g. as a flag)."""
    return str(error).removeprefix(f"{error.field}: ")


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value

