"""hCaptcha: its widget and test keys. Its siteverify is spoken by ``captcha.Siteverify``, not
by the PyPI package named ``hcaptcha``, which logs the secret, returns a truthy value on
failure, has no timeout and a fixed endpoint."""

from __future__ import annotations

from guardrail.actions.captcha import Provider

HCAPTCHA = Provider(
    name="hcaptcha",
    title="hCaptcha",
    field="h-captcha-response",
    script="https://js.hcaptcha.com/1/api.js",
    widget="h-captcha",
    sources="https://hcaptcha.com https://*.hcaptcha.com",
    test_sitekeys=frozenset({"10000000-ffff-ffff-ffff-000000000001"}),
)
