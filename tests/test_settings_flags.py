"""`jitlab sample` / `jitlab eval` flags are made from the settings dataclasses: a field is a flag, typed by its
annotation, documented by its class's ``Args:``, defaulted by the settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from enum import Enum

import pytest

from jitlab.commands import evaluate, sample
from jitlab.commands.settings_flags import add_settings_flags, field_docs
from jitlab.core.settings import EvalSettings, SampleSettings, SamplerSettings, ScoreSettings


class Colour(str, Enum):
    red = "red"
    blue = "blue"


@dataclass(frozen=True)
class Toy:
    """A toy.

    Args:
        count: how many
            of them.
        scales: numbers.
        pair: two numbers.
        labels: labels or none.
        colour: a colour.
        loud: say it.
        side: a side or none.
    """

    count: int = 3
    scales: tuple[float, ...] = (1.0,)
    pair: tuple[float, float] = (0.0, 1.0)
    labels: tuple[int, ...] | None = None
    colour: Colour = Colour.red
    loud: bool = False
    side: int | None = None


def toy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_settings_flags(p, Toy, [f.name for f in fields(Toy)], {"loud": "--shout"})
    return p


def test_a_fields_type_default_and_doc_make_its_flag():
    args = toy_parser().parse_args(["--count", "4", "--scales", "1", "2.5", "--pair", "0.1", "0.9", "--labels",
                                    "--colour", "blue", "--shout", "--side", "none"])
    assert vars(args) == {"count": 4, "scales": [1.0, 2.5], "pair": [0.1, 0.9], "labels": [], "colour": "blue",
                          "loud": True, "side": "none"}  # text the settings parse (none) stays text
    assert vars(toy_parser().parse_args([])) == {}  # not given: the settings supply the default
    help = toy_parser().format_help()
    assert "how many of them (default: 3)" in help and "{red,blue}" in help and "two numbers (default: 0.0 1.0)" in help
    with pytest.raises(SystemExit):
        toy_parser().parse_args(["--count", "many"])


def test_every_settings_field_is_a_documented_flag_of_its_verb():
    for settings in (SamplerSettings, ScoreSettings, SampleSettings, EvalSettings):
        own = {f.name for f in fields(settings)} - {"score", "sampling"}
        assert own <= set(field_docs(settings)), settings.__name__
    eval_flags = {a.dest for a in evaluate.build_parser()._actions}
    sample_flags = {a.dest for a in sample.build_parser()._actions}
    assert {f.name for f in fields(ScoreSettings)} | {"ema", "cfg", "cfg_interval", "device", "steps"} <= eval_flags
    assert {f.name for f in fields(SamplerSettings)} | {"num_images", "classes", "ema", "batch_size"} <= sample_flags
    assert "cfg_scale" not in eval_flags  # eval sweeps --cfg instead


def test_a_field_without_a_doc_line_has_no_flag():
    @dataclass
    class Undocumented:
        """No Args section."""

        count: int = 1

    with pytest.raises(KeyError, match="count"):
        add_settings_flags(argparse.ArgumentParser(), Undocumented, ["count"])
