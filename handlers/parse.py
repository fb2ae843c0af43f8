"""Parse one chat message into a Command (the language of docs/chat.md); pure, no I/O."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from handlers.commands import Command, FeedbackCategory, Intent, MetricValue, NoticeFields

__all__ = [
    "DEFAULT_DEADLINE_TIME",
    "MAX_CHARS",
    "UNITS",
    "could_be_command",
    "parse",
    "parse_deadline",
    "worth_processing",
]

MAX_CHARS = 20_000  # characters of a message that are looked at; the rest is ignored
ACK_MAX_CHARS = 64  # an ack or a "not received" is short: anything longer is neither
ID_MAX_DIGITS = 10
WORD_MAX_CHARS = 32
LIST_MAX_ITEMS = 99
DEADLINE_MAX_CHARS = 100
DEFAULT_DEADLINE_TIME = dt.time(17, 30)

# Units that make a number in 成效 a metric; longest first, so 人次 wins over 人.
UNITS: tuple[str, ...] = tuple(
    sorted(
        {
            "%", "个百分点", "百分点", "个", "次", "次数", "件", "人", "人次", "所", "份", "项",
            "天", "小时", "分钟", "元", "万元", "篇", "条", "场", "名", "家", "户", "周", "个月",
            "月", "年", "本", "张", "套", "台", "间", "校", "页", "批", "轮", "期", "节", "课时",
            "学时", "处", "起", "例", "倍", "所学校", "个单位", "个部门",
        },
        key=lambda unit: (-len(unit), unit),
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Src:
    """A folded text and the original it came from, aligned character by character."""

    fold: str
    orig: str

    def __len__(self) -> int:
        return len(self.fold)

    def cut(self, start: int, end: int | None = None) -> _Src:
        """The same slice of both texts."""
        return _Src(self.fold[start:end], self.orig[start:end])

    def trim(self, extra: str = "") -> _Src:
        """Without leading and trailing whitespace and the characters in extra."""
        fold, start, end = self.fold, 0, len(self.fold)
        while start < end and (fold[start].isspace() or fold[start] in extra):
            start += 1
        while end > start and (fold[end - 1].isspace() or fold[end - 1] in extra):
            end -= 1
        return self.cut(start, end)

    def ltrim(self, extra: str = "") -> _Src:
        """Without leading whitespace and the characters in extra."""
        fold, start = self.fold, 0
        while start < len(fold) and (fold[start].isspace() or fold[start] in extra):
            start += 1
        return self.cut(start)

    def lines(self) -> list[_Src]:
        """The lines (any line break)."""
        out, start = [], 0
        for match in _NEWLINE.finditer(self.fold):
            out.append(self.cut(start, match.start()))
            start = match.end()
        out.append(self.cut(start))
        return out

    @property
    def text(self) -> str:
        """The original text, trimmed."""
        return self.trim().orig


_EMPTY = _Src("", "")
_NEWLINE = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_SEPARATORS = ":,;"  # after folding; leading ones before an argument are noise
_TRAILING = ";,.。、"  # separators left at the end of an item
_EMOJI_CATEGORIES = frozenset({"So", "Sk", "Me", "Cf", "Co", "Cs"})
_EMOJI_EXTRA = frozenset("\ufe0e\ufe0f\u20e3")
# Circled and parenthesised numbers: NFKC would turn them into bare digits and lose the list.
_FOLD_KEEP = frozenset(chr(code) for code in range(0x2460, 0x249C))


# --- normalising -----------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """NFKC of one character when that is one character too, else the character itself."""
    if char in _FOLD_KEEP:
        return char
    folded = unicodedata.normalize("NFKC", char)
    return folded if len(folded) == 1 else char


def _fold(text: str) -> str:
    """NFKC per character, keeping the length so offsets in the fold match the original."""
    if text.isascii():
        return text
    return "".join(map(_fold_char, text))


def _is_decoration(char: str) -> bool:
    """Whitespace or emoji (trailing ones are not part of the message)."""
    return char.isspace() or char in _EMOJI_EXTRA or unicodedata.category(char) in _EMOJI_CATEGORIES


@lru_cache(maxsize=64)
def _mention_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern for @name of any of the bot's names, or None without names."""
    cleaned = {_fold(name).strip().lstrip("@").strip() for name in names}
    cleaned.discard("")
    if not cleaned:
        return None
    alternatives = "|".join(re.escape(name) for name in sorted(cleaned, key=len, reverse=True))
    return re.compile(rf"@(?:{alternatives})(?![A-Za-z0-9_])", re.IGNORECASE)


def _prepare(text: str, bot_names: Sequence[str]) -> tuple[_Src, bool]:
    """The message folded, without bot mentions and decoration; and whether the bot was named."""
    raw = text[:MAX_CHARS]
    src = _Src(_fold(raw), raw)
    addressed = False
    pattern = _mention_pattern(tuple(bot_names))
    if pattern is not None:
        folds: list[str] = []
        origs: list[str] = []
        position = 0
        for match in pattern.finditer(src.fold):
            addressed = True
            # A space keeps the words on either side apart ("完成@bot#12").
            folds += [src.fold[position : match.start()], " "]
            origs += [src.orig[position : match.start()], " "]
            position = match.end()
        if addressed:
            folds.append(src.fold[position:])
            origs.append(src.orig[position:])
            src = _Src("".join(folds), "".join(origs))
    start, end = 0, len(src)
    while start < end and _is_decoration(src.fold[start]):
        start += 1
    while end > start and _is_decoration(src.fold[end - 1]):
        end -= 1
    return src.cut(start, end), addressed


# --- the command words -----------------------------------------------------------------------

# Chinese words, recognised at the start of a message (and after a /).
_ZH_WORDS: dict[str, Intent] = {
    "进度": Intent.PROGRESS,
    "完成": Intent.DONE,
    "反馈": Intent.FEEDBACK,
    "待办": Intent.PENDING,
    "我的待办": Intent.PENDING,
    "查询": Intent.STATUS,
    "进展": Intent.STATUS,
    "通知": Intent.NOTICE,
    "任务": Intent.NOTICE,
    "催办": Intent.REMIND,
    "电话确认": Intent.PHONE_ACK,
    "请假": Intent.EXCUSE,
    "办结": Intent.CLOSE,
    "撤回": Intent.CANCEL,
    "报告": Intent.REPORT,
    "帮助": Intent.HELP,
}
# Without a / these are judged as a whole message (_short_answer), never as a command word.
_ZH_SLASH_WORDS: dict[str, Intent] = {
    **_ZH_WORDS,
    "收到": Intent.ACK,
    "已收到": Intent.ACK,
    "已阅": Intent.ACK,
    "收悉": Intent.ACK,
    "已收悉": Intent.ACK,
    "没收到": Intent.NOT_ACK,
    "还没收到": Intent.NOT_ACK,
    "未收到": Intent.NOT_ACK,
    "还未收到": Intent.NOT_ACK,
    "没有收到": Intent.NOT_ACK,
    "收不到": Intent.NOT_ACK,
}
_EN_WORDS: dict[str, Intent] = {
    "ack": Intent.ACK,
    "progress": Intent.PROGRESS,
    "done": Intent.DONE,
    "feedback": Intent.FEEDBACK,
    "pending": Intent.PENDING,
    "status": Intent.STATUS,
    "notice": Intent.NOTICE,
    "task": Intent.NOTICE,
    "remind": Intent.REMIND,
    "phoneack": Intent.PHONE_ACK,
    "excuse": Intent.EXCUSE,
    "close": Intent.CLOSE,
    "cancel": Intent.CANCEL,
    "report": Intent.REPORT,
    "help": Intent.HELP,
}
_NOTICE_KINDS = {"通知": "notice", "notice": "notice", "任务": "task", "task": "task"}
# Words that may be followed directly (without a space) by these arguments.
_GLUED_ARGUMENTS = {"待办": ("全部", "所有")}
# Intents that change state: without a /, a question there is a question, not a command.
_STATE_CHANGING = frozenset(
    {
        Intent.PROGRESS,
        Intent.DONE,
        Intent.REMIND,
        Intent.PHONE_ACK,
        Intent.EXCUSE,
        Intent.CLOSE,
        Intent.CANCEL,
    }
)

_ZH_BY_LENGTH = sorted(_ZH_SLASH_WORDS, key=len, reverse=True)
_EN_WORD = re.compile(r"[A-Za-z]+")
_UNKNOWN_WORD = re.compile(r"[^\W\d_][^\s#:/]*")
_ID = re.compile(r"#\s*([0-9]+)(?![0-9])|([0-9]+)(?![\w%.\-/]|:[0-9])")
_HASH_ID = re.compile(r"#\s*([0-9]+)")
_PERCENT_FIRST = re.compile(r"([0-9]{1,3})\s*%(?![0-9])")
_PERCENT_LAST = re.compile(r"(?<!\S)([0-9]{1,3})%$")
_ASKS = re.compile(r"(?:\?|吗|么|没有?)$")
_EVERYONE = re.compile(r"(?:全部|所有人|所有|全体|everyone|all)(?![A-Za-z])", re.IGNORECASE)
_PERSON = re.compile(r"@?([^\s,;:@?!]+)")
_PERIOD_PART = r"[0-9]{4}(?:[-/.][0-9]{1,2}(?:[-/.][0-9]{1,2})?)?"
_PERIOD = re.compile(
    r"([0-9]{4})\s*年(?:\s*([0-9]{1,2})\s*月)?(?![0-9])"
    rf"|({_PERIOD_PART}(?:\s*(?:\.\.|~|至|到|—|–|--?)\s*{_PERIOD_PART})?)(?![0-9])"
)


def _as_id(digits: str) -> int | None:
    """A notice id from its digits: positive, at most ID_MAX_DIGITS digits."""
    if not digits or len(digits) > ID_MAX_DIGITS:
        return None
    value = int(digits)
    return value if value > 0 else None


def _take_id(args: _Src) -> tuple[int | None, _Src]:
    """An id (#12 or 12) at the start of args, and what follows it."""
    args = args.ltrim(_SEPARATORS)
    match = _ID.match(args.fold)
    if match is None:
        return None, args
    notice_id = _as_id(match.group(1) or match.group(2) or "")
    if notice_id is None:
        return None, args
    return notice_id, args.cut(match.end()).ltrim(_SEPARATORS)


def _asks(text: str) -> bool:
    """Whether a free text reads as a question."""
    return _ASKS.search(_fold(text).rstrip(" \t\n.。!~")) is not None


def _starts_ok(intent: Intent, word: str, after: str) -> bool:
    """Whether a command word is followed by something that ends a word."""
    if not after:
        return True
    first = after[0]
    if intent is Intent.NOTICE:
        return first.isspace() or first == ":"
    if first.isspace() or first in ":#0123456789":
        return True
    return after.startswith(_GLUED_ARGUMENTS.get(word, ()))


def _zh_word(src: _Src, table: dict[str, Intent]) -> tuple[str, Intent] | None:
    """The longest Chinese command word at the start of src."""
    for word in _ZH_BY_LENGTH:
        if word in table and src.fold.startswith(word):
            return word, table[word]
    return None


# --- parse -----------------------------------------------------------------------------------


def parse(text: str, *, bot_names: Sequence[str] = ()) -> Command:
    """Parse one chat message; total: any text gives a Command, never an exception."""
    try:
        return _parse(text, bot_names)
    except Exception:  # a last resort only: the tests show that _parse never raises
        return Command(Intent.NONE)


def _parse(text: str, bot_names: Sequence[str]) -> Command:
    """Parse one chat message (may raise only on a bug; see parse)."""
    src, addressed = _prepare(text, bot_names)
    if not src:
        return Command(Intent.NONE, addressed=addressed)
    fold = src.fold
    command: Command | None
    if fold[0] == "/":
        command = _slash(src.cut(1).ltrim()) or Command(Intent.NONE)
        addressed = True
    elif fold[0] == "、" and _EN_WORD.match(fold, 1):
        # A Chinese keyboard types 、 for the / key; accepted before a known English word only.
        command = _slash(src.cut(1), known_only=True)
        addressed = addressed or command is not None
    else:
        command = _zh_command(src) or _en_command(src)
        if command is not None:
            addressed = True
        else:
            # A bare 收到 may be meant for a colleague: only a mention makes it addressed.
            command = _short_answer(src)
    if command is None or (command.intent is Intent.ACK and _NEGATED.search(fold)):
        return Command(Intent.NONE, addressed=addressed)
    return replace(command, addressed=addressed)


def _slash(src: _Src, *, known_only: bool = False) -> Command | None:
    """A message after its leading /: a known command in either language, or UNKNOWN."""
    zh = _zh_word(src, _ZH_SLASH_WORDS)
    if zh is not None:
        word, intent = zh
        if _starts_ok(intent, word, src.fold[len(word) :]):
            return _build(intent, src.orig[: len(word)], src.cut(len(word)), slash=True)
    english = _EN_WORD.match(src.fold)
    if english is not None:
        word = english.group()
        intent_or_none = _EN_WORDS.get(word.lower())
        after = src.cut(english.end())
        if intent_or_none is not None and _starts_ok(intent_or_none, word, after.fold):
            return _build(intent_or_none, src.orig[: english.end()], after, slash=True)
    if known_only:
        return None
    unknown = _UNKNOWN_WORD.match(src.fold)
    if unknown is None:
        return Command(Intent.NONE)
    end = min(unknown.end(), WORD_MAX_CHARS)
    return Command(Intent.UNKNOWN, word=src.orig[:end], text=src.cut(unknown.end()).text)


def _zh_command(src: _Src) -> Command | None:
    """A Chinese command word at the start of the message."""
    found = _zh_word(src, _ZH_WORDS)
    if found is None:
        return None
    word, intent = found
    if not _starts_ok(intent, word, src.fold[len(word) :]):
        return None
    return _build(intent, src.orig[: len(word)], src.cut(len(word)), slash=False)


def _en_command(src: _Src) -> Command | None:
    """A bare English command word: only with an id after it (report: a period; help: alone)."""
    match = _EN_WORD.match(src.fold)
    if match is None:
        return None
    intent = _EN_WORDS.get(match.group().lower())
    after = src.cut(match.end())
    if intent is None or not _starts_ok(intent, match.group(), after.fold):
        return None
    word = src.orig[: match.end()]
    if intent is Intent.HELP:
        return Command(Intent.HELP, word=word) if not after.trim("!.").fold else None
    if intent is Intent.REPORT:
        if _PERIOD.match(after.ltrim(_SEPARATORS).fold) is None:
            return None
    elif _take_id(after)[0] is None:
        return None
    return _build(intent, word, after, slash=False)


# --- ack and "not received" ------------------------------------------------------------------

_FILLERS = r"(?:[好嗯哦噢了啦的滴嘞哒]|明白|了解|okay|ok|谢谢|多谢|没问题)"
_ACK_WORDS = r"(?:已收悉|收悉|已收到|收到|已阅)"
_ACK = re.compile(
    rf"{_FILLERS}*+(?P<word>{_ACK_WORDS})(?P<id>[0-9]{{1,{ID_MAX_DIGITS}}})?"
    rf"(?:{_FILLERS}|{_ACK_WORDS})*+"
)
_NOT_ACK = re.compile(
    r"[嗯哦啊]*+(?:我们|我|本人|我这边|这边)?"
    r"(?P<word>(?:还是|还|仍然|仍|一直|都|暂时|目前)?(?:没有|没|未能|未|没能)收到|收不到)"
    r"(?:过)?(?:这个|该|此)?(?:通知|消息|文件)?"
    rf"(?P<id>[0-9]{{1,{ID_MAX_DIGITS}}})?[呢啊呀哦诶欸耶]*+"
)
_NEGATED = re.compile(r"没收到|未收到|收不到|没有收到|还没|还未|未能收到|没能收到")
_ACKISH = re.compile(r"收|阅|悉")
_BRACKET_EMOJI = re.compile(r"\[[^\[\]\s]{1,8}\]")  # WeChat-style [强] [OK]
_QUESTION = re.compile(r"吗|么|是否|有没有|没有?$")


def _short_answer(src: _Src) -> Command | None:
    """ACK or NOT_ACK when the whole message is one (strict); None otherwise, or for a question."""
    fold = src.fold
    if len(fold) > ACK_MAX_CHARS or _ACKISH.search(fold) is None:
        return None
    rest = _BRACKET_EMOJI.sub("", fold)
    hashes = _HASH_ID.findall(rest)
    if len(hashes) > 1:
        return None
    notice_id: int | None = None
    if hashes:
        notice_id = _as_id(hashes[0])
        if notice_id is None:
            return None
        rest = _HASH_ID.sub(" ", rest)
    if "?" in rest:
        return None
    # Only letters and digits are left: punctuation, emoji and spaces are form, not meaning.
    compact = "".join(c for c in rest if unicodedata.category(c)[0] in "LN").lower()
    if _QUESTION.search(compact):
        return None
    for intent, pattern in ((Intent.NOT_ACK, _NOT_ACK), (Intent.ACK, _ACK)):
        match = pattern.fullmatch(compact)
        if match is None:
            continue
        if match.group("id"):
            if notice_id is not None:
                return None
            notice_id = _as_id(match.group("id"))
            if notice_id is None:
                return None
        word = match.group("word")
        at = fold.find(word)
        typed = src.orig[at : at + len(word)] if at >= 0 else word
        return Command(intent, notice_id=notice_id, word=typed)
    return None


# --- the arguments of each intent ------------------------------------------------------------


def _build(intent: Intent, word: str, args: _Src, slash: bool) -> Command | None:
    """The Command for a command word and what follows it (None: not a command after all)."""
    if intent is Intent.NOTICE:
        return _notice(word, args, slash)
    command = _BUILDERS.get(intent, _simple)(intent, word, args)
    if slash or intent not in _STATE_CHANGING:
        return command
    # Without a /, "完成 #12 了吗" or a bare "进度" asks; a wrong guess costs more than silence.
    if intent is Intent.PROGRESS and command.percent is None and not command.text:
        return None
    structured = command.percent is not None or command.measures or command.results
    if not structured and _asks(command.text):
        return None
    return command


def _simple(intent: Intent, word: str, args: _Src) -> Command:
    """An id and a free text."""
    notice_id, rest = _take_id(args)
    return Command(intent, notice_id=notice_id, text=rest.text, word=word)


def _progress(intent: Intent, word: str, args: _Src) -> Command:
    """进度 #12 60% text: an id, a percent (0..100) and a free text."""
    notice_id, rest = _take_id(args)
    percent: int | None = None
    match = _PERCENT_FIRST.match(rest.fold)
    if match is not None and int(match.group(1)) <= 100:
        percent = int(match.group(1))
        rest = rest.cut(match.end()).ltrim(_SEPARATORS)
        if notice_id is None:
            notice_id, rest = _take_id(rest)
    if percent is None:
        rest = rest.trim()
        match = _PERCENT_LAST.search(rest.fold)
        if match is not None and int(match.group(1)) <= 100:
            percent = int(match.group(1))
            rest = rest.cut(0, match.start())
    return Command(intent, notice_id=notice_id, percent=percent, text=rest.text, word=word)


def _feedback(intent: Intent, word: str, args: _Src) -> Command:
    """反馈 #12 text: classified by keywords; 重复 … #9 names the duplicate."""
    notice_id, rest = _take_id(args)
    category, duplicate_of = _classify_feedback(rest.fold.lower())
    return Command(
        intent,
        notice_id=notice_id,
        text=rest.text,
        feedback=category,
        duplicate_of=duplicate_of,
        word=word,
    )


_DUPLICATE_WORDS = ("重复", "多头", "已报过", "报过了", "duplicate")
_UNCLEAR_WORDS = ("不清楚", "不明确", "看不懂", "不理解", "不明白", "什么意思", "unclear")
_DEADLINE_WORDS = ("时间", "太紧", "来不及", "截止", "时限", "仓促", "延期", "deadline", "tight")


def _classify_feedback(lowered: str) -> tuple[FeedbackCategory, int | None]:
    """The category of a feedback text; duplicate, then unclear, then deadline (most specific)."""
    if any(word in lowered for word in _DUPLICATE_WORDS):
        match = _HASH_ID.search(lowered)
        return FeedbackCategory.DUPLICATE, _as_id(match.group(1)) if match else None
    if any(word in lowered for word in _UNCLEAR_WORDS):
        return FeedbackCategory.UNCLEAR, None
    if any(word in lowered for word in _DEADLINE_WORDS):
        return FeedbackCategory.DEADLINE, None
    return FeedbackCategory.OTHER, None


def _pending(intent: Intent, word: str, args: _Src) -> Command:
    """待办 [全部] [#12]."""
    notice_id, rest = _take_id(args)
    match = _EVERYONE.match(rest.fold)
    everyone = match is not None
    if match is not None:
        rest = rest.cut(match.end())
        if notice_id is None:
            notice_id, rest = _take_id(rest)
    return Command(intent, notice_id=notice_id, everyone=everyone, text=rest.text, word=word)


def _person(intent: Intent, word: str, args: _Src) -> Command:
    """电话确认 / 请假 #12 person text."""
    notice_id, rest = _take_id(args)
    person: str | None = None
    match = _PERSON.match(rest.fold)
    if match is not None:
        person = match.group(1)
        rest = rest.cut(match.end()).ltrim(_SEPARATORS)
    return Command(intent, notice_id=notice_id, person=person, text=rest.text, word=word)


def _report(intent: Intent, word: str, args: _Src) -> Command:
    """报告 2019-11 (or a range 2019-11-01..2019-11-30, or 2019年11月)."""
    rest = args.ltrim(_SEPARATORS)
    period: str | None = None
    match = _PERIOD.match(rest.fold)
    if match is not None:
        if match.group(3) is not None:
            period = match.group(3)
        else:
            year, month = match.group(1), match.group(2)
            period = f"{year}-{int(month):02d}" if month else year
        rest = rest.cut(match.end())
    return Command(intent, period=period, text=rest.text, word=word)


# --- 完成: measures, results, metrics -------------------------------------------------------

_OUTCOME_KEY = re.compile(r"(?<![^\s;,.。、:])(措施|成效|measures|results)\s*:", re.IGNORECASE)
_MEASURE_KEYS = ("措施", "measures")
_ZH_NUMERALS = "一二三四五六七八九十"
_BULLET = re.compile(r"[-•·*]\s*")
_ITEM_SPLIT = re.compile(r"[;\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _done(intent: Intent, word: str, args: _Src) -> Command:
    """完成 #12 text, then 措施 / 成效 (on the same line or the following ones)."""
    notice_id, rest = _take_id(args)
    keys = list(_OUTCOME_KEY.finditer(rest.fold))
    if not keys:
        return Command(intent, notice_id=notice_id, text=rest.text, word=word)
    text = rest.cut(0, keys[0].start()).trim(_TRAILING).orig
    measures: list[str] = []
    results: list[_Src] = []
    for index, key in enumerate(keys):
        end = keys[index + 1].start() if index + 1 < len(keys) else len(rest)
        value = rest.cut(key.end(), end)
        if key.group(1).lower() in _MEASURE_KEYS:
            measures.extend(_split_measures(value))
        else:
            value = value.trim(";,")
            if value:
                results.append(value)
    metrics = tuple(metric for value in results for metric in _metrics(value))
    return Command(
        intent,
        notice_id=notice_id,
        text=text,
        measures=tuple(measures),
        results="\n".join(value.orig for value in results),
        metrics=metrics,
        word=word,
    )


@lru_cache(maxsize=LIST_MAX_ITEMS + 1)
def _marker(number: int) -> re.Pattern[str]:
    """The list markers of item `number`: 1. 1、 1) (1) ① ⑴ ⒈ 一、 (一)."""
    boundary = r"(?<![^\s;,:。、)])"
    alternatives = [rf"(?<![0-9.]){number}\s*[.、)](?![0-9])", rf"\(\s*{number}\s*\)"]
    if number == 1:
        alternatives = [boundary + f"(?:{alternative})" for alternative in alternatives]
    if number <= 20:
        alternatives += [chr(0x245F + number), chr(0x2473 + number), chr(0x2487 + number)]
    if number <= len(_ZH_NUMERALS):
        numeral = _ZH_NUMERALS[number - 1]
        alternatives += [rf"{boundary}{numeral}(?:、|是)", rf"\({numeral}\)"]
    return re.compile("|".join(alternatives))


def _split_measures(value: _Src) -> list[str]:
    """Measures: numbered items (1. 1、 (1) ①), or else split at ; and line breaks."""
    fold = value.fold
    spans: list[tuple[int, int]] = []
    position = 0
    for number in range(1, LIST_MAX_ITEMS + 1):
        match = _marker(number).search(fold, position)
        if match is None:
            break
        spans.append((match.start(), match.end()))
        position = match.end()
    pieces: list[_Src] = []
    if spans:
        pieces.append(value.cut(0, spans[0][0]))
        for index, (_, end) in enumerate(spans):
            stop = spans[index + 1][0] if index + 1 < len(spans) else len(value)
            pieces.append(value.cut(end, stop))
    else:
        start = 0
        for match in _ITEM_SPLIT.finditer(fold):
            pieces.append(value.cut(start, match.start()))
            start = match.end()
        pieces.append(value.cut(start))
    items = []
    for piece in pieces:
        item = piece.trim(_TRAILING)
        bullet = _BULLET.match(item.fold)
        if bullet is not None:
            item = item.cut(bullet.end()).trim(_TRAILING)
        if item:
            items.append(item.orig)
    return items


_UNIT_PATTERN = "|".join(re.escape(unit) for unit in UNITS)
_METRIC = re.compile(
    r"(?<![0-9.第])([0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]{1,15})(\.[0-9]{1,6})?\s*"
    rf"((?:[万千百亿](?=(?:{_UNIT_PATTERN})))?(?:{_UNIT_PATTERN}))"
)
_CLAUSE_END = re.compile(r"[;。!?\n、]|,(?![0-9]{3}(?![0-9]))")
_NAME_EDGE = " \t:;,.。、()[]\"'“”‘’《》【】"


def _is_date(clause: str, match: re.Match[str]) -> bool:
    """Whether a number with 年 or 月 is part of a date (2019年, 2019年12月, 12月10日)."""
    unit = match.group(3)
    if unit not in ("年", "月"):
        return False
    if clause[match.end() : match.end() + 1].isdigit():
        return True
    if unit == "年":
        return len(match.group(1)) == 4 and not match.group(2)
    return clause[: match.start()].rstrip().endswith("年")


def _metrics(results: _Src) -> list[MetricValue]:
    """Numbers with a unit or % in a 成效 text, each named by the words before it in its clause."""
    found: list[MetricValue] = []
    start = 0
    for clause_end in [*(m.start() for m in _CLAUSE_END.finditer(results.fold)), len(results)]:
        clause = results.cut(start, clause_end)
        start = clause_end + 1
        name_from = 0
        for match in _METRIC.finditer(clause.fold):
            if _is_date(clause.fold, match):
                continue
            number = match.group(1).replace(",", "") + (match.group(2) or "")
            name = clause.cut(name_from, match.start()).trim(_NAME_EDGE).orig
            found.append(MetricValue(name=name, value=float(number), unit=match.group(3)))
            name_from = match.end()
    return found


# --- 通知 / 任务 -----------------------------------------------------------------------------

_KEY_LINE = re.compile(
    r"\s*(截止时间|截止日期|截止|deadline|对象|to|要求|requires|文号|doc|计划|plan)\s*:",
    re.IGNORECASE,
)
_KEY_NAMES = {
    "截止时间": "deadline",
    "截止日期": "deadline",
    "截止": "deadline",
    "deadline": "deadline",
    "对象": "to",
    "to": "to",
    "要求": "requires",
    "requires": "requires",
    "文号": "doc",
    "doc": "doc",
    "计划": "plan",
    "plan": "plan",
}
_REQUIRES = {
    "收到": "ack",
    "ack": "ack",
    "进度": "progress",
    "progress": "progress",
    "成效": "outcome",
    "outcome": "outcome",
}
_AUDIENCE_ALL = frozenset({"全体", "全部", "所有人", "全员", "all", "everyone"})
_AUDIENCE_SPLIT = re.compile(r"[\s,;、]+")


def _notice(word: str, args: _Src, slash: bool) -> Command | None:
    """通知 / 任务 title, body lines, and key lines anywhere (截止 对象 要求 文号 计划)."""
    kind = _NOTICE_KINDS.get(_fold(word).lower(), "notice")
    fields: dict[str, str | None] = {}
    audience: list[str] = []
    audience_all = False
    problems: list[str] = []
    title: _Src | None = None
    body: list[str] = []
    for index, line in enumerate(args.lines()):
        if index == 0:
            line = line.ltrim(":")
        key = _KEY_LINE.match(line.fold)
        if key is not None:
            name = _KEY_NAMES[key.group(1).lower()]
            value = line.cut(key.end()).trim()
            if name == "to":
                names = [n.strip("@.。") for n in _AUDIENCE_SPLIT.split(value.fold)]
                names = [n for n in names if n]
                everyone = [n for n in names if n.lower() in _AUDIENCE_ALL]
                audience_all = audience_all or bool(everyone)
                audience += [n for n in names if n.lower() not in _AUDIENCE_ALL]
                understood = bool(names)
            elif name == "requires":
                fields[name] = _REQUIRES.get(value.trim(".。!").fold.lower())
                understood = fields[name] is not None
            else:
                fields[name] = value.orig or None
                understood = bool(value)
            if not understood and name not in problems:
                problems.append(name)
            continue
        if title is None:
            if line.trim():
                title = line.trim()
            continue
        body.append(line.orig)
    if title is None:
        if not slash:
            return None
        title = _EMPTY
        problems.insert(0, "title")
    elif not slash and _asks(title.orig):
        return None  # "通知 已经发了吗？" asks about a notice
    notice = NoticeFields(
        kind=kind,
        title=title.orig,
        body="\n".join(body).strip(),
        deadline=fields.get("deadline"),
        audience_all=audience_all,
        audience=tuple(dict.fromkeys(audience)),
        requires=fields.get("requires"),
        doc_number=fields.get("doc"),
        plan_ref=fields.get("plan"),
        problems=tuple(problems),
    )
    return Command(Intent.NOTICE, text=args.ltrim(":").text, notice=notice, word=word)


_BUILDERS: dict[Intent, Callable[[Intent, str, _Src], Command]] = {
    Intent.PROGRESS: _progress,
    Intent.DONE: _done,
    Intent.FEEDBACK: _feedback,
    Intent.PENDING: _pending,
    Intent.PHONE_ACK: _person,
    Intent.EXCUSE: _person,
    Intent.REPORT: _report,
}


# --- deadlines -------------------------------------------------------------------------------

_TIME = (
    r"(?P<ampm>上午|早上|早晨|凌晨|中午|下午|傍晚|晚上)?\s*(?P<hour>[0-9]{1,2})"
    r"(?::(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2}))?"
    r"|\s*[点时](?:\s*(?P<minute2>[0-9]{1,2})\s*分?|(?P<half>半))?)"
)
_DEADLINE = re.compile(
    r"(?:(?P<year>[0-9]{4})\s*(?P<sep>[-/.])\s*(?P<month>[0-9]{1,2})\s*(?P=sep)\s*(?P<day>[0-9]{1,2})"
    r"|(?P<year2>[0-9]{4})\s*年\s*(?P<month2>[0-9]{1,2})\s*月\s*(?P<day2>[0-9]{1,2})\s*[日号]?"
    r"|(?P<month3>[0-9]{1,2})\s*月\s*(?P<day3>[0-9]{1,2})\s*[日号]?"
    r"|(?P<relative>大后天|后天|明天|明日|今天|今日|tomorrow|today)"
    r"|(?P<week>下下个|下下|下个|下|本|这个|这)?(?:周|星期|礼拜)(?P<weekday>[一二三四五六日天1-7]))"
    r"(?:\s*\((?:周|星期|礼拜)?[一二三四五六日天1-7]\))?"
    rf"(?:(?:\s*|t){_TIME})?"
    r"(?:\s*(?P<offset>z|[+-][0-9]{2}:?[0-9]{2}))?"
    r"\s*(?:前|之前|以前)?"
)
_RELATIVE_DAYS = {"今天": 0, "今日": 0, "today": 0, "明天": 1, "明日": 1, "tomorrow": 1}
_RELATIVE_DAYS |= {"后天": 2, "大后天": 3}
_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
_WEEKDAYS |= {str(number): number - 1 for number in range(1, 8)}
_WEEK_OFFSETS = {"本": 0, "这": 0, "这个": 0, "下": 1, "下个": 1, "下下": 2, "下下个": 2}
_AFTERNOON = frozenset({"下午", "傍晚", "晚上"})


def parse_deadline(text: str, *, now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime | None:
    """An aware deadline from text (ISO, 12月10日 17:00, 明天, 周五, …); None if not understood."""
    spoken = _fold(text).strip().lower()
    if len(spoken) > DEADLINE_MAX_CHARS:
        return None
    match = _DEADLINE.fullmatch(spoken)
    if match is None:
        return None
    try:
        local_now = now.astimezone(tz) if now.tzinfo is not None else now.replace(tzinfo=tz)
        day = _deadline_date(match, local_now.date())
        clock = _deadline_time(match)
        if clock is None:
            return None
        offset = match.group("offset")
        if offset is None:
            return dt.datetime.combine(day, clock, tzinfo=tz)
        zone = _offset(offset)
        if zone is None:
            return None
        return dt.datetime.combine(day, clock, tzinfo=zone).astimezone(tz)
    except (ValueError, OverflowError):  # 2月30日, or dates beyond year 9999
        return None


def _deadline_date(match: re.Match[str], today: dt.date) -> dt.date:
    """The date part of a deadline match."""
    if match.group("year") is not None:
        year, month, day = match.group("year", "month", "day")
        return dt.date(int(year), int(month), int(day))
    if match.group("year2") is not None:
        year, month, day = match.group("year2", "month2", "day2")
        return dt.date(int(year), int(month), int(day))
    if match.group("month3") is not None:
        month, day = int(match.group("month3")), int(match.group("day3"))
        # Without a year: this year, unless that date has passed (then next year).
        year = today.year + 1 if (month, day) < (today.month, today.day) else today.year
        return dt.date(year, month, day)
    relative = match.group("relative")
    if relative is not None:
        return today + dt.timedelta(days=_RELATIVE_DAYS[relative])
    weekday = _WEEKDAYS[match.group("weekday")]
    week = match.group("week")
    if week is None:  # the coming one, today included
        return today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    monday = today - dt.timedelta(days=today.weekday())
    return monday + dt.timedelta(days=7 * _WEEK_OFFSETS[week] + weekday)


def _deadline_time(match: re.Match[str]) -> dt.time | None:
    """The time of day of a deadline match (17:30 when none is given)."""
    hour_text = match.group("hour")
    if hour_text is None:
        return DEFAULT_DEADLINE_TIME
    hour = int(hour_text)
    ampm = match.group("ampm")
    if (ampm in _AFTERNOON and hour < 12) or (ampm == "中午" and hour < 11):
        hour += 12
    minute_text = match.group("minute") or match.group("minute2")
    minute = 30 if match.group("half") else int(minute_text or 0)
    second = int(match.group("second") or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return dt.time(hour, minute, second)


def _offset(text: str) -> dt.timezone | None:
    """A fixed UTC offset from z, +08:00 or -0530."""
    if text == "z":
        return dt.UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        return None
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if text[0] == "-" else delta)


# Every intent needs one of these: an ack or "not received" word (收/阅/悉) or a mention (@)
# or a slash anywhere, or a command word at the start. Chatter has none of them, and is
# settled by one regex search instead of a full parse (the local group's ingest path runs
# this for every message).
_MAYBE = re.compile(
    r"[/／@＠收阅悉]|^\W*(?:、|"
    + "|".join(sorted(set(_ZH_WORDS) | set(_EN_WORDS), key=len, reverse=True))
    + ")",
    re.IGNORECASE,
)


def could_be_command(text: str) -> bool:
    """False only when parse(text) is surely Intent.NONE and not addressed (a fast filter)."""
    head = text[:MAX_CHARS]
    if _MAYBE.search(head):
        return True
    if head.isascii():
        return False
    folded = unicodedata.normalize("NFKC", head)
    return folded != head and _MAYBE.search(folded) is not None


def worth_processing(text: str, bot_names: Sequence[str]) -> bool:
    """Whether a group message from a known person is a command or addresses the bot (what
    is not, is chatter: stored where the platform keeps it, never processed)."""
    if not could_be_command(text):
        return False
    command = parse(text, bot_names=tuple(bot_names))
    return command.intent is not Intent.NONE or command.addressed
