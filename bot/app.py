"""The aiohttp application: wiring, lifetimes (cleanup_ctx) and the service endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import __version__
from bot.appkeys import (
    BOT,
    CHAT,
    CONFIG,
    DATABASE,
    EGOV_SECRET,
    ENVIRON,
    METRICS,
    OUTAGE,
    PLATFORMS,
    ROOM,
    SCHEDULER,
    SENDER,
)
from bot.config import Config
from bot.core import feed
from bot.core.clock import utcnow
from bot.core.context import BotContext
from bot.core.durable_room import LocalRoom
from bot.core.intake import ChatIntake
from bot.core.links import AckLinks, ReportLinks
from bot.core.metrics import Metrics
from bot.core.outage import Outage
from bot.core.platform import Host, StorageUnavailable
from bot.core.room import RoomHub
from bot.delivery.sender import OutboxSender, RetryPolicy
from bot.delivery.wake import wake_listener
from bot.platforms.egov_callback import EgovCallbackPlatform
from bot.platforms.registry import build_platforms, directory_columns
from bot.scheduler import tasks
from bot.scheduler.runner import Scheduler
from bot.web import ack_pages, egov, openapi, report_downloads
from bot.web.bodies import BodyTimeout, SlowBodies, TooManySlowBodies
from handlers.dispatch import Dispatcher
from handlers.parse import worth_processing
from storage import audit, directory, jobs, lookups, outbox, settings
from storage.db import Conflict, Database, DatabaseUnavailable
from storage.domain import Actor
from storage.migrate import require_current, upgrade

log = logging.getLogger("workbot.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The contract's error body: {"error": {"code", "message", ...}}."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON; an unexpected one is logged with a reference and answered 500."""
    metrics = request.app[METRICS]
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = exc.reason.lower().replace(" ", "_").replace("-", "_")
            t = request.app[BOT].t
            key = f"http.status_{exc.status}"
            response = json_error(
                exc.status, code, t(key) if t.has(key) else t("http.status_other")
            )
        else:
            response = exc
    except BodyTimeout as exc:
        message = request.app[BOT].t("http.body_timeout", seconds=f"{exc.seconds:g}")
        response = json_error(408, "request_timeout", message)
        response.force_close()
    except (DatabaseUnavailable, StorageUnavailable) as exc:
        response = database_unavailable(request, exc)
    except TooManySlowBodies as exc:
        message = request.app[BOT].t("http.too_many_slow_bodies", limit=exc.limit)
        response = json_error(429, "too_many_slow_requests", message)
        response.headers["Retry-After"] = str(retry_after(request))
        response.force_close()
    except Exception:
        ref = log_unexpected(request)
        message = request.app[BOT].t("http.internal", reference=ref)
        response = json_error(500, "internal", message, reference=ref)
    else:
        outage = request.app[OUTAGE]
        if outage.down and DATABASE in request.app and request.app[DATABASE].available:
            outage.answered()
    metrics.count_request(request.method, route_name, response.status)
    return response


DATABASE_RETRY_AFTER = 5  # seconds: what a 503 for an unavailable database asks a client to wait


def database_unavailable(
    request: web.Request, exc: DatabaseUnavailable | StorageUnavailable
) -> web.Response:
    """503 database_unavailable with Retry-After; one warning per outage, no traceback."""
    reason = exc.reason if isinstance(exc, DatabaseUnavailable) else str(exc)
    request.app[OUTAGE].failed(DatabaseUnavailable(reason))
    message = request.app[BOT].t("http.database_unavailable", seconds=DATABASE_RETRY_AFTER)
    response = json_error(503, "database_unavailable", message)
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def retry_after(request: web.Request) -> int:
    """The seconds a refused client is asked to wait (the Retry-After header)."""
    return max(1, round(request.app[CONFIG].server.body_timeout.total_seconds()))


def log_unexpected(request: web.Request) -> str:
    """Log the current exception under a short reference id and return the id."""
    ref = secrets.token_hex(4)
    log.exception("unexpected error %s on %s %s", ref, request.method, request.path)
    return ref


async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: database reachability and the outbox backlog."""
    db = request.app[DATABASE]
    outbox = {"pending": 0, "dead": 0}
    db_state = "ok"
    try:
        async with db.read() as session:
            counts = await lookups.state_counts(session)
        for state in ("pending", "dead"):
            outbox[state] = counts["outbox_messages"].get(state, 0)
    except DatabaseUnavailable as exc:
        request.app[OUTAGE].failed(exc)  # one warning per outage, not one per probe
        db_state = "error"
    except Exception:
        log.warning("healthz: database check failed", exc_info=True)
        db_state = "error"
    if not db.available:  # e.g. SQLite reads while another connection holds the write lock
        db_state = "error"
    degraded = db_state != "ok" or outbox["dead"] > 0
    body = {
        "status": "degraded" if degraded else "ok",
        "db": db_state,
        "outbox": outbox,
        "version": __version__,
    }
    if db_state == "ok":
        return web.json_response(body)
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
    return web.json_response(body, status=503, headers=headers)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    gauges: dict[str, dict[str, int]] = {}
    try:
        async with request.app[DATABASE].read() as session:
            gauges = await lookups.state_counts(session)
    except DatabaseUnavailable as exc:
        request.app[OUTAGE].failed(exc)  # the rest is served without the database's gauges
    except Exception:
        log.warning("metrics: database query failed", exc_info=True)
    body = request.app[METRICS].render(__version__, gauges)
    return web.Response(
        text=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def database_ctx(auto_migrate: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The database's lifetime: open, migrate or check the schema and the audit key, and
    dispose at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        environ = app[ENVIRON]
        db = Database(
            config.database.resolved_url(environ),
            lock_timeout=config.database.lock_timeout.total_seconds(),
            audit_key=config.audit.key(environ),
        )
        try:
            if auto_migrate:
                await upgrade(db)
            else:
                await require_current(db)
            # A keyed chain without its key (or with another) is refused here, before
            # anything is served: every change would fail to write its audit row.
            async with db.transaction() as session:
                if await audit.adopt_key(session, actor="serve", now=utcnow()):
                    log.info("the audit chain is keyed from here on")
        except BaseException:
            await db.dispose()
            raise
        app[DATABASE] = db
        yield
        await db.dispose()

    return ctx


def worker_id() -> str:
    """A name for this process in outbox and job claims: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delivery and the scheduler run for the app's lifetime, in this process."""
    config = app[CONFIG]
    db = app[DATABASE]
    ctx = app[BOT]
    platforms = app[PLATFORMS]
    worker = worker_id()
    idle = 600.0  # a safety poll: other processes' commits wake the workers (wake_listener)
    delivery = config.delivery
    sender = OutboxSender(
        db,
        platforms,
        worker=worker,
        clock=utcnow,
        policy=RetryPolicy(
            max_attempts=delivery.max_attempts,
            base=delivery.backoff_base.total_seconds(),
            cap=delivery.backoff_cap.total_seconds(),
        ),
        lease=delivery.lease,
        batch=delivery.batch,
        concurrency=delivery.concurrency,
        max_idle=idle,
    )
    # The scheduler looks at least every WAKE_HORIZON: new jobs due later wake nobody.
    scheduler = Scheduler(
        db,
        tasks.handlers(ctx),
        worker=worker,
        clock=utcnow,
        max_idle=min(idle, jobs.WAKE_HORIZON.total_seconds()),
    )
    app[SENDER] = sender
    app[SCHEDULER] = scheduler

    # The audit trail's followers: the group's tally and (when on) the portal's callbacks.
    # Other processes' commits wake it too (NOTIFY, or data_version on SQLite).
    audit_feed = feed.AuditFeed(db, ctx, clock=utcnow, max_idle=60.0, callbacks="egov" in platforms)
    async with db.transaction() as session:
        await feed.start_cursor(session)

    def wake(topics: set[str]) -> None:
        if "outbox" in topics:
            sender.wake()
        if "jobs" in topics:
            scheduler.wake()
        if not topics.isdisjoint(feed.WAKE_TOPICS):
            audit_feed.wake()

    db.wake_listeners.append(wake)
    listener = wake_listener(db, wake)
    await listener.start()
    async with db.transaction() as session:
        await tasks.ensure_digest(session, ctx, now=utcnow())
        if "egov" in platforms:  # the portal keeps the chain's daily checkpoints
            await tasks.ensure_checkpoint(session, ctx, now=utcnow())
    running = [
        asyncio.create_task(sender.run(), name="workbot-delivery"),
        asyncio.create_task(scheduler.run(), name="workbot-scheduler"),
    ]
    running.append(asyncio.create_task(audit_feed.run(), name="workbot-audit-feed"))
    yield
    # Let each loop finish its pass: cancelling one inside a transaction can leave its
    # connection holding SQLite's write lock. Cancel only what does not stop in time.
    for loop in (sender, scheduler, audit_feed):
        loop.stop()
    _, late = await asyncio.wait(running, timeout=config.server.shutdown_timeout.total_seconds())
    for task in late:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await listener.stop()
    db.wake_listeners.remove(wake)
    try:
        async with db.transaction() as session:
            await outbox.release_claims(session, worker=worker)
            await jobs.release_claims(session, worker=worker)
    except DatabaseUnavailable as exc:  # the leases simply expire instead
        log.warning("could not release this worker's claims at shutdown: %s", exc.reason)
    except Exception:  # the leases simply expire instead
        log.warning("could not release this worker's claims at shutdown", exc_info=True)


async def link_secret(db: Database, environ: Mapping[str, str], name: str | None) -> bytes:
    """The ack-link secret: from the named environment variable, else generated once and kept."""
    if name:
        value = environ.get(name, "")
        if value:
            return value.encode()
        log.warning("bot.link_secret_env names %s, which is unset: using the stored secret", name)
    async with db.transaction() as session:
        value = await settings.get_or_create(
            session, "ack_link_secret", lambda: secrets.token_urlsafe(32)
        )
    return value.encode()


class StoredState:
    """The adapters' small durable values, kept in bot_setting (StateStore)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        """The stored value, or None (StorageUnavailable while the database is)."""
        try:
            async with self.db.read() as session:
                return await settings.get(session, key)
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(exc.reason) from exc

    async def put(self, key: str, value: str) -> None:
        """Store a value (committed on return; StorageUnavailable while the database is
        unavailable)."""
        try:
            async with self.db.transaction() as session:
                await settings.put(session, key, value)
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(exc.reason) from exc


async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
    """The chat core: the dispatcher, the one intake, and every platform started on it."""
    config = app[CONFIG]
    db = app[DATABASE]
    platforms = app[PLATFORMS]
    secret = await link_secret(db, app[ENVIRON], config.bot.link_secret_env)
    ctx = dataclasses.replace(
        app[BOT],
        links=AckLinks(secret, config.bot.public_url),
        report_links=ReportLinks(secret, config.bot.public_url),
    )
    app[BOT] = ctx
    capabilities = {name: p.capabilities for name, p in platforms.items()}
    dispatcher = Dispatcher(db, ctx, capabilities, clock=utcnow)
    intake = ChatIntake(db, dispatcher.handle, clock=utcnow, notes=app[METRICS].chat_events)
    app[CHAT] = intake
    room = None
    if any(platform.serves_room for platform in platforms.values()):
        names = tuple(config.bot.names)
        room = LocalRoom(
            db,
            RoomHub(),
            chat_id=config.group.chat_id,
            bot_names=names,
            clock=utcnow,
            actionable=lambda text: worth_processing(text, names),
        )
        room.intake = intake
        await room.start()
        app[ROOM] = room
    if config.group.platform == "local":
        await seed_demo_directory(db)
    host = Host(intake=intake, state=StoredState(db), room=room)
    for platform in platforms.values():
        await platform.start(host)
    recovered = await intake.recover()
    if recovered:
        log.info("processed %d inbound events left over from the last run", recovered)
    yield
    for platform in platforms.values():
        await platform.stop()
    if room is not None:
        await room.stop()
    await intake.drain()
    for platform in platforms.values():
        await platform.close()


DEMO_PEOPLE = Path(__file__).parent / "core" / "local_demo_people.csv"


async def seed_demo_directory(db: Database) -> None:
    """On the embedded default (the local group) with an empty directory, add eight demo
    people, an office among them, so that a newcomer can play both sides at once."""
    try:
        async with db.transaction() as session:
            if not await directory.is_empty(session):
                return
            parsed = directory.parse_people_csv(DEMO_PEOPLE.read_bytes(), directory_columns())
            await directory.upsert_people(
                session, parsed, actor=Actor.system("local-demo"), now=utcnow()
            )
    except Conflict:
        return  # another worker starting at the same moment seeded it first
    log.warning(
        "the directory was empty: added the local group's 8 demo people "
        "(`workbot people import FILE` adds your own)"
    )


async def close_streams(app: web.Application) -> None:
    """End the local page's event streams so that shutdown does not wait for them."""
    room = app.get(ROOM)
    if room is not None:
        room.hub.close()


def create_app(
    config: Config, environ: Mapping[str, str], *, workers: bool = True
) -> web.Application:
    """Build the application for a validated configuration (PlatformUnavailable when a
    configured platform cannot run, e.g. its secrets are missing)."""
    platforms = build_platforms(config, config.platforms, environ)
    secret = config.egov.secret(environ)
    if config.egov.callback_url and secret:
        platforms["egov"] = EgovCallbackPlatform(secret)  # the portal's status callbacks
    bodies = SlowBodies(
        timeout=config.server.body_timeout.total_seconds(),
        per_client=config.server.slow_bodies_per_client,
    )
    app = web.Application(
        middlewares=[errors_middleware, bodies.middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[ENVIRON] = environ
    app[METRICS] = Metrics()
    app[OUTAGE] = Outage(log, "HTTP requests")
    app[BOT] = BotContext.from_config(config, platforms[config.group.platform].capabilities)
    app[PLATFORMS] = platforms
    app[EGOV_SECRET] = secret or ""
    app.cleanup_ctx.append(database_ctx(config.database.auto_migrate))
    app.cleanup_ctx.append(chat_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    app.on_shutdown.append(close_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    ack_pages.add_routes(app.router)
    egov.add_routes(app.router)
    openapi.add_routes(app.router)
    report_downloads.add_routes(app.router)
    for platform in platforms.values():
        app.router.add_routes(platform.routes())
    return app
