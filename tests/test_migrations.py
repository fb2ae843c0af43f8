"""Migrations: upgrade from empty, no drift against the models, and refusing newer schemas."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from storage.audit import GENESIS, SCHEME_PLAIN, canonical, chain_hash, verify
from storage.db import Database
from storage.migrate import (
    SchemaError,
    head_revision,
    require_current,
    schema_status,
    upgrade,
)
from storage.models import AuditEvent, AuditHead, Base
from tests.conftest import BACKENDS, T0, drop_schema, new_database


@pytest.fixture(params=BACKENDS)
async def empty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty, never migrated database: SQLite, and PostgreSQL (a fresh schema) when set."""
    database = await new_database(request.param, tmp_path)
    try:
        yield database
    finally:
        await drop_schema(database)


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _drift(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_from_empty_then_again(empty: Database) -> None:
    before = await schema_status(empty)
    assert (before.current, before.up_to_date) == (None, False)
    async with empty.engine.connect() as conn:
        assert await conn.run_sync(_tables) == set()

    after = await upgrade(empty)

    assert (after.current, after.head, after.up_to_date) == (head_revision(), head_revision(), True)
    async with empty.engine.connect() as conn:
        tables = await conn.run_sync(_tables)
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    async with empty.read() as s:
        head = (await s.scalars(select(AuditHead))).all()
    assert [(h.id, h.seq, h.hash) for h in head] == [(1, 0, GENESIS)]
    await require_current(empty)

    again = await upgrade(empty)

    assert again == after
    async with empty.engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [v for (v,) in versions] == [head_revision()]


async def test_no_autogenerate_drift_against_the_models(empty: Database) -> None:
    await upgrade(empty)

    async with empty.engine.connect() as conn:
        diff = await conn.run_sync(_drift)

    assert diff == []


async def test_a_newer_database_is_refused(empty: Database) -> None:
    await upgrade(empty)
    async with empty.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))

    for check in (schema_status, upgrade, require_current):
        with pytest.raises(SchemaError) as info:
            await check(empty)
        message = str(info.value)
        assert "9999_from_the_future" in message, check
        assert "newer" in message, check

    async with empty.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == "9999_from_the_future"


async def test_an_unmigrated_database_is_refused(empty: Database) -> None:
    with pytest.raises(SchemaError) as info:
        await require_current(empty)
    assert "empty" in str(info.value)
    assert "workbot migrate" in str(info.value)

    await upgrade(empty)
    await require_current(empty)


async def test_sqlite_pragmas_are_in_effect(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        await upgrade(db)
        expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}
        async with db.engine.connect() as conn:
            found = {p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar() for p in expected}
        assert found == expected
        async with db.transaction() as s:
            found = {p: (await s.execute(text(f"PRAGMA {p}"))).scalar() for p in expected}
        assert found == expected
        async with db.read() as s:
            found = {p: (await s.execute(text(f"PRAGMA {p}"))).scalar() for p in expected}
        assert found == expected
        assert (tmp_path / "pragmas.db-wal").exists()
    finally:
        await db.dispose()


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await s.execute(
                text(
                    "INSERT INTO assignment (notice_id, person_id, state, outstanding, late,"
                    " updated_at) VALUES (4242, 'nobody', 'pending', true, false, :now)"
                ),
                {"now": T0.replace(tzinfo=None) if db.is_sqlite else T0},
            )
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM assignment"))).scalar() == 0


async def test_a_chain_written_before_audit_keys_still_verifies_after_the_upgrade(
    empty: Database,
) -> None:
    await upgrade(empty, "0003")
    prev = GENESIS
    async with empty.engine.begin() as conn:
        for seq in (1, 2, 3):
            ts = T0.astimezone(dt.UTC)
            data = {"n": seq, "title": "第一份"}
            payload = canonical(
                seq=seq, ts=ts, actor="cli", action="t.x", entity="t", entity_id=str(seq), data=data
            )
            row_hash = chain_hash(prev, payload)
            await conn.execute(
                text(
                    "INSERT INTO audit_event (seq, ts, actor, action, entity, entity_id, data,"
                    " prev_hash, hash) VALUES (:seq, :ts, 'cli', 't.x', 't', :eid, :data, :p, :h)"
                ),
                {
                    "seq": seq,
                    "ts": ts.replace(tzinfo=None) if empty.is_sqlite else ts,
                    "eid": str(seq),
                    "data": json.dumps(data, ensure_ascii=False),
                    "p": prev,
                    "h": row_hash,
                },
            )
            prev = row_hash
        await conn.execute(text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": prev})

    await upgrade(empty)

    async with empty.read(snapshot=True) as s:
        schemes = (await s.scalars(select(AuditEvent.scheme).order_by(AuditEvent.seq))).all()
        result = await verify(s)
    assert schemes == [SCHEME_PLAIN] * 3
    assert (result.ok, result.checked) == (True, 3)
