"""What the benchmarks share: the machine they ran on, the printed header and JSON file,
their command lines, their PostgreSQL databases, server processes and percentiles."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.delivery.wake import PgWakeListener
from storage.db import Database
from storage.migrate import upgrade

LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg", "aiohttp")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, str]:
    """Date, CPU, cores, memory, load, OS, Python, SQLite and library versions."""
    cpu = platform.processor() or "unknown"
    mem = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "load average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        **{lib: _version(lib) for lib in LIBRARIES},
    }


def print_header(title: str, info: dict[str, str]) -> None:
    """The benchmark's title line, then the machine, one `key value` line each."""
    print(title)
    for key, value in info.items():
        print(f"  {key:<13} {value}")


def write_json(path: Path, info: dict[str, str], results: Sequence[Any], **dumps: Any) -> None:
    """Write the machine and the results (dataclasses) to a JSON file."""
    payload = {"machine": info, "results": [dataclasses.asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2, **dumps) + "\n")


def run_async(run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: Any) -> int:
    """Log warnings and above, then run the benchmark's `run(args)`; its exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary work directory, removed with its contents on the way out."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def conclude(
    rendered: str,
    started: float,
    ok: bool,
    json_path: Path | None,
    info: dict[str, str],
    results: Sequence[Any],
    **dumps: Any,
) -> int:
    """Print the results table, the runtime and ALL PASS or SOME MISS (after writing the
    JSON file, if one was asked for); the exit status."""
    print()
    print(rendered)
    print(f"\nruntime {time.monotonic() - started:.0f} s")
    if json_path:
        write_json(json_path, info, results, **dumps)
    print("ALL PASS" if ok else "SOME MISS")
    return 0 if ok else 1


def utcnow() -> dt.datetime:
    """The wall clock, as the app's scheduler and sender use it."""
    return dt.datetime.now(dt.UTC)


class Worker(Protocol):
    """The app's Scheduler or Sender: a loop that a commit on its topic wakes."""

    async def run(self) -> None: ...

    def wake(self) -> None: ...


@asynccontextmanager
async def running(
    db: Database, topic: str, worker: Worker, name: str
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `worker` as the task `name`, woken on `topic` as bot.app.workers_ctx wires it
    (in-process, and by LISTEN/NOTIFY on PostgreSQL); cancel it and stop listening on the
    way out."""

    def wake(topics: set[str]) -> None:
        if topic in topics:
            worker.wake()

    db.wake_listeners.append(wake)
    listener = PgWakeListener(db, wake)
    await listener.start()
    task = asyncio.create_task(worker.run(), name=name)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.stop()
        db.wake_listeners.remove(wake)


# --------------------------------------------------------------------------- command lines


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows the defaults, and the module docstring as it is written."""


def bench_parser(doc: str | None, runtime: str | None = None) -> argparse.ArgumentParser:
    """An argument parser for a bench script: its module docstring as the description,
    the expected runtime (if given) below the options, --help showing the defaults, and the
    --json option that every bench has."""
    parser = argparse.ArgumentParser(
        description=doc,
        epilog=f"Expected runtime with the defaults: {runtime}." if runtime else None,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    return parser


def add_numbers(parser: argparse.ArgumentParser, *options: tuple[str, float, str]) -> None:
    """Numeric options, each `(flag, default, help)`; a value has the type of its default
    (`int` or `float`)."""
    for flag, default, help_text in options:
        parser.add_argument(flag, type=type(default), default=default, help=help_text)


def add_databases(
    parser: argparse.ArgumentParser, pg_url: str, env: str, *, both: bool = False
) -> None:
    """--backend: sqlite (the default) or postgresql, or with `both` also both (then the
    default); and --pg-url: the bench's PostgreSQL database, defaulting to $env or `pg_url`."""
    choices = ("sqlite", "postgresql", "both") if both else ("sqlite", "postgresql")
    default = "both" if both else "sqlite"
    parser.add_argument("--backend", choices=choices, default=default, help="database")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(env, pg_url),
        help="PostgreSQL URL (database must be named workbot_bench*; created if missing); "
        f"env {env}",
    )


# --------------------------------------------------------------------------- databases

PG_NAME = re.compile(r"^workbot_bench[a-z0-9_]*$")


def bench_database_name(url: URL) -> str:
    """The database name, refused (SystemExit) unless it is workbot_bench*."""
    name = url.database or ""
    if not PG_NAME.match(name):
        raise SystemExit(f"refusing to use database {name!r}: the bench only uses workbot_bench*")
    return name


@asynccontextmanager
async def pg_admin(url: URL) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection to the server's `postgres` database."""
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            yield conn
    finally:
        await admin.dispose()


async def pg_database_exists(url: URL) -> bool:
    """Whether the bench database exists already."""
    async with pg_admin(url) as conn:
        found = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
        )
        return found is not None


async def ensure_pg_database(url: URL) -> None:
    """Create the bench database if it is missing; refuse any name but workbot_bench*."""
    name = bench_database_name(url)
    if not await pg_database_exists(url):
        async with pg_admin(url) as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))


async def recreate_pg_database(url: URL) -> None:
    """Drop and create the bench database (only ever one named workbot_bench*)."""
    name = bench_database_name(url)
    async with pg_admin(url) as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))


async def open_migrated(backend: str, sqlite_file: Path, pg_url: str) -> Database:
    """A migrated database: SQLite in `sqlite_file`, or PostgreSQL at `pg_url` (created if
    missing)."""
    if backend == "sqlite":
        url: str | URL = f"sqlite+aiosqlite:///{sqlite_file}"
    else:
        url = make_url(pg_url)
        await ensure_pg_database(url)
    db = Database(url)
    await upgrade(db)
    return db


async def pg_version(db: Database) -> str:
    """The PostgreSQL server version."""
    async with db.engine.connect() as conn:
        return str(await conn.scalar(text("SHOW server_version")))


# --------------------------------------------------------------------------- servers


class BenchError(Exception):
    """The benchmark could not run (a server did not start, a tool is missing, …)."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LoopbackProcess:
    """A server process on a loopback port, writing its output to a log file."""

    port: int
    log: Path

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (q from 0 to 1) of values; nan when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
