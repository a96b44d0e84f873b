"""Prometheus metrics (``guardrail[metrics]``, the ``metrics:`` policy section).

``NO_METRICS`` is what everything holds while metrics are off: its methods do nothing (the
allowed request's path reads ``enabled`` instead of calling one), and prometheus-client is never
imported.
``Prometheus`` holds the instruments. Every label value comes from the policy or from guardrail
itself (route, action, tier, challenge kind, storage operation), never from a client: a
subject, a key or a path would make a series per client.

Served on ``metrics.path`` by the middleware (``serve``), or registered in prometheus-client's
default registry for the app to expose (``registry: app``). With several worker processes,
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the workers
start) keeps each worker's values in a file of that directory, and a scrape of any worker
adds them up (``MultiProcessCollector``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import weakref
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from starlette.types import Scope, Send

from guardrail.actions.problem import send_problem
from guardrail.errors import GuardrailError

if TYPE_CHECKING:
    from guardrail.audit.writer import AuditLog
    from guardrail.decision import Decision
    from guardrail.policy import MetricsConfig

__all__ = ["NO_METRICS", "Metrics", "MetricsError", "Prometheus", "metrics_for"]

#: The risk score runs 0-100; thresholds usually sit at round numbers.
SCORE_BUCKETS = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
#: Seconds at most between a decision and its count in prometheus-client (a scrape of this
#: worker counts it at once; another worker's, in multiprocess mode, within this).
FLUSH_AFTER = 1.0
#: A Redis round trip: from a local socket's tenth of a millisecond to a timeout.
STORAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class MetricsError(GuardrailError):
    """The policy turns metrics on and prometheus-client is not installed."""


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when the environment sets one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Metrics off: every event is dropped. ``Prometheus`` overrides each method."""

    enabled = False

    def decided(self, decision: Decision) -> None:
        """One request decided (any action), with its risk score when it was scored."""

    def storage_error(self, breaker_open: bool) -> None:
        """A request met a storage error (``breaker_open``: Redis was not even called)."""

    def storage_call(self, operation: str, seconds: float) -> None:
        """A Redis call through the breaker took ``seconds``."""

    def breaker(self, is_open: bool) -> None:
        """The storage breaker opened or closed."""

    def watch(self, log: AuditLog) -> None:
        """Count what ``log`` writes and loses, and its queue."""

    def audited(self, log: AuditLog) -> None:
        """The audit writer finished a batch: its counts and queue, read off ``log``."""

    def challenge(self, event: str, kind: str) -> None:
        """A challenge ``issued``, ``passed`` or ``failed``; ``kind``: pow, hcaptcha, turnstile."""

    def tokens(self, event: str, route: str, count: int) -> None:
        """``count`` tokens ``reserved`` at admission or ``settled`` from the response."""

    async def serve(self, scope: Scope, send: Send, client: str, request_id: str) -> None:
        raise AssertionError("metrics are off: nothing serves them")  # the path is None

    def close(self) -> None:
        """At shutdown."""


NO_METRICS = Metrics()


class Prometheus(Metrics):
    """The instruments, in a registry of their own (served on ``path``) or in
    prometheus-client's default one (``registry: app``)."""

    enabled = True

    def __init__(self, config: MetricsConfig) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise MetricsError(
                "the policy turns metrics on (metrics.enabled: true) and prometheus-client is "
                "not installed: pip install 'guardrail[metrics]'"
            ) from exc
        self._client = prometheus_client
        self.networks = tuple(config.allow_from)
        if config.registry == "app":
            self.registry = prometheus_client.REGISTRY
            self._m = _shared(prometheus_client)
            _FLUSHER.metrics.add(self)  # the app's scrapes count the tallies too
        else:
            self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
            self._m = _Instruments(prometheus_client, self.registry)
        # Decisions and scores are tallied in plain Python and handed to prometheus-client
        # at most FLUSH_AFTER seconds later, and before each scrape (``flush``): a counter's
        # inc takes a lock, a histogram's observe two and a loop; a dict's count is a fraction
        # of that, on a request path that may gain 3 µs at most (issue 16).
        self._children: dict[tuple[str, str, str | None], Any] = {}
        self._tally: dict[tuple[str, str, str | None], int] = {}
        self._scores: list[float] = []
        self._due = False  # a flush is scheduled
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that tallies
        self._audit_seen = (0, 0)  # the audit log's written and lost counts, last read
        self._log: AuditLog | None = None

    def decided(self, decision: Decision) -> None:
        key = (decision.action, decision.route, decision.tier)
        tally = self._tally
        tally[key] = tally.get(key, 0) + 1
        if decision.assessment is not None:
            self._scores.append(decision.score)
        if not self._due:
            self._due = True
            self._loop = asyncio.get_running_loop()
            self._loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Hand the tallies to prometheus-client (where, in multiprocess mode, the other
        workers' scrapes read them)."""
        self._due = False
        tally, self._tally = self._tally, {}
        for key, count in tally.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._m.decisions.labels(*key[:2], key[2] or "")
            child.inc(count)
        scores, self._scores = self._scores, []
        if scores:
            _observe_all(self._m.score, scores)

    def storage_error(self, breaker_open: bool) -> None:
        self._m.storage_errors.labels("breaker_open" if breaker_open else "error").inc()

    def storage_call(self, operation: str, seconds: float) -> None:
        self._m.storage_seconds.labels(operation).observe(seconds)

    def breaker(self, is_open: bool) -> None:
        self._m.breaker_open.set(1 if is_open else 0)

    def watch(self, log: AuditLog) -> None:
        # Read after each batch the writer finishes, and at each scrape (losses with no batch
        # after them: a full queue, a closed log).
        self._log = log
        log.after_batch = self.audited

    def audited(self, log: AuditLog) -> None:
        m = self._m
        written, lost = log.written, log.lost
        seen_written, seen_lost = self._audit_seen
        if written > seen_written:
            m.audit_written.inc(written - seen_written)
        if lost > seen_lost:
            m.audit_dropped.inc(lost - seen_lost)
        self._audit_seen = (written, lost)
        m.audit_queue.set(log.queued)

    def challenge(self, event: str, kind: str) -> None:
        self._m.challenges.labels(event, kind).inc()

    def tokens(self, event: str, route: str, count: int) -> None:
        counter = self._m.reserved if event == "reserved" else self._m.settled
        counter.labels(route).inc(count)

    async def serve(self, scope: Scope, send: Send, client: str, request_id: str) -> None:
        """``GET path``: the exposition, to a ``client`` address (as the identity section
        resolves it: behind trusted proxies, the one they name) in ``allow_from``; 403 to
        others, 405 to other methods."""
        headers = [(b"guardrail-request-id", request_id.encode())]
        if not _allowed(client, self.networks):
            detail = "metrics are served to the networks metrics.allow_from lists only"
            await _refuse(send, 403, detail, request_id, headers)
            return
        if scope["method"] not in ("GET", "HEAD"):
            headers.append((b"allow", b"GET, HEAD"))
            await _refuse(send, 405, "GET the metrics here", request_id, headers)
            return
        self.flush()
        if self._log is not None:
            self.audited(self._log)
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        # Off the event loop: in multiprocess mode a scrape reads every worker's file.
        body, content_type = await asyncio.to_thread(self.exposition, accept)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The text a scrape gets, and its content type (OpenMetrics when ``accept`` asks)."""
        client = self._client
        registry = self.registry
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        encoder, content_type = client.exposition.choose_encoder(accept)
        return encoder(registry), content_type

    def close(self) -> None:
        """At shutdown: the last tallies; in multiprocess mode this worker's live gauges
        leave the sums."""
        self.flush()
        if multiprocess_dir():
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def metrics_for(config: MetricsConfig) -> Metrics:
    return Prometheus(config) if config.enabled else NO_METRICS


class _Instruments:
    def __init__(self, client: Any, registry: Any) -> None:
        def counter(name: str, doc: str, *labels: str) -> Any:
            return client.Counter(name, doc, labels, registry=registry)

        self.decisions = counter(
            "guardrail_decisions", "Requests decided, by action, route and tier", *_DECISION
        )
        self.score = client.Histogram(
            "guardrail_risk_score",
            "Risk scores of the requests the engine scored (0-100)",
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.storage_seconds = client.Histogram(
            "guardrail_storage_seconds",
            "Redis calls through the storage breaker, by operation",
            ["operation"],
            buckets=STORAGE_BUCKETS,
            registry=registry,
        )
        self.storage_errors = counter(
            "guardrail_storage_errors",
            "Storage errors met by requests (breaker_open: Redis skipped, the breaker open)",
            "reason",
        )
        # One worker's breaker open is enough to say Redis is failing: the largest live value.
        self.breaker_open = client.Gauge(
            "guardrail_storage_breaker_open",
            "1 while the storage breaker is open (Redis not called), else 0",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.audit_queue = client.Gauge(
            "guardrail_audit_queue_depth",
            "Audit records queued, not yet written (after the writer's last batch)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.audit_written = counter("guardrail_audit_records_written", "Audit records written")
        self.audit_dropped = counter(
            "guardrail_audit_records_dropped",
            "Audit records lost (queue full, sink failing, closed); the trail says dropped: N",
        )
        self.challenges = counter(
            "guardrail_challenges", "Challenges issued, passed and failed, by kind", "event", "kind"
        )
        self.reserved = counter(
            "guardrail_tokens_reserved", "LLM tokens reserved at admission, by route", "route"
        )
        self.settled = counter(
            "guardrail_tokens_settled",
            "LLM tokens the reservations were settled to (what the responses used), by route",
            "route",
        )


def _observe_all(histogram: Any, values: list[float]) -> None:
    """``histogram.observe`` of each value, a bucket's count added at once: observe's own
    steps (prometheus-client keeps per-bucket counts, not cumulative, and the sum)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another version: one at a time
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value; +Inf is the last
    total.inc(math.fsum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


_DECISION = ("action", "route", "tier")
_SHARED_INSTRUMENTS: list[_Instruments] = []


class _Flusher:
    """A collector of the default registry that collects nothing: it flushes the tallies of
    every middleware counting there, so that the app's own scrape (made on the event loop,
    as prometheus-client's ASGI app does) sees every decision. From another thread (its
    start_http_server) it leaves them to the timer: the tallies belong to the loop."""

    def __init__(self) -> None:
        self.metrics: weakref.WeakSet[Prometheus] = weakref.WeakSet()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return []
        for metrics in list(self.metrics):
            if metrics._loop is loop:
                metrics.flush()
        return []


_FLUSHER = _Flusher()


def _shared(client: Any) -> _Instruments:
    """The default registry's instruments: one set per process, however many middlewares
    (registering a name twice there is an error). The flusher comes first: a registry
    collects in the order it was given its collectors."""
    if not _SHARED_INSTRUMENTS:
        client.REGISTRY.register(_FLUSHER)
        _SHARED_INSTRUMENTS.append(_Instruments(client, client.REGISTRY))
    return _SHARED_INSTRUMENTS[0]


def _allowed(client: str | None, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:  # a unix socket, an opaque name: no network holds it
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


async def _refuse(
    send: Send, status: int, detail: str, request_id: str, headers: list[tuple[bytes, bytes]]
) -> None:
    title = "Forbidden" if status == 403 else "Method Not Allowed"
    await send_problem(
        send,
        status,
        problem="metrics-refused",
        title=title,
        detail=detail,
        error_type="invalid_request_error",
        request_id=request_id,
        headers=headers,
    )
