"""The e-government portal API (docs/egov-api.md): signed, validated, idempotent by external_id.

Every request is signed (bot/core/portal_signing.py). A notice pushed by the portal is created and
posted to the group through the outbox in one transaction; the same external_id with the same
body answers 200 with the same id, with a different body 409. Concurrent duplicates are
settled by the (source, external_id) unique constraint, not by timing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from bot.core import jsonbody
from bot.core import portal_signing as signing
from bot.core.appkeys import BOT, CONFIG, DATABASE, EGOV_SECRET
from bot.core.field_errors import field_problems
from bot.core.notices import publish_notice
from handlers.refusals import domain_message
from storage import lookups, queries
from storage.db import Conflict
from storage.domain import Actor, Audience, NoticeDraft
from storage.errors import (
    AudienceEmpty,
    DomainError,
    InvalidValue,
    UnknownDepartment,
    UnknownNotice,
    UnknownPerson,
)
from storage.types import NoticeKind, NoticeSource, Requires

log = logging.getLogger("workbot.egov")

ACTOR = Actor.system("egov")

MAX_NOTICE_ID = 2**31 - 1  # the id column is a 32-bit integer (PostgreSQL refuses more)


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


Plain = Annotated[str, AfterValidator(_no_nul)]
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_no_nul)
]


class Issuer(BaseModel):
    """Who issued the notice at the portal."""

    model_config = ConfigDict(extra="forbid")

    department: Annotated[Text, Field(max_length=100)]
    name: Annotated[Plain, Field(max_length=100)] | None = None


class AudienceAll(BaseModel):
    """Everyone in the directory."""

    model_config = ConfigDict(extra="forbid")

    all: Literal[True]


class AudienceSome(BaseModel):
    """Departments and/or people (directory ids); at least one of them."""

    model_config = ConfigDict(extra="forbid")

    departments: Annotated[list[Annotated[Text, Field(max_length=100)]], Field(max_length=500)] = []
    people: Annotated[list[Annotated[Text, Field(max_length=64)]], Field(max_length=10_000)] = []

    @model_validator(mode="after")
    def _not_empty(self) -> AudienceSome:
        if not self.departments and not self.people:
            raise ValueError('give departments and/or people, or {"all": true}')
        return self


def _audience_kind(value: Any) -> str | None:
    """Which audience form a value is, so that errors name only that form's fields."""
    if isinstance(value, AudienceAll | AudienceSome):
        return "all" if isinstance(value, AudienceAll) else "some"
    if isinstance(value, dict):
        return "all" if "all" in value else "some"
    return None


class EgovNotice(BaseModel):
    """POST /egov/v1/notices: a formal notice or task pushed by the portal."""

    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[Text, Field(max_length=200)]
    doc_number: Annotated[Plain, Field(max_length=100)] | None = None
    kind: NoticeKind = NoticeKind.NOTICE
    title: Annotated[Text, Field(max_length=500)]
    body: Annotated[Plain, Field(max_length=20_000)] = ""
    issuer: Issuer
    deadline: AwareDatetime | None = None
    requires: Requires = Requires.ACK
    audience: Annotated[
        Annotated[AudienceAll, Tag("all")] | Annotated[AudienceSome, Tag("some")],
        Discriminator(
            _audience_kind,
            custom_error_type="invalid_audience",
            custom_error_message='must be {"all": true} or {"departments": [...], "people": [...]}',
        ),
    ]
    plan_ref: Annotated[Plain, Field(max_length=200)] | None = None


class NoticeCreated(BaseModel):
    """201 (created) or 200 (the same external_id and body again)."""

    id: int
    status_url: str


class Counts(BaseModel):
    """How many assignees are in each state."""

    assigned: int
    acknowledged: int
    in_progress: int
    done: int
    overdue: int


class OutcomeDoc(BaseModel):
    """An assignee's reported outcome: 采取的措施, 取得的成效 and metrics."""

    measures: list[str]
    results: str
    metrics: list[dict[str, Any]]
    reported_at: dt.datetime


class AssigneeDoc(BaseModel):
    """One assignee's state."""

    person: str
    name: str
    department: str
    state: str
    acknowledged_at: dt.datetime | None
    channel: str | None
    last_progress: str | None
    progress_percent: int | None
    overdue: bool
    outcome: OutcomeDoc | None


class NoticeStatusDoc(BaseModel):
    """GET /egov/v1/notices/{id}: the per-person status of a notice."""

    id: int
    external_id: str | None
    title: str
    state: str
    deadline: dt.datetime | None
    counts: Counts
    assignees: list[AssigneeDoc]


class ErrorField(BaseModel):
    """One invalid field."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """The error object."""

    code: str
    message: str
    fields: list[ErrorField] | None = None


class ErrorDoc(BaseModel):
    """Every error answer: {"error": {...}}."""

    error: ErrorBody


NOTICE_IN = TypeAdapter(EgovNotice)


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The contract's error body."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def refuse(
    request: web.Request, status: int, code: str, message: str, **extra: Any
) -> web.Response:
    """A refusal, with its one warning line (never the secret, never the body)."""
    log.warning(
        "e-gov %s %s refused: %s %s (%s)", request.method, request.path_qs, status, code, message
    )
    return error(status, code, message, **extra)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A dotted field path, without pydantic's tags for the audience forms and validators."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "audience" and parts[1] in ("all", "some"):
        del parts[1]
    shown = [str(p) for p in parts if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(shown) or "body"


async def _signed_body(request: web.Request) -> bytes | web.Response:
    """The raw body of a correctly signed request, or the refusal."""
    secret = request.app[EGOV_SECRET]
    if not secret:
        return refuse(request, 404, "egov_disabled", request.app[BOT].t("egov.disabled"))
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].server.max_body_bytes
        message = request.app[BOT].t("egov.too_large", limit=limit)
        return refuse(request, 413, "request_entity_too_large", message)
    try:
        signing.verify_request(
            secret,
            request,
            body,
            now=time.time(),
            max_skew=request.app[CONFIG].egov.max_skew_seconds,
        )
    except signing.SignatureError as exc:
        return refuse(request, 401, exc.code, request.app[BOT].t(f"egov.{exc.code}"))
    return body


def digest(notice: EgovNotice) -> str:
    """The identity of a request body for idempotency: its validated, canonical JSON."""
    canonical = json.dumps(
        notice.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def draft_of(notice: EgovNotice, payload_digest: str) -> NoticeDraft:
    """The domain draft for a portal notice."""
    if isinstance(notice.audience, AudienceAll):
        audience = Audience(all=True)
    else:
        audience = Audience(
            departments=tuple(notice.audience.departments), people=tuple(notice.audience.people)
        )
    return NoticeDraft(
        title=notice.title,
        body=notice.body,
        audience=audience,
        kind=notice.kind,
        requires=notice.requires,
        deadline=notice.deadline,
        doc_number=notice.doc_number or None,
        plan_ref=notice.plan_ref or None,
        source=NoticeSource.EGOV,
        external_id=notice.external_id,
        payload_digest=payload_digest,
        issuer_department=notice.issuer.department,
        issuer_name=notice.issuer.name,
    )


async def _existing(request: web.Request, external_id: str) -> tuple[int, str | None] | None:
    async with request.app[DATABASE].read() as session:
        return await lookups.portal_notice(session, external_id)


def _created(notice_id: int, status: int) -> web.Response:
    body = NoticeCreated(id=notice_id, status_url=f"/egov/v1/notices/{notice_id}")
    return web.json_response(body.model_dump(), status=status)


def _repeat(request: web.Request, found: tuple[int, str | None], wanted: str) -> web.Response:
    notice_id, stored = found
    if stored == wanted:
        return _created(notice_id, 200)
    return refuse(
        request,
        409,
        "external_id_conflict",
        request.app[BOT].t("egov.external_id_conflict", id=notice_id),
        id=notice_id,
    )


def _domain_refusal(request: web.Request, exc: DomainError) -> web.Response:
    message = domain_message(request.app[BOT].t, exc)
    fields: list[dict[str, str]] | None = None
    if isinstance(exc, UnknownPerson | UnknownDepartment):
        where = "audience.people" if isinstance(exc, UnknownPerson) else "audience.departments"
        fields = [{"field": where, "message": message}]
    elif isinstance(exc, InvalidValue):
        fields = [{"field": str(exc.params.get("field", "body")), "message": message}]
    extra: dict[str, Any] = {"fields": fields} if fields is not None else {}
    return refuse(request, 400, exc.code, message, **extra)


async def create_notice(request: web.Request) -> web.Response:
    """POST /egov/v1/notices."""
    if request.content_type != "application/json":
        message = request.app[BOT].t("local.not_json")
        return refuse(request, 415, "unsupported_media_type", message)
    body = await _signed_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        jsonbody.check_unique_keys(body)
    except jsonbody.DuplicateKey as exc:
        message = request.app[BOT].t("http.duplicate_key", key=exc.key)
        return refuse(request, 400, "duplicate_key", message)
    try:
        notice = NOTICE_IN.validate_json(body)
    except ValidationError as exc:
        t = request.app[BOT].t
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return refuse(request, 400, "invalid_json", t("local.invalid_json"))
        return refuse(
            request,
            400,
            "invalid_body",
            t("local.invalid_body"),
            fields=field_problems(exc, t, _field_path),
        )
    wanted = digest(notice)
    ctx = request.app[BOT]
    try:
        async with request.app[DATABASE].transaction() as session:
            created = await publish_notice(
                session,
                ctx,
                draft_of(notice, wanted),
                actor=ACTOR,
                now=dt.datetime.now(dt.UTC),
            )
    except Conflict:
        # The external_id is taken (a repeat, or a concurrent request that committed first):
        # the unique constraint decides, so the common case costs no extra lookup.
        found = await _existing(request, notice.external_id)
        if found is None:
            raise
        return _repeat(request, found, wanted)
    except (AudienceEmpty, UnknownPerson, UnknownDepartment, InvalidValue) as exc:
        # A repeat stays a repeat even when its body would no longer be accepted (say its
        # deadline has passed since the first delivery): it gets the first answer.
        found = await _existing(request, notice.external_id)
        if found is not None:
            return _repeat(request, found, wanted)
        return _domain_refusal(request, exc)
    log.info("e-gov notice %s created as #%s", notice.external_id, created.id)
    return _created(created.id, 201)


def status_doc(status: queries.NoticeStatus) -> NoticeStatusDoc:
    """The status document of §5.3."""
    c = status.counts
    return NoticeStatusDoc(
        id=status.id,
        external_id=status.external_id,
        title=status.title,
        state=status.state.value,
        deadline=status.deadline,
        counts=Counts(
            assigned=c["assigned"],
            acknowledged=c["acknowledged"],
            in_progress=c["in_progress"],
            done=c["done"],
            overdue=c["overdue"],
        ),
        assignees=[
            AssigneeDoc(
                person=a.person_id,
                name=a.name,
                department=a.department,
                state=a.state.value,
                acknowledged_at=a.acknowledged_at,
                channel=a.channel.value if a.channel is not None else None,
                last_progress=a.last_progress,
                progress_percent=a.progress_percent,
                overdue=a.overdue,
                outcome=None
                if a.outcome is None
                else OutcomeDoc(
                    measures=a.outcome.measures,
                    results=a.outcome.results,
                    metrics=a.outcome.metrics,
                    reported_at=a.outcome.reported_at,
                ),
            )
            for a in status.assignees
        ],
    )


async def notice_status(request: web.Request) -> web.Response:
    """GET /egov/v1/notices/{id}."""
    body = await _signed_body(request)
    if isinstance(body, web.Response):
        return body
    raw_id = request.match_info["id"]
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 12:
        return refuse(request, 400, "invalid_id", request.app[BOT].t("egov.invalid_id"))
    try:
        if int(raw_id) > MAX_NOTICE_ID:
            raise UnknownNotice(int(raw_id))
        async with request.app[DATABASE].read() as session:
            status = await queries.status(session, int(raw_id), dt.datetime.now(dt.UTC))
    except UnknownNotice:
        return refuse(
            request,
            404,
            "unknown_notice",
            request.app[BOT].t("error.unknown_notice", notice_id=raw_id),
        )
    return web.json_response(text=status_doc(status).model_dump_json())


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the e-gov API."""
    router.add_post("/egov/v1/notices", create_notice)
    router.add_get("/egov/v1/notices/{id}", notice_status)
