"""The machine and software a benchmark ran on, printed with every result."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sqlite3
from pathlib import Path

LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg", "aiohttp")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, str]:
    """Date, CPU, cores, memory, load, OS, Python, SQLite and library versions."""
    cpu = platform.processor() or "unknown"
    mem = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "load average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        **{lib: _version(lib) for lib in LIBRARIES},
    }
