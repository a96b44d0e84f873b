"""``guardrail simulate``: seeded, reproducible traffic of benign users and distillation
campaigns, driven through the real middleware on a simulated clock.

Why: guardrail must stop campaigns (many sybil accounts, each under its limits, spread over
subnets, sending templated prompts that elicit reasoning) without punishing real users. The
simulator measures both sides, per population, in minutes of wall time for days of traffic.

- ``populations``: who sends what, when (``stream(seed, days, scale)``);
- ``runner``: the ASGI driver (``simulate(app, policy, config, audit=…)``);
- ``report``: the numbers, the table and the JSON;
- ``command``: the ``guardrail simulate`` command line.

Nothing is imported here, so that the command line stays cheap to start.
"""
