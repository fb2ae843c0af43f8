"""People's names, ids and department names as readers see them (pure).

A name is shown to people who decide by it whom they are talking to, so it must read as what it
is. `clean` refuses the characters that hide or reorder text (Unicode bidirectional controls,
zero-width and other format characters, control characters, and a few letters that render as
nothing) and returns the rest stripped and in NFC. `name_key` is how two names are compared when
a newcomer must not take a name the directory already has.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

# Format (Cf: the bidi controls U+061C, U+200E/F, U+202A-E, U+2066-9, the zero-width U+200B-D,
# U+2060, U+FEFF, soft hyphen, tag characters …), control (Cc), surrogate (Cs), and line and
# paragraph separators (Zl, Zp). Letters, marks, digits, punctuation, symbols and spaces of
# every script are allowed: CJK ideographs (Lo), their variation selectors (Mn), full-width forms
# and the ideographic space (Zs) included. Private-use characters (Co) are allowed too: some
# GB18030 text maps rare ideographs there.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Not format characters, but rendered as nothing in common fonts: the combining grapheme joiner,
# the Hangul fillers, the Khmer inherent vowels and the Braille blank.
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
CATEGORY_NAMES = {"Cc": "control", "Cf": "format", "Cs": "surrogate"}  # for the unnamed ones


class UnsafeText(ValueError):
    """A character that hides or reorders text, where a name, an id or a department is given."""

    def __init__(self, char: str, position: int) -> None:
        self.char = char
        self.position = position  # 1-based, in the text as given
        super().__init__(f"{self.code_point} ({self.char_name}) at character {position}")

    @property
    def code_point(self) -> str:
        """The character as U+XXXX."""
        return f"U+{ord(self.char):04X}"

    @property
    def char_name(self) -> str:
        """The character's Unicode name ("<control>" for a control character, as the Unicode
        data file names them)."""
        category = unicodedata.category(self.char)
        return unicodedata.name(self.char, f"<{CATEGORY_NAMES.get(category, category)}>")


def refused(char: str) -> bool:
    """Whether a character hides or reorders text (never a letter, digit or space of a
    script: see REFUSED_CATEGORIES)."""
    return char in INVISIBLE or unicodedata.category(char) in REFUSED_CATEGORIES


def first_refused(text: str) -> UnsafeText | None:
    """The first refused character of a text, if any."""
    for index, char in enumerate(text):
        if refused(char):
            return UnsafeText(char, index + 1)
    return None


def clean(text: str) -> str:
    """The text stripped and in NFC; UnsafeText for the first character that hides or
    reorders text (its position counted in the stripped text)."""
    stripped = text.strip()
    problem = first_refused(stripped)
    if problem is not None:
        raise problem
    return unicodedata.normalize("NFC", stripped)


@functools.lru_cache(maxsize=8192)  # the directory's names, compared again at each newcomer
def name_key(name: str) -> str:
    """How a name reads: compatibility forms folded (full-width ｗａｎｇ is wang), case folded,
    whitespace and refused characters ignored (王 五 and 王\u200b五 are 王五)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(c for c in folded if not c.isspace() and not refused(c))


def taken(name: str, names: Iterable[str]) -> bool:
    """Whether a name reads as one of `names`."""
    key = name_key(name)
    return any(name_key(other) == key for other in names)
