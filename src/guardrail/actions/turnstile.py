"""Cloudflare Turnstile: its widget and test keys (same siteverify protocol as hCaptcha)."""

from __future__ import annotations

from guardrail.actions.captcha import Provider

TURNSTILE = Provider(
    name="turnstile",
    title="Turnstile",
    field="cf-turnstile-response",
    script="https://challenges.cloudflare.com/turnstile/v0/api.js",
    widget="cf-turnstile",
    sources="https://challenges.cloudflare.com",
    test_sitekeys=frozenset(
        {"1x00000000000000000000AA", "2x00000000000000000000AB", "1x00000000000000000000BB"}
        | {"2x00000000000000000000BB", "3x00000000000000000000FF"}
    ),
)
