"""The e-gov portal API (docs/egov-api.md) on the real app, SQLite and PostgreSQL.

What a portal integrator relies on: the signature (and every way to get it wrong), the body's
validation, idempotency by external_id (also under concurrency), the status document, and
that a refused request changes nothing, logs one warning and never leaks the secret.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from bot.app import create_app
from bot.config import Config, validate_config
from bot.core import portal_signing as signing
from bot.web import egov
from storage import domain
from storage.db import Database
from storage.domain import Actor, Metric
from storage.models import Assignment, Job, Notice, OutboxMessage, Person, PersonIdentity
from storage.types import Channel, NoticeSource

from support import actor_of, assignees, make_notice, seed_people, snapshot

SECRET = "egov-test-secret-7d41c2e9"
ENV = {"WORKBOT_EGOV_SECRET": SECRET}
NOTICES = "/egov/v1/notices"
MAX_SKEW = 300
DOC = Path(__file__).resolve().parent.parent / "docs" / "egov-api.md"
TS = signing.TIMESTAMP_HEADER
SIG = signing.SIGNATURE_HEADER


CST = dt.timezone(dt.timedelta(hours=8))
DEADLINE = (dt.datetime.now(CST) + dt.timedelta(days=30)).replace(hour=17, minute=0, second=0)


def payload(external_id: str = "portal-2019-1234", **changes: Any) -> dict[str, Any]:
    """A valid portal notice (deadline a month ahead), with some fields changed."""
    body: dict[str, Any] = {
        "external_id": external_id,
        "doc_number": "宜教办发[2019]41号",
        "kind": "task",
        "title": "关于报送作业管理自查情况的通知",
        "body": "请各科室于12月10日前报送自查报告。",
        "issuer": {"department": "办公室", "name": "王五"},
        "deadline": DEADLINE.replace(microsecond=0).isoformat(),
        "requires": "outcome",
        "audience": {"departments": ["基础教育科"], "people": ["p003"]},
        "plan_ref": None,
    }
    body.update(changes)
    return body


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


class Clock:
    """The server's wall clock for signature checks (bot.web.egov's `time`), held still."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def time(self) -> float:
        return self.now


class Answer(NamedTuple):
    status: int
    doc: Any
    text: str


@dataclass
class Portal:
    """The portal's side of the API, signing like docs/egov-api.md says."""

    client: TestClient[Any, Any]
    db: Database
    clock: Clock

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str | None = "application/json",
        secret: str = SECRET,
        timestamp: int | str | None = None,
        sign_as: tuple[str, str] | None = None,
        signed_body: bytes | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> Answer:
        """Send a request signed for (sign_as or) its own method, path and body."""
        ts = str(int(self.clock.now) if timestamp is None else timestamp)
        sign_method, sign_path = sign_as or (method, path)
        signed = body if signed_body is None else signed_body
        sent = {TS: ts, SIG: signing.sign(secret, ts, sign_method, sign_path, signed)}
        if content_type is not None:
            sent["Content-Type"] = content_type
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 65_536 else body
        async with self.client.request(method, path, data=data, headers=sent) as resp:
            text = await resp.text()
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            return Answer(resp.status, doc, text)

    async def post(self, notice: Any, **kwargs: Any) -> Answer:
        body = notice if isinstance(notice, bytes) else encode(notice)
        return await self.call("POST", NOTICES, body, **kwargs)

    async def get(self, notice_id: int | str, **kwargs: Any) -> Answer:
        return await self.call("GET", f"{NOTICES}/{notice_id}", content_type=None, **kwargs)


def egov_config(db: Database, **egov_section: Any) -> Config:
    url = db.url.render_as_string(hide_password=False)
    raw = {
        "database": {"url": url},
        "bot": {"public_url": "http://127.0.0.1:8080"},
        "egov": egov_section,
    }
    return validate_config(raw, "<test>", ENV)


@asynccontextmanager
async def serving(
    db: Database, clock: Clock, environ: Mapping[str, str] = ENV
) -> AsyncIterator[Portal]:
    """The app (without its background workers, so that nothing moves but the request)."""
    app = create_app(egov_config(db), environ, workers=False)
    async with TestClient(TestServer(app)) as client:
        yield Portal(client, db, clock)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    held = Clock()
    monkeypatch.setattr(egov, "time", held)
    return held


@pytest.fixture
async def portal(db: Database, clock: Clock) -> AsyncIterator[Portal]:
    await seed_people(db, dt.datetime.now(dt.UTC))
    async with serving(db, clock) as p:
        yield p


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    """The contract's error body: {"error": {"code", "message", ...}}."""
    assert answer.status == status, answer.text
    assert isinstance(answer.doc, dict) and set(answer.doc) == {"error"}, answer.text
    error: dict[str, Any] = answer.doc["error"]
    assert error["code"] == code, answer.text
    assert isinstance(error["message"], str) and error["message"]
    for message in [error["message"], *(f["message"] for f in error.get("fields", []))]:
        assert one_language(message), message  # bot.language: zh-CN, no English phrase
    return error


def one_language(message: str) -> bool:
    """Chinese throughout: names of fields, codes and formats may stay, no English phrase."""
    return bool(re.search(r"[\u4e00-\u9fff]", message)) and not re.search(
        r"[A-Za-z]{2,} [A-Za-z]{2,}", message
    )


async def stored(db: Database) -> dict[str, Any]:
    """Everything a request could have changed, outbox and jobs included."""
    snap = await snapshot(db)
    async with db.read() as s:
        for model in (OutboxMessage, Job):
            snap[model.__tablename__] = await s.scalar(select(func.count()).select_from(model))
    return snap


def egov_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "workbot.egov" and r.levelno >= logging.WARNING
    ]


def assert_secret_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(message)s")
    for record in caplog.records:
        assert SECRET not in formatter.format(record), record.name


# --- the signing example in the docs ---------------------------------------------------------


class Example(NamedTuple):
    secret: str
    timestamp: str
    method: str
    path: str
    body: bytes
    signature: str


def doc_examples() -> list[Example]:
    """The worked signing examples of docs/egov-api.md (each a ```text block of fields)."""
    found = []
    for block in re.findall(r"```text\n(secret .*?)```", DOC.read_text(encoding="utf-8"), re.S):
        fields = dict(line.split(None, 1) for line in block.strip().splitlines())
        body = fields["body"].strip()
        found.append(
            Example(
                secret=fields["secret"].strip(),
                timestamp=fields["timestamp"].strip(),
                method=fields["method"].strip(),
                path=fields["path"].strip(),
                body=b"" if body == "(empty)" else body.encode(),
                signature=fields["signature"].strip(),
            )
        )
    return found


def test_the_documented_signing_examples_are_exact() -> None:
    examples = doc_examples()
    assert [(e.method, e.path) for e in examples] == [
        ("POST", NOTICES),
        ("GET", f"{NOTICES}/12"),
    ]
    for e in examples:
        assert signing.sign(e.secret, e.timestamp, e.method, e.path, e.body) == e.signature
        signing.verify(
            e.secret,
            timestamp=e.timestamp,
            signature=e.signature,
            method=e.method,
            path_with_query=e.path,
            body=e.body,
            now=float(e.timestamp),
            max_skew=MAX_SKEW,
        )
    post = examples[0]
    assert post.secret == "example-secret-do-not-use"
    assert post.timestamp == "1575250800"
    assert post.signature == (
        "sha256=0e695dedc32e4b6359dc407ac7e9638895caff357936a241a645f52239b2ba11"
    )
    # The string that is signed, spelled out in the docs as well.
    assert signing.signing_string(post.timestamp, "POST", NOTICES, post.body).startswith(
        b"1575250800\nPOST\n/egov/v1/notices\n{"
    )


async def test_the_documented_example_request_is_accepted(db: Database, clock: Clock) -> None:
    example = doc_examples()[0]
    await seed_people(db, dt.datetime.now(dt.UTC))
    clock.now = float(example.timestamp)  # as if it were sent at that moment
    async with serving(db, clock, environ={"WORKBOT_EGOV_SECRET": example.secret}) as portal:
        answer = await portal.call(
            "POST",
            NOTICES,
            example.body,
            headers={TS: example.timestamp, SIG: example.signature},
        )
        assert answer.status == 201, answer.text
        assert answer.doc == {"id": 1, "status_url": "/egov/v1/notices/1"}
        get = doc_examples()[1]
        assert get.path == f"{NOTICES}/12"
        answer = await portal.call(
            "GET",
            get.path,
            content_type=None,
            headers={TS: get.timestamp, SIG: get.signature},
        )
        assert_error(answer, 404, "unknown_notice")  # signed correctly; there is no #12
    async with db.read() as s:
        people = (
            await s.scalars(select(Assignment.person_id).order_by(Assignment.person_id))
        ).all()
    assert people == ["p001", "p002", "p004"]


# --- refusals: each changes nothing and logs one warning --------------------------------------


def sized(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (a notice whose body is far too long)."""
    head, tail = b'{"external_id": "big", "body": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


REFUSALS: dict[str, tuple[dict[str, Any], int, str]] = {
    "forged signature": ({"secret": "not-the-secret"}, 401, "bad_signature"),
    "altered signature": (
        {"headers": {SIG: "sha256=" + "0" * 64}},
        401,
        "bad_signature",
    ),
    "signature without prefix": ({"headers": {SIG: "0" * 64}}, 401, "bad_signature"),
    "missing signature header": ({"headers": {SIG: None}}, 401, "missing_signature"),
    "missing timestamp header": ({"headers": {TS: None}}, 401, "missing_signature"),
    "both headers missing": ({"headers": {SIG: None, TS: None}}, 401, "missing_signature"),
    "empty signature header": ({"headers": {SIG: ""}}, 401, "missing_signature"),
    "timestamp not unix seconds": (
        {"timestamp": "2019-12-02T09:40:00"},
        401,
        "invalid_timestamp",
    ),
    "timestamp in milliseconds": ({"timestamp": "1575250800000"}, 401, "invalid_timestamp"),
    "stale timestamp": ({"timestamp": -3600}, 401, "stale_timestamp"),
    "timestamp from the future": ({"timestamp": 3600}, 401, "stale_timestamp"),
    "one second too old": ({"timestamp": -(MAX_SKEW + 1)}, 401, "stale_timestamp"),
    "one second too new": ({"timestamp": MAX_SKEW + 1}, 401, "stale_timestamp"),
    "signed for another path": (
        {"sign_as": ("POST", f"{NOTICES}/1")},
        401,
        "bad_signature",
    ),
    "signed for another method": ({"sign_as": ("PUT", NOTICES)}, 401, "bad_signature"),
    "signed with a query string not sent": (
        {"sign_as": ("POST", f"{NOTICES}?debug=1")},
        401,
        "bad_signature",
    ),
    "signed for another body": ({"signed_body": b"{}"}, 401, "bad_signature"),
    "wrong content type": ({"content_type": "text/plain"}, 415, "unsupported_media_type"),
    "form content type": (
        {"content_type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    "no content type": ({"content_type": None}, 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_requests_change_nothing_and_log_one_warning(
    portal: Portal, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    options, status, code = REFUSALS[case]
    options = dict(options)
    if isinstance(options.get("timestamp"), int):
        options["timestamp"] = int(portal.clock.now) + options["timestamp"]
    caplog.set_level(logging.DEBUG)
    before = await stored(portal.db)
    caplog.clear()
    answer = await portal.post(payload(), **options)
    assert_error(answer, status, code)
    assert await stored(portal.db) == before
    warnings = egov_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert code in warnings[0] and str(status) in warnings[0]
    assert_secret_not_logged(caplog)


@pytest.mark.parametrize(
    "body",
    [
        # Two titles: pydantic would take the last, another reader the first.
        b'{"external_id": "dup-1", "title": "\xe9\x80\x9a\xe7\x9f\xa5", "title": "x", ',
        # A repeated key deeper down counts as much.
        b'{"external_id": "dup-2", "issuer": {"department": "a", "department": "b"}, ',
    ],
)
async def test_a_body_naming_a_key_twice_is_refused_and_changes_nothing(
    portal: Portal, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """The attack (issue 13, item 10): a signed notice with two `title`s."""
    rest = {k: v for k, v in payload().items() if k not in ("external_id", "title", "issuer")}
    if b"issuer" in body:
        rest["title"] = "关于报送作业管理自查情况的通知"
    else:
        rest["issuer"] = {"department": "办公室"}
    raw = body + encode(rest)[1:]
    caplog.set_level(logging.WARNING)
    before = await stored(portal.db)
    caplog.clear()
    error = assert_error(await portal.post(raw), 400, "duplicate_key")
    assert "出现了两次" in error["message"]
    assert await stored(portal.db) == before
    (warning,) = egov_warnings(caplog)
    assert "duplicate_key" in warning and "400" in warning


@pytest.mark.parametrize(
    ("sent", "signed"),
    [
        (f"{NOTICES}?debug=1", NOTICES),
        (f"{NOTICES}?debug=2", f"{NOTICES}?debug=1"),
        (f"{NOTICES}?a=1&b=2", f"{NOTICES}?b=2&a=1"),
    ],
)
async def test_the_query_string_is_signed_as_sent(portal: Portal, sent: str, signed: str) -> None:
    before = await stored(portal.db)
    answer = await portal.call("POST", sent, encode(payload()), sign_as=("POST", signed))
    assert_error(answer, 401, "bad_signature")
    assert await stored(portal.db) == before
    # Signed exactly as sent, the same query string is accepted (and ignored).
    answer = await portal.call("POST", sent, encode(payload()))
    assert answer.status == 201, answer.text


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("direction", [-1, 1])
async def test_the_skew_edge_is_inclusive(portal: Portal, direction: int, fraction: float) -> None:
    """Exactly max_skew_seconds old or ahead is accepted and one second more is refused, at
    any fraction of the server's current second (issue 13, item 10: a request exactly 300 s
    old was refused when the server's clock was past the start of its second)."""
    portal.clock.now = float(int(portal.clock.now)) + fraction
    edge = int(portal.clock.now) + direction * MAX_SKEW
    answer = await portal.post(payload("at-the-edge"), timestamp=edge)
    assert answer.status == 201, answer.text
    beyond = edge + direction
    answer = await portal.post(payload("beyond-the-edge"), timestamp=beyond)
    assert_error(answer, 401, "stale_timestamp")
    # The same for a GET.
    assert (await portal.get(1, timestamp=edge)).status == 200
    assert_error(await portal.get(1, timestamp=beyond), 401, "stale_timestamp")


async def test_a_signature_for_another_method_or_path_is_refused_on_get(portal: Portal) -> None:
    notice_id = (await portal.post(payload())).doc["id"]
    path = f"{NOTICES}/{notice_id}"
    assert (await portal.get(notice_id)).status == 200
    for sign_as in [("POST", path), ("GET", f"{NOTICES}/{notice_id + 1}"), ("GET", path + "?x")]:
        assert_error(await portal.get(notice_id, sign_as=sign_as), 401, "bad_signature")
    assert_error(await portal.get(notice_id, signed_body=b"{}"), 401, "bad_signature")
    assert_error(await portal.get(notice_id, headers={SIG: None}), 401, "missing_signature")


async def test_a_body_over_one_mebibyte_is_413(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    body = sized(1024 * 1024 + 1)
    caplog.set_level(logging.INFO)
    before = await stored(portal.db)
    caplog.clear()
    assert_error(await portal.post(body), 413, "request_entity_too_large")
    assert await stored(portal.db) == before
    warnings = egov_warnings(caplog)
    assert len(warnings) == 1 and "413" in warnings[0], warnings
    # Exactly 1 MiB is read (and refused for what it says, not for its size).
    error = assert_error(await portal.post(sized(1024 * 1024)), 400, "invalid_body")
    assert "body" in [f["field"] for f in error["fields"]]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"external_id": "x",}',
        b"{'external_id': 'x'}",
        b"\xff\xfe{\x00}\x00",
        b'{"title": "\\ud800"}',
        "{“external_id”: “x”}".encode(),
    ],
)
async def test_malformed_json_is_400_invalid_json(
    portal: Portal, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    before = await stored(portal.db)
    caplog.clear()
    assert_error(await portal.post(body), 400, "invalid_json")
    assert await stored(portal.db) == before
    assert len(egov_warnings(caplog)) == 1


async def test_a_validation_failure_names_every_bad_field(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    bad = payload(
        external_id="   ",
        title="x" * 501,
        kind="memo",
        requires="everything",
        deadline="2030-12-10T17:00:00",  # no offset
        issuer={"name": "王五"},
        audience={"all": False},
        body=["not", "text"],
        colour="red",
    )
    before = await stored(portal.db)
    caplog.clear()
    error = assert_error(await portal.post(bad), 400, "invalid_body")
    fields = [f["field"] for f in error["fields"]]
    assert all(isinstance(f["message"], str) and f["message"] for f in error["fields"])
    named = {
        "external_id",
        "title",
        "kind",
        "requires",
        "deadline",
        "issuer.department",
        "audience",
        "body",
        "colour",
    }
    for name in named:
        assert any(f == name or f.startswith(name + ".") for f in fields), (name, fields)
    assert all(f.split(".")[0] in {n.split(".")[0] for n in named} for f in fields), fields
    assert await stored(portal.db) == before
    assert len(egov_warnings(caplog)) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": " \t "}, "title"),
        ({"external_id": "x" * 201}, "external_id"),
        ({"doc_number": "号" * 101}, "doc_number"),
        ({"body": "长" * 20_001}, "body"),
        ({"plan_ref": 42}, "plan_ref"),
        ({"issuer": "办公室"}, "issuer"),
        ({"issuer": {"department": "办公室", "phone": "1"}}, "issuer.phone"),
        ({"audience": {}}, "audience"),
        ({"audience": {"departments": [], "people": []}}, "audience"),
        ({"audience": {"all": True, "people": ["p001"]}}, "audience"),
        ({"audience": {"people": [""]}}, "audience"),
        ({"audience": {"people": "p001"}}, "audience"),
        ({"deadline": "next Friday"}, "deadline"),
        ({"deadline": "2099-12-10"}, "deadline"),
        ({"deadline": "2099-12-10T17:00"}, "deadline"),
        ({"kind": None}, "kind"),
        ({"title": "a\u0000b"}, "title"),
        ({"external_id": "x\u0000"}, "external_id"),
        ({"body": "\u0000"}, "body"),
        ({"audience": {"people": ["p001\u0000"]}}, "audience"),
    ],
)
async def test_each_invalid_field_is_400_with_its_name(
    portal: Portal, changes: dict[str, Any], field: str
) -> None:
    before = await stored(portal.db)
    error = assert_error(await portal.post(payload(**changes)), 400, "invalid_body")
    assert any(f["field"] == field or f["field"].startswith(field + ".") for f in error["fields"])
    assert await stored(portal.db) == before


async def test_a_missing_required_field_is_named(portal: Portal) -> None:
    for name in ("external_id", "title", "issuer", "audience"):
        body = payload()
        del body[name]
        error = assert_error(await portal.post(body), 400, "invalid_body")
        assert [f["field"] for f in error["fields"]] == [name]
    error = assert_error(await portal.post(b"[]"), 400, "invalid_body")
    assert [f["field"] for f in error["fields"]] == ["body"]


async def test_a_deadline_at_the_end_of_time_is_refused(portal: Portal) -> None:
    # It used to overflow when shown in bot.timezone and planned: a 500.
    error = assert_error(
        await portal.post(payload(deadline="9999-12-31T23:59:59+00:00")), 400, "invalid_value"
    )
    assert [f["field"] for f in error["fields"]] == ["deadline"]


async def test_a_past_deadline_is_400(portal: Portal) -> None:
    before = await stored(portal.db)
    past = payload(deadline="2019-12-10T17:00:00+08:00")
    error = assert_error(await portal.post(past), 400, "invalid_value")
    assert [f["field"] for f in error["fields"]] == ["deadline"]
    assert await stored(portal.db) == before


@pytest.mark.parametrize(
    ("audience", "code", "field", "named"),
    [
        ({"people": ["p001", "p999"]}, "unknown_person", "audience.people", "p999"),
        ({"departments": ["不存在科"]}, "unknown_department", "audience.departments", "不存在科"),
        (
            {"departments": ["基础教育科", "宣传科"], "people": ["p001"]},
            "unknown_department",
            "audience.departments",
            "宣传科",
        ),
    ],
)
async def test_unknown_people_and_departments_are_400(
    portal: Portal,
    caplog: pytest.LogCaptureFixture,
    audience: dict[str, Any],
    code: str,
    field: str,
    named: str,
) -> None:
    before = await stored(portal.db)
    caplog.clear()
    error = assert_error(await portal.post(payload(audience=audience)), 400, code)
    assert named in error["message"]
    assert [f["field"] for f in error["fields"]] == [field]
    assert await stored(portal.db) == before
    warnings = egov_warnings(caplog)
    assert len(warnings) == 1 and code in warnings[0]


async def test_an_audience_that_resolves_to_nobody_is_400_audience_empty(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    async with portal.db.transaction() as s:  # the directory empties after start-up
        await s.execute(delete(PersonIdentity))
        await s.execute(delete(Person))
    before = await stored(portal.db)
    caplog.clear()
    assert_error(await portal.post(payload(audience={"all": True})), 400, "audience_empty")
    assert await stored(portal.db) == before
    assert len(egov_warnings(caplog)) == 1


async def test_the_api_is_off_without_its_secret(
    db: Database, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await seed_people(db, dt.datetime.now(dt.UTC))
    async with serving(db, clock, environ={}) as off:
        before = await stored(db)
        caplog.clear()
        assert_error(await off.post(payload()), 404, "egov_disabled")
        assert_error(await off.get(1), 404, "egov_disabled")
        assert_error(await off.get(1, headers={SIG: None, TS: None}), 404, "egov_disabled")
        assert await stored(db) == before
        assert len(egov_warnings(caplog)) == 3


async def test_an_empty_secret_is_no_secret(db: Database, clock: Clock) -> None:
    async with serving(db, clock, environ={"WORKBOT_EGOV_SECRET": ""}) as off:
        assert_error(await off.post(payload(), secret=""), 404, "egov_disabled")


# --- creating a notice ------------------------------------------------------------------------


async def test_a_created_notice_is_stored_and_posted_through_the_outbox(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = payload()
    answer = await portal.post(sent)
    assert answer.status == 201, answer.text
    notice_id = answer.doc["id"]
    assert answer.doc == {"id": notice_id, "status_url": f"/egov/v1/notices/{notice_id}"}
    async with portal.db.read() as s:
        notice = await s.get(Notice, notice_id)
        assert notice is not None
        assert notice.source is NoticeSource.EGOV
        assert notice.external_id == "portal-2019-1234"
        assert notice.title == sent["title"] and notice.body == sent["body"]
        assert notice.doc_number == "宜教办发[2019]41号"
        assert (notice.kind.value, notice.requires.value) == ("task", "outcome")
        assert notice.deadline == dt.datetime.fromisoformat(sent["deadline"])
        assert (notice.issuer_department, notice.issuer_name) == ("办公室", "王五")
        assigned = await assignees(s, notice_id)
        posts = (
            await s.scalars(select(OutboxMessage).where(OutboxMessage.notice_id == notice_id))
        ).all()
    assert assigned == ["p001", "p002", "p003"]
    assert [(p.purpose, p.target_key) for p in posts] == [("notice", "local:chat:main")]
    assert "关于报送作业管理自查情况的通知" in json.dumps(posts[0].payload, ensure_ascii=False)
    assert egov_warnings(caplog) == []
    assert_secret_not_logged(caplog)


async def test_the_same_external_id_and_body_again_is_200_with_the_same_id(
    portal: Portal,
) -> None:
    sent = payload()
    first = await portal.post(sent)
    assert first.status == 201
    before = await stored(portal.db)
    again = await portal.post(sent)
    assert (again.status, again.doc) == (200, first.doc)
    # The same body is the same after validation: key order, layout and defaults don't count.
    reordered = json.dumps(dict(reversed(sent.items())), indent=2).encode()
    assert (await portal.post(reordered)).doc == first.doc
    del sent["plan_ref"]
    assert (await portal.post(sent)).doc == first.doc
    assert (await portal.post(payload(title=f"  {sent['title']}\n"))).doc == first.doc
    assert await stored(portal.db) == before


async def test_the_same_external_id_with_another_body_is_409(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    first = await portal.post(payload())
    assert first.status == 201
    before = await stored(portal.db)
    for changes in (
        {"title": "关于报送作业管理自查情况的通知（更正）"},
        {"audience": {"all": True}},
        {"requires": "ack"},
        {"deadline": None},
    ):
        caplog.clear()
        error = assert_error(await portal.post(payload(**changes)), 409, "external_id_conflict")
        assert error["id"] == first.doc["id"]
        assert len(egov_warnings(caplog)) == 1
    assert await stored(portal.db) == before
    # A refused request does not use up its external_id.
    refused = await portal.post(payload("portal-2019-1235", audience={"people": ["p999"]}))
    assert refused.status == 400
    assert (await portal.post(payload("portal-2019-1235"))).status == 201


async def test_a_repeat_is_answered_even_after_its_deadline_is_past(
    portal: Portal, clock: Clock
) -> None:
    first = await portal.post(payload())
    assert first.status == 201
    # A month later the portal retries (its deadline has passed by then): still the same id.
    later = dt.timedelta(days=31)
    clock.now += later.total_seconds()
    frozen = dt.datetime.now(dt.UTC) + later

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(frozen.timestamp(), tz)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(egov, "dt", SimpleNamespace(datetime=Later, UTC=dt.UTC))
        again = await portal.post(payload())
        new = await portal.post(payload("portal-2019-9999"))
    assert (again.status, again.doc) == (200, first.doc)
    assert_error(new, 400, "invalid_value")  # a new notice with that deadline is refused


async def test_ten_concurrent_identical_posts_create_one_notice(portal: Portal) -> None:
    sent = encode(payload("portal-concurrent-1"))
    answers = await asyncio.gather(*(portal.post(sent) for _ in range(10)))
    assert sorted(a.status for a in answers) == [200] * 9 + [201], [a.text for a in answers]
    assert len({a.doc["id"] for a in answers}) == 1
    async with portal.db.read() as s:
        notices = (
            await s.scalars(select(Notice.id).where(Notice.external_id == "portal-concurrent-1"))
        ).all()
        posts = await s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.purpose == "notice")
        )
        assignments = await s.scalar(select(func.count()).select_from(Assignment))
    assert notices == [answers[0].doc["id"]]
    assert (posts, assignments) == (1, 3)


# --- the status document ----------------------------------------------------------------------


async def test_the_status_document_has_every_assignee_state(portal: Portal) -> None:
    sent = payload(audience={"departments": ["基础教育科", "督导科"], "people": ["p003"]})
    notice_id = (await portal.post(sent)).doc["id"]
    now = dt.datetime.now(dt.UTC)
    actors = {p: await actor_of(portal.db, p) for p in ("p001", "p002", "p004")}
    async with portal.db.transaction() as s:
        await domain.acknowledge(
            s, notice_id, "p001", channel=Channel.GROUP, actor=actors["p001"], now=now
        )
        await domain.report_progress(
            s, notice_id, "p002", text="已完成初稿", percent=60, channel=Channel.DM,
            actor=actors["p002"], now=now,
        )  # fmt: skip
        await domain.record_outcome(
            s, notice_id, "p004", measures=["组织自查", "召开专题会议"],
            results="发文数量减少30%以上", metrics=[Metric("发文数量", -30, "%")],
            channel=Channel.BUTTON, actor=actors["p004"], now=now,
        )  # fmt: skip
        await domain.acknowledge(
            s, notice_id, "p005", channel=Channel.PHONE, actor=Actor.system("cli"), now=now
        )
    answer = await portal.get(notice_id)
    assert answer.status == 200, answer.text
    doc = answer.doc
    assert set(doc) == {
        "id",
        "external_id",
        "title",
        "state",
        "deadline",
        "counts",
        "assignees",
    }
    assert (doc["id"], doc["external_id"], doc["title"], doc["state"]) == (
        notice_id,
        "portal-2019-1234",
        sent["title"],
        "open",
    )
    assert dt.datetime.fromisoformat(doc["deadline"]) == dt.datetime.fromisoformat(sent["deadline"])
    assert doc["counts"] == {
        "assigned": 5,
        "acknowledged": 4,
        "in_progress": 1,
        "done": 1,
        "overdue": 0,
    }
    by_person = {a["person"]: a for a in doc["assignees"]}
    assert sorted(by_person) == ["p001", "p002", "p003", "p004", "p005"]
    assert set(by_person["p001"]) == {
        "person",
        "name",
        "department",
        "state",
        "acknowledged_at",
        "channel",
        "last_progress",
        "progress_percent",
        "overdue",
        "outcome",
    }
    summary = {
        p: (a["name"], a["department"], a["state"], a["channel"], a["last_progress"])
        for p, a in by_person.items()
    }
    assert summary == {
        "p001": ("张三", "基础教育科", "acknowledged", "group", None),
        "p002": ("李四", "基础教育科", "in_progress", "dm", "已完成初稿"),
        "p003": ("王五", "办公室", "pending", None, None),
        "p004": ("赵六", "督导科", "done", "button", None),
        "p005": ("钱七", "督导科", "acknowledged", "phone", None),
    }
    assert by_person["p002"]["progress_percent"] == 60
    for p in ("p001", "p002", "p004", "p005"):
        acked = dt.datetime.fromisoformat(by_person[p]["acknowledged_at"])
        assert abs(acked - now) < dt.timedelta(seconds=1)
    assert by_person["p003"]["acknowledged_at"] is None
    outcome = by_person["p004"]["outcome"]
    assert (outcome["measures"], outcome["results"]) == (
        ["组织自查", "召开专题会议"],
        "发文数量减少30%以上",
    )
    assert outcome["metrics"] == [{"name": "发文数量", "value": -30, "unit": "%"}]
    reported = dt.datetime.fromisoformat(outcome["reported_at"])
    assert abs(reported - now) < dt.timedelta(seconds=1)
    assert all(a["outcome"] is None for p, a in by_person.items() if p != "p004")
    assert not any(a["overdue"] for a in doc["assignees"])

    # Past the deadline, whoever still owes the notice something is overdue.
    async with portal.db.transaction() as s:
        await s.execute(
            update(Notice)
            .where(Notice.id == notice_id)
            .values(deadline=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
    doc = (await portal.get(notice_id)).doc
    overdue = sorted(a["person"] for a in doc["assignees"] if a["overdue"])
    assert overdue == ["p001", "p002", "p003", "p005"]  # requires outcome: only p004 is done
    assert doc["counts"]["overdue"] == 4


async def test_status_of_an_unknown_or_malformed_id(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    error = assert_error(await portal.get(99), 404, "unknown_notice")
    assert "99" in error["message"]
    assert len(egov_warnings(caplog)) == 1
    assert_error(await portal.get(0), 404, "unknown_notice")
    assert_error(await portal.get(2**31), 404, "unknown_notice")  # beyond a PostgreSQL integer
    assert_error(await portal.get(10**12 - 1), 404, "unknown_notice")
    assert_error(await portal.get("12abc"), 400, "invalid_id")
    assert_error(await portal.get("-1"), 400, "invalid_id")
    assert_error(await portal.get("1" * 13), 400, "invalid_id")


async def test_a_notice_from_the_group_has_no_external_id(portal: Portal) -> None:
    notice_id = await make_notice(portal.db, dt.datetime.now(dt.UTC))
    doc = (await portal.get(notice_id)).doc
    assert (doc["id"], doc["external_id"], doc["counts"]["assigned"]) == (notice_id, None, 5)


# --- the documented client examples, run against the server ---------------------------------


def doc_block(language: str, first_line: str) -> str:
    """The fenced code block of docs/egov-api.md that starts with first_line."""
    for block in re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no ```{language} block starting with {first_line!r}")


@pytest.fixture
def example_env(portal: Portal, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    url = str(portal.client.make_url("")).rstrip("/")
    monkeypatch.setenv("WORKBOT_URL", url)
    monkeypatch.setenv("WORKBOT_EGOV_SECRET", SECRET)
    portal.clock.now = time.time()
    yield {"WORKBOT_URL": url, "WORKBOT_EGOV_SECRET": SECRET}


async def test_the_python_example_pushes_reads_and_verifies(
    portal: Portal, example_env: dict[str, str]
) -> None:
    source = doc_block("python", '"""A minimal workbot e-gov client')
    module: dict[str, Any] = {"__name__": "egov_client"}
    exec(compile(source, "docs/egov-api.md", "exec"), module)
    sent = payload("portal-python-1")
    notice_id = await asyncio.to_thread(module["push_notice"], sent)
    assert await asyncio.to_thread(module["push_notice"], sent) == notice_id  # a retry: 200
    status = await asyncio.to_thread(module["notice_status"], notice_id)
    assert status["external_id"] == "portal-python-1"
    assert status["counts"]["assigned"] == 3
    with pytest.raises(module["EgovError"]) as refused:
        await asyncio.to_thread(module["push_notice"], payload(audience={"people": ["p999"]}))
    assert refused.value.status == 400 and refused.value.code == "unknown_person"
    # The receiver's check accepts what workbot signs and nothing else.
    event = encode({"delivery_id": "d-1", "event": "notice.closed"})
    path = "/workbot/events?portal=1"
    headers = signing.headers(SECRET, "POST", path, event, now=time.time())
    assert module["verify"](headers, "POST", path, event) is True
    assert module["verify"](headers, "POST", path, event + b" ") is False
    assert module["verify"](headers, "POST", "/workbot/events", event) is False
    assert module["verify"]({}, "POST", path, event) is False
    old = signing.headers(SECRET, "POST", path, event, now=time.time() - 3600)
    assert module["verify"](old, "POST", path, event) is False


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl"
)
async def test_the_curl_examples_work(
    portal: Portal, example_env: dict[str, str], tmp_path: Path
) -> None:
    push = tmp_path / "push-notice.sh"
    push.write_text(doc_block("sh", "#!/bin/sh\n# push-notice.sh"), encoding="utf-8")
    status = tmp_path / "notice-status.sh"
    status.write_text(doc_block("sh", "#!/bin/sh\n# notice-status.sh"), encoding="utf-8")
    body = tmp_path / "notice.json"
    body.write_bytes(encode(payload("portal-curl-1")))

    async def sh(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", **example_env},
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode() + err.decode()

    code, out = await sh(str(push), str(body))
    assert code == 0, out
    created = json.loads(out)
    assert created["status_url"] == f"/egov/v1/notices/{created['id']}"
    code, out = await sh(str(status), str(created["id"]))
    assert code == 0, out
    assert json.loads(out)["external_id"] == "portal-curl-1"


# --- fuzzing: signed garbage is always a 4xx with the error body ------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
DEADLINES = st.sampled_from(
    [
        None,
        "2019-12-10T17:00:00+08:00",
        "2099-12-10T17:00:00+08:00",
        "2099-12-10T17:00:00Z",
        "2099-12-10T17:00:00",
        "2099-12-10",
        "2099-13-40T25:61:00+08:00",
        "",
    ]
) | st.text(max_size=30)
FIELDS = [
    "external_id",
    "doc_number",
    "kind",
    "title",
    "body",
    "issuer",
    "deadline",
    "requires",
    "audience",
    "plan_ref",
]
STRING_FIELDS = [
    "external_id",
    "doc_number",
    "title",
    "body",
    "plan_ref",
    "issuer.department",
    "issuer.name",
]
TEXT = st.text(max_size=40) | st.sampled_from(["", "  ", "a\u0000b", "\u3000", "x" * 501])
REPLACEMENTS: dict[str, st.SearchStrategy[Any]] = {
    "external_id": TEXT,
    "doc_number": TEXT | st.none(),
    "title": TEXT,
    "body": TEXT,
    "plan_ref": TEXT | st.none(),
    "kind": st.sampled_from(["notice", "task", "inspection", "data_request", "memo", ""]),
    "requires": st.sampled_from(["ack", "progress", "outcome", "ACK", ""]),
    "deadline": DEADLINES,
    "issuer": st.fixed_dictionaries(
        {"department": TEXT | JSON_VALUES},
        optional={"name": TEXT | JSON_VALUES, "extra": JSON_VALUES},
    ),
    "audience": st.one_of(
        st.just({"all": True}),
        st.fixed_dictionaries({"all": JSON_VALUES}),
        st.fixed_dictionaries(
            {},
            optional={
                "departments": st.lists(
                    st.sampled_from(["基础教育科", "办公室", "督导科", "宣传科", ""])
                    | st.text(max_size=8),
                    max_size=4,
                ),
                "people": st.lists(
                    st.sampled_from(["p001", "p002", "p005", "p999", " p003 "])
                    | st.text(max_size=8),
                    max_size=4,
                ),
            },
        ),
    ),
}


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid body with some fields replaced, removed or added, maybe re-nested."""
    # Mostly new external_ids (so that valid bodies reach the database), sometimes a repeat.
    body = payload(f"fuzz-{draw(st.integers(min_value=0, max_value=3) | st.uuids())}")
    if draw(st.booleans()):
        # Only texts change: most such bodies are valid and reach the database.
        names = st.sampled_from(STRING_FIELDS)
        for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
            value = draw(TEXT)
            if name.startswith("issuer."):
                body["issuer"][name.removeprefix("issuer.")] = value
            else:
                body[name] = value
        return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["replace", "typed", "delete"]))
        if action == "delete":
            body.pop(name, None)
        elif action == "typed" and name in REPLACEMENTS:
            body[name] = draw(REPLACEMENTS[name])
        else:
            body[name] = draw(JSON_VALUES)
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=10))] = draw(JSON_VALUES)
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    return text.encode()


JSONISH_BYTES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.text(alphabet='{}[]":,0123456789.eE+-truefalsn \\u\x00', max_size=80).map(str.encode),
    mutated_bodies().map(lambda b: b[: len(b) // 2]),
)


def assert_contract(answer: Answer) -> None:
    assert answer.status < 500, answer.text
    if answer.status >= 400:
        assert isinstance(answer.doc, dict), answer.text
        error = answer.doc["error"]
        assert isinstance(error["code"], str) and error["code"], answer.text
        assert isinstance(error["message"], str) and error["message"], answer.text
        for field in error.get("fields") or []:
            assert isinstance(field["field"], str) and isinstance(field["message"], str)
    else:
        assert answer.status in (200, 201), answer.text
        assert set(answer.doc) == {"id", "status_url"}


FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(portal: Portal, strategy: st.SearchStrategy[bytes], path: str = NOTICES) -> Any:
    """Run hypothesis in a worker thread; each example is one signed request on the test's loop
    (the app is built once per test, so no function-scoped fixture is re-entered)."""
    loop = asyncio.get_running_loop()
    seen: set[int] = set()

    @FUZZ
    @given(body=strategy)
    def check(body: bytes) -> None:
        call = portal.call("POST", path, body)
        answer = asyncio.run_coroutine_threadsafe(call, loop).result(timeout=60)
        assert_contract(answer)
        seen.add(answer.status)

    async def run() -> set[int]:
        await asyncio.to_thread(check)
        return seen

    return run()


async def test_fuzz_signed_jsonish_bytes_never_5xx(portal: Portal) -> None:
    statuses = await fuzz(portal, JSONISH_BYTES)
    assert 400 in statuses


async def test_fuzz_signed_mutated_bodies_never_5xx(portal: Portal) -> None:
    statuses = await fuzz(portal, mutated_bodies())
    assert 400 in statuses


async def test_fuzz_status_ids_never_5xx(portal: Portal) -> None:
    assert (await portal.post(payload())).status == 201
    loop = asyncio.get_running_loop()

    @FUZZ
    @given(
        notice_id=st.integers(min_value=0, max_value=10**13).map(str)
        | st.text(alphabet="0123456789abcXYZ-_.~", min_size=1, max_size=14)
    )
    def check(notice_id: str) -> None:
        answer = asyncio.run_coroutine_threadsafe(portal.get(notice_id), loop).result(60)
        assert answer.status < 500, answer.text
        if answer.status != 200:
            assert set(answer.doc["error"]) >= {"code", "message"}
        else:
            assert answer.doc["id"] == 1

    await asyncio.to_thread(check)
