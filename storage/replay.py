"""Replaying the audit trail: the notices and assignments its events leave behind, compared
with the stored tables, so that a row changed outside the domain operations (an `UPDATE
notice SET state = 'closed'` typed into the database) is named.

Every event that creates or changes a notice or an assignment has always recorded what
the replay needs: `notice.create` the notice's fields and its assignees (each starts
pending), `notice.close` and `notice.cancel` the notice's new state, and every
`assignment.*` event the notice, the person and the state it left the assignment in.
Assignments are keyed by (notice, person), which the table holds unique.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.audit import StoredEvent, jsonable
from storage.models import Assignment, Notice, Person
from storage.types import AssignmentState, NoticeState, Requires, is_outstanding

# The fields notice.create records, compared with the stored notice (none changes after).
NOTICE_FIELDS = (
    "title",
    "kind",
    "requires",
    "source",
    "external_id",
    "doc_number",
    "deadline",
    "audience",
)
NOTICE_END = frozenset({"notice.close", "notice.cancel"})
STREAM = 2000


@dataclass(slots=True)
class _Notice:
    """A notice as the trail leaves it."""

    seq: int  # the event that created it
    state: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Finding:
    """A stored row that the trail does not explain, or a row the trail made that is gone.

    `code`: notice_unexplained, notice_missing, notice_state, notice_field,
    assignment_unexplained, assignment_missing, assignment_state, assignment_outstanding.
    `name` is the person's name for an assignment (None when the directory no longer has
    them). `params` carries what the message needs (stored and replayed values, a seq).
    """

    code: str
    notice_id: int
    name: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayResult:
    """What the comparison found, and how many rows of each table it compared."""

    findings: list[Finding]
    notices: int
    assignments: int

    @property
    def ok(self) -> bool:
        """Whether every stored row is what the trail says it should be."""
        return not self.findings


def _text(value: Any) -> str:
    return sys.intern(str(value))


class Replay:
    """Follows the audit events in sequence order (feed each one), then compares."""

    def __init__(self) -> None:
        self.notices: dict[int, _Notice] = {}
        # (notice id, person id) -> (state, the seq of the event that left it so)
        self.assignments: dict[tuple[int, str], tuple[str, int]] = {}

    def feed(self, event: StoredEvent) -> None:
        """Apply one event (events about anything else are ignored)."""
        action, data = event.action, event.data
        if not isinstance(data, dict):
            return
        if action == "notice.create" and event.entity_id.isdigit():
            notice_id = int(event.entity_id)
            fields = {name: data[name] for name in NOTICE_FIELDS if name in data}
            self.notices[notice_id] = _Notice(event.seq, NoticeState.OPEN.value, fields)
            pending = (AssignmentState.PENDING.value, event.seq)
            for person_id in data.get("assignees") or ():
                self.assignments[(notice_id, _text(person_id))] = pending
        elif action in NOTICE_END and event.entity_id.isdigit():
            notice = self.notices.get(int(event.entity_id))
            if notice is not None:
                default = "closed" if action == "notice.close" else "cancelled"
                notice.state = _text(data.get("to", default))
        elif event.entity == "assignment" and "to" in data:
            try:
                key = (int(data["notice_id"]), _text(data["person_id"]))
            except (KeyError, TypeError, ValueError):
                return
            self.assignments[key] = (_text(data["to"]), event.seq)

    async def compare(self, session: AsyncSession) -> ReplayResult:
        """Compare the replayed state with the notice and assignment tables (streamed, in a
        `db.read(snapshot=True)` session). Consumes the replay."""
        findings: list[Finding] = []
        notices = await self._compare_notices(session, findings)
        assignments = await self._compare_assignments(session, findings)
        findings.sort(key=lambda f: (f.notice_id, f.name or "", f.code))
        return ReplayResult(findings, notices, assignments)

    async def _compare_notices(self, session: AsyncSession, findings: list[Finding]) -> int:
        columns = [getattr(Notice, name) for name in NOTICE_FIELDS]
        rows = await session.stream(
            select(Notice.id, Notice.state, *columns)
            .order_by(Notice.id)
            .execution_options(yield_per=STREAM)
        )
        seen: set[int] = set()
        count = 0
        async for partition in rows.partitions():
            for notice_id, state, *values in partition:
                count += 1
                seen.add(notice_id)
                replayed = self.notices.get(notice_id)
                if replayed is None:
                    findings.append(Finding("notice_unexplained", notice_id))
                    continue
                if state.value != replayed.state:
                    params = {"stored": state.value, "replayed": replayed.state}
                    findings.append(Finding("notice_state", notice_id, params=params))
                for name, value in zip(NOTICE_FIELDS, values, strict=True):
                    if name in replayed.fields and jsonable(value) != replayed.fields[name]:
                        params = {"field": name, "seq": replayed.seq}
                        findings.append(Finding("notice_field", notice_id, params=params))
        for notice_id, replayed in self.notices.items():
            if notice_id not in seen:
                params = {"seq": replayed.seq}
                findings.append(Finding("notice_missing", notice_id, params=params))
        return count

    def _expected_outstanding(self, notice_id: int, state: str) -> bool | None:
        notice = self.notices.get(notice_id)
        if notice is None:
            return None
        try:
            return is_outstanding(
                NoticeState(notice.state),
                Requires(str(notice.fields.get("requires"))),
                AssignmentState(state),
            )
        except ValueError:
            return None

    async def _compare_assignments(self, session: AsyncSession, findings: list[Finding]) -> int:
        rows = await session.stream(
            select(
                Assignment.notice_id,
                Assignment.person_id,
                Assignment.state,
                Assignment.outstanding,
                Person.name,
            )
            .join(Person, Person.id == Assignment.person_id)
            .order_by(Assignment.notice_id, Assignment.person_id)
            .execution_options(yield_per=STREAM)
        )
        count = 0
        async for partition in rows.partitions():
            for notice_id, person_id, state, outstanding, name in partition:
                count += 1
                replayed = self.assignments.pop((notice_id, person_id), None)
                if replayed is None:
                    findings.append(Finding("assignment_unexplained", notice_id, name))
                    continue
                replayed_state, seq = replayed
                if state.value != replayed_state:
                    params = {"stored": state.value, "replayed": replayed_state, "seq": seq}
                    findings.append(Finding("assignment_state", notice_id, name, params))
                    continue
                expected = self._expected_outstanding(notice_id, replayed_state)
                if expected is not None and bool(outstanding) != expected:
                    params = {"stored": bool(outstanding), "replayed": expected}
                    findings.append(Finding("assignment_outstanding", notice_id, name, params))
        left = self.assignments
        names = await _names(session, {person_id for _, person_id in left})
        for (notice_id, person_id), (_, seq) in left.items():
            params = {"seq": seq}
            findings.append(Finding("assignment_missing", notice_id, names.get(person_id), params))
        self.assignments = {}
        return count


async def _names(session: AsyncSession, person_ids: Iterable[str]) -> dict[str, str]:
    """The directory names of these people (those it still has)."""
    ids = sorted(person_ids)
    names: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await session.execute(select(Person.id, Person.name).where(Person.id.in_(chunk)))
        names.update({person_id: name for person_id, name in rows.all()})
    return names
