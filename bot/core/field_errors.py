"""Pydantic validation errors as field problems in the reader's language.

Pydantic words its messages in English; a refusal must be in one language, so each error
type it reports is mapped to a catalog message (`field_error.<type>`), with its limits
(`min_length`, `ge`, ...) as parameters. A type without its own message reads as
`field_error.other`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bot.core.i18n import Translator

# pydantic error type -> catalog key suffix; types not listed read as "other"
KNOWN = {
    "missing": "missing",
    "extra_forbidden": "extra",
    "string_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "list",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "too_short": "too_few",
    "too_long": "too_many",
    "greater_than_equal": "at_least",
    "greater_than": "more_than",
    "less_than_equal": "at_most",
    "less_than": "less_than",
    "literal_error": "one_of",
    "enum": "one_of",
    "string_pattern_mismatch": "pattern",
    "timezone_aware": "timezone",
    "datetime_type": "datetime",
    "datetime_parsing": "datetime",
    "datetime_from_date_parsing": "datetime",
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """The dotted path of a field (`body` for the body itself)."""
    return ".".join(str(part) for part in loc) or "body"


def field_problems(
    exc: ValidationError,
    t: Translator,
    path: Callable[[tuple[int | str, ...]], str] = field_path,
) -> list[dict[str, str]]:
    """One {"field", "message"} per error, the message from the catalog of t's language."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        kind = KNOWN.get(error["type"], "other")
        params: dict[str, Any] = dict(error.get("ctx") or {})
        params = {k: v for k, v in params.items() if isinstance(v, str | int | float)}
        problems.append(
            {"field": field_path(error["loc"]), "message": t(f"field_error.{kind}", **params)}
        )
    return problems
