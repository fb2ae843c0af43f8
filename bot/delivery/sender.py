"""The outbox sender: claim due rows, respect rate limits, send or edit, record the outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

from bot.core.clock import Clock
from bot.core.loop import WakeableLoop
from bot.core.platform import (
    Delivery,
    OutboundMessage,
    PermanentError,
    Platform,
    RateLimit,
    RetryLater,
    TargetKind,
)
from storage import outbox, ratelimit
from storage.db import Database, DatabaseUnavailable
from storage.models import OutboxMessage
from storage.types import OutboxState

log = logging.getLogger("workbot.delivery")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; dead-letter after max_attempts."""

    max_attempts: int = 8
    base: float = 2.0
    cap: float = 900.0
    # Safety added to a rate-limit window (clock and network jitter between our slot and the
    # platform's counter): rate_margin seconds, but never more than rate_margin_share of the
    # window, or a 1 s window would lose half its allowance to a 1 s margin.
    rate_margin: float = 1.0
    rate_margin_share: float = 0.005

    def margin_for(self, per_seconds: float) -> float:
        """The safety margin, in seconds, for a window of per_seconds."""
        return max(0.0, min(self.rate_margin, self.rate_margin_share * per_seconds))

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the given number of failed attempts (at least 1 s)."""
        ceiling = min(self.cap, self.base * (2 ** max(attempts - 1, 0)))
        return max(1.0, rng.uniform(ceiling / 2, ceiling))


class _Refused(Exception):
    """A rate limit refused a slot: roll back the slots other limits took."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed row (for logs, tests and metrics)."""

    outbox_id: int
    result: str  # sent | retry | dead | deferred | lost
    detail: str = ""


class OutboxSender(WakeableLoop):
    """Delivers the outbox; many Senders (processes) can share one PostgreSQL database."""

    def __init__(
        self,
        db: Database,
        platforms: Mapping[str, Platform],
        *,
        worker: str,
        clock: Clock,
        policy: RetryPolicy | None = None,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        batch: int = 50,
        concurrency: int = 8,
        rng: random.Random | None = None,
        max_idle: float = 300.0,
    ) -> None:
        super().__init__(name="delivery", clock=clock, max_idle=max_idle, log=log)
        self.db = db
        self.platforms = dict(platforms)
        self.worker = worker
        self.policy = policy or RetryPolicy()
        self.lease = lease
        self.batch = batch
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._limit = asyncio.Semaphore(concurrency)
        # After a pass cut short by a database outage: sends the platform accepted but that
        # could not be recorded (outbox id -> platform message id, when answered), and
        # whether claims of that pass may still be held.
        self._unrecorded: dict[int, tuple[str, dt.datetime]] = {}
        self._abandoned = False

    async def one_pass(self) -> float:
        """Deliver one batch; sleep until the next row is due."""
        await self.run_once()
        if self.woken:
            return 0.0  # more was committed meanwhile: look again at once, no need to ask when
        return await self.idle_delay()

    async def idle_delay(self) -> float:
        """Seconds until the next row is due (max_idle when nothing is pending)."""
        async with self.db.read() as session:
            return self.delay_until(await outbox.next_due_at(session))

    async def run_once(self) -> list[Outcome]:
        """Claim and deliver one batch; returns what happened to each row.
        DatabaseUnavailable when the database went away during the pass."""
        try:
            if self._abandoned:
                await self._after_outage()
            async with self.db.transaction() as session:
                rows = await outbox.claim_due(
                    session,
                    worker=self.worker,
                    now=self.clock(),
                    lease=self.lease,
                    limit=self.batch,
                )
                claimed = [(r.id, r) for r in rows]
            if not claimed:
                return []
            # return_exceptions: a cancelled pass waits for every delivery to stop, so none is
            # left running on the database and the platform after run() has returned.
            results = await asyncio.gather(
                *(self._deliver(row) for _, row in claimed), return_exceptions=True
            )
        except DatabaseUnavailable:
            self._abandoned = True
            raise
        outcomes: list[Outcome] = []
        for result in results:
            if isinstance(result, DatabaseUnavailable):
                self._abandoned = True
            if isinstance(result, BaseException):
                raise result
            outcomes.append(result)
        return outcomes

    async def _after_outage(self) -> None:
        """Once the database is back: record the sends that were accepted during the outage
        (so they are not sent again), then give back this worker's other claims, so that the
        rows the cut-short pass held are delivered now rather than when their lease ends.
        (Only this loop claims outbox rows for this worker, and no pass is running now.)"""
        async with self.db.transaction() as session:
            for outbox_id, (message_id, answered) in self._unrecorded.items():
                await outbox.mark_sent(
                    session,
                    outbox_id,
                    worker=self.worker,
                    platform_message_id=message_id,
                    now=answered,
                )
            await outbox.release_claims(session, worker=self.worker)
        self._unrecorded.clear()
        self._abandoned = False

    async def _deliver(self, row: OutboxMessage) -> Outcome:
        async with self._limit:
            try:
                return await self._deliver_one(row)
            except DatabaseUnavailable:
                raise  # the pass stops; the loop waits for the database
            except Exception as exc:  # a bug or an unexpected library error: retry later
                log.exception("outbox %s: unexpected error", row.id)
                return await self._failed(row, f"unexpected: {exc!r}", None, permanent=False)

    async def _deliver_one(self, row: OutboxMessage) -> Outcome:
        platform = self.platforms.get(row.platform)
        if platform is None:
            return await self._failed(
                row, f"no platform {row.platform!r} is configured", None, permanent=True
            )
        edit_of: str | None = None
        if row.edit_of_id is not None:
            async with self.db.read() as session:
                state, edit_of = await outbox.original_message_id(session, row)
            if state is OutboxState.DEAD or (state is OutboxState.SENT and not edit_of):
                return await self._failed(
                    row, "the message to edit was never delivered", None, permanent=True
                )
            if edit_of is None:
                return await self._defer(row, 1.0, "waiting for the original message")
        delivery = Delivery(
            outbox_id=row.id,
            idempotency_key=row.idempotency_key,
            target_kind=TargetKind(row.target_kind),
            target=row.target,
            message=OutboundMessage.from_payload(row.payload),
            edit_of=edit_of,
        )
        limits = platform.rate_limits(delivery)
        wait, taken_at = await self._take_slots(limits)
        if wait > 0:
            return await self._defer(row, wait, "rate limit")
        try:
            if edit_of is not None:
                result = await platform.edit(delivery)
            else:
                result = await platform.send(delivery)
        except RetryLater as exc:
            await self._settle_slots(limits, taken_at)
            return await self._failed(row, str(exc), exc.retry_after, permanent=False)
        except PermanentError as exc:
            await self._settle_slots(limits, taken_at)
            return await self._failed(row, str(exc), None, permanent=True)
        answered = self.clock()
        try:
            async with self.db.transaction() as session:
                ok = await outbox.mark_sent(
                    session,
                    row.id,
                    worker=self.worker,
                    platform_message_id=result.message_id,
                    now=answered,
                )
                if limits and taken_at is not None:
                    keys = [lim.key for lim in limits]
                    await ratelimit.settle(session, keys=keys, taken_at=taken_at, at=answered)
        except DatabaseUnavailable:
            self._unrecorded[row.id] = (result.message_id, answered)  # recorded once it is back
            raise
        if not ok:
            log.warning("outbox %s: sent, but the lease had passed to another worker", row.id)
            return Outcome(row.id, "lost", "lease expired before the result was recorded")
        return Outcome(row.id, "sent", result.message_id)

    async def _take_slots(self, limits: list[RateLimit]) -> tuple[float, dt.datetime | None]:
        """Take a slot under every limit or under none: (0, when taken), or (seconds to wait,
        None) when one refuses."""
        if not limits:
            return 0.0, None
        try:
            async with self.db.transaction() as session:
                await ratelimit.lock_windows(session, [lim.key for lim in limits], now=self.clock())
                # Read the clock once the windows are ours: a slot recorded before a wait for
                # a lock (or a connection) would look older than its send, and let the next
                # window open early.
                now = self.clock()
                for limit in limits:
                    wait = await ratelimit.acquire(
                        session,
                        key=limit.key,
                        count=limit.count,
                        per_seconds=limit.per_seconds,
                        now=now,
                        margin=self.policy.margin_for(limit.per_seconds),
                    )
                    if wait > 0:
                        # Roll back the slots the limits before this one have just taken.
                        raise _Refused(wait)
        except _Refused as refused:
            return refused.wait, None
        return 0.0, now

    async def _settle_slots(self, limits: list[RateLimit], taken_at: dt.datetime | None) -> None:
        """Count a failed send's slots from when the platform answered (see ratelimit.settle)."""
        answered = self.clock()
        if not limits or taken_at is None or answered <= taken_at:
            return
        async with self.db.transaction() as session:
            keys = [lim.key for lim in limits]
            await ratelimit.settle(session, keys=keys, taken_at=taken_at, at=answered)

    async def _defer(self, row: OutboxMessage, seconds: float, why: str) -> Outcome:
        until = self.clock() + dt.timedelta(seconds=seconds)
        async with self.db.transaction() as session:
            await outbox.defer(session, row.id, worker=self.worker, until=until)
        return Outcome(row.id, "deferred", why)

    async def _failed(
        self, row: OutboxMessage, error: str, retry_after: float | None, *, permanent: bool
    ) -> Outcome:
        now = self.clock()
        attempts = row.attempts + 1
        retry_at: dt.datetime | None = None
        if not permanent and attempts < self.policy.max_attempts:
            delay = self.policy.backoff(attempts, self.rng)
            if retry_after is not None:
                delay = max(delay, retry_after)
            retry_at = now + dt.timedelta(seconds=delay)
        async with self.db.transaction() as session:
            state = await outbox.mark_failed(
                session, row.id, worker=self.worker, error=error, now=now, retry_at=retry_at
            )
        if state is None:
            log.warning("outbox %s: failed, but the lease had passed to another worker", row.id)
            return Outcome(row.id, "lost", error)
        if state is OutboxState.DEAD:
            log.warning("outbox %s: dead letter after %d attempts: %s", row.id, attempts, error)
            return Outcome(row.id, "dead", error)
        log.info(
            "outbox %s: attempt %d failed (%s); retry at %s", row.id, attempts, error, retry_at
        )
        return Outcome(row.id, "retry", error)
