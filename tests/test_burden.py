"""Burden figures (docs/cli.md, "burden"): checked against values computed by hand.

The dataset (bot.timezone Asia/Shanghai; period 2019-12-02 .. 2019-12-15, i.e. two weeks;
min_lead_time 1 day; "now" 2019-12-20 09:00):

| notice | issuer | 文号 | kind / requires | created | deadline (lead) | audience |
|---|---|---|---|---|---|---|
| N1 | 办公室 | yes | notice / ack | 12-02 09:00 | 12-03 09:00 (exactly 1d: not short) | all 5 |
| N2 | 办公室 | no | task / outcome | 12-02 10:00 | 12-03 09:59:59 (1d - 1s: short) | p001 p002 |
| N3 | 督导科 | no | inspection, no plan / progress | 12-03 09:00 | 12-10 17:30 | p004 p005 |
| N4 | 督导科 | yes | inspection with plan / ack | 12-04 09:00 | none | p001 |
| N5 | "" | "" | notice / ack, cancelled 12-06 | 12-05 14:00 | 12-07 10:00 (1d20h) | all 5 |
| N8 | None | yes | data_request / ack | 12-06 09:00 | none | p003 |
| N6 | 办公室 | no | before the period (11-30) | | | all 5 |
| N7 | 督导科 | no | created exactly at the end (12-16 00:00): outside | | | p004 |
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.cli import main
from bot.core.burden_format import BadPeriod, period, width
from storage import inbound, outbox
from storage.burden import (
    AckLatency,
    BurdenReport,
    Demands,
    FeedbackCounts,
    Figures,
    LeadTimes,
    burden,
    median,
    p90,
    snapshot_burden,
)
from storage.db import Database
from storage.domain import (
    Audience,
    NoticeDraft,
    acknowledge,
    cancel_notice,
    create_notice,
    excuse,
    feedback,
    record_outcome,
    report_progress,
)
from storage.types import Channel, FeedbackKind, InboundStatus, NoticeKind, Requires
from tests.support import CLI, seed_people

TZ = ZoneInfo("Asia/Shanghai")
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
SECOND = dt.timedelta(seconds=1)
SINCE = dt.datetime(2019, 12, 2, tzinfo=TZ)
UNTIL = dt.datetime(2019, 12, 16, tzinfo=TZ)
NOW = dt.datetime(2019, 12, 20, 9, 0, tzinfo=TZ)
ALL = Audience(all=True)


def at(day: int, hour: int = 9, minute: int = 0, month: int = 12) -> dt.datetime:
    """A time in December 2019 (or another month), Asia/Shanghai."""
    return dt.datetime(2019, month, day, hour, minute, tzinfo=TZ)


async def notice(
    db: Database,
    created: dt.datetime,
    *,
    dept: str | None,
    audience: Audience = ALL,
    doc: str | None = None,
    kind: NoticeKind = NoticeKind.NOTICE,
    requires: Requires = Requires.ACK,
    deadline: dt.datetime | None = None,
    plan: str | None = None,
) -> int:
    draft = NoticeDraft(
        title=f"通知 {created:%m-%d %H:%M}",
        audience=audience,
        kind=kind,
        requires=requires,
        deadline=deadline,
        doc_number=doc,
        plan_ref=plan,
        issuer_department=dept,
    )
    async with db.transaction() as s:
        return (await create_notice(s, draft, actor=CLI, now=created)).id


async def ack(db: Database, nid: int, pid: str, when: dt.datetime) -> None:
    async with db.transaction() as s:
        await acknowledge(s, nid, pid, channel=Channel.GROUP, actor=CLI, now=when)


async def say(db: Database, nid: int, pid: str, kind: FeedbackKind, when: dt.datetime) -> None:
    async with db.transaction() as s:
        await feedback(s, nid, pid, kind=kind, text="…", channel=Channel.DM, actor=CLI, now=when)


async def remind(
    db: Database, nid: int, pid: str, when: dt.datetime, purpose: str = "reminder"
) -> None:
    async with db.transaction() as s:
        await outbox.add(
            s,
            target=outbox.Target("local", "person", pid),
            payload={"text": "提醒"},
            idempotency_key=f"{purpose}:{nid}:{pid}:{when.isoformat()}",
            now=when,
            purpose=purpose,
            notice_id=nid,
            person_id=pid,
        )


async def attempt(db: Database, event_id: str, when: dt.datetime, note: str) -> None:
    async with db.transaction() as s:
        await inbound.record(s, source="local", event_id=event_id, payload={}, now=when)
        await inbound.finish(
            s, "local", event_id, status=InboundStatus.IGNORED, now=when, note=note
        )


async def seed(db: Database) -> None:
    await seed_people(db, at(1, month=11))
    n6 = await notice(db, at(30, month=11), dept="办公室", deadline=at(20, 17, 30))
    n1 = await notice(db, at(2), dept="办公室", doc="宜教办发[2019]41号", deadline=at(3))
    n2 = await notice(
        db, at(2, 10), dept="办公室", kind=NoticeKind.TASK, requires=Requires.OUTCOME,
        audience=Audience(departments=("基础教育科",)), deadline=at(3, 10) - SECOND,
    )  # fmt: skip
    n3 = await notice(
        db, at(3), dept="督导科", kind=NoticeKind.INSPECTION, requires=Requires.PROGRESS,
        audience=Audience(departments=("督导科",)), deadline=at(10, 17, 30),
    )  # fmt: skip
    await notice(
        db, at(4), dept="督导科", kind=NoticeKind.INSPECTION, doc="宜教督[2019]5号",
        plan="2019年督查检查计划第3项", audience=Audience(people=("p001",)),
    )  # fmt: skip
    n5 = await notice(db, at(5, 14), dept="", doc="", deadline=at(7, 10))
    await notice(
        db, at(6), dept=None, kind=NoticeKind.DATA_REQUEST, doc="宜教发[2019]9号",
        audience=Audience(people=("p003",)),
    )  # fmt: skip
    n7 = await notice(db, UNTIL, dept="督导科", audience=Audience(people=("p004",)))

    # N1: three acks (30 min, 2.5 h, 25 h), one excused, p005 never answers (overdue).
    await ack(db, n1, "p001", at(2, 9, 30))
    await ack(db, n1, "p002", at(2, 11, 30))
    await ack(db, n1, "p003", at(3, 10))
    async with db.transaction() as s:
        await excuse(s, n1, "p004", reason="病假", actor=CLI, now=at(2, 12))
    # N2: p001 done after 4 h; p002 only reports progress after 2 h (overdue: owes an outcome).
    async with db.transaction() as s:
        await record_outcome(
            s, n2, "p001", measures=["精简发文"], results="发文减少30%",
            channel=Channel.GROUP, actor=CLI, now=at(2, 14),
        )  # fmt: skip
        await report_progress(
            s, n2, "p002", text="进行中", percent=50, channel=Channel.DM, actor=CLI, now=at(2, 12)
        )
    # N3 (requires progress): p004 reports after 1 h (complete), p005 only acks after 3 h.
    async with db.transaction() as s:
        await report_progress(
            s, n3, "p004", text="已部署", percent=20, channel=Channel.DM, actor=CLI, now=at(3, 10)
        )
    await ack(db, n3, "p005", at(3, 12))
    # N5: p003 acks after 10 min, p001 gives feedback, then the notice is cancelled.
    await ack(db, n5, "p003", at(5, 14, 10))
    await say(db, n5, "p001", FeedbackKind.OTHER, at(5, 15))
    async with db.transaction() as s:
        await cancel_notice(s, n5, actor=CLI, now=at(6))
    # N6 (issued before the period): an ack in the period does not count.
    await ack(db, n6, "p001", at(2, 10))

    # Feedback given in the period, credited to the issuer of the notice concerned.
    await say(db, n2, "p002", FeedbackKind.DEADLINE, at(2, 12))
    await say(db, n2, "p001", FeedbackKind.DUPLICATE, at(2, 13))
    await say(db, n6, "p004", FeedbackKind.DUPLICATE, at(2, 11))  # N6 is 办公室's
    await say(db, n3, "p005", FeedbackKind.UNCLEAR, at(3, 12))
    await say(db, n1, "p001", FeedbackKind.DEADLINE, UNTIL)  # outside the period

    # Reminders created in the period: p005 four times (three for 办公室), p002 once.
    await remind(db, n1, "p005", at(2, 17))
    await remind(db, n1, "p005", at(3, 9, 30))
    await remind(db, n2, "p002", at(2, 16))
    await remind(db, n6, "p005", at(2, 9, 30))
    await remind(db, n3, "p005", UNTIL - SECOND)
    await remind(db, n1, "p005", SINCE - MINUTE)  # before
    await remind(db, n3, "p005", UNTIL)  # after
    await remind(db, n7, "p004", at(9), purpose="message")  # not a reminder

    await attempt(db, "u1", at(2, 10), "unbound_chat")
    await attempt(db, "u2", at(10), "unbound_chat")
    await attempt(db, "u3", UNTIL, "unbound_chat")  # after
    await attempt(db, "u4", at(3), "chatter")  # another note


async def compute(db: Database) -> BurdenReport:
    async with db.read() as s:
        return await burden(s, since=SINCE, until=UNTIL, now=NOW, min_lead_time=DAY, tz=TZ)


# The hand-computed figures, one column per scope: overall, 办公室, 督导科 and the unspecified
# department (""). Comments explain the overall figure unless they say otherwise.
SCOPES = ("overall", "办公室", "督导科", "")
EXPECTED_COLUMNS: dict[str, tuple[Any, Any, Any, Any]] = {
    "notices": (6, 2, 2, 2),
    "without_doc_number": (3, 1, 1, 1),  # N2, N3, N5 ("" counts as none)
    "short_lead_time": (1, 1, 0, 0),  # N2 only: N1's lead is exactly min_lead_time
    "next_day_deadline": (2, 2, 0, 0),  # N1, N2
    "lead_times": (
        LeadTimes(under_1d=1, from_1d_to_3d=2, from_3d_to_7d=0, from_7d=1, no_deadline=2),
        LeadTimes(under_1d=1, from_1d_to_3d=1),
        LeadTimes(from_7d=1, no_deadline=1),
        LeadTimes(from_1d_to_3d=1, no_deadline=1),
    ),
    "inspections_without_plan": (1, 0, 1, 0),  # N3
    "assignments": (16, 7, 3, 6),  # 5 + 2 + 2 + 1 + 5 + 1
    "excused": (1, 1, 0, 0),
    # overall: 16 - 1 excused - 5 of the cancelled N5; unspecified: N8's p003 (N5 cancelled)
    "eligible": (10, 6, 3, 1),
    "completed": (5, 4, 1, 0),  # N1: 3 acks; N2: p001 done; N3: p004 in progress
    # N1 p005 pending, N2 p002 in progress, N3 p005 only acknowledged
    "overdue": (3, 2, 1, 0),
    "ack_latency": (
        # 600, 1800, 3600, 7200, 9000, 10800, 14400, 90000
        AckLatency(count=8, median=8100.0, p90=90000.0),
        AckLatency(count=5, median=9000.0, p90=90000.0),
        AckLatency(count=2, median=7200.0, p90=10800.0),
        AckLatency(count=1, median=600.0, p90=600.0),
    ),
    "demands_per_person": (
        # p001 4, p002 3, p003 3, p004 3, p005 3 over two weeks
        Demands(people=5, mean=1.6, max=2.0),
        # p001 2, p002 2, p003 1, p004 1, p005 1
        Demands(people=5, mean=0.7, max=1.0),
        Demands(people=3, mean=0.5, max=0.5),
        # p003 2, everyone else 1
        Demands(people=5, mean=0.6, max=1.0),
    ),
    # 办公室: three for N1 and N2, one for N6 (issued before the period)
    "reminders_sent": (5, 4, 1, 0),
    "reminders_max_per_person": (4, 3, 1, 0),
    "feedback": (
        FeedbackCounts(deadline=1, duplicate=2, unclear=1, other=1),
        FeedbackCounts(deadline=1, duplicate=2),
        FeedbackCounts(unclear=1),
        FeedbackCounts(other=1),
    ),
}
EXPECTED = {
    scope: Figures(**{name: column[i] for name, column in EXPECTED_COLUMNS.items()})
    for i, scope in enumerate(SCOPES)
}


def assert_figures(actual: Figures, expected: Figures) -> None:
    demands, wanted = actual.demands_per_person, expected.demands_per_person
    assert demands.people == wanted.people
    assert demands.mean == pytest.approx(wanted.mean)
    assert demands.max == pytest.approx(wanted.max)
    assert actual == Figures(**{**vars(expected), "demands_per_person": demands})


async def test_figures_match_the_hand_computed_values(db: Database) -> None:
    await seed(db)
    report = await compute(db)
    assert report.weeks == 2.0
    assert report.unbound_group_attempts == 2
    assert_figures(report.overall, EXPECTED["overall"])
    assert report.overall.without_doc_number_share == 0.5
    assert report.overall.completion_rate == 0.5
    assert report.overall.overdue_rate == pytest.approx(0.3)
    # Most notices first, ties by name, the unspecified department ("" and None) last.
    assert list(report.by_department) == ["办公室", "督导科", ""]
    for department, figures in report.by_department.items():
        assert_figures(figures, EXPECTED[department])
    assert report.by_department["督导科"].without_doc_number_share == 0.5
    assert report.by_department[""].completion_rate == 0.0


async def test_departments_add_up_to_the_overall_figures(db: Database) -> None:
    await seed(db)
    report = await compute(db)
    additive = [
        "notices", "without_doc_number", "short_lead_time", "next_day_deadline",
        "inspections_without_plan", "assignments", "excused", "eligible", "completed",
        "overdue", "reminders_sent",
    ]  # fmt: skip
    for name in additive:
        total = sum(getattr(f, name) for f in report.by_department.values())
        assert total == getattr(report.overall, name), name
    acks = sum(f.ack_latency.count for f in report.by_department.values())
    assert acks == report.overall.ack_latency.count


async def test_the_lead_time_edge_and_the_calendar_day(db: Database) -> None:
    await seed_people(db, at(1))
    # 00:30 to 23:59 the same day: short and next-day; 1 day exactly: neither short nor,
    # from 20:00 to 20:00 two days later, next-day.
    await notice(db, at(2, 0, 30), dept="A", deadline=at(2, 23, 59))
    await notice(db, at(2, 20), dept="A", deadline=at(3, 20))
    await notice(db, at(2, 20), dept="A", deadline=at(4, 20))
    async with db.read() as s:
        short = await burden(s, since=SINCE, until=UNTIL, now=NOW, min_lead_time=DAY, tz=TZ)
        longer = await burden(
            s, since=SINCE, until=UNTIL, now=NOW, min_lead_time=DAY + SECOND, tz=TZ
        )
    assert (short.overall.short_lead_time, short.overall.next_day_deadline) == (1, 2)
    assert longer.overall.short_lead_time == 2
    # The calendar day is bot.timezone's: in UTC, 20:00 +08:00 is 12:00 the same day.
    async with db.read() as s:
        utc = await burden(s, since=SINCE, until=UNTIL, now=NOW, min_lead_time=DAY, tz=dt.UTC)
    assert utc.overall.next_day_deadline == 2


async def test_an_empty_period_has_null_shares_and_latencies(db: Database) -> None:
    await seed(db)
    since = dt.datetime(2020, 1, 1, tzinfo=TZ)
    report = await snapshot_burden(
        db, since=since, until=since + DAY, now=NOW, min_lead_time=DAY, tz=TZ
    )
    assert report.weeks == 1.0  # at least one week
    assert report.by_department == {}
    assert report.overall.notices == 0
    data = report.as_dict()
    assert data["without_doc_number_share"] is None
    assert data["completion_rate"] is None
    assert data["ack_latency"] == {"median": None, "p90": None, "count": 0}
    assert data["demands_per_person"] == {"mean": None, "max": None, "people": 0, "per_week": True}
    assert data["unbound_group_attempts"] == 0


async def test_naive_or_empty_periods_are_refused(db: Database) -> None:
    async with db.read() as s:
        with pytest.raises(ValueError, match="since must carry a timezone"):
            await burden(
                s, since=SINCE.replace(tzinfo=None), until=UNTIL, now=NOW, min_lead_time=DAY, tz=TZ
            )
        with pytest.raises(ValueError, match="until must be after since"):
            await burden(s, since=UNTIL, until=SINCE, now=NOW, min_lead_time=DAY, tz=TZ)


def test_median_and_nearest_rank_p90() -> None:
    assert median([]) is None and p90([]) is None
    assert median([5.0]) == 5.0 and p90([5.0]) == 5.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert p90([float(v) for v in range(1, 11)]) == 9.0  # rank ceil(0.9 * 10) = 9
    assert p90([float(v) for v in range(20, 0, -1)]) == 18.0  # rank 18 of 20
    assert p90([float(v) for v in range(1, 12)]) == 10.0  # rank ceil(9.9) = 10 of 11


# --- the command line ------------------------------------------------------------------------

Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def cli(db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[str], Run]:
    """Run `workbot` in-process against the test database, in a language."""

    def for_language(language: str) -> Run:
        config = tmp_path / f"{language}.toml"
        url = db.url.render_as_string(hide_password=False)
        config.write_text(f'[bot]\nlanguage = "{language}"\n[database]\nurl = "{url}"\n')

        async def run(*argv: str) -> tuple[int, str, str]:
            capsys.readouterr()
            # main() runs its own event loop (asyncio.run), so it gets a thread of its own.
            code = await asyncio.to_thread(main, ["-c", str(config), *argv], {})
            out, err = capsys.readouterr()
            return code, out, err

        return run

    return for_language


PERIOD = ("--since", "2019-12-02", "--until", "2019-12-15")


async def test_cli_json_carries_every_figure(db: Database, cli: Callable[[str], Run]) -> None:
    await seed(db)
    code, out, err = await cli("en")("burden", *PERIOD, "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["since"] == "2019-12-02T00:00:00+08:00"
    assert data["until"] == "2019-12-16T00:00:00+08:00"
    assert data["min_lead_time_seconds"] == 86400
    assert data["weeks"] == 2
    expected = {
        "notices": 6,
        "without_doc_number": 3,
        "without_doc_number_share": 0.5,
        "short_lead_time": 1,
        "next_day_deadline": 2,
        "lead_time": {
            "under_1d": 1, "1d_to_3d": 2, "3d_to_7d": 0, "7d_or_more": 1, "no_deadline": 2,
        },
        "inspections_without_plan": 1,
        "assignments": 16,
        "excused": 1,
        "eligible_assignments": 10,
        "completed": 5,
        "completion_rate": 0.5,
        "overdue": 3,  # the real "now" is later than every deadline, as NOW is
        "ack_latency": {"median": 8100, "p90": 90000, "count": 8},
        "reminders_sent": 5,
        "reminders_max_per_person": 4,
        "feedback": {"deadline": 1, "duplicate": 2, "unclear": 1, "other": 1},
        "unbound_group_attempts": 2,
    }  # fmt: skip
    assert {key: data[key] for key in expected} == expected
    assert data["overdue_rate"] == pytest.approx(0.3)
    assert data["demands_per_person"] == {
        "mean": pytest.approx(1.6), "max": 2.0, "people": 5, "per_week": True,
    }  # fmt: skip
    assert list(data["by_department"]) == ["办公室", "督导科", ""]
    office = data["by_department"]["办公室"]
    assert office["notices"] == 2 and office["reminders_max_per_person"] == 3
    assert office["ack_latency"] == {"median": 9000, "p90": 90000, "count": 5}
    assert "unbound_group_attempts" not in office
    assert data["by_department"][""]["completion_rate"] == 0.0
    assert set(office) == set(data) - {
        "since", "until", "generated_at", "min_lead_time_seconds", "weeks",
        "unbound_group_attempts", "by_department",
    }  # fmt: skip


def table_lines(out: str, heading: str) -> list[str]:
    """The lines of the table after a heading line, up to the next blank line."""
    lines = out.splitlines()
    start = lines.index(heading) + 1
    end = lines.index("", start)
    return lines[start:end]


async def test_cli_text_is_two_aligned_tables_in_chinese(
    db: Database, cli: Callable[[str], Run]
) -> None:
    await seed(db)
    code, out, err = await cli("zh-CN")("burden", *PERIOD)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "减负统计：2019-12-02 至 2019-12-15（Asia/Shanghai）"
    issuing = table_lines(out, "本期发文（按发文部门；反馈按提出时间计）：")
    handling = table_lines(out, "办理情况（提醒按发送时间计）：")
    for table in (issuing, handling):
        assert [line.split()[0] for line in table] == [
            "部门",
            "合计",
            "办公室",
            "督导科",
            "（未注明）",
        ]
        # Right-aligned columns: every line ends in the same terminal column.
        assert len({width(line) for line in table}) == 1
    assert issuing[0].split() == [
        "部门", "通知", "无文号", "无文号占比", "时限过短", "次日截止", "计划外检查", "反馈",
    ]  # fmt: skip
    assert issuing[1].split() == ["合计", "6", "3", "50%", "1", "2", "1", "5"]
    assert issuing[4].split() == ["（未注明）", "2", "1", "50%", "0", "0", "0", "1"]
    assert handling[1].split() == [
        "合计", "16", "50%", "3", "2.2小时", "25小时", "5", "4", "1.6", "2",
    ]  # fmt: skip
    assert handling[2].split() == [
        "办公室", "7", "67%", "2", "2.5小时", "25小时", "4", "3", "0.7", "1",
    ]  # fmt: skip
    assert handling[4].split()[1:5] == ["6", "0%", "0", "10分钟"]
    assert "办理时限：不足1天 1，1-3天 2，3-7天 0，7天及以上 1，无截止时间 2" in out
    assert "反馈：时限不合理 1，重复填报 2，要求不明确 1，其他 1" in out
    assert "在未绑定的群中使用机器人：2 次" in out
    assert "截止时间距发出不足 1天" in out and "按 2 周计" in out


async def test_cli_text_in_english(db: Database, cli: Callable[[str], Run]) -> None:
    await seed(db)
    code, out, _ = await cli("en")("burden", *PERIOD, "--format", "text")
    assert code == 0
    assert out.splitlines()[0] == "Burden figures, 2019-12-02 to 2019-12-15 (Asia/Shanghai)"
    handling = table_lines(out, "Their handling (reminders: those sent in the period):")
    assert handling[0].split()[:3] == ["Department", "Assigned", "Completed"]
    assert handling[-1].startswith("(unspecified)")
    assert "Attempts to use the bot in unbound groups: 2" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2019-13-01", "--until", "2019-12-15"], "--since: '2019-13-01' is not a date"),
        (["--since", "2019-12-01", "--until", "2019/12/15"], "--until: '2019/12/15' is not a date"),
        (["--since", "2019-02-30", "--until", "2019-03-01"], "--since: '2019-02-30'"),
        (["--since", "20191201", "--until", "2019-12-15"], "--since: '20191201'"),
        (["--since", "2019-12-16", "--until", "2019-12-15"], "--since 2019-12-16 is after --until"),
        # Days no period may cover (issue 13, item 10): refused before any date arithmetic.
        (["--since", "0001-01-01", "--until", "2019-12-15"], "--since: 0001-01-01 is outside"),
        (["--since", "2019-12-01", "--until", "9999-12-31"], "--until: 9999-12-31 is outside"),
    ],
)
async def test_cli_bad_dates_exit_2_naming_the_option(
    db: Database, cli: Callable[[str], Run], args: list[str], message: str
) -> None:
    code, out, err = await cli("en")("burden", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("workbot: ") and message in err
    assert "Traceback" not in err


async def test_cli_bad_date_in_chinese_and_missing_options(
    db: Database, cli: Callable[[str], Run]
) -> None:
    code, _, err = await cli("zh-CN")("burden", "--since", "昨天", "--until", "2019-12-15")
    assert code == 2
    assert "--since：“昨天”不是 YYYY-MM-DD 格式的日期" in err
    for argv in (["burden", "--since", "2019-12-01"], ["burden", *PERIOD, "--format", "csv"]):
        with pytest.raises(SystemExit) as exc:
            await cli("en")(*argv)
        assert exc.value.code == 2


def test_period_includes_both_days_in_the_bot_timezone() -> None:
    assert period("2019-12-02", "2019-12-02", TZ) == (SINCE, SINCE + DAY)
    with pytest.raises(BadPeriod) as exc:
        period("2019-12-02", "2019-12-01", TZ)
    assert exc.value.params == {"since": "2019-12-02", "until": "2019-12-01"}
