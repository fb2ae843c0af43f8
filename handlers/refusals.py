"""The one place where refusals become short localized replies."""

from __future__ import annotations

from collections.abc import Mapping

from bot.core.i18n import Translator
from storage.errors import DomainError


def domain_message(
    t: Translator,
    error: DomainError,
    *,
    names: Mapping[str, str] | None = None,
    me: str | None = None,
) -> str:
    """A domain error as one localized sentence.

    With ``names`` (directory id to name), a person the error names is shown by name, and as
    "you" when it is ``me``, the reader: chat users never see directory ids.
    """
    params = dict(error.params)
    person_id = params.get("person_id")
    if names is not None and isinstance(person_id, str):
        if person_id == me and t.has(f"error.{error.code}_self"):
            return t(f"error.{error.code}_self", **params)
        params["person_id"] = names.get(person_id, person_id)
    if "state" in params:
        prefix = "notice_state" if error.code == "notice_closed" else "state"
        params["state_label"] = t(f"{prefix}.{params['state']}")
    if error.code == "not_allowed" and "needs" in params:
        params["needs"] = t("list.separator").join(
            t(f"role.{role}") for role in str(params["needs"]).split("|")
        )
    if error.code == "invalid_value":
        # The field and the reason in the reader's language, never the English sentence.
        field = str(params.get("field", ""))
        params["field"] = t(f"field.{field}") if t.has(f"field.{field}") else field
        if "outbox_state" in params:
            params["state_label"] = t(f"outbox_state.{params['outbox_state']}")
        params["reason"] = t(f"invalid.{params.get('why', 'other')}", **params)
    params.setdefault("message", str(error))
    return t(f"error.{error.code}", **params)


class Refusal(Exception):
    """A handler's own refusal (a missing id, an unknown name): a reply, and nothing changes."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params
