"""The `workbot` command line (docs/cli.md)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import gc
import logging
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn, TextIO

from bot import __version__
from bot.config import (
    Config,
    ConfigError,
    ConfigProblem,
    LoadedConfig,
    load_config,
    resolve_config_path,
)
from bot.core import portal_signing as signing
from bot.core import report_format as reports
from bot.core.burden_format import BadPeriod, period, render_text, to_json
from bot.core.context import BotContext
from bot.core.i18n import Translator
from bot.core.notices import publish_notice
from bot.platforms.registry import (
    PlatformUnavailable,
    build_platforms,
    capabilities_of,
    directory_columns,
)
from handlers.refusals import domain_message
from storage import audit, directory, outbox, queries
from storage.burden import snapshot_burden
from storage.db import Database, DatabaseError, DatabaseUnavailable, shown_url
from storage.directory import DirectoryFileError, Problem, parse_people_csv, upsert_people
from storage.domain import Actor, Audience, NoticeDraft
from storage.errors import DomainError, UnknownPerson
from storage.migrate import SchemaError, require_current, upgrade
from storage.replay import Replay, ReplayResult
from storage.reports import outcome_rows
from storage.types import UTC, NoticeKind, NoticeSource, OutboxState, Requires

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_DUE_TIME = dt.time(17, 30)


class UsageError(Exception):
    """Bad input on the command line: reported as one message, exit code 2."""


class Context:
    """What a command needs: the validated config, the environment, output streams."""

    def __init__(
        self, loaded: LoadedConfig[Config], environ: Mapping[str, str], out: TextIO, err: TextIO
    ):
        self.loaded = loaded
        self.config: Config = loaded.config
        self.environ = environ
        self.out = out
        self.err = err
        self.t = Translator(self.config.bot.language)
        self.tz = self.config.bot.tz

    def database(self) -> Database:
        """A database handle for the configured URL, writing with the audit key if any."""
        return Database(
            self.config.database.resolved_url(self.environ),
            lock_timeout=self.config.database.lock_timeout.total_seconds(),
            audit_key=self.config.audit.key(self.environ),
        )

    def print(self, line: str = "") -> None:
        """Write one line of output."""
        print(line, file=self.out)

    def local(self, when: dt.datetime | None) -> str:
        """A timestamp in the bot's timezone, or the localized 'none'."""
        if when is None:
            return self.t("none")
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def directory_reason(self, problems: Sequence[Problem]) -> str:
        """Directory import problems as one localized sentence."""
        parts = [self.t(f"directory.{p.code}", **p.params) for p in problems]
        return self.t("directory.separator").join(parts)

    def domain_message(self, error: DomainError) -> str:
        """A domain error as a localized sentence (the one mapping chat uses too)."""
        return domain_message(self.t, error)


def now() -> dt.datetime:
    """The current time (aware, UTC)."""
    return dt.datetime.now(UTC)


@asynccontextmanager
async def opened(ctx: Context) -> AsyncIterator[Database]:
    """The configured database, refused unless its schema is current; disposed after use."""
    db = ctx.database()
    try:
        await require_current(db)
        yield db
    finally:
        await db.dispose()


def iso_deadline(text: str, tz: dt.tzinfo) -> dt.datetime:
    """An ISO 8601 date or datetime; naive means the bot's timezone, a bare date means 17:30."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.datetime.combine(dt.date.fromisoformat(text), DEFAULT_DUE_TIME, tzinfo=tz)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--deadline: {text!r} is not an ISO 8601 date or time (e.g. 2019-12-10T17:00+08:00)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def parse_audience(specs: Sequence[str]) -> Audience:
    """`all`, `dept:NAME`, `person:ID` (repeatable, also comma-separated)."""
    everyone = False
    departments: list[str] = []
    people: list[str] = []
    for raw in specs:
        for spec in (s.strip() for s in raw.split(",")):
            kind, _, value = spec.partition(":")
            if spec in ("all", "全体"):
                everyone = True
            elif kind in ("dept", "department") and value.strip():
                departments.append(value.strip())
            elif kind == "person" and value.strip():
                people.append(value.strip())
            else:
                raise UsageError(f"--to: {spec!r} is not all, dept:NAME or person:ID")
    return Audience(everyone, tuple(dict.fromkeys(departments)), tuple(dict.fromkeys(people)))


# --- commands -------------------------------------------------------------------------------


def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    """Serve HTTP (and, as they land, delivery and the scheduler) until SIGINT or SIGTERM.

    The listening sockets are bound before anything starts (migrations, workers), so a busy
    port is one message and exit 2; the serving line is printed once they listen."""
    from aiohttp import web

    from bot.app import create_app
    from bot.appkeys import PLATFORMS

    server = ctx.config.server
    try:
        sockets = bind_sockets(server.host, server.port)
    except OSError as exc:
        shown = url_host(server.host)
        if exc.errno == errno.EADDRINUSE:
            print(f"workbot: {ctx.t('cli.port_busy', host=shown, port=server.port)}", file=ctx.err)
        else:
            reason = exc.strerror or type(exc).__name__
            message = ctx.t("cli.cannot_listen", host=shown, port=server.port, reason=reason)
            print(f"workbot: {message}", file=ctx.err)
        return EXIT_USAGE
    try:
        app = create_app(ctx.config, ctx.environ)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise

    async def freeze(_app: web.Application) -> None:
        # Everything built at start-up lives as long as the process: keep it out of the
        # collector's way (it cut p99 latency by an order of magnitude under load).
        gc.collect()
        gc.freeze()

    def announce(_aiohttp_line: str) -> None:
        """Called by aiohttp once every socket listens (its own line is not printed)."""
        host = url_host(server.host)
        print(ctx.t("cli.serving", host=host, port=server.port), file=ctx.err, flush=True)
        if any(platform.serves_room for platform in app[PLATFORMS].values()):
            print(ctx.t("cli.local_group", host=host, port=server.port), file=ctx.err, flush=True)

    app.on_startup.append(freeze)
    try:
        web.run_app(
            app,
            sock=sockets,
            shutdown_timeout=server.shutdown_timeout.total_seconds(),
            # aiohttp closes a connection whose request head is not in by then.
            keepalive_timeout=server.header_timeout.total_seconds(),
            print=announce,
            access_log=None,
            handle_signals=True,
        )
    finally:  # also when start-up fails before aiohttp takes the sockets over
        for sock in sockets:
            sock.close()
    return EXIT_OK


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """One bound TCP socket per address of `host` (as asyncio's create_server binds them:
    SO_REUSEADDR, IPv6 sockets IPv6-only); OSError, with nothing left open, when one fails."""
    infos = socket.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def url_host(host: str) -> str:
    """A host as written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


async def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    db = ctx.database()
    try:
        status = await upgrade(db)
        if db.audit_key is not None:
            async with db.transaction() as session:
                await audit.adopt_key(session, actor="cli", now=now())
    finally:
        await db.dispose()
    ctx.print(ctx.t("cli.migrated", revision=status.current))
    return EXIT_OK


def cmd_check_config(ctx: Context, args: argparse.Namespace) -> int:
    """Config already validated by main(); check the bound platform exists, then say so, and
    say whether the audit chain is keyed (a warning when it is not)."""
    try:
        build_platforms(ctx.config, ctx.config.platforms, ctx.environ)
    except PlatformUnavailable as exc:
        print(f"{ctx.loaded.source}: {exc}", file=ctx.err)
        return EXIT_USAGE
    ctx.print(ctx.t("cli.config_ok", source=ctx.loaded.source))
    key_env = ctx.config.audit.key_env
    if key_env is None:
        print(ctx.t("audit.unkeyed_warning"), file=ctx.err)
    else:
        ctx.print(ctx.t("audit.key_on", name=key_env))
    return EXIT_OK


async def cmd_people_import(ctx: Context, args: argparse.Namespace) -> int:
    """Upsert the directory from a CSV file; report every rejected row."""
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        parsed = parse_people_csv(data, directory_columns())
    except DirectoryFileError as exc:
        raise UsageError(f"{path}: {ctx.directory_reason([exc.problem])}") from None
    if args.dry_run:
        rejected = parsed.rejected
        valid = len(parsed.rows)
        result_line = ctx.t("cli.people_dry_run", valid=valid, rejected=len(rejected))
    else:
        async with opened(ctx) as db, db.transaction() as session:
            result = await upsert_people(session, parsed, actor=Actor.system("cli"), now=now())
        rejected = result.rejected
        result_line = ctx.t(
            "cli.people_imported",
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
            rejected=len(rejected),
        )
    for row in rejected:
        reason = ctx.directory_reason(row.problems)
        print(ctx.t("cli.people_rejected", file=path, line=row.line, reason=reason), file=ctx.err)
    ctx.print(result_line)
    return EXIT_FAILED if rejected else EXIT_OK


async def cmd_people_list(ctx: Context, args: argparse.Namespace) -> int:
    """Print the directory."""
    async with opened(ctx) as db, db.read() as session:
        people = await queries.list_people(session)
    if not people:
        ctx.print(ctx.t("cli.people_none"))
    for p in people:
        ids = " ".join(f"{k}={v}" for k, v in sorted(p.platform_ids.items()))
        ctx.print(
            "\t".join(
                [p.id, p.name, p.department or "-", ";".join(p.roles), p.phone or "-", ids]
            ).rstrip()
        )
    return EXIT_OK


async def cmd_notice_create(ctx: Context, args: argparse.Namespace) -> int:
    """Create a formal notice from the command line and print its id."""
    body = args.body or ""
    if args.body_file:
        try:
            body = Path(args.body_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{args.body_file}: cannot read: {exc}") from None
    draft = NoticeDraft(
        title=args.title,
        body=body,
        audience=parse_audience(args.to or ["all"]),
        kind=NoticeKind(args.kind),
        requires=Requires(args.requires),
        deadline=iso_deadline(args.deadline, ctx.tz) if args.deadline else None,
        doc_number=args.doc_number,
        plan_ref=args.plan_ref,
        source=NoticeSource.CLI,
    )
    async with opened(ctx) as db, db.transaction() as session:
        notice = await publish_notice(
            session,
            BotContext.from_config(ctx.config, capabilities_of(ctx.config.group.platform)),
            draft,
            actor=Actor.system("cli"),
            now=now(),
        )
        count = len(await queries.pending_for_notice(session, notice.id))
    print(ctx.t("cli.notice_created", id=notice.id, title=notice.title, count=count), file=ctx.err)
    print(ctx.t("cli.notice_queued"), file=ctx.err)
    ctx.print(str(notice.id))
    return EXIT_OK


async def cmd_notice_list(ctx: Context, args: argparse.Namespace) -> int:
    """List notices, newest first, with their tallies."""
    async with opened(ctx) as db, db.read() as session:
        notices = await queries.list_notices(session, open_only=args.open, limit=args.limit)
    if not notices:
        ctx.print(ctx.t("cli.no_notices"))
    for n in notices:
        ctx.print(
            ctx.t(
                "cli.notice_line",
                id=n.id,
                state=ctx.t(f"notice_state.{n.state.value}"),
                kind=ctx.t(f"kind.{n.kind.value}"),
                title=n.title,
                deadline=ctx.local(n.deadline),
                acknowledged=n.acknowledged,
                assigned=n.assigned,
                done=n.done,
                outstanding=n.outstanding,
            )
        )
    return EXIT_OK


async def cmd_notice_show(ctx: Context, args: argparse.Namespace) -> int:
    """Show one notice and each assignee's state on one line."""
    async with opened(ctx) as db, db.read() as session:
        st = await queries.status(session, args.id, now())
    t = ctx.t
    ctx.print(
        t(
            "cli.notice_header",
            id=st.id,
            title=st.title,
            kind=t(f"kind.{st.kind.value}"),
            state=t(f"notice_state.{st.state.value}"),
            requires=t(f"requires.{st.requires.value}"),
        )
    )
    ctx.print(
        t(
            "cli.notice_meta",
            deadline=ctx.local(st.deadline),
            doc_number=st.doc_number or t("none"),
            source=st.source,
        )
    )
    ctx.print(t("cli.notice_counts", **st.counts))
    for a in st.assignees:
        fields = [a.person_id, a.name, a.department or "-", t(f"state.{a.state.value}")]
        if a.acknowledged_at is not None:
            channel = t(f"channel.{a.channel.value}") if a.channel else ""
            fields.append(f"{ctx.local(a.acknowledged_at)} {channel}".strip())
        if a.progress_percent is not None or a.last_progress:
            pct = f"{a.progress_percent}% " if a.progress_percent is not None else ""
            fields.append(f"{pct}{a.last_progress or ''}".strip())
        if a.late:
            fields.append(t("flag.late"))
        if a.overdue:
            fields.append(t("flag.overdue"))
        if a.excuse_reason:
            fields.append(a.excuse_reason)
        ctx.print("\t".join(fields))
    return EXIT_OK


async def cmd_pending(ctx: Context, args: argparse.Namespace) -> int:
    """A person's pending items, or who has not answered each open notice."""
    t = ctx.t
    at = now()
    async with opened(ctx) as db, db.read() as session:
        if args.person:
            if await directory.get_person(session, args.person) is None:
                raise UnknownPerson([args.person])
            items = await queries.pending_for(session, args.person, at)
            if not items:
                ctx.print(t("cli.pending_person_none", person=args.person))
            for i in items:
                ctx.print(
                    t(
                        "cli.pending_item",
                        id=i.notice_id,
                        title=i.title,
                        deadline=ctx.local(i.deadline),
                        state=t(f"state.{i.state.value}"),
                        overdue=f" ({t('flag.overdue')})" if i.overdue else "",
                    )
                )
            return EXIT_OK
        any_pending = False
        for n in await queries.list_notices(session, open_only=True, limit=10_000):
            if not n.outstanding:
                continue
            any_pending = True
            people = await queries.pending_for_notice(session, n.id)
            ctx.print(
                t(
                    "cli.pending_notice",
                    id=n.id,
                    title=n.title,
                    deadline=ctx.local(n.deadline),
                    count=len(people),
                )
            )
            for p in people:
                state = t(f"state.{p.state.value}")
                ctx.print(f"  {p.person_id}\t{p.name}\t{p.department or '-'}\t{state}")
        if not any_pending:
            ctx.print(t("cli.pending_none"))
    return EXIT_OK


def out_of_range(ctx: Context, option: str, value: str) -> str:
    """The message for a --since/--until day outside the days a report may cover."""
    return ctx.t(
        "cli.period_out_of_range",
        option=option,
        value=value.strip(),
        earliest=reports.EARLIEST_DAY.isoformat(),
        latest=reports.LATEST_DAY.isoformat(),
    )


async def cmd_report(ctx: Context, args: argparse.Namespace) -> int:
    """The outcome report of a period (docs/cli.md, "report") to standard output or a file."""
    days = []
    for option, value in (("--since", args.since), ("--until", args.until)):
        try:
            days.append(reports.parse_day(value))
        except ValueError:
            raise UsageError(ctx.t("cli.report_bad_date", option=option, value=value)) from None
        try:
            reports.check_day(days[-1])
        except reports.PeriodOutOfRange:
            raise UsageError(out_of_range(ctx, option, value)) from None
    since, until = days
    if since > until:
        raise UsageError(ctx.t("cli.report_bad_period", since=since, until=until))
    if args.format == "docx" and args.output is None:
        raise UsageError(ctx.t("cli.report_binary"))
    start, end = reports.period(since, until, ctx.tz)
    async with opened(ctx) as db, db.read() as session:
        rows = await outcome_rows(session, start, end)
    office = reports.report_office(rows, ctx.t("report.office_fallback"))
    data = reports.render(args.format, rows, office=office, date=until, tz=ctx.tz, t=ctx.t)
    if args.output in (None, "-"):
        if isinstance(data, bytes):
            ctx.out.flush()
            ctx.out.buffer.write(data)
            ctx.out.buffer.flush()
        else:
            ctx.out.write(data)
        return EXIT_OK
    try:
        Path(args.output).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(ctx.t("cli.report_unwritable", file=args.output, reason=reason)) from None
    items = len({row.notice_id for row in rows})
    written = ctx.t("cli.report_written", file=args.output, items=items, outcomes=len(rows))
    print(written, file=ctx.err)
    return EXIT_OK


REPLAY_SHOWN = 100  # findings printed one per line; the rest are counted


async def cmd_audit_verify(ctx: Context, args: argparse.Namespace) -> int:
    """Check the audit chain (keyed rows with the audit key), replay its events against the
    notices and assignments, and with --checkpoint prove the chain up to a checkpoint.

    Exit 2 when the checkpoint does not hold or keyed rows could not be checked, else 1 when
    anything was found, else 0."""
    checkpoint = None
    if args.checkpoint is not None:
        try:
            checkpoint = audit.Checkpoint.parse(args.checkpoint)
        except ValueError:
            raise UsageError(ctx.t("audit.checkpoint_malformed", value=args.checkpoint)) from None
    replay = Replay()
    async with opened(ctx) as db, db.read(snapshot=True) as session:
        result = await audit.verify(
            session, key=db.audit_key, checkpoint=checkpoint, each=replay.feed
        )
        replayed = await replay.compare(session)
    t = ctx.t
    found = _report_chain(ctx, result, keyed=db.audit_key is not None)
    found = _report_replay(ctx, replayed) or found
    if result.checkpoint is not None:
        cp = result.checkpoint
        line = t(
            f"audit.checkpoint.{cp.code}",
            checkpoint=cp.checkpoint,
            seq=cp.checkpoint.seq,
            **cp.params,
        )
        if cp.proven:
            ctx.print(line)
        else:
            print(line, file=ctx.err)
            return EXIT_USAGE
    if found:
        return EXIT_FAILED
    return EXIT_USAGE if result.unverified is not None else EXIT_OK


def _report_chain(ctx: Context, result: audit.VerifyResult, *, keyed: bool) -> bool:
    """Print what the walk along the chain found; whether it found a problem."""
    t = ctx.t
    if result.problem is not None:
        problem = result.problem
        print(t(f"audit.chain.{problem.code}", seq=problem.seq, **problem.params), file=ctx.err)
    else:
        ctx.print(t("audit.chain_ok", count=result.checked))
        if result.keyed:
            ctx.print(t("audit.chain_keyed", count=result.keyed))
    if result.unverified is not None:
        first, last = result.unverified
        print(t("audit.chain_unverified", first=first, last=last), file=ctx.err)
    elif not keyed:
        print(t("audit.unkeyed_warning"), file=ctx.err)
    return result.problem is not None


def _state_label(t: Translator, code: str, value: object) -> str:
    """A stored or replayed value of a replay finding, as its catalog label."""
    if code == "assignment_outstanding":
        return t("audit.outstanding.yes" if value else "audit.outstanding.no")
    return t(f"{'notice_state' if code.startswith('notice') else 'state'}.{value}")


def _report_replay(ctx: Context, replayed: ReplayResult) -> bool:
    """Print what the replay found, one row per line; whether it found anything."""
    t = ctx.t
    if replayed.ok:
        ctx.print(t("audit.replay_ok", notices=replayed.notices, assignments=replayed.assignments))
        return False
    for finding in replayed.findings[:REPLAY_SHOWN]:
        params = dict(finding.params)
        for side in ("stored", "replayed"):
            if side in params:
                params[side] = _state_label(t, finding.code, params[side])
        if "field" in params:
            params["field"] = t(f"audit.field.{params['field']}")
        name = finding.name if finding.name is not None else t("audit.unknown_person")
        line = t(f"audit.replay.{finding.code}", id=finding.notice_id, name=name, **params)
        print(line, file=ctx.err)
    hidden = len(replayed.findings) - REPLAY_SHOWN
    if hidden > 0:
        print(t("audit.replay_more", count=hidden), file=ctx.err)
    print(t("audit.replay_bad", count=len(replayed.findings)), file=ctx.err)
    return True


async def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    """An online, consistent copy of a SQLite database; pg_dump advice for PostgreSQL."""
    target = Path(args.file)
    db = ctx.database()
    try:
        if not db.is_sqlite:
            dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=True)
            ctx.print(ctx.t("cli.backup_pg", file=target, dsn=dsn))
            return EXIT_USAGE
        await require_current(db)
        source = db.url.database or ""
    finally:
        await db.dispose()
    if target.exists():
        raise UsageError(f"{target}: already exists; choose a new file name")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent}: no such directory")

    def copy() -> None:
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()

    await asyncio.to_thread(copy)
    ctx.print(ctx.t("cli.backup_done", file=target, size=target.stat().st_size))
    return EXIT_OK


async def cmd_outbox_list(ctx: Context, args: argparse.Namespace) -> int:
    """List outbox messages, newest first (only dead letters with --dead)."""
    state = OutboxState.DEAD if args.dead else None
    async with opened(ctx) as db, db.read() as session:
        rows = await outbox.list_messages(session, state=state, limit=args.limit)
        counts = await outbox.counts(session)
    ctx.print(ctx.t("cli.outbox_counts", **counts))
    for row in rows:
        error = (row.last_error or "").splitlines()[0][:120] if row.last_error else ""
        ctx.print(
            "\t".join(
                [
                    str(row.id),
                    ctx.t(f"outbox_state.{row.state.value}"),
                    row.purpose,
                    row.target_key,
                    str(row.attempts),
                    ctx.local(
                        row.next_attempt_at if row.state is OutboxState.PENDING else row.sent_at
                    ),
                    error,
                ]
            ).rstrip()
        )
    return EXIT_OK


async def cmd_outbox_retry(ctx: Context, args: argparse.Namespace) -> int:
    """Send a dead letter again."""
    async with opened(ctx) as db, db.transaction() as session:
        row = await outbox.retry_dead(session, args.id, actor="cli", now=now())
    ctx.print(ctx.t("cli.outbox_retried", id=row.id, target=row.target_key))
    return EXIT_OK


async def cmd_burden(ctx: Context, args: argparse.Namespace) -> int:
    """The burden figures of a period (docs/cli.md, "report"), as terminal tables or JSON."""
    try:
        since, until = period(args.since, args.until, ctx.tz)
    except BadPeriod as exc:
        raise UsageError(ctx.t(exc.key, **exc.params)) from None
    async with opened(ctx) as db:
        report = await snapshot_burden(
            db,
            since=since,
            until=until,
            now=now(),
            min_lead_time=ctx.config.schedule.min_lead_time,
            tz=ctx.tz,
        )
    lines = [to_json(report)] if args.format == "json" else render_text(report, ctx.t, ctx.tz)
    for line in lines:
        ctx.print(line)
    return EXIT_OK


def cmd_egov_sign(ctx: Context, args: argparse.Namespace) -> int:
    """Print the two signature headers of an e-gov request, for debugging an integration."""
    name = args.secret_env or ctx.config.egov.secret_env
    secret = ctx.environ.get(name, "")
    if not secret:
        raise UsageError(ctx.t("cli.egov_no_secret", name=name))
    body = b""
    if args.body_file == "-":
        body = sys.stdin.buffer.read()
    elif args.body_file is not None:
        try:
            body = Path(args.body_file).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UsageError(
                ctx.t("cli.egov_body_unreadable", file=args.body_file, reason=reason)
            ) from None
    when = time.time() if args.timestamp is None else args.timestamp
    for header, value in signing.headers(secret, args.method, args.path, body, now=when).items():
        ctx.print(f"{header}: {value}")
    return EXIT_OK


# --- wiring ---------------------------------------------------------------------------------


Command = Callable[[Context, argparse.Namespace], "int | Awaitable[int]"]


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (it already does; keep usage short)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The CLI grammar (docs/cli.md)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: $WORKBOT_CONFIG, ./config.toml, built-in)",
    )
    parser = _Parser(
        prog="workbot",
        description="workbot: formal notices for one official work group.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"workbot {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(
        name: str, func: Command, help_text: str, parent: argparse._SubParsersAction[_Parser] = sub
    ) -> _Parser:
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    def group(name: str, help_text: str) -> argparse._SubParsersAction[_Parser]:
        """A command with subcommands (workbot people …, workbot notice …)."""
        parent = sub.add_parser(name, help=help_text, parents=[common])
        return parent.add_subparsers(
            dest=f"{name}_command", required=True, metavar="COMMAND", parser_class=_Parser
        )

    def period(p: _Parser) -> None:
        p.add_argument(
            "--since", required=True, metavar="YYYY-MM-DD", help="first day (bot.timezone)"
        )
        p.add_argument("--until", required=True, metavar="YYYY-MM-DD", help="last day, inclusive")

    def listing(
        func: Command,
        help_text: str,
        parent: argparse._SubParsersAction[_Parser],
        flag: str,
        flag_help: str,
    ) -> None:
        """A `list` subcommand: one filter flag and --limit."""
        p = add("list", func, help_text, parent)
        p.add_argument(flag, action="store_true", help=flag_help)
        p.add_argument("--limit", type=int, default=50)

    def by_id(
        name: str, func: Command, help_text: str, parent: argparse._SubParsersAction[_Parser]
    ) -> None:
        """A subcommand about one row, named by its numeric ID."""
        add(name, func, help_text, parent).add_argument("id", type=_notice_id, metavar="ID")

    p = add("serve", cmd_serve, "migrate (if enabled), then serve HTTP until SIGINT/SIGTERM")
    p.add_argument("--host", help="listen on this address instead of [server] host")
    p.add_argument(
        "--port", type=_port, help="listen on this port instead of [server] port (1-65535)"
    )
    add("migrate", cmd_migrate, "apply database migrations")
    add(
        "check-config", cmd_check_config, "validate the configuration; exit 2 listing every problem"
    )

    people_sub = group("people", "the staff directory")
    p = add("import", cmd_people_import, "upsert people from a CSV file", people_sub)
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    add("list", cmd_people_list, "list the directory", people_sub)

    notice_sub = group("notice", "formal notices")
    p = add("create", cmd_notice_create, "create a formal notice and print its id", notice_sub)
    p.add_argument("--title", required=True)
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", default="")
    body.add_argument("--body-file", metavar="FILE")
    p.add_argument(
        "--deadline",
        metavar="ISO8601",
        help="naive times are in bot.timezone; a date alone means 17:30",
    )
    p.add_argument(
        "--to", nargs="+", metavar="WHO", help="all | dept:NAME | person:ID (default: all)"
    )
    p.add_argument("--requires", choices=[r.value for r in Requires], default=Requires.ACK.value)
    p.add_argument("--kind", choices=[k.value for k in NoticeKind], default=NoticeKind.NOTICE.value)
    p.add_argument("--doc-number", metavar="文号")
    p.add_argument("--plan-ref", metavar="REF")
    listing(
        cmd_notice_list, "list notices, newest first", notice_sub, "--open", "only open notices"
    )
    by_id("show", cmd_notice_show, "show a notice and every assignee's state", notice_sub)

    p = add("pending", cmd_pending, "pending items: one person's, or every open notice's")
    p.add_argument("--person", metavar="ID")

    p = add("report", cmd_report, "the outcome report of a period, in the seed's form or raw")
    period(p)
    p.add_argument("--format", choices=reports.FORMATS, default="md", help="default: md")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE (default: standard output; docx needs -o, and -o - means stdout)",
    )

    audit_sub = group("audit", "the audit trail")
    p = add(
        "verify",
        cmd_audit_verify,
        "check the audit chain and replay it against the notices and assignments",
        audit_sub,
    )
    p.add_argument(
        "--checkpoint",
        metavar="SEQ:HASH",
        help="also prove that the chain up to row SEQ is unchanged (from an audit.checkpoint)",
    )

    outbox_sub = group("outbox", "messages waiting to be sent")
    listing(
        cmd_outbox_list,
        "list outbox messages, newest first",
        outbox_sub,
        "--dead",
        "only dead letters",
    )
    by_id("retry", cmd_outbox_retry, "send a dead letter again", outbox_sub)

    p = add("backup", cmd_backup, "back up the database (SQLite online backup)")
    p.add_argument("file", metavar="FILE")

    p = add("burden", cmd_burden, "the burden figures of a period, per issuing department")
    period(p)
    p.add_argument("--format", choices=["text", "json"], default="text", help="default: text")

    egov_sub = group("egov", "the e-gov portal API")
    p = add(
        "sign",
        cmd_egov_sign,
        "print the X-Workbot-Timestamp and X-Workbot-Signature headers of a request",
        egov_sub,
    )
    p.add_argument("--method", type=_http_method, default="POST", help="default: POST")
    p.add_argument(
        "--path",
        type=_request_path,
        default="/egov/v1/notices",
        help="the path and query string exactly as sent (default: /egov/v1/notices)",
    )
    p.add_argument(
        "--body-file",
        metavar="FILE",
        help="the exact body bytes; - for stdin (default: an empty body, as for GET)",
    )
    p.add_argument(
        "--secret-env",
        metavar="NAME",
        help="the environment variable holding the secret (default: egov.secret_env)",
    )
    p.add_argument(
        "--timestamp",
        type=_unix_seconds,
        metavar="SECONDS",
        help="unix seconds to sign at (default: now)",
    )
    return parser


def _http_method(text: str) -> str:
    if not text.isascii() or not text.isalpha():
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP method")
    return text.upper()


def _request_path(text: str) -> str:
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a request path (it starts with /, e.g. /egov/v1/notices)"
        )
    return text


def _unix_seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not unix seconds")
    return int(text)


def _port(text: str) -> int | str:
    """An integer when it reads as one; anything else is refused by the config's validation
    (as the same value in [server] port would be)."""
    try:
        return int(text.strip())
    except ValueError:
        return text


def _server_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """`serve --host/--port` as config overrides of the [server] table."""
    values = {key: getattr(args, key, None) for key in ("host", "port")}
    server = {key: value for key, value in values.items() if value is not None}
    return {"server": server} if server else {}


def _notice_id(text: str) -> int:
    try:
        value = int(text.strip().lstrip("#＃"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a notice id") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a notice id")
    return value


QUIET_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy")


def _configure_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.logging.level != "DEBUG":
        # Alembic narrates every step at INFO; the CLI prints its own one-line summary.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # The database layers narrate every statement (SQLAlchemy at INFO, with its values at
    # DEBUG; the drivers at DEBUG): noise at best, and at DEBUG secrets (the link secret),
    # tokens and bearer links would reach the log. They report warnings and errors only.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the `workbot` console script; returns the exit code."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    cli_path = Path(args.config) if getattr(args, "config", None) else None
    overrides = _server_overrides(args)
    try:
        loaded = load_config(resolve_config_path(cli_path, env, Path.cwd()), env, overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(_located(problem, overrides), file=sys.stderr)
        return EXIT_USAGE
    ctx = Context(loaded, env, sys.stdout, sys.stderr)
    _configure_logging(ctx.config)
    try:
        result = args.func(ctx, args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except (UsageError, PlatformUnavailable, SchemaError) as exc:
        print(f"workbot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DomainError as exc:
        print(f"workbot: {ctx.domain_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except audit.AuditKeyError as exc:
        print(f"workbot: {ctx.t(f'audit.{exc.code}', **exc.params)}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseError, OSError, DatabaseUnavailable) as exc:
        url = ctx.config.database.resolved_url(env)
        shown = shown_url(url)
        print(f"workbot: database {shown}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _located(problem: ConfigProblem, overrides: Mapping[str, Mapping[str, object]]) -> str:
    """A config problem as `file: key: reason`, or `--port VALUE: server.port: reason` when
    the value came from the command line."""
    table, _, key = problem.key.partition(".")
    if key in overrides.get(table, {}):
        return f"--{key} {overrides[table][key]}: {problem.key}: {problem.reason}"
    return str(problem)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
