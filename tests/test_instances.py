"""instances.py: two started guardrails writing one audit file are told of, once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from helpers import build


def forks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "two guardrails" in r.getMessage()]


async def test_a_second_guardrail_on_one_trail_is_warned_of(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = build(tmp_path, clock), build(tmp_path, clock)
    with caplog.at_level(logging.WARNING, "guardrail"):
        await first.startup()
        await first.startup()  # the same one again: not a second writer
        assert forks(caplog) == []
        await second.startup()
        [said] = forks(caplog)
        assert str(tmp_path / "audit.jsonl") in said
        assert "app = Guardrail(app, policy=...)" in said
        await first.shutdown()
        await second.shutdown()
        third = build(tmp_path, clock)  # the others are gone: the trail is its alone
        await third.startup()
        await third.shutdown()
    assert len(forks(caplog)) == 1


async def test_guardrails_on_trails_of_their_own_are_not_warned_of(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    guards = [build(tmp_path / "a", clock), build(tmp_path / "b", clock)]
    with caplog.at_level(logging.WARNING, "guardrail"):
        for guard in guards:
            await guard.startup()
        for guard in guards:
            await guard.shutdown()
    assert forks(caplog) == []
