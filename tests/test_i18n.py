"""The message catalogs: same keys and placeholders in every language, and error coverage."""

from __future__ import annotations

import string

import storage.errors as errors
from bot.core.i18n import CATALOGS, Translator
from storage.types import AssignmentState, Channel, NoticeKind, NoticeState, Requires


def placeholders(template: str) -> set[str]:
    """The named fields of a format string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_catalogs_have_the_same_keys_and_placeholders() -> None:
    zh, en = CATALOGS["zh-CN"], CATALOGS["en"]
    assert set(zh) == set(en)
    for key in zh:
        assert placeholders(zh[key]) == placeholders(en[key]), key


def test_every_domain_error_and_enum_value_has_a_message() -> None:
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DomainError)
    }
    labels = (
        [f"error.{c}" for c in codes]
        + [f"state.{s.value}" for s in AssignmentState]
        + [f"notice_state.{s.value}" for s in NoticeState]
        + [f"kind.{k.value}" for k in NoticeKind]
        + [f"requires.{r.value}" for r in Requires]
        + [f"channel.{c.value}" for c in Channel]
    )
    for language in CATALOGS:
        t = Translator(language)
        assert [key for key in labels if not t.has(key)] == [], language


def test_translator_formats_falls_back_and_never_raises() -> None:
    t = Translator("en")
    assert t("error.unknown_notice", notice_id=12) == "There is no notice #12."
    assert Translator("fr")("error.unknown_notice", notice_id=3) == "没有编号为 #3 的通知。"
    assert t("no.such.key") == "no.such.key"
    assert t("error.unknown_notice") == "There is no notice #{notice_id}."
