"""Domain operations: the only code that changes state, each with its audit event.

Every operation runs inside the caller's transaction (``Database.transaction()``), so the
caller can add outbox rows to the same unit of work. Operations flush but never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.errors import (
    AudienceEmpty,
    InvalidTransition,
    InvalidValue,
    MissingResults,
    NotAllowed,
    NotAssignee,
    NoticeClosed,
    UnknownDepartment,
    UnknownNotice,
    UnknownPerson,
)
from storage.models import Assignment, Job, Notice, Outcome, Person, Reply
from storage.types import (
    AssignmentState,
    Channel,
    FeedbackKind,
    JobState,
    NoticeKind,
    NoticeSource,
    NoticeState,
    ReplyKind,
    Requires,
    Role,
    is_outstanding,
)

S = AssignmentState

TITLE_MAX = 500
DEADLINE_HORIZON = dt.timedelta(days=3653)  # a formal deadline is not decades away
TEXT_MAX = 20_000


@dataclass(frozen=True)
class Actor:
    """Who is acting: a person from the directory, or a trusted system surface."""

    id: str
    roles: frozenset[Role]
    person_id: str | None = None
    department: str | None = None

    @classmethod
    def system(cls, name: str) -> Actor:
        """A trusted surface (the CLI, the e-gov portal, the scheduler) with every role."""
        return cls(id=name, roles=frozenset(Role))

    @classmethod
    def of(cls, person: Person) -> Actor:
        """The actor for a directory person."""
        return cls(
            id=person.id,
            roles=frozenset(Role(r) for r in person.roles if r in Role._value2member_map_),
            person_id=person.id,
            department=person.department,
        )

    def has(self, *roles: Role) -> bool:
        """Whether the actor holds any of the roles (admin holds all)."""
        return Role.ADMIN in self.roles or any(r in self.roles for r in roles)

    def require(self, action: str, *roles: Role) -> None:
        """Raise NotAllowed unless the actor holds one of the roles."""
        if not self.has(*roles):
            raise NotAllowed(action, "|".join(r.value for r in roles))


@dataclass(frozen=True)
class Audience:
    """Who a notice is for: everybody, whole departments and/or named people."""

    all: bool = False
    departments: tuple[str, ...] = ()
    people: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The audience as stored on the notice."""
        return {"all": self.all, "departments": list(self.departments), "people": list(self.people)}


@dataclass(frozen=True)
class Metric:
    """One numeric result of an outcome, e.g. 发文数量 -30 %."""

    name: str
    value: float
    unit: str = ""


@dataclass(frozen=True)
class Change:
    """What an assignment operation did."""

    notice_id: int
    person_id: str
    assignment_id: int
    before: AssignmentState
    after: AssignmentState
    changed: bool = True
    acknowledged_now: bool = False
    late: bool = False
    reply_id: int | None = None
    outcome_id: int | None = None


@dataclass(frozen=True)
class NoticeDraft:
    """The fields of a new notice, before its audience is resolved."""

    title: str
    audience: Audience
    body: str = ""
    kind: NoticeKind = NoticeKind.NOTICE
    requires: Requires = Requires.ACK
    deadline: dt.datetime | None = None
    doc_number: str | None = None
    plan_ref: str | None = None
    source: NoticeSource = NoticeSource.CLI
    external_id: str | None = None
    payload_digest: str | None = None
    issuer_department: str | None = None
    issuer_name: str | None = None


def _clean(text: str | None, name: str, limit: int, *, required: bool = False) -> str | None:
    if text is None:
        if required:
            raise InvalidValue(name, "is required")
        return None
    text = text.strip()
    if required and not text:
        raise InvalidValue(name, "must not be empty")
    if len(text) > limit:
        raise InvalidValue(name, f"is longer than {limit} characters")
    return text


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidValue(name, "must carry a timezone")
    return value


async def resolve_audience(session: AsyncSession, audience: Audience) -> list[str]:
    """Resolve an audience to sorted person ids; unknown names are errors, nobody is too."""
    ids: set[str] = set()
    if audience.all:
        ids.update((await session.scalars(select(Person.id))).all())
    if audience.departments:
        wanted = set(audience.departments)
        rows = (
            await session.execute(
                select(Person.id, Person.department).where(Person.department.in_(wanted))
            )
        ).all()
        found = {dept for _, dept in rows}
        missing = sorted(wanted - found)
        if missing:
            raise UnknownDepartment(missing)
        ids.update(pid for pid, _ in rows)
    if audience.people:
        wanted = set(audience.people)
        found_ids = set(
            (await session.scalars(select(Person.id).where(Person.id.in_(wanted)))).all()
        )
        missing = sorted(wanted - found_ids)
        if missing:
            raise UnknownPerson(missing)
        ids.update(found_ids)
    if not ids:
        raise AudienceEmpty()
    return sorted(ids)


async def create_notice(
    session: AsyncSession, draft: NoticeDraft, *, actor: Actor, now: dt.datetime
) -> Notice:
    """Create a formal notice and one pending assignment per resolved audience member."""
    actor.require("create_notice", Role.OFFICE)
    title = _clean(draft.title, "title", TITLE_MAX, required=True)
    body = _clean(draft.body, "body", TEXT_MAX) or ""
    deadline = _aware(draft.deadline, "deadline")
    if deadline is not None and deadline <= now:
        raise InvalidValue("deadline", "is already past")
    if deadline is not None and deadline > now + DEADLINE_HORIZON:
        raise InvalidValue("deadline", "is more than 10 years away")
    person_ids = await resolve_audience(session, draft.audience)
    notice = Notice(
        kind=draft.kind,
        title=title,
        body=body,
        doc_number=_clean(draft.doc_number, "doc_number", 100) or None,
        plan_ref=_clean(draft.plan_ref, "plan_ref", 200) or None,
        source=draft.source,
        external_id=draft.external_id,
        payload_digest=draft.payload_digest,
        issuer_department=draft.issuer_department,
        issuer_name=draft.issuer_name,
        issuer_person_id=actor.person_id,
        audience=draft.audience.as_dict(),
        requires=draft.requires,
        state=NoticeState.OPEN,
        created_by=actor.id,
        created_at=now,
        deadline=deadline,
    )
    session.add(notice)
    await session.flush()
    outstanding = is_outstanding(NoticeState.OPEN, draft.requires, S.PENDING)
    await session.execute(
        insert(Assignment),
        [
            {
                "notice_id": notice.id,
                "person_id": pid,
                "state": S.PENDING,
                "outstanding": outstanding,
                "late": False,
                "updated_at": now,
            }
            for pid in person_ids
        ],
    )
    await audit.append(
        session,
        actor=actor.id,
        action="notice.create",
        entity="notice",
        entity_id=notice.id,
        data={
            "title": notice.title,
            "kind": notice.kind,
            "requires": notice.requires,
            "source": notice.source,
            "external_id": notice.external_id,
            "doc_number": notice.doc_number,
            "deadline": notice.deadline,
            "audience": notice.audience,
            "assignees": person_ids,
        },
        now=now,
    )
    return notice


async def _notice(session: AsyncSession, notice_id: int, *, exclusive: bool = False) -> Notice:
    """Load a notice, locked: shared for assignment changes, exclusive to close or cancel.

    The shared lock makes an acknowledgment and a concurrent close serialise on
    PostgreSQL, so nothing is ever recorded against a notice that was closed meanwhile.
    """
    stmt = select(Notice).where(Notice.id == notice_id).with_for_update(read=not exclusive)
    notice = (
        await session.execute(stmt.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    if notice is None:
        raise UnknownNotice(notice_id)
    return notice


async def _assignment(
    session: AsyncSession, notice_id: int, person_id: str
) -> tuple[Notice, Assignment]:
    notice = await _notice(session, notice_id)
    assignment = (
        await session.execute(
            select(Assignment)
            .where(Assignment.notice_id == notice_id, Assignment.person_id == person_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if assignment is None:
        if (await session.get(Person, person_id)) is None:
            raise UnknownPerson([person_id])
        raise NotAssignee(notice_id, person_id)
    if notice.state is not NoticeState.OPEN:
        raise NoticeClosed(notice_id, notice.state.value)
    return notice, assignment


def _check_self_or(actor: Actor, person_id: str, action: str, *roles: Role) -> None:
    """Assignees act for themselves; acting for someone else needs one of the roles."""
    if actor.person_id == person_id:
        return
    actor.require(action, *roles)


def _ack_fields(notice: Notice, a: Assignment, channel: Channel, now: dt.datetime) -> bool:
    """Stamp the acknowledgment on an assignment; returns whether this is its first ack."""
    if a.acknowledged_at is not None:
        return False
    a.acknowledged_at = now
    a.ack_channel = channel
    a.late = notice.deadline is not None and now > notice.deadline
    return True


def _set_state(notice: Notice, a: Assignment, state: AssignmentState, now: dt.datetime) -> None:
    a.state = state
    a.outstanding = is_outstanding(notice.state, notice.requires, state)
    a.updated_at = now


async def _reply(
    session: AsyncSession,
    a: Assignment,
    *,
    kind: ReplyKind,
    channel: Channel,
    actor: Actor,
    now: dt.datetime,
    text: str = "",
    percent: int | None = None,
    feedback_kind: FeedbackKind | None = None,
    message_ref: str | None = None,
) -> Reply:
    reply = Reply(
        assignment_id=a.id,
        kind=kind,
        channel=channel,
        text=text,
        percent=percent,
        feedback_kind=feedback_kind,
        message_ref=message_ref,
        actor=actor.id,
        created_at=now,
    )
    session.add(reply)
    await session.flush()
    return reply


async def _audit_change(
    session: AsyncSession,
    actor: Actor,
    action: str,
    a: Assignment,
    before: AssignmentState,
    now: dt.datetime,
    **data: Any,
) -> None:
    await audit.append(
        session,
        actor=actor.id,
        action=action,
        entity="assignment",
        entity_id=a.id,
        data={
            "notice_id": a.notice_id,
            "person_id": a.person_id,
            "from": before,
            "to": a.state,
            **data,
        },
        now=now,
    )


ACKABLE = frozenset({S.PENDING, S.EXCUSED})


async def acknowledge(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    channel: Channel,
    actor: Actor,
    now: dt.datetime,
    text: str = "",
    message_ref: str | None = None,
) -> Change:
    """Record 收到 from a person; a repeated ack changes nothing and says so."""
    _check_self_or(actor, person_id, "acknowledge", Role.OFFICE)
    notice, a = await _assignment(session, notice_id, person_id)
    before = a.state
    if before not in ACKABLE:
        return Change(notice_id, person_id, a.id, before, before, changed=False, late=a.late)
    acked_now = _ack_fields(notice, a, channel, now)
    _set_state(notice, a, S.ACKNOWLEDGED, now)
    reply = await _reply(
        session,
        a,
        kind=ReplyKind.ACK,
        channel=channel,
        actor=actor,
        now=now,
        text=text,
        message_ref=message_ref,
    )
    await _audit_change(
        session, actor, "assignment.acknowledge", a, before, now, channel=channel, late=a.late
    )
    return Change(
        notice_id,
        person_id,
        a.id,
        before,
        a.state,
        acknowledged_now=acked_now,
        late=a.late,
        reply_id=reply.id,
    )


async def phone_ack(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    actor: Actor,
    now: dt.datetime,
    note: str = "",
) -> Change:
    """The office records an acknowledgment given by phone."""
    actor.require("phone_ack", Role.OFFICE)
    return await acknowledge(
        session, notice_id, person_id, channel=Channel.PHONE, actor=actor, now=now, text=note
    )


PROGRESSABLE = frozenset({S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED, S.EXCUSED})


async def report_progress(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    text: str,
    percent: int | None,
    channel: Channel,
    actor: Actor,
    now: dt.datetime,
    message_ref: str | None = None,
) -> Change:
    """Record a progress report; the first one also counts as the acknowledgment."""
    _check_self_or(actor, person_id, "report_progress", Role.OFFICE)
    if percent is not None and not 0 <= percent <= 100:
        raise InvalidValue("percent", "must be between 0 and 100")
    text = _clean(text, "text", TEXT_MAX) or ""
    notice, a = await _assignment(session, notice_id, person_id)
    before = a.state
    if before not in PROGRESSABLE:
        raise InvalidTransition(notice_id, person_id, before.value, "report_progress")
    acked_now = _ack_fields(notice, a, channel, now)
    if a.started_at is None:
        a.started_at = now
    a.progress_percent = percent
    a.progress_text = text
    a.progress_at = now
    _set_state(notice, a, S.IN_PROGRESS, now)
    reply = await _reply(
        session,
        a,
        kind=ReplyKind.PROGRESS,
        channel=channel,
        actor=actor,
        now=now,
        text=text,
        percent=percent,
        message_ref=message_ref,
    )
    await _audit_change(
        session,
        actor,
        "assignment.progress",
        a,
        before,
        now,
        percent=percent,
        text=text,
        channel=channel,
        implied_ack=acked_now,
    )
    return Change(
        notice_id,
        person_id,
        a.id,
        before,
        a.state,
        acknowledged_now=acked_now,
        late=a.late,
        reply_id=reply.id,
    )


COMPLETABLE = frozenset({S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED, S.EXCUSED})


async def record_outcome(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    measures: Sequence[str],
    results: str,
    metrics: Iterable[Metric] = (),
    channel: Channel,
    actor: Actor,
    now: dt.datetime,
    text: str = "",
    message_ref: str | None = None,
) -> Change:
    """Mark the assignment done with its outcome (措施, 成效, metrics); done implies the ack."""
    _check_self_or(actor, person_id, "record_outcome", Role.OFFICE)
    clean_measures = [m.strip() for m in measures if m.strip()]
    results = _clean(results, "results", TEXT_MAX) or ""
    metric_rows = [{"name": m.name, "value": m.value, "unit": m.unit} for m in metrics]
    notice, a = await _assignment(session, notice_id, person_id)
    before = a.state
    if before not in COMPLETABLE:
        raise InvalidTransition(notice_id, person_id, before.value, "record_outcome")
    if notice.requires is Requires.OUTCOME and not results:
        raise MissingResults(notice_id)
    acked_now = _ack_fields(notice, a, channel, now)
    if a.started_at is None:
        a.started_at = now
    a.done_at = now
    _set_state(notice, a, S.DONE, now)
    outcome = Outcome(
        assignment_id=a.id,
        measures=clean_measures,
        results=results,
        metrics=metric_rows,
        created_at=now,
    )
    session.add(outcome)
    reply = await _reply(
        session,
        a,
        kind=ReplyKind.OUTCOME,
        channel=channel,
        actor=actor,
        now=now,
        text=_clean(text, "text", TEXT_MAX) or "",
        message_ref=message_ref,
    )
    await _audit_change(
        session,
        actor,
        "assignment.done",
        a,
        before,
        now,
        measures=clean_measures,
        results=results,
        metrics=metric_rows,
        channel=channel,
        implied_ack=acked_now,
    )
    return Change(
        notice_id,
        person_id,
        a.id,
        before,
        a.state,
        acknowledged_now=acked_now,
        late=a.late,
        reply_id=reply.id,
        outcome_id=outcome.id,
    )


async def feedback(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    kind: FeedbackKind,
    text: str,
    channel: Channel,
    actor: Actor,
    now: dt.datetime,
    message_ref: str | None = None,
) -> Change:
    """Record an assignee's feedback (deadline too tight, duplicate demand, …)."""
    _check_self_or(actor, person_id, "feedback", Role.OFFICE)
    text = _clean(text, "text", TEXT_MAX) or ""
    _, a = await _assignment(session, notice_id, person_id)
    reply = await _reply(
        session,
        a,
        kind=ReplyKind.FEEDBACK,
        channel=channel,
        actor=actor,
        now=now,
        text=text,
        feedback_kind=kind,
        message_ref=message_ref,
    )
    await _audit_change(
        session,
        actor,
        "assignment.feedback",
        a,
        a.state,
        now,
        kind=kind,
        text=text,
        channel=channel,
    )
    return Change(notice_id, person_id, a.id, a.state, a.state, changed=False, reply_id=reply.id)


EXCUSABLE = frozenset({S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED})


async def excuse(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    reason: str,
    actor: Actor,
    now: dt.datetime,
) -> Change:
    """Excuse a person (leave, delegation); a head may excuse only their own department."""
    actor.require("excuse", Role.OFFICE, Role.HEAD)
    reason = _clean(reason, "reason", TEXT_MAX, required=True) or ""
    notice, a = await _assignment(session, notice_id, person_id)
    if not actor.has(Role.OFFICE):
        person = await session.get(Person, person_id)
        if person is None or person.department != actor.department:
            raise NotAllowed("excuse", "office")
    before = a.state
    if before not in EXCUSABLE:
        raise InvalidTransition(notice_id, person_id, before.value, "excuse")
    a.excused_at = now
    a.excuse_reason = reason
    _set_state(notice, a, S.EXCUSED, now)
    await _audit_change(session, actor, "assignment.excuse", a, before, now, reason=reason)
    return Change(notice_id, person_id, a.id, before, a.state)


async def return_assignment(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    reason: str,
    actor: Actor,
    now: dt.datetime,
) -> Change:
    """The office sends a done assignment back; it re-enters in_progress on the next report."""
    actor.require("return", Role.OFFICE)
    reason = _clean(reason, "reason", TEXT_MAX, required=True) or ""
    notice, a = await _assignment(session, notice_id, person_id)
    before = a.state
    if before is not S.DONE:
        raise InvalidTransition(notice_id, person_id, before.value, "return")
    a.returned_at = now
    a.return_reason = reason
    a.done_at = None
    _set_state(notice, a, S.RETURNED, now)
    await _audit_change(session, actor, "assignment.return", a, before, now, reason=reason)
    return Change(notice_id, person_id, a.id, before, a.state)


async def verify(
    session: AsyncSession, notice_id: int, person_id: str, *, actor: Actor, now: dt.datetime
) -> Change:
    """The office confirms a done assignment."""
    actor.require("verify", Role.OFFICE)
    notice, a = await _assignment(session, notice_id, person_id)
    before = a.state
    if before is not S.DONE:
        raise InvalidTransition(notice_id, person_id, before.value, "verify")
    a.verified_at = now
    _set_state(notice, a, S.VERIFIED, now)
    await _audit_change(session, actor, "assignment.verify", a, before, now)
    return Change(notice_id, person_id, a.id, before, a.state)


async def _finish_notice(
    session: AsyncSession,
    notice_id: int,
    state: NoticeState,
    action: str,
    actor: Actor,
    now: dt.datetime,
    reason: str,
) -> Notice:
    actor.require(action, Role.OFFICE)
    notice = await _notice(session, notice_id, exclusive=True)
    if notice.state is not NoticeState.OPEN:
        raise NoticeClosed(notice_id, notice.state.value)
    notice.state = state
    notice.closed_at = now
    await session.execute(
        update(Assignment)
        .where(Assignment.notice_id == notice_id, Assignment.outstanding.is_(True))
        .values(outstanding=False)
        .execution_options(synchronize_session=False)
    )
    dropped = (
        await session.execute(
            update(Job)
            .where(Job.notice_id == notice_id, Job.state == JobState.SCHEDULED)
            .values(state=JobState.CANCELLED, done_at=now)
            .execution_options(synchronize_session=False)
        )
    ).rowcount  # type: ignore[attr-defined]
    await audit.append(
        session,
        actor=actor.id,
        action=f"notice.{action}",
        entity="notice",
        entity_id=notice.id,
        data={"to": state, "reason": reason, "jobs_dropped": int(dropped or 0)},
        now=now,
    )
    await session.flush()
    return notice


async def close_notice(
    session: AsyncSession, notice_id: int, *, actor: Actor, now: dt.datetime, reason: str = ""
) -> Notice:
    """Close a notice (办结): nothing more can change and its reminders are dropped."""
    return await _finish_notice(session, notice_id, NoticeState.CLOSED, "close", actor, now, reason)


async def cancel_notice(
    session: AsyncSession, notice_id: int, *, actor: Actor, now: dt.datetime, reason: str = ""
) -> Notice:
    """Cancel a notice (撤回): nothing more can change and its reminders are dropped."""
    return await _finish_notice(
        session, notice_id, NoticeState.CANCELLED, "cancel", actor, now, reason
    )
