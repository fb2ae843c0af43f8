"""The outcome report (docs/cli.md, "report"): the seed's form rendered from outcome records.

Pure functions over :class:`storage.reports.OutcomeRow` lists (from ``outcome_rows``):

- ``render_markdown`` and ``render_docx`` give the seed's form: one numbered item per notice
  (一、二、…), headed 针对“<title>”问题, then 采取的措施 (the measures of every assignee
  merged, de-duplicated and attributed) and 取得的成效 (each assignee's results verbatim,
  attributed, with their metrics), closing with the issuing office and the date;
- ``render_csv`` and ``render_json`` export the raw records, one row per outcome.

The fixed words of the document come from the message catalogs (``report.*``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.core.i18n import Translator
from storage.domain import Metric
from storage.reports import OutcomeRow

Format = Literal["md", "docx", "csv", "json"]
FORMATS: tuple[Format, ...] = ("md", "docx", "csv", "json")

# The raw export's columns, in order (CSV header and JSON keys alike).
FIELDS: tuple[str, ...] = (
    "outcome_id",
    "notice_id",
    "title",
    "doc_number",
    "kind",
    "issuer_department",
    "assignee_id",
    "assignee_name",
    "department",
    "state",
    "late",
    "measures",
    "results",
    "metrics",
    "notice_created_at",
    "deadline",
    "reported_at",
)

CSV_MEASURE_SEPARATOR = "；"
CSV_METRIC_SEPARATOR = "; "

_DIGITS = "零一二三四五六七八九"
_SMALL_UNITS = ((1000, "千"), (100, "百"), (10, "十"), (1, ""))
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# --- small pieces ---------------------------------------------------------------------------


def _below_ten_thousand(n: int) -> str:
    """1..9999 in Chinese numerals, with 零 for inner gaps (一千零一, 一百一十)."""
    parts: list[str] = []
    gap = False
    for size, unit in _SMALL_UNITS:
        digit = n // size % 10
        if digit == 0:
            gap = gap or bool(parts)
            continue
        if gap:
            parts.append("零")
            gap = False
        parts.append(_DIGITS[digit] + unit)
    return "".join(parts)


def chinese_numeral(n: int) -> str:
    """n (1..99,999,999) as a Chinese numeral: 一, 十, 十一, 二十, 九十九, 一百, 一百零一, 一万."""
    if not 1 <= n <= 99_999_999:
        raise ValueError(f"{n} is outside 1..99999999")
    high, low = divmod(n, 10_000)
    if high:
        text = _below_ten_thousand(high) + "万"
        if low:
            text += ("零" if low < 1000 else "") + _below_ten_thousand(low)
    else:
        text = _below_ten_thousand(low)
    # 十一, not 一十一: only when the number starts with its tens.
    return text[1:] if text.startswith("一十") else text


def parse_day(text: str) -> dt.date:
    """A YYYY-MM-DD date; ValueError otherwise."""
    text = text.strip()
    if not _DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not YYYY-MM-DD")
    return dt.date.fromisoformat(text)


# The days a report or burden period may cover. Far inside what dates and timestamps can
# hold (year 1 to 9999), so no day arithmetic or timezone conversion of a period can overflow,
# and wide enough for any record the bot keeps.
EARLIEST_DAY = dt.date(2000, 1, 1)
LATEST_DAY = dt.date(2099, 12, 31)


class PeriodOutOfRange(ValueError):
    """A period with a day before EARLIEST_DAY or after LATEST_DAY."""

    def __init__(self, day: dt.date) -> None:
        super().__init__(f"{day} is outside {EARLIEST_DAY}..{LATEST_DAY}")
        self.day = day


def check_day(day: dt.date) -> dt.date:
    """The day, if a period may include it; PeriodOutOfRange otherwise."""
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise PeriodOutOfRange(day)
    return day


def period(since: dt.date, until: dt.date, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The half-open instant range [since 00:00, the day after until 00:00) in tz; both days
    within EARLIEST_DAY..LATEST_DAY (PeriodOutOfRange otherwise)."""
    check_day(since)
    check_day(until)
    if since > until:
        raise ValueError(f"{since} is after {until}")
    start = dt.datetime.combine(since, dt.time(0), tzinfo=tz)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return start, end


def format_date(day: dt.date, t: Translator) -> str:
    """The closing date in the document's form (zh-CN: 2019年12月4日)."""
    return t("report.date", year=day.year, month=day.month, day=day.day)


def report_office(rows: Sequence[OutcomeRow], fallback: str) -> str:
    """The most common issuing department among the rows' notices (first wins a tie)."""
    seen: dict[int, str] = {}
    for row in rows:
        if row.issuer_department and row.issuer_department.strip():
            seen.setdefault(row.notice_id, row.issuer_department.strip())
    if not seen:
        return fallback
    counts = Counter(seen.values())
    return max(counts, key=counts.__getitem__)


def measure_key(text: str) -> str:
    """A measure's comparison key: NFKC, case-folded, without whitespace or punctuation."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    key = "".join(c for c in folded if not c.isspace() and unicodedata.category(c)[0] != "P")
    return key or folded.strip()


def format_number(value: float) -> str:
    """30.0 as 30, 3.90 as 3.9: no float noise."""
    if value.is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def metric_text(metric: Metric) -> str:
    """A metric for people: 发文数量减少 30%."""
    return f"{metric.name} {format_number(metric.value)}{metric.unit}".strip()


# --- the document's model -------------------------------------------------------------------


@dataclass(frozen=True)
class MergedMeasure:
    """One measure, as first written, with everyone who reported it (in reporting order)."""

    text: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class ReportedResult:
    """One assignee's results, verbatim, and the metrics found in them."""

    person_id: str
    name: str
    results: str
    metrics: tuple[Metric, ...]


@dataclass(frozen=True)
class ReportItem:
    """One numbered item of the report: a notice and what its assignees reported."""

    notice_id: int
    title: str
    doc_number: str | None
    measures: tuple[MergedMeasure, ...]
    results: tuple[ReportedResult, ...]


def merge_measures(rows: Sequence[OutcomeRow]) -> list[MergedMeasure]:
    """The measures of the rows, de-duplicated by ``measure_key``, in first-seen order."""
    order: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for row in rows:
        for measure in row.measures:
            text = measure.strip()
            if not text:
                continue
            key = measure_key(text)
            order.setdefault(key, text)
            who = names.setdefault(key, [])
            if row.person_name not in who:
                who.append(row.person_name)
    return [MergedMeasure(text, tuple(names[key])) for key, text in order.items()]


def report_items(rows: Sequence[OutcomeRow]) -> list[ReportItem]:
    """The rows grouped per notice, in the rows' (notice id) order."""
    groups: dict[int, list[OutcomeRow]] = {}
    for row in rows:
        groups.setdefault(row.notice_id, []).append(row)
    items = []
    for notice_id, group in groups.items():
        results = tuple(
            ReportedResult(row.person_id, row.person_name, row.results, row.metrics)
            for row in group
            if row.results.strip() or row.metrics
        )
        items.append(
            ReportItem(
                notice_id=notice_id,
                title=group[0].title,
                doc_number=group[0].doc_number,
                measures=tuple(merge_measures(group)),
                results=results,
            )
        )
    return items


def _verbatim(text: str, *, one_line: bool = False) -> str:
    return text


class _Words:
    """The document's fixed words in one language, around what people wrote (passed through
    `text`: verbatim for DOCX, `markdown_text` for Markdown)."""

    def __init__(self, t: Translator, text: Callable[..., str] = _verbatim) -> None:
        self.t = t
        self.text = text

    def numeral(self, n: int) -> str:
        return chinese_numeral(n) if self.t.language.startswith("zh") else str(n)

    def item(self, n: int, title: str) -> str:
        return self.t("report.item", numeral=self.numeral(n), title=self.text(title, one_line=True))

    def attributed(self, text: str, names: Sequence[str]) -> str:
        joined = self.t("report.names_separator").join(self.text(n, one_line=True) for n in names)
        return self.t("report.attributed", text=self.text(text), names=joined)

    def measure(self, measure: MergedMeasure) -> str:
        # The attribution follows the measure, so a closing 。 or ； before it is dropped.
        text = measure.text.rstrip("。；;，,、 ")
        return self.attributed(text or measure.text, measure.names)

    def result(self, result: ReportedResult) -> str:
        return self.t(
            "report.result",
            name=self.text(result.name, one_line=True),
            results=self.text(result.results.strip()),
        )

    def metrics(self, item: ReportItem) -> str | None:
        parts = [
            self.attributed(metric_text(metric), [result.name])
            for result in item.results
            for metric in result.metrics
        ]
        if not parts:
            return None
        return self.t("report.metrics", metrics=self.t("report.metrics_separator").join(parts))


def _translator(t: Translator | None) -> Translator:
    return t if t is not None else Translator("zh-CN")


# --- Markdown -------------------------------------------------------------------------------

# What people wrote goes into the Markdown report as text: a backslash before every character
# that can start inline syntax (CommonMark and GitHub's tables and strikethrough: emphasis,
# code, links and images, raw HTML and autolinks, entities), and before what would make a line
# a list item, a setext underline or a thematic break. Indentation and trailing blanks are
# dropped (they would make code blocks and hard breaks; a renderer shows neither as text).
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&~|#])")
_MD_ORDERED = re.compile(r"\d{1,9}(?=[.)])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def markdown_text(text: str, *, one_line: bool = False) -> str:
    """Text that a Markdown renderer shows as written: no markup can form from it. With
    `one_line`, line breaks become spaces (for a heading or a name)."""
    lines = _LINE_BREAK.split(text)
    if one_line:
        lines = [" ".join(lines)]
    escaped = []
    for raw in lines:
        line = _MD_INLINE.sub(r"\\\1", raw.strip(" \t"))
        ordered = _MD_ORDERED.match(line)
        if ordered:
            line = f"{line[: ordered.end()]}\\{line[ordered.end() :]}"
        elif line[:1] in ("-", "+", "="):
            line = "\\" + line
        escaped.append(line)
    return "\n".join(escaped)


def _md_list_item(marker: str, text: str) -> str:
    """A list item; continuation lines are indented under its text."""
    lines = text.splitlines() or [""]
    pad = " " * (len(marker) + 1)
    return "\n".join([f"{marker} {lines[0]}", *(f"{pad}{line}" for line in lines[1:])])


def render_markdown(
    rows: Sequence[OutcomeRow], office: str, date: dt.date, *, t: Translator | None = None
) -> str:
    """The report in the seed's form as Markdown (## items, ### 采取的措施 / 取得的成效); what
    people wrote is escaped (`markdown_text`), so only the report's own structure renders."""
    words = _Words(_translator(t), markdown_text)
    tr = words.t
    blocks: list[str] = [f"# {tr('report.title')}"]
    items = report_items(rows)
    if not items:
        blocks.append(tr("report.empty"))
    for number, item in enumerate(items, 1):
        blocks.append(f"## {words.item(number, item.title)}")
        blocks.append(f"### {tr('report.measures')}")
        if item.measures:
            blocks.append(
                "\n".join(
                    _md_list_item(f"{index}.", words.measure(measure))
                    for index, measure in enumerate(item.measures, 1)
                )
            )
        else:
            blocks.append(tr("report.none"))
        blocks.append(f"### {tr('report.results')}")
        if item.results:
            blocks.append("\n".join(_md_list_item("-", words.result(r)) for r in item.results))
        else:
            blocks.append(tr("report.none"))
        metrics = words.metrics(item)
        if metrics:
            blocks.append(metrics)
    blocks.append(markdown_text(office, one_line=True))
    blocks.append(format_date(date, tr))
    return "\n\n".join(blocks) + "\n"


# --- DOCX -----------------------------------------------------------------------------------


def _restarted_numbering(document: Any, style: str) -> int:
    """A new numbering instance of a list style's definition that starts again at 1."""
    numbering: Any = document.part.numbering_part.element
    style_num_id = int(document.styles[style].element.pPr.numPr.numId.val)
    abstract_id = int(numbering.num_having_numId(style_num_id).abstractNumId.val)
    num: Any = numbering.add_num(abstract_id)
    num.add_lvlOverride(ilvl=0).add_startOverride(1)
    return int(num.numId)


def _number_paragraph(paragraph: Any, num_id: int) -> None:
    """Put a paragraph in a numbering instance (level 0)."""
    num_pr: Any = paragraph._p.get_or_add_pPr().get_or_add_numPr()
    num_pr.get_or_add_ilvl().val = 0
    num_pr.get_or_add_numId().val = num_id


def render_docx(
    rows: Sequence[OutcomeRow], office: str, date: dt.date, *, t: Translator | None = None
) -> bytes:
    """The report in the seed's form as a Word document (python-docx).

    Title, then per item a Heading 1 (一、针对“…”问题), Heading 2 for 采取的措施 and 取得的成效,
    the measures as a List Number list (numbered from 1 in every item), the results as List
    Bullet paragraphs, and the office and date right-aligned at the end.
    """
    # Imported here: python-docx (and lxml) is only loaded when a DOCX is made.
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml.ns import qn

    words = _Words(_translator(t))
    tr = words.t
    document: Any = Document()
    document.core_properties.title = tr("report.title")
    # Chinese text gets a CJK face (宋体 body, 黑体 headings) instead of the theme's choice.
    faces = {"Normal": "宋体", "Title": "黑体", "Heading 1": "黑体", "Heading 2": "黑体"}
    for name, face in faces.items():
        fonts = document.styles[name].element.get_or_add_rPr().get_or_add_rFonts()
        fonts.attrib.pop(qn("w:eastAsiaTheme"), None)
        fonts.set(qn("w:eastAsia"), face)
    document.add_heading(tr("report.title"), level=0)
    items = report_items(rows)
    if not items:
        document.add_paragraph(tr("report.empty"))
    for number, item in enumerate(items, 1):
        document.add_heading(words.item(number, item.title), level=1)
        document.add_heading(tr("report.measures"), level=2)
        if item.measures:
            num_id = _restarted_numbering(document, "List Number")
            for measure in item.measures:
                paragraph = document.add_paragraph(words.measure(measure), style="List Number")
                _number_paragraph(paragraph, num_id)
        else:
            document.add_paragraph(tr("report.none"))
        document.add_heading(tr("report.results"), level=2)
        if item.results:
            for result in item.results:
                document.add_paragraph(words.result(result), style="List Bullet")
        else:
            document.add_paragraph(tr("report.none"))
        metrics = words.metrics(item)
        if metrics:
            document.add_paragraph(metrics)
    for line in (office, format_date(date, tr)):
        document.add_paragraph(line).alignment = WD_ALIGN_PARAGRAPH.RIGHT
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- raw records ----------------------------------------------------------------------------


def _iso(when: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    return None if when is None else when.astimezone(tz).isoformat()


def record(row: OutcomeRow, tz: dt.tzinfo) -> dict[str, Any]:
    """One outcome as a JSON-ready record (timestamps ISO 8601 in tz)."""
    return {
        "outcome_id": row.outcome_id,
        "notice_id": row.notice_id,
        "title": row.title,
        "doc_number": row.doc_number,
        "kind": row.kind.value,
        "issuer_department": row.issuer_department,
        "assignee_id": row.person_id,
        "assignee_name": row.person_name,
        "department": row.department,
        "state": row.state.value,
        "late": row.late,
        "measures": list(row.measures),
        "results": row.results,
        "metrics": [{"name": m.name, "value": m.value, "unit": m.unit} for m in row.metrics],
        "notice_created_at": _iso(row.notice_created_at, tz),
        "deadline": _iso(row.deadline, tz),
        "reported_at": _iso(row.reported_at, tz),
    }


def _csv_metric(metric: Metric) -> str:
    return " ".join(p for p in (metric.name, format_number(metric.value), metric.unit) if p)


# A spreadsheet reads a cell that starts with one of these as a formula (=HYPERLINK(…),
# +cmd|…, @SUM(…)); a tab or a carriage return lets one hide behind blank space.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: text that starts like a formula gets a leading
    apostrophe (OWASP's advice against CSV injection); other values are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def render_csv(rows: Sequence[OutcomeRow], tz: dt.tzinfo) -> str:
    """One line per outcome under a header row; starts with a BOM (U+FEFF) for Excel. What
    users wrote is exported as text, never as a formula (see `inert`); JSON is verbatim."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for row in rows:
        data = record(row, tz)
        data["doc_number"] = row.doc_number or ""
        data["issuer_department"] = row.issuer_department or ""
        data["late"] = "true" if row.late else "false"
        data["measures"] = CSV_MEASURE_SEPARATOR.join(row.measures)
        data["metrics"] = CSV_METRIC_SEPARATOR.join(_csv_metric(m) for m in row.metrics)
        data["deadline"] = data["deadline"] or ""
        writer.writerow([inert(data[name]) for name in FIELDS])
    return out.getvalue()


def render_json(rows: Sequence[OutcomeRow], tz: dt.tzinfo) -> str:
    """A JSON array of records, one per outcome (the CSV's columns, with real lists)."""
    return json.dumps([record(row, tz) for row in rows], ensure_ascii=False, indent=2) + "\n"


def render(
    fmt: Format,
    rows: Sequence[OutcomeRow],
    *,
    office: str,
    date: dt.date,
    tz: dt.tzinfo,
    t: Translator | None = None,
) -> str | bytes:
    """The report in one format: text for md, csv and json; bytes for docx."""
    if fmt == "md":
        return render_markdown(rows, office, date, t=t)
    if fmt == "docx":
        return render_docx(rows, office, date, t=t)
    if fmt == "csv":
        return render_csv(rows, tz)
    if fmt == "json":
        return render_json(rows, tz)
    raise ValueError(f"unknown report format {fmt!r}")
