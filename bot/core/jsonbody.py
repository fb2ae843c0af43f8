"""JSON bodies in which no object names a key twice: one reading for every JSON surface.

JSON leaves a repeated key undefined, and parsers disagree (Python's json and pydantic keep
the last value, others the first), so a body with two `title`s could be read one way here and
another way by a proxy, a log or the sender's own records. Every endpoint that accepts JSON
refuses such a body with 400 `duplicate_key` before reading anything from it.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """An object in the body names one key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one object")
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


def loads(raw: bytes | str) -> Any:
    """The JSON value of raw; DuplicateKey for a repeated key, ValueError for anything that is
    not JSON."""
    try:
        return json.loads(raw, object_pairs_hook=_unique)
    except DuplicateKey:
        raise
    except (ValueError, RecursionError) as exc:
        raise ValueError("not JSON") from exc


def check_unique_keys(raw: bytes | str) -> None:
    """Raise DuplicateKey when an object in raw names a key twice; anything else (including
    text that is not JSON at all) is left to the caller's own parser and its errors."""
    try:
        loads(raw)
    except DuplicateKey:
        raise
    except ValueError:
        pass
