"""帮助 / /help: a short usage guide generated from the command registry."""

from __future__ import annotations

from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.router import Router
from storage import queries
from storage.types import Role

# The office's wording of a line, where what the command does for the office differs.
OFFICE_USAGE = {Intent.PENDING: "help.pending_office", Intent.STATUS: "help.status_office"}


async def example_id(ctx: HandlerContext) -> int | None:
    """A notice the sender can try 查询 on as shown: the first one their 待办 lists."""
    if ctx.actor.has(Role.OFFICE):
        found = await queries.office_open_notices(ctx.session, limit=1)
        if found.notices:
            return found.notices[0].id
    items = await queries.pending_for(ctx.session, ctx.person.id, ctx.now)
    return items[0].notice_id if items else None


def usage_lines(ctx: HandlerContext, routes: Router, *, example: int | None = None) -> list[str]:
    """One line per command the sender may use (the office sees its commands too); the
    查询 line is followed by a real command to copy when there is a notice to name."""
    office = ctx.actor.has(Role.OFFICE)
    lines = [ctx.t("help.header")]
    for route in routes:
        if not route.usage:
            continue
        if route.roles is not None and not ctx.actor.has(*route.roles):
            continue
        lines.append(ctx.t(OFFICE_USAGE.get(route.intent, route.usage) if office else route.usage))
        if route.intent is Intent.STATUS and example is not None:
            command = ctx.t("chat.status_command", id=example)
            lines.append(ctx.t("help.example", command=command))
    lines.append(ctx.t("help.footer"))
    return lines


def router_for(registry: Router) -> Router:
    """The help command, for a registry of the other commands (itself included once added)."""
    router = Router()

    @router.command(Intent.HELP, usage="help.help")
    async def help_(ctx: HandlerContext) -> None:
        """The usage guide, in the configured language."""
        lines = usage_lines(ctx, registry, example=await example_id(ctx))
        await ctx.reply("\n".join(lines))

    return router
