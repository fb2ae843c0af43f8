"""Cross-process wake-ups: other processes' commits wake this process's loops.

On PostgreSQL a listener LISTENs for the NOTIFY sent when work is committed. SQLite has no
notifications, so a watcher polls `PRAGMA data_version` on a connection of its own: the value
changes when any other connection (another process, such as the CLI) commits to the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from bot.core.outage import Outage
from storage.db import Database, DatabaseUnavailable, DataVersion, DirectConnection
from storage.outbox import WAKE_CHANNEL

log = logging.getLogger("workbot.wake")

# Every topic a commit can raise: the SQLite watcher cannot tell which one a commit raised.
ALL_TOPICS = frozenset({"outbox", "jobs", "audit"})


class WakeListener(Protocol):
    """Passes other processes' commits on to this process's loops while started."""

    async def start(self) -> None:
        """Begin watching."""

    async def stop(self) -> None:
        """Stop watching and release what start() took."""


def wake_listener(db: Database, on_topics: Callable[[set[str]], None]) -> WakeListener:
    """The cross-process wake for the backend: NOTIFY on PostgreSQL, data_version on SQLite."""
    if db.is_sqlite:
        return SqliteWakeWatcher(db, on_topics)
    return PgWakeListener(db, on_topics)


class PgWakeListener:
    """Holds one connection that LISTENs on the wake channel and passes topics on.

    When that connection is lost (the server went away), it says so once, reconnects with
    a growing pause until the server answers, says so once more, and then wakes every loop:
    what other processes committed meanwhile was not heard."""

    def __init__(self, db: Database, on_topics: Callable[[set[str]], None]) -> None:
        self.db = db
        self.on_topics = on_topics
        self._conn: DirectConnection | None = None
        self._driver: Any = None
        self._stopping = False
        self._reconnecting: asyncio.Task[None] | None = None
        self.outage = Outage(log, "the wake-up listener")

    def _callback(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        topic = self.db.own_notification(payload)
        if topic:  # this process's own commits woke its loops already
            self.on_topics({topic})

    def _terminated(self, _conn: Any) -> None:
        if self._stopping or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self.outage.failed(DatabaseUnavailable("the listening connection was lost"))
        self._reconnecting = asyncio.get_running_loop().create_task(
            self._reconnect(), name="workbot-wake-reconnect"
        )

    async def _listen(self) -> None:
        self._conn = await self.db.direct_connection()
        try:
            raw = await self._conn.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.add_listener(WAKE_CHANNEL, self._callback)
            self._driver.add_termination_listener(self._terminated)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._conn.invalidate()
            self._conn = None
            raise

    async def _reconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.invalidate()  # its socket is gone: do not pool it
            self._conn = None
        pause = self.outage.first
        while not self._stopping:
            await asyncio.sleep(pause)
            try:
                await self._listen()
            except DatabaseUnavailable as exc:
                pause = self.outage.failed(exc)
                continue
            except Exception as exc:  # e.g. the driver refused a half-open connection
                pause = self.outage.failed(DatabaseUnavailable(repr(exc)))
                continue
            self.outage.answered()
            self.on_topics(set(ALL_TOPICS))
            return

    async def start(self) -> None:
        """Open the listening connection (no-op on SQLite)."""
        if self.db.is_sqlite:
            return
        self._stopping = False
        await self._listen()
        log.debug("listening on %s", WAKE_CHANNEL)

    async def stop(self) -> None:
        """Stop listening (and reconnecting) and give the connection back."""
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
            self._reconnecting = None
        if self._conn is None:
            return
        try:
            self._driver.remove_termination_listener(self._terminated)
            await self._driver.remove_listener(WAKE_CHANNEL, self._callback)
        except Exception:
            log.debug("could not remove the wake listener", exc_info=True)
        with contextlib.suppress(Exception):
            await self._conn.close()
        self._conn = None


class SqliteWakeWatcher:
    """Polls `PRAGMA data_version` of a SQLite file and wakes every loop when it changes.

    The pragma's value changes when a commit is made by any connection other than the one
    asking, in any process (in WAL mode too: it is checked against the WAL index). So the
    watcher keeps one connection of its own, read-only and never inside a transaction
    between polls, and asks every `interval` seconds from a thread, off the event loop.
    A version that becomes unreadable counts as a change.

    This process's own commits move the version as well, and the watcher cannot tell them
    apart. So after a wake it passes the next change on no sooner than `min_gap` later:
    a busy process makes at most one extra pass of each loop per `min_gap`, and a quiet one
    hears of another process's commit within `interval`.
    """

    interval = 0.25  # seconds between two looks at the data version
    min_gap = 1.0  # seconds from one wake-up to the next at the soonest

    def __init__(self, db: Database, on_topics: Callable[[set[str]], None]) -> None:
        self.db = db
        self.on_topics = on_topics
        self._conn: DataVersion | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version: int | None = None
        self.outage = Outage(log, "the SQLite wake-up watcher")

    def _read(self) -> int | None:
        """The data version now, or None when it cannot be read (one warning when it stops
        being readable, one when it is readable again)."""
        assert self._conn is not None
        try:
            version = self._conn.read()
        except sqlite3.Error as exc:
            self.outage.failed(DatabaseUnavailable(f"{type(exc).__name__}: {exc}"))
            return None
        self.outage.answered()
        return version

    async def start(self) -> None:
        """Open the watching connection and start polling (no-op on PostgreSQL)."""
        if not self.db.is_sqlite or self._thread is not None:
            return
        try:
            self._conn = await asyncio.to_thread(DataVersion.open, self.db)
        except sqlite3.Error:
            log.warning(
                "cannot watch the SQLite file: other processes' changes are seen only when"
                " the loops look again on their own",
                exc_info=True,
            )
            return
        if self._conn is None:
            return
        self._loop = asyncio.get_running_loop()
        self._version = await asyncio.to_thread(self._read)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name="workbot-sqlite-wake", daemon=True)
        self._thread.start()
        log.debug("watching the SQLite data version every %.2f s", self.interval)

    def _watch(self) -> None:
        changed = False
        quiet_until = 0.0  # no wake before this moment (time.monotonic)
        while not self._stopping.wait(self.interval):
            version = self._read()
            if version != self._version:  # a change, or newly unreadable
                self._version = version
                changed = True
            now = time.monotonic()
            if not changed or now < quiet_until:
                continue
            changed = False
            quiet_until = now + self.min_gap
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if not self._stopping.is_set():
            self.on_topics(set(ALL_TOPICS))

    async def stop(self) -> None:
        """Stop polling and close the connection."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
