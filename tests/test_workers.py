"""Real `workbot serve` processes delivering to a loopback fake: two workers, and a SIGKILL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fakes.webhook_server import FakeWebhook
from sqlalchemy import func, select

from storage import outbox
from storage.db import Database
from storage.models import OutboxMessage
from storage.outbox import Target
from storage.types import OutboxState

from conftest import pg_url

TOKEN = "test-webhook-token"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, name: str, db_url: str, fake_url: str, **delivery: object) -> Path:
    """A config for one worker: its own port, the shared database, the fake webhook."""
    settings = {"concurrency": 8, "batch": 50, "lease": "60s", **delivery}
    lines = [
        "[server]",
        f"port = {free_port()}",
        "[database]",
        f'url = "{db_url}"',
        "auto_migrate = false",
        "[delivery]",
        *(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()),
        "[platforms.webhook]",
        f'url = "{fake_url}"',
        "rate_count = 100000",
        "rate_per_seconds = 1.0",
        "[logging]",
        'level = "WARNING"',
    ]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@asynccontextmanager
async def serve(config: Path, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A `workbot serve` subprocess, killed at the end if it is still running."""
    env = {**os.environ, "WORKBOT_WEBHOOK_TOKEN": TOKEN}
    env.pop("WORKBOT_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "-c", str(config),
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def enqueue_many(db: Database, count: int, targets: int) -> list[str]:
    """Queue `count` messages round-robin over `targets` people; returns their keys."""
    now = dt.datetime.now(dt.UTC)
    keys = [f"load:{i}" for i in range(count)]
    async with db.transaction() as s:
        for i, key in enumerate(keys):
            await outbox.enqueue(
                s,
                target=Target("webhook", "person", f"u{i % targets:03d}"),
                payload={"text": f"message {i}", "card": None, "mentions": [], "reply_to": None},
                idempotency_key=key,
                now=now,
            )
    return keys


async def wait_for(
    predicate: Callable[[], bool], within: float, procs: list[asyncio.subprocess.Process]
) -> None:
    """Wait for a condition, failing early if a worker died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        for proc in procs:
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(
                    f"a worker exited with {proc.returncode}: {err.decode()[-2000:]}"
                )
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def assert_per_target_order(fake: FakeWebhook, keys: list[str]) -> None:
    """Each target saw its messages in the order they were queued."""
    position = {key: i for i, key in enumerate(keys)}
    by_target: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for message in fake.sends:
        if message.key in seen:
            continue
        seen.add(message.key)
        by_target[message.target].append(position[message.key])
    for target, order in by_target.items():
        assert order == sorted(order), target


async def sent_by(db: Database) -> Counter[str]:
    """How many rows each worker sent."""
    async with db.read() as s:
        rows = await s.execute(
            select(OutboxMessage.claimed_by, func.count())
            .where(OutboxMessage.state == OutboxState.SENT)
            .group_by(OutboxMessage.claimed_by)
        )
        return Counter({str(worker): int(n) for worker, n in rows.all()})


async def test_two_workers_on_postgresql_deliver_each_message_exactly_once(
    db: Database, tmp_path: Path
) -> None:
    if db.is_sqlite:
        pytest.skip("several workers need PostgreSQL")
    keys = await enqueue_many(db, 2000, targets=100)
    async with FakeWebhook(token=TOKEN) as fake:
        configs = [write_config(tmp_path, f"w{i}", pg_url(), fake.url) for i in (1, 2)]
        async with serve(configs[0], tmp_path) as w1, serve(configs[1], tmp_path) as w2:
            await wait_for(lambda: len({m.key for m in fake.sends}) >= 2000, 180, [w1, w2])
            # The platform has everything; give the workers the moment they need to record
            # the last results before they are stopped.
            await wait_until_all_sent(db, 30)
            for worker in (w1, w2):
                worker.send_signal(signal.SIGTERM)
            for worker in (w1, w2):
                assert await asyncio.wait_for(worker.wait(), 30) == 0
        requests_per_key = Counter(m.key for m in fake.sends)
        assert set(requests_per_key) == set(keys)
        assert max(requests_per_key.values()) == 1, "a message reached the platform twice"
        assert sum(fake.duplicates_by_key.values()) == 0
        assert_per_target_order(fake, keys)
    workers = await sent_by(db)
    assert len(workers) == 2 and all(n > 0 for n in workers.values()), workers
    assert sum(workers.values()) == 2000


async def test_sigkill_in_the_middle_of_a_batch_loses_nothing(db: Database, tmp_path: Path) -> None:
    url = db.url.render_as_string(hide_password=False)
    if not db.is_sqlite:
        url = pg_url()
    keys = await enqueue_many(db, 200, targets=20)
    concurrency = 8
    async with FakeWebhook(token=TOKEN, delay=0.05) as fake:
        config = write_config(tmp_path, "w", url, fake.url, lease="2s", concurrency=concurrency)
        async with serve(config, tmp_path) as first:
            await wait_for(lambda: len(fake.sends) >= 60, 60, [first])
            first.send_signal(signal.SIGKILL)
            await first.wait()
        delivered_before = {m.key for m in fake.sends}
        assert len(delivered_before) < 200, "the kill came too late to test anything"
        async with serve(config, tmp_path) as second:
            await wait_for(lambda: len({m.key for m in fake.sends}) >= 200, 120, [second])
            await wait_until_all_sent(db, 30)
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 30)
        assert second.returncode == 0
        # Every message arrived. A message in flight at the kill was sent again after the
        # lease expired; the fake recognised it by its Idempotency-Key.
        assert {m.key for m in fake.sends} == set(keys)
        duplicates = sum(fake.duplicates_by_key.values())
        assert duplicates <= concurrency, f"{duplicates} duplicates, at most {concurrency} allowed"
        print(f"SIGKILL: {duplicates} message(s) reached the platform twice")
        assert_per_target_order(fake, keys)


async def wait_until_all_sent(db: Database, within: float) -> None:
    """Wait until no outbox row is left unsent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with db.read() as s:
            left = await s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.state != OutboxState.SENT)
            )
        if left == 0:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{left} messages were never recorded as sent")
        await asyncio.sleep(0.1)
