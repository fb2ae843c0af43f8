#!/usr/bin/env python3
"""Ingest benchmark: durable group-message posts against a bare aiohttp handler, same core.

A real ``workbot serve`` (SQLite in WAL mode with ``synchronous=FULL``, its default; each 201
is sent only after the batch holding the post has committed) takes ``POST /local/v1/messages``
from ``wrk``; so does ``bench/bare_server.py``, an aiohttp handler that only parses the JSON
body. Both servers run on the plain asyncio loop (``web.run_app``, no uvloop), pinned to the
same core (``taskset -c 0``), and ``wrk -t1`` runs pinned to another (``taskset -c 1``). After a
short warm-up of each, the two are measured alternately (bare, workbot, bare, workbot, …) for
``--rounds`` rounds. The figures are the median requests/s and the median of the rounds' p50
and p99 latencies (wrk's ``--latency``); the last line is the ratio of the medians,
workbot/bare (target ≥ 0.5×).

Any non-2xx response or socket error fails the run. At the end it checks that workbot stored
every post: a probe post before the runs and one after give the ids around them, the id grew
by at least the number of requests wrk completed, ``GET /local/v1/messages?after=<first
probe>&limit=1`` answers, and the database holds at least that many rows between the probes.

``--py-spy FILE`` adds one more workbot run (not counted) sampled by py-spy, and prints where
workbot spends its time per request.

Run ``python bench/ingest.py --help``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from harness import BenchError  # noqa: E402

BIN = Path(sys.executable).parent
PATH = "/local/v1/messages"
SENDER = "p001"
TARGET_RATIO = 0.5
WRK_BOUND_PCT = 95.0  # wrk's share of its core above which it may be the bottleneck
NOISE_PCT = 5.0  # other processes' share of either core above which a round is flagged
START_BOUND_S = 60.0
STOP_BOUND_S = 30.0
SERVERS = ("bare", "workbot")

# One thread of wrk builds each request from a counter (cheap string concatenation), so no two
# posts are the same: ordinary Chinese group chatter, which is what a work group mostly carries
# (commands are a small share; each is also stored, then processed after its 201).
# done() prints exact figures next to wrk's own report.
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{"sender": "SENDER", "text": "第' .. n .. '条：今天下午三点在三楼会议室开会，请大家准时参加"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
""".replace("SENDER", SENDER)


@dataclass(frozen=True)
class WrkRun:
    """One wrk run against one server."""

    server: str
    label: str
    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_pct: float = 0.0  # the server's CPU time (all threads) over the run's wall time
    core_busy_pct: float = 0.0  # how busy the server's core was, whoever used it
    wrk_cpu_pct: float = 0.0  # wrk's CPU time over the run's wall time
    load_core_busy_pct: float = 0.0  # how busy wrk's core was, whoever used it

    @property
    def others_pct(self) -> float:
        """The most that other processes used of either core during the run."""
        return max(
            0.0,
            self.core_busy_pct - self.server_cpu_pct,
            self.load_core_busy_pct - self.wrk_cpu_pct,
        )

    @property
    def failed(self) -> bool:
        """Any non-2xx response or socket error."""
        return self.non_2xx > 0 or any(self.socket_errors.values())


@dataclass
class Server(harness.LoopbackProcess):
    """A server process pinned to a core, with its log."""

    name: str
    proc: subprocess.Popen[bytes]


# --------------------------------------------------------------------------- helpers


def http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """A JSON request; the status and the decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status: int = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def start_server(name: str, cmd: Sequence[str], *, cpu: int, port: int, workdir: Path) -> Server:
    """Start a server pinned to `cpu` and wait (bounded) for its /healthz to answer 200."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *cmd],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, log, name, proc)
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            status, _ = http("GET", server.url("/healthz"), timeout=2.0)
            if status == 200:
                return server
        time.sleep(0.1)
    stop_server(server)
    raise BenchError(f"{name}: /healthz not 200 after {START_BOUND_S:.0f} s\n{server.log_tail()}")


def stop_server(server: Server) -> int:
    """SIGTERM, then wait (bounded); SIGKILL beyond the bound. Its exit status."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            print(f"{server.name} did not stop in {STOP_BOUND_S:.0f} s; killing it", flush=True)
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


@contextlib.contextmanager
def servers_stopped(servers: list[Server]) -> Iterator[dict[str, int]]:
    """Stop every started server on the way out; their exit statuses are filled in."""
    statuses: dict[str, int] = {}
    try:
        yield statuses
    finally:
        for server in reversed(servers):
            statuses[server.name] = stop_server(server)


# --------------------------------------------------------------------------- wrk

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(text: str, percent: str) -> float | None:
    """A percentile from wrk's --latency table, in ms."""
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    return float(match[1]) * UNITS_MS[match[2]] if match else None


def parse_wrk(server: str, label: str, text: str) -> WrkRun:
    """wrk's report: its text (Requests/sec, Non-2xx, the latency table) and our done() line."""
    match = re.search(r"^BENCH-RESULT ((?:\d+ ?){10})$", text, re.M)
    if match is None:
        raise BenchError(f"no result line in wrk's output:\n{text}")
    requests, duration_us, status, connect, read, write, timeout, p50, p99, top = (
        int(x) for x in match[1].split()
    )
    rps_match = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    non_2xx = int(non_2xx_match[1]) if non_2xx_match else 0
    if non_2xx != status:
        raise BenchError(f"wrk's report and done() disagree on non-2xx ({non_2xx} ≠ {status})")
    text_p50, text_p99 = _latency_ms(text, "50"), _latency_ms(text, "99")
    if text_p50 is None or text_p99 is None:
        raise BenchError(f"no latency distribution in wrk's output:\n{text}")
    duration_s = duration_us / 1e6
    return WrkRun(
        server=server,
        label=label,
        requests=requests,
        duration_s=duration_s,
        rps=float(rps_match[1]) if rps_match else requests / duration_s,
        non_2xx=non_2xx,
        socket_errors={"connect": connect, "read": read, "write": write, "timeout": timeout},
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        max_ms=top / 1000,
    )


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times(cpu: int) -> tuple[int, int]:
    """Busy and total jiffies of one core, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            return sum(values[:8]) - idle, sum(values[:8])
    raise BenchError(f"no cpu{cpu} in /proc/stat")


def run_wrk(
    server: Server, label: str, args: argparse.Namespace, script: Path, seconds: float
) -> WrkRun:
    """One wrk run pinned to the load core; its figures (wrk's output is kept in the workdir)."""
    cmd = [
        "taskset",
        "-c",
        str(args.load_cpu),
        args.wrk,
        "-t1",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        server.url(PATH),
    ]
    cpu_before = process_cpu_s(server.proc.pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, total_before = core_times(args.server_cpu)
    load_busy_before, load_total_before = core_times(args.load_cpu)
    wall_before = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    wall = time.monotonic() - wall_before
    busy_after, total_after = core_times(args.server_cpu)
    load_busy_after, load_total_after = core_times(args.load_cpu)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    if server.proc.poll() is not None:
        raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")
    cpu = process_cpu_s(server.proc.pid) - cpu_before
    out_file = script.parent / f"wrk-{server.name}-{label.replace(' ', '-')}.txt"
    out_file.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return dataclasses.replace(
        parse_wrk(server.name, label, done.stdout),
        server_cpu_pct=100 * cpu / wall,
        core_busy_pct=100 * (busy_after - busy_before) / max(1, total_after - total_before),
        wrk_cpu_pct=100 * wrk_cpu / wall,
        load_core_busy_pct=100
        * (load_busy_after - load_busy_before)
        / max(1, load_total_after - load_total_before),
    )


def describe(run: WrkRun) -> str:
    """One line for the progress log."""
    errors = sum(run.socket_errors.values())
    return (
        f"{run.server:<8} {run.label:<8} {run.rps:>9.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
        f"p99 {run.p99_ms:7.2f} ms  ({run.requests} requests, non-2xx {run.non_2xx}, "
        f"socket errors {errors}; CPU: server {run.server_cpu_pct:.0f} % "
        f"(its core busy {run.core_busy_pct:.0f} %), wrk {run.wrk_cpu_pct:.0f} % "
        f"(its core busy {run.load_core_busy_pct:.0f} %))"
    )


# --------------------------------------------------------------------------- profile


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    """A py-spy frame, "func (file:line)", as file:func."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['file']}:{match['func']}"


def package_of(key: str) -> str:
    """The top-level package (or file) of a file:func key."""
    file = key.rsplit(":", 1)[0]
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/lib/python" in file:
        file = "stdlib/" + file.split("/lib/python", 1)[1].split("/", 1)[-1]
    head = file.split("/", 1)
    if head[0] == "stdlib" and len(head) > 1:
        return "stdlib:" + head[1].split("/", 1)[0].removesuffix(".py")
    return head[0].removesuffix(".py")


# Frames that every sample of a thread goes through: the entry points, the loop, the task step.
ENTRY_FRAMES = re.compile(
    r"(^workbot:<module>$|^bot/cli\.py:(main|cmd_serve)$|^aiohttp/web\.py:run_app$"
    r"|^asyncio/base_events\.py:BaseEventLoop\.(run_until_complete|run_forever|_run_once)$"
    r"|^asyncio/events\.py:Handle\._run$|^threading\.py:Thread\.(run|_bootstrap\w*)$)"
)


THREAD_FRAME = re.compile(r"^thread \((?P<tid>\d+)\): (?:Thread-\d+ )?(?P<name>.*)$")
WAIT_LEAF = "selectors.py:EpollSelector.select"


def read_stacks(raw: str) -> list[tuple[str, list[str], int]]:
    """py-spy's raw lines as (thread name, file:func frames from the root, samples)."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        thread = THREAD_FRAME.match(frames[0]) if frames else None
        name = "MainThread"
        if thread is not None:
            name = thread["name"]
            frames = frames[1:]
        if frames:
            stacks.append((name, [frame_key(f) for f in frames], int(count_text)))
    return stacks


def hotspots(raw: str, top: int, us_per_request: float | None = None) -> str:
    """Where the event loop's thread works: self, inclusive and per-package time, as % (and µs).

    Samples whose leaf is the selector's epoll_wait are counted apart: on one core a thread
    that has been woken but is not running yet is sampled there too. `us_per_request` (the
    loop thread's CPU per request) turns each share into µs per request.
    """
    stacks = read_stacks(raw)
    threads: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    waiting = 0
    for name, keys, count in stacks:
        threads[name] += count
        if name != "MainThread":
            workers[keys[-1]] += count
        elif keys[-1] == WAIT_LEAF:
            waiting += count
        else:
            own[keys[-1]] += count
            packages[package_of(keys[-1])] += count
            for key in set(keys):
                inclusive[key] += count
    total = sum(threads.values())
    busy = sum(own.values())
    if not busy:
        return "py-spy recorded no samples of the event loop's thread"

    def row(key: str, n: int) -> str:
        cost = f"  {us_per_request * n / busy:6.1f} µs" if us_per_request is not None else ""
        return f"  {100 * n / busy:5.1f} %{cost}  {key}"

    lines = [f"{total} samples by thread:"]
    lines += [f"  {100 * n / total:5.1f} %  {key}" for key, n in threads.most_common()]
    main = threads["MainThread"]
    lines += [
        "",
        f"event loop thread: {busy} samples at work, {waiting} in epoll_wait "
        f"({100 * waiting / max(1, main):.0f} % of its samples); the figures below are a % of "
        "the samples at work" + (" and µs per request" if us_per_request is not None else ""),
        "",
        "self time:",
    ]
    lines += [row(key, n) for key, n in own.most_common(top)]
    lines += ["", "inclusive time (without the entry, loop and thread frames):"]
    ranked = [(k, n) for k, n in inclusive.most_common() if not ENTRY_FRAMES.match(k)]
    lines += [row(key, n) for key, n in ranked[:top]]
    lines += ["", "self time by package:"]
    lines += [row(key, n) for key, n in packages.most_common(top)]
    if workers:
        worker_total = sum(workers.values())
        lines += ["", "other threads (the aiosqlite connections), self time, % of their samples:"]
        lines += [f"  {100 * n / worker_total:5.1f} %  {key}" for key, n in workers.most_common(8)]
    return "\n".join(lines)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process (by thread name and id)."""
    result: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            head, _, rest = (task / "stat").read_text().rpartition(")")
            name = head.split("(", 1)[1]
            role = "main thread, the event loop" if task.name == str(pid) else "thread"
            fields = rest.split()
            result[f"{role} {task.name} ({name})"] = (int(fields[11]) + int(fields[12])) / tick
    return result


def profile_run(server: Server, args: argparse.Namespace, script: Path) -> tuple[WrkRun, str]:
    """One extra workbot run (not counted) sampled by py-spy; its figures and the hotspots."""
    py_spy = shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if py_spy is None:
        raise BenchError("--py-spy needs py-spy (pip install py-spy into the venv)")
    out: Path = args.py_spy
    out.unlink(missing_ok=True)
    spy_log = script.parent / "py-spy.log"
    mode = ["--gil"] if args.py_spy_mode == "gil" else ["--threads"]
    with spy_log.open("wb") as log:
        spy = subprocess.Popen(
            [
                *("taskset", "-c", str(args.load_cpu), py_spy, "record"),
                *("--pid", str(server.proc.pid), "--rate", "250", *mode),
                *("--format", "raw", "--output", str(out)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    time.sleep(1.0)
    if spy.poll() is not None:
        raise BenchError(f"py-spy exited with {spy.returncode}:\n{spy_log.read_text()}")
    before = thread_cpu(server.proc.pid)
    started = time.monotonic()
    try:
        run = run_wrk(server, "profiled", args, script, args.duration)
    finally:
        wall = time.monotonic() - started
        after = thread_cpu(server.proc.pid)
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    if not out.exists():
        raise BenchError(f"py-spy wrote no profile to {out}:\n{spy_log.read_text()}")
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    loop_cpu = next((cpu for name, cpu in used.items() if name.startswith("main thread")), 0.0)
    threads = [
        f"  {100 * cpu / wall:5.1f} % of the core  {name}"
        for name, cpu in sorted(used.items(), key=lambda item: -item[1])
        if cpu > 0
    ]
    what = (
        "samples of the thread holding the GIL (Python code; SQLite's C work and blocking "
        "syscalls, which release the GIL, are not in them)"
        if args.py_spy_mode == "gil"
        else "samples of every running or runnable thread (a thread ready to run but waiting "
        "for the core counts too, so the shares by thread are over-stated: /proc's are true)"
    )
    report = "\n".join(
        [
            f"CPU per thread during the profiled run ({run.rps:.0f} req/s, "
            f"{1e6 * sum(used.values()) / max(1, run.requests):.0f} µs CPU per request):",
            *threads,
            "",
            f"py-spy --{args.py_spy_mode}: {what}",
            hotspots(
                out.read_text(errors="replace"),
                args.top,
                1e6 * loop_cpu / max(1, run.requests) if args.py_spy_mode == "active" else None,
            ),
        ]
    )
    return run, report


# --------------------------------------------------------------------------- verification


def probe(server: Server, text: str) -> int:
    """Post one message through the API; its id."""
    status, body = http("POST", server.url(PATH), {"sender": SENDER, "text": text})
    if status != 201 or not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise BenchError(f"probe post answered {status}: {body!r}")
    return int(body["id"])


def stored_rows(db_file: Path, after: int, before: int) -> tuple[int, int]:
    """The bench sender's rows strictly between two ids, and how many commits wrote them.

    Each group-commit batch stamps its rows with one time, so distinct times count batches.
    """
    conn = sqlite3.connect(db_file, timeout=30)
    try:
        rows, batches = conn.execute(
            "SELECT count(*), count(DISTINCT ts) FROM local_message"
            " WHERE id > ? AND id < ? AND sender = ?",
            (after, before, SENDER),
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(batches)


def verify(server: Server, db_file: Path, first: int, completed: int, out: TextIO) -> bool:
    """The posts wrk saw completed are stored; prints the figures, True if they add up."""
    last = probe(server, "bench probe: after the runs")
    status, body = http("GET", server.url(f"{PATH}?after={first}&limit=1"))
    listed = body.get("messages") if isinstance(body, dict) else None
    listed_ok = (
        status == 200
        and isinstance(listed, list)
        and len(listed) == 1
        and int(listed[0]["id"]) > first
    )
    grew = last - first - 1
    rows, batches = stored_rows(db_file, first, last)
    print("verification (workbot):", file=out)
    print(f"  GET {PATH}?after={first}&limit=1: {status}, {listed!r:.120}", file=out)
    print(f"  ids between the probes:  {grew} (first probe {first}, last {last})", file=out)
    print(
        f"  rows stored between:     {rows} (in {batches} group commits, "
        f"{rows / max(1, batches):.1f} rows each on average)",
        file=out,
    )
    print(f"  requests wrk completed:  {completed} (warm-up and rounds)", file=out)
    ok = listed_ok and grew >= completed and rows >= completed
    print(f"  {'OK' if ok else 'FAILED'}", file=out, flush=True)
    return ok


# --------------------------------------------------------------------------- report


def summary_table(runs: list[WrkRun]) -> str:
    """Per round, then the medians per server."""
    head = (
        f"{'server':<8} {'run':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'requests':>9} {'non-2xx':>8} {'sock err':>8} {'srv cpu%':>8} {'core0%':>6} "
        f"{'wrk cpu%':>8} {'core1%':>6}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        lines.append(
            f"{run.server:<8} {run.label:<8} {run.rps:>9.0f} {run.p50_ms:>8.2f} "
            f"{run.p99_ms:>8.2f} {run.max_ms:>8.2f} {run.requests:>9} {run.non_2xx:>8} "
            f"{sum(run.socket_errors.values()):>8} {run.server_cpu_pct:>8.0f} "
            f"{run.core_busy_pct:>6.0f} {run.wrk_cpu_pct:>8.0f} {run.load_core_busy_pct:>6.0f}"
        )
    lines.append("-" * len(head))
    for name in SERVERS:
        rounds = [r for r in runs if r.server == name and r.label.startswith("round")]
        if not rounds:
            continue
        lines.append(
            f"{name:<8} {'median':<8} {statistics.median(r.rps for r in rounds):>9.0f} "
            f"{statistics.median(r.p50_ms for r in rounds):>8.2f} "
            f"{statistics.median(r.p99_ms for r in rounds):>8.2f} "
            f"{max(r.max_ms for r in rounds):>8.2f} {sum(r.requests for r in rounds):>9} "
            f"{sum(r.non_2xx for r in rounds):>8} "
            f"{sum(sum(r.socket_errors.values()) for r in rounds):>8}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def write_config(workdir: Path, port: int, db_file: Path) -> Path:
    """workbot's config for the run: a free port, a fresh SQLite file, quiet logs."""
    config = workdir / "config.toml"
    config.write_text(
        "[server]\n"
        f"port = {port}\n"
        "\n[database]\n"
        f'url = "sqlite+aiosqlite:///{db_file}"\n'
        "\n[logging]\n"
        'level = "WARNING"\n'
    )
    return config


def check_tools(args: argparse.Namespace) -> None:
    """wrk, taskset and the two cores are there."""
    wrk = shutil.which(args.wrk)
    if wrk is None:
        raise BenchError(f"{args.wrk} not found (apt-get install wrk)")
    args.wrk = wrk
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (util-linux)")
    cpus = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.load_cpu):
        if cpu not in cpus:
            raise BenchError(f"CPU {cpu} is not available (this process may use {sorted(cpus)})")
    if args.server_cpu == args.load_cpu:
        raise BenchError("--server-cpu and --load-cpu must differ")


def measure(args: argparse.Namespace, workdir: Path) -> int:
    """Start both servers, run the alternating rounds, verify, report."""
    workbot_bin = BIN / "workbot"
    if not workbot_bin.exists():
        raise BenchError(f"{workbot_bin} not found: run with the project's venv python")
    db_file = workdir / "bench.db"
    port = harness.free_port()
    config = write_config(workdir, port, db_file)
    script = workdir / "post.lua"
    script.write_text(LUA)
    started: list[Server] = []
    runs: list[WrkRun] = []
    profile: tuple[WrkRun, str] | None = None
    with servers_stopped(started) as statuses:
        workbot = start_server(
            "workbot",
            [str(workbot_bin), "-c", str(config), "serve"],
            cpu=args.server_cpu,
            port=port,
            workdir=workdir,
        )
        started.append(workbot)
        imported = subprocess.run(
            [str(workbot_bin), "-c", str(config), "people", "import", str(args.people)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if imported.returncode != 0:
            raise BenchError(f"people import failed:\n{imported.stdout}{imported.stderr}")
        print(f"people import: {imported.stdout.strip()}", flush=True)
        bare_port = harness.free_port()
        bare = start_server(
            "bare",
            [sys.executable, str(ROOT / "bench" / "bare_server.py"), "--port", str(bare_port)],
            cpu=args.server_cpu,
            port=bare_port,
            workdir=workdir,
        )
        started.append(bare)
        servers = {"bare": bare, "workbot": workbot}
        # The first post refreshes workbot's name cache (the directory came in after start-up).
        first = probe(workbot, "bench probe: before the runs")
        print(
            f"servers up: workbot :{workbot.port} (pid {workbot.proc.pid}), "
            f"bare :{bare.port} (pid {bare.proc.pid}); first probe id {first}",
            flush=True,
        )
        for name in SERVERS:
            run = run_wrk(servers[name], "warm-up", args, script, args.warmup)
            runs.append(run)
            print(describe(run), flush=True)
        for index in range(1, args.rounds + 1):
            for name in SERVERS:
                run = run_wrk(servers[name], f"round {index}", args, script, args.duration)
                runs.append(run)
                print(describe(run), flush=True)
        if args.py_spy:
            profile = profile_run(workbot, args, script)
            print(describe(profile[0]), flush=True)
        completed = sum(r.requests for r in runs if r.server == "workbot")
        if profile is not None:
            completed += profile[0].requests
        print()
        verified = verify(workbot, db_file, first, completed, sys.stdout)
    print(
        "servers stopped: "
        + ", ".join(f"{name} exit {code}" for name, code in sorted(statuses.items())),
        flush=True,
    )
    if profile is not None:
        print(f"\nprofile of workbot under load (py-spy, raw stacks in {args.py_spy}):")
        print(profile[1])
    if args.json:
        payload = {
            "machine": harness.machine_info(),
            "settings": {
                "duration_s": args.duration,
                "rounds": args.rounds,
                "connections": args.connections,
                "server_cpu": args.server_cpu,
                "load_cpu": args.load_cpu,
            },
            "runs": [dataclasses.asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    rounds = [r for r in runs if r.label.startswith("round")]
    failed = [r for r in runs if r.failed]
    print()
    print(summary_table(runs))
    print()
    bare_rps = statistics.median(r.rps for r in rounds if r.server == "bare")
    workbot_rps = statistics.median(r.rps for r in rounds if r.server == "workbot")
    ratio = workbot_rps / bare_rps if bare_rps else 0.0
    non_2xx = sum(r.non_2xx for r in runs)
    print(f"non-2xx responses: {non_2xx} (all runs); runs with errors: {len(failed)}")
    noisy = [r for r in rounds if r.others_pct > NOISE_PCT]
    if noisy:
        print(
            f"WARNING: other processes used more than {NOISE_PCT:g} % of CPU {args.server_cpu} "
            f"or CPU {args.load_cpu} in {len(noisy)} of {len(rounds)} rounds (up to "
            f"{max(r.others_pct for r in noisy):.0f} %): the machine was not idle, so the "
            "figures are not reliable"
        )
    saturated = [r for r in rounds if r.wrk_cpu_pct > WRK_BOUND_PCT]
    if saturated:
        print(
            f"WARNING: wrk used more than {WRK_BOUND_PCT:g} % of its core in "
            f"{len(saturated)} rounds ({', '.join(f'{r.server} {r.label}' for r in saturated)}):"
            " the load generator, not the server, may have set the pace"
        )
    print(f"verification: {'OK' if verified else 'FAILED'}")
    ok = verified and not failed and all(code == 0 for code in statuses.values())
    meets = ratio >= TARGET_RATIO
    print(
        f"{'PASS' if ok and meets else 'MISS' if ok else 'FAILED'}: "
        f"target workbot/bare ≥ {TARGET_RATIO:.2f}×"
    )
    print(f"ratio workbot/bare: {ratio:.2f}×", flush=True)
    return 0 if ok and meets else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = harness.bench_parser(__doc__, runtime="about 75 s")
    harness.add_numbers(
        parser,
        ("--duration", 10.0, "seconds per round"),
        ("--rounds", 3, "rounds per server"),
        ("--connections", 32, "wrk connections"),
        ("--warmup", 3.0, "warm-up seconds per server"),
        ("--server-cpu", 0, "core for both servers"),
        ("--load-cpu", 1, "core for wrk"),
        ("--top", 25, "hotspots to show with --py-spy"),
    )
    parser.add_argument("--wrk", default="wrk", help="the wrk binary")
    parser.add_argument(
        "--people", type=Path, default=ROOT / "examples" / "people.csv", help="directory CSV"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="add one profiled workbot run; py-spy's raw stacks go to FILE",
    )
    parser.add_argument(
        "--py-spy-mode",
        choices=("active", "gil"),
        default="active",
        help="active: every running thread, per thread; gil: only the GIL holder (Python CPU)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, db, wrk)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.warmup <= 0:
        parser.error("--rounds, --duration, --connections and --warmup must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    info = harness.machine_info()
    harness.print_header(
        "ingest benchmark — POST /local/v1/messages: workbot (durable) vs a bare aiohttp handler",
        info,
    )
    print(
        f"  servers on CPU {args.server_cpu}, wrk -t1 -c{args.connections} on CPU {args.load_cpu}; "
        f"{args.rounds} rounds of {args.duration:g} s each, alternating, after a "
        f"{args.warmup:g} s warm-up",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="workbot-bench-ingest-"))
    if args.keep:
        print(f"  work dir (kept): {workdir}", flush=True)
    try:
        check_tools(args)
        return measure(args, workdir)
    except BenchError as exc:
        print(f"ingest bench failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
