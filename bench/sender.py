#!/usr/bin/env python3
"""Sender benchmark: use ≥ 95 % of the allowance, 0 429s.

A real ``OutboxSender.run()`` (the app's defaults: batch 50, concurrency 8, the default
``RetryPolicy``, woken in-process by the enqueue's commit) delivers a backlog of outbox rows
through the real ``WebhookPlatform`` over loopback HTTP to ``tests/fakes/webhook_server.py``'s
``FakeWebhook``, which enforces a sliding-window limit and answers 429 beyond it. The
platform publishes the same limit the fake enforces, so the sender should fill it exactly.

Two variants: 20 per minute for 3 minutes (80 messages queued, so the backlog never runs
out), and 20 per second for 20 s (500 messages). Figures, per variant, over the window
that starts at the first accepted send:

- **allowance used**: accepted sends in [first, first + window) over count × window / per
  (target ≥ 95 %);
- **429 rejections** during the whole run (target 0);
- **slot reuse**: per over the mean time between send i and send i + count (in the window) —
  the steady-state share of the allowance, whatever the window's alignment with the bursts
  (a short window can count one burst more than the steady state gives); also ≥ 95 %.

Run ``python bench/sender.py --help``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from bot.delivery.sender import OutboxSender, Outcome, RetryPolicy  # noqa: E402
from bot.platforms.webhook import WebhookConfig, WebhookPlatform  # noqa: E402
from storage import outbox  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import OutboxMessage  # noqa: E402
from storage.types import OutboxState  # noqa: E402
from tests.fakes.webhook_server import FakeWebhook  # noqa: E402

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workbot_bench_sender"
TOKEN = "bench-token"  # the fake's bearer token
USE_TARGET_PCT = 95.0
FIRST_SEND_BOUND_S = 30.0
SETUP_BOUND_S = 60.0


@dataclass(frozen=True)
class Variant:
    """One rate limit to fill: count per `per` seconds, measured for `seconds`."""

    name: str
    count: int
    per: float
    seconds: float
    messages: int

    @property
    def allowance(self) -> float:
        """How many sends the limit allows in the measured window."""
        return self.count * self.seconds / self.per


@dataclass
class Result:
    """The figures of one variant."""

    variant: str
    backend: str
    count: int
    per: float
    window_s: float
    queued: int
    rate_margin: float
    sent_in_window: int
    allowance: float
    rejections: int
    sent_total: int
    slot_reuse_s: float | None
    min_gap_s: float | None
    deferrals: int
    other_status: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def used_pct(self) -> float:
        """Accepted sends in the window as a % of the allowance."""
        return 100.0 * self.sent_in_window / self.allowance

    @property
    def reuse_pct(self) -> float | None:
        """per / (mean time between send i and send i + count), as a %."""
        if not self.slot_reuse_s:
            return None
        return 100.0 * self.per / self.slot_reuse_s

    @property
    def ok(self) -> bool:
        """Both targets met, and the figures are meaningful."""
        return (
            self.used_pct >= USE_TARGET_PCT
            and (self.reuse_pct or 0.0) >= USE_TARGET_PCT
            and self.rejections == 0
            and not self.other_status
            and self.sent_in_window < self.queued
        )


# --------------------------------------------------------------------------- databases


async def open_database(
    backend: str, args: argparse.Namespace, workdir: Path, tag: str
) -> Database:
    """A migrated, empty database for one variant."""
    db = await harness.open_migrated(backend, workdir / f"sender-{tag}.db", args.pg_url)
    if not db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox_message"))
            await conn.execute(text("DELETE FROM rate_window"))
    return db


# --------------------------------------------------------------------------- the run


class CountingSender(OutboxSender):
    """The real OutboxSender, counting rate-limit deferrals (run() and delivery are unchanged)."""

    deferrals = 0

    async def _defer(self, row: OutboxMessage, seconds: float, why: str) -> Outcome:
        self.deferrals += 1
        return await super()._defer(row, seconds, why)


def targets(n_people: int) -> list[outbox.Target]:
    """The bound group chat and n people's DMs (per-target order serialises each one)."""
    chat = [outbox.Target("webhook", "chat", "group-main")]
    return chat + [outbox.Target("webhook", "person", f"p{i:04}") for i in range(n_people)]


async def enqueue_backlog(db: Database, variant: Variant, run_tag: str) -> None:
    """Write the backlog in one transaction, as a burst of reminders would be."""
    spread = targets(40)
    now = harness.utcnow()
    async with db.transaction() as session:
        for i in range(variant.messages):
            await outbox.enqueue(
                session,
                target=spread[i % len(spread)],
                payload={"text": f"bench {variant.name} #{i}"},
                idempotency_key=f"bench:{run_tag}:{i}",
                now=now,
                purpose="reminder",
            )


async def run_variant(
    variant: Variant, backend: str, args: argparse.Namespace, workdir: Path
) -> Result:
    """Fill one rate limit with a real OutboxSender.run() for the variant's window."""
    notes: list[str] = []
    db = await open_database(backend, args, workdir, variant.name.replace("/", "-per-"))
    policy = RetryPolicy()
    if args.rate_margin is not None:
        policy = dataclasses.replace(policy, rate_margin=args.rate_margin)
    if args.rate_margin_share is not None:
        policy = dataclasses.replace(policy, rate_margin_share=args.rate_margin_share)
    run_tag = f"{os.getpid()}-{int(time.time())}"
    try:
        async with FakeWebhook(token=TOKEN) as fake:
            fake.rate_limit(variant.count, variant.per)
            config = WebhookConfig(
                url=fake.url, rate_count=variant.count, rate_per_seconds=float(variant.per)
            )
            platform_ = WebhookPlatform(config, TOKEN)
            sender = CountingSender(
                db,
                {"webhook": platform_},
                worker=f"bench:{os.getpid()}",
                clock=harness.utcnow,
                policy=policy,
                max_idle=60.0 if db.is_sqlite else 600.0,
            )
            try:
                async with harness.running(db, "outbox", sender, "bench-sender") as task:
                    await enqueue_backlog(db, variant, run_tag)
                    await fake.wait_until(lambda: bool(fake.sends), within=FIRST_SEND_BOUND_S)
                    first = fake.sends[0].at
                    end = first + variant.seconds
                    await asyncio.sleep(max(0.0, end - time.monotonic()) + 0.05)
                    if task.done():
                        task.result()
            finally:
                await platform_.close()
            arrivals = [r.at for r in fake.sends]
            in_window = sum(1 for at in arrivals if at < end)
            gaps = [
                arrivals[i] - arrivals[i - variant.count] for i in range(variant.count, in_window)
            ]
            other = {
                str(status): n
                for status, n in fake.requests_by_status.items()
                if status not in (200, 201, 429)
            }
            by_target: dict[str, list[int]] = defaultdict(list)
            for r in fake.sends:
                by_target[r.target].append(int(r.text.rsplit("#", 1)[1]))
            if any(seq != sorted(seq) for seq in by_target.values()):
                notes.append("per-target order was NOT preserved")
            if sum(fake.duplicates_by_key.values()):
                notes.append(f"{sum(fake.duplicates_by_key.values())} duplicate sends")
            if in_window >= variant.messages:
                notes.append("the backlog ran out inside the window: the figure is a floor")
            async with db.read() as session:
                retried = await session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.attempts > 0)
                )
            if retried:
                notes.append(f"{retried} rows were retried after a failure")
            return Result(
                variant=variant.name,
                backend=backend,
                count=variant.count,
                per=variant.per,
                window_s=variant.seconds,
                queued=variant.messages,
                rate_margin=policy.margin_for(variant.per),
                sent_in_window=in_window,
                allowance=variant.allowance,
                rejections=fake.rejections,
                sent_total=len(arrivals),
                slot_reuse_s=statistics.fmean(gaps) if gaps else None,
                min_gap_s=min(gaps) if gaps else None,
                deferrals=sender.deferrals,
                other_status=other,
                notes=notes,
            )
    finally:
        await db.dispose()


# --------------------------------------------------------------------------- reporting


def render(results: Sequence[Result]) -> str:
    """The results table."""
    head = (
        f"{'variant':<9} {'backend':<10} {'limit':<10} {'window':>7} {'sent':>5} "
        f"{'allow':>6} {'used':>7} {'429s':>5} {'reuse':>7} {'defers':>6}  result"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        limit = f"{r.count}/{r.per:g}s"
        reuse = "-" if r.reuse_pct is None else f"{r.reuse_pct:.1f}%"
        lines.append(
            f"{r.variant:<9} {r.backend:<10} {limit:<10} {r.window_s:>6g}s {r.sent_in_window:>5} "
            f"{r.allowance:>6g} {r.used_pct:>6.1f}% {r.rejections:>5} {reuse:>7} "
            f"{r.deferrals:>6}  {'PASS' if r.ok else 'MISS'}"
        )
        extra = f"margin {r.rate_margin:g} s; {r.sent_total} sent in all of {r.queued} queued"
        if r.slot_reuse_s is not None:
            extra += f"; send i to i+{r.count}: mean {r.slot_reuse_s:.3f} s"
        if r.min_gap_s is not None:
            extra += f", min {r.min_gap_s:.3f} s (per {r.per:g} s)"
        if r.other_status:
            extra += f"; other statuses {r.other_status}"
        lines.append(f"{'':<9} {extra}")
        for note in r.notes:
            lines.append(f"{'':<9} note: {note}")
    lines.append("targets: used and reuse ≥ 95 % of the allowance, 0 rejections (429)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = harness.bench_parser(
        __doc__, runtime="about 3.5 minutes (the bound is printed at start)"
    )
    parser.add_argument(
        "--variant", choices=("minute", "second", "both"), default="both", help="which limits"
    )
    harness.add_databases(parser, DEFAULT_PG_URL, "WORKBOT_BENCH_SENDER_PG")
    harness.add_numbers(
        parser,
        ("--minute-seconds", 180.0, "window of the 20/min variant"),
        ("--minute-messages", 80, "backlog of the 20/min variant"),
        ("--second-seconds", 20.0, "window of the 20/s variant"),
        ("--second-messages", 500, "backlog of the 20/s variant"),
    )
    parser.add_argument(
        "--rate-margin",
        type=float,
        help="override RetryPolicy.rate_margin in seconds (default: the app's RetryPolicy)",
    )
    parser.add_argument(
        "--rate-margin-share",
        type=float,
        help="override RetryPolicy.rate_margin_share (default: the app's RetryPolicy)",
    )
    args = parser.parse_args(argv)
    if min(args.minute_seconds, args.second_seconds) <= 0:
        parser.error("windows must be positive")
    return args


def variants(args: argparse.Namespace) -> list[Variant]:
    """The selected variants."""
    chosen = []
    if args.variant in ("minute", "both"):
        chosen.append(Variant("20/min", 20, 60.0, args.minute_seconds, args.minute_messages))
    if args.variant in ("second", "both"):
        chosen.append(Variant("20/s", 20, 1.0, args.second_seconds, args.second_messages))
    return chosen


async def run(args: argparse.Namespace) -> int:
    """Run every selected variant and print the figures."""
    chosen = variants(args)
    bound = sum(v.seconds + SETUP_BOUND_S + FIRST_SEND_BOUND_S for v in chosen)
    info = harness.machine_info()
    harness.print_header(
        "sender benchmark — target: ≥ 95 % of the allowance, 0 rate-limit rejections", info
    )
    print(
        "  "
        + "; ".join(f"{v.name}: {v.messages} queued, {v.seconds:g} s window" for v in chosen)
        + f"; backend {args.backend}; runtime bound {bound:.0f} s",
        flush=True,
    )
    started = time.monotonic()
    results: list[Result] = []
    with harness.scratch_dir("workbot-bench-sender-") as workdir:
        async with asyncio.timeout(bound):
            for variant in chosen:
                result = await run_variant(variant, args.backend, args, workdir)
                print(
                    f"[{variant.name}] {result.sent_in_window} sent in {variant.seconds:g} s "
                    f"({result.used_pct:.1f} % of {result.allowance:g}), "
                    f"{result.rejections} rejections",
                    flush=True,
                )
                results.append(result)
    ok = all(r.ok for r in results)
    return harness.conclude(render(results), started, ok, args.json, info, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return harness.run_async(run, parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
