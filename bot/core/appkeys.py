"""Typed application keys for what the web surfaces share with the app (set by bot.app)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bot.core.config_sections import CoreConfig
from bot.core.context import BotContext
from bot.core.metrics import Metrics
from storage.db import Database

CONFIG = web.AppKey("config", CoreConfig)
ENVIRON = web.AppKey("environ", Mapping[str, str])
DATABASE = web.AppKey("database", Database)
METRICS = web.AppKey("metrics", Metrics)
BOT = web.AppKey("bot", BotContext)
EGOV_SECRET = web.AppKey("egov_secret", str)  # "" when the e-gov API is off
