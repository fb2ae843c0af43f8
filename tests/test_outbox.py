"""The outbox and the shared rate windows at the storage level, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from storage import audit, outbox, ratelimit
from storage.db import Database
from storage.errors import InvalidValue
from storage.models import AuditEvent, OutboxMessage, RateWindow
from storage.types import OutboxState

from conftest import T0

LEASE = dt.timedelta(seconds=60)
CHAT = outbox.Target("memory", "chat", "main")
ALICE = outbox.Target("memory", "person", "p001")
BOB = outbox.Target("memory", "person", "p002")


def at(seconds: float) -> dt.datetime:
    """T0 plus some seconds."""
    return T0 + dt.timedelta(seconds=seconds)


async def put(
    db: Database,
    target: outbox.Target,
    key: str,
    *,
    now: dt.datetime = T0,
    text: str = "hello",
    not_before: dt.datetime | None = None,
    edit_of_id: int | None = None,
) -> int:
    """Enqueue one message in its own transaction; its id."""
    async with db.transaction() as s:
        row = await outbox.enqueue(
            s,
            target=target,
            payload={"text": text},
            idempotency_key=key,
            now=now,
            not_before=not_before,
            edit_of_id=edit_of_id,
        )
        return row.id


async def claim(
    db: Database, worker: str, now: dt.datetime, limit: int = 50, lease: dt.timedelta = LEASE
) -> list[int]:
    """Claim due rows in their own transaction; their ids, in claim order."""
    async with db.transaction() as s:
        rows = await outbox.claim_due(s, worker=worker, now=now, lease=lease, limit=limit)
        return [r.id for r in rows]


async def sent(db: Database, row_id: int, worker: str, now: dt.datetime, mid: str = "x") -> bool:
    """mark_sent in its own transaction."""
    async with db.transaction() as s:
        return await outbox.mark_sent(s, row_id, worker=worker, platform_message_id=mid, now=now)


async def failed(
    db: Database, row_id: int, worker: str, now: dt.datetime, retry_at: dt.datetime | None
) -> OutboxState | None:
    """mark_failed in its own transaction."""
    async with db.transaction() as s:
        return await outbox.mark_failed(
            s, row_id, worker=worker, error="HTTP 503", now=now, retry_at=retry_at
        )


async def row(db: Database, row_id: int) -> OutboxMessage:
    """A fresh copy of one outbox row."""
    async with db.read() as s:
        found = await s.get(OutboxMessage, row_id)
        assert found is not None
        return found


async def next_due(db: Database) -> dt.datetime | None:
    """outbox.next_due_at in a read session."""
    async with db.read() as s:
        return await outbox.next_due_at(s)


# -- enqueue --------------------------------------------------------------------------


async def test_enqueue_is_idempotent_by_key(db: Database) -> None:
    first = await put(db, CHAT, "notice:1:post", text="first")
    again = await put(db, CHAT, "notice:1:post", text="second", now=at(5))
    other = await put(db, CHAT, "notice:2:post")
    assert again == first != other
    async with db.read() as s:
        total = await s.scalar(select(func.count()).select_from(OutboxMessage))
    assert total == 2
    stored = await row(db, first)
    assert stored.payload == {"text": "first"}
    assert stored.state is OutboxState.PENDING
    assert stored.attempts == 0
    assert stored.next_attempt_at == T0
    assert stored.target_key == "memory:chat:main"


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_enqueue_refuses_a_bad_key(db: Database, key: str) -> None:
    with pytest.raises(InvalidValue):
        await put(db, CHAT, key)


# -- claims ---------------------------------------------------------------------------


async def test_claim_waits_for_next_attempt_at(db: Database) -> None:
    later = await put(db, CHAT, "later", not_before=at(10))
    assert await claim(db, "w1", T0) == []
    assert await claim(db, "w1", at(9.999)) == []
    assert await claim(db, "w1", at(10)) == [later]
    claimed = await row(db, later)
    assert claimed.claimed_by == "w1"
    assert claimed.claimed_until == at(10) + LEASE


async def test_claim_takes_due_rows_oldest_first_up_to_the_limit(db: Database) -> None:
    targets = [outbox.Target("memory", "person", f"p{i:03}") for i in range(5)]
    ids = [await put(db, t, f"k{i}", not_before=at(5 - i)) for i, t in enumerate(targets)]
    assert await claim(db, "w1", at(10), limit=2) == [ids[4], ids[3]]
    assert await claim(db, "w2", at(10), limit=10) == [ids[2], ids[1], ids[0]]
    assert await claim(db, "w3", at(10)) == []


async def test_an_expired_lease_passes_to_another_worker(db: Database) -> None:
    rid = await put(db, CHAT, "k")
    assert await claim(db, "old", T0) == [rid]
    assert await claim(db, "new", at(30)) == []
    assert await claim(db, "new", T0 + LEASE) == []  # the lease runs until claimed_until
    assert await claim(db, "new", T0 + LEASE + dt.timedelta(seconds=1)) == [rid]
    # The old worker comes back: every write it tries is refused.
    assert not await sent(db, rid, "old", at(62), "old-id")
    async with db.transaction() as s:
        assert not await outbox.defer(s, rid, worker="old", until=at(100))
    assert await failed(db, rid, "old", at(62), at(100)) is None
    assert await sent(db, rid, "new", at(62), "new-id")
    done = await row(db, rid)
    assert done.state is OutboxState.SENT
    assert done.platform_message_id == "new-id"
    assert done.attempts == 1
    assert done.sent_at == at(62)
    assert (done.claimed_by, done.claimed_until) == ("new", None)  # who sent it
    assert not await sent(db, rid, "new", at(63), "again")


async def test_mark_sent_needs_a_claim(db: Database) -> None:
    rid = await put(db, CHAT, "k")
    assert not await sent(db, rid, "w1", T0)
    assert not await sent(db, 999_999, "w1", T0)
    assert (await row(db, rid)).state is OutboxState.PENDING


async def test_per_target_order_only_the_head_is_claimable(db: Database) -> None:
    a1 = await put(db, CHAT, "a1")
    a2 = await put(db, CHAT, "a2")
    b1 = await put(db, ALICE, "b1")
    a3 = await put(db, CHAT, "a3")
    assert await claim(db, "w1", T0) == [a1, b1]
    # A failed head keeps its place: the rows behind it wait, even when its lease is gone.
    assert await failed(db, a1, "w1", T0, at(30)) is OutboxState.PENDING
    assert await claim(db, "w2", at(10)) == []
    assert await claim(db, "w2", at(30)) == [a1]
    assert await sent(db, a1, "w2", at(30))
    assert await sent(db, b1, "w1", at(30))
    assert await claim(db, "w1", at(31)) == [a2]
    assert await sent(db, a2, "w1", at(31))
    assert await claim(db, "w1", at(31)) == [a3]


async def test_a_later_row_due_earlier_still_waits_for_its_head(db: Database) -> None:
    head = await put(db, CHAT, "head", not_before=at(100))
    behind = await put(db, CHAT, "behind")
    assert await claim(db, "w1", at(50)) == []
    assert await next_due(db) == at(100)
    assert await claim(db, "w1", at(100)) == [head]
    assert await sent(db, head, "w1", at(100))
    assert await claim(db, "w1", at(100)) == [behind]


async def test_a_dead_head_lets_its_target_move_on(db: Database) -> None:
    a1 = await put(db, CHAT, "a1")
    a2 = await put(db, CHAT, "a2")
    assert await claim(db, "w1", T0) == [a1]
    assert await failed(db, a1, "w1", T0, None) is OutboxState.DEAD
    assert await claim(db, "w1", T0) == [a2]


async def test_concurrent_claims_get_disjoint_rows(db: Database) -> None:
    targets = [outbox.Target("memory", "person", f"p{i:03}") for i in range(30)]
    ids = {await put(db, t, f"k{i}") for i, t in enumerate(targets)}
    for t in targets[:10]:
        await put(db, t, f"second:{t.address}")
    results = await asyncio.gather(*(claim(db, f"w{i}", T0, limit=7) for i in range(6)))
    flat = [rid for r in results for rid in r]
    assert len(flat) == len(set(flat)) == 30
    assert set(flat) == ids


async def test_skip_locked_claims_in_open_transactions_are_disjoint(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("SQLite has a single writer: claims cannot overlap")
    targets = [outbox.Target("memory", "person", f"p{i:03}") for i in range(6)]
    heads = [await put(db, t, f"k{i}") for i, t in enumerate(targets)]
    behind_first = await put(db, targets[0], "behind")
    async with db.transaction() as first:
        mine = await outbox.claim_due(first, worker="a", now=T0, lease=LEASE, limit=2)
        assert [r.id for r in mine] == heads[:2]
        # The first claim is not committed: its rows are locked, not yet marked as claimed.
        async with db.transaction() as second:
            theirs = await asyncio.wait_for(
                outbox.claim_due(second, worker="b", now=T0, lease=LEASE, limit=50), 10
            )
        assert [r.id for r in theirs] == heads[2:]
    assert behind_first not in [r.id for r in theirs]
    owners = {rid: (await row(db, rid)).claimed_by for rid in heads}
    assert owners == {rid: "a" if i < 2 else "b" for i, rid in enumerate(heads)}


# -- failures and dead letters --------------------------------------------------------


async def test_mark_failed_schedules_a_retry_then_dead_letters_with_an_audit_row(
    db: Database,
) -> None:
    rid = await put(db, ALICE, "k")
    assert await claim(db, "w1", T0) == [rid]
    assert await failed(db, rid, "w1", T0, at(4)) is OutboxState.PENDING
    retrying = await row(db, rid)
    assert (retrying.attempts, retrying.next_attempt_at) == (1, at(4))
    assert retrying.last_error == "HTTP 503"
    assert retrying.claimed_by is None
    assert await next_due(db) == at(4)
    assert await claim(db, "w1", at(3)) == []
    assert await claim(db, "w1", at(4)) == [rid]
    assert await failed(db, rid, "w1", at(4), None) is OutboxState.DEAD
    dead = await row(db, rid)
    assert (dead.state, dead.attempts) == (OutboxState.DEAD, 2)
    assert await next_due(db) is None
    assert await claim(db, "w1", at(1000)) == []
    async with db.read() as s:
        assert (await outbox.counts(s))["dead"] == 1
        assert [r.id for r in await outbox.list_messages(s, state=OutboxState.DEAD)] == [rid]
        events = (await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
    assert [(e.action, e.entity, e.entity_id, e.actor) for e in events] == [
        ("outbox.dead", "outbox", str(rid), "worker:w1")
    ]
    assert events[0].data == {"attempts": 2, "error": "HTTP 503", "target": ALICE.key}


async def test_retry_dead_brings_a_dead_letter_back(db: Database) -> None:
    rid = await put(db, ALICE, "k")
    await claim(db, "w1", T0)
    await failed(db, rid, "w1", T0, None)
    async with db.transaction() as s:
        back = await outbox.retry_dead(s, rid, actor="cli", now=at(600))
        assert back.state is OutboxState.PENDING
    again = await row(db, rid)
    assert (again.state, again.attempts, again.next_attempt_at) == (
        OutboxState.PENDING,
        0,
        at(600),
    )
    assert again.last_error == "HTTP 503"  # kept for the operator until it is sent
    assert await next_due(db) == at(600)
    assert await claim(db, "w2", at(600)) == [rid]
    assert await sent(db, rid, "w2", at(600))
    async with db.read(snapshot=True) as s:
        actions = (await s.scalars(select(AuditEvent.action).order_by(AuditEvent.seq))).all()
        assert list(actions) == ["outbox.dead", "outbox.retry"]
        assert (await audit.verify(s)).ok
    async with db.transaction() as s:
        with pytest.raises(InvalidValue):
            await outbox.retry_dead(s, rid, actor="cli", now=at(700))
    async with db.transaction() as s:
        with pytest.raises(InvalidValue):
            await outbox.retry_dead(s, 999_999, actor="cli", now=at(700))


async def test_defer_is_not_an_attempt(db: Database) -> None:
    rid = await put(db, CHAT, "k")
    await claim(db, "w1", T0)
    async with db.transaction() as s:
        assert await outbox.defer(s, rid, worker="w1", until=at(2.5))
    deferred = await row(db, rid)
    assert (deferred.attempts, deferred.next_attempt_at, deferred.claimed_by) == (
        0,
        at(2.5),
        None,
    )
    assert await claim(db, "w1", at(2.4)) == []
    assert await claim(db, "w1", at(2.5)) == [rid]


async def test_next_due_at(db: Database) -> None:
    assert await next_due(db) is None
    a1 = await put(db, CHAT, "a1", not_before=at(20))
    await put(db, CHAT, "a2", not_before=at(1))  # not a head: does not count
    assert await next_due(db) == at(20)
    b1 = await put(db, ALICE, "b1", not_before=at(5))
    assert await next_due(db) == at(5)
    # A claimed row is ready again only when its lease ends.
    assert await claim(db, "w1", at(5)) == [b1]
    assert await next_due(db) == at(20)
    c1 = await put(db, BOB, "c1", not_before=at(7))
    assert await next_due(db) == at(7)
    assert await claim(db, "w1", at(20)) == [c1, a1]
    assert await next_due(db) == at(5) + LEASE
    for rid in (b1, c1, a1):
        assert await sent(db, rid, "w1", at(21))
    assert await next_due(db) == at(1)  # a2 is the head now, and overdue
    assert await claim(db, "w1", at(21)) != []
    assert await next_due(db) == at(21) + LEASE


# -- shared rate windows --------------------------------------------------------------


async def take(
    db: Database,
    now: dt.datetime,
    *,
    key: str = "webhook:x",
    count: int = 3,
    per_seconds: float = 10.0,
    margin: float = 0.0,
) -> float:
    """ratelimit.acquire in its own transaction: 0 for a slot, else the wait in seconds."""
    async with db.transaction() as s:
        return await ratelimit.acquire(
            s, key=key, count=count, per_seconds=per_seconds, now=now, margin=margin
        )


async def window(db: Database, key: str = "webhook:x") -> list[float]:
    """The send times stored for a key, as offsets from T0."""
    async with db.read() as s:
        found = await s.get(RateWindow, key)
        assert found is not None
        return [round(float(t) - T0.timestamp(), 6) for t in found.sends]


async def test_acquire_is_a_sliding_window(db: Database) -> None:
    assert [await take(db, at(t)) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert await take(db, at(3)) == pytest.approx(7.0)  # the slot taken at 0 frees at 10
    assert await take(db, at(9.5)) == pytest.approx(0.5)
    assert await window(db) == [0, 1, 2]  # a refusal takes nothing
    assert await take(db, at(10)) == 0.0  # (0, 10]: the send at 0 has left the window
    assert await window(db) == [1, 2, 10]
    assert await take(db, at(10.5)) == pytest.approx(0.5)
    assert await take(db, at(11)) == 0.0
    assert await take(db, at(12)) == 0.0
    assert await take(db, at(12)) == pytest.approx(8.0)
    assert await window(db) == [10, 11, 12]


async def test_acquire_margin_widens_the_window(db: Database) -> None:
    assert await take(db, at(0), count=2, margin=1.0) == 0.0
    assert await take(db, at(4), count=2, margin=1.0) == 0.0
    assert await take(db, at(10), count=2, margin=1.0) == pytest.approx(1.0)
    assert await take(db, at(10.5), count=2, margin=1.0) == pytest.approx(0.5)
    assert await take(db, at(11), count=2, margin=1.0) == 0.0
    assert await take(db, at(11), count=2, margin=1.0) == pytest.approx(4.0)


async def test_acquire_waits_for_the_count_th_latest_send(db: Database) -> None:
    for t in (0, 0.1, 0.2, 0.3, 0.4):
        assert await take(db, at(t), count=5, per_seconds=2.0) == 0.0
    assert await take(db, at(0.5), count=5, per_seconds=2.0) == pytest.approx(1.5)
    assert await take(db, at(2.0), count=5, per_seconds=2.0) == 0.0
    assert await take(db, at(2.0), count=5, per_seconds=2.0) == pytest.approx(0.1)


async def test_acquire_keys_are_independent_and_zero_limits_are_off(db: Database) -> None:
    assert await take(db, T0, key="a", count=1) == 0.0
    assert await take(db, T0, key="b", count=1) == 0.0
    assert await take(db, T0, key="a", count=1) == pytest.approx(10.0)
    assert await take(db, T0, key="c", count=0) == 0.0
    assert await take(db, T0, key="c", per_seconds=0) == 0.0


async def test_concurrent_acquires_never_exceed_the_count(db: Database) -> None:
    results = await asyncio.gather(*(take(db, T0, key="race", count=4) for _ in range(12)))
    assert sorted(results) == [0.0] * 4 + [pytest.approx(10.0)] * 8
    assert len(await window(db, "race")) == 4


async def test_settle_moves_a_slot_to_when_the_platform_answered(db: Database) -> None:
    assert await take(db, at(0), count=1) == 0.0
    async with db.transaction() as s:
        await ratelimit.settle(s, keys=["webhook:x"], taken_at=at(0), at=at(4))
    assert await window(db) == [4]
    assert await take(db, at(10), count=1) == pytest.approx(4.0)  # (4 + 10) - 10, not 0
    assert await take(db, at(14), count=1) == 0.0
    assert await window(db) == [14]
    async with db.transaction() as s:  # an answer no later than the slot changes nothing
        await ratelimit.settle(s, keys=["webhook:x"], taken_at=at(14), at=at(14))
        await ratelimit.settle(s, keys=["nothing-here"], taken_at=at(14), at=at(15))
    assert await window(db) == [14]
    async with db.transaction() as s:  # a slot pruned meanwhile is counted again
        await ratelimit.settle(s, keys=["webhook:x"], taken_at=at(-50), at=at(15))
    assert await window(db) == [14, 15]


async def test_lock_windows_creates_and_locks_every_key(db: Database) -> None:
    async with db.transaction() as s:
        await ratelimit.lock_windows(s, ["b", "a", "b"], now=T0)
    async with db.read() as s:
        rows = (await s.scalars(select(RateWindow).order_by(RateWindow.key))).all()
    assert [(r.key, r.sends) for r in rows] == [("a", []), ("b", [])]
