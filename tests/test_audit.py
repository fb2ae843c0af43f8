"""The hash-chained audit trail: one row per change, in its transaction, and tamper detection."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit, domain
from storage.db import Database
from storage.directory import parse_people_csv, upsert_people
from storage.models import AuditEvent, Notice
from storage.types import Channel, FeedbackKind, Requires
from tests.conftest import T0
from tests.support import (
    AUDIT_KEY,
    CLI,
    PEOPLE_CSV,
    audit_length,
    make_notice,
    rewrite_chain,
    seed_people,
    snapshot,
    workbot_cli,
)

from support import CSV_PLATFORMS

MIN = dt.timedelta(minutes=1)
Call = Callable[[AsyncSession], Awaitable[Any]]


class Rollback(Exception):
    """Raised inside a unit of work to make it roll back."""


async def chain(db: Database) -> list[AuditEvent]:
    """The stored audit events in chain order."""
    async with db.read() as s:
        return list((await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())


async def check(db: Database) -> audit.VerifyResult:
    """Verify the chain, as `workbot audit verify` does."""
    async with db.read(snapshot=True) as s:
        return await audit.verify(s, key=db.audit_key)


def operations(notice_id: int) -> list[tuple[str, str, Call]]:
    """Every domain operation on a notice for everyone, in an order the state machine allows."""
    t = T0 + 10 * MIN
    return [
        (
            "assignment.acknowledge",
            "assignment",
            lambda s: domain.acknowledge(
                s, notice_id, "p001", channel=Channel.GROUP, actor=CLI, now=t
            ),
        ),
        (
            "assignment.acknowledge",
            "assignment",
            lambda s: domain.phone_ack(s, notice_id, "p002", actor=CLI, now=t),
        ),
        (
            "assignment.progress",
            "assignment",
            lambda s: domain.report_progress(
                s, notice_id, "p003", text="过半", percent=50, channel=Channel.DM, actor=CLI, now=t
            ),
        ),
        (
            "assignment.done",
            "assignment",
            lambda s: domain.record_outcome(
                s,
                notice_id,
                "p004",
                measures=["整改"],
                results="已整改",
                metrics=[domain.Metric("问题数", 3.5, "个")],
                channel=Channel.CLI,
                actor=CLI,
                now=t,
            ),
        ),
        (
            "assignment.verify",
            "assignment",
            lambda s: domain.verify(s, notice_id, "p004", actor=CLI, now=t),
        ),
        (
            "assignment.done",
            "assignment",
            lambda s: domain.record_outcome(
                s,
                notice_id,
                "p005",
                measures=[],
                results="完成",
                channel=Channel.PORTAL,
                actor=CLI,
                now=t,
            ),
        ),
        (
            "assignment.return",
            "assignment",
            lambda s: domain.return_assignment(
                s, notice_id, "p005", reason="补充", actor=CLI, now=t
            ),
        ),
        (
            "assignment.feedback",
            "assignment",
            lambda s: domain.feedback(
                s,
                notice_id,
                "p001",
                kind=FeedbackKind.DUPLICATE,
                text="多头填报",
                channel=Channel.GROUP,
                actor=CLI,
                now=t,
            ),
        ),
        (
            "assignment.excuse",
            "assignment",
            lambda s: domain.excuse(s, notice_id, "p002", reason="出差", actor=CLI, now=t),
        ),
        ("notice.close", "notice", lambda s: domain.close_notice(s, notice_id, actor=CLI, now=t)),
    ]


def _create(title: str) -> Call:
    draft = domain.NoticeDraft(
        title=title,
        audience=domain.Audience(all=True),
        requires=Requires.OUTCOME,
        deadline=T0 + dt.timedelta(days=7),
    )
    return lambda s: domain.create_notice(s, draft, actor=CLI, now=T0)


async def _cancel_newest(s: AsyncSession) -> Any:
    newest = await s.scalar(select(func.max(Notice.id)))
    assert newest is not None
    return await domain.cancel_notice(s, newest, actor=CLI, now=T0 + MIN)


def _import(csv: bytes) -> Call:
    return lambda s: upsert_people(s, parse_people_csv(csv, CSV_PLATFORMS), actor=CLI, now=T0)


async def test_every_operation_writes_exactly_one_audit_row(db: Database) -> None:
    steps: list[tuple[str, str, Call]] = [
        ("directory.import", "directory", _import(PEOPLE_CSV)),
        ("notice.create", "notice", _create("第一份")),
    ]
    steps += operations(1)
    steps += [
        ("notice.create", "notice", _create("第二份")),
        ("notice.cancel", "notice", lambda s: domain.cancel_notice(s, 2, actor=CLI, now=T0 + MIN)),
    ]

    for n, (action, entity, call) in enumerate(steps, start=1):
        async with db.transaction() as s:
            await call(s)
        rows = await chain(db)
        assert len(rows) == n, action
        assert (rows[-1].seq, rows[-1].action, rows[-1].entity, rows[-1].actor) == (
            n,
            action,
            entity,
            "cli",
        )
    result = await check(db)
    assert (result.ok, result.checked, result.seq, result.problem) == (True, len(steps), None, None)


async def test_a_rolled_back_operation_leaves_no_audit_row(db: Database) -> None:
    await seed_people(db, T0)
    nid = await make_notice(db, T0, requires=Requires.OUTCOME)
    steps: list[Call] = [
        _import(PEOPLE_CSV.replace("张三".encode(), b"Zhang")),
        _create("另一份"),
        *[call for _, _, call in operations(nid)],
        _cancel_newest,
    ]
    for i, call in enumerate(steps):
        before = await snapshot(db)
        with pytest.raises(Rollback):
            async with db.transaction() as s:
                await call(s)
                raise Rollback
        assert await snapshot(db) == before, i
        # Then really do it, so that the next operation's state is reachable.
        async with db.transaction() as s:
            await call(s)
        assert await audit_length(db) == len(before["audit_event"]) + 1, i
    assert (await check(db)).ok


async def test_the_chain_links_each_row_to_the_previous_one(db: Database) -> None:
    await seed_people(db, T0)
    nid = await make_notice(db, T0, requires=Requires.OUTCOME)
    for _, _, call in operations(nid):
        async with db.transaction() as s:
            await call(s)

    rows = await chain(db)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert len({r.hash for r in rows}) == len(rows)
    result = await check(db)
    assert (result.ok, result.checked) == (True, len(rows))


async def _tamper(db: Database, sql: str, **params: Any) -> None:
    async with db.engine.begin() as conn:
        result = await conn.execute(text(sql), params)
        assert result.rowcount == 1


async def _chain_of_six(db: Database) -> list[AuditEvent]:
    await seed_people(db, T0)  # seq 1
    nid = await make_notice(db, T0, requires=Requires.OUTCOME)  # seq 2
    for _, _, call in operations(nid)[:4]:  # seq 3..6
        async with db.transaction() as s:
            await call(s)
    rows = await chain(db)
    assert len(rows) == 6
    assert (await check(db)).ok
    return rows


def _json_param(db: Database) -> str:
    return ":d" if db.is_sqlite else "CAST(:d AS json)"


async def test_altered_data_is_detected_naming_the_row(db: Database) -> None:
    rows = await _chain_of_six(db)
    forged = {**rows[3].data, "person_id": "p005"}

    await _tamper(
        db,
        f"UPDATE audit_event SET data = {_json_param(db)} WHERE seq = 4",
        d=json.dumps(forged, ensure_ascii=False),
    )

    result = await check(db)
    assert (result.ok, result.seq, result.checked, result.code) == (False, 4, 3, "altered")


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "mallory"), ("action", "assignment.verify"), ("entity_id", "999")],
)
async def test_altered_columns_are_detected(db: Database, column: str, value: str) -> None:
    await _chain_of_six(db)

    await _tamper(db, f"UPDATE audit_event SET {column} = :v WHERE seq = 5", v=value)

    result = await check(db)
    assert (result.ok, result.seq) == (False, 5)


async def test_altered_timestamp_and_rehashed_row_are_detected(db: Database) -> None:
    rows = await _chain_of_six(db)
    ts = rows[2].ts + dt.timedelta(seconds=1)

    await _tamper(db, "UPDATE audit_event SET ts = :ts WHERE seq = 3", ts=ts)
    result = await check(db)
    assert (result.ok, result.seq) == (False, 3)

    # A forger who also rewrites the row's hash breaks the link to the next row.
    payload = audit.canonical(
        seq=3,
        ts=ts,
        actor=rows[2].actor,
        action=rows[2].action,
        entity=rows[2].entity,
        entity_id=rows[2].entity_id,
        data=rows[2].data,
    )
    await _tamper(
        db,
        "UPDATE audit_event SET hash = :h WHERE seq = 3",
        h=audit.chain_hash(rows[2].prev_hash, payload),
    )
    result = await check(db)
    assert (result.ok, result.seq, result.code) == (False, 4, "unlinked")


async def test_reformatted_json_is_not_an_alteration(db: Database) -> None:
    rows = await _chain_of_six(db)
    same = json.dumps(dict(reversed(list(rows[3].data.items()))), indent=2, ensure_ascii=True)

    await _tamper(db, f"UPDATE audit_event SET data = {_json_param(db)} WHERE seq = 4", d=same)

    result = await check(db)
    assert (result.ok, result.checked) == (True, 6)


@pytest.mark.parametrize(
    ("seq", "checked", "code"),
    [(3, 2, "missing"), (1, 0, "missing"), (6, 5, "truncated")],
    ids=["middle", "first", "last"],
)
async def test_deleting_a_row_is_detected(db: Database, seq: int, checked: int, code: str) -> None:
    await _chain_of_six(db)

    await _tamper(db, f"DELETE FROM audit_event WHERE seq = {seq}")

    result = await check(db)
    assert (result.ok, result.seq, result.checked, result.code) == (False, seq, checked, code)


async def test_an_empty_chain_verifies(db: Database) -> None:
    result = await check(db)
    assert (result.ok, result.checked) == (True, 0)


async def test_concurrent_transactions_still_form_one_chain(db: Database) -> None:
    await seed_people(db, T0)
    nid = await make_notice(db, T0)
    start = await audit_length(db)
    people = ("p001", "p002", "p003", "p004", "p005")
    n = 2 * len(people) + 1
    # On PostgreSQL every transaction is open before any appends, so they truly contend for
    # the chain head; SQLite queues its writers in-process, so there they simply take turns.
    barrier = None if db.is_sqlite else asyncio.Barrier(n)

    async def unit(i: int) -> None:
        async with db.transaction() as s:
            await s.execute(text("SELECT 1"))
            if barrier is not None:
                await barrier.wait()
            now = T0 + i * MIN
            if i < len(people):
                await domain.acknowledge(
                    s, nid, people[i], channel=Channel.BUTTON, actor=CLI, now=now
                )
            else:
                await audit.append(
                    s,
                    actor="scheduler",
                    action="test.tick",
                    entity="job",
                    entity_id=i,
                    data={"i": i, "at": now},
                    now=now,
                )
            if i == n - 1:
                raise Rollback

    results = await asyncio.gather(*(unit(i) for i in range(n)), return_exceptions=True)

    assert [type(r) for r in results] == [type(None)] * (n - 1) + [Rollback]
    rows = await chain(db)
    assert [r.seq for r in rows] == list(range(1, start + n))
    assert sorted(r.entity_id for r in rows[start:] if r.action == "test.tick") == sorted(
        str(i) for i in range(len(people), n - 1)
    )
    result = await check(db)
    assert (result.ok, result.checked) == (True, start + n - 1)


# The keyed chain: HMAC-SHA256 with the audit key ([audit] key_env)

KEY = AUDIT_KEY.encode()


async def _keyed_chain_of_six(db: Database) -> list[AuditEvent]:
    db.audit_key = KEY
    rows = await _chain_of_six(db)
    assert {r.scheme for r in rows} == {audit.SCHEME_KEYED}
    return rows


async def test_a_keyed_chain_verifies_with_its_key_and_is_not_passed_without_it(
    db: Database,
) -> None:
    await _keyed_chain_of_six(db)

    async with db.read(snapshot=True) as s:
        keyed = await audit.verify(s, key=KEY)
        without = await audit.verify(s)
        other = await audit.verify(s, key=b"another key of at least 32 characters!!")

    assert (keyed.ok, keyed.checked, keyed.keyed, keyed.unverified) == (True, 6, 6, None)
    # Without the key nothing is wrong that can be seen, but nothing keyed was checked.
    assert (without.ok, without.problem, without.keyed, without.unverified) == (
        False,
        None,
        0,
        (1, 6),
    )
    assert (other.ok, other.code, other.seq) == (False, "altered_keyed", 1)


@pytest.mark.parametrize(
    ("relabel", "start", "code", "seq"),
    [
        (None, None, "altered_keyed", 4),  # rows 4.. rehashed plain, still labelled keyed
        (audit.SCHEME_PLAIN, None, "downgraded", 4),  # rows 4.. relabelled plain
        (audit.SCHEME_PLAIN, 1, "unkeyed", 6),  # the whole chain relabelled plain
    ],
    ids=["rehashed", "downgraded", "stripped"],
)
async def test_a_row_rewritten_with_every_hash_and_the_head_recomputed_without_the_key_is_detected(
    db: Database, tmp_path: Path, relabel: str | None, start: int | None, code: str, seq: int
) -> None:
    rows = await _keyed_chain_of_six(db)
    forged = {**rows[3].data, "person_id": "p005"}

    await rewrite_chain(db, 4, forged, scheme=relabel, start=start)

    async with db.read(snapshot=True) as s:
        result = await audit.verify(s, key=KEY)
    assert (result.ok, result.code, result.seq) == (False, code, seq)
    exit_code, out, err = await workbot_cli(db, tmp_path, "audit", "verify", key=AUDIT_KEY)
    assert exit_code == 1
    assert f"row {seq}" in err.splitlines()[0]
    assert "Audit chain intact" not in out


async def test_plain_rows_before_the_key_verify_as_before_and_the_first_keyed_row_seals_them(
    db: Database,
) -> None:
    await _chain_of_six(db)  # written before there was a key: plain sha256
    db.audit_key = KEY
    async with db.transaction() as s:
        assert await audit.adopt_key(s, actor="serve", now=T0 + MIN)
    async with db.transaction() as s:
        assert not await audit.adopt_key(s, actor="serve", now=T0 + MIN)  # once only
    nid = 1
    async with db.transaction() as s:
        await domain.acknowledge(s, nid, "p005", channel=Channel.GROUP, actor=CLI, now=T0 + MIN)

    rows = await chain(db)
    assert [r.scheme for r in rows] == [audit.SCHEME_PLAIN] * 6 + [audit.SCHEME_KEYED] * 2
    assert (rows[6].action, rows[6].data["scheme"]) == (audit.KEYED_ACTION, "hmac-sha256")
    async with db.read(snapshot=True) as s:
        keyed = await audit.verify(s, key=KEY)
        without = await audit.verify(s)
    assert (keyed.ok, keyed.checked, keyed.keyed) == (True, 8, 2)
    assert (without.problem, without.unverified) == (None, (7, 8))

    # Rewriting a row from before the key, rehashing the plain rows up to the first keyed
    # one and relinking it: that row's HMAC covered the old link.
    await rewrite_chain(db, 3, {**rows[2].data, "person_id": "p004"}, start=3)
    async with db.read(snapshot=True) as s:
        result = await audit.verify(s, key=KEY)
    assert (result.code, result.seq) == ("altered_keyed", 7)


async def test_a_keyed_chain_refuses_writes_without_its_key_and_with_another(
    db: Database,
) -> None:
    await _keyed_chain_of_six(db)
    before = await snapshot(db)

    for key, code in ((None, "key_missing"), (b"x" * 40, "key_mismatch")):
        db.audit_key = key
        with pytest.raises(audit.AuditKeyError) as caught:
            async with db.transaction() as s:
                await domain.close_notice(s, 1, actor=CLI, now=T0 + MIN)
        assert caught.value.code == code
        with pytest.raises(audit.AuditKeyError):
            async with db.transaction() as s:
                await audit.adopt_key(s, actor="serve", now=T0 + MIN)
        assert await snapshot(db) == before


# Checkpoints: `workbot audit verify --checkpoint SEQ:HASH`


@given(seq=st.integers(1, 10**18 - 1), digest=st.binary(min_size=32, max_size=32))
def test_a_checkpoint_reads_back_what_it_writes(seq: int, digest: bytes) -> None:
    checkpoint = audit.Checkpoint(seq, digest.hex())
    assert audit.Checkpoint.parse(str(checkpoint)) == checkpoint
    assert audit.Checkpoint.parse(f" {seq}:{digest.hex().upper()}\n") == checkpoint


@given(text=st.text(max_size=80))
def test_anything_else_is_not_a_checkpoint(text: str) -> None:
    seq, sep, digest = text.strip().partition(":")
    valid = (
        sep
        and seq.isascii()
        and seq.isdigit()
        and 0 < len(seq) <= 18
        and int(seq) > 0
        and len(digest) == 64
        and all(c in "0123456789abcdefABCDEF" for c in digest)
    )
    if valid:
        assert audit.Checkpoint.parse(text).seq == int(seq)
    else:
        with pytest.raises(ValueError):
            audit.Checkpoint.parse(text)


@pytest.mark.parametrize(
    "value", ["12", "x:y", "0:" + "a" * 64, "3:" + "a" * 63, "3:" + "g" * 64, "-3:" + "a" * 64]
)
async def test_a_malformed_checkpoint_is_refused_naming_the_argument(
    db: Database, tmp_path: Path, value: str
) -> None:
    code, out, err = await workbot_cli(db, tmp_path, "audit", "verify", f"--checkpoint={value}")
    assert (code, out) == (2, "")
    assert err == (
        f"workbot: --checkpoint: '{value}' is not SEQ:HASH (a row number, a colon and the 64"
        " hex digits of an audit.checkpoint callback).\n"
    )


async def test_a_checkpoint_proves_the_chain_up_to_its_row_or_says_why_not(
    db: Database, tmp_path: Path
) -> None:
    rows = await _chain_of_six(db)
    at_four = f"4:{rows[3].hash}"

    async def verify_at(checkpoint: str) -> tuple[int, str, str]:
        return await workbot_cli(db, tmp_path, "audit", "verify", "--checkpoint", checkpoint)

    code, out, _ = await verify_at(at_four)
    assert code == 0
    assert "Checkpoint 4: the chain up to row 4 is unchanged since the checkpoint was taken." in out

    code, _, err = await verify_at(f"4:{rows[2].hash}")
    assert code == 2
    assert f"--checkpoint 4:{rows[2].hash}: row 4 now has the hash {rows[3].hash}" in err

    code, _, err = await verify_at(f"9:{rows[3].hash}")
    assert code == 2
    assert f"--checkpoint 9:{rows[3].hash}: the chain has 6 rows, not 9" in err

    before = await snapshot(db)
    await _tamper(db, "DELETE FROM audit_event WHERE seq = 2")
    code, _, err = await verify_at(at_four)
    assert code == 2
    assert (
        f"--checkpoint {at_four}: the chain is broken at row 2, before the checkpoint's row 4"
        in err
    )
    assert "Audit chain broken: row 2 is missing (the next row is 3)." in err
    assert len(before["audit_event"]) == 6


async def test_a_checkpoint_over_keyed_rows_needs_the_key(db: Database, tmp_path: Path) -> None:
    rows = await _keyed_chain_of_six(db)
    checkpoint = f"5:{rows[4].hash}"

    code, out, _ = await workbot_cli(
        db, tmp_path, "audit", "verify", "--checkpoint", checkpoint, key=AUDIT_KEY
    )
    assert code == 0
    assert "Checkpoint 5: the chain up to row 5 is unchanged" in out
    code, _, err = await workbot_cli(db, tmp_path, "audit", "verify", "--checkpoint", checkpoint)
    assert code == 2
    assert (
        f"--checkpoint {checkpoint}: rows up to 5 include keyed rows, which cannot be checked"
        " without the audit key ([audit] key_env)." in err
    )
