"""Risk signals: what each measures (``catalog``), how it is read from a request
(``features``, ``sketch``), its value per identity (``behaviour``) and across identities
(``cohort``), the state kept between requests (``state``), and the engine that scores."""

from guardrail.signals.catalog import SIGNALS, SignalInfo

__all__ = ["SIGNALS", "SignalInfo"]
