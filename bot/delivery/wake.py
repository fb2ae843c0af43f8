"""Cross-process wake-ups on PostgreSQL: LISTEN for the NOTIFY sent when work is committed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from storage.db import Database, DirectConnection
from storage.outbox import WAKE_CHANNEL

log = logging.getLogger("workbot.wake")


class PgWakeListener:
    """Holds one connection that LISTENs on the wake channel and passes topics on."""

    def __init__(self, db: Database, on_topics: Callable[[set[str]], None]) -> None:
        self.db = db
        self.on_topics = on_topics
        self._conn: DirectConnection | None = None
        self._driver: Any = None

    def _callback(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        topic = self.db.own_notification(payload)
        if topic:  # this process's own commits woke its loops already
            self.on_topics({topic})

    async def start(self) -> None:
        """Open the listening connection (no-op on SQLite)."""
        if self.db.is_sqlite:
            return
        self._conn = await self.db.engine.connect()
        raw = await self._conn.get_raw_connection()
        self._driver = raw.driver_connection
        await self._driver.add_listener(WAKE_CHANNEL, self._callback)
        log.debug("listening on %s", WAKE_CHANNEL)

    async def stop(self) -> None:
        """Stop listening and give the connection back."""
        if self._conn is None:
            return
        try:
            await self._driver.remove_listener(WAKE_CHANNEL, self._callback)
        except Exception:
            log.debug("could not remove the wake listener", exc_info=True)
        await self._conn.close()
        self._conn = None
