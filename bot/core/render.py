"""Pure rendering of what the bot sends: notice cards, tallies, reminders and the digest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.core.i18n import Translator
from bot.core.platform import Button, Card, OutboundMessage
from storage.types import NoticeKind, NoticeState, Requires

ACK_VALUE_PREFIX = "ack:"

AUDIENCE_MAX_ENTRIES = 3  # more departments and people than this are summed up as a count


@dataclass(frozen=True)
class AudienceView:
    """Who a notice is for, as the card shows it: everyone, or department and person names."""

    everyone: bool = False
    departments: tuple[str, ...] = ()
    people: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoticeView:
    """The fields of a notice that its group post shows."""

    id: int
    kind: NoticeKind
    title: str
    body: str
    requires: Requires
    deadline: dt.datetime | None
    doc_number: str | None
    assigned: int
    state: NoticeState = NoticeState.OPEN
    acknowledged: int = 0
    done: int = 0
    audience: AudienceView | None = None


def when(t: Translator, tz: ZoneInfo, moment: dt.datetime | None) -> str:
    """A deadline in the bot's timezone, e.g. 12-10 17:30 (with the year when not this one)."""
    if moment is None:
        return t("time.no_deadline")
    local = moment.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M")


def tally(t: Translator, view: NoticeView) -> str:
    """The in-place tally line: counts only, never names."""
    if view.state is not NoticeState.OPEN:
        return t(
            "notice.tally_finished",
            state_label=t(f"notice_state.{view.state.value}"),
            acknowledged=view.acknowledged,
            assigned=view.assigned,
        )
    if view.requires is Requires.ACK:
        return t("notice.tally", acknowledged=view.acknowledged, assigned=view.assigned)
    return t(
        "notice.tally_done",
        acknowledged=view.acknowledged,
        assigned=view.assigned,
        done=view.done,
    )


def audience_line(t: Translator, audience: AudienceView, assigned: int) -> str:
    """The card's one short 对象 line: 全体, up to three names, or a count."""
    if audience.everyone:
        return t("notice.audience", audience=t("notice.audience_all"))
    entries = [*audience.departments, *audience.people]
    if len(entries) <= AUDIENCE_MAX_ENTRIES:
        return t("notice.audience", audience=t("list.separator").join(entries))
    if audience.departments and not audience.people:
        return t(
            "notice.audience_departments",
            first=audience.departments[0],
            departments=len(audience.departments),
            count=assigned,
        )
    return t("notice.audience_many", first=entries[0], count=assigned)


def notice_post(t: Translator, tz: ZoneInfo, view: NoticeView) -> OutboundMessage:
    """The notice as posted to the group: a card with a 收到 button and its live tally."""
    kind_label = t(f"kind.{view.kind.value}")
    lines = [view.body] if view.body else []
    if view.audience is not None:
        lines.append(audience_line(t, view.audience, view.assigned))
    lines.append(t("notice.deadline", deadline=when(t, tz, view.deadline)))
    if view.doc_number:
        lines.append(t("notice.doc_number", doc_number=view.doc_number))
    lines.append(t("notice.requires", requires=t(f"requires.{view.requires.value}")))
    body = "\n".join(lines)
    title = t("notice.card_title", kind_label=kind_label, id=view.id, title=view.title)
    status = tally(t, view)
    buttons: tuple[Button, ...] = ()
    if view.state is NoticeState.OPEN:
        buttons = (Button(t("notice.button_ack"), f"{ACK_VALUE_PREFIX}{view.id}"),)
    return OutboundMessage(
        text=f"{title}\n{body}\n{status}",
        card=Card(title=title, body=body, status=status, buttons=buttons),
    )


def reminder(
    t: Translator, tz: ZoneInfo, view: NoticeView, *, overdue: bool, link: str | None = None
) -> OutboundMessage:
    """A private reminder to one person who still owes the notice something (with a signed
    ack link where the platform has no buttons)."""
    key = "reminder.text_overdue" if overdue else "reminder.text"
    text = t(
        key,
        kind_label=t(f"kind.{view.kind.value}"),
        id=view.id,
        title=view.title,
        deadline=when(t, tz, view.deadline),
        requires=t(f"requires.{view.requires.value}"),
    )
    if link is None:
        return OutboundMessage(text=text)
    return OutboundMessage(
        text=f"{text}\n{t('reminder.link', url=link)}",
        card=Card(
            title=t(
                "notice.card_title",
                kind_label=t(f"kind.{view.kind.value}"),
                id=view.id,
                title=view.title,
            ),
            body=text,
            buttons=(Button(t("notice.button_ack"), f"{ACK_VALUE_PREFIX}{view.id}", url=link),),
        ),
    )


def escalation(
    t: Translator, tz: ZoneInfo, view: NoticeView, names: Sequence[str]
) -> OutboundMessage:
    """A private note to a department head naming that department's overdue people."""
    return OutboundMessage(
        text=t(
            "escalation.text",
            id=view.id,
            title=view.title,
            deadline=when(t, tz, view.deadline),
            count=len(names),
            names="、".join(names) if t.language == "zh-CN" else ", ".join(names),
        )
    )


def digest(
    t: Translator, tz: ZoneInfo, day: dt.date, items: Sequence[NoticeView]
) -> OutboundMessage:
    """The daily index of open formal items for the group: ids, titles, deadlines, counts."""
    lines = [t("digest.title", date=day.isoformat())]
    for v in items:
        key = "digest.item" if v.deadline is not None else "digest.item_no_deadline"
        lines.append(
            t(
                key,
                id=v.id,
                title=v.title,
                deadline=when(t, tz, v.deadline),
                acknowledged=v.acknowledged,
                assigned=v.assigned,
            )
        )
    lines.append(t("digest.footer"))
    return OutboundMessage(text="\n".join(lines))
