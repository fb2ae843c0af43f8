"""The assignment state machine and the notice operations, checked through what they store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import errors, types
from storage.db import Database
from storage.domain import (
    Actor,
    Audience,
    Change,
    Metric,
    NoticeDraft,
    acknowledge,
    cancel_notice,
    close_notice,
    create_notice,
    excuse,
    feedback,
    phone_ack,
    record_outcome,
    report_progress,
    resolve_audience,
    return_assignment,
    verify,
)
from storage.models import Assignment, AuditEvent, Notice, Outcome, Reply
from storage.types import AssignmentState as S
from storage.types import Channel, FeedbackKind, NoticeState, ReplyKind, Requires, Role
from tests.conftest import T0
from tests.support import CLI, actor_of, assignees, assignment, make_notice, seed_people, snapshot

ALL_STATES = list(S)
PEOPLE = ("p001", "p002", "p003", "p004", "p005")
# p001 张三 基础教育科 staff · p002 李四 基础教育科 staff;head · p003 王五 办公室 office
# p004 赵六 督导科 staff · p005 钱七 督导科 head
ASSIGNEE = "p001"
PATH_AT = T0 + dt.timedelta(minutes=10)  # when an assignment is driven to its starting state
NOW = T0 + dt.timedelta(hours=1)  # when the operation under test happens

Actors = dict[str, Actor]
Op = Callable[[AsyncSession, int, str, dt.datetime, Actor], Awaitable[Change]]
Call = Callable[[AsyncSession], Awaitable[Any]]


@pytest.fixture
async def actors(db: Database) -> Actors:
    """The standard directory, seeded, with each person's actor."""
    await seed_people(db, T0)
    return {pid: await actor_of(db, pid) for pid in PEOPLE}


# --- the operations, as an assignee (``me``) or the office (CLI) performs them -------------


async def _ack(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await acknowledge(s, nid, pid, channel=Channel.BUTTON, actor=me, now=now, text="收到")


async def _phone(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await phone_ack(s, nid, pid, actor=CLI, now=now, note="电话确认")


async def _progress(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await report_progress(
        s, nid, pid, text="已完成一半", percent=50, channel=Channel.DM, actor=me, now=now
    )


async def _outcome(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await record_outcome(
        s,
        nid,
        pid,
        measures=["精简会议", "  ", "合并报表"],
        results="会议减少三成",
        metrics=[Metric("会议数量", -30.0, "%")],
        channel=Channel.GROUP,
        actor=me,
        now=now,
    )


async def _outcome_no_results(
    s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor
) -> Change:
    return await record_outcome(
        s, nid, pid, measures=["精简会议"], results="  ", channel=Channel.GROUP, actor=me, now=now
    )


async def _feedback(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await feedback(
        s,
        nid,
        pid,
        kind=FeedbackKind.DEADLINE,
        text="时间太紧",
        channel=Channel.DM,
        actor=me,
        now=now,
    )


async def _excuse(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await excuse(s, nid, pid, reason="病假", actor=CLI, now=now)


async def _return(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await return_assignment(s, nid, pid, reason="缺少数据", actor=CLI, now=now)


async def _verify(s: AsyncSession, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    return await verify(s, nid, pid, actor=CLI, now=now)


OPS: dict[str, Op] = {
    "acknowledge": _ack,
    "phone_ack": _phone,
    "report_progress": _progress,
    "record_outcome": _outcome,
    "feedback": _feedback,
    "excuse": _excuse,
    "return_assignment": _return,
    "verify": _verify,
}

# The state machine of docs/architecture.md, as implemented: allowed moves per operation.
_WORKING = (S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED, S.EXCUSED)
ALLOWED: dict[str, dict[S, S]] = {
    "acknowledge": {S.PENDING: S.ACKNOWLEDGED, S.EXCUSED: S.ACKNOWLEDGED},
    "phone_ack": {S.PENDING: S.ACKNOWLEDGED, S.EXCUSED: S.ACKNOWLEDGED},
    "report_progress": dict.fromkeys(_WORKING, S.IN_PROGRESS),
    "record_outcome": dict.fromkeys(_WORKING, S.DONE),
    "feedback": {s: s for s in S},
    "excuse": dict.fromkeys((S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED), S.EXCUSED),
    "return_assignment": {S.DONE: S.RETURNED},
    "verify": {S.DONE: S.VERIFIED},
}
# A repeated acknowledgment is not an error: it changes nothing and says so.
NO_OP: dict[str, set[S]] = {
    "acknowledge": set(S) - {S.PENDING, S.EXCUSED},
    "phone_ack": set(S) - {S.PENDING, S.EXCUSED},
}
ACK_CHANNEL = {
    "acknowledge": Channel.BUTTON,
    "phone_ack": Channel.PHONE,
    "report_progress": Channel.DM,
    "record_outcome": Channel.GROUP,
}
REPLY_KIND = {
    "acknowledge": ReplyKind.ACK,
    "phone_ack": ReplyKind.ACK,
    "report_progress": ReplyKind.PROGRESS,
    "record_outcome": ReplyKind.OUTCOME,
    "feedback": ReplyKind.FEEDBACK,
}
AUDIT_ACTION = {
    "acknowledge": "assignment.acknowledge",
    "phone_ack": "assignment.acknowledge",
    "report_progress": "assignment.progress",
    "record_outcome": "assignment.done",
    "feedback": "assignment.feedback",
    "excuse": "assignment.excuse",
    "return_assignment": "assignment.return",
    "verify": "assignment.verify",
}

ALLOWED_CASES = [(op, before) for op, moves in ALLOWED.items() for before in moves]
NO_OP_CASES = [(op, before) for op, states in NO_OP.items() for before in sorted(states)]
FORBIDDEN_CASES = [
    (op, before)
    for op in OPS
    for before in ALL_STATES
    if before not in ALLOWED[op] and before not in NO_OP.get(op, set())
]


def expected_row(
    op: str,
    row: dict[str, Any],
    *,
    now: dt.datetime,
    deadline: dt.datetime | None,
    requires: Requires,
) -> dict[str, Any]:
    """The reference model: the assignment row an allowed operation should leave behind."""
    new = dict(row)
    first_ack = row["acknowledged_at"] is None
    if op in ACK_CHANNEL and first_ack:
        new["acknowledged_at"] = now
        new["ack_channel"] = ACK_CHANNEL[op]
        new["late"] = deadline is not None and now > deadline
    if op in ("report_progress", "record_outcome") and row["started_at"] is None:
        new["started_at"] = now
    if op == "report_progress":
        new.update(progress_percent=50, progress_text="已完成一半", progress_at=now)
    elif op == "record_outcome":
        new["done_at"] = now
    elif op == "excuse":
        new.update(excused_at=now, excuse_reason="病假")
    elif op == "return_assignment":
        new.update(returned_at=now, return_reason="缺少数据", done_at=None)
    elif op == "verify":
        new["verified_at"] = now
    if op != "feedback":
        target = ALLOWED[op][row["state"]]
        new.update(
            state=target,
            updated_at=now,
            outstanding=types.is_outstanding(NoticeState.OPEN, requires, target),
        )
    return new


# --- reading back what was stored --------------------------------------------------------


def _columns(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.key) for c in obj.__table__.columns}


async def stored(db: Database, notice_id: int, person_id: str = ASSIGNEE) -> dict[str, Any]:
    """The stored assignment row, as a dict of its columns."""
    return _columns(await assignment(db, notice_id, person_id))


async def assert_stored(
    db: Database, notice_id: int, context: object = None, /, **expected: object
) -> dict[str, Any]:
    """Assert that ASSIGNEE's stored assignment has these column values (`context`, if given,
    says which case failed); the whole row."""
    row = await stored(db, notice_id)
    assert {name: row[name] for name in expected} == expected, context
    return row


Row = TypeVar("Row", Reply, Outcome)


async def _rows_of(
    model: type[Row], db: Database, notice_id: int, person_id: str = ASSIGNEE
) -> list[Row]:
    """The rows of `model` (replies or outcomes) stored for one assignment, oldest first."""
    async with db.read() as s:
        return list(
            (
                await s.scalars(
                    select(model)
                    .join(Assignment, Assignment.id == model.assignment_id)
                    .where(Assignment.notice_id == notice_id, Assignment.person_id == person_id)
                    .order_by(model.id)
                )
            ).all()
        )


replies = partial(_rows_of, Reply)
outcomes = partial(_rows_of, Outcome)


async def audit_tail(db: Database) -> list[AuditEvent]:
    """All audit events, in chain order."""
    async with db.read() as s:
        return list((await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())


def as_call(op: Op, nid: int, pid: str, me: Actor) -> Call:
    """Bind an operation (performed at NOW) to its arguments; the result takes the session."""

    async def call(s: AsyncSession) -> Change:
        return await op(s, nid, pid, NOW, me)

    return call


async def run(db: Database, op: Op, nid: int, pid: str, now: dt.datetime, me: Actor) -> Change:
    """Perform one operation in its own unit of work."""
    async with db.transaction() as s:
        return await op(s, nid, pid, now, me)


# The machine codes the HTTP API and the reply catalog map these errors by.
ERROR_CODES: dict[type[errors.DomainError], str] = {
    errors.AudienceEmpty: "audience_empty",
    errors.InvalidTransition: "invalid_transition",
    errors.InvalidValue: "invalid_value",
    errors.MissingResults: "missing_results",
    errors.NotAllowed: "not_allowed",
    errors.NotAssignee: "not_assignee",
    errors.NoticeClosed: "notice_closed",
    errors.UnknownDepartment: "unknown_department",
    errors.UnknownNotice: "unknown_notice",
    errors.UnknownPerson: "unknown_person",
}


async def refused(db: Database, call: Call, error: type[errors.DomainError]) -> errors.DomainError:
    """Run a call that must be refused; even though the caller commits, nothing may change."""
    before = await snapshot(db)
    caught: errors.DomainError | None = None
    async with db.transaction() as s:
        try:
            await call(s)
        except errors.DomainError as exc:
            caught = exc
    assert caught is not None, f"expected {error.__name__}, nothing was raised"
    assert type(caught) is error, caught
    assert caught.code == ERROR_CODES[error]
    assert await snapshot(db) == before
    return caught


async def bring_to(db: Database, actors: Actors, nid: int, state: S) -> None:
    """Drive p001's assignment on a notice to a given state through the operations."""
    me = actors[ASSIGNEE]
    steps: dict[S, list[Op]] = {
        S.PENDING: [],
        S.ACKNOWLEDGED: [_ack],
        S.IN_PROGRESS: [_progress],
        S.DONE: [_outcome],
        S.VERIFIED: [_outcome, _verify],
        S.RETURNED: [_outcome, _return],
        S.EXCUSED: [_excuse],
    }
    for step in steps[state]:
        await run(db, step, nid, ASSIGNEE, PATH_AT, me)
    assert (await stored(db, nid))["state"] is state


async def notice_for_p001(
    db: Database, *, requires: Requires = Requires.OUTCOME, deadline: dt.datetime | None = None
) -> int:
    """A fresh notice whose only assignee is p001."""
    return await make_notice(
        db, T0, audience=Audience(people=(ASSIGNEE,)), requires=requires, deadline=deadline
    )


# --- every allowed transition, every forbidden one -----------------------------------------
# Each case gets a fresh notice; the cases of one operation share a database to stay quick.


@pytest.mark.parametrize("op", list(OPS))
async def test_allowed_transitions_store_their_effects(
    db: Database, actors: Actors, op: str
) -> None:
    for before, after in ALLOWED[op].items():
        case = (op, before)
        nid = await notice_for_p001(db)
        await bring_to(db, actors, nid, before)
        row = await stored(db, nid)
        n_replies = len(await replies(db, nid))
        n_outcomes = len(await outcomes(db, nid))
        n_audit = len(await audit_tail(db))

        change = await run(db, OPS[op], nid, ASSIGNEE, NOW, actors[ASSIGNEE])

        assert (change.before, change.after) == (before, after), case
        assert change.changed is (op != "feedback"), case
        first_ack = op in ACK_CHANNEL and row["acknowledged_at"] is None
        assert change.acknowledged_now is first_ack, case
        assert await stored(db, nid) == expected_row(
            op, row, now=NOW, deadline=None, requires=Requires.OUTCOME
        ), case

        new_replies = (await replies(db, nid))[n_replies:]
        if op in REPLY_KIND:
            assert [(r.kind, r.created_at) for r in new_replies] == [(REPLY_KIND[op], NOW)], case
            assert change.reply_id == new_replies[0].id, case
        else:
            assert new_replies == [], case
        new_outcomes = (await outcomes(db, nid))[n_outcomes:]
        if op == "record_outcome":
            assert [(o.measures, o.results, o.metrics) for o in new_outcomes] == [
                (
                    ["精简会议", "合并报表"],
                    "会议减少三成",
                    [{"name": "会议数量", "value": -30.0, "unit": "%"}],
                )
            ], case
            assert change.outcome_id == new_outcomes[0].id, case
        else:
            assert new_outcomes == [], case
        chain = await audit_tail(db)
        assert len(chain) == n_audit + 1, case
        assert (chain[-1].action, chain[-1].data["from"], chain[-1].data["to"]) == (
            AUDIT_ACTION[op],
            before.value,
            after.value,
        ), case


@pytest.mark.parametrize("op", sorted({op for op, _ in FORBIDDEN_CASES}))
async def test_forbidden_transitions_are_refused_and_change_nothing(
    db: Database, actors: Actors, op: str
) -> None:
    for before in [b for o, b in FORBIDDEN_CASES if o == op]:
        nid = await notice_for_p001(db)
        await bring_to(db, actors, nid, before)

        error = await refused(
            db,
            as_call(OPS[op], nid, ASSIGNEE, actors[ASSIGNEE]),
            errors.InvalidTransition,
        )

        assert error.params["state"] == before.value, (op, before)
        assert error.params["notice_id"] == nid, (op, before)


@pytest.mark.parametrize("op", sorted(NO_OP))
async def test_repeated_ack_is_a_no_op(db: Database, actors: Actors, op: str) -> None:
    for before in sorted(NO_OP[op]):
        nid = await notice_for_p001(db)
        await bring_to(db, actors, nid, before)
        snap = await snapshot(db)

        change = await run(db, OPS[op], nid, ASSIGNEE, NOW, actors[ASSIGNEE])

        assert change.changed is False, before
        assert change.acknowledged_now is False, before
        assert (change.before, change.after) == (before, before)
        assert change.reply_id is None, before
        assert await snapshot(db) == snap, before


def test_the_transition_table_covers_every_pair() -> None:
    covered = len(ALLOWED_CASES) + len(NO_OP_CASES) + len(FORBIDDEN_CASES)
    assert covered == len(OPS) * len(S)
    assert len(FORBIDDEN_CASES) > 0


# --- acknowledgment ------------------------------------------------------------------------


async def test_ack_records_its_channel_and_is_idempotent(db: Database, actors: Actors) -> None:
    for channel in Channel:
        nid = await notice_for_p001(db, requires=Requires.ACK)
        async with db.transaction() as s:
            first = await acknowledge(
                s, nid, ASSIGNEE, channel=channel, actor=actors[ASSIGNEE], now=NOW, message_ref="m1"
            )
        assert (first.changed, first.acknowledged_now, first.late) == (True, True, False)
        row = await assert_stored(
            db,
            nid,
            state=S.ACKNOWLEDGED,
            ack_channel=channel,
            acknowledged_at=NOW,
            outstanding=False,
        )
        [reply] = await replies(db, nid)
        assert (reply.kind, reply.channel, reply.message_ref, reply.actor) == (
            ReplyKind.ACK,
            channel,
            "m1",
            ASSIGNEE,
        )
        audit_len = len(await audit_tail(db))

        later = NOW + dt.timedelta(minutes=5)
        async with db.transaction() as s:
            again = await acknowledge(
                s, nid, ASSIGNEE, channel=Channel.LINK, actor=actors[ASSIGNEE], now=later
            )

        assert (again.changed, again.acknowledged_now, again.reply_id) == (False, False, None)
        assert await stored(db, nid) == row
        assert len(await replies(db, nid)) == 1
        assert len(await audit_tail(db)) == audit_len


async def test_ack_after_the_deadline_is_late(db: Database, actors: Actors) -> None:
    deadline = T0 + dt.timedelta(hours=2)
    for minutes_after, late in [(-1, False), (0, False), (1, True), (60 * 24, True)]:
        nid = await notice_for_p001(db, requires=Requires.ACK, deadline=deadline)
        at = deadline + dt.timedelta(minutes=minutes_after)

        change = await run(db, _ack, nid, ASSIGNEE, at, actors[ASSIGNEE])

        assert change.late is late, minutes_after
        await assert_stored(db, nid, minutes_after, late=late, acknowledged_at=at)
        assert (await audit_tail(db))[-1].data["late"] is late, minutes_after


async def test_implied_ack_after_the_deadline_is_late(db: Database, actors: Actors) -> None:
    deadline = T0 + dt.timedelta(minutes=30)
    for op in ("phone_ack", "report_progress", "record_outcome"):
        nid = await notice_for_p001(db, deadline=deadline)

        change = await run(db, OPS[op], nid, ASSIGNEE, NOW, actors[ASSIGNEE])

        assert (change.late, change.acknowledged_now) == (True, True), op
        await assert_stored(
            db, nid, op, late=True, acknowledged_at=NOW, ack_channel=ACK_CHANNEL[op]
        )


async def test_late_flag_is_kept_from_the_first_ack(db: Database, actors: Actors) -> None:
    deadline = T0 + dt.timedelta(minutes=30)
    nid = await notice_for_p001(db, deadline=deadline)
    await run(db, _ack, nid, ASSIGNEE, PATH_AT, actors[ASSIGNEE])

    change = await run(db, _outcome, nid, ASSIGNEE, NOW, actors[ASSIGNEE])

    assert change.late is False
    await assert_stored(
        db, nid, late=False, acknowledged_at=PATH_AT, ack_channel=Channel.BUTTON, done_at=NOW
    )


async def test_progress_from_pending_implies_the_ack(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db, requires=Requires.PROGRESS)

    change = await run(db, _progress, nid, ASSIGNEE, NOW, actors[ASSIGNEE])

    assert (change.before, change.after, change.acknowledged_now) == (
        S.PENDING,
        S.IN_PROGRESS,
        True,
    )
    row = await stored(db, nid)
    assert row["acknowledged_at"] == row["started_at"] == row["progress_at"] == NOW
    assert (row["ack_channel"], row["progress_percent"], row["progress_text"]) == (
        Channel.DM,
        50,
        "已完成一半",
    )
    assert row["outstanding"] is False
    assert [r.kind for r in await replies(db, nid)] == [ReplyKind.PROGRESS]
    assert (await audit_tail(db))[-1].data["implied_ack"] is True


async def test_done_without_ack_implies_the_ack(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)

    change = await run(db, _outcome, nid, ASSIGNEE, NOW, actors[ASSIGNEE])

    assert (change.before, change.after, change.acknowledged_now) == (S.PENDING, S.DONE, True)
    row = await stored(db, nid)
    assert row["acknowledged_at"] == row["started_at"] == row["done_at"] == NOW
    assert row["ack_channel"] is Channel.GROUP
    assert [r.kind for r in await replies(db, nid)] == [ReplyKind.OUTCOME]
    assert (await audit_tail(db))[-1].data["implied_ack"] is True


async def test_ack_after_an_excuse_keeps_the_first_ack(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    await run(db, _ack, nid, ASSIGNEE, PATH_AT, actors[ASSIGNEE])
    await run(db, _excuse, nid, ASSIGNEE, PATH_AT, actors[ASSIGNEE])

    change = await run(db, _phone, nid, ASSIGNEE, NOW, actors[ASSIGNEE])

    assert (change.before, change.after) == (S.EXCUSED, S.ACKNOWLEDGED)
    assert change.acknowledged_now is False
    await assert_stored(
        db, nid, state=S.ACKNOWLEDGED, acknowledged_at=PATH_AT, ack_channel=Channel.BUTTON
    )


async def test_office_can_ack_for_someone_and_staff_cannot(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)

    error = await refused(
        db,
        lambda s: acknowledge(
            s, nid, ASSIGNEE, channel=Channel.GROUP, actor=actors["p004"], now=NOW
        ),
        errors.NotAllowed,
    )
    assert error.params["action"] == "acknowledge"
    await refused(
        db,
        lambda s: phone_ack(s, nid, ASSIGNEE, actor=actors[ASSIGNEE], now=NOW),
        errors.NotAllowed,
    )

    change = await run(db, _phone, nid, ASSIGNEE, NOW, actors["p003"])
    assert change.after is S.ACKNOWLEDGED
    [reply] = await replies(db, nid)
    assert (reply.channel, reply.text, reply.actor) == (Channel.PHONE, "电话确认", "cli")


# --- results, excuses, returns and verification --------------------------------------------


async def test_done_on_outcome_notice_needs_results(db: Database, actors: Actors) -> None:
    for before in _WORKING:
        nid = await notice_for_p001(db, requires=Requires.OUTCOME)
        await bring_to(db, actors, nid, before)

        error = await refused(
            db,
            as_call(_outcome_no_results, nid, ASSIGNEE, actors[ASSIGNEE]),
            errors.MissingResults,
        )
        assert error.params["notice_id"] == nid, before


async def test_done_without_results_is_fine_when_no_outcome_is_required(
    db: Database, actors: Actors
) -> None:
    for requires in (Requires.ACK, Requires.PROGRESS):
        nid = await notice_for_p001(db, requires=requires)

        change = await run(db, _outcome_no_results, nid, ASSIGNEE, NOW, actors[ASSIGNEE])

        assert change.after is S.DONE, requires
        [outcome] = await outcomes(db, nid)
        assert (outcome.measures, outcome.results, outcome.metrics) == (["精简会议"], "", [])


async def test_excuse_by_office_or_own_head(db: Database, actors: Actors) -> None:
    for excuser in (CLI, actors["p003"], actors["p002"]):
        nid = await notice_for_p001(db)

        async with db.transaction() as s:
            change = await excuse(s, nid, ASSIGNEE, reason="  出差  ", actor=excuser, now=NOW)

        assert (change.before, change.after) == (S.PENDING, S.EXCUSED), excuser
        await assert_stored(
            db,
            nid,
            excuser,
            state=S.EXCUSED,
            excused_at=NOW,
            excuse_reason="出差",
            outstanding=False,
        )
        event = (await audit_tail(db))[-1]
        assert (event.action, event.actor, event.data["reason"]) == (
            "assignment.excuse",
            excuser.id,
            "出差",
        )


async def test_excuse_refused_for_other_head_and_staff(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    # p005 heads another department; p004 is staff elsewhere; p001 is the assignee (staff).
    for who in ("p005", "p004", "p001"):
        error = await refused(
            db,
            partial(
                excuse, notice_id=nid, person_id=ASSIGNEE, reason="病假", actor=actors[who], now=NOW
            ),
            errors.NotAllowed,
        )
        assert error.params["action"] == "excuse", who


async def test_excuse_needs_a_reason(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)

    error = await refused(
        db, lambda s: excuse(s, nid, ASSIGNEE, reason="  ", actor=CLI, now=NOW), errors.InvalidValue
    )
    assert error.params["field"] == "reason"


async def test_office_only_operations_refuse_staff_and_heads(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    await bring_to(db, actors, nid, S.DONE)
    calls: dict[str, Callable[[Actor], Callable[[AsyncSession], Awaitable[Any]]]] = {
        "return": lambda a: (
            lambda s: return_assignment(s, nid, ASSIGNEE, reason="x", actor=a, now=NOW)
        ),
        "verify": lambda a: lambda s: verify(s, nid, ASSIGNEE, actor=a, now=NOW),
        "phone_ack": lambda a: lambda s: phone_ack(s, nid, ASSIGNEE, actor=a, now=NOW),
    }
    for action, call in calls.items():
        for who in ("p001", "p002", "p005"):
            error = await refused(db, call(actors[who]), errors.NotAllowed)
            assert error.params == {"action": action, "needs": "office"}, who


async def test_return_then_rework(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    await bring_to(db, actors, nid, S.RETURNED)
    await assert_stored(
        db, nid, done_at=None, returned_at=PATH_AT, return_reason="缺少数据", outstanding=True
    )

    await run(db, _progress, nid, ASSIGNEE, NOW, actors[ASSIGNEE])
    assert (await stored(db, nid))["state"] is S.IN_PROGRESS
    later = NOW + dt.timedelta(hours=1)
    await run(db, _outcome, nid, ASSIGNEE, later, actors[ASSIGNEE])
    await run(db, _verify, nid, ASSIGNEE, later, actors[ASSIGNEE])

    await assert_stored(
        db, nid, state=S.VERIFIED, done_at=later, verified_at=later, outstanding=False
    )
    assert len(await outcomes(db, nid)) == 2


async def test_progress_percent_out_of_range(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    for percent in (-1, 101):
        error = await refused(
            db,
            partial(
                report_progress,
                notice_id=nid,
                person_id=ASSIGNEE,
                text="x",
                percent=percent,
                channel=Channel.DM,
                actor=actors[ASSIGNEE],
                now=NOW,
            ),
            errors.InvalidValue,
        )
        assert error.params["field"] == "percent"


# --- closed and cancelled notices, strangers, unknown notices -------------------------------


@pytest.mark.parametrize("finish", ["close", "cancel"])
async def test_closing_a_notice_stops_everything(db: Database, actors: Actors, finish: str) -> None:
    nid = await make_notice(db, T0, requires=Requires.PROGRESS)
    await run(db, _ack, nid, "p002", PATH_AT, actors["p002"])
    await run(db, _progress, nid, "p004", PATH_AT, actors["p004"])
    finisher = close_notice if finish == "close" else cancel_notice

    async with db.transaction() as s:
        notice = await finisher(s, nid, actor=CLI, now=NOW, reason="已办结")

    expected_state = NoticeState.CLOSED if finish == "close" else NoticeState.CANCELLED
    assert notice.state is expected_state
    async with db.read() as s:
        stored_notice = await s.get(Notice, nid)
        assert stored_notice is not None
        assert (stored_notice.state, stored_notice.closed_at) == (expected_state, NOW)
        flags = (
            await s.scalars(select(Assignment.outstanding).where(Assignment.notice_id == nid))
        ).all()
    assert flags == [False] * len(PEOPLE)
    event = (await audit_tail(db))[-1]
    assert (event.action, event.entity_id, event.data["to"], event.data["reason"]) == (
        f"notice.{finish}",
        str(nid),
        expected_state.value,
        "已办结",
    )

    for name, op in OPS.items():
        error = await refused(db, as_call(op, nid, ASSIGNEE, actors[ASSIGNEE]), errors.NoticeClosed)
        assert error.params["state"] == expected_state.value, name
    for again in (close_notice, cancel_notice):
        await refused(db, partial(again, notice_id=nid, actor=CLI, now=NOW), errors.NoticeClosed)


async def test_only_the_office_closes_or_cancels(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    for who in ("p001", "p002"):
        for finisher in (close_notice, cancel_notice):
            await refused(
                db,
                partial(finisher, notice_id=nid, actor=actors[who], now=NOW),
                errors.NotAllowed,
            )
    async with db.transaction() as s:
        notice = await close_notice(s, nid, actor=actors["p003"], now=NOW)
    assert notice.state is NoticeState.CLOSED


async def test_strangers_and_unknown_notices_are_refused(db: Database, actors: Actors) -> None:
    nid = await notice_for_p001(db)
    for name, op in OPS.items():
        # p004 exists but is not an assignee of this notice.
        error = await refused(db, as_call(op, nid, "p004", actors["p004"]), errors.NotAssignee)
        assert error.params == {"notice_id": nid, "person_id": "p004"}, name
        # p999 is not in the directory at all.
        error = await refused(db, as_call(op, nid, "p999", CLI), errors.UnknownPerson)
        assert error.params == {"person_ids": "p999"}, name
        error = await refused(
            db, as_call(op, 9999, ASSIGNEE, actors[ASSIGNEE]), errors.UnknownNotice
        )
        assert error.params == {"notice_id": 9999}, name
    for finisher in (close_notice, cancel_notice):
        await refused(
            db, partial(finisher, notice_id=4242, actor=CLI, now=NOW), errors.UnknownNotice
        )


# --- creating notices and resolving audiences -----------------------------------------------


def draft(audience: Audience, **fields: Any) -> NoticeDraft:
    """A notice draft with the given audience."""
    return NoticeDraft(title="关于开展作风建设自查的通知", audience=audience, **fields)


async def test_create_notice_stores_the_notice_and_pending_assignments(
    db: Database, actors: Actors
) -> None:
    deadline = T0 + dt.timedelta(days=3)
    async with db.transaction() as s:
        notice = await create_notice(
            s,
            draft(
                Audience(departments=("督导科",)),
                body="  正文  ",
                requires=Requires.PROGRESS,
                deadline=deadline,
                doc_number="宜教办发[2019]41号",
            ),
            actor=actors["p003"],
            now=T0,
        )
        nid = notice.id

    async with db.read() as s:
        n = await s.get(Notice, nid)
        assert n is not None
        assert (n.state, n.requires, n.deadline, n.created_at, n.created_by, n.body) == (
            NoticeState.OPEN,
            Requires.PROGRESS,
            deadline,
            T0,
            "p003",
            "正文",
        )
        assert (n.issuer_person_id, n.doc_number) == ("p003", "宜教办发[2019]41号")
        rows = (
            await s.scalars(
                select(Assignment).where(Assignment.notice_id == nid).order_by(Assignment.person_id)
            )
        ).all()
    assert [(a.person_id, a.state, a.outstanding, a.late, a.acknowledged_at) for a in rows] == [
        ("p004", S.PENDING, True, False, None),
        ("p005", S.PENDING, True, False, None),
    ]
    event = (await audit_tail(db))[-1]
    assert (event.action, event.entity, event.entity_id) == ("notice.create", "notice", str(nid))
    assert event.data["assignees"] == ["p004", "p005"]


AUDIENCES = [
    (Audience(all=True), list(PEOPLE)),
    (Audience(departments=("基础教育科",)), ["p001", "p002"]),
    (Audience(departments=("督导科", "办公室")), ["p003", "p004", "p005"]),
    (Audience(people=("p004",)), ["p004"]),
    (Audience(departments=("基础教育科",), people=("p005",)), ["p001", "p002", "p005"]),
    (Audience(departments=("基础教育科",), people=("p001",)), ["p001", "p002"]),
    (Audience(all=True, people=("p003",)), list(PEOPLE)),
]


async def test_audiences_resolve_to_the_right_assignees(db: Database, actors: Actors) -> None:
    for audience, expected in AUDIENCES:
        async with db.read() as s:
            assert await resolve_audience(s, audience) == expected, audience
        nid = await make_notice(db, T0, audience=audience)
        async with db.read() as s:
            assert await assignees(s, nid) == expected, audience


BAD_AUDIENCES: list[tuple[Audience, type[errors.DomainError], dict[str, str]]] = [
    (Audience(), errors.AudienceEmpty, {}),
    (Audience(departments=("教研室",)), errors.UnknownDepartment, {"departments": "教研室"}),
    (
        Audience(departments=("督导科", "教研室", "人事科")),
        errors.UnknownDepartment,
        {"departments": "人事科, 教研室"},
    ),
    (Audience(people=("p001", "p404")), errors.UnknownPerson, {"person_ids": "p404"}),
    (Audience(all=True, people=("p404",)), errors.UnknownPerson, {"person_ids": "p404"}),
]


async def test_create_notice_refuses_a_bad_audience(db: Database, actors: Actors) -> None:
    for audience, error, params in BAD_AUDIENCES:
        exc = await refused(
            db, partial(create_notice, draft=draft(audience), actor=CLI, now=T0), error
        )
        assert exc.params == params, audience


async def test_all_in_an_empty_directory_is_an_empty_audience(db: Database) -> None:
    await refused(
        db,
        lambda s: create_notice(s, draft(Audience(all=True)), actor=CLI, now=T0),
        errors.AudienceEmpty,
    )


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"deadline": T0 - dt.timedelta(minutes=1)}, "deadline"),
    ({"deadline": T0}, "deadline"),
    ({"deadline": dt.datetime(2019, 12, 9, 17, 0)}, "deadline"),  # naive
    ({"deadline": T0 + dt.timedelta(days=3654)}, "deadline"),  # more than 10 years away
    ({"deadline": dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)}, "deadline"),
    ({"title": "   "}, "title"),
    ({"title": "长" * 501}, "title"),
]


async def test_create_notice_refuses_bad_fields(db: Database, actors: Actors) -> None:
    for fields, field in BAD_FIELDS:
        values: dict[str, Any] = {"title": "关于开展作风建设自查的通知", **fields}
        bad = NoticeDraft(audience=Audience(all=True), **values)

        exc = await refused(
            db, partial(create_notice, draft=bad, actor=CLI, now=T0), errors.InvalidValue
        )

        assert exc.params["field"] == field, fields


async def test_create_notice_needs_the_office_role(db: Database, actors: Actors) -> None:
    for who in ("p001", "p002", "p005"):
        exc = await refused(
            db,
            partial(create_notice, draft=draft(Audience(all=True)), actor=actors[who], now=T0),
            errors.NotAllowed,
        )
        assert exc.params == {"action": "create_notice", "needs": "office"}, who


async def test_an_admin_may_do_what_the_office_does(db: Database, actors: Actors) -> None:
    admin = Actor(id="root", roles=frozenset({Role.ADMIN}))
    async with db.transaction() as s:
        notice = await create_notice(s, draft(Audience(people=("p001",))), actor=admin, now=T0)
        await close_notice(s, notice.id, actor=admin, now=NOW)
    assert notice.created_by == "root"


# --- property: random operation sequences against a reference model -----------------------

# Closing ends a sequence's interesting part, so the assignment operations are drawn more often.
STEP_OPS = [*OPS, *OPS, "outcome_no_results", "close_notice", "cancel_notice"]


class AssignmentModel:
    """A small reference model of one assignment under one notice."""

    def __init__(self, row: dict[str, Any], requires: Requires, deadline: dt.datetime | None):
        self.row = dict(row)
        self.requires = requires
        self.deadline = deadline
        self.notice_state = NoticeState.OPEN
        self.replies = 0
        self.outcomes = 0
        self.audit = 0
        self.acknowledged_now = False

    def step(self, op: str, now: dt.datetime) -> type[errors.DomainError] | None:
        """Apply one operation to the model; return the error it must raise, if any."""
        self.acknowledged_now = False
        if self.notice_state is not NoticeState.OPEN:
            return errors.NoticeClosed
        if op in ("close_notice", "cancel_notice"):
            self.notice_state = (
                NoticeState.CLOSED if op == "close_notice" else NoticeState.CANCELLED
            )
            self.row["outstanding"] = False
            self.audit += 1
            return None
        name = "record_outcome" if op == "outcome_no_results" else op
        state = self.row["state"]
        if state in NO_OP.get(name, set()):
            return None
        if state not in ALLOWED[name]:
            return errors.InvalidTransition
        if op == "outcome_no_results" and self.requires is Requires.OUTCOME:
            return errors.MissingResults
        self.acknowledged_now = name in ACK_CHANNEL and self.row["acknowledged_at"] is None
        self.row = expected_row(
            name, self.row, now=now, deadline=self.deadline, requires=self.requires
        )
        self.replies += name in REPLY_KIND
        self.outcomes += name == "record_outcome"
        self.audit += 1
        return None


async def _perform(db: Database, op: str, nid: int, now: dt.datetime, me: Actor) -> Any:
    """Run one step; return its Change (None for close/cancel) or the domain error raised."""
    try:
        async with db.transaction() as s:
            if op == "close_notice":
                await close_notice(s, nid, actor=CLI, now=now)
                return None
            if op == "cancel_notice":
                await cancel_notice(s, nid, actor=CLI, now=now)
                return None
            if op == "outcome_no_results":
                return await _outcome_no_results(s, nid, ASSIGNEE, now, me)
            return await OPS[op](s, nid, ASSIGNEE, now, me)
    except errors.DomainError as exc:
        return exc


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    requires=st.sampled_from(list(Requires)),
    deadline_minutes=st.none() | st.integers(min_value=1, max_value=60),
    steps=st.lists(st.sampled_from(STEP_OPS), min_size=1, max_size=12),
)
async def test_random_operation_sequences_follow_the_model(
    db: Database,
    actors: Actors,
    requires: Requires,
    deadline_minutes: int | None,
    steps: list[str],
) -> None:
    deadline = None if deadline_minutes is None else T0 + dt.timedelta(minutes=deadline_minutes)
    nid = await notice_for_p001(db, requires=requires, deadline=deadline)
    model = AssignmentModel(await stored(db, nid), requires, deadline)
    async with db.read() as s:
        audit_before = await s.scalar(select(func.count()).select_from(AuditEvent))
    assert audit_before is not None

    for i, op in enumerate(steps):
        now = T0 + dt.timedelta(minutes=7 * (i + 1))
        before = model.row["state"]
        expected_error = model.step(op, now)
        result = await _perform(db, op, nid, now, actors[ASSIGNEE])
        if expected_error is not None:
            assert type(result) is expected_error, (i, op, result)
        else:
            assert not isinstance(result, errors.DomainError), (i, op, result)
        if isinstance(result, Change):
            assert (result.before, result.after) == (before, model.row["state"]), (i, op)
            assert result.acknowledged_now is model.acknowledged_now, (i, op)
            if op in ACK_CHANNEL or op == "outcome_no_results":
                assert result.late is model.row["late"], (i, op)

        row = await stored(db, nid)
        assert row == model.row, (i, op)
        async with db.read() as s:
            notice = await s.get(Notice, nid)
            assert notice is not None
            audit_len = await s.scalar(select(func.count()).select_from(AuditEvent))
        assert notice.state is model.notice_state
        assert row["outstanding"] is types.is_outstanding(notice.state, requires, row["state"])
        assert len(await replies(db, nid)) == model.replies
        assert len(await outcomes(db, nid)) == model.outcomes
        assert audit_len == audit_before + model.audit
