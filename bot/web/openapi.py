"""GET /openapi.json: an OpenAPI 3.1 description of the e-gov and local APIs (docs/egov-api.md).

The schemas are generated from the pydantic models the handlers validate with (requests) or
document their answers with (responses); the paths, parameters, security and error codes are
written out here. `build_openapi` is pure; the handler builds the document once per process.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot import __version__
from bot.core.portal_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from bot.core.room import (
    ActionResult,
    DirectoryDoc,
    LocalMessageDoc,
    MessageCreated,
    MessagesDoc,
    PostAction,
    PostMessage,
)
from bot.web.egov import EgovNotice, ErrorDoc, NoticeCreated, NoticeStatusDoc

REF_TEMPLATE = "#/components/schemas/{model}"
SIGNATURE_SCHEME = "workbotSignature"
JSON = "application/json"
HTML = "text/html"


class OutboxCounts(BaseModel):
    """Outbox rows waiting to be sent, and dead-lettered ones."""

    pending: int
    dead: int


class HealthDoc(BaseModel):
    """GET /healthz: `degraded` when the database is unreachable or a message is dead."""

    status: Literal["ok", "degraded"]
    db: Literal["ok", "error"]
    outbox: OutboxCounts
    version: str


REQUEST_MODELS: tuple[type[BaseModel], ...] = (EgovNotice, PostMessage, PostAction)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    NoticeCreated,
    NoticeStatusDoc,
    ErrorDoc,
    MessageCreated,
    ActionResult,
    MessagesDoc,
    LocalMessageDoc,
    DirectoryDoc,
    HealthDoc,
)

SIGNING = f"""Every e-gov request is signed with the shared secret (the environment variable \
named by `[egov] secret_env`, `WORKBOT_EGOV_SECRET` by default):

    {TIMESTAMP_HEADER}: <unix seconds>
    {SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256(secret, signed)>
    signed = timestamp + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + raw_body

`timestamp` is the {TIMESTAMP_HEADER} value, `METHOD` the upper-case method, \
`path_with_query` the request target exactly as sent (path and query string, no scheme or \
host, e.g. `/egov/v1/notices/12`), and `raw_body` the body's bytes exactly as sent (empty for \
a GET). The comparison is constant-time. A missing or wrong signature, or a timestamp further \
than `[egov] max_skew_seconds` (300 by default) from the server's clock, is answered 401 and \
changes nothing. The bot signs its status callbacks the same way."""

DESCRIPTION = """The HTTP API of workbot (docs/egov-api.md): the e-government portal API \
(signed, under `/egov/v1`), the built-in local group's API (under `/local/v1`, served only \
when the local group is on, with no authentication: for the loopback interface only), signed \
ack links and the service endpoints.

Every error is JSON, `{"error": {"code", "message", "fields"?}}`; bad input never gets a 5xx. \
Bodies over `[server] max_body_bytes` (1 MiB by default) get 413."""


class _Refs:
    """The generated component schemas, and a $ref for each model."""

    def __init__(self) -> None:
        pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (m, "validation") for m in REQUEST_MODELS
        ]
        pairs += [(m, "serialization") for m in RESPONSE_MODELS]
        keys, top = models_json_schema(pairs, ref_template=REF_TEMPLATE)
        self.schemas: dict[str, Any] = dict(top.get("$defs", {}))
        self._refs = {model: dict(ref) for (model, _), ref in keys.items()}
        _audience_not_empty(self.schemas)

    def __call__(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self._refs[model])


def _audience_not_empty(schemas: dict[str, Any]) -> None:
    """AudienceSome's validator (departments and/or people, at least one of them) as JSON
    Schema: the generated schema cannot know it."""
    some = schemas.get("AudienceSome")
    if some is None or "anyOf" in some:
        return
    some["anyOf"] = [
        {"required": [name], "properties": {name: {"minItems": 1}}}
        for name in ("departments", "people")
    ]


def _json_content(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {JSON: {"schema": schema, **extra}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def _error_example(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"summary": code, "value": {"error": {"code": code, "message": message, **extra}}}


def _errors(
    ref: _Refs, description: str, examples: dict[str, dict[str, Any]], *, html: bool = False
) -> dict[str, Any]:
    """An error response: the ErrorDoc schema, its codes listed and one example per code."""
    codes = ", ".join(f"`{code}`" for code in examples)
    content = _json_content(ref(ErrorDoc), examples=examples)
    if html:
        content[HTML] = {"schema": {"type": "string"}}
    return {"description": f"{description} Codes: {codes}.", "content": content}


def _field(name: str, message: str) -> dict[str, list[dict[str, str]]]:
    return {"fields": [{"field": name, "message": message}]}


def _too_large(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "The body is larger than `[server] max_body_bytes` (1 MiB by default).",
        {"request_entity_too_large": _error_example("request_entity_too_large", "...")},
    )


def _slow_body(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "The body was not all received within `[server] body_timeout` (10 s by default); "
        "the connection is closed.",
        {"request_timeout": _error_example("request_timeout", "...")},
    )


def _too_many_slow(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "This address already has `[server] slow_bodies_per_client` requests whose bodies "
        "are still arriving; see `Retry-After`. The connection is closed.",
        {"too_many_slow_requests": _error_example("too_many_slow_requests", "...")},
    )


def _database_unavailable(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "The database is unavailable; nothing was stored. Send the request again after "
        "`Retry-After` seconds.",
        {"database_unavailable": _error_example("database_unavailable", "...")},
    )


def _not_json(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "The body is not `application/json`.",
        {
            "unsupported_media_type": _error_example(
                "unsupported_media_type", "the body must be application/json"
            )
        },
    )


def _bad_body() -> dict[str, dict[str, Any]]:
    return {
        "invalid_json": _error_example("invalid_json", "the body is not valid JSON"),
        "duplicate_key": _error_example(
            "duplicate_key", "The key 'title' appears twice in one object of the body."
        ),
        "invalid_body": _error_example(
            "invalid_body",
            "the body does not match the schema",
            **_field("title", "Field required"),
        ),
    }


def _unsigned(ref: _Refs) -> dict[str, Any]:
    return _errors(
        ref,
        "The signature is missing or wrong, or the timestamp is not unix seconds or is "
        "outside the allowed skew. Nothing was changed.",
        {
            "missing_signature": _error_example("missing_signature", "the request is not signed"),
            "invalid_timestamp": _error_example(
                "invalid_timestamp", "the timestamp is not unix seconds"
            ),
            "stale_timestamp": _error_example(
                "stale_timestamp", "the timestamp is outside the allowed skew"
            ),
            "bad_signature": _error_example("bad_signature", "the signature does not match"),
        },
    )


DISABLED = _error_example("egov_disabled", "the e-gov API is not enabled")


def _egov_paths(ref: _Refs) -> dict[str, Any]:
    signed: dict[str, Any] = {
        "tags": ["egov"],
        "security": [{SIGNATURE_SCHEME: []}],
        "parameters": [{"$ref": "#/components/parameters/Timestamp"}],
    }
    create = {
        **signed,
        "operationId": "createNotice",
        "summary": "Create a notice or task (idempotent by external_id)",
        "description": (
            "Creates the notice, assigns its audience and posts it to the group, in one "
            "transaction. The same `external_id` with an identical body (compared after "
            "validation) answers 200 with the same id and creates nothing; with a different "
            "body, 409. An audience that resolves to nobody is refused (`audience_empty`)."
        ),
        "requestBody": {
            "required": True,
            "content": _json_content(
                ref(EgovNotice),
                example={
                    "external_id": "portal-2019-1234",
                    "doc_number": "宜教办发[2019]41号",
                    "kind": "task",
                    "title": "关于报送作业管理自查情况的通知",
                    "body": "请各科室于12月10日前报送自查报告。",
                    "issuer": {"department": "办公室", "name": "张三"},
                    "deadline": "2019-12-10T17:00:00+08:00",
                    "requires": "progress",
                    "audience": {"departments": ["基础教育科"], "people": ["p001"]},
                    "plan_ref": None,
                },
            ),
        },
        "responses": {
            "201": _ok("Created.", ref(NoticeCreated)),
            "200": _ok(
                "The same external_id and body again: the existing notice, nothing created.",
                ref(NoticeCreated),
            ),
            "400": _errors(
                ref,
                "The body is not JSON or does not match the schema (`fields` says where), or "
                "its audience or values are refused.",
                {
                    **_bad_body(),
                    "audience_empty": _error_example(
                        "audience_empty", "the audience resolves to nobody"
                    ),
                    "unknown_person": _error_example(
                        "unknown_person",
                        "unknown person id(s): p999",
                        **_field("audience.people", "unknown person id(s): p999"),
                    ),
                    "unknown_department": _error_example(
                        "unknown_department",
                        "unknown department(s): 后勤科",
                        **_field("audience.departments", "unknown department(s): 后勤科"),
                    ),
                    "invalid_value": _error_example(
                        "invalid_value",
                        "deadline: is already past",
                        **_field("deadline", "deadline: is already past"),
                    ),
                },
            ),
            "401": _unsigned(ref),
            "404": _errors(ref, "The e-gov API is not enabled.", {"egov_disabled": DISABLED}),
            "409": _errors(
                ref,
                "The external_id was used before with a different body; `error.id` is the "
                "existing notice's id.",
                {
                    "external_id_conflict": _error_example(
                        "external_id_conflict",
                        "external_id already used for notice 12 with a different body",
                        id=12,
                    )
                },
            ),
            "408": _slow_body(ref),
            "413": _too_large(ref),
            "415": _not_json(ref),
            "429": _too_many_slow(ref),
            "503": _database_unavailable(ref),
        },
    }
    status = {
        **signed,
        "operationId": "getNoticeStatus",
        "summary": "A notice's per-person status",
        "parameters": [
            *signed["parameters"],
            {
                "name": "id",
                "in": "path",
                "required": True,
                "description": "The notice id (as answered by createNotice).",
                "schema": {"type": "integer", "minimum": 1},
            },
        ],
        "responses": {
            "200": _ok("The notice's counts and assignees.", ref(NoticeStatusDoc)),
            "400": _errors(
                ref,
                "The id is not a positive integer.",
                {
                    "invalid_id": _error_example(
                        "invalid_id", "the notice id must be a positive integer"
                    )
                },
            ),
            "401": _unsigned(ref),
            "404": _errors(
                ref,
                "There is no such notice, or the e-gov API is not enabled.",
                {
                    "unknown_notice": _error_example("unknown_notice", "no notice 12"),
                    "egov_disabled": DISABLED,
                },
            ),
            "503": _database_unavailable(ref),
        },
    }
    return {
        "/egov/v1/notices": {"post": create},
        "/egov/v1/notices/{id}": {"get": status},
    }


def _local_paths(ref: _Refs) -> dict[str, Any]:
    local: dict[str, Any] = {"tags": ["local"]}
    starting = _errors(
        ref,
        "The server is still starting (the room is not open yet).",
        {"starting": _error_example("starting", "starting")},
    )
    reader = {
        "name": "for",
        "in": "query",
        "description": (
            "A person id: the group's messages and that person's DMs (to or from them). "
            "Without it, the group's messages only. Not `bot`."
        ),
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]+$", "maxLength": 64},
    }
    invalid_query = {
        "invalid_query": _error_example("invalid_query", "after must be >= 0 and limit 1 to 500")
    }
    stream_description = (
        "Server-sent events for the page, for what this process posts and edits; a DM only "
        "on a stream opened with `for` its recipient or sender. The stream "
        "opens with `retry: 2000` and sends a comment every 15 s of silence. Events:\n\n"
        "- `message`: a new message; `data` is the message JSON (LocalMessageDoc).\n"
        "- `edit`: a message edited in place (same id, `edited_at` set); `data` is the whole "
        "message JSON after the edit.\n\n"
        "A subscriber that falls far behind is disconnected; on every (re)connect the page "
        "re-reads the room with GET /local/v1/messages."
    )
    return {
        "/local/": {
            "get": {
                **local,
                "operationId": "localPage",
                "summary": "The chat room page (plain HTML and JS)",
                "description": (
                    "Served from memory (read once at start-up) with a strong ETag and "
                    "`Cache-Control: no-cache`; `If-None-Match` with that tag answers 304."
                ),
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {HTML: {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "The client's copy (If-None-Match) is current."},
                },
            }
        },
        "/local/static/{name}": {
            "get": {
                **local,
                "operationId": "localStaticFile",
                "summary": "The page's script and style sheet, from memory",
                "description": (
                    "`app.js` (text/javascript) and `style.css` (text/css), read once at "
                    "start-up: a reinstall while the server runs cannot remove them. Strong "
                    "ETag, `Cache-Control: no-cache`; `If-None-Match` with that tag answers 304."
                ),
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "304": {"description": "The client's copy (If-None-Match) is current."},
                    "404": {
                        "description": "No such file: a plain HTML page in the bot's language.",
                        "content": {HTML: {"schema": {"type": "string"}}},
                    },
                },
            }
        },
        "/local/{tail}": {
            "get": {
                **local,
                "operationId": "localNotFound",
                "summary": "Any other address under /local/: a plain 404 page",
                "parameters": [
                    {
                        "name": "tail",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "404": {
                        "description": "A plain HTML page in the bot's language.",
                        "content": {HTML: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/local/v1/directory": {
            "get": {
                **local,
                "operationId": "localDirectory",
                "summary": "The people one can be on the page, and the bot's language",
                "responses": {"200": _ok("The directory.", ref(DirectoryDoc)), "503": starting},
            }
        },
        "/local/v1/messages": {
            "get": {
                **local,
                "operationId": "listLocalMessages",
                "summary": "Room messages after an id, oldest first",
                "description": (
                    "The bot's posts have sender `bot`; an edit updates the same id. Without "
                    "`for`, only the group's messages are listed; with `for`, also the DMs to "
                    "and from that person. `for` is a filter, not a login: the local group "
                    "has no authentication."
                ),
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "Only messages with a larger id.",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "At most this many messages.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                    },
                    reader,
                ],
                "responses": {
                    "200": _ok("The messages.", ref(MessagesDoc)),
                    "400": _errors(
                        ref,
                        "`after` or `limit` is not an integer or out of range, or `for` is not "
                        "a person id (or is `bot`).",
                        invalid_query,
                    ),
                    "503": starting,
                },
            },
            "post": {
                **local,
                "operationId": "postLocalMessage",
                "summary": "A person posts in the room (or, with to=bot, to the bot privately)",
                "description": (
                    "Answered only once the message is committed. An unknown sender is added "
                    "to the directory as staff, with `name` as its display name: a name that "
                    "reads as a name or an id the directory already has is refused "
                    "(`name_taken`), and so is, from anyone, a name holding a character that "
                    "hides or reorders text (`unsafe_characters`: bidi controls, zero-width "
                    "and other format characters). The name is stored stripped and in NFC. "
                    "`sender` is never `bot`. `client_id` makes a retried post idempotent."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json_content(
                        ref(PostMessage), example={"sender": "p001", "text": "收到", "reply_to": 7}
                    ),
                },
                "responses": {
                    "201": _ok("Stored.", ref(MessageCreated)),
                    "200": _ok(
                        "The same sender's client_id again: the earlier post's id, nothing stored.",
                        ref(MessageCreated),
                    ),
                    "400": _errors(
                        ref,
                        "The body is not JSON or does not match the schema, or the name is "
                        "refused.",
                        {
                            **_bad_body(),
                            "name_taken": _error_example(
                                "name_taken",
                                "the directory already has someone named '王五': a new sender "
                                "cannot take that name; choose another",
                            ),
                            "unsafe_characters": _error_example(
                                "unsafe_characters",
                                "the name holds U+202E (RIGHT-TO-LEFT OVERRIDE), a character "
                                "that hides or reorders text; remove it",
                            ),
                        },
                    ),
                    "413": _too_large(ref),
                    "415": _not_json(ref),
                    "503": starting,
                },
            },
        },
        "/local/v1/actions": {
            "post": {
                **local,
                "operationId": "postLocalAction",
                "summary": "A person clicks a card button",
                "description": (
                    "`action` is a button's value, or `ack` for the card's 收到 button. The "
                    "click is stored, then processed before the answer."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json_content(
                        ref(PostAction),
                        example={"sender": "p002", "message_id": 7, "action": "ack"},
                    ),
                },
                "responses": {
                    "200": _ok("Recorded.", ref(ActionResult)),
                    "400": _errors(
                        ref,
                        "The body is not JSON or does not match the schema, or there is no "
                        "such message.",
                        {
                            **_bad_body(),
                            "unknown_message": _error_example("unknown_message", "no message 7"),
                        },
                    ),
                    "413": _too_large(ref),
                    "415": _not_json(ref),
                    "503": starting,
                },
            }
        },
        "/local/v1/stream": {
            "get": {
                **local,
                "operationId": "localStream",
                "summary": "Server-sent events: `message` and `edit`",
                "description": stream_description,
                "parameters": [reader],
                "responses": {
                    "200": {
                        "description": "An endless `text/event-stream`.",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "example": (
                                    "retry: 2000\n: connected\n\n"
                                    'event: message\ndata: {"id": 8, "sender": "p001", ...}\n\n'
                                ),
                                "x-events": {
                                    "message": ref(LocalMessageDoc),
                                    "edit": ref(LocalMessageDoc),
                                },
                            }
                        },
                    },
                    "400": _errors(ref, "`for` is not a person id (or is `bot`).", invalid_query),
                },
            }
        },
    }


def _ack_link_paths(ref: _Refs) -> dict[str, Any]:
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "The signed token (an HMAC of the assignment id and expiry).",
        "schema": {"type": "string"},
    }
    refusals = {
        "400": _errors(
            ref,
            "The assignment no longer exists.",
            {"unknown_assignment": _error_example("unknown_assignment", "...")},
            html=True,
        ),
        "401": _errors(
            ref,
            "The token is forged, damaged or expired.",
            {
                "invalid_token": _error_example("invalid_token", "..."),
                "token_expired": _error_example("token_expired", "..."),
            },
            html=True,
        ),
        "409": _errors(
            ref,
            "The notice is closed.",
            {"notice_closed": _error_example("notice_closed", "...")},
            html=True,
        ),
    }
    note = (
        " A refusal is an HTML page when the request accepts text/html, the JSON error otherwise."
    )
    page = {"description": "The page.", "content": {HTML: {"schema": {"type": "string"}}}}
    return {
        "/a/{token}": {
            "parameters": [token],
            "get": {
                "tags": ["ack-links"],
                "operationId": "ackLinkPage",
                "summary": "The one-button confirmation page (changes nothing)",
                "description": "Link previewers fetch URLs, so a GET never records anything."
                + note,
                "responses": {"200": page, **refusals},
            },
            "post": {
                "tags": ["ack-links"],
                "operationId": "ackLinkAcknowledge",
                "summary": "Record the acknowledgment (channel `link`); repeating it is harmless",
                "description": "The confirmation page's form posts here." + note,
                "responses": {"200": page, **refusals},
            },
        },
        "/r/{token}": {
            "parameters": [
                {**token, "description": "The signed token (an HMAC of the period and expiry)."},
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["docx", "md", "csv", "json"]},
                },
            ],
            "get": {
                "tags": ["ack-links"],
                "operationId": "reportDownload",
                "summary": "Download a period's report (the link the office gets from 报告)",
                "responses": {
                    "200": {
                        "description": "The report, as an attachment (DOCX by default).",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "400": _errors(
                        ref,
                        "An unknown format.",
                        {"invalid_format": _error_example("invalid_format", "...")},
                    ),
                    "401": _errors(
                        ref,
                        "The token is forged, damaged or expired.",
                        {
                            "invalid_token": _error_example("invalid_token", "..."),
                            "token_expired": _error_example("token_expired", "..."),
                        },
                    ),
                },
            },
        },
    }


def _service_paths(ref: _Refs) -> dict[str, Any]:
    service = {"tags": ["service"]}
    return {
        "/healthz": {
            "get": {
                **service,
                "operationId": "healthz",
                "summary": "Liveness and readiness",
                "responses": {
                    "200": _ok("The database answers.", ref(HealthDoc)),
                    "503": _ok("The database does not answer (`db` is `error`).", ref(HealthDoc)),
                },
            }
        },
        "/metrics": {
            "get": {
                **service,
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                **service,
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _ok("The OpenAPI 3.1 document.", {"type": "object"}),
                },
            }
        },
    }


def build_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this version of workbot (a new dict on every call)."""
    ref = _Refs()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "workbot",
            "version": version,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "egov", "description": "The e-government portal API (signed)."},
            {"name": "local", "description": "The built-in local group (no authentication)."},
            {"name": "ack-links", "description": "Signed one-click acknowledgment links."},
            {"name": "service", "description": "Health, metrics and this document."},
        ],
        "paths": {
            **_egov_paths(ref),
            **_local_paths(ref),
            **_ack_link_paths(ref),
            **_service_paths(ref),
        },
        "components": {
            "schemas": ref.schemas,
            "parameters": {
                "Timestamp": {
                    "name": TIMESTAMP_HEADER,
                    "in": "header",
                    "required": True,
                    "description": (
                        "The signing time in unix seconds; it must be within "
                        "`[egov] max_skew_seconds` of the server's clock. See "
                        f"{SIGNATURE_HEADER}."
                    ),
                    "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
                    "example": "1575968400",
                }
            },
            "securitySchemes": {
                SIGNATURE_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": SIGNING,
                }
            },
        },
    }


@functools.cache
def _document(version: str) -> bytes:
    return json.dumps(build_openapi(version), ensure_ascii=False).encode()


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json (built once per process)."""
    return web.Response(body=_document(__version__), content_type=JSON, charset="utf-8")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register GET /openapi.json."""
    router.add_get("/openapi.json", openapi_json)
