#!/usr/bin/env python3
"""E-gov end-to-end latency: signed POST /egov/v1/notices → first send, p99 ≤ 50 ms.

A real ``workbot serve`` (pinned to CPU 0) runs with ``[group] platform = "webhook"``, whose
URL points at a loopback receiver in this process (pinned, with the load, to CPU 1). This
process POSTs signed notices to ``/egov/v1/notices`` on an open-loop schedule (request n starts
at t0 + n / rate, whatever the earlier ones are doing), each with a unique marker in its title,
and the receiver records when the notice's group post (the first ``POST /hook/messages`` that
carries the marker) arrives. Both times are ``time.perf_counter()`` in this process, so they are
comparable; latency = arrival − POST start.

The webhook platform publishes a rate limit (``rate_count`` per ``rate_per_seconds``); the bench
sets it high (1000 per 1 s by default) so that the limiter does not decide the figure.

After the run, the server's own timestamps (the notice's ``created_at``, read when its
transaction has begun, and the outbox row's ``sent_at``, read when the receiver has answered)
split each latency into "before the transaction", "transaction → arrival" and "arrival →
recorded"; both clocks are the wall clock of one machine.

``--task-cpu`` serves the same app (``bot.app.create_app``, set up as ``workbot serve`` sets it
up) from a child of this script whose asyncio tasks account their CPU time, and prints the
event loop's CPU per notice by kind of task (the e-gov handler, the sender's passes and
deliveries, the scheduler).

Run ``python bench/egov_latency.py --help``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import contextlib
import datetime as dt
import gc
import hmac
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import harness  # noqa: E402
from aiohttp import web  # noqa: E402
from harness import BenchError  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import URL, make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.core import portal_signing as signing  # noqa: E402

BIN = Path(sys.executable).parent
SCRIPT = Path(__file__).resolve()
API_PATH = "/egov/v1/notices"
HOOK_PATH = "/hook"
SECRET = "bench-egov-secret"  # a throwaway secret for a loopback server
TOKEN = "bench-webhook-token"  # a throwaway bearer token
TARGET_P99_MS = 50.0
NOISE_PCT = 5.0  # other processes' share of the server's core above which a run is flagged
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/workbot_bench_egov"
START_BOUND_S = 60.0
STOP_BOUND_S = 30.0
DUMP_BOUND_S = 10.0
TZ_CN = dt.timezone(dt.timedelta(hours=8))
MARKER = re.compile(rb"bench-([0-9a-f]+)-(\d+)")
BUCKET_S = 5.0  # the drift line: p99 per this many seconds of the measured window


# --------------------------------------------------------------------------- the receiver


@dataclass
class Arrival:
    """One send the receiver accepted."""

    at: float  # perf_counter
    wall: float  # time.time()
    target: str


@dataclass
class Receiver:
    """A loopback webhook receiver: checks the bearer token, dedupes by Idempotency-Key."""

    tag: str
    first: dict[int, Arrival] = field(default_factory=dict)
    repeats: Counter[int] = field(default_factory=Counter)
    by_key: dict[str, str] = field(default_factory=dict)
    key_repeats: int = 0
    unmarked: int = 0
    edits: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, wanted: set[int], bound: float) -> None:
        """Wait until every wanted notice's post has arrived, or `bound` seconds have passed."""
        deadline = time.monotonic() + bound
        while not wanted <= self.first.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    def app(self) -> web.Application:
        """The aiohttp application: POST /hook/messages and PUT /hook/messages/{id}."""
        app = web.Application()
        app.router.add_post(f"{HOOK_PATH}/messages", self.send)
        app.router.add_put(f"{HOOK_PATH}/messages/{{id}}", self.edit)
        return app

    def _authorised(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(got, f"Bearer {TOKEN}".encode())

    async def send(self, request: web.Request) -> web.Response:
        """A new message: record the first arrival of each notice's marker."""
        at, wall = time.perf_counter(), time.time()
        raw = await request.read()
        if not self._authorised(request):
            self.refused["401"] += 1
            return web.json_response({"error": "bad token"}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            self.refused["400"] += 1
            return web.json_response({"error": "no Idempotency-Key"}, status=400)
        if key in self.by_key:
            self.key_repeats += 1
            return web.json_response({"message_id": self.by_key[key]}, status=200)
        try:
            body = json.loads(raw)
        except ValueError:
            self.refused["400"] += 1
            return web.json_response({"error": "invalid JSON"}, status=400)
        message_id = f"m{next(self.ids)}"
        self.by_key[key] = message_id
        match = MARKER.search(raw)
        if match is None or match.group(1).decode() != self.tag:
            self.unmarked += 1
        else:
            n = int(match.group(2))
            if n in self.first:
                self.repeats[n] += 1
            else:
                self.first[n] = Arrival(at, wall, str(body.get("target", "")))
                self.arrived.set()
        return web.json_response({"message_id": message_id}, status=201)

    async def edit(self, request: web.Request) -> web.Response:
        """An edit in place (a tally update): accepted, not measured."""
        await request.read()
        if not self._authorised(request):
            self.refused["401"] += 1
            return web.json_response({"error": "bad token"}, status=401)
        self.edits += 1
        return web.json_response({"message_id": request.match_info["id"]}, status=200)


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[None]:
    """Serve `app` on 127.0.0.1:port (no access log) for the duration of the block."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- the server


@dataclass
class Server(harness.LoopbackProcess):
    """The server process under test, pinned to its cores."""

    proc: asyncio.subprocess.Process


def write_config(
    workdir: Path, port: int, hook_port: int, db_url: str, args: argparse.Namespace
) -> Path:
    """The server's config.toml: a free port, the database, the webhook group, WARNING logs."""
    path = workdir / "config.toml"
    path.write_text(
        f"""\
[server]
port = {port}

[database]
url = "{db_url}"

[group]
platform = "webhook"
chat_id = "main"

[platforms.webhook]
url = "http://127.0.0.1:{hook_port}{HOOK_PATH}"
rate_count = {args.rate_count}
rate_per_seconds = {float(args.rate_per)!r}

[logging]
level = "WARNING"
""",
        encoding="utf-8",
    )
    return path


def server_env() -> dict[str, str]:
    """The environment of every workbot command: the e-gov secret and the webhook token."""
    env = dict(os.environ)
    env.pop("WORKBOT_CONFIG", None)
    env["WORKBOT_EGOV_SECRET"] = SECRET
    env["WORKBOT_WEBHOOK_TOKEN"] = TOKEN
    return env


async def workbot(config: Path, *argv: str, cwd: Path) -> None:
    """Run one workbot CLI command to completion; raise BenchError when it fails."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "workbot"),
        "-c",
        str(config),
        *argv,
        cwd=cwd,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        shown = out.decode(errors="replace")[-2000:]
        raise BenchError(f"workbot {' '.join(argv)} exited with {proc.returncode}:\n{shown}")


async def start_server(
    config: Path, port: int, args: argparse.Namespace, workdir: Path, task_cpu: Path | None
) -> Server:
    """`taskset -c CPUS workbot serve` (or the --task-cpu child), then wait for /healthz."""
    if task_cpu is None:
        command = [str(BIN / "workbot"), "-c", str(config), "serve"]
    else:
        command = [sys.executable, str(SCRIPT), "--serve-task-cpu", str(config), str(task_cpu)]
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *("taskset", "-c", args.server_cpus, *command),
            cwd=workdir,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, log, proc)
    deadline = time.monotonic() + START_BOUND_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise BenchError(f"serve exited with {proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(
                    server.url("/healthz"), timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return server
            await asyncio.sleep(0.1)
    await stop_server(server)
    raise BenchError(f"/healthz not 200 after {START_BOUND_S:.0f} s:\n{server.log_tail()}")


async def stop_server(server: Server) -> int:
    """SIGTERM, then wait (bounded); SIGKILL beyond the bound. Its exit status."""
    if server.proc.returncode is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.proc.wait(), STOP_BOUND_S)
        except TimeoutError:
            print(f"serve did not stop in {STOP_BOUND_S:.0f} s; killing it", flush=True)
            server.proc.kill()
            await server.proc.wait()
    return server.proc.returncode or 0


async def healthz(server: Server) -> dict[str, Any]:
    """The server's /healthz document."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url("/healthz"), timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        doc: dict[str, Any] = await response.json()
        return doc


async def settled_health(server: Server, bound: float = 3.0) -> dict[str, Any]:
    """/healthz once no outbox row is pending (the last mark_sent may lag), or after `bound` s."""
    deadline = time.monotonic() + bound
    while True:
        health = await healthz(server)
        if not health.get("outbox", {}).get("pending") or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- CPU accounting


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id."""
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found[int(task.name)] = stat_cpu_s(task / "stat")
    return found


def cpu_list(spec: str) -> set[int]:
    """The cores of a taskset list such as "0", "0,1" or "0-1"."""
    cores: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def cores_busy(cores: set[int]) -> tuple[int, int]:
    """Busy and total jiffies, summed over the given cores, from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            busy += sum(values[:8]) - idle
            total += sum(values[:8])
    return busy, total


@dataclass
class CpuSnapshot:
    """The server's threads and its cores at one moment."""

    wall: float
    threads: dict[int, float]
    core_busy: int
    core_total: int

    @classmethod
    def take(cls, pid: int, cores: set[int]) -> CpuSnapshot:
        """Read /proc now."""
        busy, total = cores_busy(cores)
        return cls(time.perf_counter(), thread_cpu(pid), busy, total)


@dataclass
class CpuUse:
    """What the server and its cores used between two snapshots."""

    seconds: float
    loop_s: float  # the main thread: the event loop
    other_threads_s: float  # the aiosqlite connections' threads, and any other
    core_busy_pct: float  # the server's cores, whoever used them, in % of one core

    @classmethod
    def between(cls, pid: int, a: CpuSnapshot, b: CpuSnapshot, n_cores: int) -> CpuUse:
        """The difference of two snapshots."""
        loop = b.threads.get(pid, 0.0) - a.threads.get(pid, 0.0)
        others = sum(v - a.threads.get(t, 0.0) for t, v in b.threads.items() if t != pid)
        span = b.core_total - a.core_total
        busy = 100.0 * n_cores * (b.core_busy - a.core_busy) / span if span else math.nan
        return cls(b.wall - a.wall, loop, others, busy)

    @property
    def server_pct(self) -> float:
        """The server's CPU, all threads, as a % of one core."""
        return 100.0 * (self.loop_s + self.other_threads_s) / self.seconds

    @property
    def others_pct(self) -> float:
        """Other processes' share of the server's cores (busy minus the server)."""
        return max(0.0, self.core_busy_pct - self.server_pct)


# --------------------------------------------------------------------------- --task-cpu


class TimedCoroutine(collections.abc.Coroutine[Any, Any, Any]):
    """A task's coroutine that adds the thread CPU time of each of its steps to a counter."""

    __slots__ = ("_coro", "_key", "_spent", "_steps")

    def __init__(
        self,
        coro: collections.abc.Coroutine[Any, Any, Any],
        key: str,
        spent: defaultdict[str, float],
        steps: Counter[str],
    ) -> None:
        self._coro = coro
        self._key = key
        self._spent = spent
        self._steps = steps

    def send(self, value: Any) -> Any:
        """One step of the task."""
        started = time.thread_time()
        try:
            return self._coro.send(value)
        finally:
            self._spent[self._key] += time.thread_time() - started
            self._steps[self._key] += 1

    def throw(self, *exc: Any) -> Any:
        """One step of the task that raises into it (a cancellation, say)."""
        started = time.thread_time()
        try:
            return self._coro.throw(*exc)
        finally:
            self._spent[self._key] += time.thread_time() - started
            self._steps[self._key] += 1

    def close(self) -> None:
        """Close the wrapped coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        """Not awaited directly; tasks drive it through send() and throw()."""
        return self._coro.__await__()


def task_label(coro: object) -> str:
    """A task's kind: its coroutine's name, and for a WakeableLoop which loop it is."""
    name = str(getattr(coro, "__qualname__", type(coro).__name__))
    frame = getattr(coro, "cr_frame", None)
    if name == "WakeableLoop.run" and frame is not None:
        name += f" ({getattr(frame.f_locals.get('self'), 'name', '?')})"
    return name


def count_passes(events: Counter[str]) -> None:
    """Count the loops' wake() calls and passes, the rows per sender pass and its deferrals."""
    from bot.core.loop import WakeableLoop
    from bot.delivery.sender import OutboxSender, Outcome
    from bot.scheduler.runner import Scheduler
    from storage.models import OutboxMessage

    wake, run_once, scheduler_pass = WakeableLoop.wake, OutboxSender.run_once, Scheduler.one_pass
    defer = OutboxSender._defer

    def counted_wake(self: WakeableLoop) -> None:
        events[f"{self.name}: wake() calls"] += 1
        wake(self)

    async def counted_run_once(self: OutboxSender) -> list[Outcome]:
        outcomes = await run_once(self)
        rows = len(outcomes)
        events[f"delivery: passes with {rows if rows < 2 else '2+'} rows"] += 1
        return outcomes

    async def counted_defer(
        self: OutboxSender, row: OutboxMessage, seconds: float, why: str
    ) -> Outcome:
        events[f"delivery: deferrals ({why})"] += 1
        return await defer(self, row, seconds, why)

    async def counted_scheduler_pass(self: Scheduler) -> float:
        events[f"{self.name}: passes"] += 1
        return await scheduler_pass(self)

    WakeableLoop.wake = counted_wake  # type: ignore[method-assign]
    OutboxSender.run_once = counted_run_once  # type: ignore[method-assign]
    OutboxSender._defer = counted_defer  # type: ignore[method-assign]
    Scheduler.one_pass = counted_scheduler_pass  # type: ignore[method-assign]


def serve_task_cpu(config_path: Path, out: Path) -> int:
    """Serve the app as `workbot serve` does, accounting event-loop CPU per kind of task."""
    # SIGUSR1 resets the counters; SIGUSR2 writes them to `out` as JSON.
    from bot.app import create_app
    from bot.config import load_config

    environ = dict(os.environ)
    config = load_config(config_path, environ).config
    app = create_app(config, environ)
    spent: defaultdict[str, float] = defaultdict(float)
    steps: Counter[str] = Counter()
    events: Counter[str] = Counter()
    mark = {"cpu": time.thread_time(), "wall": time.perf_counter()}
    count_passes(events)

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        timed = TimedCoroutine(coro, task_label(coro), spent, steps)
        return asyncio.Task(timed, loop=loop, **kwargs)

    def reset() -> None:
        spent.clear()
        steps.clear()
        events.clear()
        mark.update(cpu=time.thread_time(), wall=time.perf_counter())

    def dump() -> None:
        doc = {
            "loop_cpu_s": time.thread_time() - mark["cpu"],
            "wall_s": time.perf_counter() - mark["wall"],
            "spent": dict(spent),
            "steps": dict(steps),
            "events": dict(events),
        }
        out.write_text(json.dumps(doc))

    async def started(_app: web.Application) -> None:
        gc.collect()  # as cmd_serve does
        gc.freeze()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, reset)
        loop.add_signal_handler(signal.SIGUSR2, dump)

    app.on_startup.append(started)
    loop = asyncio.new_event_loop()
    loop.set_task_factory(factory)
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.server.shutdown_timeout.total_seconds(),
        print=None,
        access_log=None,
        handle_signals=True,
        loop=loop,
    )
    return 0


TASK_NAMES = {
    "RequestHandler._handle_request": "HTTP requests: the e-gov handler (egov.create_notice)",
    "WakeableLoop.run (delivery)": "sender passes: claim_due, idle_delay (OutboxSender.one_pass)",
    "OutboxSender._deliver": "sender deliveries: rate slot, webhook POST, mark_sent",
    "WakeableLoop.run (scheduler)": "scheduler passes, woken by each notice's jobs",
    "_AsyncSessionContextManager.__aexit__.<locals>.go": "session closes (shielded tasks)",
    "AsyncSession.close": "session closes (shielded tasks)",
}


def task_cpu_report(path: Path, notices: int) -> str:
    """The --task-cpu figures: event-loop CPU per notice by kind of task."""
    doc = json.loads(path.read_text())
    loop_s: float = doc["loop_cpu_s"]
    by_name: defaultdict[str, float] = defaultdict(float)
    for key, value in doc["spent"].items():
        by_name[TASK_NAMES.get(key, key)] += value
    in_tasks = sum(by_name.values())
    by_name["callbacks outside tasks (socket I/O, DB driver results)"] = max(0.0, loop_s - in_tasks)
    lines = [
        f"  event loop CPU {loop_s:.2f} s in {doc['wall_s']:.1f} s "
        f"({100 * loop_s / doc['wall_s']:.0f} % of a core), "
        f"{1000 * loop_s / notices:.2f} ms per notice, by kind of task:"
    ]
    for name, value in sorted(by_name.items(), key=lambda item: -item[1]):
        if value * 1000 / notices >= 0.01:
            lines.append(
                f"    {1000 * value / notices:6.2f} ms {100 * value / loop_s:5.1f} %  {name}"
            )
    events = ", ".join(f"{k} {v / notices:.2f}" for k, v in sorted(doc["events"].items()))
    lines.append(f"  per notice: {events}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- databases


async def reset_pg(url: URL) -> None:
    """Create the bench database if missing, then drop and recreate its public schema."""
    await harness.ensure_pg_database(url)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


async def pg_backends_cpu(url: URL) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the bench database."""
    engine = create_async_engine(url)
    query = text(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        async with engine.connect() as conn:
            pids = list((await conn.execute(query)).scalars())
    finally:
        await engine.dispose()
    found: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            found[pid] = stat_cpu_s(Path(f"/proc/{pid}/stat"))
    return found


@dataclass(frozen=True)
class ServerTimes:
    """The server's own timestamps of one notice (unix seconds)."""

    created: float
    sent: float | None
    attempts: int


async def server_times(db_url: str | URL, tag: str) -> dict[int, ServerTimes]:
    """notice.created_at and its group post's sent_at, by bench number."""
    engine = create_async_engine(db_url)
    stmt = text(
        "SELECT n.external_id, n.created_at, o.sent_at, o.attempts FROM notice n "
        "JOIN outbox_message o ON o.notice_id = n.id AND o.edit_of_id IS NULL "
        "AND o.purpose = 'notice' WHERE n.external_id LIKE :prefix"
    )
    found: dict[int, ServerTimes] = {}
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt, {"prefix": f"bench-{tag}-%"})).all()
    finally:
        await engine.dispose()
    for external_id, created, sent, attempts in rows:
        n = int(str(external_id).rsplit("-", 1)[1])
        found[n] = ServerTimes(_unix(created), None if sent is None else _unix(sent), attempts)
    return found


def _unix(value: dt.datetime | str) -> float:
    """A stored UTC time (aware, naive or SQLite text) as unix seconds."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


# --------------------------------------------------------------------------- the load


@dataclass
class Post:
    """One e-gov POST: when it was due, started and answered, and how."""

    n: int
    due: float
    start: float = math.nan
    start_wall: float = math.nan
    end: float = math.nan
    status: int | None = None
    error: str | None = None


def notice_body(tag: str, n: int, deadline: dt.datetime | None) -> bytes:
    """The JSON body of bench notice n: a unique external_id and a marker in the title."""
    doc: dict[str, Any] = {
        "external_id": f"bench-{tag}-{n}",
        "doc_number": f"宜教办发[2024]{n}号",
        "kind": "task",
        "title": f"bench-{tag}-{n} 关于报送学校安全自查情况的通知",
        "body": "请各科室于截止时间前完成自查并报送自查报告，报送时请注明联系人及电话。",
        "issuer": {"department": "办公室", "name": "张三"},
        "deadline": None if deadline is None else deadline.isoformat(),
        "requires": "progress",
        "audience": {"all": True},
        "plan_ref": None,
    }
    return json.dumps(doc, ensure_ascii=False).encode()


async def post_one(http: aiohttp.ClientSession, url: str, body: bytes, post: Post) -> None:
    """Sign and send one notice, recording the start, the end and the status."""
    headers = {"Content-Type": "application/json"}
    post.start_wall = time.time()
    headers.update(signing.headers(SECRET, "POST", API_PATH, body, now=post.start_wall))
    post.start = time.perf_counter()
    try:
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
            post.status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        post.error = f"{type(exc).__name__}: {exc}"
    post.end = time.perf_counter()


async def run_load(
    url: str, tag: str, total: int, rate: float, deadline: dt.datetime | None
) -> list[Post]:
    """Open loop: POST n starts at t0 + n / rate, whatever the earlier ones are doing."""
    bodies = [notice_body(tag, n, deadline) for n in range(total)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    posts: list[Post] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter() + 0.05
        for n in range(total):
            post = Post(n, t0 + n / rate)
            posts.append(post)
            delay = post.due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post_one(http, url, bodies[n], post)))
        await asyncio.gather(*tasks)
    return posts


# --------------------------------------------------------------------------- figures


@dataclass
class Stage:
    """p50, p90, p99 and max of one series, in ms."""

    name: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, name: str, seconds: Sequence[float]) -> Stage:
        """The figures of a series given in seconds."""
        ms = [s * 1000 for s in seconds]
        return cls(
            name,
            len(ms),
            harness.percentile(ms, 0.50),
            harness.percentile(ms, 0.90),
            harness.percentile(ms, 0.99),
            max(ms, default=math.nan),
        )

    def row(self) -> str:
        """One table row."""
        return (
            f"  {self.name:<38} {self.count:>6} {self.p50:>8.1f} {self.p90:>8.1f} "
            f"{self.p99:>8.1f} {self.max:>8.1f}"
        )


@dataclass
class Result:
    """The figures of one backend's run."""

    backend: str
    rate: float
    measured: int
    latency: Stage
    response: Stage
    stages: list[Stage]
    drift_p99_ms: list[float]
    errors: dict[str, int]
    missing: int
    duplicates: int
    key_repeats: int
    retried: int
    schedule_lag_max_ms: float
    last_send_after_s: float
    server_pct: float
    loop_ms_per_notice: float
    threads_ms_per_notice: float
    others_pct: float
    server_exit: int | None = None
    pg_ms_per_notice: float | None = None  # PostgreSQL's backends for the bench database
    pg_pct: float | None = None
    task_cpu: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        """Non-201 answers, transport errors and notices whose post never arrived."""
        return sum(self.errors.values()) + self.missing

    @property
    def ok(self) -> bool:
        """The target is met and nothing failed."""
        return self.failures == 0 and self.latency.p99 <= TARGET_P99_MS and not self.server_exit


def figures(
    backend: str,
    args: argparse.Namespace,
    posts: list[Post],
    receiver: Receiver,
    times: dict[int, ServerTimes],
    cpu: CpuUse,
) -> Result:
    """Latencies, response times, the server-side split and the failures of the measured posts."""
    measured = [p for p in posts if p.n >= args.warmup_count]
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    buckets: dict[int, list[float]] = {}
    missing = 0
    before_txn: list[float] = []
    txn_to_arrival: list[float] = []
    arrival_to_recorded: list[float] = []
    txn_to_response: list[float] = []
    first_start = measured[0].start if measured else 0.0
    for p in measured:
        if p.error is not None:
            errors[p.error.split(":", 1)[0]] += 1
            continue
        if p.status != 201:
            errors[f"HTTP {p.status}"] += 1
            continue
        arrival = receiver.first.get(p.n)
        if arrival is None:
            missing += 1
            continue
        latencies.append(arrival.at - p.start)
        buckets.setdefault(int((p.start - first_start) // BUCKET_S), []).append(
            arrival.at - p.start
        )
        st = times.get(p.n)
        if st is not None:
            before_txn.append(st.created - p.start_wall)
            txn_to_arrival.append(arrival.wall - st.created)
            txn_to_response.append((p.end - p.start) - (st.created - p.start_wall))
            if st.sent is not None:
                arrival_to_recorded.append(st.sent - arrival.wall)
    ok_posts = [p for p in measured if p.error is None]
    arrivals = [receiver.first[p.n].at for p in measured if p.n in receiver.first]
    last_start = max((p.start for p in measured), default=0.0)
    n_total = len(posts)
    return Result(
        backend=backend,
        rate=args.rate,
        measured=len(measured),
        latency=Stage.of("e-gov POST start → first send arrives", latencies),
        response=Stage.of("POST response time", [p.end - p.start for p in ok_posts]),
        stages=[
            Stage.of("POST start → txn begins (created_at)", before_txn),
            Stage.of("txn begins → POST answered", txn_to_response),
            Stage.of("txn begins → send arrives", txn_to_arrival),
            Stage.of("send arrives → sent_at recorded", arrival_to_recorded),
        ],
        drift_p99_ms=[harness.percentile(buckets[k], 0.99) * 1000 for k in sorted(buckets)],
        errors=dict(errors),
        missing=missing,
        duplicates=sum(receiver.repeats.values()),
        key_repeats=receiver.key_repeats,
        retried=sum(1 for n, st in times.items() if n >= args.warmup_count and st.attempts > 1),
        schedule_lag_max_ms=max((p.start - p.due for p in measured), default=0.0) * 1000,
        last_send_after_s=max(arrivals, default=last_start) - last_start,
        server_pct=cpu.server_pct,
        loop_ms_per_notice=1000 * cpu.loop_s / n_total,
        threads_ms_per_notice=1000 * cpu.other_threads_s / n_total,
        others_pct=cpu.others_pct,
    )


def render(result: Result) -> str:
    """The report of one backend."""
    head = f"  {'(ms)':<38} {'count':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    drift = ", ".join(f"{v:.0f}" for v in result.drift_p99_ms)
    lines = [
        f"[{result.backend}] {result.measured} notices measured at {result.rate:g}/s"
        + (" (--task-cpu: instrumented server, slower)" if result.task_cpu else ""),
        head,
        result.latency.row(),
        result.response.row(),
        "  split by the server's own timestamps (wall clock):",
        *(s.row() for s in result.stages),
        f"  p99 per {BUCKET_S:g} s of the run (ms): {drift}; the last send arrived "
        f"{1000 * result.last_send_after_s:.0f} ms after the last POST started",
        f"  failures {result.failures}: errors {result.errors or 0}, missing sends "
        f"{result.missing}; duplicate sends {result.duplicates}, repeated keys "
        f"{result.key_repeats}, posts sent after a retry {result.retried}",
        f"  server CPU {result.server_pct:.0f} % of a core: event loop "
        f"{result.loop_ms_per_notice:.1f} ms + other threads "
        f"{result.threads_ms_per_notice:.1f} ms per notice; start lag behind the schedule "
        f"max {result.schedule_lag_max_ms:.1f} ms",
    ]
    if result.pg_pct is not None:
        lines.append(
            f"  PostgreSQL backends (not pinned): {result.pg_pct:.0f} % of a core, "
            f"{result.pg_ms_per_notice:.1f} ms per notice"
        )
    if result.others_pct > NOISE_PCT:
        who = "other processes" + (
            " (PostgreSQL's backends among them)" if result.pg_pct is not None else ""
        )
        lines.append(
            f"  WARNING: {who} used {result.others_pct:.0f} % of the server's core(s) during "
            "the run" + ("" if result.pg_pct is not None else ": the machine was not idle")
        )
    if result.task_cpu:
        lines.append(result.task_cpu)
    if result.server_exit:
        lines.append(f"  serve exited with {result.server_exit}")
    lines.extend(f"  note: {note}" for note in result.notes)
    verdict = "PASS" if result.ok else ("FAILED" if result.failures else "MISS")
    lines.append(f"  p99 {result.latency.p99:.1f} ms (target ≤ {TARGET_P99_MS:g} ms): {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- one backend


async def wait_for_file(path: Path, bound: float) -> None:
    """Wait (bounded) until a file exists."""
    deadline = time.monotonic() + bound
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise BenchError(f"{path} did not appear in {bound:.0f} s")
        await asyncio.sleep(0.05)


async def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> Result:
    """Set up a server on one backend, drive it and collect the figures."""
    port, hook_port = harness.free_port(), harness.free_port()
    if backend == "sqlite":
        db_url: str | URL = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        shown_url = str(db_url)
    else:
        db_url = make_url(args.pg)
        await reset_pg(db_url)
        shown_url = db_url.render_as_string(hide_password=False)
    config = write_config(workdir, port, hook_port, shown_url, args)
    await workbot(config, "migrate", cwd=workdir)
    await workbot(config, "people", "import", str(ROOT / "examples" / "people.csv"), cwd=workdir)
    tag = os.urandom(4).hex()
    receiver = Receiver(tag)
    deadline = None
    if not args.no_deadline:
        day = dt.datetime.now(TZ_CN).date() + dt.timedelta(days=14)
        deadline = dt.datetime.combine(day, dt.time(17, 0), TZ_CN)
    total = args.warmup_count + round(args.duration * args.rate)
    cores = cpu_list(args.server_cpus)
    task_cpu = workdir / "task-cpu.json" if args.task_cpu else None
    async with serving(receiver.app(), hook_port):
        server = await start_server(config, port, args, workdir, task_cpu)
        pid = server.proc.pid  # taskset execs the server, so this is its pid
        try:
            if task_cpu is not None:
                server.proc.send_signal(signal.SIGUSR1)
            pg_before = await pg_backends_cpu(db_url) if isinstance(db_url, URL) else {}
            before = CpuSnapshot.take(pid, cores)
            posts = await run_load(server.url(API_PATH), tag, total, args.rate, deadline)
            wanted = {p.n for p in posts if p.status == 201}
            await receiver.wait_for(wanted, args.grace)
            after = CpuSnapshot.take(pid, cores)
            pg_after = await pg_backends_cpu(db_url) if isinstance(db_url, URL) else {}
            if task_cpu is not None:
                server.proc.send_signal(signal.SIGUSR2)
                await wait_for_file(task_cpu, DUMP_BOUND_S)
            health = await settled_health(server)
        finally:
            exit_status = await stop_server(server)
    times = await server_times(db_url, tag)
    cpu = CpuUse.between(pid, before, after, len(cores))
    result = figures(backend, args, posts, receiver, times, cpu)
    result.server_exit = exit_status
    if isinstance(db_url, URL):
        pg_s = sum(v - pg_before.get(k, 0.0) for k, v in pg_after.items())
        result.pg_ms_per_notice = 1000 * pg_s / len(posts)
        result.pg_pct = 100 * pg_s / cpu.seconds
    if task_cpu is not None:
        result.task_cpu = task_cpu_report(task_cpu, len(posts))
    outbox = health.get("outbox", {})
    if outbox.get("pending") or outbox.get("dead"):
        result.notes.append(f"/healthz outbox after the run: {outbox}")
    if receiver.unmarked or receiver.refused or receiver.edits:
        result.notes.append(
            f"receiver: {receiver.unmarked} unmarked sends, {receiver.edits} edits, "
            f"refused {dict(receiver.refused)}"
        )
    if exit_status:
        result.notes.append(f"serve log tail:\n{server.log_tail()}")
    return result


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = harness.bench_parser(__doc__, runtime="about 30 s per backend")
    harness.add_numbers(
        parser,
        ("--rate", 50.0, "notices per second"),
        ("--duration", 20.0, "measured seconds"),
        ("--warmup", 3.0, "unmeasured seconds first"),
        ("--grace", 15.0, "seconds to wait for the last sends"),
        ("--rate-count", 1000, "the webhook's published rate_count"),
        ("--rate-per", 1.0, "the webhook's rate_per_seconds"),
        ("--load-cpu", 1, "core of the load and receiver"),
    )
    parser.add_argument(
        "--pg",
        metavar="DSN",
        nargs="?",
        const=DEFAULT_PG,
        help=f"also run on PostgreSQL (a workbot_bench* database, created if missing; its "
        f"public schema is dropped and recreated); without a value: {DEFAULT_PG}",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="only run PostgreSQL")
    parser.add_argument(
        "--no-deadline",
        action="store_true",
        help="notices without a deadline (no reminder or escalation jobs are planned)",
    )
    parser.add_argument(
        "--server-cpus", default="0", help="taskset core list of the server, e.g. 0 or 0,1"
    )
    parser.add_argument(
        "--task-cpu",
        action="store_true",
        help="serve the app from an instrumented child that reports event-loop CPU per kind "
        "of task (the latency figures are then of the instrumented server)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument(
        "--serve-task-cpu", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_task_cpu:
        return args
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rate and --duration must be positive, --warmup not negative")
    if args.skip_sqlite and not args.pg:
        parser.error("--skip-sqlite needs --pg")
    try:
        cpu_list(args.server_cpus)
    except ValueError:
        parser.error(f"--server-cpus: not a core list: {args.server_cpus!r}")
    args.warmup_count = round(args.warmup * args.rate)
    return args


async def run(args: argparse.Namespace) -> int:
    """Run every selected backend and print the figures, the target line last."""
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (util-linux)")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.load_cpu})
    backends = ([] if args.skip_sqlite else ["sqlite"]) + (["postgresql"] if args.pg else [])
    info = harness.machine_info()
    harness.print_header(
        "e-gov latency benchmark — target: POST → first send, p99 ≤ 50 ms at 50/s", info
    )
    print(
        f"  {args.rate:g} notices/s open loop, {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured; audience: all 8 people of examples/people.csv; deadline: "
        f"{'none' if args.no_deadline else 'in 14 days'}; webhook limit "
        f"{args.rate_count}/{args.rate_per:g} s; serve on CPU {args.server_cpus}, load and "
        f"receiver on CPU {args.load_cpu}; backends {', '.join(backends)}",
        flush=True,
    )
    results: list[Result] = []
    for backend in backends:
        workdir = Path(tempfile.mkdtemp(prefix=f"workbot-bench-egov-{backend}-"))
        try:
            result = await run_backend(backend, args, workdir)
        finally:
            if args.keep:
                print(f"  kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        print(render(result), flush=True)
        results.append(result)
    if args.json:
        harness.write_json(args.json, info, results, ensure_ascii=False)
    print()
    for r in results:
        print(
            f"{r.backend}: p50 {r.latency.p50:.1f} ms, p99 {r.latency.p99:.1f} ms, "
            f"POST response p50 {r.response.p50:.1f} ms, p99 {r.response.p99:.1f} ms, "
            f"{r.failures} failures"
        )
    worst = max(results, key=lambda r: r.latency.p99)
    print(
        f"p99 e-gov→first send: {worst.latency.p99:.1f} ms (target ≤ {TARGET_P99_MS:g} ms)"
        + (f" [worst: {worst.backend}]" if len(results) > 1 else "")
    )
    if any(r.failures or r.server_exit for r in results):
        return 1
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.serve_task_cpu:
        config, out = args.serve_task_cpu
        return serve_task_cpu(Path(config), Path(out))
    try:
        return asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
