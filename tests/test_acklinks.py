"""Ack-link tokens: unforgeable, expiring, single-purpose; and the pages that use them."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.acklinks import TOKEN_LENGTH, AckLinks, LinkExpired, LinkInvalid

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
