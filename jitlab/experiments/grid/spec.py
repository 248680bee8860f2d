"""Grid specs: one YAML per paper table under ``experiments/grids/``, expanded into cells.

A spec names a base config per scale, the axes whose product gives the cells, each cell's evaluation (its
scale's scoring in ``experiments/scales/eval.yaml`` with the grid's differences) and the paper's values. A cell's
config is the base YAML with the scale's and the axis values' dotted-key overrides: what `jitlab fit --config` reads.

Axis forms::

    pred: {key: model.flow.pred, values: [x, eps, v]}          # the value goes to `key`
    setting:                                                    # named values with their own overrides
      values:
        a: {label: "(a) high patch dimension", set: {...}, mini: {...}, paper: {...}}
      scale_values: {mini: [a]}                                 # optional: the values a scale runs
    model: {values: {B: {paper: {config: experiments/recipes/jit-b-16-256.yaml}}}}   # `config: FILE` in any
                                                                # overrides applies that file there, as --config
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from jitlab.errors import ConfigError
from jitlab.experiments.grid.figures import Figure, LogCurveFigure, WidthFigure, parse_figures  # noqa: F401
from jitlab.experiments.grid.history import Change, parse_history
from jitlab.identity import content_config
from jitlab.core.settings import EvalSettings

SCALES: tuple[str, ...] = ("mini", "lab", "paper")  # CPU minutes; one GPU and an ImageNet subset; the paper
GRID_DIR = Path("experiments/grids")
SCALE_EVAL = Path("experiments/scales/eval.yaml")  # each scale's scoring defaults; a grid's `eval:` holds differences

_SPEC_KEYS = {"name", "title", "claim", "paper_metric", "paper_note", "layout", "axes", "scales", "paper", "rules",
              "figures", "history"}
_SCALE_KEYS = {"config", "set", "eval", "why", "data", "metric_note", "train_seeds"}
_EVAL_KEYS = {"features", "num_images", "sampler", "steps", "cfg", "cfg_interval", "ema", "seed", "batch_size",
              "ref_stats", "ref_images", "inception_score", "final_step", "precision", "score_resolution"}
_VALUE_KEYS = {"label", "set", *SCALES}


@dataclass(frozen=True)
class AxisValue:
    name: str
    label: str
    overrides: dict[str, dict[str, Any]]  # scale -> {dotted key: value}; "*" for every scale


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]
    scale_values: dict[str, tuple[str, ...]]

    def for_scale(self, scale: str) -> tuple[AxisValue, ...]:
        wanted = self.scale_values.get(scale)
        if wanted is None:
            return self.values
        return tuple(v for name in wanted for v in self.values if v.name == name)


@dataclass
class Cell:
    """One run of a grid at one scale."""

    grid: str
    scale: str
    labels: dict[str, str]  # axis -> value name, in axis order
    config: dict[str, Any]  # the full `jitlab fit` config
    eval: dict[str, Any]
    paper_value: float | None
    paper_metric: str | None
    train_seed: int = 0  # the training seed (`seed_everything`): model init, training noise, data order

    @property
    def id(self) -> str:
        """``axis-value_...``; a training seed K > 0 adds ``_seed-K`` (seed 0 keeps the plain id)."""
        base = "_".join(f"{axis}-{value}" for axis, value in self.labels.items())
        return base if self.train_seed == 0 else f"{base}_seed-{self.train_seed}"

    @property
    def config_hash(self) -> str:
        """The cell's identity: its config and evaluation, without where the data live (jitlab.identity)."""
        text = json.dumps({"config": content_config(self.config), "eval": self.eval}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class GridSpec:
    name: str
    title: str
    claim: str
    paper_metric: str | None
    paper_note: str
    layout: dict[str, Any]
    axes: tuple[Axis, ...]
    scales: dict[str, dict[str, Any]]
    paper: list[dict[str, Any]]
    path: Path
    root: Path = field(default=Path("."))  # paths in the spec are relative to the project root
    rules: list[Any] = field(default_factory=list)  # the verdict's declared rules (jitlab.experiments.report.rules)
    figures: list[Figure] = field(default_factory=list)  # extra report figures (jitlab.experiments.grid.figures)
    history: list[Change] = field(default_factory=list)  # changes made after a run (jitlab.experiments.grid.history)

    # -- cells ------------------------------------------------------------------------------
    def train_seeds(self, scale: str) -> int:
        """How many training seeds the grid file asks for at ``scale`` (``scales.SCALE.train_seeds``, default 1)."""
        return int(self.scales.get(scale, {}).get("train_seeds", 1))

    def cells(self, scale: str, extra: dict[str, Any] | None = None, train_seeds: int | None = None) -> list[Cell]:
        """Every cell of the grid at ``scale``, under each training seed 0 .. ``train_seeds`` - 1 (default: the grid
        file's ``train_seeds``), seed-major (every cell's seed 0 first); ``extra`` (dotted keys) is applied last."""
        if scale not in self.scales:
            raise ConfigError("--scale",
                              f"grid {self.name!r} has no scale {scale!r}; it has {', '.join(self.scales)}")
        count = self.train_seeds(scale) if train_seeds is None else int(train_seeds)
        if count < 1:
            raise ConfigError("--train_seeds", f"must be >= 1, got {count}")
        cells = self._cells(scale, extra)
        seeded = []
        for seed, cell in itertools.product(range(1, count), cells):
            config = copy.deepcopy(cell.config)
            config["seed_everything"] = int(config.get("seed_everything") or 0) + seed
            seeded.append(replace(cell, config=config, train_seed=seed))
        return cells + seeded

    def _cells(self, scale: str, extra: dict[str, Any] | None) -> list[Cell]:
        setting = self.scales[scale]
        base = load_config(self.root / setting["config"])
        cells = []
        for combo in itertools.product(*(axis.for_scale(scale) for axis in self.axes)):
            # the cell = base <- scale's set <- each axis value's overrides <- --set; "eval.*" keys
            # go to the evaluation settings instead of the fit config
            cell_doc = {"config": copy.deepcopy(base), "eval": copy.deepcopy(setting.get("eval", {}))}
            layers = [(setting.get("set", {}), f"{self.path}: scales.{scale}.set")]
            for axis, value in zip(self.axes, combo):
                layers += [(value.overrides.get(where, {}), f"{self.path}: axes.{axis.name}.values.{value.name}")
                           for where in ("*", scale)]
            layers.append((extra or {}, "--set"))
            for overrides, where in layers:
                overrides = dict(overrides)
                include = overrides.pop("config", None)  # a recipe applied here, as `jitlab fit --config FILE`
                if include is not None:
                    recipe = load_config(self.root / include)
                    merge_config(cell_doc["config"], recipe)
                    cell_doc["eval"].update(recipe_eval(recipe))  # the recipe owns its scoring
                routed = {(k if str(k).startswith("eval.") else f"config.{k}"): v for k, v in overrides.items()}
                apply_overrides(cell_doc, routed, where)
            _check_keys(cell_doc["eval"], _EVAL_KEYS, f"{self.path}: eval of scale {scale}")
            labels = {axis.name: value.name for axis, value in zip(self.axes, combo)}
            cell = Cell(self.name, scale, labels, cell_doc["config"], cell_doc["eval"], self.paper_value(labels),
                        self.paper_metric)
            EvalSettings.from_dict(cell.eval, where=f"{self.path}: eval of cell {cell.id}")  # fail at load
            cells.append(cell)
        return cells

    def paper_value(self, labels: dict[str, str]) -> float | None:
        for row in self.paper:
            keys = {k: str(v) for k, v in row.items() if k != "value"}
            if all(labels.get(k) == v for k, v in keys.items()) and set(keys) <= set(labels):
                return float(row["value"]) if row["value"] is not None else None
        return None

    def label_of(self, axis: str, value: str) -> str:
        return next((v.label for a in self.axes if a.name == axis for v in a.values if v.name == value), value)


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(str(path), "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(str(path), f"is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must hold a mapping at the top level")
    return data


def load_config(path: Path) -> dict[str, Any]:
    """A `jitlab fit` config file with its include resolved, as jsonargparse reads it: a top-level
    ``config: FILE`` (relative to the including file) is read first, the file's dotted keys are set over it."""
    # Not through jsonargparse itself: the fit parser's parse_path fills in every class's defaults (a cell's config
    # hash would change with any default in the code), and a parser without the fit's arguments refuses the keys.
    data = load_yaml(path)
    include = data.pop("config", None)
    if include is None:
        return data
    nested = sorted(str(k) for k, v in data.items() if "." not in str(k) and isinstance(v, dict))
    if nested:  # jsonargparse would replace the included file's whole section by the defaults plus this mapping
        raise ConfigError(str(path), f"beside `config: {include}` write overrides as dotted keys "
                                     f"(model.net.init_args.depth: 32), not the mapping(s) {', '.join(nested)}")
    config = load_config(path.parent / include)
    apply_overrides(config, data, str(path))
    return config


def recipe_eval(config: dict[str, Any]) -> dict[str, Any]:
    """A recipe's ``evaluation.*`` (the scoring `jitlab fit` would do) as a grid cell's eval keys: its one point
    ``cfg_scale`` / ``cfg_interval`` becomes a sweep of one, the other keys keep their names."""
    evaluation = dict(config.get("evaluation") or {})
    if "cfg_scale" in evaluation:
        evaluation["cfg"] = [evaluation.pop("cfg_scale")]
    if "cfg_interval" in evaluation:
        evaluation["cfg_interval"] = [evaluation["cfg_interval"]]
    return {k: v for k, v in evaluation.items() if k in _EVAL_KEYS}


def merge_config(config: dict[str, Any], other: dict[str, Any]) -> None:
    """Set every value of ``other`` in ``config``, mapping into mapping (a second `--config FILE`)."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_config(config[key], value)
        else:
            config[key] = copy.deepcopy(value)


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Set each dotted key (``model.net.init_args.patch_size``) of ``overrides`` in ``config``."""
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        node = config
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(where, f"cannot set {dotted!r}: {part!r} is not a mapping")
        node[parts[-1]] = copy.deepcopy(value)


def _check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        raise ConfigError(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                 f"valid: {', '.join(sorted(allowed))}")


def _parse_axis(name: str, raw: Any, where: str) -> Axis:
    if not isinstance(raw, dict) or "values" not in raw:
        raise ConfigError(f"{where}.{name}", "an axis is a mapping with 'values' (and optionally 'key')")
    _check_keys(raw, {"key", "values", "scale_values"}, f"{where}.{name}")
    key = raw.get("key")
    values: list[AxisValue] = []
    raw_values = raw["values"]
    if isinstance(raw_values, list):
        if key is None:
            raise ConfigError(f"{where}.{name}", "a list of values needs 'key' (the dotted config key they set)")
        raw_values = {str(v): {} for v in raw_values}  # each name is read back as YAML for `key`
    for value_name, body in raw_values.items():
        body = body or {}
        vwhere = f"{where}.{name}.values.{value_name}"
        _check_keys(body, _VALUE_KEYS, vwhere)
        overrides = {"*": dict(body.get("set", {}))}
        if key is not None and key not in overrides["*"]:  # the name read back as YAML: none -> None, 16 -> 16
            overrides["*"][key] = None if value_name.lower() == "none" else yaml.safe_load(value_name)
        for scale in SCALES:
            if scale in body:
                overrides[scale] = dict(body[scale] or {})
        values.append(AxisValue(str(value_name), str(body.get("label", value_name)), overrides))
    names = [v.name for v in values]
    scale_values = {}
    for scale, wanted in (raw.get("scale_values") or {}).items():
        if scale not in SCALES:
            raise ConfigError(f"{where}.{name}.scale_values", f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
        wanted = tuple(str(w) for w in wanted)
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ConfigError(f"{where}.{name}.scale_values.{scale}", f"unknown value(s) {missing}; axis has {names}")
        scale_values[scale] = wanted
    return Axis(name, tuple(values), scale_values)


def load_spec(name_or_path: str | Path, root: Path | None = None) -> GridSpec:
    """Load ``experiments/grids/NAME.yaml`` (or a path) and check its structure."""
    root = Path(root) if root is not None else project_root()
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = root / GRID_DIR / f"{name_or_path}.yaml"
    elif not path.is_absolute():
        path = root / path
    if not path.exists():
        known = ", ".join(list_grids(root)) or "none"
        raise ConfigError("grid", f"no grid file {path} (grids: {known})")
    raw = load_yaml(path)
    _check_keys(raw, _SPEC_KEYS, str(path))
    for required in ("name", "axes", "scales"):
        if required not in raw:
            raise ConfigError(f"{path}: {required}", "is required")
    scales = {}
    for scale, body in raw["scales"].items():
        if scale not in SCALES:
            raise ConfigError(f"{path}: scales.{scale}", f"unknown scale; valid: {', '.join(SCALES)}")
        _check_keys(body, _SCALE_KEYS, f"{path}: scales.{scale}")
        if "config" not in body:
            raise ConfigError(f"{path}: scales.{scale}.config", "is required (the base YAML of this scale)")
        _check_keys(body.get("eval") or {}, _EVAL_KEYS, f"{path}: scales.{scale}.eval")
        merged = {**scale_eval(root, scale), **(body.get("eval") or {})}
        body = {**body, "eval": {k: v for k, v in merged.items() if v is not None}}  # `key: null` drops a default
        seeds = body.get("train_seeds", 1)
        if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
            raise ConfigError(f"{path}: scales.{scale}.train_seeds", f"must be a whole number >= 1, got {seeds!r}")
        scales[scale] = body
    axes = tuple(_parse_axis(str(name), body, f"{path}: axes") for name, body in raw["axes"].items())
    figures = parse_figures(raw.get("figures"), {a.name: [v.name for v in a.values] for a in axes}, f"{path}: figures")
    return GridSpec(
        name=str(raw["name"]), title=str(raw.get("title", raw["name"])), claim=str(raw.get("claim", "")).strip(),
        paper_metric=raw.get("paper_metric"), paper_note=str(raw.get("paper_note", "")).strip(),
        layout=dict(raw.get("layout", {})), axes=axes, scales=scales, paper=list(raw.get("paper", [])),
        path=path, root=root, rules=raw.get("rules") or [], figures=figures,
        history=parse_history(raw.get("history"), f"{path}: history"),
    )


def scale_eval(root: Path, scale: str) -> dict[str, Any]:
    """A scale's scoring defaults (``experiments/scales/eval.yaml``; none when the root has no such file)."""
    path = root / SCALE_EVAL
    defaults = (load_yaml(path).get(scale) or {}) if path.exists() else {}
    _check_keys(defaults, _EVAL_KEYS, f"{path}: {scale}")
    return defaults


def project_root() -> Path:
    """The directory holding ``experiments/grids``: the working directory or one of its parents, else the checkout
    this jitlab is installed from (so `jitlab grid list | plan | run` and `jitlab report` find the grids anywhere)."""
    here = Path.cwd().resolve()
    checkout = Path(__file__).resolve().parents[3]
    for candidate in (here, *here.parents, checkout):
        if (candidate / GRID_DIR).is_dir():
            return candidate
    return here


def list_grids(root: Path | None = None) -> list[str]:
    root = Path(root) if root is not None else project_root()
    return sorted(p.stem for p in (root / GRID_DIR).glob("*.yaml"))
