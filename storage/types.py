"""Domain enumerations and column types shared by the models and the operations."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


class Role(StrEnum):
    """A person's role in the directory."""

    STAFF = "staff"
    OFFICE = "office"
    HEAD = "head"
    ADMIN = "admin"


class NoticeKind(StrEnum):
    """What kind of formal item a notice is."""

    NOTICE = "notice"
    TASK = "task"
    INSPECTION = "inspection"
    DATA_REQUEST = "data_request"


class NoticeSource(StrEnum):
    """Where a notice came from (its provenance)."""

    EGOV = "egov"
    CHAT = "chat"
    CLI = "cli"
    API = "api"


class Requires(StrEnum):
    """What each assignee must deliver for the assignment to be complete."""

    ACK = "ack"
    PROGRESS = "progress"
    OUTCOME = "outcome"


class NoticeState(StrEnum):
    """The lifecycle state of a notice."""

    OPEN = "open"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class AssignmentState(StrEnum):
    """The lifecycle state of one person's assignment."""

    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    VERIFIED = "verified"
    RETURNED = "returned"
    EXCUSED = "excused"


class ReplyKind(StrEnum):
    """What a reply from an assignee is."""

    ACK = "ack"
    PROGRESS = "progress"
    OUTCOME = "outcome"
    FEEDBACK = "feedback"
    QUESTION = "question"


class Channel(StrEnum):
    """The channel a reply arrived through."""

    GROUP = "group"
    DM = "dm"
    BUTTON = "button"
    REACTION = "reaction"
    LINK = "link"
    PHONE = "phone"
    PORTAL = "portal"
    CLI = "cli"


class FeedbackKind(StrEnum):
    """The kinds of feedback counted in the burden report."""

    DEADLINE = "deadline"
    DUPLICATE = "duplicate"
    UNCLEAR = "unclear"
    OTHER = "other"


class InboundStatus(StrEnum):
    """Processing status of a stored inbound event."""

    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class OutboxState(StrEnum):
    """Delivery state of an outbox message."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class JobState(StrEnum):
    """State of a durable scheduled job."""

    SCHEDULED = "scheduled"
    DONE = "done"
    CANCELLED = "cancelled"


# States in which an assignment still owes something, per what the notice requires.
OUTSTANDING_STATES: dict[Requires, frozenset[AssignmentState]] = {
    Requires.ACK: frozenset({AssignmentState.PENDING}),
    Requires.PROGRESS: frozenset(
        {AssignmentState.PENDING, AssignmentState.ACKNOWLEDGED, AssignmentState.RETURNED}
    ),
    Requires.OUTCOME: frozenset(
        {
            AssignmentState.PENDING,
            AssignmentState.ACKNOWLEDGED,
            AssignmentState.IN_PROGRESS,
            AssignmentState.RETURNED,
        }
    ),
}

FINISHED_STATES = frozenset({AssignmentState.DONE, AssignmentState.VERIFIED})


def is_outstanding(notice_state: NoticeState, requires: Requires, state: AssignmentState) -> bool:
    """Whether an assignment still owes its notice something (drives pending queries)."""
    return notice_state is NoticeState.OPEN and state in OUTSTANDING_STATES[requires]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, stored in UTC on every backend (naive UTC on SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Refuse naive datetimes and normalise aware ones to UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Return an aware UTC datetime whatever the backend gave."""
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
