"""How `dead-letters show` prints what Kafka allows: any bytes as key, value, header value or record field, shown as
text or hex, bounded, never an error."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bridge.deadletters.records import DeadLetter
from bridge.deadletters.show import RAW_LIMIT, Judged, as_json, as_text

ANY = (
    st.none()
    | st.binary(max_size=64)
    | st.binary(min_size=RAW_LIMIT - 4, max_size=3 * RAW_LIMIT)
    | st.text(max_size=3 * RAW_LIMIT).map(str.encode)
)
"""Absent, short, longer than what is shown, or text (some of it multi-byte, cut inside a character)."""


def recovered(shown: dict[str, object], name: str) -> bytes | None:
    """The bytes a reader gets back from a shown field: its text, or its hex."""
    if f"{name}_hex" in shown:
        return bytes.fromhex(str(shown[f"{name}_hex"]))
    text = shown[name]
    return None if text is None else str(text).encode()


@given(key=ANY, value=ANY, header_values=st.lists(ANY, max_size=4))
def test_any_key_value_and_header_bytes_are_shown_as_text_or_hex_and_bounded(
    key: bytes | None, value: bytes | None, header_values: list[bytes | None]
) -> None:
    headers = [(f"h{i}", v) for i, v in enumerate(header_values)]
    letter = DeadLetter("dlq", 0, 7, 0, key, value, headers, "decode", "why", "src", 1, 2)
    undecoded = Judged(None, "not decoded (decode): garbage", None)

    shown = json.loads(json.dumps(as_json(letter, undecoded)))
    for original, back in [
        (key, recovered(shown, "key")),
        *((v, recovered(s[1], "value")) for v, s in zip(header_values, shown["headers"], strict=True)),
    ]:
        if original is None:
            assert back is None
        else:
            assert back is not None and original.startswith(back) and len(back) >= min(len(original), RAW_LIMIT) - 3
    if value is not None:
        back = recovered(shown, "raw_value")
        assert back is not None and value.startswith(back) and shown["value_bytes"] == len(value)

    text = as_text(letter, undecoded)
    assert ("  key      (none)" in text) == (key is None)
    lines = text.splitlines()
    assert all(len(line) <= 3 * RAW_LIMIT + 60 for line in lines), "every shown field is cut"
    assert len(lines) == 6 + len(headers) + (value is not None)


@given(field=st.binary(max_size=64))
def test_a_record_with_bytes_decimals_and_times_is_shown(field: bytes) -> None:
    letter = DeadLetter("dlq", 0, 0, 0, None, b"v", [], "invalid", "", "src", 0, 0)
    record = {"raw": field, "price": Decimal("-4.99000000"), "at": dt.datetime(2026, 12, 6, tzinfo=dt.UTC)}
    judged = Judged(record, "breaks a rule now (invalid): x", None)
    shown = json.loads(json.dumps(as_json(letter, judged)))
    assert shown["record"]["price"] == "-4.99000000" and shown["record"]["at"] == "2026-12-06T00:00:00+00:00"
    assert "raw_value" not in shown, "a decoded record is shown instead of its raw value"
    assert '"price": "-4.99000000"' in as_text(letter, judged)
