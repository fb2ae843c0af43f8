"""The HTTP service: /healthz, /metrics, JSON errors, and `workbot serve` as a real process."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot import __version__
from bot.app import create_app
from bot.appkeys import DATABASE
from bot.config import Config, validate_config
from storage import outbox
from storage.migrate import SchemaError
from storage.outbox import Target


def config_for(tmp_path: Path, **database: object) -> Config:
    """A config whose database is a SQLite file in tmp_path."""
    raw = {"database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", **database}}
    return validate_config(raw, "<test>", {})


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[object, object]]:
    """A test client for the app on an auto-migrated SQLite database."""
    app = create_app(config_for(tmp_path), {})
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_healthz_reports_db_and_outbox(client: TestClient[object, object]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ok",
        "db": "ok",
        "outbox": {"pending": 0, "dead": 0},
        "version": __version__,
    }


async def test_metrics_is_prometheus_text(client: TestClient[object, object]) -> None:
    await client.get("/healthz")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    body = await resp.text()
    assert f'workbot_build_info{{version="{__version__}"}} 1' in body
    assert 'workbot_http_requests_total{method="GET",route="/healthz",status="200"} 1' in body
    assert "# TYPE workbot_http_requests_total counter" in body


async def test_errors_are_json_never_html(client: TestClient[object, object]) -> None:
    resp = await client.get("/no/such/page")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.post("/healthz", data=b"x")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_serve_refuses_a_stale_schema_without_auto_migrate(tmp_path: Path) -> None:
    app = create_app(config_for(tmp_path, auto_migrate=False), {})
    runner = web.AppRunner(app)
    with pytest.raises(SchemaError, match="run `workbot migrate`"):
        await runner.setup()
    await runner.cleanup()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> tuple[int, dict[str, object]]:
    """GET a JSON document with the standard library."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def wait_for_health(
    url: str, proc: asyncio.subprocess.Process, within: float
) -> dict[str, object]:
    """Poll /healthz until it answers (or the process dies, or time runs out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"workbot serve exited with {proc.returncode}")
        try:
            status, body = await asyncio.to_thread(get_json, url)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        assert status == 200
        return body
    raise AssertionError("workbot serve did not answer /healthz in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_with_no_config_then_stop_gracefully(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The README's first command: no config, a SQLite file in the cwd, /healthz, clean stop."""
    port = free_port()
    (tmp_path / "config.toml").write_text(f"[server]\nport = {port}\n")
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve",
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        body = await wait_for_health(f"http://127.0.0.1:{port}/healthz", proc, 30)
        assert body["status"] == "ok" and body["db"] == "ok"
        assert (tmp_path / "workbot.db").exists()
        with sqlite3.connect(tmp_path / "workbot.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


async def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "config.toml").write_text(f"[server]\nport = {port}\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    assert b"Traceback" not in err


async def test_healthz_degrades_when_the_database_is_unreachable(tmp_path: Path) -> None:
    app = create_app(config_for(tmp_path), {}, workers=False)
    async with TestClient(TestServer(app)) as c:
        await c.app[DATABASE].dispose()
        (tmp_path / "app.db").unlink()
        (tmp_path / "app.db").mkdir()
        resp = await c.get("/healthz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "degraded" and body["db"] == "error"


async def test_healthz_counts_dead_letters(tmp_path: Path) -> None:
    app = create_app(config_for(tmp_path), {}, workers=False)
    async with TestClient(TestServer(app)) as c:
        db = c.app[DATABASE]
        now = dt.datetime.now(dt.UTC)
        async with db.transaction() as s:
            for i in range(3):
                await outbox.enqueue(
                    s, target=Target("local", "chat", "main"), payload={"text": str(i)},
                    idempotency_key=f"k{i}", now=now,
                )  # fmt: skip
        async with db.transaction() as s:
            [row] = await outbox.claim_due(
                s, worker="w", now=now, lease=dt.timedelta(seconds=30), limit=1
            )
            await outbox.mark_failed(
                s, row.id, worker="w", error="HTTP 400", now=now, retry_at=None
            )
        resp = await c.get("/healthz")
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "degraded"
        assert body["outbox"] == {"pending": 2, "dead": 1}
        metrics = await (await c.get("/metrics")).text()
        assert 'workbot_outbox_messages{state="dead"} 1' in metrics
