"""The Synapse test harness (tests/synapse.py) against a real homeserver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from synapse import MatrixError, MatrixUser, SynapseServer, _request, register

pytestmark = pytest.mark.matrix


async def sync_until(
    user: MatrixUser, since: str, found: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Long-poll /sync from ``since`` until a response satisfies ``found`` (it may return early
    with unrelated changes)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = await user.sync(since=since, timeout_ms=2000)
        if found(data):
            return data
        since = data["next_batch"]
    raise AssertionError("/sync never showed it")


def of_type(events: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in types]


async def test_users_are_unique_and_can_be_admins(synapse: SynapseServer) -> None:
    assert synapse.base_url.startswith("http://127.0.0.1:")
    assert synapse.server_name == "localhost"
    one, two = await register(synapse, "alice"), await register(synapse, "alice")
    admin = await register(synapse, "root", admin=True)
    assert one.user_id != two.user_id
    for user in (one, two):
        assert user.user_id.startswith("@alice-")
        assert user.user_id.endswith(":localhost")
        assert user.base_url == synapse.base_url
        assert user.access_token
    assert admin.user_id.startswith("@root-")
    assert await one.account_data("m.direct") is None  # 404 is None

    # Only an admin may use the admin API.
    url = f"{synapse.base_url}/_synapse/admin/v2/users/{one.user_id}"
    assert (await _request("GET", url, token=admin.access_token))["name"] == one.user_id
    with pytest.raises(MatrixError) as caught:
        await _request("GET", url, token=two.access_token)
    assert caught.value.status == 403


async def test_invite_join_reply_react_and_read_back(synapse: SynapseServer) -> None:
    alice, bob = await register(synapse, "alice"), await register(synapse, "bob")
    room = await alice.create_room(name="工作群")
    assert room.startswith("!")
    await alice.invite(room, bob.user_id)
    await bob.join(room)
    assert await alice.joined_members(room) == sorted([alice.user_id, bob.user_id])

    first = await alice.send_text(room, "请于周五前提交材料")
    reply = await bob.send_text(room, "收到", reply_to=first)
    reaction = await alice.react(room, reply, "✅")

    events = await bob.messages(room)
    assert events[0]["type"] == "m.room.create"  # the whole room, oldest first
    names = of_type(events, "m.room.name")
    assert [e["content"]["name"] for e in names] == ["工作群"]
    talk = of_type(events, "m.room.message", "m.reaction")
    assert [e["event_id"] for e in talk] == [first, reply, reaction]
    assert [e["sender"] for e in talk] == [alice.user_id, bob.user_id, alice.user_id]
    assert talk[0]["content"] == {"msgtype": "m.text", "body": "请于周五前提交材料"}
    assert talk[1]["content"]["body"] == "收到"
    assert talk[1]["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}
    assert talk[2]["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": reply,
        "key": "✅",
    }
    assert all(e["room_id"] == room and "origin_server_ts" in e for e in talk)

    # A smaller limit gives the latest events, still oldest first.
    assert [e["event_id"] for e in await alice.messages(room, limit=2)] == [reply, reaction]


async def test_thirty_messages_in_a_row_are_not_rate_limited(synapse: SynapseServer) -> None:
    alice, bob = await register(synapse, "alice"), await register(synapse, "bob")
    room = await alice.create_room(invite=[bob.user_id])
    await bob.join(room)
    # Synapse's defaults answer 429 from the 11th message on; these must all go through.
    sent = [await alice.send_text(room, f"第{i}条") for i in range(30)]
    sent += await asyncio.gather(*(bob.send_text(room, f"并发{i}") for i in range(10)))
    texts = of_type(await bob.messages(room), "m.room.message")
    assert [e["event_id"] for e in texts][:30] == sent[:30]
    assert [e["content"]["body"] for e in texts][:30] == [f"第{i}条" for i in range(30)]
    assert sorted(e["event_id"] for e in texts[30:]) == sorted(sent[30:])
    # A limit beyond Synapse's page cap (1000) reads on to the start of the room.
    everything = await alice.messages(room, limit=5000)
    assert everything[0]["type"] == "m.room.create"
    assert [e["event_id"] for e in everything][-40:] == [e["event_id"] for e in texts]


async def test_direct_room_and_sync(synapse: SynapseServer) -> None:
    alice, bob = await register(synapse, "alice"), await register(synapse, "bob")
    first = await bob.sync()
    assert first["next_batch"]

    dm = await alice.create_room(invite=[bob.user_id], is_direct=True)
    data = await sync_until(bob, first["next_batch"], lambda d: dm in d["rooms"].get("invite", {}))
    invited = data["rooms"]["invite"]
    member = [
        e
        for e in invited[dm]["invite_state"]["events"]
        if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    ]
    assert member[0]["content"]["is_direct"] is True
    assert member[0]["sender"] == alice.user_id

    await bob.join(dm)
    joined = await bob.sync()
    event_id = await alice.send_text(dm, "私聊")
    data = await sync_until(bob, joined["next_batch"], lambda d: dm in d["rooms"].get("join", {}))
    timeline = data["rooms"]["join"][dm]["timeline"]["events"]
    assert [e["event_id"] for e in timeline if e["type"] == "m.room.message"] == [event_id]
    # m.direct is the clients' business: Synapse does not write it.
    assert await alice.account_data("m.direct") is None
    assert await bob.joined_members(dm) == sorted([alice.user_id, bob.user_id])


async def test_errors_are_matrix_errors(synapse: SynapseServer) -> None:
    alice, eve = await register(synapse, "alice"), await register(synapse, "eve")
    room = await alice.create_room()
    with pytest.raises(MatrixError) as caught:
        await eve.join(room)  # private_chat: invitation only
    assert caught.value.status == 403
    assert caught.value.errcode == "M_FORBIDDEN"
    assert caught.value.error
    with pytest.raises(MatrixError) as caught:
        await eve.send_text(room, "hi")
    assert caught.value.status == 403


async def test_unknown_config_keys_start_and_rate_limits_are_real(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A second server: unknown rc_* keys do not stop it, and a low rc_message gives 429."""
    limited = SynapseServer(
        synapse.python,
        extra_config={
            "rc_message": {"per_second": 0.1, "burst_count": 3},
            "rc_not_in_this_version": {"per_second": 1, "burst_count": 1},
            "rc_joins": {"local": {"per_second": 1, "burst_count": 5}, "future_key": {}},
            "not_a_synapse_option": True,
        },
    )
    started = time.monotonic()
    limited.start(tmp_path / "limited")
    try:
        assert time.monotonic() - started < 30
        alice = await register(limited, "alice")
        room = await alice.create_room()
        with pytest.raises(MatrixError) as caught:
            for i in range(10):
                await alice.send_text(room, f"{i}")
        assert caught.value.status == 429
        assert caught.value.errcode == "M_LIMIT_EXCEEDED"
        assert caught.value.body["retry_after_ms"] > 0
    finally:
        limited.stop()
    assert limited.pid is None
    assert (tmp_path / "limited" / "homeserver.log").exists()
