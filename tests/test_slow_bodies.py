"""Slow clients against a real `workbot serve` on loopback: a body sent a byte at a time is
answered 408 at its deadline, a head sent a byte at a time is cut off, and one address
holding many slow bodies is refused at once while another address is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BODY_TIMEOUT = 2.0
HEADER_TIMEOUT = 2.0
PER_CLIENT = 3
ATTACKER = "127.0.0.2"  # another loopback address: another client as the server sees it
SLACK = 5.0  # generous: the machine is shared


@dataclass(frozen=True)
class Served:
    """A running `workbot serve`."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `workbot serve` (the local group on SQLite) with short body and head deadlines."""
    home = tmp_path_factory.mktemp("slow")
    port = free_port()
    (home / "config.toml").write_text(
        "[server]\n"
        f"port = {port}\n"
        f'body_timeout = "{BODY_TIMEOUT:g}s"\n'
        f'header_timeout = "{HEADER_TIMEOUT:g}s"\n'
        f"slow_bodies_per_client = {PER_CLIENT}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    log = home / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"], cwd=home, env=env,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            assert time.monotonic() < deadline, "workbot serve did not start"
            time.sleep(0.05)
        yield Served(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


def head(port: int, length: int, *, close: bool = False) -> bytes:
    return (
        "POST /local/v1/messages HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer to the end (the server closes the connection after it)."""
    raw = await reader.read()
    head_part, _, body = raw.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send data one byte at a time until it is all sent or the server has closed."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


def messages(served: Served) -> list[dict[str, object]]:
    status, body = get(f"{served.base}/local/v1/messages?limit=500")
    assert status == 200
    found: list[dict[str, object]] = json.loads(body)["messages"]
    return found


async def test_a_body_sent_a_byte_at_a_time_is_answered_408_at_its_deadline(
    served: Served,
) -> None:
    before = await asyncio.to_thread(messages, served)
    body = json.dumps({"sender": "p003", "text": "通知 慢慢来"}).encode()
    reader, writer = await connect(served.port)
    started = time.monotonic()
    writer.write(head(served.port, len(body)))
    sending = asyncio.create_task(trickle(writer, body, every=0.25))
    status, headers, answer_body = await asyncio.wait_for(answer(reader), BODY_TIMEOUT + SLACK)
    took = time.monotonic() - started
    sending.cancel()
    writer.close()
    assert status == 408
    assert headers.get("connection", "").lower() == "close"
    error = json.loads(answer_body)["error"]
    assert error["code"] == "request_timeout"
    assert error["message"] == f"请求正文未在 {BODY_TIMEOUT:g} 秒内收完，连接已关闭。"
    assert BODY_TIMEOUT - 0.2 <= took < BODY_TIMEOUT + SLACK
    assert await asyncio.to_thread(messages, served) == before  # nothing was stored


async def test_a_head_sent_a_byte_at_a_time_is_cut_off(served: Served) -> None:
    reader, writer = await connect(served.port)
    started = time.monotonic()
    endless = head(served.port, 2) + b"X-Padding: " + b"a" * 1000
    sending = asyncio.create_task(trickle(writer, endless, every=0.25))
    try:
        rest = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + SLACK)
    except ConnectionResetError:
        rest = b""
    took = time.monotonic() - started
    sending.cancel()
    writer.close()
    assert rest == b""  # closed without an answer: no request was ever made
    assert HEADER_TIMEOUT - 0.2 <= took < HEADER_TIMEOUT + SLACK


async def test_many_slow_bodies_from_one_address_do_not_starve_another(served: Served) -> None:
    before = await asyncio.to_thread(messages, served)
    held = []
    for _ in range(PER_CLIENT):  # the attacker's share: bodies that never finish
        reader, writer = await connect(served.port, ATTACKER)
        writer.write(head(served.port, 100) + b"{")
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.3)  # the server has read their heads

    # Every further slow body from that address is refused at once, not read.
    started = time.monotonic()
    for _ in range(10):
        reader, writer = await connect(served.port, ATTACKER)
        writer.write(head(served.port, 100) + b"{")
        await writer.drain()
        status, headers, body = await asyncio.wait_for(answer(reader), SLACK)
        writer.close()
        assert status == 429
        assert json.loads(body)["error"]["code"] == "too_many_slow_requests"
        assert headers["retry-after"] == f"{BODY_TIMEOUT:g}"
    assert time.monotonic() - started < BODY_TIMEOUT  # refused before any deadline

    # Meanwhile another client posts, and is answered at once.
    body = json.dumps({"sender": "p003", "text": "大家好"}).encode()
    reader, writer = await connect(served.port)
    started = time.monotonic()
    writer.write(head(served.port, len(body), close=True) + body)
    status, _, _ = await asyncio.wait_for(answer(reader), SLACK)
    writer.close()
    assert status == 201
    assert time.monotonic() - started < BODY_TIMEOUT

    # The held bodies end at their deadline, and then the address has its share again.
    for reader, writer in held:
        status, _, _ = await asyncio.wait_for(answer(reader), BODY_TIMEOUT + SLACK)
        writer.close()
        assert status == 408
    after = await asyncio.to_thread(messages, served)
    assert [m["text"] for m in after[len(before) :]] == ["大家好"]
