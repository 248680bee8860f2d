"""The grid file's optional ``history:``: every change to the design made after a run, typed and checked at load.

    history:
      - date: 2026-11-30          # when the change was made (YYYY-MM-DD; the commit's date)
        commit: 9708dfe           # optional: the commit that made it (7-40 hex digits)
        what: mini (b) moved from 16x16/p4 to 8x8/p2
        why: the mini should keep the ratio the table is about
        shown: the nine (b) cells had spread 4.63x (max/min), eps-pred worst   # what the run had shown

A choice made after seeing a result can be fitted to it: the report prints each entry, so a reader knows which
choices came after which results.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from jitlab.errors import ConfigError

_REQUIRED = ("date", "what", "why", "shown")
_KEYS = {*_REQUIRED, "commit"}
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class Change:
    """One change to a grid's design made after a run: when, what, why, and what the run had shown."""

    date: datetime.date
    what: str
    why: str
    shown: str
    commit: str | None = None

    def text(self) -> str:
        """One sentence for a report: '2026-11-30 (9708dfe): WHAT. Why: WHY. The run before had shown: SHOWN.'"""
        when = self.date.isoformat() + (f" ({self.commit})" if self.commit else "")
        return (f"{when}: {_sentence(self.what)} Why: {_sentence(self.why)} "
                f"The run before had shown: {_sentence(self.shown)}")


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def parse_history(raw: Any, where: str) -> list[Change]:
    """``history:`` of a grid file -> typed changes, as written; a bad entry fails naming the entry and its key."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(where, f"must be a list of changes (mappings with {', '.join(_REQUIRED)}), "
                                 f"got {type(raw).__name__}")
    changes = []
    for i, body in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(body, dict):
            raise ConfigError(at, f"a change is a mapping with {', '.join(_REQUIRED)} (and optionally commit)")
        unknown = sorted(set(map(str, body)) - _KEYS)
        if unknown:
            raise ConfigError(f"{at}.{unknown[0]}", f"unknown key; valid: {', '.join(sorted(_KEYS))}")
        absent = [key for key in _REQUIRED if key not in body]
        if absent:
            raise ConfigError(f"{at}.{absent[0]}", f"is required (a change records {', '.join(_REQUIRED)})")
        texts = {key: _text(body[key], f"{at}.{key}") for key in ("what", "why", "shown")}
        commit = body.get("commit")
        if commit is not None and not (isinstance(commit, str) and _COMMIT.match(commit)):
            raise ConfigError(f"{at}.commit", f"must be a commit id (7-40 lowercase hex digits), got {commit!r}")
        changes.append(Change(_date(body["date"], f"{at}.date"), commit=commit, **texts))
    return changes


def _date(value: Any, where: str) -> datetime.date:
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2026-11-30 as a date
        return value.date() if isinstance(value, datetime.datetime) else value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(where, f"must be a date YYYY-MM-DD, got {value!r}") from None


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"must be a non-empty string, got {value!r}")
    return " ".join(value.split())
