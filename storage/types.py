"""Domain enumerations and column types shared by the models and the operations."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


# Each enumeration is declared by its member names; a member's value is its name in lower
# case (StrEnum's automatic value), which is what the database columns and their CHECK
# constraints store (see storage.models._enum).

# A person's role in the directory.
Role = StrEnum("Role", "STAFF OFFICE HEAD ADMIN")

# What kind of formal item a notice is.
NoticeKind = StrEnum("NoticeKind", "NOTICE TASK INSPECTION DATA_REQUEST")

# Where a notice came from (its provenance).
NoticeSource = StrEnum("NoticeSource", "EGOV CHAT CLI API")

# What each assignee must deliver for the assignment to be complete.
Requires = StrEnum("Requires", "ACK PROGRESS OUTCOME")

# The lifecycle state of a notice.
NoticeState = StrEnum("NoticeState", "OPEN CLOSED CANCELLED")

# The lifecycle state of one person's assignment.
AssignmentState = StrEnum(
    "AssignmentState", "PENDING ACKNOWLEDGED IN_PROGRESS DONE VERIFIED RETURNED EXCUSED"
)

# What a reply from an assignee is.
ReplyKind = StrEnum("ReplyKind", "ACK PROGRESS OUTCOME FEEDBACK QUESTION")

# The channel a reply arrived through.
Channel = StrEnum("Channel", "GROUP DM BUTTON REACTION LINK PHONE PORTAL CLI")

# The kinds of feedback counted in the burden report.
FeedbackKind = StrEnum("FeedbackKind", "DEADLINE DUPLICATE UNCLEAR OTHER")

# Processing status of a stored inbound event.
InboundStatus = StrEnum("InboundStatus", "RECEIVED PROCESSED IGNORED FAILED")

# Delivery state of an outbox message.
OutboxState = StrEnum("OutboxState", "PENDING SENT DEAD")

# State of a durable scheduled job.
JobState = StrEnum("JobState", "SCHEDULED DONE CANCELLED")


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
