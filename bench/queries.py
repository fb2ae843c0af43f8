#!/usr/bin/env python3
"""Query benchmark: pending_for, status and create_notice at 3M assignments.

Builds 10k notices x 300 people on SQLite and/or PostgreSQL, then times the real read
queries through ``Database.read()`` and the real ``create_notice`` through
``Database.transaction()``. Run ``python bench/queries.py --help``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import harness  # noqa: E402
from sqlalchemy import and_, case, exists, func, or_, select, text  # noqa: E402
from sqlalchemy.engine import URL, make_url  # noqa: E402

from bot.platforms.registry import directory_columns  # noqa: E402
from storage import audit  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.directory import parse_people_csv, upsert_people  # noqa: E402
from storage.domain import Actor, Audience, NoticeDraft, close_notice, create_notice  # noqa: E402
from storage.migrate import schema_status, upgrade  # noqa: E402
from storage.models import Assignment, AuditEvent, Notice, Outcome, Person, Reply  # noqa: E402
from storage.queries import pending_for, status  # noqa: E402
from storage.types import (  # noqa: E402
    OUTSTANDING_STATES,
    UTC,
    AssignmentState,
    Channel,
    FeedbackKind,
    NoticeKind,
    NoticeSource,
    NoticeState,
    ReplyKind,
    Requires,
    is_outstanding,
)

S = AssignmentState
DAY = 86_400.0
HOUR = 3_600.0

DEFAULT_PG_DSN = "postgresql+asyncpg://postgres@127.0.0.1:5432/workbot_bench"
QUERY_TARGET_MS = 10.0
CREATE_TARGET_MS = 200.0
MARKER_ACTION = "bench.bulk_load"

CORE_DEPARTMENTS = (
    "办公室",
    "综合科",
    "政策法规科",
    "财务科",
    "人事科",
    "安全生产科",
    "执法一大队",
    "执法二大队",
    "信息中心",
    "规划科",
    "审批科",
    "督查室",
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志红文斌宇浩凯鹏晨欣怡"
TOPICS = (
    "安全生产大检查",
    "消防隐患排查整治",
    "防汛备汛",
    "营商环境优化",
    "基层减负",
    "统计数据报送",
    "政务公开自查",
    "节假日值班安排",
    "信访矛盾化解",
    "网络安全检查",
    "财务收支审计",
    "重点项目推进",
    "环境卫生整治",
    "食品安全抽检",
    "年度考核",
    "干部教育培训",
)
ISSUERS = ("市人民政府办公室", "市应急管理局", "市财政局", "市统计局", "区委办公室")
EXCUSE_REASONS = ("病假", "年休假", "外出培训", "已委托同事办理", "借调")
RETURN_REASONS = ("材料不全，请补充佐证", "成效数据缺少对比", "请按模板重新填报")
PROGRESS_TEXTS = ("已部署，正在推进", "已完成自查，正在整改", "材料收集中", "已上报初稿")
MEASURES = (
    ["召开专题会议部署", "成立工作专班"],
    ["开展全面自查", "建立问题台账", "逐项整改销号"],
    ["精简会议文件", "合并同类报表"],
    ["组织专项培训", "开展现场检查"],
)
RESULTS = (
    "按期完成，问题全部整改到位。",
    "发现隐患12处，已整改11处，1处限期整改中。",
    "发文数量同比下降30%，会议数量下降25%。",
    "数据已按时报送，无差错。",
)
METRICS: tuple[list[dict[str, Any]], ...] = (
    [],
    [{"name": "整改问题", "value": 11.0, "unit": "处"}],
    [
        {"name": "发文数量", "value": -30.0, "unit": "%"},
        {"name": "会议", "value": -25.0, "unit": "%"},
    ],
)

NOTICE_COLUMNS = (
    "id",
    "kind",
    "title",
    "body",
    "doc_number",
    "plan_ref",
    "source",
    "external_id",
    "payload_digest",
    "issuer_department",
    "issuer_name",
    "issuer_person_id",
    "audience",
    "requires",
    "state",
    "created_by",
    "created_at",
    "deadline",
    "closed_at",
)
ASSIGNMENT_COLUMNS = (
    "id",
    "notice_id",
    "person_id",
    "state",
    "outstanding",
    "late",
    "ack_channel",
    "acknowledged_at",
    "started_at",
    "done_at",
    "verified_at",
    "returned_at",
    "excused_at",
    "excuse_reason",
    "return_reason",
    "progress_percent",
    "progress_text",
    "progress_at",
    "updated_at",
)
OUTCOME_COLUMNS = ("id", "assignment_id", "measures", "results", "metrics", "created_at")
REPLY_COLUMNS = (
    "id",
    "assignment_id",
    "kind",
    "channel",
    "text",
    "percent",
    "feedback_kind",
    "message_ref",
    "actor",
    "created_at",
)
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("notice", NOTICE_COLUMNS),
    ("assignment", ASSIGNMENT_COLUMNS),
    ("outcome", OUTCOME_COLUMNS),
    ("reply", REPLY_COLUMNS),
)

Row = tuple[Any, ...]
Stamp = Callable[[float], Any]


class PgConnection(Protocol):
    """The part of asyncpg's Connection the loader uses (asyncpg ships no type hints)."""

    async def execute(self, query: str, *args: object) -> str:
        """Run one statement."""

    async def copy_records_to_table(
        self, table_name: str, *, records: Sequence[Row], columns: Sequence[str]
    ) -> str:
        """Binary COPY of rows into a table."""

    def transaction(self) -> AbstractAsyncContextManager[object]:
        """A transaction block."""

    async def close(self) -> None:
        """Close the connection."""


# --------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class Spec:
    """The dataset's shape; the same spec and seed give the same rows on every backend."""

    notices: int
    people: int
    directory: int
    open_notices: int
    seed: int
    now: float
    span_days: float = 730.0

    @property
    def core_ids(self) -> list[str]:
        """The people every bulk notice is addressed to (sorted, as create_notice sorts)."""
        return [f"p{i:04d}" for i in range(1, self.people + 1)]

    def marker(self) -> dict[str, Any]:
        """What identifies a built dataset (stored in its bulk-load audit event)."""
        return {
            "notices": self.notices,
            "people": self.people,
            "directory": self.directory,
            "open_notices": self.open_notices,
            "seed": self.seed,
        }


def _person_name(i: int) -> str:
    return SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)] + GIVEN[(i * 13) % len(GIVEN)]


def people_csv(spec: Spec) -> bytes:
    """The directory as the office would import it: core departments plus base-level units."""
    lines = ["id,name,department,roles,phone,wecom"]
    per_dept = max(1, math.ceil(spec.people / len(CORE_DEPARTMENTS)))
    for i in range(spec.people):
        dept = CORE_DEPARTMENTS[min(i // per_dept, len(CORE_DEPARTMENTS) - 1)]
        first_in_dept = i % per_dept == 0
        roles = ["staff"]
        if dept == "办公室":
            roles = ["office", "admin"] if i == 0 else ["office"]
        elif first_in_dept:
            roles = ["head"]
        pid = f"p{i + 1:04d}"
        lines.append(f"{pid},{_person_name(i)},{dept},{';'.join(roles)},138{i:08d},wx_{pid}")
    for j in range(spec.directory - spec.people):
        pid = f"x{j + 1:04d}"
        dept = f"第{j // 25 + 1:02d}基层所"
        role = "head" if j % 25 == 0 else "staff"
        lines.append(f"{pid},{_person_name(spec.people + j)},{dept},{role},139{j:08d},wx_{pid}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Batch:
    """Rows for a run of consecutive notices, per table."""

    notice: list[Row] = field(default_factory=list)
    assignment: list[Row] = field(default_factory=list)
    outcome: list[Row] = field(default_factory=list)
    reply: list[Row] = field(default_factory=list)

    def rows(self, table: str) -> list[Row]:
        """The rows of one table."""
        rows: list[Row] = getattr(self, table)
        return rows


def _table(weights: Sequence[tuple[Any, int]]) -> list[Any]:
    """A 100-slot lookup table, for cheap weighted choices over millions of rows."""
    out: list[Any] = []
    for value, weight in weights:
        out.extend([value] * weight)
    assert len(out) == 100
    return out


ACK_CHANNELS = _table(
    [
        (Channel.GROUP, 45),
        (Channel.BUTTON, 25),
        (Channel.REACTION, 12),
        (Channel.DM, 10),
        (Channel.PHONE, 5),
        (Channel.LINK, 3),
    ]
)
WORK_CHANNELS = _table(
    [(Channel.GROUP, 40), (Channel.DM, 35), (Channel.PORTAL, 15), (Channel.LINK, 10)]
)
KINDS = _table(
    [
        (NoticeKind.NOTICE, 45),
        (NoticeKind.TASK, 30),
        (NoticeKind.INSPECTION, 15),
        (NoticeKind.DATA_REQUEST, 10),
    ]
)
SOURCES = _table([(NoticeSource.EGOV, 55), (NoticeSource.CLI, 25), (NoticeSource.CHAT, 20)])
FEEDBACK_KINDS = (FeedbackKind.DEADLINE, FeedbackKind.DUPLICATE, FeedbackKind.UNCLEAR)
MESSAGE_CHANNELS = frozenset({Channel.GROUP, Channel.DM, Channel.BUTTON, Channel.REACTION})

ACK_MEAN = 8 * HOUR
PROGRESS_MEAN = 1.5 * DAY
DONE_MEAN = 4 * DAY
VERIFY_MEAN = 1 * DAY
SILENT = 0.03
EXCUSED = 0.015


@dataclass(frozen=True)
class NoticePlan:
    """One bulk notice's header fields."""

    id: int
    kind: NoticeKind
    requires: Requires
    state: NoticeState
    created: float
    deadline: float | None
    closed: float | None


def _plan_notice(rng: random.Random, spec: Spec, n: int) -> NoticePlan:
    created = spec.now - spec.span_days * DAY * (spec.notices - n + 0.5) / spec.notices
    created += rng.uniform(-0.2, 0.2) * HOUR
    kind: NoticeKind = KINDS[int(rng.random() * 100)]
    r = rng.random()
    if kind is NoticeKind.NOTICE:
        requires = Requires.ACK if r < 0.8 else Requires.PROGRESS
    elif kind is NoticeKind.TASK:
        requires = Requires.OUTCOME if r < 0.6 else Requires.PROGRESS
    elif kind is NoticeKind.INSPECTION:
        requires = Requires.OUTCOME
    else:
        requires = Requires.OUTCOME if r < 0.5 else Requires.PROGRESS
    deadline = created + rng.uniform(3, 30) * DAY if rng.random() < 0.8 else None
    closed: float | None = None
    if n > spec.notices - spec.open_notices:
        state = NoticeState.OPEN
    elif rng.random() < 0.015:
        state = NoticeState.CANCELLED
        closed = created + rng.uniform(0.5, 3) * DAY
    else:
        state = NoticeState.CLOSED
        base = deadline if deadline is not None else created + rng.uniform(7, 30) * DAY
        closed = base + rng.uniform(1, 10) * DAY
    if closed is not None:
        closed = max(created + HOUR, min(closed, spec.now - HOUR))
    return NoticePlan(n, kind, requires, state, created, deadline, closed)


def _notice_row(plan: NoticePlan, rng: random.Random, ts: Stamp) -> Row:
    source: NoticeSource = SOURCES[int(rng.random() * 100)]
    year = dt.datetime.fromtimestamp(plan.created, UTC).year
    topic = TOPICS[plan.id % len(TOPICS)]
    title = (
        f"关于开展{topic}工作的通知"
        if plan.kind is not NoticeKind.DATA_REQUEST
        else f"关于报送{topic}相关数据的通知"
    )
    body = (
        f"各科室、各单位：为做好{topic}工作，现将有关事项通知如下。"
        "一、提高思想认识，明确责任分工。二、按时保质完成，及时报送进展。"
        "三、加强协调配合，确保工作落实。请各科室于截止时间前反馈。"
    )
    if source is NoticeSource.EGOV:
        issuer = ISSUERS[plan.id % len(ISSUERS)]
        doc_number: str | None = f"{issuer[1:3]}发〔{year}〕{plan.id % 300 + 1}号"
        egov_id = f"egov-{plan.id:07d}"
        external_id: str | None = egov_id
        digest: str | None = hashlib.sha256(egov_id.encode()).hexdigest()
        issuer_name, issuer_person, created_by = None, None, "egov"
    else:
        issuer = "办公室"
        doc_number = external_id = digest = None
        issuer_name, issuer_person = _person_name(0), "p0001"
        created_by = "cli" if source is NoticeSource.CLI else "p0001"
        if source is NoticeSource.CLI:
            issuer_person = None
    plan_ref = (
        f"{year}年度检查计划第{plan.id % 40 + 1}项" if plan.kind is NoticeKind.INSPECTION else None
    )
    audience = json.dumps({"all": False, "departments": list(CORE_DEPARTMENTS), "people": []})
    return (
        plan.id,
        plan.kind.value,
        title,
        body,
        doc_number,
        plan_ref,
        source.value,
        external_id,
        digest,
        issuer,
        issuer_name,
        issuer_person,
        audience,
        plan.requires.value,
        plan.state.value,
        created_by,
        ts(plan.created),
        None if plan.deadline is None else ts(plan.deadline),
        None if plan.closed is None else ts(plan.closed),
    )


class _Ids:
    """Explicit primary keys, so outcomes and replies can point at their assignment."""

    def __init__(self) -> None:
        self.assignment = 0
        self.outcome = 0
        self.reply = 0


def _reply(
    batch: Batch,
    ids: _Ids,
    ts: Stamp,
    aid: int,
    kind: ReplyKind,
    channel: Channel,
    actor: str,
    at: float,
    text: str = "",
    percent: int | None = None,
    feedback_kind: FeedbackKind | None = None,
) -> None:
    ids.reply += 1
    ref = f"wecom:m{ids.reply}" if channel in MESSAGE_CHANNELS else None
    batch.reply.append(
        (
            ids.reply,
            aid,
            kind.value,
            channel.value,
            text,
            percent,
            None if feedback_kind is None else feedback_kind.value,
            ref,
            actor,
            ts(at),
        )
    )


def _assignee(
    rng: random.Random,
    plan: NoticePlan,
    pid: str,
    batch: Batch,
    ids: _Ids,
    ts: Stamp,
    limit: float,
    office: str,
) -> None:
    """One assignee's row, as the domain operations would have left it by ``limit``.

    Each assignee gets a would-be timeline (ack, progress, done, verify or return); the state
    is the last event that happened before the notice closed (or before now, if it is open).
    """
    ids.assignment += 1
    aid = ids.assignment
    state = S.PENDING
    channel: Channel | None = None
    late = False
    acked = started = done = verified = returned = excused = progress_at = None
    percent: int | None = None
    progress_text = excuse_reason = return_reason = None
    updated = plan.created
    r = rng.random()
    if r < SILENT:
        pass
    elif r < SILENT + EXCUSED:
        at = plan.created + rng.uniform(HOUR, 2 * DAY)
        if at <= limit:
            state, excused, updated = S.EXCUSED, at, at
            excuse_reason = EXCUSE_REASONS[aid % len(EXCUSE_REASONS)]
    else:
        t_ack = plan.created + rng.expovariate(1 / ACK_MEAN)
        if t_ack <= limit:
            channel = ACK_CHANNELS[int(rng.random() * 100)]
            state, acked, updated = S.ACKNOWLEDGED, t_ack, t_ack
            late = plan.deadline is not None and t_ack > plan.deadline
            actor = office if channel is Channel.PHONE else pid
            _reply(batch, ids, ts, aid, ReplyKind.ACK, channel, actor, t_ack)
            t = t_ack
            if plan.requires is not Requires.ACK:
                if plan.requires is Requires.PROGRESS or rng.random() < 0.7:
                    t_prog = t + rng.expovariate(1 / PROGRESS_MEAN)
                    if t_prog <= limit:
                        state, started, progress_at, updated = S.IN_PROGRESS, t_prog, t_prog, t_prog
                        percent = 10 * (1 + int(rng.random() * 9))
                        progress_text = PROGRESS_TEXTS[aid % len(PROGRESS_TEXTS)]
                        work: Channel = WORK_CHANNELS[int(rng.random() * 100)]
                        _reply(
                            batch,
                            ids,
                            ts,
                            aid,
                            ReplyKind.PROGRESS,
                            work,
                            pid,
                            t_prog,
                            progress_text,
                            percent,
                        )
                    t = t_prog
                finishes = plan.requires is Requires.OUTCOME or rng.random() < 0.25
                t_done = t + rng.expovariate(1 / DONE_MEAN)
                if finishes and t_done <= limit:
                    state, done, updated = S.DONE, t_done, t_done
                    started = started if started is not None else t_done
                    ids.outcome += 1
                    k = aid % len(MEASURES)
                    batch.outcome.append(
                        (
                            ids.outcome,
                            aid,
                            json.dumps(MEASURES[k]),
                            RESULTS[k],
                            json.dumps(METRICS[aid % len(METRICS)]),
                            ts(t_done),
                        )
                    )
                    work = WORK_CHANNELS[int(rng.random() * 100)]
                    _reply(batch, ids, ts, aid, ReplyKind.OUTCOME, work, pid, t_done)
                    r2 = rng.random()
                    after = t_done + rng.expovariate(1 / VERIFY_MEAN)
                    if r2 < 0.03 and after <= limit:
                        state, returned, updated, done = S.RETURNED, after, after, None
                        return_reason = RETURN_REASONS[aid % len(RETURN_REASONS)]
                    elif r2 < 0.45 and after <= limit:
                        state, verified, updated = S.VERIFIED, after, after
            if rng.random() < 0.005:
                at = min(limit, t_ack + rng.uniform(0, DAY))
                kind = FEEDBACK_KINDS[aid % len(FEEDBACK_KINDS)]
                _reply(
                    batch,
                    ids,
                    ts,
                    aid,
                    ReplyKind.FEEDBACK,
                    Channel.DM,
                    pid,
                    at,
                    "时间太紧，能否延后两天？",
                    feedback_kind=kind,
                )
    batch.assignment.append(
        (
            aid,
            plan.id,
            pid,
            state.value,
            is_outstanding(plan.state, plan.requires, state),
            late,
            None if channel is None else channel.value,
            None if acked is None else ts(acked),
            None if started is None else ts(started),
            None if done is None else ts(done),
            None if verified is None else ts(verified),
            None if returned is None else ts(returned),
            None if excused is None else ts(excused),
            excuse_reason,
            return_reason,
            percent,
            progress_text,
            None if progress_at is None else ts(progress_at),
            ts(updated),
        )
    )


def generate(spec: Spec, ts: Stamp, batch_notices: int) -> Iterator[Batch]:
    """Every bulk row, in batches of consecutive notices (deterministic for a seed)."""
    rng = random.Random(spec.seed)
    ids = _Ids()
    core = spec.core_ids
    batch = Batch()
    for n in range(1, spec.notices + 1):
        plan = _plan_notice(rng, spec, n)
        batch.notice.append(_notice_row(plan, rng, ts))
        limit = plan.closed if plan.closed is not None else spec.now
        for pid in core:
            _assignee(rng, plan, pid, batch, ids, ts, limit, core[0])
        if n % batch_notices == 0:
            yield batch
            batch = Batch()
    if batch.notice:
        yield batch


def sqlite_stamp(base: dt.datetime) -> Stamp:
    """Epoch seconds to SQLAlchemy's SQLite DATETIME text (naive UTC, as UTCDateTime binds)."""
    naive = base.replace(tzinfo=None)
    origin = base.timestamp()

    def stamp(at: float) -> str:
        return (naive + dt.timedelta(seconds=at - origin)).isoformat(" ", "microseconds")

    return stamp


def pg_stamp(base: dt.datetime) -> Stamp:
    """Epoch seconds to an aware UTC datetime (timestamptz), as asyncpg binds it."""
    origin = base.timestamp()

    def stamp(at: float) -> dt.datetime:
        return base + dt.timedelta(seconds=at - origin)

    return stamp


# --------------------------------------------------------------------------- building


@dataclass
class Build:
    """What building (or reusing) a dataset took."""

    reused: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    size_mb: float = 0.0


async def import_people(db: Database, spec: Spec) -> None:
    """The directory through the real CSV parser and upsert (with its audit event)."""
    parsed = parse_people_csv(people_csv(spec), directory_columns())
    assert not parsed.rejected, parsed.rejected
    async with db.transaction() as session:
        await upsert_people(session, parsed, actor=Actor.system("bench"), now=dt.datetime.now(UTC))


async def record_marker(db: Database, spec: Spec, rows: dict[str, int]) -> None:
    """Chain one audit event for the bulk load, so the audit trail says what happened."""
    async with db.transaction() as session:
        await audit.append(
            session,
            actor="bench",
            action=MARKER_ACTION,
            entity="bench",
            entity_id="queries",
            data={**spec.marker(), "rows": rows},
            now=dt.datetime.now(UTC),
        )


async def find_marker(db: Database, spec: Spec) -> bool:
    """Whether the database already holds this exact dataset (for --reuse)."""
    try:
        state = await schema_status(db)
        if not state.up_to_date:
            return False
        async with db.read() as session:
            data = (
                await session.scalars(
                    select(AuditEvent.data)
                    .where(AuditEvent.action == MARKER_ACTION)
                    .order_by(AuditEvent.seq.desc())
                    .limit(1)
                )
            ).first()
    except Exception:
        return False
    return data is not None and all(data.get(k) == v for k, v in spec.marker().items())


def load_sqlite(path: Path, spec: Spec, batch_notices: int) -> dict[str, int]:
    """Bulk-load through one sqlite3 connection: one transaction, executemany per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Loading only: no rollback journal, no fsync; WAL is restored before anyone reads.
        for pragma in (
            "PRAGMA journal_mode=OFF",
            "PRAGMA synchronous=OFF",
            "PRAGMA cache_size=-1048576",
            "PRAGMA temp_store=MEMORY",
        ):
            conn.execute(pragma)
        counts = dict.fromkeys((t for t, _ in TABLES), 0)
        stamp = sqlite_stamp(dt.datetime.fromtimestamp(spec.now, UTC))
        conn.execute("BEGIN")
        for batch in generate(spec, stamp, batch_notices):
            for table, columns in TABLES:
                rows = batch.rows(table)
                marks = ",".join("?" * len(columns))
                conn.executemany(
                    f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows
                )
                counts[table] += len(rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return counts


async def load_postgresql(url: URL, spec: Spec, batch_notices: int) -> dict[str, int]:
    """Bulk-load with binary COPY in one transaction, then fix the id sequences."""
    conn: PgConnection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute("SET synchronous_commit = off")
        # Rows are consistent by construction (checked after the load); skip per-row RI.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET session_replication_role = replica")
        counts = dict.fromkeys((t for t, _ in TABLES), 0)
        stamp = pg_stamp(dt.datetime.fromtimestamp(spec.now, UTC))
        async with conn.transaction():
            for batch in generate(spec, stamp, batch_notices):
                for table, columns in TABLES:
                    rows = batch.rows(table)
                    if rows:
                        await conn.copy_records_to_table(table, records=rows, columns=columns)
                    counts[table] += len(rows)
            for table, _ in TABLES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
        await conn.execute("SET session_replication_role = DEFAULT")
        # What autovacuum would do after such a load: statistics and the visibility map.
        await conn.execute("VACUUM (ANALYZE) person, notice, assignment, outcome, reply")
    finally:
        await conn.close()
    return counts


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _expected_outstanding() -> Any:
    by_requires = [
        and_(Notice.requires == req, Assignment.state.in_([s.value for s in states]))
        for req, states in OUTSTANDING_STATES.items()
    ]
    return and_(Notice.state == NoticeState.OPEN, or_(*by_requires))


async def check_dataset(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """Row counts, and the invariants the domain operations keep (each must be 0)."""
    async with db.read() as session:
        rows = {
            name: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in (
                ("person", Person),
                ("notice", Notice),
                ("assignment", Assignment),
                ("outcome", Outcome),
                ("reply", Reply),
            )
        }
        wrong_outstanding = select(func.count()).select_from(
            select(Assignment.id)
            .join(Notice, Notice.id == Assignment.notice_id)
            .where(Assignment.outstanding != case((_expected_outstanding(), True), else_=False))
            .subquery()
        )
        no_ack = (
            select(func.count())
            .select_from(Assignment)
            .where(
                Assignment.state.in_(
                    [S.ACKNOWLEDGED, S.IN_PROGRESS, S.DONE, S.VERIFIED, S.RETURNED]
                ),
                Assignment.acknowledged_at.is_(None),
            )
        )
        orphan_assignment = (
            select(func.count())
            .select_from(Assignment)
            .where(
                ~exists().where(Notice.id == Assignment.notice_id)
                | ~exists().where(Person.id == Assignment.person_id)
            )
        )
        orphan_outcome = (
            select(func.count())
            .select_from(Outcome)
            .where(~exists().where(Assignment.id == Outcome.assignment_id))
        )
        orphan_reply = (
            select(func.count())
            .select_from(Reply)
            .where(~exists().where(Assignment.id == Reply.assignment_id))
        )
        checks = {
            name: int(await session.scalar(stmt) or 0)
            for name, stmt in (
                ("outstanding mismatches", wrong_outstanding),
                ("acked states without ack time", no_ack),
                ("orphan assignments", orphan_assignment),
                ("orphan outcomes", orphan_outcome),
                ("orphan replies", orphan_reply),
            )
        }
    return rows, checks


async def build(
    db: Database, spec: Spec, *, reuse: bool, batch_notices: int, sqlite_path: Path | None
) -> Build:
    """Migrate, import the directory, bulk-load, check; or reuse a matching dataset."""
    result = Build()
    if reuse and await find_marker(db, spec):
        result.reused = True
    else:
        t0 = time.perf_counter()
        await upgrade(db)
        await import_people(db, spec)
        result.seconds["migrate + people"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if sqlite_path is not None:
            await db.dispose()
            counts = await asyncio.to_thread(load_sqlite, sqlite_path, spec, batch_notices)
        else:
            counts = await load_postgresql(db.url, spec, batch_notices)
        result.seconds["bulk load"] = time.perf_counter() - t0
        await record_marker(db, spec, counts)
    t0 = time.perf_counter()
    result.rows, result.checks = await check_dataset(db)
    result.seconds["checks"] = time.perf_counter() - t0
    bad = {k: v for k, v in result.checks.items() if v}
    if bad:
        raise SystemExit(f"the dataset is inconsistent: {bad}")
    return result


def build_in_child(
    url: str, spec: dict[str, Any], reuse: bool, batch_notices: int, sqlite_path: str | None
) -> dict[str, Any]:
    """Run build() in a child process; plain data in and out (it crosses a process boundary)."""

    async def go() -> Build:
        db = Database(url)
        try:
            return await build(
                db,
                Spec(**spec),
                reuse=reuse,
                batch_notices=batch_notices,
                sqlite_path=None if sqlite_path is None else Path(sqlite_path),
            )
        finally:
            await db.dispose()

    return dataclasses.asdict(asyncio.run(go()))


async def build_elsewhere(
    url: URL, spec: Spec, *, reuse: bool, batch_notices: int, sqlite_path: Path | None
) -> Build:
    """Build in a fresh process, so the measuring process never carries the load's heap."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        done = await asyncio.get_running_loop().run_in_executor(
            pool,
            build_in_child,
            url.render_as_string(hide_password=False),
            dataclasses.asdict(spec),
            reuse,
            batch_notices,
            None if sqlite_path is None else str(sqlite_path),
        )
    return Build(**done)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Figure:
    """One measured operation."""

    backend: str
    name: str
    samples: list[float]
    target_ms: float | None
    note: str = ""

    def pct(self, q: float) -> float:
        """The q-quantile in ms (nearest rank)."""
        return harness.percentile(self.samples, q) * 1000

    @property
    def p50(self) -> float:
        """Median, ms."""
        return self.pct(0.50)

    @property
    def p99(self) -> float:
        """99th harness.percentile, ms."""
        return self.pct(0.99)

    @property
    def worst(self) -> float:
        """Slowest call, ms."""
        return max(self.samples) * 1000

    @property
    def verdict(self) -> str:
        """PASS or MISS against the target, on p99."""
        if self.target_ms is None:
            return ""
        return "PASS" if self.p99 <= self.target_ms else "MISS"


async def _timed(calls: Sequence[Callable[[], Awaitable[int]]]) -> tuple[list[float], int]:
    samples: list[float] = []
    total = 0
    for call in calls:
        t0 = time.perf_counter()
        total += await call()
        samples.append(time.perf_counter() - t0)
    return samples, total


def _pending_call(db: Database, person_id: str, now: dt.datetime) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        async with db.read() as session:
            return len(await pending_for(session, person_id, now))

    return call


def _status_call(db: Database, notice_id: int, now: dt.datetime) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        async with db.read() as session:
            return len((await status(session, notice_id, now)).assignees)

    return call


def warm_sqlite_file(path: Path) -> None:
    """Read the database file once, so the OS page cache holds it (a warmed server)."""
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


async def warm_postgresql(db: Database) -> None:
    """Load the tables and indexes the queries touch (pg_prewarm), as a warmed server has."""
    async with db.engine.connect() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        # The big heaps into the OS cache; the indexes and small tables into shared buffers.
        for rel, mode in (
            ("assignment", "read"),
            ("outcome", "read"),
            ("pk_assignment", "read"),
            ("uq_assignment_notice_id_person_id", "buffer"),
            ("ix_assignment_person_outstanding", "buffer"),
            ("ix_outcome_assignment_id", "buffer"),
            ("pk_outcome", "buffer"),
            ("notice", "buffer"),
            ("pk_notice", "buffer"),
            ("person", "buffer"),
            ("pk_person", "buffer"),
        ):
            await conn.execute(
                text("SELECT pg_prewarm(CAST(:r AS regclass), :m)"), {"r": rel, "m": mode}
            )
        await conn.commit()


@dataclass(frozen=True)
class Plan:
    """How many calls to time."""

    pending_calls: int
    status_calls: int
    creations: int
    warmup_creations: int
    seed: int


async def measure(db: Database, spec: Spec, plan: Plan, backend: str) -> list[Figure]:
    """Time pending_for, status and create_notice as the app calls them."""
    rng = random.Random(plan.seed + 1)
    now = dt.datetime.now(UTC)
    core = spec.core_ids
    open_ids = list(range(spec.notices - spec.open_notices + 1, spec.notices + 1))
    closed_ids = list(range(1, spec.notices - spec.open_notices + 1))
    # Warm-up: every person once and a few hundred notices, through the same code path.
    await _timed([_pending_call(db, pid, now) for pid in core])
    warm = [rng.choice(open_ids) for _ in range(100)] + rng.sample(
        closed_ids, min(300, len(closed_ids))
    )
    await _timed([_status_call(db, nid, now) for nid in warm])
    gc.collect()
    gc.freeze()

    figures: list[Figure] = []
    people = [rng.choice(core) for _ in range(plan.pending_calls)]
    samples, items = await _timed([_pending_call(db, pid, now) for pid in people])
    figures.append(
        Figure(
            backend,
            "pending_for(person)",
            samples,
            QUERY_TARGET_MS,
            f"{items / len(people):.0f} items/call",
        )
    )
    half = plan.status_calls // 2
    opened = [rng.choice(open_ids) for _ in range(half)]
    closed = rng.sample(closed_ids, min(plan.status_calls - half, len(closed_ids)))
    mixed = opened + closed
    rng.shuffle(mixed)
    open_set = set(open_ids)
    calls = [_status_call(db, nid, now) for nid in mixed]
    samples, rows = await _timed(calls)
    figures.append(
        Figure(
            backend,
            "status(notice)",
            samples,
            QUERY_TARGET_MS,
            f"{rows / len(mixed):.0f} assignees/call",
        )
    )
    by_open = [s for s, nid in zip(samples, mixed, strict=True) if nid in open_set]
    by_closed = [s for s, nid in zip(samples, mixed, strict=True) if nid not in open_set]
    figures.append(Figure(backend, "  of which open notices", by_open, None))
    figures.append(Figure(backend, "  of which closed notices", by_closed, None))
    async with db.read() as session:
        kinds = (await session.execute(select(Notice.id, Notice.requires))).all()
    requires = {nid: req for nid, req in kinds}
    for req in Requires:
        some = [s for s, nid in zip(samples, mixed, strict=True) if requires[nid] is req]
        if some:
            figures.append(Figure(backend, f"  of which requires={req.value}", some, None))
    figures.append(await measure_create(db, plan, backend))
    gc.unfreeze()
    return figures


async def measure_create(db: Database, plan: Plan, backend: str) -> Figure:
    """Create one notice for the whole directory, commit included; then close it again."""
    async with db.read() as session:
        office = await session.get(Person, "p0001")
        assert office is not None
        actor = Actor.of(office)
        audience_size = int(await session.scalar(select(func.count()).select_from(Person)) or 0)
    samples: list[float] = []
    created: list[int] = []
    for i in range(plan.warmup_creations + plan.creations):
        now = dt.datetime.now(UTC)
        draft = NoticeDraft(
            title=f"关于开展基层减负专项检查的通知（压测 {i + 1}）",
            body="各单位：请于截止时间前完成自查并报送成效。" * 8,
            audience=Audience(all=True),
            kind=NoticeKind.TASK,
            requires=Requires.OUTCOME,
            deadline=now + dt.timedelta(days=7),
            doc_number=f"府办发〔{now.year}〕{i + 1}号",
            source=NoticeSource.EGOV,
            external_id=f"bench-{uuid.uuid4().hex}",
            issuer_department="市人民政府办公室",
        )
        t0 = time.perf_counter()
        async with db.transaction() as session:
            notice = await create_notice(session, draft, actor=actor, now=now)
        elapsed = time.perf_counter() - t0
        created.append(notice.id)
        if i >= plan.warmup_creations:
            samples.append(elapsed)
    # Close them through the domain, so a reused dataset's pending lists stay the same.
    for notice_id in created:
        async with db.transaction() as session:
            await close_notice(
                session, notice_id, actor=actor, now=dt.datetime.now(UTC), reason="bench"
            )
    return Figure(
        backend,
        f"create_notice({audience_size} people)",
        samples,
        CREATE_TARGET_MS,
        "incl. commit",
    )


async def verify_audit(db: Database) -> str:
    """Check the audit chain end to end after the run."""
    async with db.read(snapshot=True) as session:
        result = await audit.verify(session)
    if not result.ok:
        raise SystemExit(f"audit chain broken: {result.problem}")
    return f"intact ({result.checked} events)"


# --------------------------------------------------------------------------- reporting


async def pg_server_info(db: Database) -> dict[str, str]:
    """PostgreSQL's version and the settings that matter for these figures."""
    async with db.engine.connect() as conn:
        info = {"postgresql": str(await conn.scalar(text("SHOW server_version")))}
        for setting in ("shared_buffers", "synchronous_commit", "fsync"):
            info[f"pg {setting}"] = str(await conn.scalar(text(f"SHOW {setting}")))
        size = await conn.scalar(text("SELECT pg_database_size(current_database())"))
        info["pg size"] = f"{int(size or 0) / 1e6:.0f} MB"
    return info


def render(figures: Sequence[Figure]) -> str:
    """The results table."""
    head = f"{'backend':<11} {'operation':<28} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    head += f"  {'target':<10} {'result':<6} note"
    lines = [head, "-" * len(head)]
    for f in figures:
        target = "" if f.target_ms is None else f"p99≤{f.target_ms:g}ms"
        lines.append(
            f"{f.backend:<11} {f.name:<28} {len(f.samples):>5} {f.p50:>8.2f} {f.p99:>8.2f}"
            f" {f.worst:>8.2f}  {target:<10} {f.verdict:<6} {f.note}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


@dataclass
class Run:
    """One backend's run."""

    backend: str
    build: Build
    figures: list[Figure]
    info: dict[str, str]
    audit: str


async def dataset_present(url: URL, spec: Spec, sqlite_path: Path | None) -> bool:
    """Whether a dataset of this shape, at the current schema, is already there."""
    if sqlite_path is not None and not await asyncio.to_thread(sqlite_path.exists):
        return False
    if sqlite_path is None and not await harness.pg_database_exists(url):
        return False
    db = Database(url)
    try:
        return await find_marker(db, spec)
    finally:
        await db.dispose()


def remove_sqlite(path: Path) -> None:
    """Delete a SQLite database with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def run_backend(backend: str, args: argparse.Namespace, spec: Spec, workdir: Path) -> Run:
    """Build (or reuse) the dataset on one backend and measure it."""
    sqlite_path: Path | None = None
    if backend == "sqlite":
        sqlite_path = workdir / "workbot_bench.db"
        url: URL = make_url(f"sqlite+aiosqlite:///{sqlite_path}")
    else:
        url = make_url(args.pg_dsn)
        harness.bench_database_name(url)
    reuse = args.reuse and await dataset_present(url, spec, sqlite_path)
    if args.reuse and not reuse:
        print(f"[{backend}] no matching dataset to reuse (or an older schema): rebuilding")
    if not reuse:
        if sqlite_path is not None:
            remove_sqlite(sqlite_path)
        else:
            await harness.recreate_pg_database(url)
        print(f"[{backend}] building {spec.notices} notices x {spec.people} people ...")
    built = await build_elsewhere(
        url, spec, reuse=reuse, batch_notices=args.batch, sqlite_path=sqlite_path
    )
    db = Database(url)
    try:
        how = "reused" if built.reused else "built"
        took = ", ".join(f"{k} {v:.1f}s" for k, v in built.seconds.items())
        print(f"[{backend}] {how}: {built.rows} ({took}); checks all 0", flush=True)
        info: dict[str, str] = {}
        if sqlite_path is not None:
            await asyncio.to_thread(warm_sqlite_file, sqlite_path)
            info["sqlite size"] = f"{sqlite_path.stat().st_size / 1e6:.0f} MB"
        else:
            await warm_postgresql(db)
            info.update(await pg_server_info(db))
        plan = Plan(args.pending_calls, args.status_calls, args.creations, 2, args.seed)
        print(f"[{backend}] measuring ...", flush=True)
        load_before = os.getloadavg()[0]
        figures = await measure(db, spec, plan, backend)
        # Other processes on the machine show up in p99: say how busy it was.
        info[f"{backend} loadavg(1m)"] = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
        chain = await verify_audit(db)
        print(render(figures), flush=True)
    finally:
        await db.dispose()
    return Run(backend, built, figures, info, chain)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = harness.bench_parser(
        __doc__, runtime="about 4-5 minutes for both backends, most of it building"
    )
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    harness.add_numbers(
        p,
        ("--notices", 10_000, "bulk notices"),
        ("--people", 300, "assignees of every bulk notice"),
        ("--directory", 1_000, "people in the directory, i.e. the audience of the created notice"),
        ("--open", 300, "open notices among the bulk"),
        ("--pending-calls", 2_000, "timed pending_for calls"),
        ("--status-calls", 2_000, "timed status calls, half open, half closed"),
        ("--creations", 20, "timed create_notice calls"),
        ("--seed", 20261127, "random seed of the dataset and the calls"),
        ("--batch", 200, "notices per load batch"),
    )
    p.add_argument(
        "--pg-dsn",
        default=DEFAULT_PG_DSN,
        help="PostgreSQL URL (a workbot_bench* database, dropped and recreated unless --reuse)",
    )
    p.add_argument("--workdir", type=Path, help="where the SQLite file lives (default: a temp dir)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep a dataset built earlier with the same shape (SQLite needs --workdir)",
    )
    args = p.parse_args(argv)
    if args.directory < args.people:
        p.error("--directory must be at least --people")
    if not 0 < args.open <= args.notices:
        p.error("--open must be between 1 and --notices")
    if args.pending_calls < 1 or args.status_calls < 2 or args.creations < 1:
        p.error("need at least one call of each kind")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark on the chosen backends and print the report."""
    args = parse_args(argv)
    own_dir = args.workdir is None
    workdir: Path = Path(tempfile.mkdtemp(prefix="workbot-bench-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(run(args, workdir))
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


async def run(args: argparse.Namespace, workdir: Path) -> int:
    """Every chosen backend, then the report."""
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    spec = Spec(args.notices, args.people, args.directory, args.open, args.seed, time.time())
    started = time.perf_counter()
    runs = [await run_backend(backend, args, spec, workdir) for backend in backends]
    info = harness.machine_info()
    for r in runs:
        info.update(r.info)
    figures = [f for r in runs for f in r.figures]
    print()
    print(f"workbot query benchmark — {dt.datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"dataset: {spec.notices} notices x {spec.people} people "
        f"({spec.notices * spec.people} assignments), {spec.open_notices} open, "
        f"directory of {spec.directory}"
    )
    for r in runs:
        rows = ", ".join(f"{k} {v}" for k, v in r.build.rows.items())
        print(f"{r.backend}: {rows}; audit chain {r.audit}")
    print()
    print(render(figures))
    verdicts = [f.verdict for f in figures if f.verdict]
    print()
    print(
        f"targets: queries p99 ≤ {QUERY_TARGET_MS:g} ms, create_notice p99 ≤ "
        f"{CREATE_TARGET_MS:g} ms — "
        + ("all PASS" if all(v == "PASS" for v in verdicts) else "MISSED")
        + f" (total {time.perf_counter() - started:.0f}s)"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "spec": spec.marker(),
                    "runs": [
                        {
                            "backend": r.backend,
                            "reused": r.build.reused,
                            "build_seconds": r.build.seconds,
                            "rows": r.build.rows,
                            "audit": r.audit,
                        }
                        for r in runs
                    ],
                    "figures": [
                        {
                            "backend": f.backend,
                            "operation": f.name.strip(),
                            "n": len(f.samples),
                            "p50_ms": round(f.p50, 3),
                            "p99_ms": round(f.p99, 3),
                            "max_ms": round(f.worst, 3),
                            "target_ms": f.target_ms,
                            "result": f.verdict,
                        }
                        for f in figures
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    return 0 if all(v == "PASS" for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
