"""Message catalogs (zh-CN default, en) and the translator used by every user-facing surface."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from bot.core.i18n import en, zh_cn

CATALOGS: Mapping[str, Mapping[str, str]] = {"zh-CN": zh_cn.MESSAGES, "en": en.MESSAGES}
DEFAULT_LANGUAGE = "zh-CN"


class _Lenient(dict[str, Any]):
    """Leave an unknown placeholder visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Translator:
    """Looks up and formats messages for one language, falling back to zh-CN."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = language if language in CATALOGS else DEFAULT_LANGUAGE
        self._catalog = CATALOGS[self.language]
        self._fallback = CATALOGS[DEFAULT_LANGUAGE]

    def __call__(self, key: str, /, **params: Any) -> str:
        """The message for key, formatted with params (the key itself if it is unknown)."""
        template = self._catalog.get(key) or self._fallback.get(key)
        if template is None:
            return key
        return string.Formatter().vformat(template, (), _Lenient(params))

    def has(self, key: str) -> bool:
        """Whether key is in this language's catalog."""
        return key in self._catalog
