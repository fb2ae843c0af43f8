"""Signed report downloads: GET /r/{token} serves the period's report (DOCX by default).

The office asks for a report in chat (报告 2019-11); platforms that cannot send files get a
link instead, signed for that period and expiring (bot/core/links.py ReportLinks).
"""

from __future__ import annotations

import datetime as dt
import logging

from aiohttp import web

from bot.core import report_format as reports
from bot.core.appkeys import BOT, DATABASE
from bot.core.links import LinkError, LinkExpired
from storage.reports import outcome_rows

log = logging.getLogger("workbot.reports")

CONTENT_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json; charset=utf-8",
}


def _fail(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def download(request: web.Request) -> web.StreamResponse:
    """The report of the token's period, as an attachment (?format=docx|md|csv|json)."""
    ctx = request.app[BOT]
    if ctx.report_links is None:
        return _fail(401, "invalid_token", ctx.t("link.invalid"))
    try:
        first, last = ctx.report_links.verify(
            request.match_info["token"], now=dt.datetime.now(dt.UTC)
        )
    except LinkError as exc:
        log.warning("report link refused: %s", exc.code)
        key = "link.expired" if isinstance(exc, LinkExpired) else "link.invalid"
        return _fail(401, exc.code, ctx.t(key))
    fmt = request.query.get("format", "docx")
    if fmt not in CONTENT_TYPES:
        return _fail(400, "invalid_format", "format must be docx, md, csv or json")
    try:
        start, end = reports.period(first, last, ctx.tz)
    except ValueError:  # a genuine token for a period no report covers (or the wrong way round)
        log.warning("report link refused: invalid_period")
        message = ctx.t(
            "http.invalid_period",
            earliest=reports.EARLIEST_DAY.isoformat(),
            latest=reports.LATEST_DAY.isoformat(),
        )
        return _fail(400, "invalid_period", message)
    async with request.app[DATABASE].read() as session:
        rows = await outcome_rows(session, start, end)
    office = reports.report_office(rows, ctx.t("report.office_fallback"))
    body = reports.render(fmt, rows, office=office, date=last, tz=ctx.tz, t=ctx.t)  # type: ignore[arg-type]
    data = body if isinstance(body, bytes) else body.encode()
    name = f"report-{first.isoformat()}-{last.isoformat()}.{fmt}"
    return web.Response(
        body=data,
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the download route."""
    router.add_get("/r/{token}", download)
