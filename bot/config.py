"""The whole configuration: the core's sections plus one `[platforms.<name>]` table per
platform in the platform list (each validated by its adapter's own model)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from bot.core.config_sections import (
    CONFIG_ENV_VAR,
    DATABASE_DRIVERS,
    DEFAULT_CONFIG_NAME,
    DEFAULTS_SOURCE,
    ENVIRONMENT_SOURCE,
    MAX_DURATION,
    AuditConfig,
    ConfigError,
    ConfigProblem,
    CoreConfig,
    DatabaseConfig,
    DeliveryConfig,
    EgovConfig,
    GroupConfig,
    LoadedConfig,
    LoggingConfig,
    ScheduleConfig,
    ServerConfig,
    database_url_problem,
    format_duration,
    load_model,
    parse_duration,
    resolve_config_path,
    validate_model,
)
from bot.core.config_sections import (  # re-exported: bot.config is the configuration's public face
    BotConfig as BotConfig,
)
from bot.core.configtypes import ConfigSection, Duration
from bot.platforms.registry import BY_NAME, PLATFORMS

# bot.config is the configuration's public face: the core's sections are re-exported.
__all__ = [
    "CONFIG_ENV_VAR",
    "DATABASE_DRIVERS",
    "DEFAULTS_SOURCE",
    "DEFAULT_CONFIG_NAME",
    "ENVIRONMENT_SOURCE",
    "MAX_DURATION",
    "AuditConfig",
    "BotConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CoreConfig",
    "DatabaseConfig",
    "DeliveryConfig",
    "Duration",
    "EgovConfig",
    "GroupConfig",
    "LoadedConfig",
    "LoggingConfig",
    "PlatformsConfig",
    "ScheduleConfig",
    "ServerConfig",
    "database_url_problem",
    "format_duration",
    "load_config",
    "parse_duration",
    "resolve_config_path",
    "validate_config",
]


def _error(title: str, loc: tuple[str, ...], value: str, reason: str) -> ValidationError:
    """One located problem, reported like any other (file: key.path: reason)."""
    details = InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": reason})
    return ValidationError.from_exception_data(title, [details])


def _platforms_model() -> type[ConfigSection]:
    """[platforms]: one optional table per platform of the list, nothing else."""
    fields: dict[str, Any] = {
        spec.name: (
            spec.config_model if spec.default is not None else spec.config_model | None,
            Field(default_factory=lambda spec=spec: spec.default),
        )
        for spec in PLATFORMS
    }
    model: type[ConfigSection] = create_model(
        "PlatformsConfig",
        __base__=ConfigSection,
        __config__=None,
        __doc__="The [platforms] tables: one per platform of the platform list.",
        **fields,
    )
    return model


PlatformsConfig = _platforms_model()
PlatformsConfig.model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
PlatformsConfig.model_rebuild(force=True)


class _Config(CoreConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    platforms: PlatformsConfig = Field(default_factory=PlatformsConfig)  # type: ignore[valid-type]

    @field_validator("group")
    @classmethod
    def _known_group_platform(cls, group: GroupConfig) -> GroupConfig:
        if group.platform in cls.platform_names():
            return group
        reason = (
            f"unknown platform {group.platform!r} "
            f"(this version has: {', '.join(cls.platform_names())})"
        )
        raise _error("GroupConfig", ("platform",), group.platform, reason)

    @model_validator(mode="after")
    def _bound_platform_configured(self) -> Self:
        spec = BY_NAME[self.group.platform]
        if spec.settings_of(self.platforms) is None:
            reason = f"{spec.name!r} needs a [platforms.{spec.name}] table"
            raise _error("Config", ("group", "platform"), self.group.platform, reason)
        problems = [
            InitErrorDetails(type="value_error", loc=loc, input=None, ctx={"error": reason})
            for other in PLATFORMS
            if (settings := other.settings_of(self.platforms)) is not None
            for loc, reason in other.checks(self, settings)
        ]
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @classmethod
    def platform_names(cls) -> tuple[str, ...]:
        """The names in the platform list, in its order."""
        return tuple(spec.name for spec in PLATFORMS)


if TYPE_CHECKING:

    class Config(CoreConfig):
        """The whole workbot configuration."""

        platforms: ConfigSection

else:
    Config = _Config


def validate_config(raw: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Config:
    """Validate parsed TOML, raising ConfigError with every problem (file: key: reason)."""
    return validate_model(Config, raw, source, environ)


def load_config(
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedConfig[Config]:
    """Load and validate the config file, or the embedded defaults when path is None, with
    `overrides` (tables of keys) applied before validation."""
    return load_model(Config, path, environ, overrides)
