"""The e-gov API's request signatures (docs/egov-api.md), for both directions.

    X-Workbot-Timestamp: <unix seconds>
    X-Workbot-Signature: sha256=<hex HMAC-SHA256(secret, ts "\\n" METHOD "\\n" path "\\n" body)>

`path` is the path with its query string exactly as sent. The comparison is constant-time,
and a timestamp further than the allowed skew from our clock is refused, so a captured request
cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from aiohttp import web

TIMESTAMP_HEADER = "X-Workbot-Timestamp"
SIGNATURE_HEADER = "X-Workbot-Signature"
PREFIX = "sha256="


class SignatureError(Exception):
    """Why a request's signature was refused (the reason is logged, never the secret)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def signing_string(timestamp: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """The exact bytes that are signed."""
    head = f"{timestamp}\n{method.upper()}\n{path_with_query}\n".encode()
    return head + body


def sign(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    """The X-Workbot-Signature value for a request."""
    digest = hmac.new(
        secret.encode(), signing_string(timestamp, method, path_with_query, body), hashlib.sha256
    ).hexdigest()
    return PREFIX + digest


def headers(
    secret: str, method: str, path_with_query: str, body: bytes, *, now: float
) -> dict[str, str]:
    """Both headers for a request signed at `now` (unix seconds)."""
    timestamp = str(int(now))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, method, path_with_query, body),
    }


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path_with_query: str,
    body: bytes,
    now: float,
    max_skew: int,
) -> None:
    """Accept a request or raise SignatureError saying why not."""
    if not timestamp or not signature:
        raise SignatureError("missing_signature", "the request is not signed")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError("invalid_timestamp", "the timestamp is not unix seconds")
    # Whole seconds on both sides: a request exactly max_skew seconds old is accepted at any
    # fraction of our current second, as docs/egov-api.md says.
    if abs(math.floor(now) - int(timestamp)) > max_skew:
        raise SignatureError("stale_timestamp", "the timestamp is outside the allowed skew")
    expected = sign(secret, timestamp, method, path_with_query, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise SignatureError("bad_signature", "the signature does not match")


def verify_request(
    secret: str, request: web.BaseRequest, body: bytes, *, now: float, max_skew: int
) -> None:
    """verify() for a received request: its signature headers, method and raw path."""
    verify(
        secret,
        timestamp=request.headers.get(TIMESTAMP_HEADER),
        signature=request.headers.get(SIGNATURE_HEADER),
        method=request.method,
        path_with_query=request.raw_path,
        body=body,
        now=now,
        max_skew=max_skew,
    )
