from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from guardrail.audit.record import (
    GENESIS,
    MAX_METHOD,
    MAX_PATH,
    MAX_SUBJECT,
    clip,
    decision_record,
    encode,
    format_ts,
    link,
    parse_ts,
)
from guardrail.decision import Decision
from guardrail.identity import Subject
from guardrail.policy import Policy


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


def test_clip_keeps_short_text_and_marks_what_it_cut() -> None:
    assert clip("/v1/chat", 16) == "/v1/chat"
    cut = clip("a" * 1000 + "b", 16)
    digest = hashlib.sha256(("a" * 1000 + "b").encode()).hexdigest()[:16]
    assert cut == "a" * 16 + f"…[1001 chars, sha256:{digest}]"
    assert clip("a" * 1000 + "c", 16) != cut  # two cut values are still told apart
    assert clip("\udce9" * 40, 4).startswith("\udce9" * 4 + "…[40 chars")  # a lone surrogate


@given(st.text(st.characters(codec=None), max_size=3000), st.text(max_size=300))
def test_a_decision_record_is_bounded_whatever_the_client_sends(path: str, account: str) -> None:
    policy = Policy.from_string("version: 1\n")
    subject = Subject("k:" + "a" * 32, account * 50, "203.0.113.7", "203.0.113.0/24")
    decision = Decision("req", "inference", subject, action="limit")
    scope = {"type": "http", "method": "X" * 5000, "path": "/" + path * 3}
    line = encode(decision_record(policy, scope, decision, 1_795_874_400.0, 429))
    record = json.loads(line)
    bound = 6 * (MAX_PATH + MAX_METHOD + 4 * MAX_SUBJECT) + 6 * 50 + 1000  # markers, the rest
    assert len(line.encode("utf-8")) < bound
    assert record["path"] == clip("/" + path * 3, MAX_PATH)
    assert record["method"] == clip("X" * 5000, MAX_METHOD)
    assert record["subject"]["account"] == clip(account * 50, MAX_SUBJECT)
