"""The outbox sender against the in-memory platform and, over real HTTP, the webhook fake."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import random
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from fakes.webhook_server import FakeWebhook
from pydantic import ValidationError
from sqlalchemy import select

from bot.core.platform import (
    Button,
    Capabilities,
    Card,
    Delivery,
    OutboundMessage,
    PermanentError,
    Platform,
    RateLimit,
    RetryLater,
    SendResult,
    TargetKind,
)
from bot.delivery.sender import OutboxSender, Outcome, RetryPolicy
from bot.platforms.memory import MemoryPlatform, fail_targets
from bot.platforms.webhook import WebhookConfig, WebhookPlatform, parse_retry_after
from storage import outbox
from storage.db import Database
from storage.models import AuditEvent, OutboxMessage, RateWindow
from storage.types import OutboxState

from conftest import T0

TOKEN = "s3cret-token"


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by some seconds."""
        self.now += dt.timedelta(seconds=seconds)

    def at(self, seconds: float) -> dt.datetime:
        """T0 plus some seconds."""
        return T0 + dt.timedelta(seconds=seconds)


@dataclass
class Harness:
    """One platform under test with its observation and failure switches."""

    platform: MemoryPlatform | WebhookPlatform
    memory: MemoryPlatform | None = None
    fake: FakeWebhook | None = None
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The platform name the outbox rows use."""
        return self.platform.name

    def target(self, kind: str, address: str) -> outbox.Target:
        """A target on this platform."""
        return outbox.Target(self.name, kind, address)

    def unavailable(self, n: int) -> None:
        """The next n calls fail with a 503."""
        if self.memory is not None:
            self.memory.fail_next(*(RetryLater("HTTP 503") for _ in range(n)))
        else:
            assert self.fake is not None
            self.fake.fail_next(n, 503)

    def rate_limited_once(self, retry_after: float) -> None:
        """The next call gets a 429 with Retry-After."""
        if self.memory is not None:
            self.memory.fail_next(RetryLater("HTTP 429", retry_after, rate_limited=True))
        else:
            assert self.fake is not None
            self.fake.fail_next(1, 429, retry_after=int(retry_after))

    def down(self) -> None:
        """Every call fails with a 503 until recover()."""
        if self.memory is not None:
            self.memory.fail_with(lambda _op, _d: RetryLater("HTTP 503"))
        else:
            assert self.fake is not None
            self.fake.outage(503)

    def reject(self, address: str) -> None:
        """Calls to this target fail permanently with a 400."""
        if self.memory is not None:
            self.memory.fail_with(fail_targets([address], lambda: PermanentError("HTTP 400")))
        else:
            assert self.fake is not None
            self.fake.permanent(address, status=400)

    def recover(self) -> None:
        """Accept everything again."""
        if self.memory is not None:
            self.memory.fail_with(None)
        else:
            assert self.fake is not None
            self.fake.recover()
            self.fake.clear_permanent()

    def calls(self) -> int:
        """How many sends and edits reached the platform, failed or not."""
        if self.memory is not None:
            return len(self.memory.calls)
        assert self.fake is not None
        return len(self.fake.requests)

    def delivered(self) -> list[tuple[str, str, str, str]]:
        """Accepted sends as (target, text, idempotency key, message id), in order."""
        if self.memory is not None:
            return [
                (
                    r.delivery.target,
                    r.delivery.message.text,
                    r.delivery.idempotency_key,
                    r.message_id,
                )
                for r in self.memory.sent
            ]
        assert self.fake is not None
        return [(r.target, r.text, r.key, r.message_id) for r in self.fake.sends]

    def edited(self) -> list[tuple[str, str]]:
        """Accepted edits as (message id, new text), in order."""
        if self.memory is not None:
            return [(r.message_id, r.delivery.message.text) for r in self.memory.edits]
        assert self.fake is not None
        return [(r.message_id, r.text) for r in self.fake.edits]


def fast(url: str) -> WebhookConfig:
    """A webhook config whose own limit never gets in the way of clock-driven tests."""
    return WebhookConfig(url=url, rate_count=10_000, rate_per_seconds=1.0)


@pytest.fixture(params=["memory", "webhook"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The in-memory platform, or the webhook platform talking HTTP to a loopback fake."""
    if request.param == "memory":
        memory = MemoryPlatform()
        yield Harness(memory, memory=memory)
        return
    async with FakeWebhook(token=TOKEN) as fake:
        platform = WebhookPlatform(fast(fake.url), TOKEN)
        yield Harness(platform, fake=fake)
        await platform.close()


def make_sender(
    db: Database,
    h: Harness,
    clock: Callable[[], dt.datetime],
    *,
    policy: RetryPolicy | None = None,
    worker: str = "w1",
) -> OutboxSender:
    """A sender for one platform with a seeded jitter."""
    return OutboxSender(
        db,
        {h.name: h.platform},
        worker=worker,
        clock=clock,
        policy=policy or RetryPolicy(max_attempts=10, base=2.0, cap=60.0),
        rng=random.Random(20191202),
    )


async def put(
    db: Database,
    target: outbox.Target,
    key: str,
    text: str,
    now: dt.datetime,
    *,
    edit_of_id: int | None = None,
) -> int:
    """Enqueue one message; its outbox id."""
    async with db.transaction() as s:
        row = await outbox.enqueue(
            s,
            target=target,
            payload=OutboundMessage(text).to_payload(),
            idempotency_key=key,
            now=now,
            edit_of_id=edit_of_id,
        )
        return row.id


async def load(db: Database, row_id: int) -> OutboxMessage:
    """A fresh copy of an outbox row."""
    async with db.read() as s:
        row = await s.get(OutboxMessage, row_id)
        assert row is not None
        return row


async def drain(
    db: Database,
    sender: OutboxSender,
    clock: ManualClock,
    *,
    rounds: int = 200,
) -> list[Outcome]:
    """Run the sender, jumping the clock to the next due row, until nothing is pending."""
    outcomes: list[Outcome] = []
    for _ in range(rounds):
        batch = await sender.run_once()
        outcomes += batch
        async with db.read() as s:
            due = await outbox.next_due_at(s)
        if due is None:
            return outcomes
        clock.now = max(clock.now, due)
    raise AssertionError("the outbox did not drain")


def by_row(outcomes: list[Outcome]) -> dict[int, list[str]]:
    """Each row's outcomes, in order."""
    result: dict[int, list[str]] = defaultdict(list)
    for outcome in outcomes:
        result[outcome.outbox_id].append(outcome.result)
    return dict(result)


@pytest.fixture
def clock() -> ManualClock:
    """The test's clock, at T0 until the test moves it."""
    return ManualClock()


@pytest.fixture
def sender(db: Database, harness: Harness, clock: ManualClock) -> OutboxSender:
    """A sender for the harness's platform on the test's clock, with the default test policy."""
    return make_sender(db, harness, clock)


# -- retries, order and backoff -------------------------------------------------------


async def test_an_outage_then_recovery_delivers_everything_in_order_with_backoff(
    db: Database, harness: Harness, clock: ManualClock
) -> None:
    policy = RetryPolicy(max_attempts=10, base=2.0, cap=60.0)
    sender = make_sender(db, harness, clock, policy=policy)
    targets = [harness.target("chat", "main"), harness.target("person", "p001")]
    targets.append(harness.target("person", "p002"))
    expected: dict[str, list[str]] = defaultdict(list)
    for i in range(4):
        for t in targets:
            text = f"{t.address} #{i}"
            await put(db, t, f"k:{t.address}:{i}", text, T0)
            expected[t.address].append(text)
    harness.unavailable(14)
    gaps: dict[int, list[tuple[int, float]]] = defaultdict(list)
    outcomes: list[Outcome] = []
    for _ in range(100):
        batch = await sender.run_once()
        outcomes += batch
        for outcome in batch:
            if outcome.result == "retry":
                row = await load(db, outcome.outbox_id)
                wait = (row.next_attempt_at - clock.now).total_seconds()
                gaps[row.id].append((row.attempts, wait))
        async with db.read() as s:
            due = await outbox.next_due_at(s)
        if due is None:
            break
        clock.now = max(clock.now, due)  # never earlier than the next row is due
    else:
        raise AssertionError("the outbox did not drain")

    assert [o.result for o in outcomes].count("retry") == 14
    assert harness.calls() == 12 + 14
    delivered = harness.delivered()
    assert len(delivered) == 12
    assert len({key for _, _, key, _ in delivered}) == 12
    for address, texts in expected.items():
        assert [text for target, text, _, _ in delivered if target == address] == texts
    async with db.read() as s:
        assert (await outbox.counts(s)) == {"pending": 0, "sent": 12, "dead": 0}
    # Full-jitter exponential backoff: attempt k waits within [c/2, c], c = base * 2**(k-1).
    assert max(len(g) for g in gaps.values()) >= 4
    for series in gaps.values():
        assert [attempts for attempts, _ in series] == list(range(1, len(series) + 1))
        for attempts, gap in series:
            ceiling = min(policy.cap, policy.base * 2 ** (attempts - 1))
            assert max(1.0, ceiling / 2) <= gap <= ceiling
        waits = [gap for _, gap in series]
        assert waits == sorted(waits)
        if len(waits) >= 3:
            assert waits[-1] > waits[0] * 2


async def test_a_429_retry_after_is_honoured(
    db: Database, harness: Harness, clock: ManualClock, sender: OutboxSender
) -> None:
    rid = await put(db, harness.target("chat", "main"), "k", "hello", T0)
    harness.rate_limited_once(30)
    assert [o.result for o in await sender.run_once()] == ["retry"]
    row = await load(db, rid)
    assert row.next_attempt_at == clock.at(30)
    assert "429" in (row.last_error or "")
    clock.advance(29.9)
    assert await sender.run_once() == []
    assert harness.calls() == 1
    clock.now = clock.at(30)
    assert [o.result for o in await sender.run_once()] == ["sent"]
    assert harness.calls() == 2
    assert [text for _, text, _, _ in harness.delivered()] == ["hello"]


async def test_a_permanent_error_is_dead_after_one_attempt_and_retry_dead_delivers_it(
    db: Database, harness: Harness, clock: ManualClock, sender: OutboxSender
) -> None:
    bad = await put(db, harness.target("person", "p404"), "bad", "to nobody", T0)
    good = await put(db, harness.target("chat", "main"), "good", "to the group", T0)
    harness.reject("p404")
    assert by_row(await sender.run_once()) == {bad: ["dead"], good: ["sent"]}
    dead = await load(db, bad)
    assert (dead.state, dead.attempts) == (OutboxState.DEAD, 1)
    assert "400" in (dead.last_error or "")
    clock.advance(3600)
    assert await sender.run_once() == []
    assert harness.calls() == 2
    async with db.read() as s:
        assert (await outbox.counts(s))["dead"] == 1
        actions = (await s.scalars(select(AuditEvent.action))).all()
    assert list(actions) == ["outbox.dead"]

    harness.recover()
    async with db.transaction() as s:
        await outbox.retry_dead(s, bad, actor="cli", now=clock.now)
    assert by_row(await sender.run_once()) == {bad: ["sent"]}
    assert sorted(text for _, text, _, _ in harness.delivered()) == ["to nobody", "to the group"]
    assert (await load(db, bad)).state is OutboxState.SENT


async def test_max_attempts_dead_letters_a_row_that_keeps_failing(
    db: Database, harness: Harness, clock: ManualClock
) -> None:
    sender = make_sender(db, harness, clock, policy=RetryPolicy(max_attempts=4, base=2.0))
    rid = await put(db, harness.target("chat", "main"), "k", "hello", T0)
    harness.down()
    outcomes = await drain(db, sender, clock)
    assert [o.result for o in outcomes] == ["retry", "retry", "retry", "dead"]
    assert harness.calls() == 4
    row = await load(db, rid)
    assert (row.state, row.attempts) == (OutboxState.DEAD, 4)
    assert "503" in (row.last_error or "")
    assert harness.delivered() == []


# -- edits ----------------------------------------------------------------------------


async def test_an_edit_in_the_same_chat_follows_its_original(
    db: Database, harness: Harness, sender: OutboxSender
) -> None:
    chat = harness.target("chat", "main")
    original = await put(db, chat, "post", "已确认 0/5", T0)
    edit = await put(db, chat, "tally:1", "已确认 1/5", T0, edit_of_id=original)
    assert by_row(await sender.run_once()) == {original: ["sent"]}
    assert by_row(await sender.run_once()) == {edit: ["sent"]}
    [(_, _, _, message_id)] = harness.delivered()
    assert harness.edited() == [(message_id, "已确认 1/5")]
    assert (await load(db, edit)).platform_message_id == message_id


async def card_and_edit(db: Database, h: Harness, person_id: str) -> tuple[int, int]:
    """A card to a person ("请确认") and its edit ("已确认") queued in the cards chat: the
    (original, edit) rows."""
    original = await put(db, h.target("person", person_id), "card", "请确认", T0)
    edit = await put(db, h.target("chat", "cards"), "card:acked", "已确认", T0, edit_of_id=original)
    return original, edit


async def test_an_edit_waits_for_its_original_and_uses_its_message_id(
    db: Database, harness: Harness, clock: ManualClock, sender: OutboxSender
) -> None:
    original, edit = await card_and_edit(db, harness, "p001")
    harness.unavailable(1)
    assert by_row(await sender.run_once()) == {original: ["retry"], edit: ["deferred"]}
    assert harness.calls() == 1  # the edit did not reach the platform
    outcomes = await drain(db, sender, clock)
    assert by_row(outcomes)[original] == ["sent"]
    assert by_row(outcomes)[edit][-1] == "sent"
    [(_, _, _, message_id)] = harness.delivered()
    assert harness.edited() == [(message_id, "已确认")]
    assert (await load(db, edit)).platform_message_id == message_id
    if harness.fake is not None:
        assert harness.fake.current[message_id]["text"] == "已确认"


async def test_an_edit_of_a_dead_original_is_dead_too(
    db: Database, harness: Harness, clock: ManualClock, sender: OutboxSender
) -> None:
    original, edit = await card_and_edit(db, harness, "p404")
    harness.reject("p404")
    outcomes = by_row(await drain(db, sender, clock))
    assert outcomes[original] == ["dead"]
    assert outcomes[edit][-1] == "dead"
    assert "never delivered" in ((await load(db, edit)).last_error or "")
    assert harness.edited() == []


# -- idempotency ----------------------------------------------------------------------


async def test_the_idempotency_key_reaches_the_platform(
    db: Database, harness: Harness, clock: ManualClock, sender: OutboxSender
) -> None:
    rid = await put(db, harness.target("chat", "main"), "notice:7:post", "hello", T0)
    await drain(db, sender, clock)
    [(_, _, key, message_id)] = harness.delivered()
    assert key == "notice:7:post"
    assert (await load(db, rid)).platform_message_id == message_id
    if harness.fake is not None:
        [request] = harness.fake.requests
        assert request.headers["Idempotency-Key"] == "notice:7:post"


async def test_a_lost_reply_is_retried_with_the_same_key_and_not_doubled(
    db: Database, clock: ManualClock
) -> None:
    async with FakeWebhook(token=TOKEN) as fake:
        platform = WebhookPlatform(fast(fake.url), TOKEN)
        h = Harness(platform, fake=fake)
        sender = make_sender(db, h, clock)
        rid = await put(db, h.target("chat", "main"), "notice:8:post", "hello", T0)
        fake.lose_responses(1)
        outcomes = await drain(db, sender, clock)
        await platform.close()
    assert [o.result for o in outcomes] == ["retry", "sent"]
    [accepted] = fake.sends
    assert fake.duplicates_by_key == {"notice:8:post": 1}
    assert fake.requests_by_status == {504: 1, 200: 1}
    assert (await load(db, rid)).platform_message_id == accepted.message_id


async def test_a_cancelled_sender_waits_for_every_delivery_to_stop(
    db: Database, clock: ManualClock
) -> None:
    started: list[str] = []
    stopped: list[str] = []
    both_started = asyncio.Event()

    class Hanging(MemoryPlatform):
        async def send(self, delivery: Delivery) -> SendResult:
            started.append(delivery.target)
            if len(started) == 2:
                both_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if delivery.target == "p002":  # its clean-up takes a few turns of the loop
                    for _ in range(5):
                        await asyncio.sleep(0)
                    stopped.append(delivery.target)
                raise
            raise AssertionError("unreachable")

    memory = Hanging(clock=clock)
    h = Harness(memory, memory=memory)
    sender = make_sender(db, h, clock)
    await put(db, h.target("person", "p001"), "a", "one", T0)
    await put(db, h.target("person", "p002"), "b", "two", T0)
    task = asyncio.create_task(sender.run_once())
    await asyncio.wait_for(both_started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped == ["p002"]


@pytest.mark.parametrize("fails", [False, True])
async def test_a_worker_that_lost_its_lease_records_nothing(
    db: Database, fails: bool, clock: ManualClock
) -> None:

    class Stalling(MemoryPlatform):
        async def send(self, delivery: Delivery) -> SendResult:
            clock.advance(61)  # longer than the lease: another worker takes the row over
            async with db.transaction() as s:
                taken = await outbox.claim_due(
                    s, worker="w2", now=clock.now, lease=dt.timedelta(seconds=60), limit=10
                )
            assert [r.id for r in taken] == [delivery.outbox_id]
            if fails:
                raise RetryLater("HTTP 503")
            return await super().send(delivery)

    memory = Stalling(clock=clock)
    h = Harness(memory, memory=memory)
    sender = make_sender(db, h, clock)
    rid = await put(db, h.target("chat", "main"), "k", "hello", T0)
    assert [o.result for o in await sender.run_once()] == ["lost"]
    row = await load(db, rid)
    assert (row.state, row.attempts, row.claimed_by) == (OutboxState.PENDING, 0, "w2")
    assert row.platform_message_id is None and row.last_error is None


# -- rate limits ----------------------------------------------------------------------


async def test_a_refused_limit_does_not_use_up_another_limits_slot(
    db: Database, clock: ManualClock
) -> None:
    shared = RateLimit("memory:app", 10, 60.0)
    per_chat = RateLimit("memory:chat", 1, 60.0)

    def limits(delivery: Delivery) -> list[RateLimit]:
        return [shared, per_chat] if delivery.target_kind is TargetKind.CHAT else [shared]

    memory = MemoryPlatform(rate_limits=limits, clock=clock)
    h = Harness(memory, memory=memory)
    sender = make_sender(db, h, clock)
    first = await put(db, h.target("chat", "main"), "a", "one", T0)
    second = await put(db, h.target("chat", "other"), "b", "two", T0)
    results = by_row(await sender.run_once())
    assert sorted(r for rs in results.values() for r in rs) == ["deferred", "sent"]
    async with db.read() as s:
        window = await s.get(RateWindow, "memory:app")
        assert window is not None
        assert len(window.sends) == 1  # the deferred row took no slot of the shared limit
    assert {first, second} == set(results)


async def test_a_slow_sends_slot_counts_from_when_the_platform_answered(
    db: Database, clock: ManualClock
) -> None:

    def slow(_operation: str, _delivery: Delivery) -> BaseException | None:
        clock.advance(3)  # the request takes 3 s to reach the platform and come back
        return None

    memory = MemoryPlatform(rate_limits=[RateLimit("memory:app", 1, 10.0)], clock=clock)
    memory.fail_with(slow)
    h = Harness(memory, memory=memory)
    sender = make_sender(db, h, clock, policy=RetryPolicy(rate_margin=0.0))
    first = await put(db, h.target("person", "p001"), "a", "one", T0)
    await sender.run_once()
    assert (await load(db, first)).state is OutboxState.SENT
    second = await put(db, h.target("person", "p002"), "b", "two", clock.now)
    assert by_row(await sender.run_once()) == {second: ["deferred"]}
    # Not T0 + 10: the platform may have counted the first send as late as T0 + 3.
    assert (await load(db, second)).next_attempt_at == clock.at(3 + 10)


async def test_the_sender_uses_the_allowance_without_a_single_429(db: Database) -> None:
    count, per, n = 5, 2.0, 15
    async with FakeWebhook(token=TOKEN) as fake:
        fake.rate_limit(count, per)
        config = WebhookConfig(url=fake.url, rate_count=count, rate_per_seconds=per)
        platform = WebhookPlatform(config, TOKEN)
        h = Harness(platform, fake=fake)
        sender = OutboxSender(
            db,
            {h.name: platform},
            worker="w1",
            clock=lambda: dt.datetime.now(dt.UTC),
            policy=RetryPolicy(rate_margin=0.01),
        )
        now = dt.datetime.now(dt.UTC)
        for i in range(n):
            await put(db, h.target("person", f"p{i % 8:03}"), f"k{i}", f"#{i}", now)
        task = asyncio.create_task(sender.run())
        try:
            await fake.wait_until(lambda: len(fake.sends) >= n, within=(n / count) * per + 5)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await platform.close()
    assert fake.rejections == 0, [
        (r.status, round(r.at - fake.requests[0].at, 3)) for r in fake.requests
    ]
    assert fake.requests_by_status == {201: n}
    arrivals = [r.at for r in fake.sends]
    span = arrivals[-1] - arrivals[0]
    # From the first send to the last, the limit allows a full window's burst plus
    # `count` more per `per` seconds: that is the allowance the run should nearly use up.
    allowance = count * (1 + span / per)
    assert n / allowance >= 0.95, (span, [round(a - arrivals[0], 3) for a in arrivals])
    for i in range(count, n):
        assert arrivals[i] - arrivals[i - count] >= per


# -- the webhook platform on the wire -------------------------------------------------


def delivery(**changes: object) -> Delivery:
    """A delivery with a card, mentions and a reply-to."""
    message = OutboundMessage(
        text="关于报送自查情况的通知 #12",
        card=Card(
            title="#12 自查报告",
            body="请于12月10日前报送",
            status="已确认 0/5",
            buttons=(Button("收到", "ack:12"), Button("查看", "open:12", "https://x.test/n/12")),
        ),
        mentions=("p001", "p002"),
        reply_to="wh-0",
    )
    fields: dict[str, object] = {
        "outbox_id": 41,
        "idempotency_key": "notice:12:post",
        "target_kind": TargetKind.CHAT,
        "target": "main",
        "message": message,
        "edit_of": None,
    }
    fields.update(changes)
    return Delivery(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhook]:
    """A webhook fake on loopback."""
    async with FakeWebhook(token=TOKEN) as server:
        yield server


@pytest.fixture
async def webhook(fake: FakeWebhook) -> AsyncIterator[WebhookPlatform]:
    """A webhook platform pointed at the fake."""
    platform = WebhookPlatform(WebhookConfig(url=fake.url + "/"), TOKEN)
    yield platform
    await platform.close()


async def test_the_webhook_sends_the_wire_shape_the_fake_checks(
    fake: FakeWebhook, webhook: WebhookPlatform
) -> None:
    result = await webhook.send(delivery())
    assert result.message_id == "wh-1"
    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/hooks/main/messages", 201)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == "notice:12:post"
    assert request.headers["Content-Type"] == "application/json"
    [received] = fake.received
    assert received.body == {
        "target_kind": "chat",
        "target": "main",
        "text": "关于报送自查情况的通知 #12",
        "card": {
            "title": "#12 自查报告",
            "body": "请于12月10日前报送",
            "status": "已确认 0/5",
            "buttons": [
                {"label": "收到", "value": "ack:12", "url": None},
                {"label": "查看", "value": "open:12", "url": "https://x.test/n/12"},
            ],
        },
        "mentions": ["p001", "p002"],
        "reply_to": "wh-0",
    }
    edited = await webhook.edit(
        delivery(
            idempotency_key="notice:12:tally:1",
            message=OutboundMessage("已确认 1/5"),
            edit_of="wh-1",
            target_kind=TargetKind.PERSON,
            target="p001",
        )
    )
    assert edited.message_id == "wh-1"
    assert (fake.requests[1].method, fake.requests[1].path) == ("PUT", "/hooks/main/messages/wh-1")
    assert fake.current["wh-1"] == {
        "target_kind": "person",
        "target": "p001",
        "text": "已确认 1/5",
        "card": None,
        "mentions": [],
        "reply_to": None,
    }
    again = await webhook.send(delivery())
    assert again.message_id == "wh-1"
    assert fake.duplicates_by_key == {"notice:12:post": 1}
    assert len(fake.sends) == 1


async def test_a_wrong_token_is_a_permanent_error(fake: FakeWebhook) -> None:
    platform = WebhookPlatform(WebhookConfig(url=fake.url), "not-the-token")
    with pytest.raises(PermanentError, match="401"):
        await platform.send(delivery())
    await platform.close()
    assert fake.received == []
    assert fake.requests_by_status == {401: 1}


async def test_an_edit_of_an_unknown_message_is_permanent(
    fake: FakeWebhook, webhook: WebhookPlatform
) -> None:
    with pytest.raises(PermanentError, match="404"):
        await webhook.edit(delivery(edit_of="wh-99"))
    with pytest.raises(PermanentError):
        await webhook.edit(delivery(edit_of=None))


def http_date(when: dt.datetime) -> str:
    """An IMF-fixdate."""
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


SERVER_NOW = dt.datetime(2019, 12, 2, 1, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after", "rate_limited"),
    [
        (500, None, {}, None, False),
        (502, None, {}, None, False),
        (503, None, {"Retry-After": "7"}, 7.0, False),
        (408, None, {}, None, False),
        (429, {"retry_after_ms": 1500}, {}, 1.5, True),
        (429, {"retry_after": 3}, {"Retry-After": "2"}, 3.0, True),
        (429, None, {"Retry-After": "30"}, 30.0, True),
        (
            429,
            None,
            {
                "Date": http_date(SERVER_NOW),
                "Retry-After": http_date(SERVER_NOW + dt.timedelta(seconds=120)),
            },
            120.0,
            True,
        ),
        (429, None, {"Retry-After": "soon"}, None, True),
    ],
)
async def test_transient_answers_are_retry_later(
    fake: FakeWebhook,
    webhook: WebhookPlatform,
    status: int,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    retry_after: float | None,
    rate_limited: bool,
) -> None:
    fake.respond_next(status, body, headers)
    with pytest.raises(RetryLater) as caught:
        await webhook.send(delivery())
    assert str(status) in str(caught.value)
    assert caught.value.retry_after == (None if retry_after is None else pytest.approx(retry_after))
    assert caught.value.rate_limited is rate_limited
    assert fake.received == []


@pytest.mark.parametrize(
    ("status", "body", "headers", "match"),
    [
        (400, {"error": {"code": "bad_body", "message": "text must be a string"}}, {}, "text must"),
        (403, {"error": "forbidden here"}, {}, "403: forbidden here"),
        (404, {"message": "no such chat"}, {}, "404: no such chat"),
        (413, None, {}, "413"),
        (200, {}, {}, "without a message_id"),
        (201, {"message_id": ""}, {}, "without a message_id"),
        (200, {"message_id": None}, {}, "protocol violation"),
        (200, {"message_id": "x" * 201}, {}, "protocol violation"),
        (204, b"", {}, "protocol violation"),
        (200, b"<html>ok</html>", {}, "protocol violation"),
        (302, None, {"Location": "http://127.0.0.1:9/elsewhere"}, "302"),
    ],
)
async def test_other_answers_are_permanent(
    fake: FakeWebhook,
    webhook: WebhookPlatform,
    status: int,
    body: dict[str, Any] | bytes | None,
    headers: dict[str, str],
    match: str,
) -> None:
    fake.respond_next(status, body, headers)
    with pytest.raises(PermanentError, match=match):
        await webhook.send(delivery())


async def test_an_answer_naming_a_key_twice_is_a_protocol_violation(
    fake: FakeWebhook, webhook: WebhookPlatform
) -> None:
    """Which message_id would count? Parsers disagree, so neither does (issue 13, item 10)."""
    fake.respond_next(200, b'{"message_id": "m-1", "message_id": "m-2"}')
    with pytest.raises(PermanentError, match="'message_id' twice"):
        await webhook.send(delivery())


async def test_a_numeric_message_id_is_accepted(
    fake: FakeWebhook, webhook: WebhookPlatform
) -> None:
    fake.respond_next(200, {"message_id": 1234})
    assert (await webhook.send(delivery())).message_id == "1234"


async def test_timeouts_and_connection_errors_are_retry_later(fake: FakeWebhook) -> None:
    fake.delay = 1.1
    slow = WebhookPlatform(WebhookConfig.model_validate({"url": fake.url, "timeout": "1s"}), TOKEN)
    with pytest.raises(RetryLater, match="timed out"):
        await slow.send(delivery())
    await slow.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = WebhookPlatform(WebhookConfig(url=f"http://127.0.0.1:{port}/hook"), TOKEN)
    with pytest.raises(RetryLater, match="Connect"):
        await closed.send(delivery())
    await closed.close()


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", now=SERVER_NOW) == 120.0
    assert parse_retry_after(" 1.5 ", now=SERVER_NOW) == 1.5
    assert parse_retry_after("-4", now=SERVER_NOW) == 0.0
    assert parse_retry_after("nan", now=SERVER_NOW) is None
    assert parse_retry_after("", now=SERVER_NOW) is None
    assert parse_retry_after(None, now=SERVER_NOW) is None
    assert parse_retry_after("tomorrow", now=SERVER_NOW) is None
    later = http_date(SERVER_NOW + dt.timedelta(seconds=90))
    assert parse_retry_after(later, now=SERVER_NOW) == 90.0
    earlier = http_date(SERVER_NOW - dt.timedelta(seconds=90))
    assert parse_retry_after(earlier, now=SERVER_NOW) == 0.0


# -- the webhook platform's configuration and lifecycle -------------------------------


def test_webhook_config_defaults_and_validation() -> None:
    config = WebhookConfig.model_validate({"url": "https://bridge.example.org/workbot/"})
    assert config.url == "https://bridge.example.org/workbot"
    assert (config.token_env, config.rate_count, config.rate_per_seconds) == (
        "WORKBOT_WEBHOOK_TOKEN",
        20,
        60.0,
    )
    assert config.timeout == dt.timedelta(seconds=10)
    tuned = WebhookConfig.model_validate(
        {"url": "http://10.0.0.5:8081", "rate_count": 5, "rate_per_seconds": 2, "timeout": "30s"}
    )
    assert (tuned.rate_per_seconds, tuned.timeout) == (2.0, dt.timedelta(seconds=30))
    for bad in (
        {"url": "ftp://example.org"},
        {"url": "https://example.org/?a=1"},
        {"url": "https://example.org/" + "x" * 200},
        {},
        {"url": "https://example.org", "token_env": "NOT A NAME"},
        {"url": "https://example.org", "rate_count": 0},
        {"url": "https://example.org", "rate_per_seconds": 0},
        {"url": "https://example.org", "timeout": "soon"},
        {"url": "https://example.org", "extra": True},
    ):
        with pytest.raises(ValidationError):
            WebhookConfig.model_validate(bad)


def test_webhook_config_reports_a_missing_token() -> None:
    config = WebhookConfig(url="https://example.org", token_env="HOOK_TOKEN")
    assert config.environment_problems({}) == [
        ("token_env", "environment variable HOOK_TOKEN is not set")
    ]
    assert config.environment_problems({"HOOK_TOKEN": ""}) == [
        ("token_env", "environment variable HOOK_TOKEN is empty")
    ]
    assert config.environment_problems({"HOOK_TOKEN": "t"}) == []
    assert config.token({"HOOK_TOKEN": "t"}) == "t"


async def test_webhook_platform_declares_one_limit_and_its_capabilities() -> None:
    config = WebhookConfig(url="https://example.org/hook", rate_count=7, rate_per_seconds=3)
    platform = WebhookPlatform(config, TOKEN)
    assert isinstance(platform, Platform)
    assert platform.name == "webhook"
    assert platform.capabilities == Capabilities(
        buttons=True, edit=True, dm=True, idempotent_send=True
    )
    assert platform.rate_limits(delivery()) == [
        RateLimit("webhook:https://example.org/hook", 7, 3.0)
    ]
    assert platform.rate_limits(delivery(target_kind=TargetKind.PERSON, target="p001")) == [
        RateLimit("webhook:https://example.org/hook", 7, 3.0)
    ]
    await platform.close()
    with pytest.raises(ValueError, match="token"):
        WebhookPlatform(config, "")


async def test_webhook_platform_closes_only_the_session_it_owns(fake: FakeWebhook) -> None:
    owned = WebhookPlatform(WebhookConfig(url=fake.url), TOKEN)
    await owned.send(delivery())
    session = owned._session
    assert session is not None and not session.closed
    await owned.close()
    assert session.closed
    async with aiohttp.ClientSession() as borrowed:
        platform = WebhookPlatform(WebhookConfig(url=fake.url), TOKEN, borrowed)
        await platform.send(delivery(idempotency_key="other"))
        await platform.close()
        assert not borrowed.closed


# -- the in-memory platform -----------------------------------------------------------


async def test_memory_platform_records_and_scripts(clock: ManualClock) -> None:
    memory = MemoryPlatform(clock=clock, rate_limits=[RateLimit("memory:x", 1, 1.0)])
    assert isinstance(memory, Platform)
    memory.fail_next(RetryLater("HTTP 503"), PermanentError("HTTP 400"))
    with pytest.raises(RetryLater):
        await memory.send(delivery())
    with pytest.raises(PermanentError):
        await memory.send(delivery())
    clock.advance(5)
    first = await memory.send(delivery())
    second = await memory.send(delivery(idempotency_key="other", target="p001"))
    assert (first.message_id, second.message_id) == ("m1", "m2")
    assert (await memory.send(delivery())).message_id == "m1"
    assert memory.duplicates == 1
    edited = await memory.edit(delivery(edit_of="m1", message=OutboundMessage("new")))
    assert edited.message_id == "m1"
    assert memory.messages["m1"].text == "new"
    assert [(r.operation, r.message_id, r.at) for r in memory.records] == [
        ("send", "m1", clock.at(5)),
        ("send", "m2", clock.at(5)),
        ("edit", "m1", clock.at(5)),
    ]
    assert [c.error is not None for c in memory.calls] == [True, True, False, False, False, False]
    assert memory.texts("p001") == ["关于报送自查情况的通知 #12"]
    with pytest.raises(PermanentError):
        await memory.edit(delivery(edit_of="m9"))
    memory.fail_with(fail_targets(["p404"], lambda: PermanentError("gone")))
    with pytest.raises(PermanentError, match="gone"):
        await memory.send(delivery(target="p404", idempotency_key="x"))
    assert memory.rate_limits(delivery()) == [RateLimit("memory:x", 1, 1.0)]
    await memory.close()
    assert memory.closed


# -- the fake itself ------------------------------------------------------------------

VALID: dict[str, object] = {
    "target_kind": "chat",
    "target": "main",
    "text": "hi",
    "card": None,
    "mentions": [],
    "reply_to": None,
}


async def test_the_fake_refuses_what_the_api_refuses(fake: FakeWebhook) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"}
    cases: list[tuple[dict[str, str], object, int]] = [
        ({"Idempotency-Key": "k1"}, VALID, 401),
        ({**auth, "Authorization": "Bearer nope"}, VALID, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, VALID, 400),
        (auth, {**VALID, "extra": 1}, 400),
        (auth, {k: v for k, v in VALID.items() if k != "reply_to"}, 400),
        (auth, {**VALID, "target_kind": "room"}, 400),
        (auth, {**VALID, "target": ""}, 400),
        (auth, {**VALID, "mentions": [1]}, 400),
        (auth, {**VALID, "card": {"title": "t"}}, 400),
        (auth, [VALID], 400),
    ]
    async with aiohttp.ClientSession() as http:
        for headers, body, status in cases:
            async with http.post(f"{fake.url}/messages", json=body, headers=headers) as resp:
                assert resp.status == status, (headers, body)
                assert "error" in await resp.json()
        async with http.post(
            f"{fake.url}/messages", data=json.dumps(VALID), headers=auth
        ) as resp:  # not declared as JSON
            assert resp.status == 400
        async with http.put(f"{fake.url}/messages/wh-9", json=VALID, headers=auth) as resp:
            assert resp.status == 404
        async with http.post(f"{fake.url}/messages", json=VALID, headers=auth) as resp:
            assert (resp.status, await resp.json()) == (201, {"message_id": "wh-1"})
    assert len(fake.received) == 1
    assert fake.requests_by_status == {401: 2, 400: 9, 404: 1, 201: 1}


async def test_the_fake_enforces_a_sliding_window_per_hook(fake: FakeWebhook) -> None:
    fake.rate_limit(2, 60.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        for i, url in enumerate([fake.url, fake.url, fake.url, fake.hook_url("other")]):
            headers = {**auth, "Idempotency-Key": f"k{i}"}
            async with http.post(f"{url}/messages", json=VALID, headers=headers) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert 59 <= int(resp.headers["Retry-After"]) <= 60
                    assert 59_000 <= (await resp.json())["retry_after_ms"] <= 60_000
    assert statuses == [201, 201, 429, 201]
    assert fake.rejections == 1


async def test_the_fake_outage_lasts_until_the_request_count(fake: FakeWebhook) -> None:
    platform = WebhookPlatform(fast(fake.url), TOKEN)
    fake.outage(502, until_count=2, retry_after=5)
    for _ in range(2):
        with pytest.raises(RetryLater) as caught:
            await platform.send(delivery())
        assert caught.value.retry_after == 5.0
    assert (await platform.send(delivery())).message_id == "wh-1"
    await platform.close()
    assert fake.requests_by_status == {502: 2, 201: 1}
