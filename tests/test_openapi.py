"""GET /openapi.json: a valid OpenAPI 3.1 document that matches the router and the live answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pydantic import BaseModel

from bot import __version__
from bot.app import create_app
from bot.config import validate_config
from bot.core import portal_signing as signing
from bot.core.room import ActionResult, DirectoryDoc, LocalMessageDoc, MessageCreated, MessagesDoc
from bot.web import openapi
from bot.web.egov import EgovNotice, NoticeCreated, NoticeStatusDoc
from bot.web.openapi import HealthDoc, build_openapi
from storage.db import Database

from support import seed_people

DOC = build_openapi(__version__)
METHODS = ("get", "post", "put", "patch", "delete")

# docs/egov-api.md's example body, with each of its two audiences.
DESIGN_BODY: dict[str, Any] = {
    "external_id": "portal-2019-1234",
    "doc_number": "宜教办发[2019]41号",
    "kind": "task",
    "title": "…",
    "body": "…",
    "issuer": {"department": "办公室", "name": "张三"},
    "deadline": "2019-12-10T17:00:00+08:00",
    "requires": "progress",
    "audience": {"all": True},
    "plan_ref": None,
}
SOME_AUDIENCE = {"departments": ["基础教育科"], "people": ["p001"]}

NOTICE_TEXT = """通知 关于报送作业管理自查情况的通知
请各科室于12月10日前报送自查报告。
截止：2030-12-10 17:00
对象：@基础教育科 @督导科
要求：成效"""


def with_openapi(app: web.Application) -> web.Application:
    """The app with GET /openapi.json (added here until bot/app.py registers it)."""
    if not any(r.canonical == "/openapi.json" for r in app.router.resources()):
        openapi.add_routes(app.router)
    return app


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for a schema that refers to the document's components."""
    root = {**schema, "components": DOC["components"]}
    return Draft202012Validator(root, format_checker=FormatChecker())


def schema_of(path: str, method: str, status: str, media: str = "application/json") -> Any:
    return DOC["paths"][path][method]["responses"][status]["content"][media]["schema"]


def request_schema(path: str, method: str) -> Any:
    return DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = DOC
    for part in pointer[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, pointer
        node = node[part]
    return node


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


# -- the document itself ---------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"]["title"] == "workbot"
    assert DOC["info"]["version"] == __version__
    validate(DOC, cls=OpenAPIV31SpecValidator)
    json.dumps(DOC)  # plain JSON


def test_build_is_pure() -> None:
    assert build_openapi("1.2.3") == build_openapi("1.2.3")
    assert build_openapi("1.2.3") is not build_openapi("1.2.3")
    assert build_openapi("1.2.3")["info"]["version"] == "1.2.3"


def test_every_ref_resolves() -> None:
    found = set(refs(DOC))
    assert "#/components/schemas/EgovNotice" in found
    assert "#/components/parameters/Timestamp" in found
    for pointer in found:
        resolve(pointer)


def test_every_component_schema_is_used() -> None:
    used = {p.rsplit("/", 1)[1] for p in refs(DOC) if p.startswith("#/components/schemas/")}
    assert set(DOC["components"]["schemas"]) <= used


def test_every_component_schema_is_a_valid_2020_12_schema() -> None:
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_example_matches_its_schema() -> None:
    checked = 0
    for path, method, op in operations():
        bodies = [op.get("requestBody", {}), *op["responses"].values()]
        for body in bodies:
            for media, content in body.get("content", {}).items():
                if media != "application/json":
                    continue
                check = validator(content["schema"])
                samples = [e["value"] for e in content.get("examples", {}).values()]
                if "example" in content:
                    samples.append(content["example"])
                for sample in samples:
                    errors = list(check.iter_errors(sample))
                    assert not errors, (path, method, sample, errors)
                    checked += 1
    assert checked > 20


def test_egov_operations_are_signed_and_list_their_error_codes() -> None:
    scheme = DOC["components"]["securitySchemes"]["workbotSignature"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Workbot-Signature",
        "description": scheme["description"],
    }
    assert "HMAC-SHA256" in scheme["description"]
    assert "max_skew_seconds" in scheme["description"]
    timestamp = DOC["components"]["parameters"]["Timestamp"]
    assert timestamp["in"] == "header"
    assert timestamp["name"] == "X-Workbot-Timestamp"
    assert timestamp["required"] is True
    codes = {
        ("post", "400"): {
            "invalid_json",
            "duplicate_key",
            "invalid_body",
            "audience_empty",
            "unknown_person",
            "unknown_department",
            "invalid_value",
        },
        ("post", "401"): {
            "missing_signature",
            "invalid_timestamp",
            "stale_timestamp",
            "bad_signature",
        },
        ("post", "404"): {"egov_disabled"},
        ("post", "409"): {"external_id_conflict"},
        ("post", "413"): {"request_entity_too_large"},
        ("post", "415"): {"unsupported_media_type"},
        ("get", "404"): {"unknown_notice", "egov_disabled"},
    }
    paths = {"post": "/egov/v1/notices", "get": "/egov/v1/notices/{id}"}
    for (method, status), wanted in codes.items():
        response = DOC["paths"][paths[method]][method]["responses"][status]
        assert set(response["content"]["application/json"]["examples"]) == wanted
    for method, path in paths.items():
        op = DOC["paths"][path][method]
        assert op["security"] == [{"workbotSignature": []}]
        assert {"$ref": "#/components/parameters/Timestamp"} in op["parameters"]
    post = DOC["paths"]["/egov/v1/notices"]["post"]["responses"]
    assert schema_of("/egov/v1/notices", "post", "201") == {
        "$ref": "#/components/schemas/NoticeCreated"
    }
    assert post["200"]["content"] == post["201"]["content"]
    assert schema_of("/egov/v1/notices/{id}", "get", "200") == {
        "$ref": "#/components/schemas/NoticeStatusDoc"
    }


def test_local_operations_are_not_signed() -> None:
    for path, _, op in operations():
        if path.startswith("/local/"):
            assert "security" not in op
    assert "security" not in DOC


def test_the_stream_describes_its_events() -> None:
    op = DOC["paths"]["/local/v1/stream"]["get"]
    content = op["responses"]["200"]["content"]["text/event-stream"]
    assert set(content["x-events"]) == {"message", "edit"}
    assert "`message`" in op["description"]
    assert "`edit`" in op["description"]


# -- the request schema ----------------------------------------------------------------------


@pytest.mark.parametrize("audience", [{"all": True}, SOME_AUDIENCE])
def test_the_notice_schema_accepts_the_design_example(audience: dict[str, Any]) -> None:
    body = {**DESIGN_BODY, "audience": audience}
    validator(request_schema("/egov/v1/notices", "post")).validate(body)
    EgovNotice.model_validate(body)  # and so does the model the schema comes from


@pytest.mark.parametrize(
    "change",
    [
        {"title": None},
        {"issuer": None},
        {"audience": None},
        {"audience": {"all": False}},
        {"audience": {}},
        {"audience": {"departments": [], "people": []}},
        {"kind": "memo"},
        {"surprise": 1},
    ],
    ids=repr,
)
def test_the_notice_schema_rejects_what_the_model_rejects(change: dict[str, Any]) -> None:
    body = {**DESIGN_BODY, **change}
    body = {k: v for k, v in body.items() if not (v is None and k in change)}
    check = validator(request_schema("/egov/v1/notices", "post"))
    assert not check.is_valid(body)
    with pytest.raises(ValueError):
        EgovNotice.model_validate(body)


def test_a_body_without_title_is_rejected() -> None:
    body = {k: v for k, v in DESIGN_BODY.items() if k != "title"}
    errors = list(validator(request_schema("/egov/v1/notices", "post")).iter_errors(body))
    assert [e.validator for e in errors] == ["required"]
    assert "'title'" in errors[0].message


# -- the document against the router ---------------------------------------------------------


def documented_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        if route.method == "HEAD":
            continue
        routes.add((resource.canonical, route.method.lower()))
    return routes


def test_the_router_and_the_document_agree() -> None:
    app = with_openapi(create_app(validate_config({}, "<test>", {}), {}))
    served = documented_routes(app)
    documented = {(path, method) for path, method, _ in operations()}
    assert documented <= served, documented - served
    api = {
        (path, method)
        for path, method in served
        if path.startswith(("/egov/", "/local/")) and path != "/local"
    }
    assert api <= documented, api - documented
    assert ("/openapi.json", "get") in documented
    assert ("/healthz", "get") in documented
    assert {("/a/{token}", "get"), ("/a/{token}", "post")} <= documented


# -- live answers ----------------------------------------------------------------------------


@dataclass
class Live:
    client: TestClient[Any, Any]

    async def json(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        resp = await self.client.request(method, path, **kwargs)
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        return await resp.json()


SECRET = "test-egov-secret"
ENVIRON = {"WORKBOT_EGOV_SECRET": SECRET}


@asynccontextmanager
async def serving(db: Database, environ: dict[str, str]) -> AsyncIterator[Live]:
    """The real app on the test database, with the standard five people."""
    await seed_people(db, dt.datetime.now(dt.UTC))
    url = db.url.render_as_string(hide_password=False)
    config = validate_config(
        {"database": {"url": url}, "bot": {"public_url": "http://127.0.0.1:8080"}},
        "<test>",
        environ,
    )
    async with TestClient(TestServer(with_openapi(create_app(config, environ)))) as client:
        yield Live(client)


@pytest.fixture
async def live(db: Database) -> AsyncIterator[Live]:
    async with serving(db, {}) as served:
        yield served


@pytest.fixture
async def egov(db: Database) -> AsyncIterator[Live]:
    """The app with the e-gov API on."""
    async with serving(db, ENVIRON) as served:
        yield served


def conforms(answer: Any, schema: Any, model: type[BaseModel]) -> None:
    """The answer validates against its documented schema and its model, with no extra key."""
    validator(schema).validate(answer)
    model.model_validate(answer)
    assert set(answer) == set(model.model_fields)


async def until_card(live: Live, *, edited: bool = False) -> dict[str, Any]:
    """The bot's first card (once edited, with `edited`), waiting for delivery."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = await live.json("GET", "/local/v1/messages", 200, params={"limit": "500"})
        for message in answer["messages"]:
            if message["sender"] == "bot" and message["card"] is not None:
                if not edited or message["edited_at"] is not None:
                    found: dict[str, Any] = message
                    return found
                break
        await asyncio.sleep(0.05)
    raise AssertionError("the bot posted no card" + (" edit" if edited else ""))


async def test_openapi_json_is_served(live: Live) -> None:
    resp = await live.client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == json.loads(json.dumps(DOC))


async def test_healthz_matches_its_schema(live: Live) -> None:
    answer = await live.json("GET", "/healthz", 200)
    conforms(answer, schema_of("/healthz", "get", "200"), HealthDoc)


async def test_local_answers_match_their_schemas(live: Live) -> None:
    directory = await live.json("GET", "/local/v1/directory", 200)
    conforms(directory, schema_of("/local/v1/directory", "get", "200"), DirectoryDoc)
    assert len(directory["people"]) == 5
    for person in directory["people"]:
        assert set(person) == {"id", "name", "department", "roles"}

    post = "/local/v1/messages"
    created = await live.json("POST", post, 201, json={"sender": "p001", "text": "大家好"})
    conforms(created, schema_of(post, "post", "201"), MessageCreated)
    body = {"sender": "p001", "text": "大家好", "client_id": "c1"}
    first = await live.json("POST", post, 201, json=body)
    again = await live.json("POST", post, 200, json=body)
    assert again == first
    conforms(again, schema_of(post, "post", "200"), MessageCreated)

    # the office posts a notice: the bot answers with a card (buttons and all), and a DM
    await live.json("POST", post, 201, json={"sender": "p003", "text": NOTICE_TEXT})
    card = await until_card(live)
    assert card["card"]["buttons"]
    listed = await live.json("GET", post, 200, params={"after": "0", "limit": "500"})
    conforms(listed, schema_of(post, "get", "200"), MessagesDoc)
    kinds = {(m["sender"] == "bot", m["card"] is not None, m["to"]) for m in listed["messages"]}
    assert (True, True, None) in kinds  # the card
    assert (False, False, None) in kinds  # a person's post
    for message in listed["messages"]:
        conforms(message, {"$ref": "#/components/schemas/LocalMessageDoc"}, LocalMessageDoc)
    mine = await live.json("GET", post, 200, params={"for": "p001", "limit": "3"})
    conforms(mine, schema_of(post, "get", "200"), MessagesDoc)

    action = {"sender": "p001", "message_id": card["id"], "action": "ack"}
    result = await live.json("POST", "/local/v1/actions", 200, json=action)
    conforms(result, schema_of("/local/v1/actions", "post", "200"), ActionResult)
    edited = await until_card(live, edited=True)  # the tally, edited in place
    assert edited["id"] == card["id"]
    conforms(edited, {"$ref": "#/components/schemas/LocalMessageDoc"}, LocalMessageDoc)


JSON_TYPE = {"Content-Type": "application/json"}
MESSAGES = "/local/v1/messages"
ACTIONS = "/local/v1/actions"


LOCAL_ERRORS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("POST", MESSAGES, {"json": {"sender": "p001"}}, "400", "invalid_body"),
    ("POST", MESSAGES, {"data": b"{", "headers": JSON_TYPE}, "400", "invalid_json"),
    (
        "POST",
        MESSAGES,
        {"data": b'{"sender": "p001", "text": "a", "text": "b"}', "headers": JSON_TYPE},
        "400",
        "duplicate_key",
    ),
    (
        "POST",
        MESSAGES,
        {"data": b"{}", "headers": {"Content-Type": "text/plain"}},
        "415",
        "unsupported_media_type",
    ),
    (
        "POST",
        MESSAGES,
        {"data": b"x" * 1_100_000, "headers": JSON_TYPE},
        "413",
        "request_entity_too_large",
    ),
    ("GET", MESSAGES, {"params": {"limit": "0"}}, "400", "invalid_query"),
    ("GET", MESSAGES, {"params": {"for": "bot"}}, "400", "invalid_query"),
    (
        "POST",
        MESSAGES,
        {"json": {"sender": "x901", "name": "王五", "text": "hi"}},
        "400",
        "name_taken",
    ),
    (
        "POST",
        MESSAGES,
        {"json": {"sender": "x901", "name": "\u202e五王", "text": "hi"}},
        "400",
        "unsafe_characters",
    ),
    ("GET", "/local/v1/stream", {"params": {"for": "a b"}}, "400", "invalid_query"),
    (
        "POST",
        ACTIONS,
        {"json": {"sender": "p001", "message_id": 999, "action": "ack"}},
        "400",
        "unknown_message",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    LOCAL_ERRORS,
    ids=[f"{case[1]}-{case[-1]}" for case in LOCAL_ERRORS],
)
async def test_local_errors_match_their_schemas(
    live: Live, method: str, path: str, kwargs: dict[str, Any], status: str, code: str
) -> None:
    if "data" in kwargs:  # a stream: aiohttp warns about large raw bytes
        kwargs = {**kwargs, "data": io.BytesIO(kwargs["data"])}
    answer = await live.json(method, path, int(status), **kwargs)
    assert answer["error"]["code"] == code
    content = DOC["paths"][path][method.lower()]["responses"][status]["content"]
    assert code in content["application/json"]["examples"]
    validator(content["application/json"]["schema"]).validate(answer)


async def test_egov_answers_match_their_schemas(egov: Live) -> None:
    live = egov
    path = "/egov/v1/notices"
    body = {**DESIGN_BODY, "audience": SOME_AUDIENCE, "deadline": "2030-12-10T17:00:00+08:00"}
    raw = json.dumps(body, ensure_ascii=False).encode()
    signed = {**JSON_TYPE, **signing.headers(SECRET, "POST", path, raw, now=time.time())}
    created = await live.json("POST", path, 201, data=raw, headers=signed)
    conforms(created, schema_of(path, "post", "201"), NoticeCreated)
    again = await live.json("POST", path, 200, data=raw, headers=signed)
    conforms(again, schema_of(path, "post", "200"), NoticeCreated)

    status_path = created["status_url"]
    headers = signing.headers(SECRET, "GET", status_path, b"", now=time.time())
    status = await live.json("GET", status_path, 200, headers=headers)
    conforms(status, schema_of("/egov/v1/notices/{id}", "get", "200"), NoticeStatusDoc)
    assert status["assignees"]

    unsigned = await live.json("GET", status_path, 401)
    content = DOC["paths"]["/egov/v1/notices/{id}"]["get"]["responses"]["401"]["content"]
    assert unsigned["error"]["code"] in content["application/json"]["examples"]
    validator(content["application/json"]["schema"]).validate(unsigned)


async def test_stream_events_match_the_message_schema(live: Live) -> None:
    resp = await live.client.get("/local/v1/stream")
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    try:
        assert (await resp.content.readuntil(b"\n\n")).startswith(b"retry: 2000\n")
        await live.json("POST", "/local/v1/messages", 201, json={"sender": "p002", "text": "hi"})
        frame = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
    finally:
        resp.close()
    lines = frame.decode().strip().split("\n")
    assert lines[0] == "event: message"
    assert lines[1].startswith("data: ")
    message = json.loads(lines[1].removeprefix("data: "))
    conforms(message, {"$ref": "#/components/schemas/LocalMessageDoc"}, LocalMessageDoc)
    assert message["text"] == "hi"
