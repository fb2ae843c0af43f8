"""A recording in-memory platform for tests: every send and edit, scripted failures, limits."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.core.clock import Clock, utcnow
from bot.core.platform import (
    FULL_CAPABILITIES,
    BasePlatform,
    Capabilities,
    Delivery,
    OutboundMessage,
    PermanentError,
    RateLimit,
    SendResult,
)

Operation = Literal["send", "edit"]
FailureRule = Callable[[Operation, Delivery], BaseException | None]
LimitRule = Callable[[Delivery], list[RateLimit]]


@dataclass(frozen=True)
class Call:
    """One call into the platform, successful or not, in call order."""

    operation: Operation
    delivery: Delivery
    at: dt.datetime
    error: BaseException | None = None


@dataclass(frozen=True)
class Recorded:
    """One accepted send or edit: what was delivered, when, and the message id it got."""

    operation: Operation
    delivery: Delivery
    at: dt.datetime
    message_id: str


class MemoryPlatform(BasePlatform):
    """A Platform that keeps everything in memory and can be scripted to fail."""

    def __init__(
        self,
        name: str = "memory",
        *,
        capabilities: Capabilities = FULL_CAPABILITIES,
        rate_limits: Sequence[RateLimit] | LimitRule = (),
        clock: Clock = utcnow,
        id_prefix: str = "m",
    ) -> None:
        super().__init__()
        self.name = name
        self.capabilities = capabilities
        self.clock = clock
        self.id_prefix = id_prefix
        self.calls: list[Call] = []
        self.records: list[Recorded] = []
        self.messages: dict[str, OutboundMessage] = {}
        self.duplicates = 0
        self.closed = False
        self.failure: FailureRule | None = None
        self._limits = rate_limits
        self._failures: deque[BaseException] = deque()
        self._by_key: dict[str, str] = {}
        self._next_id = 1

    def fail_next(self, *errors: BaseException) -> None:
        """Raise these exceptions, one per call, on the next calls (before any rule)."""
        self._failures.extend(errors)

    def fail_with(self, rule: FailureRule | None) -> None:
        """Consult `rule` on every call: the exception it returns is raised (None: succeed)."""
        self.failure = rule

    def set_rate_limits(self, limits: Sequence[RateLimit] | LimitRule) -> None:
        """Replace the limits rate_limits() reports."""
        self._limits = limits

    @property
    def pending_failures(self) -> int:
        """How many scripted exceptions are still queued."""
        return len(self._failures)

    def accepted(self, operation: Operation) -> list[Recorded]:
        """The accepted sends or edits, in order."""
        return [r for r in self.records if r.operation == operation]

    @property
    def sent(self) -> list[Recorded]:
        """The accepted sends, in order."""
        return self.accepted("send")

    @property
    def edits(self) -> list[Recorded]:
        """The accepted edits, in order."""
        return self.accepted("edit")

    def texts(self, target: str | None = None) -> list[str]:
        """Texts of the accepted sends (optionally to one target), in order."""
        return [
            r.delivery.message.text
            for r in self.sent
            if target is None or r.delivery.target == target
        ]

    def _check(self, operation: Operation, delivery: Delivery, at: dt.datetime) -> None:
        error: BaseException | None = None
        if self._failures:
            error = self._failures.popleft()
        elif self.failure is not None:
            error = self.failure(operation, delivery)
        self.calls.append(Call(operation, delivery, at, error))
        if error is not None:
            raise error

    async def send(self, delivery: Delivery) -> SendResult:
        """Record a new message and return the next sequential id (a repeated key: the first)."""
        at = self.clock()
        self._check("send", delivery, at)
        if self.capabilities.idempotent_send and delivery.idempotency_key in self._by_key:
            self.duplicates += 1
            return SendResult(self._by_key[delivery.idempotency_key])
        message_id = f"{self.id_prefix}{self._next_id}"
        self._next_id += 1
        self._by_key[delivery.idempotency_key] = message_id
        self.messages[message_id] = delivery.message
        self.records.append(Recorded("send", delivery, at, message_id))
        return SendResult(message_id)

    async def edit(self, delivery: Delivery) -> SendResult:
        """Replace the content of an earlier message; an unknown id is a PermanentError."""
        at = self.clock()
        self._check("edit", delivery, at)
        if not self.capabilities.edit:
            raise PermanentError(f"{self.name} cannot edit messages")
        message_id = delivery.edit_of
        if message_id is None or message_id not in self.messages:
            raise PermanentError(f"no message {message_id!r} to edit")
        self.messages[message_id] = delivery.message
        self.records.append(Recorded("edit", delivery, at, message_id))
        return SendResult(message_id)

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """The configured limits (a fixed list, or a rule applied to the delivery)."""
        if callable(self._limits):
            return list(self._limits(delivery))
        return list(self._limits)

    async def close(self) -> None:
        """Mark the platform closed (there is nothing to release)."""
        self.closed = True


def fail_targets(targets: Iterable[str], error: Callable[[], BaseException]) -> FailureRule:
    """A failure rule: every call to one of `targets` raises a fresh `error()`."""
    chosen = frozenset(targets)

    def rule(_operation: Operation, delivery: Delivery) -> BaseException | None:
        return error() if delivery.target in chosen else None

    return rule
