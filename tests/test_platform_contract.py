"""The neutral types of the platform contract: what the outbox and the inbound table store
round-trips, rows written before the neutral names still read, every listed adapter keeps
the contract."""

from __future__ import annotations

import pytest

from bot.core.intake import event_from_payload, event_to_payload
from bot.core.platform import (
    BasePlatform,
    Button,
    ButtonAction,
    Card,
    CardUpdate,
    OutboundMessage,
    Platform,
    Sender,
)
from bot.platforms.registry import PLATFORMS


def test_a_message_round_trips_through_its_outbox_payload() -> None:
    message = OutboundMessage(
        text="收到",
        card=Card("通知 #1", "正文", "已确认 0/4", (Button("收到", "ack:1"),)),
        mentions=("p001",),
        reply_to="42",
        card_ref="wb-1-7",
        card_update=CardUpdate(token="code-1", card_ref="wb-1-7", label="已确认"),
        document={"event": "assignment.acknowledged", "notice_id": 1},
    )
    assert OutboundMessage.from_payload(message.to_payload()) == message


def test_outbox_rows_written_with_the_old_raw_keys_still_read() -> None:
    card_update = OutboundMessage.from_payload(
        {
            "text": "已确认",
            "update_card": {"response_code": "c0de", "task_id": "wb-3-9", "replace_name": "已确认"},
        }
    )
    assert card_update.card_update == CardUpdate("c0de", "wb-3-9", "已确认")
    card = OutboundMessage.from_payload({"text": "通知", "task_id": "wb-3-9"})
    assert card.card_ref == "wb-3-9"
    callback = OutboundMessage.from_payload({"text": "notice.closed", "event": {"seq": 5}})
    assert callback.document == {"seq": 5}


def test_a_click_round_trips_and_an_old_stored_click_keeps_its_code() -> None:
    click = ButtonAction("wecom", "ev-1", "app:1", Sender("zhangsan"), "ack:3", "wb-3-9", "c0de")
    assert event_from_payload(event_to_payload(click)) == click
    old = event_to_payload(click)
    old["response_code"] = old.pop("card_token")
    assert event_from_payload(old) == click


@pytest.mark.parametrize("spec", PLATFORMS, ids=lambda spec: spec.name)
def test_every_listed_adapter_keeps_the_two_way_contract(spec: object) -> None:
    adapter = spec.adapter  # type: ignore[attr-defined]
    assert issubclass(adapter, BasePlatform)
    for part in ("routes", "start", "stop", "send", "edit", "rate_limits", "close"):
        assert callable(getattr(adapter, part)), part
    assert adapter.name == spec.name  # type: ignore[attr-defined]
    assert isinstance(adapter.__new__(adapter), Platform)
