"""The append-only, hash-chained audit trail and its verification.

Each row's hash covers the previous row's hash and the row's canonical JSON: plain sha256
for rows written without an audit key, HMAC-SHA256 with the key for rows written with one
(`[audit] key_env`). Without the key, a forger who rewrites a row can recompute every plain
hash after it; with it, they cannot recompute a keyed one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import AuditEvent, AuditHead
from storage.types import UTC

GENESIS = "0" * 64
HEAD_ID = 1
SCHEME_PLAIN = "sha256"  # rows written without an audit key
SCHEME_KEYED = "hmac-sha256"  # rows written with one
KEYED_ACTION = "audit.keyed"  # the event that marks a chain of plain rows as keyed from here on


def jsonable(value: Any) -> Any:
    """Turn a value into plain JSON data (datetimes as UTC ISO strings, enums as values)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def canonical(
    *,
    seq: int,
    ts: dt.datetime,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    data: Mapping[str, Any],
) -> bytes:
    """The canonical JSON bytes of an audit row (everything but its hashes)."""
    doc = {
        "seq": seq,
        "ts": jsonable(ts),
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "data": jsonable(data),
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def chain_hash(prev_hash: str, payload: bytes) -> str:
    """sha256 over the previous hash followed by the row's canonical JSON (unkeyed rows)."""
    return hashlib.sha256(prev_hash.encode("ascii") + payload).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, payload: bytes) -> str:
    """HMAC-SHA256 with the audit key over the previous hash and the row's canonical JSON."""
    return hmac.new(key, prev_hash.encode("ascii") + payload, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public name of an audit key, stored in the head to tell keys apart (an HMAC of
    a constant: it tells nothing usable about the key)."""
    return hmac.new(key, b"workbot audit key id", hashlib.sha256).hexdigest()[:16]


def _payload(row: AuditEvent) -> bytes:
    return canonical(
        seq=row.seq,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        entity=row.entity,
        entity_id=row.entity_id,
        data=row.data,
    )


class StoredEvent(NamedTuple):
    """An audit row as verification reads it: its columns, without an ORM object."""

    seq: int
    ts: dt.datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    data: dict[str, Any]
    scheme: str
    prev_hash: str
    hash: str

    def payload(self) -> bytes:
        """The row's canonical JSON (its data is already plain JSON, as it was stored)."""
        doc = {
            "seq": self.seq,
            "ts": jsonable(self.ts),
            "actor": self.actor,
            "action": self.action,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "data": self.data,
        }
        return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


_STORED_COLUMNS = [getattr(AuditEvent, name) for name in StoredEvent._fields]


class AuditKeyError(Exception):
    """The chain is keyed and this process has no key, or another one: a row written now
    would break the chain, so nothing is written. `code` is key_missing or key_mismatch."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params: dict[str, Any] = params


async def _locked_head(session: AsyncSession) -> AuditHead:
    return (
        await session.execute(
            select(AuditHead)
            .where(AuditHead.id == HEAD_ID)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


def _key_for(head: AuditHead, key: bytes | None) -> str | None:
    """The id of the key to write with (None: unkeyed), refusing a key the chain does not
    have: none for a keyed chain, or another one."""
    if key is None:
        if head.key_id is not None:
            raise AuditKeyError("key_missing", key_id=head.key_id)
        return None
    kid = key_id(key)
    if head.key_id is not None and head.key_id != kid:
        raise AuditKeyError("key_mismatch", key_id=head.key_id, given=kid)
    return kid


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int,
    data: Mapping[str, Any],
    now: dt.datetime,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction (locks the chain head).

    With the unit of work's audit key (`Database.audit_key`) the row is HMAC'd; without one
    it is plain sha256, which only a chain that was never keyed accepts (AuditKeyError)."""
    head = await _locked_head(session)
    key = Database.audit_key_of(session)
    kid = _key_for(head, key)
    event = AuditEvent(
        seq=head.seq + 1,
        ts=now,
        actor=actor,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        data=jsonable(data),
        scheme=SCHEME_PLAIN if key is None else SCHEME_KEYED,
        prev_hash=head.hash,
    )
    payload = _payload(event)
    event.hash = (
        chain_hash(head.hash, payload) if key is None else keyed_hash(key, head.hash, payload)
    )
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    if kid is not None:
        head.key_id = kid
    await session.flush()
    # Feeds that follow the trail look again after the commit: in this process, and on
    # PostgreSQL in every worker (the CLI is another process). The topic names the action,
    # so a feed is woken only by what it follows (a new notice wakes none of them).
    await Database.notify(session, topic(action))
    return event


async def adopt_key(session: AsyncSession, *, actor: str, now: dt.datetime) -> bool:
    """At start-up, with the unit of work's audit key: refuse (AuditKeyError) a chain that is
    keyed with another key, or keyed while this process has none; and mark a chain of plain
    rows as keyed from here on with one `audit.keyed` event, whose HMAC covers every row
    before it. Whether it wrote that event."""
    head = await _locked_head(session)
    kid = _key_for(head, Database.audit_key_of(session))
    if kid is None or head.key_id is not None or head.seq == 0:
        return False
    data = {"scheme": SCHEME_KEYED, "key_id": kid}
    await append(
        session,
        actor=actor,
        action=KEYED_ACTION,
        entity="audit",
        entity_id="chain",
        data=data,
        now=now,
    )
    return True


def topic(action: str) -> str:
    """The wake-up topic an audit event of this action raises after its commit."""
    return f"audit.{action}"


_CHECKPOINT = re.compile(r"([0-9]{1,18}):([0-9a-fA-F]{64})", re.ASCII)


@dataclass(frozen=True)
class Checkpoint:
    """A row's sequence number and hash, as taken at some time and kept outside the database
    (the portal's `audit.checkpoint` callback carries one)."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read `SEQ:HASH` (a row number from 1, a colon, 64 hex digits); ValueError if not."""
        match = _CHECKPOINT.fullmatch(text.strip())
        if match is None or int(match.group(1)) < 1:
            raise ValueError(text)
        return cls(int(match.group(1)), match.group(2).lower())

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with the chain: a code (missing, unlinked, altered, downgraded,
    unknown_scheme, truncated, unkeyed), the row it concerns and what else a message needs."""

    code: str
    seq: int
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointResult:
    """What a checkpoint says about the chain: proven (the rows up to it are unchanged),
    different (its row hashes otherwise now), beyond (the chain is shorter), broken (a
    problem before its row) or unverifiable (keyed rows up to it, and no key)."""

    checkpoint: Checkpoint
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def proven(self) -> bool:
        """Whether the chain up to the checkpoint's row is what it was when it was taken."""
        return self.code == "proven"


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking the audit chain."""

    checked: int  # rows walked before the first problem (all of them when there is none)
    problem: Problem | None = None
    keyed: int = 0  # keyed rows whose HMAC was checked with the key
    unverified: tuple[int, int] | None = None  # the keyed rows that could not be (no key)
    checkpoint: CheckpointResult | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain is intact and every row of it was checked."""
        return self.problem is None and self.unverified is None

    @property
    def seq(self) -> int | None:
        """The row of the first problem, if any."""
        return None if self.problem is None else self.problem.seq

    @property
    def code(self) -> str | None:
        """The code of the first problem, if any."""
        return None if self.problem is None else self.problem.code


@dataclass
class _Walk:
    """The state of a walk along the chain, row by row."""

    key: bytes | None
    checkpoint: Checkpoint | None
    expected: int = 1
    prev: str = GENESIS
    problem: Problem | None = None
    first_keyed: int | None = None
    keyed: int = 0
    unverified: tuple[int, int] | None = None
    at_checkpoint: tuple[str, bool] | None = None  # that row's hash, and if it was unverified

    def step(self, row: StoredEvent) -> None:
        """Check one row against the chain so far (nothing more after the first problem)."""
        if self.problem is not None:
            return
        problem = self._check(row)
        if problem is not None:
            self.problem = problem
            return
        self.prev = row.hash
        self.expected += 1
        if self.checkpoint is not None and row.seq == self.checkpoint.seq:
            self.at_checkpoint = (row.hash, self.unverified is not None)

    def _check(self, row: StoredEvent) -> Problem | None:
        if row.seq != self.expected:
            return Problem("missing", self.expected, {"next": row.seq})
        if row.prev_hash != self.prev:
            return Problem("unlinked", row.seq)
        if row.scheme == SCHEME_PLAIN:
            if self.first_keyed is not None:
                return Problem("downgraded", row.seq, {"keyed": self.first_keyed})
            if chain_hash(self.prev, row.payload()) != row.hash:
                return Problem("altered", row.seq)
            return None
        if row.scheme != SCHEME_KEYED:
            return Problem("unknown_scheme", row.seq, {"scheme": row.scheme})
        if self.first_keyed is None:
            self.first_keyed = row.seq
        if self.key is None:
            first = row.seq if self.unverified is None else self.unverified[0]
            self.unverified = (first, row.seq)
            return None
        if keyed_hash(self.key, self.prev, row.payload()) != row.hash:
            return Problem("altered_keyed", row.seq)
        self.keyed += 1
        return None

    def checkpoint_result(self) -> CheckpointResult | None:
        """What the walk says about the checkpoint, if one was given."""
        cp = self.checkpoint
        if cp is None:
            return None
        checked = self.expected - 1
        if self.at_checkpoint is None:
            if self.problem is not None and self.problem.seq <= cp.seq:
                return CheckpointResult(cp, "broken", {"at": self.problem.seq})
            return CheckpointResult(cp, "beyond", {"count": checked})
        found, unverified = self.at_checkpoint
        if unverified:
            return CheckpointResult(cp, "unverifiable")
        if found != cp.hash:
            return CheckpointResult(cp, "different", {"found": found})
        return CheckpointResult(cp, "proven")


async def verify(
    session: AsyncSession,
    *,
    key: bytes | None = None,
    checkpoint: Checkpoint | None = None,
    each: Callable[[StoredEvent], None] | None = None,
) -> VerifyResult:
    """Walk the chain in order and report the first altered, missing, reordered or downgraded
    row (in a `db.read(snapshot=True)` session: the chain is streamed, and must not move
    meanwhile). With `key`, keyed rows are checked against it; without, they are reported as
    unverified. `each` sees every row in order (the replay follows the walk)."""
    walk = _Walk(key, checkpoint)
    result = await session.stream(
        select(*_STORED_COLUMNS).order_by(AuditEvent.seq).execution_options(yield_per=2000)
    )
    async for partition in result.partitions():  # one hop to the driver per partition
        for columns in partition:
            row = StoredEvent._make(columns)
            walk.step(row)
            if each is not None:
                each(row)
    checked = walk.expected - 1
    problem = walk.problem
    head = (await session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID))).scalar_one()
    if problem is None and (head.seq != checked or head.hash != walk.prev):
        problem = Problem("truncated", head.seq, {"count": checked})
    if problem is None and key is not None and checked and walk.first_keyed is None:
        problem = Problem("unkeyed", checked)
    return VerifyResult(
        checked,
        problem,
        keyed=walk.keyed,
        unverified=walk.unverified,
        checkpoint=walk.checkpoint_result(),
    )


async def events_after(session: AsyncSession, seq: int, *, limit: int = 200) -> list[AuditEvent]:
    """The events after a sequence number, in order (for feeds that follow the trail)."""
    return list(
        (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq).limit(limit)
            )
        ).all()
    )


@dataclass(frozen=True)
class Head:
    """The chain's newest row: its sequence number and hash, and whether the chain is keyed."""

    seq: int
    hash: str
    keyed: bool


async def head(session: AsyncSession) -> Head:
    """Where the chain ends now (seq 0 and the genesis hash when it is empty)."""
    row = (await session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID))).scalar_one()
    return Head(int(row.seq), row.hash, row.key_id is not None)


async def last_seq(session: AsyncSession) -> int:
    """The sequence number of the newest event (0 when there is none)."""
    head = await session.get(AuditHead, HEAD_ID)
    return int(head.seq) if head is not None else 0
