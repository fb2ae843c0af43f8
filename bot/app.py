"""The aiohttp application: wiring, lifetimes (cleanup_ctx) and the service endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bot import __version__
from bot.acklinks import AckLinks, ReportLinks
from bot.appkeys import (
    BOT,
    CHAT,
    CONFIG,
    DATABASE,
    EGOV_SECRET,
    ENVIRON,
    LOCAL_ROUTES,
    METRICS,
    PLATFORMS,
    ROOM,
    ROOM_HUB,
    SCHEDULER,
    SENDER,
    WECOM_CALLBACKS,
)
from bot.chat import ChatService, LocalRoomBackend
from bot.config import Config
from bot.context import BotContext
from bot.delivery.sender import RetryPolicy, Sender
from bot.delivery.wake import wake_listener
from bot.metrics import Metrics
from bot.platforms.local import LocalPlatform, LocalRoutes, RoomHub
from bot.platforms.matrix import MatrixPlatform
from bot.platforms.registry import build_platforms
from bot.platforms.wecom import WecomCallbacks
from bot.scheduler import tasks
from bot.scheduler.runner import Scheduler
from bot.web import acklinks, egov, egov_callbacks, openapi
from bot.web import reports as report_downloads
from handlers.dispatch import Dispatcher
from storage import directory, jobs, outbox, settings
from storage.db import Database
from storage.domain import Actor
from storage.migrate import require_current, upgrade
from storage.models import Job, Notice, OutboxMessage, Person
from storage.types import OutboxState

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
            response = json_error(exc.status, code, exc.reason)
        else:
            response = exc
    except Exception:
        ref = log_unexpected(request)
        response = json_error(500, "internal", f"unexpected error (reference {ref})", reference=ref)
    metrics.count_request(request.method, route_name, response.status)
    return response


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
            await session.execute(text("SELECT 1"))
            for state, n in (
                await session.execute(
                    select(OutboxMessage.state, func.count())
                    .where(OutboxMessage.state.in_([OutboxState.PENDING, OutboxState.DEAD]))
                    .group_by(OutboxMessage.state)
                )
            ).all():
                outbox[state.value] = int(n)
    except Exception:
        log.warning("healthz: database check failed", exc_info=True)
        db_state = "error"
    degraded = db_state != "ok" or outbox["dead"] > 0
    body = {
        "status": "degraded" if degraded else "ok",
        "db": db_state,
        "outbox": outbox,
        "version": __version__,
    }
    return web.json_response(body, status=503 if db_state != "ok" else 200)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    gauges: dict[str, dict[str, int]] = {}
    try:
        async with request.app[DATABASE].read() as session:
            for name, column in (
                ("outbox_messages", OutboxMessage.state),
                ("jobs", Job.state),
                ("notices", Notice.state),
            ):
                rows = (await session.execute(select(column, func.count()).group_by(column))).all()
                gauges[name] = {state.value: int(n) for state, n in rows}
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
    """The database's lifetime: open, migrate or check the schema, and dispose at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        db = Database(config.database.resolved_url(app[ENVIRON]))
        try:
            if auto_migrate:
                await upgrade(db)
            else:
                await require_current(db)
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


def utcnow() -> dt.datetime:
    """The wall clock (aware, UTC)."""
    return dt.datetime.now(dt.UTC)


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delivery and the scheduler run for the app's lifetime, in this process."""
    config = app[CONFIG]
    db = app[DATABASE]
    ctx = app[BOT]
    platforms = app[PLATFORMS]
    worker = worker_id()
    idle = 600.0  # a safety poll: other processes' commits wake the workers (wake_listener)
    delivery = config.delivery
    sender = Sender(
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

    feed = None
    if "egov" in platforms:
        feed = egov_callbacks.CallbackFeed(db, ctx, clock=utcnow, max_idle=60.0)
        async with db.transaction() as session:
            await egov_callbacks.start_cursor(session)

    def wake(topics: set[str]) -> None:
        if "outbox" in topics:
            sender.wake()
        if "jobs" in topics:
            scheduler.wake()
        if "audit" in topics and feed is not None:
            feed.wake()

    db.wake_listeners.append(wake)
    listener = wake_listener(db, wake)
    await listener.start()
    async with db.transaction() as session:
        await tasks.ensure_digest(session, ctx, now=utcnow())
    running = [
        asyncio.create_task(sender.run(), name="workbot-delivery"),
        asyncio.create_task(scheduler.run(), name="workbot-scheduler"),
    ]
    if feed is not None:
        running.append(asyncio.create_task(feed.run(), name="workbot-egov-callbacks"))
    yield
    # Let each loop finish its pass: cancelling one inside a transaction can leave its
    # connection holding SQLite's write lock. Cancel only what does not stop in time.
    for loop in (sender, scheduler, feed):
        if loop is not None:
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
    except Exception:  # the leases simply expire instead
        log.warning("could not release this worker's claims at shutdown", exc_info=True)


def serves_local(config: Config) -> bool:
    """Whether this process serves the built-in local group."""
    return config.group.platform == "local" or config.platforms.local.enabled


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


async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
    """The chat core: platforms, the dispatcher, inbound processing and the local room."""
    config = app[CONFIG]
    db = app[DATABASE]
    secret = await link_secret(db, app[ENVIRON], config.bot.link_secret_env)
    hub = app[ROOM_HUB]
    room = None
    local = None
    if serves_local(config):
        room = LocalRoomBackend(
            db, hub, chat_id=config.group.chat_id, bot_names=config.bot.names, clock=utcnow
        )
        local = LocalPlatform(room, hub)
    platforms = build_platforms(config, app[ENVIRON], local=local)
    ctx = dataclasses.replace(
        app[BOT],
        links=AckLinks(secret, config.bot.public_url),
        report_links=ReportLinks(secret, config.bot.public_url),
        group_capabilities=platforms[config.group.platform].capabilities,
    )
    app[BOT] = ctx
    app[PLATFORMS] = platforms
    capabilities = {name: p.capabilities for name, p in platforms.items()}
    chat = ChatService(
        db,
        Dispatcher(db, ctx, capabilities, clock=utcnow),
        clock=utcnow,
        notes=app[METRICS].chat_events,
    )
    app[CHAT] = chat
    if room is not None:
        room.chat = chat
        await room.start()
        app[ROOM] = room
        app[LOCAL_ROUTES].attach(room)
    if config.group.platform == "local":
        await seed_demo_directory(db)
    if room is not None and config.server.host not in LOOPBACK:
        log.warning(
            "the local group has no authentication and is served on %s: anyone who can reach "
            "this address can post as anyone (keep server.host = 127.0.0.1 while it is on)",
            config.server.host,
        )
    if WECOM_CALLBACKS in app:
        app[WECOM_CALLBACKS].attach(chat.accept)
    matrix = platforms.get("matrix")
    if isinstance(matrix, MatrixPlatform):
        matrix.start_sync(chat.accept, *sync_token_store(db, "matrix:next_batch"))
    recovered = await chat.gate.recover()
    if recovered:
        log.info("processed %d inbound events left over from the last run", recovered)
    yield
    hub.close()
    if WECOM_CALLBACKS in app:
        app[WECOM_CALLBACKS].attach(None)
    if room is not None:
        app[LOCAL_ROUTES].attach(None)
        await room.stop()
    await chat.gate.drain()
    for platform in platforms.values():
        await platform.close()


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
DEMO_PEOPLE = Path(__file__).parent / "platforms" / "local_demo_people.csv"


async def seed_demo_directory(db: Database) -> None:
    """On the embedded default (the local group) with an empty directory, add eight demo
    people, an office among them, so that a newcomer can play both sides at once."""
    try:
        async with db.transaction() as session:
            if await session.scalar(select(func.count()).select_from(Person)):
                return
            parsed = directory.parse_people_csv(DEMO_PEOPLE.read_bytes())
            await directory.upsert_people(
                session, parsed, actor=Actor.system("local-demo"), now=utcnow()
            )
    except IntegrityError:
        return  # another worker starting at the same moment seeded it first
    log.warning(
        "the directory was empty: added the local group's 8 demo people "
        "(`workbot people import FILE` adds your own)"
    )


def sync_token_store(
    db: Database, key: str
) -> tuple[Callable[[], Awaitable[str | None]], Callable[[str], Awaitable[None]]]:
    """Load and save a sync position (Matrix next_batch) in bot_setting."""

    async def load() -> str | None:
        async with db.read() as session:
            return await settings.get(session, key)

    async def save(value: str) -> None:
        async with db.transaction() as session:
            await settings.put(session, key, value)

    return load, save


async def close_streams(app: web.Application) -> None:
    """End the page's event streams so that shutdown does not wait for them."""
    app[ROOM_HUB].close()


def create_app(
    config: Config, environ: Mapping[str, str], *, workers: bool = True
) -> web.Application:
    """Build the application for a validated configuration."""
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=config.server.max_body_bytes
    )
    app[CONFIG] = config
    app[ENVIRON] = environ
    app[METRICS] = Metrics()
    app[BOT] = BotContext.from_config(config)
    app[ROOM_HUB] = RoomHub()
    app.cleanup_ctx.append(database_ctx(config.database.auto_migrate))
    app.cleanup_ctx.append(chat_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    app.on_shutdown.append(close_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    acklinks.add_routes(app.router)
    app[EGOV_SECRET] = config.egov.secret(environ) or ""
    egov.add_routes(app.router)
    openapi.add_routes(app.router)
    report_downloads.add_routes(app.router)
    wecom = config.platforms.wecom
    if wecom is not None and not wecom.environment_problems(environ):
        callbacks = WecomCallbacks(wecom, wecom.secrets(environ))
        callbacks.add_to(app.router)
        app[WECOM_CALLBACKS] = callbacks
    if serves_local(config):
        routes = LocalRoutes(app[ROOM_HUB], language=config.bot.language)
        routes.add_to(app.router)
        app[LOCAL_ROUTES] = routes
    return app
