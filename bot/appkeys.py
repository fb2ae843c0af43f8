"""Typed application keys for the aiohttp app's shared state."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bot.chat import ChatService, LocalRoomBackend
from bot.config import Config
from bot.context import BotContext
from bot.delivery.sender import Sender
from bot.metrics import Metrics
from bot.platforms.base import Platform
from bot.platforms.local import LocalRoutes, RoomHub
from bot.platforms.wecom import WecomCallbacks
from bot.scheduler.runner import Scheduler
from storage.db import Database

CONFIG = web.AppKey("config", Config)
ENVIRON = web.AppKey("environ", Mapping[str, str])
DATABASE = web.AppKey("database", Database)
METRICS = web.AppKey("metrics", Metrics)
BOT = web.AppKey("bot", BotContext)
PLATFORMS = web.AppKey("platforms", dict[str, Platform])
SENDER = web.AppKey("sender", Sender)
SCHEDULER = web.AppKey("scheduler", Scheduler)
CHAT = web.AppKey("chat", ChatService)
ROOM = web.AppKey("room", LocalRoomBackend)
ROOM_HUB = web.AppKey("room_hub", RoomHub)
LOCAL_ROUTES = web.AppKey("local_routes", LocalRoutes)
EGOV_SECRET = web.AppKey("egov_secret", str)  # "" when the e-gov API is off
WECOM_CALLBACKS = web.AppKey("wecom_callbacks", WecomCallbacks)
