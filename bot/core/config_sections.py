"""Workbot configuration: a TOML file validated into frozen pydantic models."""

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from bot.core.configtypes import (
    _BARE_KEY_RE,
    _URL_SCHEME_RE,
    BaseUrl,
    CalendarDate,
    ConfigSection,
    Duration,
    EnvName,
    NonBlank,
    _clock_from_toml,
    _format_span,
    _in_span,
    _parse_clock,
    _parse_span,
    _show,
    _toml_type,
    check_env_name,
    http_url_problem,
    unset_variable,
)
from bot.core.configtypes import MAX_DURATION as MAX_DURATION
from bot.core.configtypes import format_duration as format_duration
from bot.core.configtypes import parse_duration as parse_duration

CONFIG_ENV_VAR = "WORKBOT_CONFIG"
DEFAULT_CONFIG_NAME = "config.toml"
DEFAULTS_SOURCE = "<defaults>"
ENVIRONMENT_SOURCE = "<environment>"

Language = Literal["zh-CN", "en"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
DatabaseDriver = Literal["sqlite+aiosqlite", "postgresql+asyncpg"]

DATABASE_DRIVERS: tuple[DatabaseDriver, ...] = get_args(DatabaseDriver)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One reason a configuration is unusable, located by file and dotted key."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every reason found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__(list(problems))
        self.problems: list[ConfigProblem] = list(problems)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


def database_url_problem(url: str) -> str | None:
    """Say why a database URL is unsupported, naming at most its scheme; None when it is fine."""
    use = " or ".join(f"{driver}://" for driver in DATABASE_DRIVERS)
    scheme, sep, _ = url.partition("://")
    if not sep or _URL_SCHEME_RE.fullmatch(scheme) is None:
        return f"not a database url (use {use})"
    if scheme not in DATABASE_DRIVERS:
        return f"unsupported database url scheme {scheme!r}; use {use}"
    return None


class BotConfig(ConfigSection):
    """The [bot] section: language, time zone and the public base URL."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    language: Language = "zh-CN"
    timezone: str = "Asia/Shanghai"
    public_url: BaseUrl = "http://127.0.0.1:8080"
    names: tuple[str, ...] = Field(default=("workbot",), strict=False)
    ack_link_ttl: Duration = timedelta(days=14)
    link_secret_env: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown timezone {_show(value)}") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)


class ServerConfig(ConfigSection):
    """The [server] section: where the HTTP server listens."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: NonBlank = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    shutdown_timeout: Duration = timedelta(seconds=10)
    # A request head must arrive within header_timeout of the connection's opening (or of
    # the previous answer on a kept-alive connection); a body within body_timeout of its head.
    header_timeout: Duration = timedelta(seconds=10)
    body_timeout: Duration = timedelta(seconds=10)
    # Requests whose bodies are still arriving that one client address may have at once.
    slow_bodies_per_client: int = Field(default=8, ge=1, le=10_000)


class DatabaseConfig(ConfigSection):
    """The [database] section: the SQLAlchemy async URL, or the variable that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    url: str = "sqlite+aiosqlite:///workbot.db"
    url_env: str | None = None
    auto_migrate: bool = True
    # How long a SQLite writer waits for another connection's lock before the write is
    # refused as "database unavailable" (503).
    lock_timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _supported_url(cls, value: str) -> str:
        problem = database_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return None if value is None else check_env_name(value)

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """Check that the variable named by url_env, if any, holds a supported URL."""
        if self.url_env is None:
            return []
        value = environ.get(self.url_env)
        if not value:
            state = "is not set" if value is None else "is empty"
            reason = (
                f"environment variable {self.url_env} {state} "
                "(needed because database.url_env is set)"
            )
            return [("url_env", reason)]
        problem = database_url_problem(value)
        if problem is not None:
            return [("url_env", f"environment variable {self.url_env}: {problem}")]
        return []

    def resolved_url(self, environ: Mapping[str, str]) -> str:
        """Return the database URL, from the url_env variable when that is set."""
        if self.url_env is None:
            return self.url
        problems = self.environment_problems(environ)
        if problems:
            raise ConfigError(
                [ConfigProblem(ENVIRONMENT_SOURCE, f"database.{key}", why) for key, why in problems]
            )
        return environ[self.url_env]


class GroupConfig(ConfigSection):
    """The [group] section: the single official work group the bot serves."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    platform: str = "local"  # one of the platform list's names (checked by bot.config)
    chat_id: NonBlank = "main"


class EgovConfig(ConfigSection):
    """The [egov] section: the e-government API, on only when its secret variable is set."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    secret_env: EnvName = "WORKBOT_EGOV_SECRET"  # noqa: S105 - a variable's name, not a secret
    callback_url: str = ""
    max_skew_seconds: int = Field(default=300, ge=1, le=86_400)

    @field_validator("callback_url")
    @classmethod
    def _empty_or_http(cls, value: str) -> str:
        if value:
            problem = http_url_problem(value, allow_query=True)
            if problem is not None:
                raise ValueError(f"{problem}, or empty")
        return value

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """Require the secret when callbacks, which are signed with it, are configured."""
        state = unset_variable(environ, self.secret_env)
        if not self.callback_url or state is None:
            return []
        reason = (
            f"environment variable {self.secret_env} {state} "
            "(needed because egov.callback_url is set)"
        )
        return [("secret_env", reason)]

    def secret(self, environ: Mapping[str, str]) -> str | None:
        """Return the shared secret, or None when the e-gov API is off."""
        return environ.get(self.secret_env) or None


AUDIT_KEY_MIN_CHARS = 32


class AuditConfig(ConfigSection):
    """The [audit] section: the key of the audit chain's HMAC and the daily checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    key_env: EnvName | None = None
    checkpoint_at: Annotated[str, BeforeValidator(_clock_from_toml)] = "00:10"

    @field_validator("checkpoint_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        return f"{_parse_clock(value):%H:%M}"

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """Require the key's variable when key_env names one, and a key long enough."""
        if self.key_env is None:
            return []
        state = unset_variable(environ, self.key_env)
        if state is not None:
            reason = (
                f"environment variable {self.key_env} {state} (needed because audit.key_env is set)"
            )
            return [("key_env", reason)]
        length = len(environ[self.key_env])
        if length < AUDIT_KEY_MIN_CHARS:
            reason = (
                f"environment variable {self.key_env} holds {length} characters; an audit key "
                f"needs at least {AUDIT_KEY_MIN_CHARS} (e.g. python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
            return [("key_env", reason)]
        return []

    def key(self, environ: Mapping[str, str]) -> bytes | None:
        """The audit key (UTF-8 bytes of the variable named by key_env), or None when unset."""
        if self.key_env is None:
            return None
        return environ.get(self.key_env, "").encode() or None

    @property
    def checkpoint_time(self) -> time:
        """The local time of day the checkpoint is sent."""
        return _parse_clock(self.checkpoint_at)


class ScheduleConfig(ConfigSection):
    """The [schedule] section: working time, quiet hours, reminders and the calendar."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    working_hours: str = "08:30-17:30"
    quiet_hours: str = "22:00-07:00"
    digest_at: Annotated[str, BeforeValidator(_clock_from_toml)] = "09:00"
    remind_before: Annotated[tuple[Duration, ...], Field(strict=False)] = (
        timedelta(days=1),
        timedelta(hours=2),
    )
    reminders_per_person_per_day: int = Field(default=3, ge=0)
    escalate_after: Duration = timedelta(days=1)
    min_lead_time: Duration = timedelta(days=1)
    extra_holidays: Annotated[tuple[CalendarDate, ...], Field(strict=False)] = ()
    extra_workdays: Annotated[tuple[CalendarDate, ...], Field(strict=False)] = ()

    @field_validator("working_hours")
    @classmethod
    def _forward_span(cls, value: str) -> str:
        span = _parse_span(value)
        if span[0] >= span[1]:
            raise ValueError(f"must start before it ends, got {_show(value)}")
        return _format_span(span)

    @field_validator("quiet_hours")
    @classmethod
    def _any_span(cls, value: str) -> str:
        span = _parse_span(value)
        if span[0] == span[1]:
            raise ValueError(f"start and end must differ, got {_show(value)}")
        return _format_span(span)

    @field_validator("digest_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        return f"{_parse_clock(value):%H:%M}"

    @field_validator("extra_workdays")
    @classmethod
    def _not_also_holidays(cls, value: tuple[date, ...], info: ValidationInfo) -> tuple[date, ...]:
        holidays = set(info.data.get("extra_holidays", ()))
        both = sorted({day for day in value if day in holidays})
        if both:
            days = ", ".join(day.isoformat() for day in both)
            raise ValueError(f"{days} also in schedule.extra_holidays; a date can be only one")
        return value

    @property
    def working_hours_span(self) -> tuple[time, time]:
        """Working hours as (start, end), start before end."""
        return _parse_span(self.working_hours)

    @property
    def quiet_hours_span(self) -> tuple[time, time]:
        """Quiet hours as (start, end); end before start means they wrap past midnight."""
        return _parse_span(self.quiet_hours)

    @property
    def digest_time(self) -> time:
        """The local time of day the digest is sent."""
        return _parse_clock(self.digest_at)

    def in_working_hours(self, moment: time) -> bool:
        """Tell whether a local time of day falls within working hours."""
        return _in_span(self.working_hours_span, moment)

    def in_quiet_hours(self, moment: time) -> bool:
        """Tell whether a local time of day falls within quiet hours."""
        return _in_span(self.quiet_hours_span, moment)


class DeliveryConfig(ConfigSection):
    """The [delivery] section: how the outbox is sent and retried."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base: Duration = timedelta(seconds=2)
    backoff_cap: Duration = timedelta(minutes=15)
    lease: Duration = timedelta(seconds=60)
    batch: int = Field(default=50, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=256)


class LoggingConfig(ConfigSection):
    """The [logging] section: level and output format."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    level: LogLevel = "INFO"
    json_format: bool = Field(default=False, alias="json")


class CoreConfig(ConfigSection):
    """Every section but [platforms]: what the core needs. `bot.config.Config` adds the
    platforms' tables, whose models come from the platform list (one per adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    bot: BotConfig = Field(default_factory=BotConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    group: GroupConfig = Field(default_factory=GroupConfig)
    egov: EgovConfig = Field(default_factory=EgovConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def defaults(cls) -> Self:
        """Return the embedded defaults used when there is no config file."""
        return cls()

    @classmethod
    def platform_names(cls) -> tuple[str, ...]:
        """The platforms this model knows (none here; bot.config.Config has the list)."""
        return ()


C = TypeVar("C", bound=CoreConfig)


@dataclass(frozen=True, slots=True)
class LoadedConfig(Generic[C]):
    """A validated configuration and where it came from (a path or "<defaults>")."""

    config: C
    source: str


_EXPECTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "date_type": "a date (YYYY-MM-DD)",
    "time_type": "a time (HH:MM)",
    "float_type": "a number",
    "list_type": "an array",
    "tuple_type": "an array",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def _dotted(loc: tuple[str | int, ...]) -> str:
    parts = [
        str(part) if isinstance(part, int) or _BARE_KEY_RE.fullmatch(part) else f'"{part}"'
        for part in loc
    ]
    return ".".join(parts) or "(top)"


def _unknown_key_reason(model: type[CoreConfig], loc: tuple[str | int, ...], value: object) -> str:
    if len(loc) == 2 and loc[0] == "platforms":
        return f"unknown platform (this version has: {', '.join(model.platform_names())})"
    if len(loc) == 1 and isinstance(value, dict):
        return "unknown section"
    return "unknown key"


def _reason(model: type[CoreConfig], error: ErrorDetails) -> str:
    """Turn one pydantic error into a short reason that names types the TOML way."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key_reason(model, error["loc"], value)
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_toml_type(value)}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {_show(value)}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds and bounds[kind][1] in ctx:
        words, name = bounds[kind]
        return f"must be {words} {ctx[name]}, got {_show(value)}"
    return str(error["msg"])


def _section_type(annotation: object) -> type[ConfigSection] | None:
    candidates = (annotation, *get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, ConfigSection):
            return candidate
    return None


_Located = tuple[tuple[str | int, ...], str]


def _section_environment_problems(
    section: ConfigSection, environ: Mapping[str, str], prefix: tuple[str | int, ...]
) -> list[_Located]:
    """Environment problems of a validated section and of the sections inside it."""
    found: list[_Located] = [
        ((*prefix, *key.split(".")), reason)
        for key, reason in section.environment_problems(environ)
    ]
    for name, field in type(section).model_fields.items():
        child = getattr(section, name)
        if isinstance(child, ConfigSection):
            found += _section_environment_problems(child, environ, (*prefix, field.alias or name))
    return found


def _raw_environment_problems(
    model: type[ConfigSection],
    raw: object,
    environ: Mapping[str, str],
    prefix: tuple[str | int, ...],
) -> list[_Located]:
    """Environment problems of every part of `raw` that validates on its own."""
    try:
        section = model.model_validate(raw)
    except ValidationError:
        pass
    else:
        return _section_environment_problems(section, environ, prefix)
    if not isinstance(raw, dict):
        return []
    found: list[_Located] = []
    for name, field in model.model_fields.items():
        child_model = _section_type(field.annotation)
        if child_model is None:
            continue
        key = field.alias or name
        if key in raw:
            found += _raw_environment_problems(child_model, raw[key], environ, (*prefix, key))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, ConfigSection):
            found += _section_environment_problems(default, environ, (*prefix, key))
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    """Read and parse a TOML file, turning every failure into a ConfigError."""
    source = str(path)

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError([ConfigProblem(source, key, reason)])

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail("(file)", "not found") from None
    except IsADirectoryError:
        raise fail("(file)", "is a directory, not a file") from None
    except PermissionError:
        raise fail("(file)", "permission denied") from None
    except OSError as exc:
        raise fail("(file)", f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise fail("(file)", f"not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail("(syntax)", str(exc)) from None
    except ValueError as exc:
        raise fail("(syntax)", str(exc).split(":", 1)[0]) from None
    except RecursionError:
        raise fail("(syntax)", "nested too deeply") from None


def validate_model(
    model: type[C], raw: Mapping[str, Any], source: str, environ: Mapping[str, str]
) -> C:
    """Validate parsed TOML, raising ConfigError with every structural and environment problem."""
    problems: list[ConfigProblem] = []
    config: C | None = None
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        problems += [
            ConfigProblem(source, _dotted(error["loc"]), _reason(model, error))
            for error in exc.errors(include_url=False)
        ]
    if config is not None:
        located = _section_environment_problems(config, environ, ())
    else:
        located = _raw_environment_problems(model, dict(raw), environ, ())
    problems += [ConfigProblem(source, _dotted(loc), reason) for loc, reason in located]
    unique = list(dict.fromkeys(problems))
    if unique or config is None:
        raise ConfigError(unique)
    return config


def load_model(
    model: type[C],
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedConfig[C]:
    """Load and validate the config file, or the embedded defaults when path is None.

    `overrides` replaces keys of its tables (e.g. `serve --port`: {"server": {"port": ...}})
    before validation, so an override is checked exactly as the file's value would be."""
    raw = {} if path is None else _read_toml(path)
    source = DEFAULTS_SOURCE if path is None else str(path)
    for table, values in (overrides or {}).items():
        current = raw.get(table)
        raw[table] = {**(current if isinstance(current, dict) else {}), **values}
    return LoadedConfig(validate_model(model, raw, source, environ), source)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return True


def resolve_config_path(
    cli_path: Path | None, environ: Mapping[str, str], cwd: Path
) -> Path | None:
    """Pick the config file: -c FILE, else $WORKBOT_CONFIG, else ./config.toml, else None."""
    explicit = cli_path
    if explicit is None and environ.get(CONFIG_ENV_VAR):
        explicit = Path(environ[CONFIG_ENV_VAR])
    if explicit is not None:
        candidate = explicit if explicit.is_absolute() else cwd / explicit
        if not _exists(candidate):
            raise ConfigError([ConfigProblem(str(explicit), "(file)", "not found")])
        return candidate
    default = cwd / DEFAULT_CONFIG_NAME
    return default if _exists(default) else None
