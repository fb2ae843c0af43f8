"""Which platform adapters this process runs, built from the configuration (one line each)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Config
from bot.platforms.base import Capabilities, Platform
from bot.platforms.egov_callback import EgovCallbackPlatform
from bot.platforms.local import LocalPlatform
from bot.platforms.matrix import MatrixPlatform
from bot.platforms.webhook import WebhookPlatform
from bot.platforms.wecom import WecomPlatform


def capabilities_of(platform: str) -> Capabilities:
    """What an adapter can do, known before it is built (unknown platforms: nothing)."""
    adapters: dict[str, type[Platform]] = {
        "local": LocalPlatform,
        "webhook": WebhookPlatform,
        "wecom": WecomPlatform,
        "matrix": MatrixPlatform,
    }
    adapter = adapters.get(platform)
    return adapter.capabilities if adapter is not None else Capabilities()


class PlatformUnavailable(Exception):
    """The configuration binds the group to a platform this version cannot run."""


def build_platforms(
    config: Config, environ: Mapping[str, str], *, local: LocalPlatform | None = None
) -> dict[str, Platform]:
    """The adapters for the bound group and every enabled platform table (the local group's
    adapter is built by the app, which owns its room)."""
    platforms: dict[str, Platform] = {}
    available = set()
    if config.group.platform == "local" or config.platforms.local.enabled:
        available.add("local")
        if local is not None:
            platforms["local"] = local
    if config.platforms.webhook is not None:
        webhook = config.platforms.webhook
        if webhook.environment_problems(environ):
            raise PlatformUnavailable(
                f"platforms.webhook: environment variable {webhook.token_env} is not set"
            )
        platforms["webhook"] = WebhookPlatform(webhook, webhook.token(environ))
    if config.platforms.wecom is not None:
        wecom = config.platforms.wecom
        problems = wecom.environment_problems(environ)
        if problems:
            raise PlatformUnavailable(f"platforms.wecom.{problems[0][0]}: {problems[0][1]}")
        platforms["wecom"] = WecomPlatform(wecom, wecom.secrets(environ))
    if config.platforms.matrix is not None:
        matrix = config.platforms.matrix
        problems = matrix.environment_problems(environ)
        if problems:
            raise PlatformUnavailable(f"platforms.matrix.{problems[0][0]}: {problems[0][1]}")
        room = config.group.chat_id if config.group.platform == "matrix" else ""
        platforms["matrix"] = MatrixPlatform(matrix, environ[matrix.access_token_env], room_id=room)
    secret = config.egov.secret(environ)
    if config.egov.callback_url and secret:
        platforms["egov"] = EgovCallbackPlatform(secret)  # the portal's status callbacks
    available.update(platforms)
    if config.group.platform not in available:
        raise PlatformUnavailable(
            f"group.platform = {config.group.platform!r}: this version of workbot has no "
            f"adapter for it yet (available: {', '.join(sorted(available)) or 'none'})"
        )
    return platforms
