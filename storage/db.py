"""The database handle: engine set-up per backend, transactions and schema checks."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

_IMMEDIATE = "workbot_immediate"
_WAKE = "workbot_wake"
_INSTANCE = "workbot_instance"
_AUDIT_KEY = "workbot_audit_key"
WAKE_CHANNEL = "workbot_wake"  # PostgreSQL NOTIFY channel; payload "<topic>:<instance>"

WakeListener = Callable[[set[str]], None]


LOCK_TIMEOUT = 10.0  # seconds a SQLite writer waits for the file's write lock by default


def _sqlite_setup(
    lock_timeout: float,
) -> Callable[[Any, ConnectionPoolEntry | None], None]:
    """The set-up of every SQLite connection: WAL, fsync on commit, enforced foreign keys,
    and how long to wait for another connection's lock before giving up."""

    def connect(dbapi_connection: Any, _record: ConnectionPoolEntry | None) -> None:
        # Let SQLAlchemy (our "begin" hook) own BEGIN instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={round(lock_timeout * 1000)}",
        ):
            cursor.execute(pragma)
        cursor.close()

    return connect


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so they wait instead of failing mid-way."""
    if conn.get_execution_options().get(_IMMEDIATE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class DatabaseUnavailable(Exception):
    """The database cannot be reached or cannot write now: an expected fault, not a bug.

    Raised for a SQLite file that cannot be opened, and by every unit of work (`read`,
    `transaction`, `write_slot`) whose failure `unavailable_reason` classifies as an outage:
    the server refused or dropped the connection, is shutting down or out of connections,
    the file is locked by another connection beyond the lock timeout, or the disk is full or
    failing. Anything else (a bad statement, a constraint) still surfaces as itself."""

    @property
    def reason(self) -> str:
        """What the driver said, in one line."""
        return str(self)


# SQLite's primary result codes that mean "not now" rather than "wrong": busy, locked, out
# of memory, I/O error, disk full, cannot open, lock protocol error.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 10, 13, 14, 15})
_SQLITE_OUTAGE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
)
# PostgreSQL SQLSTATEs of outages: class 08 (connection exception), class 53 (insufficient
# resources: too many connections, disk full, out of memory), 57P01-57P03 (the server is
# shutting down, crashed, or cannot accept connections yet) and class 58 (system I/O error).
_PG_OUTAGE_STATES = ("08", "53", "57P01", "57P02", "57P03", "58")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def unavailable_reason(exc: BaseException) -> str | None:
    """Why `exc` means the database is unavailable (a one-line reason), or None when it is
    some other failure, which must surface as the bug or refusal it is.

    Follows the chain of causes, since SQLAlchemy wraps the driver's exception and the
    asyncpg adapter wraps asyncpg's."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 16:
            continue
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable):
            return current.reason
        if isinstance(current, OSError | SQLAlchemyTimeout):  # refused, reset, unreachable
            return _one_line(current)
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            message = str(current).lower()
            if (code is not None and code & 0xFF in _SQLITE_OUTAGE_CODES) or any(
                known in message for known in _SQLITE_OUTAGE_MESSAGES
            ):
                return _one_line(current)
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_PG_OUTAGE_STATES):
            return _one_line(current)
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            cause = current.orig if current.orig is not None else current
            return _one_line(cause)
        pending.extend((getattr(current, "orig", None), current.__cause__, current.__context__))
    return None


class Database:
    """One database: an async engine, a reader and a writer session factory."""

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        connect_args: dict[str, Any] | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
        audit_key: bytes | None = None,
    ) -> None:
        self.url = make_url(url)
        # The key of the audit chain's HMAC ([audit] key_env); None writes plain sha256 rows.
        self.audit_key = audit_key
        self.connect_args: dict[str, Any] = dict(connect_args or {})
        self.lock_timeout = lock_timeout
        # An outage seen by any unit of work, until one succeeds; and a failed write, until a
        # write succeeds (SQLite can read while another connection holds the write lock).
        self._unavailable = False
        self._unwritable = False
        if self.is_sqlite:
            self._check_sqlite_path()
        # Statement values never reach a log line or an error message: they hold secrets
        # (the link secret), tokens and people's data.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": lock_timeout, **self.connect_args}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = self.connect_args
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_setup(lock_timeout))
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        writer = self.engine.execution_options(**{_IMMEDIATE: True})
        # PostgreSQL reads run in autocommit: under read committed each statement has its own
        # snapshot inside a transaction too, so BEGIN and COMMIT bought nothing but two round
        # trips, and the pool's pre-ping is then one round trip instead of three. A reader
        # that needs one snapshot asks for repeatable read (snapshot_burden does).
        reader = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._readers = async_sessionmaker(reader, expire_on_commit=False)
        self._writers = async_sessionmaker(writer, expire_on_commit=False)
        # SQLite has one writer at a time; queue writers in-process rather than on the file lock.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.wake_listeners: list[WakeListener] = []
        # Tells this handle's own NOTIFYs apart from other processes' (it woke itself already).
        self.instance = secrets.token_hex(6)

    def _check_sqlite_path(self) -> None:
        # A failed aiosqlite connect leaves its worker thread to report to a loop that may
        # be gone; refuse the common case (a missing directory) before connecting.
        path = self.url.database or ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise DatabaseUnavailable(f"directory {parent} does not exist")

    @property
    def is_sqlite(self) -> bool:
        """Whether the backend is SQLite."""
        return self.url.get_backend_name() == "sqlite"

    @property
    def backend(self) -> str:
        """The backend name: sqlite or postgresql."""
        return self.url.get_backend_name()

    @property
    def available(self) -> bool:
        """False from an outage seen by any unit of work (DatabaseUnavailable) until the
        database answers again, and from a failed write until a write succeeds."""
        return not (self._unavailable or self._unwritable)

    def _outage(self, exc: Exception, *, write: bool) -> DatabaseUnavailable | None:
        """The DatabaseUnavailable that exc amounts to (and note the outage), or None."""
        reason = unavailable_reason(exc)
        if reason is None:
            return None
        self._unavailable = True
        self._unwritable = self._unwritable or write
        return exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable(reason)

    def _answered(self, *, write: bool) -> None:
        self._unavailable = False
        if write:
            self._unwritable = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success, rolls back on any exception.

        After a commit, the wake-up topics the transaction raised (see `wake`) are passed
        to every listener, so this process's delivery and scheduler loops look again now.
        DatabaseUnavailable when it fails for an outage (see `unavailable_reason`).
        """
        with self._classified(write=True):
            if self._write_lock is None:
                async with self._writers.begin() as session:
                    session.info[_INSTANCE] = self.instance
                    session.info[_AUDIT_KEY] = self.audit_key
                    yield session
            else:
                async with self._write_lock, self._writers.begin() as session:
                    session.info[_INSTANCE] = self.instance
                    session.info[_AUDIT_KEY] = self.audit_key
                    yield session
        self._answered(write=True)
        topics: set[str] = session.info.pop(_WAKE, set())
        for listener in list(self.wake_listeners) if topics else ():
            listener(topics)

    @contextmanager
    def _classified(self, *, write: bool) -> Iterator[None]:
        """Raise an outage as DatabaseUnavailable (see `unavailable_reason`); anything else,
        a bug or a refusal, passes through as itself."""
        try:
            yield
        except Exception as exc:
            outage = self._outage(exc, write=write)
            if outage is None or outage is exc:
                raise
            raise outage from exc

    @asynccontextmanager
    async def write_slot(self) -> AsyncIterator[None]:
        """For a writer with its own connection: wait for this process's SQLite write turn
        (a no-op on PostgreSQL), so it queues in-process instead of on the file lock."""
        with self._classified(write=True):
            if self._write_lock is None:
                yield
            else:
                async with self._write_lock:
                    yield
        self._answered(write=True)

    async def direct_connection(self) -> AsyncConnection:
        """A connection of its own, outside any unit of work (to LISTEN on); the caller
        closes it. DatabaseUnavailable when the database cannot be reached."""
        with self._classified(write=False):
            return await self.engine.connect()

    def sqlite_connection(self) -> sqlite3.Connection:
        """A new plain sqlite3 connection to this database, set up like the engine's."""
        path = self.url.database or ""
        conn = sqlite3.connect(
            path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False
        )
        _sqlite_setup(self.lock_timeout)(conn, None)
        return conn

    @staticmethod
    def audit_key_of(session: AsyncSession) -> bytes | None:
        """The audit key of the handle that opened this unit of work (None: unkeyed)."""
        key: bytes | None = session.info.get(_AUDIT_KEY)
        return key

    @staticmethod
    def wake(session: AsyncSession, topic: str) -> None:
        """Ask for the loops interested in topic to be woken once this transaction commits."""
        session.info.setdefault(_WAKE, set()).add(topic)

    @staticmethod
    async def notify(session: AsyncSession, topic: str) -> None:
        """Wake the loops interested in topic after the commit: in this process, and on
        PostgreSQL in every other worker too (one NOTIFY per topic and transaction)."""
        topics: set[str] = session.info.setdefault(_WAKE, set())
        if topic in topics:
            return
        topics.add(topic)
        if session.get_bind().dialect.name == "postgresql":
            payload = f"{topic}:{session.info.get(_INSTANCE, '')}"
            await session.execute(
                text("SELECT pg_notify(:c, :w)"), {"c": WAKE_CHANNEL, "w": payload}
            )

    def own_notification(self, payload: str) -> str | None:
        """The topic of a NOTIFY payload, or None when this handle sent it itself."""
        topic, _, instance = payload.partition(":")
        return None if instance == self.instance else topic

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A read-only session; never commits. On SQLite it is one snapshot. On PostgreSQL
        each statement sees what was committed when it started, unless `snapshot` asks for
        one repeatable-read transaction (needed by several statements that must agree, and
        by streamed results). DatabaseUnavailable when it fails for an outage."""
        with self._classified(write=False):
            async with self._readers() as session, session.begin():
                if snapshot and not self.is_sqlite:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                yield session
        self._answered(write=False)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


# The names the layers above use, so that only storage imports SQLAlchemy.
Session = AsyncSession
Conflict = IntegrityError  # a unique constraint said no (someone else got there first)
DatabaseError = SQLAlchemyError  # any failure of the database or its driver
DirectConnection = AsyncConnection  # a connection held outside a unit of work (LISTEN)


def shown_url(url: str) -> str:
    """A database URL fit for messages and logs: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


class DataVersion:
    """A dedicated, read-only connection to a SQLite file that tells when another connection
    has committed (`PRAGMA data_version` changes then). Plain sqlite3, usable from a thread;
    never inside a transaction between reads."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, db: Database) -> DataVersion | None:
        """Watch the file the engine opens; None for an in-memory database (no other process
        can reach it). Raises sqlite3.Error when the file cannot be opened."""
        path = db.url.database or ""
        if not db.is_sqlite or not path or path == ":memory:" or "mode=memory" in path:
            return None
        # The file the engine opens, read-only (a file: URI is taken as it is).
        uri = path if path.startswith("file:") else Path(path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=1000")
        return cls(conn)

    def read(self) -> int:
        """The data version now (sqlite3.Error when it cannot be read)."""
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
