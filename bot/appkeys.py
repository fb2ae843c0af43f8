"""Typed application keys for the aiohttp app's shared state."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bot.config import Config
from bot.metrics import Metrics
from storage.db import Database

CONFIG = web.AppKey("config", Config)
ENVIRON = web.AppKey("environ", Mapping[str, str])
DATABASE = web.AppKey("database", Database)
METRICS = web.AppKey("metrics", Metrics)
