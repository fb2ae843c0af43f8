"""The job runner: claims due jobs with a lease and runs each in one transaction.

A job's effects (outbox rows, follow-up jobs) and its completion commit together, so a job
that crashes half-way leaves nothing behind and is run again when its lease expires.
The runner sleeps until the next due job, or until it is woken; it never polls.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bot.core.clock import Clock
from bot.core.loop import WakeableLoop
from storage import jobs
from storage.db import Database, DatabaseUnavailable, Session
from storage.models import Job

log = logging.getLogger("workbot.scheduler")


class Reschedule(Exception):
    """Raised by a job handler: run this job again at `at` instead (e.g. outside working hours)."""

    def __init__(self, at: dt.datetime) -> None:
        super().__init__(f"rescheduled to {at.isoformat()}")
        self.at = at


JobHandler = Callable[[Session, Job, dt.datetime], Awaitable[None]]


@dataclass(frozen=True)
class JobRun:
    """What happened to one claimed job."""

    job_id: int
    kind: str
    result: str  # done | rescheduled | failed | lost | unknown


class Scheduler(WakeableLoop):
    """Runs durable jobs on time; many processes can share one PostgreSQL database."""

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, JobHandler],
        *,
        worker: str,
        clock: Clock,
        lease: dt.timedelta = dt.timedelta(minutes=5),
        batch: int = 20,
        retry_after: dt.timedelta = dt.timedelta(minutes=5),
        max_idle: float = 3600.0,
    ) -> None:
        super().__init__(name="scheduler", clock=clock, max_idle=max_idle, log=log)
        self.db = db
        self.handlers = dict(handlers)
        self.worker = worker
        self.lease = lease
        self.batch = batch
        self.retry_after = retry_after
        self._abandoned = False  # a pass was cut short by a database outage

    async def one_pass(self) -> float:
        """Run one batch of due jobs; go on at once if the batch was full."""
        ran = await self.run_once()
        return 0.0 if len(ran) >= self.batch else await self.idle_delay()

    async def idle_delay(self) -> float:
        """Seconds until the next job is due (max_idle when none is scheduled)."""
        async with self.db.read() as session:
            return self.delay_until(await jobs.next_due_at(session, now=self.clock()))

    async def run_once(self) -> list[JobRun]:
        """Claim and run one batch of due jobs (DatabaseUnavailable when the database went
        away: the jobs of the pass are rolled back, and run again once it is back)."""
        try:
            if self._abandoned:
                # Give back the claims of the pass the outage cut short, so that its jobs run
                # now rather than when their lease ends (no other pass of this worker runs).
                async with self.db.transaction() as session:
                    await jobs.release_claims(session, worker=self.worker)
                self._abandoned = False
            async with self.db.transaction() as session:
                claimed = await jobs.claim_due(
                    session,
                    worker=self.worker,
                    now=self.clock(),
                    lease=self.lease,
                    limit=self.batch,
                )
                ids = [(job.id, job.kind) for job in claimed]
            return [await self._run(job_id, kind) for job_id, kind in ids]
        except DatabaseUnavailable:
            self._abandoned = True
            raise

    async def _run(self, job_id: int, kind: str) -> JobRun:
        handler = self.handlers.get(kind)
        now = self.clock()
        if handler is None:
            log.error("job %s: no handler for kind %r", job_id, kind)
            await self._fail(job_id, f"no handler for kind {kind!r}", now + self.retry_after)
            return JobRun(job_id, kind, "unknown")
        try:
            async with self.db.transaction() as session:
                job = await jobs.fresh(session, job_id)
                if job is None or job.claimed_by != self.worker:
                    return JobRun(job_id, kind, "lost")
                await handler(session, job, now)
                if not await jobs.complete(session, job_id, worker=self.worker, now=now):
                    raise _LeaseLost()
        except _LeaseLost:
            return JobRun(job_id, kind, "lost")
        except Reschedule as exc:
            await self._fail(job_id, "", exc.at)
            return JobRun(job_id, kind, "rescheduled")
        except DatabaseUnavailable:
            raise  # not the job's fault: the pass stops and the loop waits for the database
        except Exception as exc:
            log.exception("job %s (%s) failed; retrying later", job_id, kind)
            await self._fail(job_id, repr(exc), now + self.retry_after)
            return JobRun(job_id, kind, "failed")
        return JobRun(job_id, kind, "done")

    async def _fail(self, job_id: int, error: str, retry_at: dt.datetime) -> None:
        async with self.db.transaction() as session:
            await jobs.fail(session, job_id, worker=self.worker, error=error, retry_at=retry_at)


class _LeaseLost(Exception):
    """Another worker took the job over; roll back this run's effects."""
