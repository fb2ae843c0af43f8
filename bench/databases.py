"""The benchmarks' PostgreSQL databases: only ever ones named workbot_bench*, made on demand."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

PG_NAME = re.compile(r"^workbot_bench[a-z0-9_]*$")


async def ensure_pg_database(url: URL) -> None:
    """Create the bench database if it is missing; refuse any name but workbot_bench*."""
    name = url.database or ""
    if not PG_NAME.match(name):
        raise SystemExit(f"refusing to use database {name!r}: the bench only uses workbot_bench*")
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if found is None:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
