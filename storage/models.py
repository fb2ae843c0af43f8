"""The SQLAlchemy ORM models: the structured records of docs/architecture.md."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import (
    AssignmentState,
    Channel,
    FeedbackKind,
    InboundStatus,
    JobState,
    NoticeKind,
    NoticeSource,
    NoticeState,
    OutboxState,
    ReplyKind,
    Requires,
    UTCDateTime,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(cls: type[StrEnum], name: str) -> Enum:
    """A portable string enum column with a CHECK constraint (no native PG enum type)."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Person(Base):
    """Someone in the directory: staff, office, department head or admin."""

    __tablename__ = "person"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    department: Mapped[str] = mapped_column(String(100), default="", index=True)
    roles: Mapped[list[Any]] = mapped_column(JSON, default=list)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    auto_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class PersonIdentity(Base):
    """A person's user id on one chat platform (one row per platform account)."""

    __tablename__ = "person_identity"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    platform_user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id"), index=True)


class Notice(Base):
    """A formal notice or task, shown to people as #id."""

    __tablename__ = "notice"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[NoticeKind] = mapped_column(_enum(NoticeKind, "notice_kind"))
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text, default="")
    doc_number: Mapped[str | None] = mapped_column(String(100), default=None)
    plan_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[NoticeSource] = mapped_column(_enum(NoticeSource, "notice_source"))
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    payload_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    issuer_department: Mapped[str | None] = mapped_column(String(100), default=None)
    issuer_name: Mapped[str | None] = mapped_column(String(100), default=None)
    issuer_person_id: Mapped[str | None] = mapped_column(ForeignKey("person.id"), default=None)
    audience: Mapped[dict[str, Any]] = mapped_column(JSON)
    requires: Mapped[Requires] = mapped_column(_enum(Requires, "requires"))
    state: Mapped[NoticeState] = mapped_column(_enum(NoticeState, "notice_state"), index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime]
    deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    closed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class NoticeMessage(Base):
    """A platform message that a notice was posted as (for replies, quotes and edits)."""

    __tablename__ = "notice_message"
    __table_args__ = (
        UniqueConstraint("platform", "chat_id", "message_id"),
        # Replies and quotes name a message id; which chat it was in is not always known.
        Index("ix_notice_message_lookup", "platform", "message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notice.id"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(200))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("person.id"), default=None)
    created_at: Mapped[dt.datetime]


class Assignment(Base):
    """One person's duty under one notice, with its state machine (docs/architecture.md)."""

    __tablename__ = "assignment"
    __table_args__ = (
        UniqueConstraint("notice_id", "person_id"),
        Index("ix_assignment_person_outstanding", "person_id", "outstanding", "notice_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notice.id"))
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id"))
    state: Mapped[AssignmentState] = mapped_column(_enum(AssignmentState, "assignment_state"))
    # Denormalised from (notice.state, notice.requires, state) by the domain operations,
    # so that pending_for(person) is one index range scan at 3M assignments.
    outstanding: Mapped[bool] = mapped_column(Boolean)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    ack_channel: Mapped[Channel | None] = mapped_column(_enum(Channel, "channel"), default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    done_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    verified_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    returned_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    excused_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    excuse_reason: Mapped[str | None] = mapped_column(Text, default=None)
    return_reason: Mapped[str | None] = mapped_column(Text, default=None)
    progress_percent: Mapped[int | None] = mapped_column(Integer, default=None)
    progress_text: Mapped[str | None] = mapped_column(Text, default=None)
    progress_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime]


class Reply(Base):
    """Something an assignee (or the office on their behalf) said about an assignment."""

    __tablename__ = "reply"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), index=True)
    kind: Mapped[ReplyKind] = mapped_column(_enum(ReplyKind, "reply_kind"))
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    text: Mapped[str] = mapped_column(Text, default="")
    percent: Mapped[int | None] = mapped_column(Integer, default=None)
    feedback_kind: Mapped[FeedbackKind | None] = mapped_column(
        _enum(FeedbackKind, "feedback_kind"), default=None
    )
    message_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime]


class Outcome(Base):
    """A structured outcome: 采取的措施 (measures), 取得的成效 (results) and metrics."""

    __tablename__ = "outcome"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), index=True)
    measures: Mapped[list[Any]] = mapped_column(JSON)
    results: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]


class InboundRecord(Base):
    """An inbound platform or portal event, stored (and deduplicated) before it is answered."""

    __tablename__ = "inbound_event"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[InboundStatus] = mapped_column(
        _enum(InboundStatus, "inbound_status"), index=True
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Why an event was ignored or what it did (e.g. unbound_chat, chatter, ack): burden figures.
    note: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    received_at: Mapped[dt.datetime]
    processed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class OutboxMessage(Base):
    """A message the bot must send, written in the same transaction as its cause."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_message_due", "state", "next_attempt_at"),
        # Head-of-line check for per-target order: the oldest pending row of a target.
        Index("ix_outbox_message_target", "target_key", "state", "id"),
        # The per-person daily reminder budget.
        Index("ix_outbox_message_person", "person_id", "purpose", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(200))
    target_key: Mapped[str] = mapped_column(String(240))
    purpose: Mapped[str] = mapped_column(String(32))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("person.id"), default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    edit_of_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_message.id"), default=None)
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notice.id"), default=None)
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState, "outbox_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    platform_message_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Job(Base):
    """A durable scheduled job (reminder, digest, escalation) with a claim lease."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    due_at: Mapped[dt.datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notice.id"), default=None)
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"))
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime]
    done_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class RateWindow(Base):
    """Recent send times for one rate-limit key, shared by every worker through the database."""

    __tablename__ = "rate_window"

    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    sends: Mapped[list[Any]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime]


class AuditEvent(Base):
    """An append-only, hash-chained record of one state change."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    # How `hash` is computed: "sha256" (plain, rows written without an audit key) or
    # "hmac-sha256" (keyed). Once a row is keyed, every later row is.
    scheme: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row holding the audit chain's tip; locking it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # The id of the key the chain is written with (None until a keyed row is written).
    key_id: Mapped[str | None] = mapped_column(String(16), default=None)


class LocalMessage(Base):
    """One message in the built-in local group: a person's post, a bot post, or a bot DM."""

    __tablename__ = "local_message"
    __table_args__ = (UniqueConstraint("sender", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sender: Mapped[str] = mapped_column(String(64))
    to: Mapped[str | None] = mapped_column(String(64), default=None)
    text: Mapped[str] = mapped_column(Text)
    card: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    reply_to: Mapped[int | None] = mapped_column(Integer, default=None)
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None, unique=True)
    ts: Mapped[dt.datetime]
    edited_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class BotSetting(Base):
    """A value the bot generates once and keeps (e.g. the ack-link signing secret)."""

    __tablename__ = "bot_setting"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
