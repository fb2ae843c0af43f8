#!/usr/bin/env python3
"""Scheduler benchmark: idle CPU and firing lag with 100k scheduled jobs.

For each backend (SQLite in a temp file, PostgreSQL in a ``workbot_bench*`` database) it
bulk-loads 100,000 scheduled jobs shaped like the app's (``remind:<notice>:<seconds>``,
``escalate:<notice>``, one ``digest:<day>``; due in working hours over the next days and
weeks), then runs a real ``Scheduler.run()`` on the wall clock with the app's wiring
(in-process wake listener, plus LISTEN/NOTIFY on PostgreSQL) and a trivial handler that
records when each job actually fired:

1. **idle CPU**: the process's CPU time over a window in which nothing is due, as a % of one
   core (target ≤ 1 %); on PostgreSQL the CPU of our server backends is shown too;
2. **firing lag**: ~200 jobs due at random instants over the next ~30 s are scheduled while
   the scheduler sleeps, each in its own transaction through ``storage.jobs.schedule`` (whose
   commit wakes the scheduler, as in the app); lag = fired_at - due_at, p50/p99/max (target
   p99 ≤ 1 s).

Run ``python bench/scheduler.py --help``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import math
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from bot.scheduler.runner import JobHandler, JobRun, Scheduler  # noqa: E402
from storage import jobs  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import Job  # noqa: E402
from storage.types import JobState  # noqa: E402

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workbot_bench_sched"
TZ = ZoneInfo("Asia/Shanghai")
IDLE_TARGET_PCT = 1.0
LAG_TARGET_S = 1.0
MIN_LEAD = dt.timedelta(hours=2)  # nothing bulk-loaded is due before now + 2 h
SETTLE_S = 2.0
DRAIN_S = 10.0
SETUP_BOUND_S = 180.0  # per backend: load 100k rows, index, analyze (normally 5-20 s)
KINDS = ("remind", "escalate", "digest")


# --------------------------------------------------------------------------- data set


def _working_instant(rng: random.Random, day: dt.date) -> dt.datetime:
    """A local working-time instant (08:30-17:30, 5-minute grid) on a weekday on/after day."""
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    minutes = 8 * 60 + 30 + 5 * rng.randrange(0, 9 * 12)
    local = dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60), tzinfo=TZ)
    return local.astimezone(dt.UTC)


def job_rows(n: int, now: dt.datetime, seed: int) -> list[dict[str, Any]]:
    """n scheduled jobs as the app writes them: per notice two reminders and an escalation.

    Deadlines fall in working hours from 1.5 days to 8 weeks out; a reminder that would be
    due within MIN_LEAD is pushed to MIN_LEAD plus up to an hour. notice_id (a foreign key)
    is left NULL so that no notices are needed; the payload carries the id as the app's does.
    """
    rng = random.Random(seed)
    today = now.astimezone(TZ).date()
    rows: list[dict[str, Any]] = []

    def add(kind: str, key: str, due: dt.datetime, payload: dict[str, Any]) -> None:
        if due < now + MIN_LEAD:
            due = now + MIN_LEAD + dt.timedelta(seconds=rng.uniform(0, 3600))
        rows.append(
            {
                "kind": kind,
                "key": key,
                "due_at": due,
                "payload": payload,
                "notice_id": None,
                "state": JobState.SCHEDULED,
                "lease_until": None,
                "claimed_by": None,
                "attempts": 0,
                "last_error": None,
                "created_at": now - dt.timedelta(days=rng.uniform(0, 30)),
                "done_at": None,
            }
        )

    tomorrow = today + dt.timedelta(days=1)
    add("digest", f"digest:{tomorrow.isoformat()}", _working_instant(rng, tomorrow), {})
    notice = 100_000
    while len(rows) < n:
        notice += 1
        day = today + dt.timedelta(days=1 + int(rng.expovariate(1 / 14)) % 56)
        deadline = _working_instant(rng, day) + dt.timedelta(hours=12 * rng.random())
        for before in (86_400, 7_200):
            if len(rows) < n:
                due = deadline - dt.timedelta(seconds=before)
                payload = {"notice_id": notice, "offset": before}
                add("remind", f"remind:{notice}:{before}", due, payload)
        if len(rows) < n:
            escalate = deadline + dt.timedelta(days=1)
            add("escalate", f"escalate:{notice}", escalate, {"notice_id": notice})
    return rows


async def bulk_load(db: Database, rows: list[dict[str, Any]], chunk: int = 5_000) -> float:
    """Insert the rows with executemany in one transaction, then ANALYZE; seconds taken."""
    started = time.perf_counter()
    async with db.engine.begin() as conn:
        for i in range(0, len(rows), chunk):
            await conn.execute(insert(Job), rows[i : i + chunk])
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- PostgreSQL


async def pg_backend_cpu(db: Database) -> float:
    """CPU seconds used so far by the server backends connected to this database.

    That is the pool's connections and the LISTEN connection; the query that asks costs
    the same at both ends of a window.
    """
    async with db.engine.connect() as conn:
        pids = (
            await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        ).scalars()
        return proc_cpu_seconds(list(pids))


def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far, from /proc (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --------------------------------------------------------------------------- measuring


@dataclass
class Probe:
    """Everything the scheduler did during the run, as seen by the bench."""

    fired: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    passes: int = 0
    idle_queries: int = 0
    expected: int = 0
    all_fired: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, session: AsyncSession, job: Job, now: dt.datetime) -> None:
        """The trivial job handler: note when the job actually ran."""
        fired_at = harness.utcnow()
        if "probe" in job.payload:
            self.fired[job.key] = (job.due_at, fired_at)
            if len(self.fired) >= self.expected:
                self.all_fired.set()
        else:
            self.unexpected.append(job.key)


class CountingScheduler(Scheduler):
    """The real Scheduler, counting its passes and next-due queries (run() is unchanged)."""

    probe: Probe

    async def run_once(self) -> list[JobRun]:
        """Count the pass, then claim and run as usual."""
        self.probe.passes += 1
        return await super().run_once()

    async def idle_delay(self) -> float:
        """Count the query, then ask as usual."""
        self.probe.idle_queries += 1
        return await super().idle_delay()


@dataclass
class Result:
    """The figures of one backend."""

    backend: str
    jobs: int
    load_s: float
    next_due_ms: float
    max_idle_s: float
    idle_window_s: float
    idle_cpu_s: float
    idle_user_s: float
    idle_sys_s: float
    idle_passes: int
    idle_ctx_switches: int
    idle_db_cpu_s: float | None
    lag_jobs: int
    lag_fired: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_passes: int
    lag_cpu_s: float
    lag_wall_s: float
    unexpected: int
    notes: list[str] = field(default_factory=list)

    @property
    def idle_pct(self) -> float:
        """Process CPU over the idle window, as a % of one core."""
        return 100.0 * self.idle_cpu_s / self.idle_window_s

    @property
    def idle_ok(self) -> bool:
        """Whether idle CPU meets the target."""
        return self.idle_pct <= IDLE_TARGET_PCT and self.unexpected == 0

    @property
    def lag_ok(self) -> bool:
        """Whether every probe fired once, with p99 lag within the target."""
        return (
            self.lag_fired == self.lag_jobs
            and self.lag_p99_ms <= LAG_TARGET_S * 1000
            and self.unexpected == 0
        )


async def time_next_due(db: Database, n: int = 5) -> float:
    """Median ms of storage.jobs.next_due_at (what every idle_delay runs) on the loaded table."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        async with db.read() as session:
            await jobs.next_due_at(session, now=dt.datetime.now(dt.UTC))
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)[len(samples) // 2]


async def add_probes(
    db: Database, start: float, plan: list[tuple[float, float]], run_tag: str
) -> None:
    """Schedule each probe at its add time (s after start), due at its due time, one commit each."""
    loop = asyncio.get_running_loop()
    for i, (add_at, due_in) in enumerate(plan):
        delay = start + add_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = harness.utcnow()
        due = now + dt.timedelta(seconds=start + due_in - loop.time())
        async with db.transaction() as session:
            await jobs.schedule(
                session,
                kind="remind",
                key=f"probe:{run_tag}:{i}",
                due_at=due,
                payload={"notice_id": 1, "offset": 0, "probe": i},
                now=now,
            )


def probe_plan(n: int, window: float, rng: random.Random) -> list[tuple[float, float]]:
    """(add_at, due_at) pairs in seconds from the start, sorted by add time.

    Due instants are uniform over [1 s, window]; each job is added at a uniform instant
    between the start and 0.2 s before it is due, so most are added while the scheduler
    sleeps towards an earlier job, and some just before they fall due.
    """
    plan = []
    for _ in range(n):
        due = rng.uniform(1.0, window)
        plan.append((rng.uniform(0.0, due - 0.2), due))
    return sorted(plan)


async def measure(db: Database, backend: str, args: argparse.Namespace) -> Result:
    """Load, then measure idle CPU and firing lag with a real Scheduler.run()."""
    notes: list[str] = []
    async with db.transaction() as session:
        leftover = await session.scalar(select(func.count()).select_from(Job))
    if leftover:
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM job"))
    rows = job_rows(args.jobs, harness.utcnow(), args.seed)
    load_s = await bulk_load(db, rows)
    del rows
    gc.collect()
    next_due_ms = await time_next_due(db)
    print(
        f"[{backend}] loaded {args.jobs:,} scheduled jobs in {load_s:.1f} s; "
        f"next_due_at over them: {next_due_ms:.1f} ms",
        flush=True,
    )

    max_idle = args.max_idle if args.max_idle else (60.0 if db.is_sqlite else 600.0)
    probe = Probe()
    handlers: dict[str, JobHandler] = {kind: probe.handler for kind in KINDS}
    scheduler = CountingScheduler(
        db, handlers, worker=f"bench:{os.getpid()}", clock=harness.utcnow, max_idle=max_idle
    )
    scheduler.probe = probe

    async with harness.running(db, "jobs", scheduler, "bench-scheduler") as task:
        await asyncio.sleep(SETTLE_S)
        if task.done():
            task.result()

        # (a) idle CPU: nothing is due for at least MIN_LEAD.
        passes0 = probe.passes
        db_cpu0 = await pg_backend_cpu(db) if not db.is_sqlite else 0.0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        cpu1, wall1 = time.process_time(), time.monotonic()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        db_cpu = (await pg_backend_cpu(db) - db_cpu0) if not db.is_sqlite else None
        idle_passes = probe.passes - passes0
        idle_window = wall1 - wall0
        idle_cpu = cpu1 - cpu0
        print(
            f"[{backend}] idle: {idle_cpu:.3f} s CPU in {idle_window:.1f} s "
            f"({100 * idle_cpu / idle_window:.3f} % of a core), {idle_passes} scheduler passes",
            flush=True,
        )

        # (b) firing lag: probes added while the scheduler sleeps.
        rng = random.Random(args.seed + 1)
        plan = probe_plan(args.lag_jobs, args.lag_window, rng)
        passes0 = probe.passes
        probe.expected = len(plan)
        run_tag = f"{os.getpid()}-{int(time.time())}"
        loop = asyncio.get_running_loop()
        lag_cpu0 = time.process_time()
        start = loop.time()
        await add_probes(db, start, plan, run_tag)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(start + args.lag_window + DRAIN_S):
                await probe.all_fired.wait()
        lag_passes = probe.passes - passes0
        lag_cpu = time.process_time() - lag_cpu0
        lag_wall = loop.time() - start
        if task.done():
            task.result()

    lags = [(fired - due).total_seconds() * 1000 for due, fired in probe.fired.values()]
    if len(lags) < len(plan):
        notes.append(f"{len(plan) - len(lags)} probes never fired within {DRAIN_S:g} s")
    early = [lag for lag in lags if lag < 0]
    if early:
        notes.append(f"{len(early)} probes fired before they were due")
    if probe.unexpected:
        notes.append(f"{len(probe.unexpected)} bulk jobs fired (none was due)")
    return Result(
        backend=backend,
        jobs=args.jobs,
        load_s=load_s,
        next_due_ms=next_due_ms,
        max_idle_s=max_idle,
        idle_window_s=idle_window,
        idle_cpu_s=idle_cpu,
        idle_user_s=ru1.ru_utime - ru0.ru_utime,
        idle_sys_s=ru1.ru_stime - ru0.ru_stime,
        idle_passes=idle_passes,
        idle_ctx_switches=(ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw),
        idle_db_cpu_s=db_cpu,
        lag_jobs=len(plan),
        lag_fired=len(lags),
        lag_p50_ms=harness.percentile(lags, 0.50),
        lag_p99_ms=harness.percentile(lags, 0.99),
        lag_max_ms=max(lags) if lags else math.nan,
        lag_passes=lag_passes,
        lag_cpu_s=lag_cpu,
        lag_wall_s=lag_wall,
        unexpected=len(probe.unexpected),
        notes=notes,
    )


# --------------------------------------------------------------------------- reporting


def render(results: Sequence[Result]) -> str:
    """The results table."""
    lines = [
        f"{'backend':<11} {'measure':<13} {'figure':<44} {'target':<13} result",
        "-" * 92,
    ]
    for r in results:
        db_cpu = "" if r.idle_db_cpu_s is None else f", server {r.idle_db_cpu_s:.2f} s"
        idle = f"{r.idle_pct:.3f} % ({r.idle_cpu_s:.3f} s/{r.idle_window_s:.0f} s{db_cpu})"
        lag = f"p50 {r.lag_p50_ms:.0f} / p99 {r.lag_p99_ms:.0f} / max {r.lag_max_ms:.0f} ms"
        lines.append(
            f"{r.backend:<11} {'idle CPU':<13} {idle:<44} {'≤ 1 % core':<13} "
            f"{'PASS' if r.idle_ok else 'MISS'}"
        )
        lines.append(
            f"{'':<11} {'firing lag':<13} {lag:<44} {'p99 ≤ 1 s':<13} "
            f"{'PASS' if r.lag_ok else 'MISS'}"
        )
        lines.append(
            f"{'':<11} {'':<13} {r.lag_fired}/{r.lag_jobs} probes fired, "
            f"{r.lag_passes} passes, {r.lag_cpu_s:.1f} s CPU in {r.lag_wall_s:.0f} s"
        )
        lines.append(
            f"{'':<11} {'':<13} idle: {r.idle_passes} passes (max_idle {r.max_idle_s:g} s), "
            f"{r.idle_ctx_switches} context switches; next_due_at {r.next_due_ms:.1f} ms; "
            f"{r.jobs:,} jobs loaded in {r.load_s:.1f} s"
        )
        for note in r.notes:
            lines.append(f"{'':<11} {'':<13} note: {note}")
    return "\n".join(lines)


def bound_seconds(args: argparse.Namespace, backends: Sequence[str]) -> float:
    """The longest this run may take (it is cancelled beyond it)."""
    per: float = SETUP_BOUND_S + SETTLE_S + args.idle_seconds + args.lag_window + DRAIN_S + 10
    return per * len(backends)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = harness.bench_parser(
        __doc__, runtime="about 2 minutes per backend (the bound is printed at start)"
    )
    harness.add_databases(parser, DEFAULT_PG_URL, "WORKBOT_BENCH_SCHED_PG", both=True)
    harness.add_numbers(
        parser,
        ("--jobs", 100_000, "scheduled jobs to load"),
        ("--idle-seconds", 60.0, "idle CPU window (at least 30)"),
        ("--lag-jobs", 200, "probe jobs for firing lag"),
        ("--lag-window", 30.0, "probes fall due over this many seconds"),
        (
            "--max-idle",
            0.0,
            "Scheduler max_idle in seconds (0: the app's, 60 on SQLite and 600 on PostgreSQL)",
        ),
        ("--seed", 7, "random seed"),
    )
    args = parser.parse_args(argv)
    if args.idle_seconds < 30:
        parser.error("--idle-seconds must be at least 30")
    if args.lag_window < 2 or args.lag_jobs < 1 or args.jobs < 1:
        parser.error("--lag-window must be ≥ 2, --lag-jobs and --jobs ≥ 1")
    return args


async def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> Result:
    """Set up one backend's database and measure it."""
    db = await harness.open_migrated(backend, workdir / "sched.db", args.pg_url)
    try:
        result = await measure(db, backend, args)
        if backend == "postgresql":
            result.notes.append(f"PostgreSQL {await harness.pg_version(db)}")
        return result
    finally:
        await db.dispose()


async def run(args: argparse.Namespace) -> int:
    """Run every selected backend and print the figures."""
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    bound = bound_seconds(args, backends)
    info = harness.machine_info()
    harness.print_header("scheduler benchmark — target: idle CPU ≤ 1 %, firing lag p99 ≤ 1 s", info)
    print(
        f"  {args.jobs:,} jobs; idle window {args.idle_seconds:g} s; {args.lag_jobs} probes "
        f"over {args.lag_window:g} s; runtime bound {bound:.0f} s",
        flush=True,
    )
    results: list[Result] = []
    started = time.monotonic()
    with harness.scratch_dir("workbot-bench-sched-") as workdir:
        async with asyncio.timeout(bound):
            for backend in backends:
                results.append(await run_backend(backend, args, workdir))
    ok = all(r.idle_ok and r.lag_ok for r in results)
    return harness.conclude(render(results), started, ok, args.json, info, results, default=str)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return harness.run_async(run, parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
