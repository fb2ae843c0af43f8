"""The chat command language: parsing, routing with role checks, and the command handlers."""

from handlers import assignee, help, lookup, office
from handlers.router import Router

ROUTER = Router()
for _module in (assignee, lookup, office):
    ROUTER.include(_module.router)
ROUTER.include(help.router_for(ROUTER))

__all__ = ["ROUTER"]
