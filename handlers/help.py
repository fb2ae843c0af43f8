"""帮助 / /help: a short usage guide generated from the command registry."""

from __future__ import annotations

from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.router import Router


def usage_lines(ctx: HandlerContext, routes: Router) -> list[str]:
    """One line per command the sender may use (the office sees its commands too)."""
    lines = [ctx.t("help.header")]
    for route in routes:
        if not route.usage:
            continue
        if route.roles is not None and not ctx.actor.has(*route.roles):
            continue
        lines.append(ctx.t(route.usage))
    lines.append(ctx.t("help.footer"))
    return lines


def router_for(registry: Router) -> Router:
    """The help command, for a registry of the other commands (itself included once added)."""
    router = Router()

    @router.command(Intent.HELP, usage="help.help")
    async def help_(ctx: HandlerContext) -> None:
        """The usage guide, in the configured language."""
        await ctx.reply("\n".join(usage_lines(ctx, registry)))

    return router
