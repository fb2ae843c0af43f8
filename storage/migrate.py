"""Applying migrations, and refusing a database whose schema is newer than this code."""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.db import Database


class SchemaError(Exception):
    """The database schema cannot be used by this version of the code."""


def alembic_config(db: Database | None = None) -> Config:
    """An Alembic config for our migrations package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    if db is not None:
        url = db.url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision this code knows."""
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database stands against this code's migrations."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        """Whether the database is at this code's head."""
        return self.current == self.head


async def schema_status(db: Database) -> SchemaStatus:
    """Compare the database to this code; raise SchemaError if the database is newer."""
    current = await current_revision(db)
    head = head_revision()
    if current is not None and current not in known_revisions():
        raise SchemaError(
            f"the database at {db.url.render_as_string(hide_password=True)} is at schema "
            f"revision {current}, which this workbot does not know (its newest is {head}): "
            "it was migrated by a newer workbot. Upgrade workbot, or restore a backup."
        )
    return SchemaStatus(current, head)


def _upgrade(connection: Connection, cfg: Config, target: str) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, target)


async def upgrade(db: Database, target: str = "head") -> SchemaStatus:
    """Apply migrations up to target (refusing a database newer than the code)."""
    before = await schema_status(db)
    if before.up_to_date and target == "head":
        return before
    cfg = alembic_config(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade, cfg, target)
    return await schema_status(db)


async def require_current(db: Database) -> None:
    """Refuse to run against a database that is not exactly at this code's head."""
    status = await schema_status(db)
    if not status.up_to_date:
        where = "empty" if status.current is None else f"at revision {status.current}"
        raise SchemaError(
            f"the database is {where} but this workbot needs revision {status.head}: "
            "run `workbot migrate` (or set database.auto_migrate = true)"
        )
