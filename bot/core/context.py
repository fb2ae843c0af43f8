"""What the bot-level services need from the configuration, resolved once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from bot.core.calendar import WorkCalendar
from bot.core.config_sections import CoreConfig
from bot.core.i18n import Translator
from bot.core.links import AckLinks, ReportLinks
from bot.core.platform import Capabilities, TargetKind
from storage.outbox import Target


@dataclass(frozen=True)
class BotContext:
    """The language, timezone, calendar and bound group every service works with."""

    config: CoreConfig
    t: Translator
    tz: ZoneInfo
    calendar: WorkCalendar
    group: Target
    links: AckLinks | None = None
    report_links: ReportLinks | None = None
    group_capabilities: Capabilities = field(default_factory=Capabilities)

    @classmethod
    def from_config(
        cls, config: CoreConfig, group_capabilities: Capabilities | None = None
    ) -> BotContext:
        """Resolve the context for a validated configuration."""
        tz = config.bot.tz
        return cls(
            config=config,
            t=Translator(config.bot.language),
            tz=tz,
            calendar=WorkCalendar.from_config(config.schedule, tz),
            group=Target(config.group.platform, TargetKind.CHAT.value, config.group.chat_id),
            group_capabilities=group_capabilities or Capabilities(),
        )
