"""Suspect texts from files: what ``guardrail trace find`` reads.

- ``*.jsonl``: one JSON object a line: ``{"text": ...}``, an OpenAI chat completion
  (``choices[].message.content``), or a chat row (``{"messages": [...]}``, whose assistant
  messages are the texts); blank lines are skipped.
- ``*.json``: one such object, or a list of them.
- any other file: plain text, the whole file one text (answers have blank lines of their own,
  so blank lines do not separate texts; use JSONL for many texts in one file).
- a directory: its ``.jsonl``, ``.json``, ``.txt`` and ``.md`` files, recursively, sorted.

A line that is not JSON, or an object with no text where one is expected, is refused with
its file and line: a dataset read wrongly would attribute nothing and say so with
confidence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from guardrail.errors import ProvenanceError

_READ_IN_DIRECTORIES = {".jsonl", ".json", ".txt", ".md"}


def read(paths: list[str]) -> Iterator[str]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix in _READ_IN_DIRECTORIES:
                    yield from _file(child)
        elif path.exists():
            yield from _file(path)
        else:
            raise ProvenanceError("no such file or directory", name)


def _file(path: Path) -> Iterator[str]:
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvenanceError(f"cannot read: {exc}", str(path)) from exc
    if path.suffix == ".jsonl":
        for number, line in enumerate(content.splitlines(), 1):
            if line.strip():
                yield from _texts(_json(line, f"{path}:{number}"), f"{path}:{number}")
    elif path.suffix == ".json":
        data = _json(content, str(path))
        for item in data if isinstance(data, list) else [data]:
            yield from _texts(item, str(path))
    elif content.strip():
        yield content


def _json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProvenanceError(f"not JSON: {exc}", where) from exc


def _texts(item: object, where: str) -> Iterator[str]:
    if isinstance(item, str):
        yield item
        return
    if not isinstance(item, dict):
        raise ProvenanceError(f"expected an object with a text, got {type(item).__name__}", where)
    if isinstance(item.get("text"), str):
        yield item["text"]
    elif isinstance(item.get("choices"), list):
        for choice in item["choices"]:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                yield from _content(message.get("content"))
    elif isinstance(item.get("messages"), list):
        for message in item["messages"]:
            if isinstance(message, dict) and message.get("role") == "assistant":
                yield from _content(message.get("content"))
    else:
        raise ProvenanceError('no "text", "choices" or "messages" field', where)


def _content(content: object) -> Iterator[str]:
    """A message's content: a string, or a list of parts whose text parts are kept."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        parts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        if parts:
            yield "\n".join(parts)
