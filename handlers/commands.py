"""What a chat message means: the parser's output (pure data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Intent(StrEnum):
    """The intents of the chat command language (docs/chat.md)."""

    NONE = "none"  # not a command: chatter, a question, or something to ignore silently
    UNKNOWN = "unknown"  # an unknown /command addressed to the bot: answer with a hint
    ACK = "ack"
    NOT_ACK = "not_ack"  # 没收到 and friends: re-send the notice privately
    PROGRESS = "progress"
    DONE = "done"
    FEEDBACK = "feedback"
    PENDING = "pending"
    STATUS = "status"
    NOTICE = "notice"
    REMIND = "remind"
    PHONE_ACK = "phone_ack"
    EXCUSE = "excuse"
    CLOSE = "close"
    CANCEL = "cancel"
    REPORT = "report"
    HELP = "help"


class FeedbackCategory(StrEnum):
    """How a feedback text is classified (mirrors storage.types.FeedbackKind)."""

    DEADLINE = "deadline"
    DUPLICATE = "duplicate"
    UNCLEAR = "unclear"
    OTHER = "other"


@dataclass(frozen=True)
class MetricValue:
    """A number with a unit (or %) found in an outcome's 成效 text."""

    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class NoticeFields:
    """The fields of a multi-line 通知 / 任务 form, still as text (resolved by the handler)."""

    kind: str  # "notice" or "task"
    title: str
    body: str = ""
    deadline: str | None = None  # the raw 截止 value; see parse.parse_deadline
    audience_all: bool = False
    audience: tuple[str, ...] = ()  # the names after @ in 对象 (departments or people)
    requires: str | None = None  # "ack" | "progress" | "outcome" (None: not given)
    doc_number: str | None = None
    plan_ref: str | None = None
    problems: tuple[str, ...] = ()  # keys of lines that could not be understood


@dataclass(frozen=True)
class Command:
    """One parsed message."""

    intent: Intent
    addressed: bool = False  # a leading /, an @bot mention, or a command word the bot owns
    notice_id: int | None = None  # an explicit #12 / 12
    text: str = ""  # the free text after the command word and id
    percent: int | None = None  # 进度 60%
    everyone: bool = False  # 待办 全部 / /pending all
    person: str | None = None  # 电话确认 / 请假: a name or a directory id
    measures: tuple[str, ...] = ()
    results: str = ""
    metrics: tuple[MetricValue, ...] = ()
    feedback: FeedbackCategory | None = None
    duplicate_of: int | None = None  # 反馈 #12 重复填报 #9
    period: str | None = None  # 报告 2019-11
    notice: NoticeFields | None = None
    word: str = ""  # the command word as typed (for the unknown-command hint)
    extra: dict[str, str] = field(default_factory=dict)
