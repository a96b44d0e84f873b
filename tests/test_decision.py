"""Decision: what the app and the audit record read of one request."""

from __future__ import annotations

import json

from guardrail.decision import Decision
from guardrail.identity import Subject
from guardrail.inspection import parse_request
from guardrail.metering import CHAT

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 9}


def _decision() -> Decision:
    return Decision("req", "inference", Subject(None, None, "203.0.113.7", "203.0.113.0/24"))


def test_an_inspected_body_reads_as_parse_request_reads_it() -> None:
    raw = json.dumps(BODY).encode()
    decision = _decision()
    assert decision.request is None  # nothing inspected
    decision.inspected(raw, CHAT)
    request = decision.request
    assert request == parse_request(raw, CHAT)
    assert request is not None and request.prompt == "hello there" and request.max_tokens == 9
    assert decision.request is request  # parsed once


def test_a_request_set_replaces_one_inspected_and_not_yet_read() -> None:
    decision = _decision()
    decision.inspected(json.dumps(BODY).encode(), CHAT)
    decision.request = None  # e.g. the head of a body too large, read by parse_head
    assert decision.request is None
    decision.inspected(b"not json", CHAT)
    assert decision.request is None
