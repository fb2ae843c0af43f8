"""Shared fixtures: a migrated database on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from synapse import SynapseServer

from storage.db import Database
from storage.migrate import upgrade

PG_DSN = os.environ.get("WORKBOT_TEST_PG_DSN", "")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
T0 = dt.datetime(2019, 12, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))

_sqlite_template: Path | None = None
_pg_migrated = False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: needs WORKBOT_TEST_PG_DSN")
    config.addinivalue_line("markers", "matrix: needs a real Synapse")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_DSN:
        return
    skip = pytest.mark.skip(reason="WORKBOT_TEST_PG_DSN is not set")
    for item in items:
        if "postgresql" in item.keywords:
            item.add_marker(skip)


def pg_url(schema: str | None = None) -> str:
    """The test PostgreSQL URL in SQLAlchemy's asyncpg form."""
    url = PG_DSN
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


async def new_database(backend: str, tmp_path: Path) -> Database:
    """An empty (unmigrated) database of the given backend."""
    if backend == "sqlite":
        return Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = Database(pg_url())
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    return Database(pg_url(), connect_args={"server_settings": {"search_path": schema}})


async def drop_schema(db: Database) -> None:
    """Drop a per-test PostgreSQL schema made by new_database."""
    schema = db.connect_args.get("server_settings", {}).get("search_path")
    await db.dispose()
    if schema:
        admin = Database(pg_url())
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def _truncate_pg(db: Database) -> None:
    async with db.engine.begin() as conn:
        names = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        tables = ", ".join(f'"{n}"' for n in names)
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64}
        )


@pytest.fixture(params=BACKENDS)
async def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> AsyncIterator[Database]:
    """A freshly migrated, empty database: SQLite, and PostgreSQL when configured."""
    global _sqlite_template, _pg_migrated
    if request.param == "sqlite":
        if _sqlite_template is None:
            template = tmp_path_factory.mktemp("template") / "workbot.db"
            tdb = Database(f"sqlite+aiosqlite:///{template}")
            await upgrade(tdb)
            await tdb.dispose()
            _sqlite_template = template
        path = tmp_path / "workbot.db"
        shutil.copyfile(_sqlite_template, path)
        database = Database(f"sqlite+aiosqlite:///{path}")
    else:
        database = Database(pg_url())
        if not _pg_migrated:
            async with database.engine.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
            await upgrade(database)
            _pg_migrated = True
        await _truncate_pg(database)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """One real Synapse for the whole session (WORKBOT_SYNAPSE_PYTHON: its venv's python).

    Skipped when that is unset or missing, except under CI, where it is a failure. Make a
    new user (``synapse.register``) and room per test.
    """
    python = os.environ.get("WORKBOT_SYNAPSE_PYTHON", "")
    if not python or not Path(python).is_file():
        reason = "no Synapse (set WORKBOT_SYNAPSE_PYTHON)"
        if python:
            reason += f": {python} does not exist"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (required when CI is set)", pytrace=False)
        pytest.skip(reason)
    server = SynapseServer(python)
    server.start(tmp_path_factory.mktemp("synapse"))
    try:
        yield server
    finally:
        server.stop()
