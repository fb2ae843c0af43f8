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


async def serve_once(tmp_path: Path, *args: str, config: str = "") -> tuple[int | None, str, str]:
    """Run `python -m bot serve ARGS` in tmp_path until it exits; (code, stdout, stderr)."""
    (tmp_path / "config.toml").write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("zh-CN", "127.0.0.1 上的端口 {port} 已被占用（另一个 workbot serve 或其他程序）："
                  "请先停止它，或用配置中的 [server] port 或 --port 换一个端口。"),
        ("en", "Port {port} on 127.0.0.1 is already in use (another workbot serve, or another "
               "program): stop it, or choose another port with [server] port in the config or "
               "--port."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("from_flag", [False, True])
async def test_serve_on_a_busy_port_says_so_in_one_line(
    tmp_path: Path, language: str, message: str, from_flag: bool
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = f'[bot]\nlanguage = "{language}"\n'
        if from_flag:  # the config's port is free; --port names the busy one
            code, out, err = await serve_once(tmp_path, "--port", str(port), config=config)
        else:
            config += f"[server]\nport = {port}\n"
            code, out, err = await serve_once(tmp_path, config=config)
    assert code == 2
    assert err.splitlines() == ["workbot: " + message.format(port=port)]
    assert out == ""
    assert not (tmp_path / "workbot.db").exists()  # refused before anything started


async def test_serve_port_and_host_flags_override_the_config(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "config.toml").write_text('[server]\nhost = "localhost"\nport = 1\n')
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        body = await wait_for_health(f"http://127.0.0.1:{port}/healthz", proc, 30)
        assert body["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert f"workbot 正在运行：http://127.0.0.1:{port}/healthz" in err.decode()
    assert f"本地工作群（演示用，无身份验证）：http://127.0.0.1:{port}/local/" in err.decode()


@pytest.mark.parametrize(
    ("args", "located"),
    [
        (["--port", "0"], "--port 0: server.port: "),
        (["--port", "65536"], "--port 65536: server.port: "),
        (["--port", "http"], "--port http: server.port: "),
        (["--host", "0.0.0.0"], "--host 0.0.0.0: server.host: the local group has no auth"),
        (["--host", " "], "--host  : server.host: "),
    ],
)
async def test_serve_refuses_bad_host_and_port_flags_like_the_config(
    tmp_path: Path, args: list[str], located: str
) -> None:
    code, out, err = await serve_once(tmp_path, *args)
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith(located)], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "workbot.db").exists()


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
