"""`workbot burden` output: the terminal tables and the JSON document (docs/cli.md)."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Callable, Sequence

from bot.core import report_format as reports
from bot.core.i18n import Translator
from storage.burden import UNSPECIFIED, BurdenReport, Figures

NOTHING = "-"


class BadPeriod(ValueError):
    """A --since/--until value that is not a date, or a period that ends before it starts."""

    def __init__(self, key: str, **params: str) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


def parse_day(text: str, option: str) -> dt.date:
    """A calendar date written YYYY-MM-DD (the value of ``option``), within the days a period
    may cover (report_format.EARLIEST_DAY..LATEST_DAY)."""
    try:
        day = reports.parse_day(text)
    except ValueError:
        raise BadPeriod("cli.burden_bad_date", option=option, value=text.strip()) from None
    try:
        return reports.check_day(day)
    except reports.PeriodOutOfRange:
        raise BadPeriod(
            "cli.period_out_of_range",
            option=option,
            value=text.strip(),
            earliest=reports.EARLIEST_DAY.isoformat(),
            latest=reports.LATEST_DAY.isoformat(),
        ) from None


def period(since: str, until: str, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """[since 00:00, the day after until 00:00) in tz: both days included."""
    first = parse_day(since, "--since")
    last = parse_day(until, "--until")
    if last < first:
        raise BadPeriod("cli.burden_bad_range", since=first.isoformat(), until=last.isoformat())
    return reports.period(first, last, tz)


def to_json(report: BurdenReport) -> str:
    """The report as one JSON object (see storage.burden.BurdenReport.as_dict)."""
    return json.dumps(report.as_dict(), ensure_ascii=False, indent=2)


def width(text: str) -> int:
    """Terminal columns: East Asian wide and fullwidth characters take two."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns: the first left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0] + " " * (widths[0] - width(row[0]))]
        cells += [
            " " * (w - width(cell)) + cell for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def duration(t: Translator, seconds: float | None) -> str:
    """A compact duration: minutes under an hour, hours under two days, else days."""
    if seconds is None:
        return NOTHING
    if seconds < 3600:
        return t("burden.minutes", n=round(seconds / 60))
    if seconds < 48 * 3600:
        return t("burden.hours", n=_number(seconds / 3600))
    return t("burden.days", n=_number(seconds / 86400))


def span(t: Translator, value: dt.timedelta) -> str:
    """A configured duration (schedule.min_lead_time) in its largest whole unit."""
    seconds = round(value.total_seconds())
    if seconds and seconds % 86400 == 0:
        return t("burden.days", n=seconds // 86400)
    if seconds and seconds % 3600 == 0:
        return t("burden.hours", n=seconds // 3600)
    return t("burden.minutes", n=_number(seconds / 60))


def percent(share: float | None) -> str:
    """A share 0..1 as a whole percentage."""
    return NOTHING if share is None else f"{round(share * 100)}%"


def _rate(value: float | None) -> str:
    return NOTHING if value is None else _number(value)


def render_text(report: BurdenReport, t: Translator, tz: dt.tzinfo) -> list[str]:
    """The report as terminal lines: two tables (issuing, handling), then the details."""
    last_day = (report.until.astimezone(tz) - dt.timedelta(days=1)).date()
    scopes: list[tuple[str, Figures]] = [(t("burden.all"), report.overall)]
    scopes += [
        (t("burden.unspecified") if dept == UNSPECIFIED else dept, figures)
        for dept, figures in report.by_department.items()
    ]

    def rows(keys: Sequence[str], cells: Callable[[Figures], Sequence[str]]) -> list[Sequence[str]]:
        header = [t("burden.col.department"), *(t(f"burden.col.{k}") for k in keys)]
        return [header, *([name, *cells(f)] for name, f in scopes)]

    issuing = rows(
        ["notices", "without_doc", "without_doc_share", "short", "next_day", "no_plan", "feedback"],
        lambda f: [
            str(f.notices),
            str(f.without_doc_number),
            percent(f.without_doc_number_share),
            str(f.short_lead_time),
            str(f.next_day_deadline),
            str(f.inspections_without_plan),
            str(f.feedback.total),
        ],
    )
    handling = rows(
        [
            "assignments",
            "completion",
            "overdue",
            "ack_median",
            "ack_p90",
            "reminders",
            "reminders_max",
            "demands_mean",
            "demands_max",
        ],
        lambda f: [
            str(f.assignments),
            percent(f.completion_rate),
            str(f.overdue),
            duration(t, f.ack_latency.median),
            duration(t, f.ack_latency.p90),
            str(f.reminders_sent),
            str(f.reminders_max_per_person),
            _rate(f.demands_per_person.mean),
            _rate(f.demands_per_person.max),
        ],
    )
    overall = report.overall
    lead = overall.lead_times
    feedback = overall.feedback
    return [
        t(
            "burden.title",
            since=report.since.astimezone(tz).date().isoformat(),
            until=last_day.isoformat(),
            tz=str(tz),
        ),
        "",
        t("burden.issuing"),
        *table(issuing),
        "",
        t("burden.handling"),
        *table(handling),
        "",
        t(
            "burden.lead_times",
            under_1d=lead.under_1d,
            d1_3=lead.from_1d_to_3d,
            d3_7=lead.from_3d_to_7d,
            d7=lead.from_7d,
            none=lead.no_deadline,
        ),
        t(
            "burden.feedback",
            deadline=feedback.deadline,
            duplicate=feedback.duplicate,
            unclear=feedback.unclear,
            other=feedback.other,
        ),
        t("burden.unbound", count=report.unbound_group_attempts),
        t(
            "burden.legend",
            min_lead=span(t, report.min_lead_time),
            weeks=_number(report.weeks),
        ),
    ]
