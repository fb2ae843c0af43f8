"""The command registry: each intent has one handler, the roles allowed to use it, and its usage.

Handlers register themselves on a module-level `Router`; `handlers.ROUTER` includes them all in
one place. Lookup is by intent, so there is no first-match-by-registration-order surprise, and
`/help` is generated from the same registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from handlers.commands import Intent
from handlers.context import HandlerContext
from storage.types import Role

Handler = Callable[[HandlerContext], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """One intent's handler and who may use it (None: anyone)."""

    intent: Intent
    handler: Handler
    roles: frozenset[Role] | None
    usage: str  # the i18n key of its line in /help
    action: str  # what the refusal names


class Router:
    """A set of routes, keyed by intent."""

    def __init__(self) -> None:
        self._routes: dict[Intent, Route] = {}

    def command(
        self, intent: Intent, *, roles: tuple[Role, ...] | None = None, usage: str = ""
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of `intent`."""

        def register(handler: Handler) -> Handler:
            self._add(
                Route(
                    intent,
                    handler,
                    frozenset(roles) if roles is not None else None,
                    usage,
                    intent.value,
                )
            )
            return handler

        return register

    def include(self, other: Router) -> None:
        """Take every route of another router."""
        for route in other:
            self._add(route)

    def _add(self, route: Route) -> None:
        if route.intent in self._routes:
            raise ValueError(f"two handlers for intent {route.intent.value}")
        self._routes[route.intent] = route

    def get(self, intent: Intent) -> Route | None:
        """The route for an intent, if any."""
        return self._routes.get(intent)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())
