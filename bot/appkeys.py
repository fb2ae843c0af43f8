"""Typed application keys: the web surfaces' (bot.core.appkeys) and the app's own."""

from __future__ import annotations

from aiohttp import web

from bot.core.appkeys import BOT, CONFIG, DATABASE, EGOV_SECRET, ENVIRON, METRICS
from bot.core.durable_room import LocalRoom
from bot.core.intake import ChatIntake
from bot.core.outage import Outage
from bot.core.platform import Platform
from bot.delivery.sender import OutboxSender
from bot.scheduler.runner import Scheduler

__all__ = [
    "BOT",
    "CHAT",
    "CONFIG",
    "DATABASE",
    "EGOV_SECRET",
    "ENVIRON",
    "METRICS",
    "OUTAGE",
    "PLATFORMS",
    "ROOM",
    "SCHEDULER",
    "SENDER",
]

PLATFORMS = web.AppKey("platforms", dict[str, Platform])
SENDER = web.AppKey("sender", OutboxSender)
SCHEDULER = web.AppKey("scheduler", Scheduler)
CHAT = web.AppKey("chat", ChatIntake)
ROOM = web.AppKey("room", LocalRoom)
OUTAGE = web.AppKey("outage", Outage)  # the HTTP side's view of database outages
