"""A real Synapse homeserver for tests, and a small Matrix client for the test's side of a room.

Synapse runs from its own virtualenv (``WORKBOT_SYNAPSE_PYTHON``, made by ``.ci/run`` at
``.synapse-venv``) so that it never shares dependencies with the bot. ``SynapseServer``
starts one on a free loopback port with SQLite, no federation and every rate limit raised
far out of reach; ``register`` makes users through the shared-secret admin API; and
``MatrixUser`` sends, reacts and reads back as that user. Each ``MatrixUser`` call opens
and closes its own ``aiohttp.ClientSession``, so users can be shared between tests (and
their event loops) freely.

The ``synapse`` fixture in ``conftest.py`` starts one server per test session; a test makes
its own users and rooms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp

SERVER_NAME = "localhost"
START_DEADLINE = 60.0  # seconds from spawning to /_matrix/client/versions answering 200
STOP_GRACE = 20.0  # seconds from SIGTERM to SIGKILL
CLIENT = "/_matrix/client/v3"

# Far beyond anything a test does: tests must never see a 429 unless they ask for one.
_UNLIMITED = {"per_second": 100000.0, "burst_count": 1000000}

# Every rate limiter Synapse 1.163 reads (synapse/config/ratelimiting.py). Synapse ignores
# top-level keys it does not know, so a key that an older or newer version lacks is
# harmless; rc_federation is the exception, whose fields are passed as keyword arguments and
# must be exactly these.
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {
        "address": _UNLIMITED,
        "account": _UNLIMITED,
        "failed_attempts": _UNLIMITED,
    },
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {
        "per_room": _UNLIMITED,
        "per_user": _UNLIMITED,
        "per_issuer": _UNLIMITED,
    },
    "rc_third_party_invite": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 100000,
        "sleep_delay": 1,
        "reject_limit": 100000,
        "concurrent": 1000,
    },
}


class MatrixError(Exception):
    """A non-2xx answer from the homeserver: the HTTP status and the Matrix error body."""

    def __init__(
        self, status: int, errcode: str, error: str, body: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body: dict[str, Any] = dict(body or {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, size: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[-size:]
    except OSError as exc:
        return f"({exc.strerror})"
    return text or "(empty)"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM Synapse if the test process dies without stopping it (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class SynapseServer:
    """One Synapse process: ``start(workdir)``, then ``base_url``; ``stop()`` when done.

    ``python`` is the interpreter of Synapse's virtualenv (default: ``WORKBOT_SYNAPSE_PYTHON``).
    ``extra_config`` is merged over the generated homeserver.yaml, top-level keys replacing
    ours (e.g. ``{"rc_message": {"per_second": 0.1, "burst_count": 2}}`` for a server that
    does rate-limit).
    """

    def __init__(
        self, python: str | None = None, *, extra_config: Mapping[str, Any] | None = None
    ) -> None:
        self.python = python or os.environ.get("WORKBOT_SYNAPSE_PYTHON", "")
        self.extra_config = dict(extra_config or {})
        self.server_name = SERVER_NAME
        self.shared_secret = secrets.token_hex(32)
        self._macaroon_secret_key = secrets.token_hex(32)
        self._form_secret = secrets.token_hex(32)
        self.port = 0
        self.base_url = ""
        self.workdir: Path | None = None
        self.log_path: Path | None = None  # Synapse's own log (WARNING and above)
        self.output_path: Path | None = None  # the process's stdout and stderr
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id, or None."""
        return self._proc.pid if self._proc is not None else None

    def config(self) -> dict[str, Any]:
        """The homeserver.yaml contents (JSON is YAML) for the current port and workdir."""
        assert self.workdir is not None
        work = self.workdir
        return {
            "server_name": self.server_name,
            "public_baseurl": f"{self.base_url}/",
            "pid_file": str(work / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(work / "homeserver.db")}},
            "media_store_path": str(work / "media_store"),
            "signing_key_path": str(work / f"{self.server_name}.signing.key"),
            "log_config": str(work / "log_config.yaml"),
            "report_stats": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "enable_registration": False,
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": self._macaroon_secret_key,
            "form_secret": self._form_secret,
            "bcrypt_rounds": 4,
            "encryption_enabled_by_default_for_room_type": "off",
            "url_preview_enabled": False,
            **RATE_LIMITS,
            **self.extra_config,
        }

    def _log_config(self) -> dict[str, Any]:
        assert self.log_path is not None
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                    " - %(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def start(self, workdir: Path) -> None:
        """Write the config into ``workdir``, start Synapse and wait until it answers."""
        if self._proc is not None:
            raise RuntimeError("this SynapseServer is already running")
        if not self.python or not Path(self.python).is_file():
            raise RuntimeError(f"no Synapse interpreter at {self.python!r}")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.log_path = workdir / "homeserver.log"
        self.output_path = workdir / "synapse.out"
        (workdir / "log_config.yaml").write_text(json.dumps(self._log_config(), indent=1))
        # A port found free can be taken before Synapse binds it: try another one then.
        for attempt in range(3):
            self.port = _free_port()
            self.base_url = f"http://127.0.0.1:{self.port}"
            (workdir / "homeserver.yaml").write_text(json.dumps(self.config(), indent=1))
            self._spawn()
            try:
                self._wait_ready()
                return
            except _Exited as exc:
                self._reap()
                if "Address already in use" in exc.output and attempt < 2:
                    continue
                raise RuntimeError(f"Synapse exited during startup:\n{exc.output}") from None
            except BaseException:
                self.stop()
                raise

    def _spawn(self) -> None:
        assert self.workdir is not None and self.output_path is not None
        env = {
            k: v
            for k, v in os.environ.items()
            # This repository's tests/synapse.py must never shadow the real package.
            if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
        }
        self._output = self.output_path.open("ab")
        self._proc = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "-c", "homeserver.yaml"],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    def _output_tail(self) -> str:
        parts = []
        if self.output_path is not None:
            parts.append(f"--- {self.output_path}\n{_tail(self.output_path)}")
        if self.log_path is not None:
            parts.append(f"--- {self.log_path}\n{_tail(self.log_path)}")
        return "\n".join(parts)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        url = f"{self.base_url}/_matrix/client/versions"
        deadline = time.monotonic() + START_DEADLINE
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _Exited(f"exit status {self._proc.returncode}\n{self._output_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(
            f"Synapse did not answer {url} within {START_DEADLINE:.0f} s (last: {last})\n"
            f"{self._output_tail()}"
        )

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it has not exited after 20 s. Safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()


class _Exited(Exception):
    def __init__(self, output: str) -> None:
        super().__init__(output)
        self.output = output


def _q(part: str) -> str:
    return quote(part, safe="")


async def _request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Mapping[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
    seconds: float = 30.0,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
        session.request(method, url, json=body, params=params, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if not 200 <= resp.status < 300:
            if not isinstance(data, dict):
                data = {}
            raise MatrixError(
                resp.status,
                str(data.get("errcode", "")),
                str(data.get("error", text[:500])),
                data,
            )
        if not isinstance(data, dict):
            raise MatrixError(resp.status, "", f"not a JSON object: {text[:500]}")
        return data


async def register(server: SynapseServer, localpart: str, *, admin: bool = False) -> MatrixUser:
    """A new user ``@<localpart>-<random>:localhost`` made with the shared-secret admin API."""
    username = f"{localpart}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    url = f"{server.base_url}/_synapse/admin/v1/register"
    nonce = str((await _request("GET", url))["nonce"])
    mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
    for i, part in enumerate((nonce, username, password, "admin" if admin else "notadmin")):
        if i:
            mac.update(b"\x00")
        mac.update(part.encode())
    body = {
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": mac.hexdigest(),
    }
    data = await _request("POST", url, body=body)
    return MatrixUser(
        user_id=str(data["user_id"]),
        access_token=str(data["access_token"]),
        base_url=server.base_url,
        password=password,
    )


@dataclass
class MatrixUser:
    """A registered user acting through the client-server API, one HTTP session per call."""

    user_id: str
    access_token: str
    base_url: str
    password: str = field(default="", repr=False)  # for tests of POST /login

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        seconds: float = 30.0,
    ) -> dict[str, Any]:
        return await _request(
            method,
            f"{self.base_url}{CLIENT}{path}",
            token=self.access_token,
            body=body,
            params=params,
            seconds=seconds,
        )

    async def create_room(
        self,
        *,
        invite: Sequence[str] = (),
        name: str | None = None,
        is_direct: bool = False,
        preset: str = "private_chat",
    ) -> str:
        """A new room; its id."""
        body: dict[str, Any] = {"preset": preset, "invite": list(invite), "is_direct": is_direct}
        if name is not None:
            body["name"] = name
        return str((await self._call("POST", "/createRoom", body))["room_id"])

    async def join(self, room_id: str) -> None:
        """Join (or accept the invitation to) a room."""
        await self._call("POST", f"/rooms/{_q(room_id)}/join", {})

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite another user into a room."""
        await self._call("POST", f"/rooms/{_q(room_id)}/invite", {"user_id": user_id})

    async def _send(self, room_id: str, type_: str, content: Mapping[str, Any]) -> str:
        txn = f"t{time.time_ns()}-{secrets.token_hex(4)}"
        path = f"/rooms/{_q(room_id)}/send/{_q(type_)}/{txn}"
        return str((await self._call("PUT", path, content))["event_id"])

    async def send_text(self, room_id: str, body: str, *, reply_to: str | None = None) -> str:
        """An ``m.text`` message (a reply when ``reply_to`` is an event id); its event id."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if reply_to is not None:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self._send(room_id, "m.room.message", content)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        """An ``m.reaction`` (``m.annotation`` with ``key``) to an event; its event id."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self._send(room_id, "m.reaction", content)

    async def messages(self, room_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The room's latest ``limit`` events (all types), oldest first, as full event JSON."""
        events: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": str(limit)}
        while len(events) < limit:
            data = await self._call("GET", f"/rooms/{_q(room_id)}/messages", params=params)
            chunk = data.get("chunk", [])
            events.extend(chunk)
            if not chunk or "end" not in data:
                break
            params = {"dir": "b", "limit": str(limit - len(events)), "from": str(data["end"])}
        return list(reversed(events[:limit]))

    async def joined_members(self, room_id: str) -> list[str]:
        """The user ids joined to the room, sorted."""
        data = await self._call("GET", f"/rooms/{_q(room_id)}/joined_members")
        return sorted(data.get("joined", {}))

    async def sync(self, since: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
        """One ``/sync`` response (``next_batch`` feeds the next call's ``since``)."""
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        return await self._call("GET", "/sync", params=params, seconds=timeout_ms / 1000 + 30)

    async def highlights(self) -> list[dict[str, Any]]:
        """The events that mentioned this user (``/notifications?only=highlight``), newest
        first: what the user's clients would ping them for."""
        data = await self._call("GET", "/notifications", params={"only": "highlight"})
        return [n["event"] for n in data.get("notifications", [])]

    async def account_data(self, type_: str) -> dict[str, Any] | None:
        """The user's global account data of this type (e.g. ``m.direct``), or None."""
        try:
            return await self._call("GET", f"/user/{_q(self.user_id)}/account_data/{_q(type_)}")
        except MatrixError as exc:
            if exc.status == 404:
                return None
            raise
