"""The one JSON reading every surface shares: no object may name a key twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.jsonbody import DuplicateKey, check_unique_keys, loads

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(VALUES)
def test_json_without_repeated_keys_reads_as_json_does(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False)
    assert loads(raw) == json.loads(raw)
    assert loads(raw.encode()) == value
    check_unique_keys(raw)


@given(st.dictionaries(st.text(max_size=4), VALUES, min_size=1), st.data())
def test_a_key_written_twice_at_any_depth_is_refused(
    obj: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    extra = json.dumps({key: "again"})[1:-1]
    raw = json.dumps(obj)[:-1] + ", " + extra + "}"
    nested = json.dumps({"outer": [1, {"inner": json.loads(json.dumps(obj))}]})
    nested = nested[: nested.rindex("}}")] + ", " + extra + "}}" + nested[nested.rindex("}}") + 2 :]
    for text in (raw, nested):
        with pytest.raises(DuplicateKey) as exc:
            loads(text)
        assert exc.value.key == key
        with pytest.raises(DuplicateKey):
            check_unique_keys(text.encode())


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff", b"[" * 100_000])
def test_text_that_is_not_json_is_left_to_the_callers_parser(raw: bytes) -> None:
    check_unique_keys(raw)  # no DuplicateKey: the endpoint answers invalid_json itself
    with pytest.raises(ValueError):
        loads(raw)
