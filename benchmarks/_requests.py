"""What the benchmarks send: 1 KB chat bodies (overhead.py's and load.py's), and load.py's
request stream, which its two generators (wrk's script, _loadgen.py) send alike. Light on
imports, so that a generator process starts at once."""

from __future__ import annotations

import json
import random

PATH = "/v1/chat/completions"


def chat_bodies(count: int = 20000) -> list[bytes]:
    """``count`` OpenAI chat bodies, each a 1 KB prompt of random words (seeded: the same
    bodies in every run)."""
    rng = random.Random(1)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(3000)
    ]
    bodies = []
    for _ in range(count):
        text = " ".join(rng.choices(words, k=160))[:1024]
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
        bodies.append(json.dumps(body).encode())
    return bodies


#: Different prompts each identity sends in turn, as in overhead.py.
PROMPTS_PER_KEY = 16


def keys(count: int) -> list[str]:
    return [f"Bearer sk-bench-{i:04d}" for i in range(count)]


def stream(count: int) -> list[tuple[str, bytes]]:
    """The requests every generator sends, in order: ``count`` identities taking turns, each
    sending 16 different 1 KB prompts in turn. (Authorization, body) pairs."""
    bodies = chat_bodies(count * PROMPTS_PER_KEY)
    names = keys(count)
    return [(names[i % count], body) for i, body in enumerate(bodies)]
