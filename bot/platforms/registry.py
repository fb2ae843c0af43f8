"""The platform list: one line per platform. Config validation, the adapters this process
runs, the capability lookup, the people CSV's columns and `check-config` all read it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.core.config_sections import CoreConfig
from bot.core.platform import BuildContext, Capabilities, Platform, PlatformSpec
from bot.platforms import local, matrix, webhook, wecom

PLATFORMS: tuple[PlatformSpec[Any], ...] = (
    local.SPEC,
    webhook.SPEC,
    wecom.SPEC,
    matrix.SPEC,
)

BY_NAME: Mapping[str, PlatformSpec[Any]] = {spec.name: spec for spec in PLATFORMS}


def capabilities_of(platform: str) -> Capabilities:
    """What a platform can do, known before it is built (unknown platforms: nothing)."""
    spec = BY_NAME.get(platform)
    return spec.capabilities if spec is not None else Capabilities()


def directory_columns() -> tuple[str, ...]:
    """The people CSV's platform columns (each holds people's user ids on that platform)."""
    return tuple(spec.directory_column for spec in PLATFORMS if spec.directory_column)


class PlatformUnavailable(Exception):
    """The configuration binds the group to a platform this process cannot run."""


def active(config: CoreConfig, platforms: object) -> list[tuple[PlatformSpec[Any], Any]]:
    """The platforms this process runs, with their settings: the bound group's, and every
    other one whose table is present (and enabled)."""
    running = []
    for spec in PLATFORMS:
        settings = spec.settings_of(platforms)
        bound = config.group.platform == spec.name
        if settings is None:
            if bound:
                raise PlatformUnavailable(
                    f"group.platform = {spec.name!r} needs a [platforms.{spec.name}] table"
                )
            continue
        if bound or spec.enabled(settings):
            running.append((spec, settings))
    return running


def build_platforms(
    config: CoreConfig, platforms: object, environ: Mapping[str, str]
) -> dict[str, Platform]:
    """The adapters for the bound group and every configured platform, by name."""
    built: dict[str, Platform] = {}
    for spec, settings in active(config, platforms):
        problems = settings.environment_problems(environ)
        if problems:
            key, reason = problems[0]
            raise PlatformUnavailable(f"platforms.{spec.name}.{key}: {reason}")
        bound = config.group.platform == spec.name
        built[spec.name] = spec.build(
            BuildContext(
                settings=settings,
                environ=environ,
                group_chat_id=config.group.chat_id if bound else None,
                language=config.bot.language,
                public_url=config.bot.public_url,
            )
        )
    return built
