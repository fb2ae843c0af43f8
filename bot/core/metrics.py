"""In-process counters and their Prometheus text exposition."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


class Metrics:
    """Counters owned by one process; gauges are read from the database when scraped."""

    def __init__(self) -> None:
        self.started = time.time()
        self.http_requests: Counter[tuple[str, str, str]] = Counter()
        self.chat_events: Counter[str] = Counter()

    def count_request(self, method: str, route: str, status: int) -> None:
        """Count one answered HTTP request."""
        self.http_requests[(method, route, str(status))] += 1

    def render(self, version: str, gauges: dict[str, dict[str, int]]) -> str:
        """The Prometheus text format (version 0.0.4)."""
        out = [
            "# HELP workbot_build_info Build information.",
            "# TYPE workbot_build_info gauge",
            f"workbot_build_info{_labels([('version', version)])} 1",
            "# HELP workbot_process_start_time_seconds Start time of the process.",
            "# TYPE workbot_process_start_time_seconds gauge",
            f"workbot_process_start_time_seconds {self.started:.3f}",
            "# HELP workbot_http_requests_total HTTP requests answered.",
            "# TYPE workbot_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.http_requests.items()):
            labels = _labels([("method", method), ("route", route), ("status", status)])
            out.append(f"workbot_http_requests_total{labels} {n}")
        out.append(
            "# HELP workbot_chat_events_total Chat events handled, by outcome "
            "(unbound_chat counts attempts to use the bot in other groups)."
        )
        out.append("# TYPE workbot_chat_events_total counter")
        for note, n in sorted(self.chat_events.items()):
            out.append(f"workbot_chat_events_total{_labels([('outcome', note)])} {n}")
        for name, by_state in sorted(gauges.items()):
            out.append(f"# HELP workbot_{name} Rows by state.")
            out.append(f"# TYPE workbot_{name} gauge")
            for state, n in sorted(by_state.items()):
                out.append(f"workbot_{name}{_labels([('state', state)])} {n}")
        return "\n".join(out) + "\n"
