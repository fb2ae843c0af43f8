"""Signed ack links: GET shows a one-button confirmation page, POST records the 收到.

A GET never changes anything, because chat apps and mail scanners fetch links to preview them.
"""

from __future__ import annotations

import datetime as dt
import html
import logging

from aiohttp import web

from bot.core.appkeys import BOT, DATABASE
from bot.core.context import BotContext
from bot.core.links import LinkError, LinkExpired
from bot.core.render import when
from storage import domain, lookups
from storage.errors import DomainError
from storage.models import Assignment, Notice, Person
from storage.types import AssignmentState, Channel, NoticeState

log = logging.getLogger("workbot.links")

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font:16px/1.6 system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}
button{{font-size:1.1rem;padding:.6rem 2rem}}</style></head>
<body><h1>{title}</h1>{content}</body></html>
"""


CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


def _page(ctx: BotContext, content: str, status: int = 200) -> web.Response:
    return web.Response(
        text=PAGE.format(
            lang=ctx.t.language, title=html.escape(ctx.t("link.title")), content=content
        ),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CSP,
        },
    )


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _fail(request: web.Request, status: int, code: str, text: str) -> web.Response:
    """A refusal: a page for a browser, the JSON error object for anything else."""
    if "text/html" in request.headers.get("Accept", ""):
        return _page(request.app[BOT], _p(text), status=status)
    return web.json_response({"error": {"code": code, "message": text}}, status=status)


def _refusal(request: web.Request, error: LinkError) -> web.Response:
    ctx = request.app[BOT]
    key = "link.expired" if isinstance(error, LinkExpired) else "link.invalid"
    log.warning("ack link refused: %s", error.code)
    return _fail(request, 401, error.code, ctx.t(key))


async def _load(
    request: web.Request, now: dt.datetime
) -> tuple[int, Assignment, Notice, Person] | web.Response:
    ctx = request.app[BOT]
    if ctx.links is None:
        return _fail(request, 401, "invalid_token", ctx.t("link.invalid"))
    try:
        assignment_id = ctx.links.verify(request.match_info["token"], now=now)
    except LinkError as exc:
        return _refusal(request, exc)
    async with request.app[DATABASE].read() as session:
        row = await lookups.assignment_with_context(session, assignment_id)
    if row is None:
        return _fail(request, 400, "unknown_assignment", ctx.t("link.unknown"))
    a, notice, person = row
    return assignment_id, a, notice, person


def _notice_lines(ctx: BotContext, notice: Notice) -> str:
    return _p(
        ctx.t(
            "link.notice",
            kind_label=ctx.t(f"kind.{notice.kind.value}"),
            id=notice.id,
            title=notice.title,
        )
    ) + _p(ctx.t("link.deadline", deadline=when(ctx.t, ctx.tz, notice.deadline)))


def _closed(request: web.Request, notice: Notice) -> web.Response:
    ctx = request.app[BOT]
    state = ctx.t(f"notice_state.{notice.state.value}")
    text = ctx.t("link.closed", id=notice.id, title=notice.title, state_label=state)
    return _fail(request, 409, "notice_closed", text)


async def confirm_page(request: web.Request) -> web.Response:
    """GET /a/{token}: what is being acknowledged, and one button. Changes nothing."""
    ctx = request.app[BOT]
    loaded = await _load(request, dt.datetime.now(dt.UTC))
    if isinstance(loaded, web.Response):
        return loaded
    _, a, notice, person = loaded
    if notice.state is not NoticeState.OPEN:
        return _closed(request, notice)
    if a.state is not AssignmentState.PENDING:
        return _page(ctx, _p(ctx.t("link.already", id=notice.id, title=notice.title)))
    form = (
        '<form method="post">'
        f'<button type="submit">{html.escape(ctx.t("link.button"))}</button></form>'
    )
    return _page(
        ctx, _p(ctx.t("link.confirm", name=person.name)) + _notice_lines(ctx, notice) + form
    )


async def acknowledge(request: web.Request) -> web.Response:
    """POST /a/{token}: record the acknowledgment (channel link); repeating it is harmless."""
    ctx = request.app[BOT]
    now = dt.datetime.now(dt.UTC)
    loaded = await _load(request, now)
    if isinstance(loaded, web.Response):
        return loaded
    _, a, notice, person = loaded
    try:
        async with request.app[DATABASE].transaction() as session:
            change = await domain.acknowledge(
                session,
                notice.id,
                person.id,
                channel=Channel.LINK,
                actor=domain.Actor.of(person),
                now=now,
            )
    except DomainError as exc:
        log.warning("ack link for assignment %s refused: %s", a.id, exc.code)
        return _closed(request, notice)
    key = "link.done" if change.changed else "link.already"
    return _page(ctx, _p(ctx.t(key, id=notice.id, title=notice.title)))


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the ack-link routes."""
    router.add_get("/a/{token}", confirm_page)
    router.add_post("/a/{token}", acknowledge)
