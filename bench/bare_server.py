#!/usr/bin/env python3
"""The ingest benchmark's baseline: a bare aiohttp POST handler, no validation and no storage.

It answers ``POST /local/v1/messages`` (the same path as workbot's, so routing costs the same)
with ``json.loads(await request.read())`` and a 201 ``{"id": N}``, and ``GET /healthz`` with
200. It runs on the plain asyncio event loop, as ``workbot serve`` does (``web.run_app``, no
uvloop), with the access log off, and stops on SIGINT or SIGTERM.

Run ``python bench/bare_server.py --port 8081``; bench/ingest.py starts it pinned to a core.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence

from aiohttp import web


def make_app() -> web.Application:
    """The application: one POST handler that parses the body, and a health check."""
    ids = itertools.count(1)

    async def post_message(request: web.Request) -> web.Response:
        """Parse the JSON body and answer 201 with a fresh id."""
        json.loads(await request.read())
        return web.json_response({"id": next(ids)}, status=201)

    async def healthz(request: web.Request) -> web.Response:
        """200 once the server is listening."""
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/local/v1/messages", post_message)
    app.router.add_get("/healthz", healthz)
    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    args = parse_args(argv)
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
