"""Names, ids and departments as readers see them: what is refused, what is kept, how names
compare (issue 13, item 7)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.readable import UnsafeText, clean, first_refused, name_key, refused, taken

# The characters the issue names: bidi controls, zero-width characters, the BOM.
BIDI = [
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
# Others that hide text: soft hyphen, a tag character, NUL, a line separator, a Hangul filler.
OTHERS = ["\u00ad", "\U000e0041", "\x00", "\x07", "\u2028", "\u3164", "\u034f"]

IDEOGRAPHS = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK unified ideographs
    st.characters(min_codepoint=0x3400, max_codepoint=0x4DBF),  # extension A
    st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF),  # extension B
)
# What real Chinese names and departments are written with, besides ideographs: the middle
# dots of transliterated names, full-width letters and digits, brackets, the ideographic space,
# and an ideographic variation selector after an ideograph (a registered glyph variant).
EXTRAS = st.sampled_from(["·", "・", "〇", "（", "）", "ｗ", "Ａ", "１", "\u3000", " ", "-"])
CJK_NAME = st.lists(
    st.one_of(
        IDEOGRAPHS,
        IDEOGRAPHS.map(lambda c: c + chr(0xE0100)),
        EXTRAS,
    ),
    min_size=1,
    max_size=12,
).map("".join)
HIDING = st.one_of(
    st.sampled_from(BIDI + ZERO_WIDTH + OTHERS),
    st.characters(categories=["Cf"]),
)


@pytest.mark.parametrize("char", BIDI + ZERO_WIDTH + OTHERS, ids=lambda c: f"U+{ord(c):04X}")
def test_characters_that_hide_or_reorder_text_are_refused(char: str) -> None:
    with pytest.raises(UnsafeText) as info:
        clean(f"王{char}五")
    assert info.value.position == 2
    assert info.value.code_point == f"U+{ord(char):04X}"
    assert info.value.char_name  # a name to show, e.g. RIGHT-TO-LEFT OVERRIDE
    assert taken(f"王{char}五", ["王五"])  # and a name that smuggles one in reads as the plain one


def test_what_is_kept_is_stripped_and_in_nfc() -> None:
    assert clean("  王五 ") == "王五"
    assert clean("Jose\u0301") == "Jos\u00e9"  # composed
    assert clean("基础教育科（二）") == "基础教育科（二）"
    assert clean("") == ""


@settings(max_examples=400, deadline=None, database=None)
@given(name=CJK_NAME)
def test_chinese_names_and_departments_are_kept_as_written(name: str) -> None:
    assert first_refused(name) is None
    assert clean(name) == name.strip()


@settings(max_examples=400, deadline=None, database=None)
@given(name=CJK_NAME.filter(lambda n: len(n.strip()) >= 2), char=HIDING, data=st.data())
def test_a_hidden_character_anywhere_inside_is_refused_where_it_is(
    name: str, char: str, data: st.DataObject
) -> None:
    inner = name.strip()
    at = data.draw(st.integers(min_value=1, max_value=len(inner) - 1))
    with pytest.raises(UnsafeText) as info:
        clean(inner[:at] + char + inner[at:])
    assert (info.value.char, info.value.position) == (char, at + 1)


@settings(max_examples=500, deadline=None, database=None)
@given(text=st.text(max_size=30))
def test_any_text_is_either_refused_naming_its_character_or_kept_safe(text: str) -> None:
    try:
        kept = clean(text)
    except UnsafeText as exc:
        assert text.strip()[exc.position - 1] == exc.char
        assert refused(exc.char)
        assert first_refused(text.strip()[: exc.position - 1]) is None  # the first one
        return
    assert not any(refused(c) for c in kept)
    assert kept == unicodedata.normalize("NFC", kept) == kept.strip()
    assert clean(kept) == kept


@settings(max_examples=300, deadline=None, database=None)
@given(name=CJK_NAME, gaps=st.lists(st.sampled_from([" ", "\u3000", "\t"]), max_size=3))
def test_names_compare_as_they_read(name: str, gaps: list[str]) -> None:
    spaced = "".join(gaps) + " ".join(name) + "".join(gaps)
    assert name_key(spaced) == name_key(name)
    assert taken(spaced, ["张三", name])


def test_names_compare_across_width_and_case_but_not_across_characters() -> None:
    assert name_key("ＷＡＮＧ Wu") == name_key("wangwu")
    assert taken("王 五", ["张三", "王五"])
    assert not taken("王伍", ["王五"])  # a different character is a different name
    assert not taken("王五六", ["王五"])
