from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from guardrail.audit.record import GENESIS, encode, format_ts, link, parse_ts


def test_format_ts_is_utc_with_milliseconds() -> None:
    assert format_ts(1_795_874_400.123) == "2026-11-28T14:00:00.123Z"
    assert format_ts(1_795_874_400) == "2026-11-28T14:00:00.000Z"
    # rounds into the next second rather than printing .1000
    assert format_ts(1_795_874_399.9996) == "2026-11-28T14:00:00.000Z"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_format_and_parse_agree_to_the_millisecond(epoch: float) -> None:
    assert abs(parse_ts(format_ts(epoch)) - epoch) <= 0.0005 + 1e-6


def test_encode_is_compact_ordered_and_keeps_unicode() -> None:
    record = {"z": 1, "a": {"ip": "203.0.113.7"}, "path": "/v1/chat/ünïcode/✓", "emoji": "🛡️"}
    line = encode(record)
    assert line == '{"z":1,"a":{"ip":"203.0.113.7"},"path":"/v1/chat/ünïcode/✓","emoji":"🛡️"}'
    assert "\n" not in line
    assert json.loads(line) == record
    assert list(json.loads(line)) == ["z", "a", "path", "emoji"]


@given(st.dictionaries(st.text(), st.text() | st.integers() | st.none()))
def test_encode_round_trips_any_text(record: dict[str, object]) -> None:
    line = encode(record)
    assert "\n" not in line  # one record per line, whatever the strings hold
    assert json.loads(line) == record


def test_encode_escapes_a_lone_surrogate_so_the_line_is_utf8() -> None:
    record = {"path": "/v1/\udce9", "q": "a\\\udc80b", "é": "✓"}
    line = encode(record)
    assert line == '{"path":"/v1/\\udce9","q":"a\\\\\\udc80b","é":"✓"}'
    assert json.loads(line.encode("utf-8")) == record  # valid UTF-8, reads back the same
    assert link(line) == link(line.encode("utf-8"))


@given(st.dictionaries(st.text(st.characters(codec=None)), st.text(st.characters(codec=None))))
def test_encode_is_valid_utf8_json_whatever_the_strings_hold(record: dict[str, str]) -> None:
    line = encode(record)
    data = line.encode("utf-8")  # never raises: lone surrogates are escaped
    assert "\n" not in line
    assert len(json.loads(data)) == len(record)


def test_link_is_sha256_of_the_utf8_line() -> None:
    line = encode({"path": "/é"})
    assert link(line) == "sha256:" + hashlib.sha256(line.encode("utf-8")).hexdigest()
    assert link(line.encode("utf-8")) == link(line)
    assert GENESIS == "sha256:" + "0" * 64
