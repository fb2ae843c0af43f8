"""Group commit: many concurrent requests, one transaction (and one fsync) per batch.

A single writer task drains whatever is queued, writes it in one transaction, and only then
resolves each request's future, so every request is answered after its data is durable. There
is no waiting window: while one batch commits, the next one accumulates by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from bot.core.outage import Outage
from storage.db import Database, DatabaseUnavailable, Session

log = logging.getLogger("workbot.ingest")

T = TypeVar("T")
R = TypeVar("R")

Write = Callable[[Session, list[T]], Awaitable[Sequence[R]]]
Committed = Callable[[list[T], Sequence[R]], None]


class WriterClosed(Exception):
    """The writer is stopping; the item was not stored."""


class GroupCommit(Generic[T, R]):
    """One writer, batches as large as the queue, a future per item."""

    def __init__(
        self,
        db: Database,
        write: Write[T, R],
        *,
        committed: Committed[T, R] | None = None,
        max_batch: int = 512,
    ) -> None:
        self.db = db
        self.write = write
        self.committed = committed
        self.max_batch = max_batch
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.items = 0
        self.outage = Outage(log, "the group-commit writer")

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="workbot-group-commit")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task

    async def submit(self, item: T) -> R:
        """Queue an item; returns its result once its batch has committed."""
        if self._closing:
            raise WriterClosed("the writer is stopping")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._ready.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                ]
                await self._commit(batch)
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._write_batch(items)
        except DatabaseUnavailable as exc:
            # Not one item's fault: every request of the batch is refused (answered 503).
            self.outage.failed(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(DatabaseUnavailable(exc.reason))
            return
        except Exception as exc:
            if len(batch) > 1:
                # One bad item must not fail the others: write them one by one instead.
                log.warning(
                    "a batch of %d writes failed (%s); retrying one by one", len(items), exc
                )
                for single in batch:
                    await self._commit([single])
                return
            log.warning("a write failed: %s", exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.outage.answered()
        self.batches += 1
        self.items += len(items)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self.committed is not None:
            try:
                self.committed(items, results)
            except Exception:
                log.exception("after-commit hook failed")

    async def _write_batch(self, items: list[T]) -> Sequence[R]:
        async with self.db.transaction() as session:
            return await self.write(session, items)


class ThreadedGroupCommit(GroupCommit[T, R]):
    """The same, with each batch written by a blocking function on one dedicated thread (the
    SQLite fast path: one thread hop per batch instead of driver round-trips per row)."""

    def __init__(
        self,
        db: Database,
        write: Callable[[list[T]], Sequence[R]],
        *,
        close: Callable[[], None] | None = None,
        committed: Committed[T, R] | None = None,
        max_batch: int = 512,
    ) -> None:
        super().__init__(db, self._unused, committed=committed, max_batch=max_batch)
        self.write_sync = write
        self.close_sync = close
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbot-ingest")

    @staticmethod
    async def _unused(session: Session, items: list[T]) -> Sequence[R]:
        raise AssertionError("ThreadedGroupCommit writes on its own thread")

    async def _write_batch(self, items: list[T]) -> Sequence[R]:
        loop = asyncio.get_running_loop()
        async with self.db.write_slot():
            return await loop.run_in_executor(self._thread, self.write_sync, items)

    async def stop(self) -> None:
        """Write what is queued, close the connection on its own thread, and stop."""
        await super().stop()
        if self.close_sync is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.close_sync)
        self._thread.shutdown(wait=True)
