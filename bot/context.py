"""What the bot-level services need from the configuration, resolved once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from bot.acklinks import AckLinks, ReportLinks
from bot.config import Config
from bot.i18n import Translator
from bot.platforms.base import Capabilities, TargetKind
from bot.platforms.registry import capabilities_of
from bot.scheduler.calendar import WorkCalendar
from storage.outbox import Target


@dataclass(frozen=True)
class BotContext:
    """The language, timezone, calendar and bound group every service works with."""

    config: Config
    t: Translator
    tz: ZoneInfo
    calendar: WorkCalendar
    group: Target
    links: AckLinks | None = None
    report_links: ReportLinks | None = None
    group_capabilities: Capabilities = field(default_factory=Capabilities)

    @classmethod
    def from_config(cls, config: Config) -> BotContext:
        """Resolve the context for a validated configuration."""
        tz = config.bot.tz
        return cls(
            config=config,
            t=Translator(config.bot.language),
            tz=tz,
            calendar=WorkCalendar.from_config(config.schedule, tz),
            group=Target(config.group.platform, TargetKind.CHAT.value, config.group.chat_id),
            group_capabilities=capabilities_of(config.group.platform),
        )
