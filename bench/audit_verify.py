#!/usr/bin/env python3
"""`workbot audit verify` on a large trail: the chain walk, the HMAC and the replay.

Builds a trail through the real domain operations (NOTICES notices for PEOPLE people each,
every assignee acknowledging: NOTICES x (PEOPLE + 1) events, plus the directory import),
keyed with an audit key, then runs `workbot audit verify` in this process and reports its
wall time and the process's peak memory. Run `python bench/audit_verify.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.cli import main  # noqa: E402
from storage import domain  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.directory import parse_people_csv, upsert_people  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.types import UTC, Channel  # noqa: E402

KEY = "bench-audit-key-0123456789abcdef0123456789"
BATCH = 500  # operations per transaction while building


async def build(url: str, notices: int, people: int) -> int:
    """Migrate, import the people, create the notices and acknowledge every assignment."""
    db = Database(url, audit_key=KEY.encode())
    try:
        await upgrade(db)
        csv = "id,name,department,roles\n" + "".join(
            f"b{i:05d},人员{i},科室{i % 20},staff\n" for i in range(people)
        )
        system = domain.Actor.system("bench")
        now = dt.datetime.now(UTC)
        async with db.transaction() as s:
            await upsert_people(s, parse_people_csv(csv.encode(), ()), actor=system, now=now)
        events = 1
        draft = domain.NoticeDraft(title="基准通知", audience=domain.Audience(all=True))
        for start in range(0, notices, 50):
            async with db.transaction() as s:
                for _ in range(min(50, notices - start)):
                    await domain.create_notice(s, draft, actor=system, now=now)
                    events += 1
        pairs = [(n, f"b{p:05d}") for n in range(1, notices + 1) for p in range(people)]
        for start in range(0, len(pairs), BATCH):
            async with db.transaction() as s:
                for notice_id, person_id in pairs[start : start + BATCH]:
                    await domain.acknowledge(
                        s, notice_id, person_id, channel=Channel.GROUP, actor=system, now=now
                    )
                    events += 1
        return events
    finally:
        await db.dispose()


def run_verify(url: str, workdir: Path) -> tuple[int, float]:
    """Run `workbot audit verify` with the key; (exit code, seconds)."""
    config = workdir / "bench.toml"
    config.write_text(
        f'[bot]\nlanguage = "en"\n[database]\nurl = "{url}"\n'
        '[audit]\nkey_env = "WORKBOT_AUDIT_KEY"\n',
        encoding="utf-8",
    )
    started = time.perf_counter()
    code = main(["-c", str(config), "audit", "verify"], {"WORKBOT_AUDIT_KEY": KEY})
    return code, time.perf_counter() - started


def main_bench() -> None:
    """Parse the arguments, build the trail, time the verification."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=2000)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument(
        "--url", help="an empty database's URL (default: a new SQLite file, deleted after)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="--url already holds a trail: only verify it"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = args.url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        events = args.notices * (args.people + 1) + 1
        if not args.reuse:
            started = time.perf_counter()
            events = asyncio.run(build(url, args.notices, args.people))
            print(f"built {events} events in {time.perf_counter() - started:.1f} s", flush=True)
        code, seconds = run_verify(url, workdir)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"audit verify: exit {code}, {seconds:.2f} s, {events / seconds:,.0f} events/s")
        print(f"peak RSS of this process (build included): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main_bench()
