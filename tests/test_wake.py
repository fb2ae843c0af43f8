"""Cross-process wake-ups: another process's commit wakes a running serve's loops at once.

On PostgreSQL that is LISTEN/NOTIFY; on SQLite a watcher polls `PRAGMA data_version`. The
last test runs `workbot serve` and the `workbot` CLI as two real processes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_app import free_port, get_json, wait_for_health

from bot.delivery.wake import ALL_TOPICS, wake_listener
from storage import audit
from storage.db import Database

from conftest import T0
from support import seed_people

WITHIN = 2.0  # seconds from another process's commit to the wake-up


class Wakes:
    """Records the topics a listener passes on."""

    def __init__(self) -> None:
        self.topics: list[set[str]] = []
        self._event = asyncio.Event()

    def __call__(self, topics: set[str]) -> None:
        self.topics.append(topics)
        self._event.set()

    async def next(self, within: float) -> set[str]:
        """The next wake-up's topics; fails after `within` seconds without one."""
        await asyncio.wait_for(self._event.wait(), within)
        self._event.clear()
        return self.topics[-1]


@pytest.fixture
async def other(db: Database) -> AsyncIterator[Database]:
    """A second, independent handle on the same database (its own engine and connections)."""
    handle = Database(db.url, connect_args=db.connect_args)
    yield handle
    await handle.dispose()


async def test_a_commit_by_another_handle_wakes_the_listener(db: Database, other: Database) -> None:
    wakes = Wakes()
    listener = wake_listener(db, wakes)
    await listener.start()
    try:
        await seed_people(other, T0)  # an audited write: it raises its action's topic
        woken = await wakes.next(WITHIN)
        # NOTIFY carries the topic; SQLite's data_version says only "something changed".
        assert woken & {audit.topic("directory.import"), "audit"}
    finally:
        await listener.stop()


async def sqlite_in_another_process(path: Path, sql: str) -> None:
    """Run SQL on the file from a separate Python process, with plain sqlite3."""
    script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(path), sql)
    assert await proc.wait() == 0


async def test_sqlite_watcher_wakes_on_another_process_commit_only(tmp_path: Path) -> None:
    path = tmp_path / "wake.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
    db = Database(f"sqlite+aiosqlite:///{path}")
    wakes = Wakes()
    listener = wake_listener(db, wakes)
    await listener.start()
    try:
        # Reading, and a write that is rolled back, change nothing: nobody is woken.
        await sqlite_in_another_process(path, "SELECT count(*) FROM t")
        await sqlite_in_another_process(path, "BEGIN IMMEDIATE; INSERT INTO t VALUES (0); ROLLBACK")
        await asyncio.sleep(1.0)  # four polls
        assert wakes.topics == []

        await sqlite_in_another_process(path, "INSERT INTO t VALUES (1)")
        assert await wakes.next(WITHIN) == set(ALL_TOPICS)
        # Not only the first change: the next commit wakes the loops too.
        await sqlite_in_another_process(path, "INSERT INTO t VALUES (2)")
        assert await wakes.next(WITHIN) == set(ALL_TOPICS)
    finally:
        await listener.stop()
        await db.dispose()
    # Stopped: commits wake nobody any more.
    await sqlite_in_another_process(path, "INSERT INTO t VALUES (3)")
    await asyncio.sleep(0.5)
    assert len(wakes.topics) == 2


async def room_messages(
    base: str, *, after: int, reader: str | None = None
) -> list[dict[str, Any]]:
    """The local group's messages after an id (GET /local/v1/messages), with the DMs to and
    from `reader` when one is named."""
    url = f"{base}/local/v1/messages?after={after}&limit=500"
    if reader is not None:
        url += f"&for={reader}"
    status, room = await asyncio.to_thread(get_json, url)
    assert status == 200, room
    messages = room["messages"]
    assert isinstance(messages, list)
    return messages


async def test_a_notice_from_the_cli_reaches_a_running_serves_local_group(tmp_path: Path) -> None:
    """The README's setup (SQLite, the built-in local group): a notice created with the CLI
    while `workbot serve` runs is posted to the group within 2 s of the command's exit."""
    port = free_port()
    (tmp_path / "config.toml").write_text(f"[server]\nport = {port}\n")
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            await wait_for_health(f"{base}/healthz", serve, 30)
            last = max((m["id"] for m in await room_messages(base, after=0)), default=0)

            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "notice", "create",
                "--title", "关于报送作业管理自查情况的通知", "--to", "all",
                cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await cli.communicate()
            exited = time.monotonic()
            assert cli.returncode == 0, err.decode()
            assert out.strip() == b"1"

            cards: list[dict[str, Any]] = []
            while not cards and time.monotonic() < exited + 10:
                messages = await room_messages(base, after=last)
                cards = [m for m in messages if m["sender"] == "bot" and m["card"]]
                if not cards:
                    await asyncio.sleep(0.05)
            seen = time.monotonic() - exited
            assert cards, "the notice never reached the group"
            assert "关于报送作业管理自查情况的通知" in str(cards[0]["card"])
            assert seen <= WITHIN, f"the notice reached the group {seen:.2f} s after the CLI"
        finally:
            if serve.returncode is None:
                serve.terminate()
                await asyncio.wait_for(serve.wait(), 20)
    assert serve.returncode == 0
    assert b"Traceback" not in (tmp_path / "serve.log").read_bytes()
