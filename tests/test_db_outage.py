"""Database outages are expected faults: a running app answers 503 database_unavailable
with Retry-After (never 500, never a traceback), its loops warn once per outage and resume,
and every notice accepted around the outage is posted exactly once afterwards.

PostgreSQL is made unreachable through a loopback proxy this test owns (the shared server
keeps running); SQLite through a lock held by another connection, and a full disk through
unittest.mock (a fault no fake can produce)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import aiosqlite
import pytest
from aiohttp import web
from fakes.tcp_proxy import TcpProxy
from fakes.webhook_server import FakeWebhook
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.app import create_app
from bot.config import validate_config
from bot.core import portal_signing as signing
from storage.db import Database, DatabaseUnavailable, unavailable_reason
from storage.models import Notice

from support import seed_people

SECRET = "outage-test-secret-3f1d"
TOKEN = "outage-webhook-token"
ENV = {"WORKBOT_EGOV_SECRET": SECRET, "WORKBOT_WEBHOOK_TOKEN": TOKEN}
DEADLINE = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).replace(microsecond=0)


def notice(external_id: str, title: str) -> bytes:
    return json.dumps(
        {
            "external_id": external_id,
            "title": title,
            "issuer": {"department": "办公室"},
            "deadline": DEADLINE.isoformat(),
            "audience": {"people": ["p001"]},
        },
        ensure_ascii=False,
    ).encode()


class Running:
    """The app served on a loopback port, with a client that signs like the portal."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def post_notice(self, external_id: str, title: str) -> tuple[int, dict[str, Any], Any]:
        body = notice(external_id, title)
        headers = signing.headers(SECRET, "POST", "/egov/v1/notices", body, now=time.time())
        headers["Content-Type"] = "application/json"
        return await self.call("POST", "/egov/v1/notices", body, headers)

    async def call(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        async with self.session.request(
            method, self.base + path, data=body, headers=headers
        ) as resp:
            return resp.status, dict(resp.headers), await resp.json()


@asynccontextmanager
async def running(raw: dict[str, Any]) -> AsyncIterator[Running]:
    """create_app on 127.0.0.1 with its background workers, as `workbot serve` runs it."""
    app = create_app(validate_config(raw, "<test>", ENV), ENV)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()


def assert_unavailable(status: int, headers: Mapping[str, str], doc: Any) -> None:
    assert status == 503, doc
    assert doc["error"]["code"] == "database_unavailable"
    assert doc["error"]["message"] == "数据库暂时不可用，请 5 秒后重试。"
    assert headers["Retry-After"] == "5"


def outage_lines(caplog: pytest.LogCaptureFixture) -> dict[str, list[str]]:
    """The outage warnings per component: 'down' and 'back' in order."""
    lines: dict[str, list[str]] = {}
    for record in caplog.records:
        message = record.getMessage()
        for marker, word in (
            (": the database is unavailable", "down"),
            (": the database is back", "back"),
        ):
            if marker in message:
                lines.setdefault(message.split(marker)[0], []).append(word)
    return lines


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text


async def wait_for(predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


# -- classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.OperationalError("database or disk is full"),
        OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full")),
    ],
)
def test_outages_are_classified_as_unavailable(fault: Exception) -> None:
    assert unavailable_reason(fault) is not None


@pytest.mark.parametrize(
    "bug",
    [
        sqlite3.OperationalError("no such table: nothing"),
        sqlite3.OperationalError('near "SELEC": syntax error'),
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        ValueError("a bug"),
    ],
)
def test_bugs_and_refusals_are_not_outages(bug: Exception) -> None:
    assert unavailable_reason(bug) is None


async def test_a_bad_statement_still_surfaces_as_itself(db: Database) -> None:
    with pytest.raises(Exception) as raised:
        async with db.transaction() as s:
            await s.execute(text("SELECT no_such_column FROM notice"))
    assert not isinstance(raised.value, DatabaseUnavailable)
    assert db.available


# -- PostgreSQL: the server goes away under a running app ---------------------------------


@pytest.mark.parametrize(
    "db", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
async def test_postgresql_going_away_is_503_and_every_notice_is_posted_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await seed_people(db, dt.datetime.now(dt.UTC))
    url = db.url.set(host="127.0.0.1", port=None)
    async with (
        FakeWebhook(token=TOKEN) as fake,
        TcpProxy("127.0.0.1", db.url.port or 5432) as proxy,
    ):
        raw = {
            "database": {
                "url": url.set(port=proxy.port).render_as_string(hide_password=False),
                "auto_migrate": False,
            },
            "group": {"platform": "webhook", "chat_id": "main"},
            "platforms": {
                "webhook": {"url": fake.url, "rate_count": 1000, "rate_per_seconds": 1.0}
            },
        }

        def posted(title: str) -> int:
            return sum(1 for r in fake.sends if r.target_kind == "chat" and title in r.text)

        async with running(raw) as app:
            # Before: a notice is accepted and posted.
            assert (await app.post_notice("drill-a", "演练通知甲"))[0] == 201
            await fake.wait_until(lambda: posted("演练通知甲") == 1, within=10)

            # A notice accepted just before the cut: its post is in flight when the
            # database goes away, and its result cannot be recorded.
            fake.delay = 1.0
            assert (await app.post_notice("drill-b", "演练通知乙"))[0] == 201
            await asyncio.sleep(0.3)
            await proxy.cut()

            # During: requests that need the database are refused, and say when to retry.
            assert_unavailable(*await app.post_notice("drill-c", "演练通知丙"))
            assert_unavailable(
                *await app.call(
                    "GET",
                    "/egov/v1/notices/1",
                    headers=signing.headers(
                        SECRET, "GET", "/egov/v1/notices/1", b"", now=time.time()
                    ),
                )
            )
            for _ in range(3):
                status, headers, health = await app.call("GET", "/healthz")
                assert (status, health["db"], headers["Retry-After"]) == (503, "error", "5")
            await asyncio.sleep(3)  # the loops retry a few times meanwhile
            fake.delay = 0.0
            await proxy.restore()

            # After: the portal retries the refused notice, and everything is posted once.
            async def healthy() -> bool:
                return (await app.call("GET", "/healthz"))[0] == 200

            await wait_for(healthy, within=20)
            assert (await app.post_notice("drill-c", "演练通知丙"))[0] == 201
            await fake.wait_until(
                lambda: all(posted(t) >= 1 for t in ("演练通知甲", "演练通知乙", "演练通知丙")),
                within=20,
            )
            await asyncio.sleep(1.5)  # time for a duplicate to show, if there were one
            assert [posted(t) for t in ("演练通知甲", "演练通知乙", "演练通知丙")] == [1, 1, 1]
            assert sum(fake.duplicates_by_key.values()) == 0

    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Notice)) == 3
    assert_no_traceback(caplog)
    lines = outage_lines(caplog)
    # Each part that saw the outage said so once, and once that it was over.
    assert lines["delivery"] == ["down", "back"]
    assert lines["HTTP requests"] == ["down", "back"]
    assert lines["the wake-up listener"] == ["down", "back"]
    for component, said in lines.items():
        assert said == ["down", "back"], component


# -- SQLite: another connection holds the lock; the disk is full ---------------------------


def sqlite_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", "lock_timeout": "1s"},
    }


async def test_a_locked_sqlite_file_is_503_until_the_lock_is_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(sqlite_config(tmp_path)) as app:
        local = {"Content-Type": "application/json", "Host": "127.0.0.1"}
        post = json.dumps({"sender": "p003", "text": "大家好"}, ensure_ascii=False).encode()
        assert (await app.call("POST", "/local/v1/messages", post, local))[0] == 201
        before = (await app.call("GET", "/local/v1/messages", headers=local))[2]["messages"]

        # Another connection takes the write lock (from a thread: waiting for it must not
        # stop the app's event loop, which may be finishing a write of its own).
        holder = sqlite3.connect(
            tmp_path / "app.db", isolation_level=None, timeout=10, check_same_thread=False
        )
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        try:
            for _ in range(2):
                assert_unavailable(*await app.call("POST", "/local/v1/messages", post, local))
            assert_unavailable(*await app.post_notice("locked-1", "锁定期间的通知"))
            status, _, health = await app.call("GET", "/healthz")
            assert (status, health["db"]) == (503, "error")
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        assert (await app.call("POST", "/local/v1/messages", post, local))[0] == 201
        status, _, health = await app.call("GET", "/healthz")
        assert (status, health["db"]) == (200, "ok")
        after = (await app.call("GET", "/local/v1/messages", headers=local))[2]["messages"]
        assert len(after) == len(before) + 1  # the refused posts left nothing behind
    assert_no_traceback(caplog)
    lines = outage_lines(caplog)
    assert lines["HTTP requests"] == ["down", "back"]
    assert lines["the group-commit writer"] == ["down", "back"]


async def test_a_full_disk_is_503_and_stores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(sqlite_config(tmp_path)) as app:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
        await seed_people(db, dt.datetime.now(dt.UTC))
        full = sqlite3.OperationalError("database or disk is full")
        with mock.patch.object(aiosqlite.Connection, "commit", side_effect=full):
            assert_unavailable(*await app.post_notice("full-1", "磁盘已满时的通知"))
            assert_unavailable(*await app.post_notice("full-1", "磁盘已满时的通知"))
        async with db.read() as s:
            assert await s.scalar(select(func.count()).select_from(Notice)) == 0
        assert (await app.post_notice("full-1", "磁盘已满时的通知"))[0] == 201
        await db.dispose()
    assert_no_traceback(caplog)
    assert outage_lines(caplog)["HTTP requests"] == ["down", "back"]
