"""Tests for handlers.parse: the documented examples, forgiving forms, strictness, deadlines."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import handlers.parse as parse_module
from handlers.commands import Command, FeedbackCategory, Intent, MetricValue, NoticeFields
from handlers.parse import UNITS, could_be_command, parse, parse_deadline

BOT_NAMES = ("workbot", "@办公助手")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2019, 12, 4, 10, 0, tzinfo=SHANGHAI)  # a Wednesday
NEGATIONS = ("没收到", "未收到", "收不到")


def p(text: str) -> Command:
    """Parse with the bot's names."""
    return parse(text, bot_names=BOT_NAMES)


def sh(year: int, month: int, day: int, hour: int = 17, minute: int = 30) -> dt.datetime:
    """An aware Asia/Shanghai datetime (17:30 unless told)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


# --- ack ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "notice_id", "word"),
    [
        # the documented examples (docs/chat.md)
        ("收到", None, "收到"),
        ("已收到", None, "已收到"),
        ("收到！", None, "收到"),
        ("好的，收到", None, "收到"),
        ("收到了👌", None, "收到"),
        ("已阅", None, "已阅"),
        ("收到 #12", 12, "收到"),
        ("/ack", None, "ack"),
        ("/ack 12", 12, "ack"),
        ("ack #12", 12, "ack"),
        # full-width, half-width, spacing, emoji, mentions
        ("收到#12", 12, "收到"),
        ("收到 ＃12", 12, "收到"),
        ("收到＃１２", 12, "收到"),
        ("收到 12", 12, "收到"),
        ("收到!", None, "收到"),
        ("  收到   ", None, "收到"),
        ("收到　#12　", 12, "收到"),
        ("收到 👌", None, "收到"),
        ("收到🙏🙏", None, "收到"),
        ("收到 ✅", None, "收到"),
        ("收到[强]", None, "收到"),
        ("收到！！", None, "收到"),
        ("@workbot 收到", None, "收到"),
        ("收到 @workbot", None, "收到"),
        ("@WorkBot 收到 #12", 12, "收到"),
        ("@办公助手 收到", None, "收到"),
        ("@办公助手收到#12", 12, "收到"),
        ("/ack #12", 12, "ack"),
        ("/ack １２", 12, "ack"),
        ("／ack 12", 12, "ack"),
        ("/ ack 12", 12, "ack"),
        ("/ACK 12", 12, "ACK"),
        ("/ack@workbot 12", 12, "ack"),
        ("/ack12", 12, "ack"),
        ("ACK 12", 12, "ACK"),
        ("ack#12", 12, "ack"),
        ("、ack 12", 12, "ack"),
        ("/收到 12", 12, "收到"),
        # polite fillers
        ("好的收到", None, "收到"),
        ("好，收到", None, "收到"),
        ("嗯嗯，收到", None, "收到"),
        ("明白，收到", None, "收到"),
        ("OK 收到", None, "收到"),
        ("收到啦", None, "收到"),
        ("收到的", None, "收到"),
        ("收到，谢谢", None, "收到"),
        ("收到收到", None, "收到"),
        ("收悉", None, "收悉"),
        ("已收悉。", None, "已收悉"),
        ("好的，已收到 #7", 7, "已收到"),
    ],
)
def test_ack(text: str, notice_id: int | None, word: str) -> None:
    # A bare 收到 may be meant for a colleague: only a /, an English word or a mention addresses
    # the bot.
    addressed = any(mark in text for mark in ("/", "／", "、", "@", "ack", "ACK"))
    assert p(text) == Command(Intent.ACK, addressed=addressed, notice_id=notice_id, word=word)


@pytest.mark.parametrize(
    ("text", "notice_id"),
    [
        ("没收到", None),
        ("还没收到", None),
        ("未收到", None),
        ("收不到", None),
        ("没有收到通知", None),
        ("没有收到", None),
        ("还未收到", None),
        ("我没收到", None),
        ("我还没收到呢", None),
        ("没收到 #12", 12),
        ("没收到＃１２", 12),
        ("未收到 12", 12),
        ("还没收到😭", None),
        ("@workbot 没收到", None),
        ("/没收到 12", 12),
    ],
)
def test_not_ack(text: str, notice_id: int | None) -> None:
    command = p(text)
    assert command.intent is Intent.NOT_ACK
    assert command.notice_id == notice_id
    assert command.addressed == ("@" in text or text.startswith("/"))


@pytest.mark.parametrize(
    "text",
    [
        # questions
        "收到了吗？",
        "收到了吗?",
        "大家收到了吗",
        "收到没有",
        "收到没",
        "收到了么",
        "是否收到",
        "有没有收到",
        "没收到吗？",
        "收到？",
        # longer sentences that merely contain 收到
        "我收到了别的通知，这个还没看",
        "收到，还没看",
        "已收到，马上落实",
        "收到 12 份材料",
        "今天收到三份文件",
        # not an ack word, or bare English without an id
        "ack",
        "ok",
        "好的",
        "👌",
        "明白",
        "acknowledged",
        # ids that are not ids, or more than one
        "收到 #0",
        "收到 #12345678901",
        "收到 #12 #13",
        # someone else is addressed
        "@张三 收到",
        "@workbot2 收到",
    ],
)
def test_not_an_ack(text: str) -> None:
    assert p(text).intent is Intent.NONE


@pytest.mark.parametrize(
    "text", ["/ack 还没收到", "/ack 12 没收到", "/收到 收不到", "ack #12 未收到", "/ack 没有收到"]
)
def test_an_explicit_ack_with_a_negation_is_no_ack(text: str) -> None:
    assert p(text) == Command(Intent.NONE, addressed=True)


# --- progress ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "notice_id", "percent", "rest"),
    [
        ("进度 #12 60% 已完成初稿", 12, 60, "已完成初稿"),
        ("进度 已联系各校", None, None, "已联系各校"),
        ("/progress 12 60% drafted", 12, 60, "drafted"),
        ("进度＃１２　６０％　已完成初稿", 12, 60, "已完成初稿"),
        ("进度#12 60%已完成初稿", 12, 60, "已完成初稿"),
        ("进度 #12：60% 已完成初稿", 12, 60, "已完成初稿"),
        ("进度   #12   60 %   已完成初稿 👍", 12, 60, "已完成初稿"),
        ("@workbot 进度 #12 60% 已完成初稿", 12, 60, "已完成初稿"),
        ("进度 #12 0% 刚开始", 12, 0, "刚开始"),
        ("进度 #12 100%", 12, 100, ""),
        ("进度 #12 已完成初稿 80%", 12, 80, "已完成初稿"),
        ("进度 60% #12 初稿", 12, 60, "初稿"),
        ("进度 #12 150% 超额", 12, None, "150% 超额"),
        ("进度 #12 60.5% 初稿", 12, None, "60.5% 初稿"),
        ("进度 #12\n第一行\n第二行", 12, None, "第一行\n第二行"),
        ("/progress 12", 12, None, ""),
    ],
)
def test_progress(text: str, notice_id: int | None, percent: int | None, rest: str) -> None:
    command = p(text)
    assert command.intent is Intent.PROGRESS
    assert (command.notice_id, command.percent, command.text) == (notice_id, percent, rest)
    assert command.word in ("进度", "progress")


# --- done --------------------------------------------------------------------------------------

OUTCOME_EXAMPLE = """完成 #12
措施：1. 组织自查 2. 召开专题会议
成效：发文数量减少30%以上"""


def test_outcome_example() -> None:
    assert p(OUTCOME_EXAMPLE) == Command(
        Intent.DONE,
        addressed=True,
        notice_id=12,
        measures=("组织自查", "召开专题会议"),
        results="发文数量减少30%以上",
        metrics=(MetricValue(name="发文数量减少", value=30.0, unit="%"),),
        word="完成",
    )


@pytest.mark.parametrize(
    "text",
    [
        "完成 #12 措施：1. 组织自查 2. 召开专题会议；成效：发文数量减少30%以上",
        "完成 #12 措施:1.组织自查2.召开专题会议;成效:发文数量减少30%以上",
        "完成 #12\n措施：1、组织自查；2、召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：(1)组织自查 (2)召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：（1）组织自查（2）召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：①组织自查②召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：组织自查；召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：\n1. 组织自查\n2. 召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：\n组织自查\n召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：一、组织自查 二、召开专题会议\n成效：发文数量减少30%以上",
        "完成＃１２\n措施：1. 组织自查 2. 召开专题会议\n成效：发文数量减少３０％以上",
        "完成 #12\n措施：\n- 组织自查\n- 召开专题会议\n成效：发文数量减少30%以上",
        "完成 #12\n措施：一是组织自查，二是召开专题会议。\n成效：发文数量减少30%以上",
        "/done 12\nmeasures: 1. 组织自查 2. 召开专题会议\nresults: 发文数量减少30%以上",
        "@workbot 完成 #12\n措施：1. 组织自查 2. 召开专题会议\n成效：发文数量减少30%以上 👍",
    ],
)
def test_outcome_forms(text: str) -> None:
    command = p(text)
    assert command.intent is Intent.DONE
    assert command.notice_id == 12
    assert command.measures == ("组织自查", "召开专题会议")
    assert command.metrics == (MetricValue(name="发文数量减少", value=30.0, unit="%"),)
    assert command.results.startswith("发文数量减少")


@pytest.mark.parametrize(
    ("text", "notice_id", "rest", "word"),
    [
        ("完成 #12", 12, "", "完成"),
        ("完成#12", 12, "", "完成"),
        ("完成 12", 12, "", "完成"),
        ("完成 ＃１２ 已报送", 12, "已报送", "完成"),
        ("/done 12 all submitted", 12, "all submitted", "done"),
        ("done 12 all submitted", 12, "all submitted", "done"),
        ("完成", None, "", "完成"),
        ("完成 已报送", None, "已报送", "完成"),
    ],
)
def test_done_without_outcome(text: str, notice_id: int | None, rest: str, word: str) -> None:
    expected = Command(Intent.DONE, addressed=True, notice_id=notice_id, text=rest, word=word)
    assert p(text) == expected


def test_done_text_results_over_lines_and_metrics() -> None:
    command = p(
        "完成 #12 已全部完成\n"
        "措施：组织自查\n"
        "成效：发文数量减少30%以上\n"
        "会议减少5次，节约经费2.5万元、培训1,200人次\n"
        "2019年12月完成第3次检查"
    )
    assert command.text == "已全部完成"
    assert command.measures == ("组织自查",)
    assert command.results == (
        "发文数量减少30%以上\n会议减少5次，节约经费2.5万元、培训1,200人次\n2019年12月完成第3次检查"
    )
    assert command.metrics == (
        MetricValue(name="发文数量减少", value=30.0, unit="%"),
        MetricValue(name="会议减少", value=5.0, unit="次"),
        MetricValue(name="节约经费", value=2.5, unit="万元"),
        MetricValue(name="培训", value=1200.0, unit="人次"),
    )


@pytest.mark.parametrize(
    ("results", "metrics"),
    [
        ("从20个减少到10个", [("从", 20.0, "个"), ("减少到", 10.0, "个")]),
        ("覆盖12所学校，36个班级", [("覆盖", 12.0, "所学校"), ("", 36.0, "个")]),
        ("合格率提高5个百分点", [("合格率提高", 5.0, "个百分点")]),
        ("用时3个月", [("用时", 3.0, "个月")]),
        ("惠及3万人次", [("惠及", 3.0, "万人次")]),
        ("12月10日前完成", []),
        ("2019年完成", []),
        ("大幅减少", []),
    ],
)
def test_metrics(results: str, metrics: list[tuple[str, float, str]]) -> None:
    command = p(f"完成 #1\n成效：{results}")
    assert command.results == results
    assert command.metrics == tuple(MetricValue(*metric) for metric in metrics)


def test_units_are_longest_first() -> None:
    assert "%" in UNITS
    assert UNITS.index("人次") < UNITS.index("人")
    assert UNITS.index("万元") < UNITS.index("元")
    assert all(len(a) >= len(b) for a, b in itertools.pairwise(UNITS))


# --- feedback ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "notice_id", "category", "duplicate_of", "rest"),
    [
        ("反馈 #12 时间太紧", 12, FeedbackCategory.DEADLINE, None, "时间太紧"),
        ("反馈 #12 重复填报 #9", 12, FeedbackCategory.DUPLICATE, 9, "重复填报 #9"),
        (
            "/feedback 12 deadline too tight",
            12,
            FeedbackCategory.DEADLINE,
            None,
            "deadline too tight",
        ),
        ("反馈 #12 来不及", 12, FeedbackCategory.DEADLINE, None, "来不及"),
        ("反馈 #12 和 #9 多头填报", 12, FeedbackCategory.DUPLICATE, 9, "和 #9 多头填报"),
        ("反馈 #12 重复填报", 12, FeedbackCategory.DUPLICATE, None, "重复填报"),
        ("/feedback 12 duplicate of #3", 12, FeedbackCategory.DUPLICATE, 3, "duplicate of #3"),
        ("反馈 #12 填报口径不明确", 12, FeedbackCategory.UNCLEAR, None, "填报口径不明确"),
        ("反馈 #12 看不懂表格", 12, FeedbackCategory.UNCLEAR, None, "看不懂表格"),
        ("/feedback 12 unclear", 12, FeedbackCategory.UNCLEAR, None, "unclear"),
        ("反馈 #12 表格太多", 12, FeedbackCategory.OTHER, None, "表格太多"),
        ("反馈＃１２：时间太紧", 12, FeedbackCategory.DEADLINE, None, "时间太紧"),
        ("反馈 时间太紧", None, FeedbackCategory.DEADLINE, None, "时间太紧"),
    ],
)
def test_feedback(
    text: str,
    notice_id: int | None,
    category: FeedbackCategory,
    duplicate_of: int | None,
    rest: str,
) -> None:
    command = p(text)
    assert command.intent is Intent.FEEDBACK
    assert command.notice_id == notice_id
    assert command.feedback is category
    assert command.duplicate_of == duplicate_of
    assert command.text == rest


# --- the other intents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("待办", Command(Intent.PENDING, word="待办")),
        ("我的待办", Command(Intent.PENDING, word="我的待办")),
        ("/pending", Command(Intent.PENDING, word="pending")),
        ("待办 全部", Command(Intent.PENDING, everyone=True, word="待办")),
        ("待办全部", Command(Intent.PENDING, everyone=True, word="待办")),
        ("/pending all", Command(Intent.PENDING, everyone=True, word="pending")),
        ("待办 #12", Command(Intent.PENDING, notice_id=12, word="待办")),
        ("/pending 12", Command(Intent.PENDING, notice_id=12, word="pending")),
        ("查询 #12", Command(Intent.STATUS, notice_id=12, word="查询")),
        ("进展 #12", Command(Intent.STATUS, notice_id=12, word="进展")),
        ("/status 12", Command(Intent.STATUS, notice_id=12, word="status")),
        ("/status", Command(Intent.STATUS, word="status")),
        ("查询", Command(Intent.STATUS, word="查询")),
        ("催办 #12", Command(Intent.REMIND, notice_id=12, word="催办")),
        ("/remind 12", Command(Intent.REMIND, notice_id=12, word="remind")),
        (
            "电话确认 #12 张三",
            Command(Intent.PHONE_ACK, notice_id=12, person="张三", word="电话确认"),
        ),
        (
            "/phoneack 12 p001",
            Command(Intent.PHONE_ACK, notice_id=12, person="p001", word="phoneack"),
        ),
        (
            "电话确认 #12 张三 上午已电话告知",
            Command(
                Intent.PHONE_ACK,
                notice_id=12,
                person="张三",
                text="上午已电话告知",
                word="电话确认",
            ),
        ),
        (
            "请假 #12 张三 下村",
            Command(Intent.EXCUSE, notice_id=12, person="张三", text="下村", word="请假"),
        ),
        (
            "请假 #12 @张三，下村",
            Command(Intent.EXCUSE, notice_id=12, person="张三", text="下村", word="请假"),
        ),
        (
            "/excuse 12 p001 reason",
            Command(Intent.EXCUSE, notice_id=12, person="p001", text="reason", word="excuse"),
        ),
        ("办结 #12", Command(Intent.CLOSE, notice_id=12, word="办结")),
        ("/close 12", Command(Intent.CLOSE, notice_id=12, word="close")),
        ("撤回 #12", Command(Intent.CANCEL, notice_id=12, word="撤回")),
        ("/cancel 12", Command(Intent.CANCEL, notice_id=12, word="cancel")),
        ("报告 2019-11", Command(Intent.REPORT, period="2019-11", word="报告")),
        ("/report 2019-11", Command(Intent.REPORT, period="2019-11", word="report")),
        ("report 2019-11", Command(Intent.REPORT, period="2019-11", word="report")),
        ("报告 ２０１９-１１", Command(Intent.REPORT, period="2019-11", word="报告")),
        (
            "报告 2019-11-01..2019-11-30",
            Command(Intent.REPORT, period="2019-11-01..2019-11-30", word="报告"),
        ),
        ("报告 2019年11月", Command(Intent.REPORT, period="2019-11", word="报告")),
        ("/report", Command(Intent.REPORT, word="report")),
        ("帮助", Command(Intent.HELP, word="帮助")),
        ("/help", Command(Intent.HELP, word="help")),
        ("help", Command(Intent.HELP, word="help")),
        ("/帮助", Command(Intent.HELP, word="帮助")),
        ("@workbot 帮助", Command(Intent.HELP, word="帮助")),
        ("撤回＃１２", Command(Intent.CANCEL, notice_id=12, word="撤回")),
        ("催办  #12  ", Command(Intent.REMIND, notice_id=12, word="催办")),
    ],
)
def test_commands(text: str, expected: Command) -> None:
    assert p(text) == dataclasses.replace(expected, addressed=True)


@pytest.mark.parametrize(
    ("text", "word", "rest"),
    [("/foo", "foo", ""), ("/foo bar", "foo", "bar"), ("/acknowledge 12", "acknowledge", "12")],
)
def test_unknown_slash_command(text: str, word: str, rest: str) -> None:
    assert p(text) == Command(Intent.UNKNOWN, addressed=True, word=word, text=rest)


@pytest.mark.parametrize(
    ("text", "addressed"),
    [
        ("请大家今天完成 #3", False),
        ("今天天气不错", False),
        ("@workbot 今天天气不错", True),
        ("@workbot", True),
        ("/", True),
        ("/12", True),
        ("", False),
        ("   ", False),
        ("完成得不错", False),
        ("完成了吗", False),
        ("完成 #12 了吗？", False),
        ("进度怎么样", False),
        ("进度 #12 怎么样了？", False),
        ("进度", False),
        ("撤回 #12 吗", False),
        ("待办事项太多了", False),
        ("帮助一下小王", False),
        ("help me", False),
        ("done", False),
        ("report this", False),
        ("status update", False),
        ("、你好", False),
        ("大家好，通知 #3 收到了吗", False),
    ],
)
def test_no_intent(text: str, addressed: bool) -> None:
    assert p(text) == Command(Intent.NONE, addressed=addressed)


def test_free_text_keeps_what_was_typed() -> None:
    # Folding is for recognising commands; the text a person wrote is kept as written.
    command = p("反馈＃１２　时间太紧，来不及（ＰＤＦ版）")
    assert command.notice_id == 12
    assert command.text == "时间太紧，来不及（ＰＤＦ版）"


def test_without_bot_names_a_mention_is_text() -> None:
    assert parse("@workbot 收到").intent is Intent.NONE
    assert parse("收到") == Command(Intent.ACK, word="收到")


def test_addressed() -> None:
    assert not p("收到").addressed
    assert not p("没收到").addressed
    assert p("@workbot 收到").addressed
    assert p("/ack").addressed
    assert p("ack 12").addressed
    assert p("进度 #12 60%").addressed  # a command word the bot owns
    assert p("/foo").addressed
    assert not p("你好").addressed
    assert p("你好 @办公助手").addressed


# --- notice / task -----------------------------------------------------------------------------

NOTICE_EXAMPLE = """通知 关于报送作业管理自查情况的通知
请各科室于12月10日前报送自查报告。
截止：2019-12-10 17:00
对象：@基础教育科 @张三
要求：成效
文号：宜教办发[2019]41号"""


def test_notice_example() -> None:
    command = p(NOTICE_EXAMPLE)
    assert command.intent is Intent.NOTICE
    assert command.addressed
    assert command.word == "通知"
    assert command.notice == NoticeFields(
        kind="notice",
        title="关于报送作业管理自查情况的通知",
        body="请各科室于12月10日前报送自查报告。",
        deadline="2019-12-10 17:00",
        audience_all=False,
        audience=("基础教育科", "张三"),
        requires="outcome",
        doc_number="宜教办发[2019]41号",
        plan_ref=None,
        problems=(),
    )
    assert parse_deadline(command.notice.deadline or "", now=NOW, tz=SHANGHAI) == sh(
        2019, 12, 10, 17, 0
    )


def test_task_with_keys_inside_the_body() -> None:
    command = p(
        "任务：全市作业管理专项检查\n"
        "第一段正文。\n"
        "deadline: 周五\n"
        "  第二段正文。  \n"
        "TO: all\n"
        "requires: progress\n"
        "计划：2019年度工作计划\n"
        "doc: 宜教办发[2019]42号\n"
    )
    assert command.intent is Intent.NOTICE
    assert command.notice == NoticeFields(
        kind="task",
        title="全市作业管理专项检查",
        body="第一段正文。\n  第二段正文。",
        deadline="周五",
        audience_all=True,
        requires="progress",
        doc_number="宜教办发[2019]42号",
        plan_ref="2019年度工作计划",
    )


@pytest.mark.parametrize(
    ("text", "kind", "title"),
    [
        ("/notice 关于开会的通知", "notice", "关于开会的通知"),
        ("/task 专项检查", "task", "专项检查"),
        ("通知：关于开会的通知", "notice", "关于开会的通知"),
        ("通知　关于开会的通知", "notice", "关于开会的通知"),
        ("@workbot 任务 专项检查", "task", "专项检查"),
        ("通知\n关于开会的通知", "notice", "关于开会的通知"),
    ],
)
def test_notice_forms(text: str, kind: str, title: str) -> None:
    command = p(text)
    assert command.intent is Intent.NOTICE
    assert command.notice == NoticeFields(kind=kind, title=title)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("对象：全体", "audience_all", True),
        ("对象：@基础教育科、@张三", "audience", ("基础教育科", "张三")),
        ("对象：基础教育科 张三", "audience", ("基础教育科", "张三")),
        ("对象：＠基础教育科　＠张三", "audience", ("基础教育科", "张三")),
        ("要求：收到", "requires", "ack"),
        ("要求：进度", "requires", "progress"),
        ("要求：成效", "requires", "outcome"),
        ("requires: ack", "requires", "ack"),
        ("requires: Outcome", "requires", "outcome"),
        ("截止：12月10日", "deadline", "12月10日"),
        ("截止时间：明天 17:00", "deadline", "明天 17:00"),
        ("文号：宜教办发〔2019〕41号", "doc_number", "宜教办发〔2019〕41号"),
        ("计划：2019-03", "plan_ref", "2019-03"),
    ],
)
def test_notice_key_lines(line: str, field: str, value: object) -> None:
    notice = p(f"通知 标题\n正文\n{line}").notice
    assert notice is not None
    assert getattr(notice, field) == value
    assert notice.body == "正文"
    assert notice.problems == ()


@pytest.mark.parametrize(
    ("line", "problem"),
    [("要求：尽快", "requires"), ("对象：", "to"), ("截止：", "deadline"), ("文号：", "doc")],
)
def test_notice_key_lines_not_understood(line: str, problem: str) -> None:
    notice = p(f"通知 标题\n{line}").notice
    assert notice is not None
    assert notice.problems == (problem,)
    assert notice.body == ""


def test_a_notice_without_a_title() -> None:
    assert p("通知") == Command(Intent.NONE)
    command = p("/notice")
    assert command.intent is Intent.NOTICE
    assert command.notice == NoticeFields(kind="notice", title="", problems=("title",))


@pytest.mark.parametrize(
    "text", ["通知已经发了吗", "通知 已经发了吗？", "任务完成了", "通知大家明天开会", "notice this"]
)
def test_chatter_is_not_a_notice(text: str) -> None:
    assert p(text).intent is Intent.NONE


# --- deadlines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-12-10 17:00", sh(2019, 12, 10, 17, 0)),
        ("2019-12-10T17:00:00+08:00", sh(2019, 12, 10, 17, 0)),
        ("2019-12-10T09:00:00Z", sh(2019, 12, 10, 17, 0)),
        ("2019-12-10", sh(2019, 12, 10)),
        ("2019/12/10", sh(2019, 12, 10)),
        ("２０１９－１２－１０", sh(2019, 12, 10)),
        ("2019年12月10日", sh(2019, 12, 10)),
        ("12月10日 17:00", sh(2019, 12, 10, 17, 0)),
        ("12月10日17:00", sh(2019, 12, 10, 17, 0)),
        ("12月10日", sh(2019, 12, 10)),
        ("12月10号", sh(2019, 12, 10)),
        ("12月10日前", sh(2019, 12, 10)),
        ("12月10日(周二)", sh(2019, 12, 10)),
        ("12月4日", sh(2019, 12, 4)),  # today: not passed yet
        ("12月1日", sh(2020, 12, 1)),  # passed: next year
        ("1月5日", sh(2020, 1, 5)),
        ("2月29日", sh(2020, 2, 29)),
        ("今天", sh(2019, 12, 4)),
        ("明天", sh(2019, 12, 5)),
        ("后天", sh(2019, 12, 6)),
        ("明天 17:00", sh(2019, 12, 5, 17, 0)),
        ("明天17点", sh(2019, 12, 5, 17, 0)),
        ("明天 17时", sh(2019, 12, 5, 17, 0)),
        ("明天下午5点", sh(2019, 12, 5, 17, 0)),
        ("明天下午5点半", sh(2019, 12, 5, 17, 30)),
        ("明天上午9点30分", sh(2019, 12, 5, 9, 30)),
        ("周五", sh(2019, 12, 6)),
        ("星期五", sh(2019, 12, 6)),
        ("礼拜五", sh(2019, 12, 6)),
        ("周三", sh(2019, 12, 4)),  # today included
        ("周二", sh(2019, 12, 10)),
        ("周日", sh(2019, 12, 8)),
        ("下周五", sh(2019, 12, 13)),
        ("下周一", sh(2019, 12, 9)),
        ("周五 17:00", sh(2019, 12, 6, 17, 0)),
        ("周五下午3点", sh(2019, 12, 6, 15, 0)),
        ("2019-12-10 下午5点", sh(2019, 12, 10, 17, 0)),
    ],
)
def test_parse_deadline(text: str, expected: dt.datetime) -> None:
    result = parse_deadline(text, now=NOW, tz=SHANGHAI)
    assert result == expected
    assert result is not None
    assert result.tzinfo is not None
    assert result.utcoffset() == dt.timedelta(hours=8)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "尽快",
        "下午5点",
        "2月30日",
        "13月1日",
        "2019-02-30",
        "2019-13-01",
        "明天 25:00",
        "明天 17:60",
        "周八",
        "12月10日 明天",
        "2019-12-10T17:00:00+25:00",
        "2019-12-10 17:00 " + "x" * 200,
    ],
)
def test_parse_deadline_not_understood(text: str) -> None:
    assert parse_deadline(text, now=NOW, tz=SHANGHAI) is None


def test_parse_deadline_in_february_of_a_leap_year_and_not() -> None:
    january_2019 = dt.datetime(2019, 1, 10, tzinfo=SHANGHAI)
    assert parse_deadline("2月29日", now=january_2019, tz=SHANGHAI) is None
    january_2020 = dt.datetime(2020, 1, 10, tzinfo=SHANGHAI)
    assert parse_deadline("2月29日", now=january_2020, tz=SHANGHAI) == sh(2020, 2, 29)


def test_parse_deadline_uses_the_local_date_of_now() -> None:
    # 2019-12-04 20:00 UTC is already Thursday 04:00 in Shanghai.
    late = dt.datetime(2019, 12, 4, 20, 0, tzinfo=dt.UTC)
    assert parse_deadline("明天", now=late, tz=SHANGHAI) == sh(2019, 12, 6)
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_deadline("2019-12-10", now=NOW, tz=berlin) == dt.datetime(
        2019, 12, 10, 17, 30, tzinfo=berlin
    )


# --- properties --------------------------------------------------------------------------------

PIECES = (
    "收到", "已收到", "已阅", "没收到", "未收到", "收不到", "还没", "吗", "？", "?", "/", "／",
    "#", "＃", "12", "１２", "0", "99999999999", "%", "％", "60", ":", "：", "；", ";", "，",
    "\n", " ", "　", "@workbot", "@办公助手", "@", "👌", "[强]", "ack", "done", "progress",
    "进度", "完成", "反馈", "待办", "全部", "查询", "通知", "任务", "催办", "电话确认", "请假",
    "办结", "撤回", "报告", "帮助", "措施", "成效", "截止", "对象", "要求", "文号", "计划",
    "1.", "(1)", "①", "一、", "2019-11", "..", "万元", "人次", "年", "月", "日", "周五", "下",
    "\r\n", "\u2028", "\u200d", "\ufe0f",
)  # fmt: skip
messages = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=16).map(
    "".join
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_on_any_text(text: str) -> None:
    assert isinstance(parse_module._parse(text, BOT_NAMES), Command)


@settings(max_examples=500, deadline=None)
@given(messages)
def test_parse_never_raises_on_command_like_text(text: str) -> None:
    command = parse_module._parse(text, BOT_NAMES)
    assert isinstance(command, Command)
    assert command.notice_id is None or 0 < command.notice_id < 10**10
    assert command.percent is None or 0 <= command.percent <= 100
    assert (command.intent is Intent.NOTICE) == (command.notice is not None)


@settings(max_examples=500, deadline=None)
@given(messages, st.sampled_from(NEGATIONS), messages)
def test_a_negation_is_never_an_ack(before: str, negation: str, after: str) -> None:
    text = before + negation + after
    assert parse(text, bot_names=BOT_NAMES).intent is not Intent.ACK
    assert parse(text).intent is not Intent.ACK


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.text(), messages, st.lists(st.sampled_from(PIECES)).map(" ".join)),
    st.datetimes(timezones=st.sampled_from([SHANGHAI, dt.UTC, ZoneInfo("Europe/Berlin")])),
)
def test_parse_deadline_never_raises(text: str, now: dt.datetime) -> None:
    result = parse_deadline(text, now=now, tz=SHANGHAI)
    assert result is None or result.tzinfo is not None


@settings(max_examples=200, deadline=None)
@given(st.datetimes())
def test_parse_deadline_never_raises_with_a_naive_or_extreme_now(now: dt.datetime) -> None:
    for text in ("明天", "周五", "下周日", "12月31日", "2019-12-10T17:00:00-23:59", "大后天 23:59"):
        result = parse_deadline(text, now=now, tz=SHANGHAI)
        assert result is None or result.tzinfo is not None


def test_parse_falls_back_to_none_on_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, bot_names: object) -> Command:
        raise RuntimeError("a bug")

    monkeypatch.setattr(parse_module, "_parse", broken)
    assert parse("收到") == Command(Intent.NONE)


@pytest.mark.parametrize(
    "text",
    [
        "收到" * 50_000,
        "#" * 100_000,
        "1" * 100_000,
        "@" * 100_000,
        "👌" * 100_000,
        " " * 100_000 + "收到",
        "完成 #1 " + "1. a " * 20_000,
        "完成 #1\n措施：" + "1" * 100_000,
        "完成 #1\n成效：" + "1 " * 50_000,
        "完成 #1\n成效：" + "1,000" * 20_000,
        "完成 #1\n成效：" + "1" + " " * 100_000 + "x",
        "通知 标题\n" + "对象：@a\n" * 10_000,
        "进度 #1 " + "9" * 100_000 + "%",
        "/" + "a" * 100_000,
        "反馈 #1 " + "重复 #" * 20_000,
    ],
)
def test_parse_stays_fast_on_huge_text(text: str) -> None:
    started = time.perf_counter()
    assert isinstance(parse(text, bot_names=BOT_NAMES), Command)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=60), messages))
def test_the_fast_filter_never_hides_a_command(text: str) -> None:
    if not could_be_command(text):
        command = parse(text, bot_names=("workbot", "办公助手"))
        assert command.intent is Intent.NONE and not command.addressed, command


@pytest.mark.parametrize("text", ["今天下午三点开会，请大家准时参加", "bench message 1: ready"])
def test_chatter_is_settled_by_the_fast_filter(text: str) -> None:
    assert not could_be_command(text)
