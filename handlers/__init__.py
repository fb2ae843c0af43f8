"""The chat command language: parsing, routing with role checks, and the command handlers."""

from handlers import assignee, help, lookup, office
from handlers.router import Router

ROUTER = Router()
for _module in (assignee, lookup, office, help):
    ROUTER.include(_module.router)

__all__ = ["ROUTER"]
