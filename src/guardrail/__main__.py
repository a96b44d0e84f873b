"""``python -m guardrail`` is the ``guardrail`` command."""

from guardrail.cli import main

raise SystemExit(main())
