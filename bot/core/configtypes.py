"""Shared building blocks of configuration models: the section base, durations, times, URLs."""

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

MAX_DURATION = timedelta(days=3650)

_DURATION_UNITS = (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_DURATION_RE = re.compile("".join(f"(?:([0-9]+){unit})?" for unit, _ in _DURATION_UNITS), re.ASCII)
_DURATION_HINT = "use e.g. 30m, 2h, 1d, 1h30m"
_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*", re.ASCII)
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+", re.ASCII)
_SHOWN_CHARS = 40


def _show(value: object) -> str:
    """Render a value from the file briefly, TOML-style where it matters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS:
            return repr(value[:_SHOWN_CHARS] + "…")
        return repr(value)
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _toml_type(value: object) -> str:
    """Name the TOML type of a parsed value."""
    names: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (tuple, "array"),
        (dict, "table"),
        (datetime, "date-time"),
        (date, "date"),
        (time, "time"),
    )
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def parse_duration(value: object) -> timedelta:
    """Parse "90s", "30m", "2h", "1d", "1w", "1h30m" or whole seconds into a positive timedelta."""
    if isinstance(value, timedelta):
        if value % timedelta(seconds=1):
            raise ValueError("durations must be whole seconds")
        seconds = value // timedelta(seconds=1)
        shown = format_duration(value) if value > timedelta(0) else str(seconds)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds, shown = value, str(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if not value or match is None:
            raise ValueError(f"invalid duration {_show(value)} ({_DURATION_HINT})")
        groups = match.groups()
        if any(group is not None and len(group) > 12 for group in groups):
            raise ValueError(f"duration {_show(value)} is too long (at most 3650d)")
        seconds = sum(
            int(group) * size
            for group, (_, size) in zip(groups, _DURATION_UNITS, strict=True)
            if group is not None
        )
        shown = _show(value)
    else:
        raise ValueError(f"expected a duration ({_DURATION_HINT}), got {_toml_type(value)}")
    if seconds <= 0:
        raise ValueError(f"duration {shown} must be positive")
    if seconds > MAX_DURATION // timedelta(seconds=1):
        raise ValueError(f"duration {shown} is too long (at most 3650d)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the compact form parse_duration reads, e.g. "1h30m"."""
    remaining = value // timedelta(seconds=1)
    parts: list[str] = []
    for unit, size in _DURATION_UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _parse_date(value: object) -> object:
    """Accept a TOML date or a "YYYY-MM-DD" string; leave other types to the type check."""
    if isinstance(value, datetime):
        raise ValueError("expected a date (YYYY-MM-DD), got date-time")
    if isinstance(value, str):
        try:
            if _DATE_RE.fullmatch(value) is None:
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"invalid date {_show(value)} (use YYYY-MM-DD)") from None
    return value


CalendarDate = Annotated[date, BeforeValidator(_parse_date)]


def _parse_clock(text: str) -> time:
    match = _CLOCK_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid time {_show(text)} (use HH:MM, e.g. 09:00)")
    return time(int(match.group(1)), int(match.group(2)))


def _parse_span(text: str) -> tuple[time, time]:
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return _parse_clock(start), _parse_clock(end)
    except ValueError:
        raise ValueError(
            f"invalid time range {_show(text)} (use HH:MM-HH:MM, e.g. 08:30-17:30)"
        ) from None


def _format_span(span: tuple[time, time]) -> str:
    return f"{span[0]:%H:%M}-{span[1]:%H:%M}"


def _clock_from_toml(value: object) -> object:
    """Accept a TOML local time such as 09:00 as well as the string "09:00"."""
    if isinstance(value, time):
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError(f"invalid time {value.isoformat()} (use HH:MM, e.g. 09:00)")
        return f"{value:%H:%M}"
    return value


def _in_span(span: tuple[time, time], moment: time) -> bool:
    start, end = span
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def http_url_problem(value: str, *, allow_query: bool) -> str | None:
    """Say what is wrong with an http(s) URL, without echoing it."""
    expected = "expected an http:// or https:// URL with a host"
    if any(char.isspace() for char in value):
        return f"{expected} (no spaces)"
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return expected
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return expected
    if parts.fragment or (parts.query and not allow_query):
        return f"{expected}, without {'a fragment' if allow_query else 'a query or fragment'}"
    return None


def check_env_name(value: str) -> str:
    if _ENV_NAME_RE.fullmatch(value) is None:
        raise ValueError("expected an environment variable name (letters, digits and _)")
    return value


class ConfigSection(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen and strictly typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """List (key, reason) pairs for environment variables this section needs but lacks."""
        return []


def _base_url(value: str) -> str:
    problem = http_url_problem(value, allow_query=False)
    if problem is not None:
        raise ValueError(problem)
    return value.rstrip("/")


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# An http(s) base URL without query (a trailing slash is dropped), the name of an
# environment variable that holds a secret, and a string that is not only white space.
BaseUrl = Annotated[str, AfterValidator(_base_url)]
EnvName = Annotated[str, AfterValidator(check_env_name)]
NonBlank = Annotated[str, AfterValidator(_non_blank)]


def unset_variable(environ: Mapping[str, str], name: str) -> str | None:
    """Why an environment variable cannot be used ("is not set", "is empty"), or None."""
    if environ.get(name):
        return None
    return "is not set" if name not in environ else "is empty"


def missing_variables(
    environ: Mapping[str, str], fields: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(key, reason) for each field whose environment variable is unset or empty."""
    problems = []
    for key, name in fields.items():
        state = unset_variable(environ, name)
        if state is not None:
            problems.append((key, f"environment variable {name} {state}"))
    return problems
