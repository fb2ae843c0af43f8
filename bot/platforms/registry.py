"""Which platform adapters this process runs, built from the configuration (one line each)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Config
from bot.platforms.base import Platform
from bot.platforms.local import LocalPlatform
from bot.platforms.webhook import WebhookPlatform


class PlatformUnavailable(Exception):
    """The configuration binds the group to a platform this version cannot run."""


def build_platforms(config: Config, environ: Mapping[str, str]) -> dict[str, Platform]:
    """The adapters for the bound group and every enabled platform table."""
    platforms: dict[str, Platform] = {}
    if config.group.platform == "local" or config.platforms.local.enabled:
        platforms["local"] = LocalPlatform()
    if config.platforms.webhook is not None:
        webhook = config.platforms.webhook
        if webhook.environment_problems(environ):
            raise PlatformUnavailable(
                f"platforms.webhook: environment variable {webhook.token_env} is not set"
            )
        platforms["webhook"] = WebhookPlatform(webhook, webhook.token(environ))
    if config.group.platform not in platforms:
        raise PlatformUnavailable(
            f"group.platform = {config.group.platform!r}: this version of workbot has no "
            f"adapter for it yet (available: {', '.join(sorted(platforms)) or 'none'})"
        )
    return platforms
