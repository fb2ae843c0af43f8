"""Signed acknowledgment links: unforgeable, expiring, single-purpose tokens for one assignment.

A token is base64url(assignment id, expiry, MAC), where the MAC is HMAC-SHA256 under the
bot's link secret over a purpose tag and the two numbers. The tag makes a token useless for
anything but acknowledging that one assignment; the expiry bounds how long a leaked link works.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import struct
from dataclasses import dataclass

PURPOSE = b"workbot/ack-link/v1\x00"
_LAYOUT = struct.Struct(">QI")  # assignment id, expiry (unix seconds)
_MAC_BYTES = 16
TOKEN_LENGTH = 38  # base64url of 12 + 16 bytes, without padding


class LinkError(Exception):
    """A token that cannot be used; `code` says why."""

    code = "invalid_token"


class LinkInvalid(LinkError):
    """Malformed, or signed with another secret (forged or tampered)."""

    code = "invalid_token"


class LinkExpired(LinkError):
    """Genuine but past its expiry."""

    code = "token_expired"


@dataclass(frozen=True)
class AckLinks:
    """Makes and checks ack-link tokens with one secret."""

    secret: bytes
    base_url: str

    def token(self, assignment_id: int, expires: dt.datetime) -> str:
        """The token for acknowledging one assignment until `expires`."""
        body = _LAYOUT.pack(assignment_id, max(0, int(expires.timestamp())))
        return _encode(body + self._mac(body))

    def url(self, assignment_id: int, expires: dt.datetime) -> str:
        """The full link, under the configured public URL."""
        return f"{self.base_url.rstrip('/')}/a/{self.token(assignment_id, expires)}"

    def verify(self, token: str, *, now: dt.datetime) -> int:
        """The assignment id a token grants; raises LinkInvalid or LinkExpired."""
        body = _open(token, self.secret, PURPOSE, _LAYOUT.size)
        assignment_id, expires = _LAYOUT.unpack(body)
        if now.timestamp() >= expires:
            raise LinkExpired("expired")
        return int(assignment_id)

    def _mac(self, body: bytes) -> bytes:
        return _sign(self.secret, PURPOSE, body)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _sign(secret: bytes, purpose: bytes, body: bytes) -> bytes:
    """The truncated MAC; the purpose tag keeps one kind of token from passing as another."""
    return hmac.new(secret, purpose + body, hashlib.sha256).digest()[:_MAC_BYTES]


def _open(token: str, secret: bytes, purpose: bytes, body_size: int) -> bytes:
    """The signed body of a token, or LinkInvalid (malformed, non-canonical or forged)."""
    length = len(_encode(bytes(body_size + _MAC_BYTES)))
    if len(token) != length or not token.isascii():
        raise LinkInvalid("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except (binascii.Error, ValueError) as exc:
        raise LinkInvalid("malformed token") from exc
    if len(raw) != body_size + _MAC_BYTES or _encode(raw) != token:
        raise LinkInvalid("malformed token")  # only the one canonical spelling is valid
    body, mac = raw[:body_size], raw[body_size:]
    if not hmac.compare_digest(mac, _sign(secret, purpose, body)):
        raise LinkInvalid("bad signature")
    return body


REPORT_PURPOSE = b"workbot/report-link/v1\x00"
_REPORT = struct.Struct(">IIQ")  # first day, last day (proleptic ordinals), expiry
REPORT_TOKEN_LENGTH = 43  # base64url of 16 + 16 bytes, without padding


@dataclass(frozen=True)
class ReportLinks:
    """Signed download links for a period's report (office only: sent to them privately)."""

    secret: bytes
    base_url: str

    def token(self, first: dt.date, last: dt.date, expires: dt.datetime) -> str:
        """The token for downloading the report of [first, last] until `expires`."""
        body = _REPORT.pack(first.toordinal(), last.toordinal(), max(0, int(expires.timestamp())))
        return _encode(body + _sign(self.secret, REPORT_PURPOSE, body))

    def url(self, first: dt.date, last: dt.date, expires: dt.datetime) -> str:
        """The full link, under the configured public URL."""
        return f"{self.base_url.rstrip('/')}/r/{self.token(first, last, expires)}"

    def verify(self, token: str, *, now: dt.datetime) -> tuple[dt.date, dt.date]:
        """The period a token grants; raises LinkInvalid or LinkExpired."""
        body = _open(token, self.secret, REPORT_PURPOSE, _REPORT.size)
        first, last, expires = _REPORT.unpack(body)
        if now.timestamp() >= expires:
            raise LinkExpired("expired")
        try:
            return dt.date.fromordinal(first), dt.date.fromordinal(last)
        except (ValueError, OverflowError) as exc:
            raise LinkInvalid("bad period") from exc
