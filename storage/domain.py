"""Domain operations: the only code that changes state, each with its audit event.

Every operation runs inside the caller's transaction (``Database.transaction()``), so the
caller can add outbox rows to the same unit of work. Operations flush but never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack

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


class Via(TypedDict):
    """How an assignee's words reached the bot, the keyword arguments shared by the reply
    operations (acknowledge, report_progress, record_outcome, feedback): the channel, who
    acts, when, and the platform's reference of the chat message, if any."""

    channel: Channel
    actor: Actor
    now: dt.datetime
    message_ref: NotRequired[str | None]


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
            raise InvalidValue(name, "is required", why="required")
        return None
    text = text.strip()
    if required and not text:
        raise InvalidValue(name, "must not be empty", why="empty")
    if len(text) > limit:
        raise InvalidValue(name, f"is longer than {limit} characters", why="too_long", limit=limit)
    return text


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidValue(name, "must carry a timezone", why="naive_time")
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
        raise InvalidValue("deadline", "is already past", why="past")
    if deadline is not None and deadline > now + DEADLINE_HORIZON:
        raise InvalidValue("deadline", "is more than 10 years away", why="too_far")
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


@dataclass(slots=True)
class _Op:
    """An assignment operation under way: the locked notice and assignment, who acts, when.

    Each operation checks and changes the assignment through it, then ends with record().
    """

    session: AsyncSession
    notice: Notice
    a: Assignment
    actor: Actor
    now: dt.datetime

    def allow(self, states: frozenset[AssignmentState], action: str) -> None:
        """Refuse the action unless the assignment is in one of the states."""
        if self.a.state not in states:
            raise InvalidTransition(self.notice.id, self.a.person_id, self.a.state.value, action)

    def ack(self, channel: Channel) -> bool:
        """Stamp the acknowledgment on the assignment; whether this is its first ack."""
        a = self.a
        if a.acknowledged_at is not None:
            return False
        a.acknowledged_at = self.now
        a.ack_channel = channel
        a.late = self.notice.deadline is not None and self.now > self.notice.deadline
        return True

    def start(self, channel: Channel) -> bool:
        """Reported work (progress, outcome) implies the ack and the start; whether this is
        the first ack."""
        acked_now = self.ack(channel)
        if self.a.started_at is None:
            self.a.started_at = self.now
        return acked_now

    async def record(
        self,
        action: str,
        to: AssignmentState | None,
        data: dict[str, Any],
        said: Reply | None = None,
        acked_now: bool | None = None,
        outcome: Outcome | None = None,
    ) -> Change:
        """End the operation: move the assignment to state `to` (None keeps its state), write
        the reply row of what was said, if anything, and the audit event `assignment.<action>`
        with `data`; what changed.

        `said` is a Reply without its assignment, actor and time (filled in here); `outcome`
        an Outcome already added to the session. `acked_now` is None for operations that do
        not acknowledge, whose Change is then never late.
        """
        session, notice, a, now = self.session, self.notice, self.a, self.now
        before = a.state
        if to is not None:
            a.state = to
            a.outstanding = is_outstanding(notice.state, notice.requires, to)
            a.updated_at = now
        if said is not None:
            said.assignment_id = a.id
            said.actor = self.actor.id
            said.created_at = now
            session.add(said)
            await session.flush()
        await audit.append(
            session,
            actor=self.actor.id,
            action=f"assignment.{action}",
            entity="assignment",
            entity_id=a.id,
            data={"notice_id": a.notice_id, "person_id": a.person_id, "from": before, "to": a.state}
            | data,
            now=now,
        )
        return Change(
            notice.id,
            a.person_id,
            a.id,
            before,
            a.state,
            changed=to is not None,
            acknowledged_now=bool(acked_now),
            late=acked_now is not None and a.late,
            reply_id=None if said is None else said.id,
            outcome_id=None if outcome is None else outcome.id,
        )


async def _begin(
    session: AsyncSession, notice_id: int, person_id: str, actor: Actor, now: dt.datetime
) -> _Op:
    """Begin an operation on a person's assignment of an open notice (both locked)."""
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
    return _Op(session, notice, assignment, actor, now)


def _check_self_or(actor: Actor, person_id: str, action: str, *roles: Role) -> None:
    """Assignees act for themselves; acting for someone else needs one of the roles."""
    if actor.person_id == person_id:
        return
    actor.require(action, *roles)


ACKABLE = frozenset({S.PENDING, S.EXCUSED})


async def acknowledge(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    text: str = "",
    **via: Unpack[Via],
) -> Change:
    """Record 收到 from a person; a repeated ack changes nothing and says so."""
    channel, actor, now = via["channel"], via["actor"], via["now"]
    _check_self_or(actor, person_id, "acknowledge", Role.OFFICE)
    op = await _begin(session, notice_id, person_id, actor, now)
    a = op.a
    if a.state not in ACKABLE:
        return Change(notice_id, person_id, a.id, a.state, a.state, changed=False, late=a.late)
    acked_now = op.ack(channel)
    said = Reply(kind=ReplyKind.ACK, channel=channel, text=text, message_ref=via.get("message_ref"))
    data = {"channel": channel, "late": a.late}
    return await op.record("acknowledge", S.ACKNOWLEDGED, data, said, acked_now)


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
    **via: Unpack[Via],
) -> Change:
    """Record a progress report; the first one also counts as the acknowledgment."""
    channel, actor, now = via["channel"], via["actor"], via["now"]
    _check_self_or(actor, person_id, "report_progress", Role.OFFICE)
    if percent is not None and not 0 <= percent <= 100:
        raise InvalidValue("percent", "must be between 0 and 100", why="percent")
    text = _clean(text, "text", TEXT_MAX) or ""
    op = await _begin(session, notice_id, person_id, actor, now)
    op.allow(PROGRESSABLE, "report_progress")
    acked_now = op.start(channel)
    op.a.progress_percent = percent
    op.a.progress_text = text
    op.a.progress_at = now
    said = Reply(
        kind=ReplyKind.PROGRESS,
        channel=channel,
        text=text,
        percent=percent,
        message_ref=via.get("message_ref"),
    )
    data = {"percent": percent, "text": text, "channel": channel, "implied_ack": acked_now}
    return await op.record("progress", S.IN_PROGRESS, data, said, acked_now)


COMPLETABLE = frozenset({S.PENDING, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED, S.EXCUSED})


async def record_outcome(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    measures: Sequence[str],
    results: str,
    metrics: Iterable[Metric] = (),
    text: str = "",
    **via: Unpack[Via],
) -> Change:
    """Mark the assignment done with its outcome (措施, 成效, metrics); done implies the ack."""
    channel, actor, now = via["channel"], via["actor"], via["now"]
    _check_self_or(actor, person_id, "record_outcome", Role.OFFICE)
    clean_measures = [m.strip() for m in measures if m.strip()]
    results = _clean(results, "results", TEXT_MAX) or ""
    metric_rows = [{"name": m.name, "value": m.value, "unit": m.unit} for m in metrics]
    op = await _begin(session, notice_id, person_id, actor, now)
    op.allow(COMPLETABLE, "record_outcome")
    if op.notice.requires is Requires.OUTCOME and not results:
        raise MissingResults(notice_id)
    acked_now = op.start(channel)
    op.a.done_at = now
    outcome = Outcome(
        assignment_id=op.a.id,
        measures=clean_measures,
        results=results,
        metrics=metric_rows,
        created_at=now,
    )
    session.add(outcome)
    text = _clean(text, "text", TEXT_MAX) or ""
    said = Reply(
        kind=ReplyKind.OUTCOME, channel=channel, text=text, message_ref=via.get("message_ref")
    )
    data = {
        "measures": clean_measures,
        "results": results,
        "metrics": metric_rows,
        "channel": channel,
        "implied_ack": acked_now,
    }
    return await op.record("done", S.DONE, data, said, acked_now, outcome)


async def feedback(
    session: AsyncSession,
    notice_id: int,
    person_id: str,
    *,
    kind: FeedbackKind,
    text: str,
    **via: Unpack[Via],
) -> Change:
    """Record an assignee's feedback (deadline too tight, duplicate demand, …)."""
    channel, actor, now = via["channel"], via["actor"], via["now"]
    _check_self_or(actor, person_id, "feedback", Role.OFFICE)
    text = _clean(text, "text", TEXT_MAX) or ""
    op = await _begin(session, notice_id, person_id, actor, now)
    said = Reply(
        kind=ReplyKind.FEEDBACK,
        channel=channel,
        text=text,
        feedback_kind=kind,
        message_ref=via.get("message_ref"),
    )
    data = {"kind": kind, "text": text, "channel": channel}
    return await op.record("feedback", None, data, said)


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
    op = await _begin(session, notice_id, person_id, actor, now)
    if not actor.has(Role.OFFICE):
        person = await session.get(Person, person_id)
        if person is None or person.department != actor.department:
            raise NotAllowed("excuse", "office")
    op.allow(EXCUSABLE, "excuse")
    op.a.excused_at = now
    op.a.excuse_reason = reason
    return await op.record("excuse", S.EXCUSED, {"reason": reason})


REVIEWABLE = frozenset({S.DONE})  # what the office can return or verify


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
    op = await _begin(session, notice_id, person_id, actor, now)
    op.allow(REVIEWABLE, "return")
    op.a.returned_at = now
    op.a.return_reason = reason
    op.a.done_at = None
    return await op.record("return", S.RETURNED, {"reason": reason})


async def verify(
    session: AsyncSession, notice_id: int, person_id: str, *, actor: Actor, now: dt.datetime
) -> Change:
    """The office confirms a done assignment."""
    actor.require("verify", Role.OFFICE)
    op = await _begin(session, notice_id, person_id, actor, now)
    op.allow(REVIEWABLE, "verify")
    op.a.verified_at = now
    return await op.record("verify", S.VERIFIED, {})


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
