"""Class subsets of ImageNet: the first N classes, a list file of WordNet ids, or a list shipped here.

Shipped lists (``NAME.txt`` beside this file, one WordNet id a line, ``#`` comments, the source at the top):
``imagenette`` (the 10 classes of fastai's ImageNette) and ``imagenet100`` (ImageNet-100 of Tian et al.,
Contrastive Multiview Coding). Checkpoints record the selected names (:func:`checkpoint_classes`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Union

from jitlab.errors import ConfigError

# a class subset: N (the first N classes), a list file or a shipped list's name, a list of names, or None (all)
Classes = Union[int, str, list[str], None]
STATE_KEY = "ImageNetDataModule"  # where Lightning puts the data module's state_dict in a checkpoint (its class name)


def shipped_class_lists() -> dict[str, Path]:
    """The class lists shipped with jitlab (the package data ``jitlab/core/data/subsets/NAME.txt``) by NAME."""
    folder = resources.files(__name__)
    return {entry.name[:-4]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".txt")}


def read_class_list(spec: str, field: str = "data.classes") -> tuple[list[str], str]:
    """The WordNet ids of the list file ``spec`` (or of the shipped list of that name) and the file's path."""
    shipped = shipped_class_lists()
    path = shipped.get(spec) or Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(field, f"{spec!r} is neither a class list file (one WordNet id a line) nor a shipped "
                                 f"list ({', '.join(sorted(shipped))})")
    wnids: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if len(words) > 1:
            raise ConfigError(field, f"{path}:{number}: one WordNet id a line, got {' '.join(words)!r}")
        if words and words[0] in wnids:
            raise ConfigError(field, f"{path}:{number}: {words[0]} is listed twice")
        wnids += words
    if not wnids:
        raise ConfigError(field, f"{path} lists no WordNet ids (one a line, '#' starts a comment)")
    return wnids, str(path)


def select_classes(available: list[str], classes: Classes, where: str, field: str = "data.classes") -> list[str]:
    """The names ``classes`` selects from ``available`` (the sorted class names of ``where``), sorted.

    ``None``: all; an int N: the first N; a string: a list file or a shipped list; a list: those names (how a
    checkpoint records its subset). Sorted, because labels are positions in the result: a subset keeps ImageNet-1k's
    label order (its sorted folder names), the first-N and list forms agree, and a list file's line order is moot.
    """
    if classes is None:
        return list(available)
    if isinstance(classes, bool) or not isinstance(classes, (int, str, list, tuple)):
        raise ConfigError(field, f"got {classes!r}; valid: a number of classes, a list file of WordNet ids, "
                                 f"a shipped list ({', '.join(sorted(shipped_class_lists()))}) or null (all)")
    if isinstance(classes, int):
        if not 1 <= classes <= len(available):
            raise ConfigError(field, f"is {classes} but {where} has {len(available)} classes; "
                                     f"choose 1..{len(available)}")
        return list(available[:classes])
    if isinstance(classes, str):
        wnids, origin = read_class_list(classes, field)
    else:
        wnids, origin = [str(name) for name in classes], "the given class list"
        if not wnids or len(set(wnids)) != len(wnids):
            raise ConfigError(field, f"{origin} must name each class once, got {wnids[:5]}")
    known = set(available)
    missing = [name for name in wnids if name not in known]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(field, f"{missing[0]}{more} of {origin} is not a class of {where}")
    return sorted(wnids)


def checkpoint_classes(ckpt: dict[str, Any]) -> list[str] | None:
    """The class names, in label order, that a checkpoint trained on ImageNet records; None for other data."""
    recorded = (ckpt.get(STATE_KEY) or {}).get("classes")
    return [str(name) for name in recorded] if isinstance(recorded, (list, tuple)) else None
