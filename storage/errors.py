"""Typed domain errors raised by the domain operations and queries."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A refusal by the domain: bad input or a forbidden transition; nothing was changed."""

    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.params: dict[str, Any] = params


class UnknownNotice(DomainError):
    """No notice has that id."""

    code = "unknown_notice"

    def __init__(self, notice_id: int) -> None:
        super().__init__(f"no notice #{notice_id}", notice_id=notice_id)


class UnknownPerson(DomainError):
    """One or more person ids are not in the directory."""

    code = "unknown_person"

    def __init__(self, person_ids: list[str]) -> None:
        super().__init__(
            "unknown person id(s): " + ", ".join(person_ids), person_ids=", ".join(person_ids)
        )


class UnknownDepartment(DomainError):
    """One or more departments have nobody in the directory."""

    code = "unknown_department"

    def __init__(self, departments: list[str]) -> None:
        super().__init__(
            "unknown department(s): " + ", ".join(departments), departments=", ".join(departments)
        )


class AudienceEmpty(DomainError):
    """The audience resolved to nobody."""

    code = "audience_empty"

    def __init__(self) -> None:
        super().__init__("the audience resolves to nobody")


class NotAssignee(DomainError):
    """The person is not an assignee of the notice."""

    code = "not_assignee"

    def __init__(self, notice_id: int, person_id: str) -> None:
        super().__init__(
            f"{person_id} is not an assignee of #{notice_id}",
            notice_id=notice_id,
            person_id=person_id,
        )


class NoticeClosed(DomainError):
    """The notice is closed or cancelled, so nothing about it can change."""

    code = "notice_closed"

    def __init__(self, notice_id: int, state: str) -> None:
        super().__init__(f"notice #{notice_id} is {state}", notice_id=notice_id, state=state)


class InvalidTransition(DomainError):
    """The assignment's state does not allow this action."""

    code = "invalid_transition"

    def __init__(self, notice_id: int, person_id: str, state: str, action: str) -> None:
        super().__init__(
            f"cannot {action} #{notice_id} for {person_id}: the assignment is {state}",
            notice_id=notice_id,
            person_id=person_id,
            state=state,
            action=action,
        )


class NotAllowed(DomainError):
    """The actor lacks the role this action needs."""

    code = "not_allowed"

    def __init__(self, action: str, needs: str) -> None:
        super().__init__(f"{action} needs the role {needs}", action=action, needs=needs)


class MissingResults(DomainError):
    """The notice requires an outcome and the report has no results (成效)."""

    code = "missing_results"

    def __init__(self, notice_id: int) -> None:
        super().__init__(f"#{notice_id} requires results (成效)", notice_id=notice_id)


class InvalidValue(DomainError):
    """A value given to an operation is out of range or malformed."""

    code = "invalid_value"

    def __init__(self, field: str, reason: str, *, why: str, **details: Any) -> None:
        # `reason` is the English sentence (the HTTP APIs answer it); `why` names the catalog
        # sentence (invalid.<why>) that chat and the CLI show instead, with `details`.
        super().__init__(f"{field}: {reason}", field=field, reason=reason, why=why, **details)
