"""Ack-link tokens: unforgeable, expiring, single-purpose; and the pages that use them."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.links import TOKEN_LENGTH, AckLinks, LinkExpired, LinkInvalid
from storage.db import Database

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=14)
LINKS = AckLinks(b"s" * 32, "https://bot.example.org/")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_a_token_grants_its_assignment_until_it_expires() -> None:
    token = LINKS.token(12, LATER)
    assert len(token) == TOKEN_LENGTH
    assert LINKS.verify(token, now=NOW) == 12
    assert LINKS.url(12, LATER) == f"https://bot.example.org/a/{token}"
    with pytest.raises(LinkExpired):
        LINKS.verify(token, now=LATER)


def test_another_secret_cannot_make_or_check_tokens() -> None:
    other = AckLinks(b"t" * 32, "https://bot.example.org")
    with pytest.raises(LinkInvalid):
        other.verify(LINKS.token(12, LATER), now=NOW)


@given(st.integers(min_value=1, max_value=2**63), st.integers(0, TOKEN_LENGTH - 1), st.data())
def test_any_changed_character_is_refused(assignment: int, index: int, data: st.DataObject) -> None:
    token = LINKS.token(assignment, LATER)
    replacement = data.draw(st.sampled_from([c for c in ALPHABET if c != token[index]]))
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(LinkInvalid):
        LINKS.verify(tampered, now=NOW)


@given(st.text(max_size=80))
def test_arbitrary_text_is_refused_not_crashed(text: str) -> None:
    with pytest.raises(LinkInvalid):
        LINKS.verify(text, now=NOW)


@given(st.integers(min_value=1, max_value=2**63), st.integers(min_value=1, max_value=2**31))
def test_tokens_round_trip(assignment: int, seconds: int) -> None:
    expires = NOW + dt.timedelta(seconds=seconds)
    assert LINKS.verify(LINKS.token(assignment, expires), now=NOW) == assignment


async def test_reminders_carry_a_link_only_where_the_platform_has_no_buttons(db: Database) -> None:
    from dataclasses import replace

    from sqlalchemy import select

    from bot.config import validate_config
    from bot.core.context import BotContext
    from bot.core.notices import remind_pending
    from bot.core.platform import Capabilities
    from storage.models import Assignment, Notice, OutboxMessage

    from support import make_notice, seed_people

    now = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC)  # a Friday, 10:00 in Shanghai
    await seed_people(db, now)
    notice_id = await make_notice(db, now, deadline=now + dt.timedelta(days=3))
    base = BotContext.from_config(validate_config({}, "<test>", {}))
    for buttons, key in ((True, "with-buttons"), (False, "without-buttons")):
        ctx = replace(base, links=LINKS, group_capabilities=Capabilities(buttons=buttons, dm=True))
        async with db.transaction() as s:
            notice = await s.get(Notice, notice_id)
            assert notice is not None
            assert await remind_pending(s, ctx, notice, key=key, now=now) == 5
    async with db.read() as s:
        rows = (await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        ids = {a.person_id: a.id for a in (await s.scalars(select(Assignment))).all()}
    with_buttons = [r for r in rows if r.idempotency_key.startswith("with-buttons")]
    without = [r for r in rows if r.idempotency_key.startswith("without-buttons")]
    assert all("/a/" not in r.payload["text"] for r in with_buttons)
    for row in without:
        url = row.payload["card"]["buttons"][0]["url"]
        assert url in row.payload["text"]
        token = url.rsplit("/", 1)[1]
        assert LINKS.verify(token, now=now) == ids[row.person_id]


def test_report_links_are_signed_expiring_and_single_purpose() -> None:
    from bot.core.links import REPORT_TOKEN_LENGTH, ReportLinks

    reports = ReportLinks(b"s" * 32, "https://bot.example.org")
    first, last = dt.date(2019, 11, 1), dt.date(2019, 11, 30)
    token = reports.token(first, last, LATER)
    assert len(token) == REPORT_TOKEN_LENGTH
    assert reports.verify(token, now=NOW) == (first, last)
    assert reports.url(first, last, LATER).endswith(f"/r/{token}")
    with pytest.raises(LinkExpired):
        reports.verify(token, now=LATER)
    tampered = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    with pytest.raises(LinkInvalid):
        reports.verify(tampered, now=NOW)
    # A token for one purpose is worthless for the other, even under the same secret.
    with pytest.raises(LinkInvalid):
        LINKS.verify(token, now=NOW)
    with pytest.raises(LinkInvalid):
        reports.verify(LINKS.token(12, LATER), now=NOW)
