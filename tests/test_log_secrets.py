"""No log line, at any level, holds a secret, a token or a bearer link: a whole flow runs
under `workbot serve` at DEBUG, and its log is searched for each of them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from test_app import free_port, wait_for_health
from test_wake import room_messages

from bot.core import portal_signing

EGOV_SECRET = "egov-Secret-0123456789abcdef"
LINK = re.compile(r"/(?:a|r)/([A-Za-z0-9_\-]{20,})")


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    data = json.dumps(body, ensure_ascii=False).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


async def test_a_debug_log_holds_no_secret_token_or_bearer_link(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.toml").write_text(
        f'[server]\nport = {port}\n[bot]\npublic_url = "{base}"\n[logging]\nlevel = "DEBUG"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    env["WORKBOT_EGOV_SECRET"] = EGOV_SECRET
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            await wait_for_health(f"{base}/healthz", serve, 30)
            say = f"{base}/local/v1/messages"
            notice = "通知 测试\n请查收。\n截止：2030-12-10 17:00\n对象：@基础教育科\n要求：成效"
            await asyncio.to_thread(post, say, {"sender": "p003", "text": notice})
            await asyncio.to_thread(post, say, {"sender": "p001", "text": "收到"})
            await asyncio.to_thread(
                post, say, {"sender": "p003", "to": "bot", "text": "报告 2030-12"}
            )
            body = json.dumps(
                {
                    "external_id": "OA-1",
                    "kind": "task",
                    "title": "门户通知",
                    "issuer": {"department": "办公室", "name": "王五"},
                    "requires": "progress",
                    "audience": {"departments": ["基础教育科"]},
                },
                ensure_ascii=False,
            ).encode()
            headers = portal_signing.headers(
                EGOV_SECRET, "POST", "/egov/v1/notices", body, now=time.time()
            )
            headers["Content-Type"] = "application/json"
            request = urllib.request.Request(
                f"{base}/egov/v1/notices", data=body, method="POST", headers=headers
            )
            with await asyncio.to_thread(urllib.request.urlopen, request, timeout=5) as answer:
                assert answer.status == 201
            links: list[str] = []
            deadline = time.monotonic() + 10
            while not links and time.monotonic() < deadline:
                office = await room_messages(base, after=0, reader="p003")  # the answer is a DM
                texts = [m["text"] for m in office]
                links = [token for text in texts for token in LINK.findall(text)]
                await asyncio.sleep(0.05)
            assert links, "the 报告 answer carries a signed download link"
        finally:
            if serve.returncode is None:
                serve.terminate()
                await asyncio.wait_for(serve.wait(), 20)
    with sqlite3.connect(tmp_path / "workbot.db") as conn:
        (link_secret,) = conn.execute(
            "SELECT value FROM bot_setting WHERE key = 'ack_link_secret'"
        ).fetchone()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    assert "DEBUG" in text  # the log really is at DEBUG
    for secret in (link_secret, EGOV_SECRET, *links):
        assert secret not in text, "a secret or a bearer token reached the log"
    assert "Traceback" not in text


def test_the_cli_at_the_default_level_does_not_narrate_sql(tmp_path: Path) -> None:
    """At INFO SQLAlchemy logs every statement: a command prints its answer, not the SQL."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBOT_CONFIG"}
    for argv in (["migrate"], ["notice", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "bot", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr.decode() == "", argv
    assert done.stdout.decode().strip() == "没有通知。"
