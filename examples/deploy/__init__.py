"""One small app per framework, each guarded the way the README's "Deploying" section shows.

Serve any of them with uvicorn, Hypercorn or Daphne, e.g.
``GUARDRAIL_POLICY=examples/deploy/policy.yaml uvicorn examples.deploy.starlette_app:app``.
"""
