"""Read queries: pending items per person and per notice, notice status and listings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from storage.db import Database
from storage.domain import (
    Audience,
    Metric,
    NoticeDraft,
    acknowledge,
    cancel_notice,
    close_notice,
    create_notice,
    excuse,
    record_outcome,
    report_progress,
    return_assignment,
    verify,
)
from storage.errors import UnknownNotice
from storage.models import Notice
from storage.queries import (
    AssigneeStatus,
    OfficeNotices,
    list_notices,
    list_people,
    office_open_notices,
    pending_for,
    pending_for_notice,
    status,
)
from storage.types import (
    AssignmentState,
    Channel,
    NoticeKind,
    NoticeSource,
    NoticeState,
    Requires,
)
from tests.conftest import T0
from tests.support import CLI, make_notice, seed_people

S = AssignmentState
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)

# ASCII names, so that the expected order does not depend on the database's collation.
ORDERING_CSV = b"""id,name,department,roles,wecom,telegram
z1,Carol,Audit,staff,carol,
b2,Alice,Audit,staff,,
b1,Alice,Audit,staff,alice,1001
a9,Alice,Zoning,staff;head,,
m5,Bob,Audit,office,,
"""
# ORDERING_CSV's people in the order listings give: department, then name, then id.
ORDERED = [
    ("Audit", "Alice", "b1"),
    ("Audit", "Alice", "b2"),
    ("Audit", "Bob", "m5"),
    ("Audit", "Carol", "z1"),
    ("Zoning", "Alice", "a9"),
]


async def _ack(db: Database, nid: int, pid: str, channel: Channel, now: dt.datetime) -> None:
    async with db.transaction() as s:
        await acknowledge(s, nid, pid, channel=channel, actor=CLI, now=now)


async def _progress(
    db: Database, nid: int, pid: str, now: dt.datetime, text: str = "进行中"
) -> None:
    async with db.transaction() as s:
        await report_progress(
            s, nid, pid, text=text, percent=40, channel=Channel.DM, actor=CLI, now=now
        )


async def _done(
    db: Database,
    nid: int,
    pid: str,
    now: dt.datetime,
    *,
    measures: tuple[str, ...] = ("压减会议", "合并报表"),
    results: str = "会议减少三成",
    metrics: tuple[Metric, ...] = (Metric("会议数量", -30, "%"),),
    channel: Channel = Channel.GROUP,
) -> None:
    async with db.transaction() as s:
        await record_outcome(
            s,
            nid,
            pid,
            measures=measures,
            results=results,
            metrics=metrics,
            channel=channel,
            actor=CLI,
            now=now,
        )


async def _excuse(db: Database, nid: int, pid: str, now: dt.datetime) -> None:
    async with db.transaction() as s:
        await excuse(s, nid, pid, reason="病假", actor=CLI, now=now)


async def _return(db: Database, nid: int, pid: str, now: dt.datetime) -> None:
    async with db.transaction() as s:
        await return_assignment(s, nid, pid, reason="缺数据", actor=CLI, now=now)


async def _verify(db: Database, nid: int, pid: str, now: dt.datetime) -> None:
    async with db.transaction() as s:
        await verify(s, nid, pid, actor=CLI, now=now)


async def _finish(db: Database, nid: int, *, cancel: bool = False) -> None:
    async with db.transaction() as s:
        if cancel:
            await cancel_notice(s, nid, actor=CLI, now=T0 + HOUR)
        else:
            await close_notice(s, nid, actor=CLI, now=T0 + HOUR)


async def _pending_ids(db: Database, pid: str, now: dt.datetime) -> list[int]:
    async with db.read() as s:
        return [item.notice_id for item in await pending_for(s, pid, now)]


# --- pending_for ---------------------------------------------------------------------------


async def test_pending_for_orders_by_deadline_then_newest_and_flags_overdue(db: Database) -> None:
    await seed_people(db, T0)
    a = await make_notice(db, T0, deadline=T0 + 3 * DAY, title="a")
    b = await make_notice(db, T0, deadline=T0 + DAY, title="b")
    c = await make_notice(db, T0, title="c")
    d = await make_notice(db, T0, title="d")
    e = await make_notice(db, T0, deadline=T0 + DAY, title="e")
    f = await make_notice(db, T0, deadline=T0 + 2 * DAY, requires=Requires.OUTCOME, title="f")

    async with db.read() as s:
        items = await pending_for(s, "p001", T0 + HOUR)
    assert [i.notice_id for i in items] == [e, b, f, a, d, c]
    assert [i.overdue for i in items] == [False] * 6
    item = items[2]
    assert (item.title, item.kind, item.requires, item.state) == (
        "f",
        NoticeKind.NOTICE,
        Requires.OUTCOME,
        S.PENDING,
    )
    assert (item.deadline, item.created_at) == (T0 + 2 * DAY, T0)

    async with db.read() as s:
        at_deadline = await pending_for(s, "p001", T0 + DAY)
        past = await pending_for(s, "p001", T0 + DAY + dt.timedelta(seconds=1))
        much_later = await pending_for(s, "p001", T0 + 30 * DAY)
    assert [i.overdue for i in at_deadline] == [False] * 6
    assert {i.notice_id for i in past if i.overdue} == {b, e}
    assert {i.notice_id for i in much_later if i.overdue} == {a, b, e, f}
    assert [i.notice_id for i in much_later] == [e, b, f, a, d, c]


async def test_pending_for_excludes_closed_and_cancelled_notices(db: Database) -> None:
    await seed_people(db, T0)
    kept = await make_notice(db, T0)
    closed = await make_notice(db, T0)
    cancelled = await make_notice(db, T0)
    await _finish(db, closed)
    await _finish(db, cancelled, cancel=True)

    for pid in ("p001", "p003", "p005"):
        assert await _pending_ids(db, pid, T0 + 2 * HOUR) == [kept], pid
    async with db.read() as s:
        assert await pending_for_notice(s, closed) == []
        assert await pending_for_notice(s, cancelled) == []
        assert len(await pending_for_notice(s, kept)) == 5


# What each `requires` still wants, per assignment state: the pending queries follow this.
OWED: dict[Requires, set[AssignmentState]] = {
    Requires.ACK: {S.PENDING},
    Requires.PROGRESS: {S.PENDING, S.ACKNOWLEDGED, S.RETURNED},
    Requires.OUTCOME: {S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED},
}


async def _drive(db: Database, nid: int, pid: str, state: AssignmentState) -> None:
    at = T0 + HOUR
    if state is S.ACKNOWLEDGED:
        await _ack(db, nid, pid, Channel.BUTTON, at)
    elif state is S.IN_PROGRESS:
        await _progress(db, nid, pid, at)
    elif state in (S.DONE, S.VERIFIED, S.RETURNED):
        await _done(db, nid, pid, at)
        if state is S.VERIFIED:
            await _verify(db, nid, pid, at)
        if state is S.RETURNED:
            await _return(db, nid, pid, at)
    elif state is S.EXCUSED:
        await _excuse(db, nid, pid, at)


async def test_pending_excludes_what_is_finished_per_requires(db: Database) -> None:
    await seed_people(db, T0)
    expected: dict[int, AssignmentState] = {}
    for requires, owed in OWED.items():
        for state in S:
            nid = await make_notice(
                db, T0, audience=Audience(people=("p001",)), requires=requires, deadline=T0 + DAY
            )
            await _drive(db, nid, "p001", state)
            if state in owed:
                expected[nid] = state

    async with db.read() as s:
        items = await pending_for(s, "p001", T0 + 2 * DAY)
    assert {i.notice_id: i.state for i in items} == expected
    assert all(i.overdue for i in items)
    for nid in range(1, len(OWED) * len(S) + 1):
        async with db.read() as s:
            owing = await pending_for_notice(s, nid)
        assert [(p.person_id, p.state) for p in owing] == (
            [("p001", expected[nid])] if nid in expected else []
        ), nid


# --- pending_for_notice ----------------------------------------------------------------------


async def test_pending_for_notice_lists_who_still_owes(db: Database) -> None:
    await seed_people(db, T0, ORDERING_CSV)
    nid = await make_notice(db, T0, requires=Requires.PROGRESS)

    async with db.read() as s:
        everyone = await pending_for_notice(s, nid)
    assert [(p.department, p.name, p.person_id) for p in everyone] == ORDERED

    await _ack(db, nid, "b1", Channel.REACTION, T0 + HOUR)
    await _progress(db, nid, "m5", T0 + HOUR)
    await _excuse(db, nid, "z1", T0 + HOUR)
    async with db.read() as s:
        owing = await pending_for_notice(s, nid)
    assert [(p.person_id, p.state) for p in owing] == [
        ("b1", S.ACKNOWLEDGED),
        ("b2", S.PENDING),
        ("a9", S.PENDING),
    ]


async def test_queries_on_an_unknown_notice(db: Database) -> None:
    await seed_people(db, T0)
    async with db.read() as s:
        with pytest.raises(UnknownNotice) as info:
            await pending_for_notice(s, 77)
        assert info.value.code == "unknown_notice"
        with pytest.raises(UnknownNotice):
            await status(s, 77, T0)
        assert await pending_for(s, "nobody", T0) == []


# --- status ----------------------------------------------------------------------------------


async def test_status_counts_and_per_assignee_details(db: Database) -> None:
    await seed_people(db, T0)
    deadline = T0 + DAY
    nid = await make_notice(db, T0, requires=Requires.OUTCOME, deadline=deadline)
    await _done(db, nid, "p001", T0 + HOUR)  # done without a separate ack
    await _progress(db, nid, "p002", T0 + 2 * HOUR)
    await _ack(db, nid, "p003", Channel.BUTTON, deadline + HOUR)  # a late ack
    await _excuse(db, nid, "p004", T0 + HOUR)
    # p005 does nothing.

    async with db.read() as s:
        before = await status(s, nid, T0 + 3 * HOUR)
        after = await status(s, nid, deadline + 2 * HOUR)

    assert (before.id, before.state, before.requires, before.deadline, before.source) == (
        nid,
        NoticeState.OPEN,
        Requires.OUTCOME,
        deadline,
        "cli",
    )
    assert before.counts == {
        "assigned": 5,
        "pending": 1,
        "acknowledged": 3,
        "in_progress": 1,
        "done": 1,
        "verified": 0,
        "excused": 1,
        "overdue": 0,
    }
    assert after.counts == {**before.counts, "overdue": 3}
    # Past the deadline, whoever still owes the outcome is overdue: p002, p003 and p005.
    assert after.counts["overdue"] == 3
    by_id = {a.person_id: a for a in after.assignees}
    assert {pid for pid, a in by_id.items() if a.overdue} == {"p002", "p003", "p005"}

    p1, p2, p3, p4, p5 = (by_id[p] for p in ("p001", "p002", "p003", "p004", "p005"))
    assert (p1.state, p1.channel, p1.acknowledged_at, p1.late) == (
        S.DONE,
        Channel.GROUP,
        T0 + HOUR,
        False,
    )
    assert p1.outcome is not None
    assert (p1.outcome.measures, p1.outcome.results, p1.outcome.reported_at) == (
        ["压减会议", "合并报表"],
        "会议减少三成",
        T0 + HOUR,
    )
    assert p1.outcome.metrics == [{"name": "会议数量", "value": -30, "unit": "%"}]
    assert (p2.state, p2.channel, p2.last_progress, p2.progress_percent, p2.outcome) == (
        S.IN_PROGRESS,
        Channel.DM,
        "进行中",
        40,
        None,
    )
    assert (p3.state, p3.channel, p3.acknowledged_at, p3.late) == (
        S.ACKNOWLEDGED,
        Channel.BUTTON,
        deadline + HOUR,
        True,
    )
    assert (p4.state, p4.excuse_reason, p4.channel, p4.overdue) == (S.EXCUSED, "病假", None, False)
    assert (p5.state, p5.channel, p5.acknowledged_at, p5.last_progress) == (
        S.PENDING,
        None,
        None,
        None,
    )
    assert (p1.name, p1.department) == ("张三", "基础教育科")


async def test_status_shows_the_latest_progress_and_outcome(db: Database) -> None:
    await seed_people(db, T0)
    nid = await make_notice(db, T0, audience=Audience(people=("p001",)), requires=Requires.OUTCOME)
    await _progress(db, nid, "p001", T0 + HOUR, text="第一次")
    await _progress(db, nid, "p001", T0 + 2 * HOUR, text="第二次")
    await _done(db, nid, "p001", T0 + 3 * HOUR)
    await _return(db, nid, "p001", T0 + 4 * HOUR)

    async with db.read() as s:
        returned = await status(s, nid, T0 + 5 * HOUR)
    [a] = returned.assignees
    assert (a.state, a.last_progress, a.outcome) == (S.RETURNED, "第二次", None)
    assert returned.counts["in_progress"] == 1
    assert returned.counts["done"] == 0

    await _done(db, nid, "p001", T0 + 6 * HOUR)
    await _verify(db, nid, "p001", T0 + 7 * HOUR)
    async with db.read() as s:
        verified = await status(s, nid, T0 + 8 * HOUR)
    [a] = verified.assignees
    assert a.state is S.VERIFIED
    assert a.outcome is not None
    assert a.outcome.reported_at == T0 + 6 * HOUR
    assert (verified.counts["done"], verified.counts["verified"]) == (1, 1)


async def test_status_lists_assignees_by_department_then_name_then_id(db: Database) -> None:
    await seed_people(db, T0, ORDERING_CSV)
    nid = await make_notice(db, T0, requires=Requires.PROGRESS)

    async with db.read() as s:
        doc = await status(s, nid, T0)
    assert [(a.department, a.name, a.person_id) for a in doc.assignees] == [
        ("Audit", "Alice", "b1"),
        ("Audit", "Alice", "b2"),
        ("Audit", "Bob", "m5"),
        ("Audit", "Carol", "z1"),
        ("Zoning", "Alice", "a9"),
    ]


async def test_status_orders_like_the_database_for_any_names(db: Database) -> None:
    # Chinese departments and names: the order is the database's ORDER BY (the collation's),
    # the same as pending_for_notice's while nobody has done anything.
    await seed_people(db, T0)
    nid = await make_notice(db, T0, requires=Requires.PROGRESS)

    async with db.read() as s:
        doc = await status(s, nid, T0)
        owing = await pending_for_notice(s, nid)
    assert [a.person_id for a in doc.assignees] == [p.person_id for p in owing]
    assert len(owing) == 5


async def _status_after_one_outcome(
    db: Database, metrics: tuple[Metric, ...], **fields: Any
) -> AssigneeStatus:
    """p001's line in the status document, after recording one outcome with these fields."""
    await seed_people(db, T0)
    nid = await make_notice(db, T0, audience=Audience(people=("p001",)), requires=Requires.OUTCOME)
    await _done(db, nid, "p001", T0 + HOUR, metrics=metrics, **fields)
    async with db.read() as s:
        doc = await status(s, nid, T0 + 2 * HOUR)
    [a] = doc.assignees
    return a


async def test_status_reads_an_outcome_back_as_it_was_recorded(db: Database) -> None:
    a = await _status_after_one_outcome(
        db,
        (Metric("比例", 12.5, "%"), Metric("整数", 11.0), Metric("负数", -3)),
        measures=('制定"一表通"', "back\\slash", "emoji 🎯"),
        results="成效：\n第一行\t第二行",
        channel=Channel.PORTAL,
    )
    assert a.outcome is not None
    assert a.outcome.measures == ['制定"一表通"', "back\\slash", "emoji 🎯"]
    assert a.outcome.results == "成效：\n第一行\t第二行"
    assert a.outcome.metrics == [
        {"name": "比例", "value": 12.5, "unit": "%"},
        {"name": "整数", "value": 11.0, "unit": ""},
        {"name": "负数", "value": -3, "unit": ""},
    ]
    assert [type(m["value"]) for m in a.outcome.metrics] == [float, float, int]
    assert a.outcome.reported_at == T0 + HOUR
    assert a.outcome.reported_at.tzinfo is dt.UTC
    assert a.acknowledged_at is not None and a.acknowledged_at.tzinfo is dt.UTC
    assert (a.channel, a.late, a.overdue) == (Channel.PORTAL, False, False)
    assert type(a.late) is bool


async def test_status_reads_non_finite_metrics_as_stored(db: Database) -> None:
    # The 成效 parser can make an infinite value out of a very long number. Python's json
    # stores it as Infinity, which PostgreSQL's json type refuses but SQLite keeps as text.
    if db.backend != "sqlite":
        pytest.skip("PostgreSQL refuses Infinity in a json column")
    a = await _status_after_one_outcome(
        db, (Metric("超大", float("inf"), "处"),), measures=("自查",)
    )
    assert a.outcome is not None
    assert a.outcome.measures == ["自查"]
    assert a.outcome.metrics == [{"name": "超大", "value": float("inf"), "unit": "处"}]


async def test_status_times_are_utc_whatever_the_session_time_zone(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("SQLite has no session time zone")
    await seed_people(db, T0)
    deadline = T0 + DAY
    nid = await make_notice(db, T0, requires=Requires.OUTCOME, deadline=deadline)
    await _done(db, nid, "p001", T0 + HOUR)
    await _ack(db, nid, "p002", Channel.BUTTON, T0 + 2 * HOUR)

    async with db.read() as s:
        in_utc = await status(s, nid, T0 + 3 * HOUR)
    async with db.read() as s:
        await s.execute(text("SET LOCAL TIME ZONE 'Asia/Shanghai'"))
        in_shanghai = await status(s, nid, T0 + 3 * HOUR)
    assert repr(in_shanghai) == repr(in_utc)
    by_id = {a.person_id: a for a in in_shanghai.assignees}
    assert by_id["p002"].acknowledged_at == T0 + 2 * HOUR
    assert by_id["p002"].acknowledged_at.tzinfo is dt.UTC
    outcome = by_id["p001"].outcome
    assert outcome is not None
    assert (outcome.reported_at, outcome.reported_at.tzinfo) == (T0 + HOUR, dt.UTC)


async def test_status_of_a_notice_without_assignees(db: Database) -> None:
    async with db.transaction() as s:
        notice = Notice(
            kind=NoticeKind.NOTICE,
            title="无人",
            source=NoticeSource.CLI,
            audience={"people": []},
            requires=Requires.ACK,
            state=NoticeState.OPEN,
            created_by="cli",
            created_at=T0,
        )
        s.add(notice)
        await s.flush()
        nid = notice.id

    async with db.read() as s:
        doc = await status(s, nid, T0)
    assert (doc.id, doc.title, doc.assignees) == (nid, "无人", [])
    assert set(doc.counts.values()) == {0}


@pytest.mark.parametrize(
    ("requires", "overdue"),
    [
        # p001 acknowledged, p002 reported progress, p003 finished, p004/p005 did nothing.
        (Requires.ACK, {"p004", "p005"}),
        (Requires.PROGRESS, {"p001", "p004", "p005"}),
        (Requires.OUTCOME, {"p001", "p002", "p004", "p005"}),
    ],
)
async def test_overdue_means_still_owing_what_the_notice_requires(
    db: Database, requires: Requires, overdue: set[str]
) -> None:
    await seed_people(db, T0)
    deadline = T0 + DAY
    nid = await make_notice(db, T0, requires=requires, deadline=deadline)
    await _ack(db, nid, "p001", Channel.GROUP, T0 + HOUR)
    await _progress(db, nid, "p002", T0 + HOUR)
    await _done(db, nid, "p003", T0 + HOUR)

    async with db.read() as s:
        doc = await status(s, nid, deadline + HOUR)
        items = {pid: await pending_for(s, pid, deadline + HOUR) for pid in ("p001", "p002")}
    assert {a.person_id for a in doc.assignees if a.overdue} == overdue
    assert doc.counts["overdue"] == len(overdue)
    for pid, pending in items.items():
        assert [i.overdue for i in pending] == ([True] if pid in overdue else []), pid

    await _finish(db, nid)
    async with db.read() as s:
        closed = await status(s, nid, deadline + HOUR)
    assert closed.state is NoticeState.CLOSED
    assert closed.counts["overdue"] == 0


# --- list_notices and list_people ------------------------------------------------------------


async def test_list_notices_newest_first_open_only_and_paged(db: Database) -> None:
    await seed_people(db, T0)
    async with db.read() as s:
        assert await list_notices(s) == []
    ids = [
        await make_notice(db, T0, title=f"#{i}", requires=Requires.PROGRESS) for i in range(1, 6)
    ]
    n1, n2, n3, n4, n5 = ids
    await _ack(db, n3, "p001", Channel.GROUP, T0 + HOUR)
    await _progress(db, n3, "p002", T0 + HOUR)
    await _done(db, n3, "p003", T0 + HOUR)
    await _finish(db, n2)
    await _finish(db, n4, cancel=True)

    async with db.read() as s:
        everything = await list_notices(s)
        open_only = await list_notices(s, open_only=True)
        page1 = await list_notices(s, limit=2)
        page2 = await list_notices(s, limit=2, before_id=page1[-1].id)
        page3 = await list_notices(s, limit=2, before_id=page2[-1].id)
        page4 = await list_notices(s, limit=2, before_id=page3[-1].id)
        open_page = await list_notices(s, open_only=True, limit=1, before_id=n5)

    assert [n.id for n in everything] == [n5, n4, n3, n2, n1]
    assert [n.state for n in everything] == [
        NoticeState.OPEN,
        NoticeState.CANCELLED,
        NoticeState.OPEN,
        NoticeState.CLOSED,
        NoticeState.OPEN,
    ]
    assert [n.id for n in open_only] == [n5, n3, n1]
    assert [[n.id for n in page] for page in (page1, page2, page3, page4)] == [
        [n5, n4],
        [n3, n2],
        [n1],
        [],
    ]
    assert [n.id for n in open_page] == [n3]
    tally = {n.id: (n.assigned, n.acknowledged, n.done, n.outstanding) for n in everything}
    assert tally == {
        n5: (5, 0, 0, 5),
        n4: (5, 0, 0, 0),
        n3: (5, 3, 1, 3),
        n2: (5, 0, 0, 0),
        n1: (5, 0, 0, 5),
    }
    listed = everything[2]
    assert (listed.title, listed.requires, listed.kind, listed.created_at) == (
        "#3",
        Requires.PROGRESS,
        NoticeKind.NOTICE,
        T0,
    )


async def test_list_people_by_department_then_name(db: Database) -> None:
    await seed_people(db, T0, ORDERING_CSV)

    async with db.read() as s:
        people = await list_people(s)

    assert [(p.department, p.name, p.id) for p in people] == ORDERED
    by_id = {p.id: p for p in people}
    assert by_id["b1"].platform_ids == {"wecom": "alice", "telegram": "1001"}
    assert by_id["b2"].platform_ids == {}
    assert by_id["a9"].roles == ["staff", "head"]


# --- office_open_notices ---------------------------------------------------------------------


async def test_office_open_notices_are_the_offices_open_ones_most_urgent_first(
    db: Database,
) -> None:
    await seed_people(db, T0)
    async with db.read() as s:
        assert await office_open_notices(s, limit=10) == OfficeNotices([], 0)
    later = await make_notice(db, T0, title="later", deadline=T0 + 3 * DAY)
    undated = await make_notice(db, T0, title="undated", requires=Requires.OUTCOME)
    soon = await make_notice(db, T0, title="soon", deadline=T0 + DAY, requires=Requires.OUTCOME)
    closed = await make_notice(db, T0, title="closed", deadline=T0 + HOUR)
    await _finish(db, closed)
    async with db.transaction() as s:  # the portal's notice is not the office's
        await create_notice(
            s,
            NoticeDraft(
                title="portal",
                audience=Audience(all=True),
                deadline=T0 + HOUR,
                source=NoticeSource.EGOV,
                external_id="x-1",
            ),
            actor=CLI,
            now=T0,
        )
    await _ack(db, soon, "p001", Channel.GROUP, T0 + HOUR)
    await _ack(db, soon, "p002", Channel.BUTTON, T0 + HOUR)
    await _done(db, soon, "p002", T0 + HOUR)

    async with db.read() as s:
        everything = await office_open_notices(s, limit=10)
        first_two = await office_open_notices(s, limit=2)
    assert [n.id for n in everything.notices] == [soon, later, undated]
    assert everything.total == 3
    first = everything.notices[0]
    assert (first.title, first.assigned, first.acknowledged, first.done) == ("soon", 5, 2, 1)
    assert first.outstanding == 4
    assert [(n.assigned, n.acknowledged, n.done) for n in everything.notices[1:]] == [
        (5, 0, 0),
        (5, 0, 0),
    ]
    assert [n.id for n in first_two.notices] == [soon, later]
    assert first_two.total == 3
