"""Test helpers: seeding the directory and creating notices through the domain operations."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli import main
from storage import audit as audit_chain
from storage.db import Database
from storage.directory import parse_people_csv, upsert_people
from storage.domain import Actor, Audience, NoticeDraft, create_notice
from storage.models import Assignment, AuditEvent, AuditHead, Notice, Outcome, Person, Reply
from storage.types import Requires

# People CSV columns for storage-level tests: storage knows no platform list (the app passes
# its own), so these are just names, a few of them of platforms workbot has no adapter for.
CSV_PLATFORMS = ("wecom", "dingtalk", "matrix", "telegram", "local")

CLI = Actor.system("cli")

PEOPLE_CSV = """id,name,department,roles,phone,wecom
p001,张三,基础教育科,staff,13800000001,zhangsan
p002,李四,基础教育科,staff;head,,lisi
p003,王五,办公室,office,,
p004,赵六,督导科,staff,,
p005,钱七,督导科,head,,
""".encode()


async def seed_people(db: Database, now: dt.datetime, csv: bytes = PEOPLE_CSV) -> None:
    """Import the standard five-person directory."""
    async with db.transaction() as s:
        result = await upsert_people(s, parse_people_csv(csv, CSV_PLATFORMS), actor=CLI, now=now)
    assert not result.rejected


async def make_notice(
    db: Database,
    now: dt.datetime,
    *,
    audience: Audience | None = None,
    requires: Requires = Requires.ACK,
    deadline: dt.datetime | None = None,
    title: str = "关于报送作业管理自查情况的通知",
) -> int:
    """Create a notice (default: for everyone) and return its id."""
    draft = NoticeDraft(
        title=title,
        body="请各科室于12月10日前报送自查报告。",
        audience=audience or Audience(all=True),
        requires=requires,
        deadline=deadline,
    )
    async with db.transaction() as s:
        notice = await create_notice(s, draft, actor=CLI, now=now)
        return notice.id


async def assignment(db: Database, notice_id: int, person_id: str) -> Assignment:
    """The stored assignment of one person under one notice."""
    async with db.read() as s:
        found = await s.scalars(
            select(Assignment).where(
                Assignment.notice_id == notice_id, Assignment.person_id == person_id
            )
        )
        return found.one()


async def assignees(s: AsyncSession, notice_id: int) -> list[str]:
    """The ids of the people assigned a notice, in id order."""
    found = await s.scalars(
        select(Assignment.person_id)
        .where(Assignment.notice_id == notice_id)
        .order_by(Assignment.person_id)
    )
    return list(found)


async def actor_of(db: Database, person_id: str) -> Actor:
    """The actor for a directory person, as the handlers would build it."""
    async with db.read() as s:
        person = await s.get(Person, person_id)
        assert person is not None, person_id
        return Actor.of(person)


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in sa_inspect(obj).mapper.column_attrs}


async def snapshot(db: Database) -> dict[str, Any]:
    """Every stored row a domain operation can touch, for "nothing changed" assertions."""
    async with db.read() as s:
        snap: dict[str, Any] = {}
        for model, order in (
            (Notice, Notice.id),
            (Assignment, Assignment.id),
            (Reply, Reply.id),
            (Outcome, Outcome.id),
            (Person, Person.id),
            (AuditEvent, AuditEvent.seq),
            (AuditHead, AuditHead.id),
        ):
            rows = (await s.scalars(select(model).order_by(order))).all()
            snap[model.__tablename__] = [_row(r) for r in rows]
        return snap


async def audit_length(db: Database) -> int:
    """How many audit events are stored."""
    async with db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditEvent)) or 0)


AUDIT_KEY = "test-audit-key-not-for-production-0123456789"
AUDIT_KEY_ENV = "WORKBOT_AUDIT_KEY"


async def workbot_cli(
    db: Database, workdir: Path, *args: str, key: str | None = None
) -> tuple[int, str, str]:
    """Run `workbot ARGS` (English output) against this database, with `[audit] key_env`
    naming a variable that holds `key` when one is given; (exit code, stdout, stderr)."""
    url = db.url.render_as_string(hide_password=False)
    lines = ["[bot]", 'language = "en"', "[database]", f"url = {json.dumps(url)}"]
    environ: dict[str, str] = {}
    if key is not None:
        lines += ["[audit]", f'key_env = "{AUDIT_KEY_ENV}"']
        environ[AUDIT_KEY_ENV] = key
    config = workdir / "workbot-cli.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return await main_in_thread(["-c", str(config), *args], environ)


async def main_in_thread(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """Run `workbot ARGV` in a thread (it runs its own event loop); (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = await asyncio.to_thread(main, argv, environ)
    return code, out.getvalue(), err.getvalue()


async def rewrite_chain(
    db: Database,
    seq: int,
    data: dict[str, Any],
    *,
    scheme: str | None = None,
    start: int | None = None,
) -> None:
    """What a forger with write access but without the key does: change row `seq`'s data,
    then recompute every plain sha256 hash from row `start` (default `seq`) to the end, each
    row linked to the one before, and the head; `scheme` relabels those rows."""
    async with db.read() as s:
        rows = list((await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())
    json_param = ":d" if db.is_sqlite else "CAST(:d AS json)"
    first = seq if start is None else start
    prev = rows[first - 2].hash if first > 1 else audit_chain.GENESIS
    async with db.engine.begin() as conn:
        for row in rows[first - 1 :]:
            new_data = data if row.seq == seq else row.data
            payload = audit_chain.canonical(
                seq=row.seq,
                ts=row.ts,
                actor=row.actor,
                action=row.action,
                entity=row.entity,
                entity_id=row.entity_id,
                data=new_data,
            )
            new_hash = audit_chain.chain_hash(prev, payload)
            await conn.execute(
                text(
                    f"UPDATE audit_event SET data = {json_param}, prev_hash = :p,"
                    " hash = :h, scheme = :s WHERE seq = :seq"
                ),
                {
                    "d": json.dumps(new_data, ensure_ascii=False),
                    "p": prev,
                    "h": new_hash,
                    "s": scheme or row.scheme,
                    "seq": row.seq,
                },
            )
            prev = new_hash
        stripped = scheme == audit_chain.SCHEME_PLAIN and first == 1  # no keyed row is left
        head_key = "key_id = NULL, " if stripped else ""
        await conn.execute(text(f"UPDATE audit_head SET {head_key}hash = :h"), {"h": prev})
