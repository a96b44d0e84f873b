"""Campaign benchmark: the ``guardrail simulate`` run as a script, for make-style use.

    .venv/bin/python benchmarks/campaign.py --seed 1 [--days 2] [--scale 1] [--json]

Seeded benign users and distillation campaigns go through the real middleware wrapping the
example OpenAI-compatible app, on a simulated clock; prints, per population, what was served,
limited, throttled, challenged and blocked, and the wall time. Same options and output as
``guardrail simulate`` (run from the repository root, where the example app and policy are).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from guardrail.simulate import command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
