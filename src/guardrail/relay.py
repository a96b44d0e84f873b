"""The response on its way back, for requests with a token budget or a paced tier.

The relay is the ``send`` the app calls. It adds guardrail's headers to
``http.response.start`` (so streaming clients see the token headers before any body byte) and
passes the body on as it comes, reading what it needs without holding it:

- a JSON body is copied (up to ``JSON_COPY_MAX``) while it is forwarded, for its ``usage``;
- an event stream is forwarded a whole event at a time (sse.py): each event's output is
  counted, and its ``usage`` read, before it goes out. A paced stream waits between events on
  the injected ``sleep``; a stream that outgrows its reservation reserves more, and when the
  budget has none the stream ends with an error event and ``[DONE]`` instead of the event
  that did not fit. The app is then told what a server tells it when the client is gone:
  ``send`` raises (``StreamCut``, an ``OSError``) and ``receive`` says ``http.disconnect``.

The app is asked for an uncompressed response (``identity_scope``): a compressed body cannot
be counted or paced in passing. An app that compresses anyway is answered for with a 502
(enforce): a response guardrail cannot count is not served on a metered route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from guardrail.actions.problem import send_problem
from guardrail.budgets import Budget
from guardrail.deltas import Frame, frame, framed_tokens
from guardrail.metering import Meter, OpenAIMeter
from guardrail.sse import EventSplitter, data_of, error_event, payload

#: The most of a JSON response copied for its usage; a larger body keeps its reservation.
JSON_COPY_MAX = 4 * 1024 * 1024
#: Of a JSON body larger than that, its end is kept, where servers write ``usage``.
JSON_TAIL = 64 * 1024
#: ``usage``'s total in a JSON text cut anywhere: an unescaped key (a model's text can only
#: hold an escaped one, ``\"usage\"``), then its object's total_tokens.
_TAIL_USAGE = re.compile(rb'(?<!\\)"usage"\s*:\s*\{[^{}]*?"total_tokens"\s*:\s*(\d{1,10})')
#: The longest SSE event held back while it is unfinished. A stream that goes longer without
#: a blank line is no event stream guardrail can read: it is passed on as it comes, unmetered.
EVENT_MAX = 256 * 1024
#: A request that names its output cap runs past its reservation only by estimation error:
#: past twice its reservation (and this slack) it is watched as if it had named none.
OVERRUN_SLACK = 64

PASS, JSON, SSE = 0, 1, 2

BUDGET_SPENT = (
    "The token budget ran out during this response; the rest of it was not sent. "
    "Retry after the budget refills (see the x-ratelimit-reset-tokens header)."
)
#: The response alone is more than the budget ever holds: no wait lets it through whole.
BUDGET_OUTGROWN = (
    "This response outgrew the token budget, which holds at most {capacity} tokens with the "
    "prompt; the rest of it was not sent, and the same request would be cut alike. Ask for "
    "fewer tokens (max_tokens) or shorten the prompt."
)


ENCODED = (
    "The model server compressed a response that guardrail must read to count its tokens; "
    "it was not served. The server should honour Accept-Encoding: identity."
)


def identity_scope(scope: Scope) -> Scope:
    """The scope the app gets on a metered or paced route: it asks for an uncompressed
    response, whatever the client accepts (the client gets it uncompressed)."""
    headers = [(n, v) for n, v in scope["headers"] if n != b"accept-encoding"]
    headers.append((b"accept-encoding", b"identity"))
    return {**scope, "headers": headers}


class StreamCut(OSError):
    """Raised from ``send`` once guardrail has ended the stream: as the ASGI spec has servers
    raise an OSError when the client has gone."""


class Relay:
    __slots__ = (
        "_send",
        "budget",
        "clock",
        "copy",
        "cut",
        "cuts",
        "ended",
        "extra",
        "frame",
        "gone",
        "large",
        "learn",
        "meter",
        "mode",
        "outgrown",
        "pace",
        "paced",
        "paced_from",
        "seen",
        "sleep",
        "splitter",
        "status",
        "usage",
    )

    def __init__(
        self,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        *,
        meter: Meter,
        budget: Budget | None,
        pace: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        cut: bool = True,
    ) -> None:
        self._send = send
        self.extra = extra
        self.meter = meter
        self.budget = budget  # None: nothing to meter (a paced request without token limits)
        self.pace = pace  # seconds between events; 0: unpaced
        self.cuts = cut  # False in mode observe: count, never end a stream
        self.clock = clock
        self.sleep = sleep
        self.status = 0
        self.mode = PASS
        self.copy: bytearray | None = None
        self.large = 0  # bytes of a JSON body past JSON_COPY_MAX (0: none), its end in ``copy``
        self.splitter = EventSplitter()
        self.paced_from = float("-inf")  # when the pacing schedule started
        self.paced = 0  # events sent since
        self.seen = 0  # output tokens counted in the stream
        self.usage: int | None = None  # total tokens the response reported
        self.ended = False  # the app sent its last body message
        self.cut = False  # guardrail ended the stream
        self.outgrown = 0  # the cut: the capacity of a budget the response alone outgrew
        self.gone = False  # guardrail answered for an app that compressed its response
        self.frame: Frame | None = None  # the stream's usual event but for its text (deltas)
        self.learn = type(meter) is OpenAIMeter  # a meter of our own: its count is the frame's

    def receive(self, receive: Receive) -> Receive:
        """The app's ``receive``: after a cut, the client is gone as far as the app knows."""

        async def relayed() -> Message:
            if self.cut or self.gone:
                return {"type": "http.disconnect"}
            return await receive()

        return relayed

    def used(self) -> int | None:
        """What the request used in tokens, for settling (None: unknown, the charge stands)."""
        if self.usage is not None:
            return self.usage
        if self.gone:  # the app generated what nothing could count: the reservation stands
            return None
        if not 200 <= self.status < 300:
            return 0  # the app failed or refused: nothing was generated
        if self.mode == SSE and self.budget is not None:  # PASS after EVENT_MAX: unknown
            return self.budget.prompt + self.seen
        if self.mode == JSON and self.budget is not None and self.copy is not None:
            # No usage: its size in tokens, four bytes each, if that is more than reserved, so
            # that a server's own default length (or logprobs) is never served at the price of
            # the reservation.
            size = self.large or len(self.copy)
            return max(self.budget.charged, self.budget.prompt + (size + 3) // 4)
        return None

    async def __call__(self, message: Message) -> None:
        if self.cut:
            raise StreamCut("the stream was ended by guardrail: its token budget ran out")
        if self.gone:
            raise StreamCut("guardrail answered: the response was compressed, so uncountable")
        if message["type"] == "http.response.body" and self.mode == SSE:
            body = message.get("body", b"")
            budget = self.budget
            if budget is not None and not self.pace and not self.splitter.tail:
                # The usual chunk, one single-line event: metered and passed on as it came;
                # counted from its frame when it has the stream's (deltas), else parsed.
                frame = self.frame
                tokens = None if frame is None else framed_tokens(frame, body)
                if (
                    tokens is None
                    and body[:7] == b"data: {"
                    and body.find(b"\n") == len(body) - 2
                    and body[-1:] == b"\n"
                ):
                    tokens = self._tokens(body[6:-2])
                if tokens is not None:
                    if tokens:
                        seen = self.seen + tokens
                        if budget.prompt + seen <= budget.charged:  # within the reservation
                            self.seen = seen
                        elif not await self._fits(tokens, budget):
                            await self._end([])
                    if not message.get("more_body", False):
                        self.ended = True
                    await self._send(message)
                    return
            await self._body(body, message)
            return
        if message["type"] == "http.response.start":
            await self._start(message)
            return
        if message["type"] != "http.response.body" or self.mode == PASS:
            await self._send(message)
            return
        await self._body(message.get("body", b""), message)

    async def _start(self, message: Message) -> None:
        self.status = status = message["status"]
        headers = message.get("headers", ())
        if 200 <= status < 300:
            kind = encoding = b""
            for name, value in headers:
                name = name.lower()
                if name == b"content-type":
                    kind = value
                elif name == b"content-encoding":
                    encoding = value.strip().lower()
            if encoding in (b"", b"identity"):
                if kind.startswith(b"text/event-stream"):
                    self.mode = SSE
                elif self.budget is not None and b"json" in kind:
                    self.mode, self.copy = JSON, bytearray()
            elif self.cuts:  # asked for identity, compressed anyway: nothing could count it
                await self._refuse_encoded()
                return
        await self._send({**message, "headers": [*headers, *self.extra]})

    async def _refuse_encoded(self) -> None:
        self.gone, self.status = True, 502
        ids = [value.decode() for name, value in self.extra if name == b"guardrail-request-id"]
        await send_problem(
            self._send,
            502,
            problem="uncountable-response",
            title="Bad Gateway",
            detail=ENCODED,
            error_type="server_error",
            request_id=ids[0] if ids else "",
            headers=self.extra,
        )

    async def _body(self, body: bytes, message: Message) -> None:
        more = message.get("more_body", False)
        if self.mode == JSON:
            self._copy(body, more)
            await self._send(message)
            return
        events = self.splitter.feed(body)
        if len(self.splitter.tail) > EVENT_MAX:  # no events here: pass it on, unmetered
            self.mode = PASS
            events.append(self.splitter.tail)
            self.splitter.tail = b""
        if not more:
            self.ended = True
            if self.splitter.tail:  # the app ended inside an event: it goes out as it came
                events.append(self.splitter.tail)
                self.splitter.tail = b""
        await self._events(events, message, more)

    def _copy(self, body: bytes, more: bool) -> None:
        copy = self.copy
        if copy is None:
            return
        if self.large or len(copy) + len(body) > JSON_COPY_MAX:
            # Too large to parse whole: its size is counted and its end kept for ``usage``,
            # so that a large answer (logprobs, say) is never served at the reservation's price.
            self.large = (self.large or len(copy)) + len(body)
            copy += body
            del copy[: max(0, len(copy) - JSON_TAIL)]
            if not more:
                self.ended = True
                found = _TAIL_USAGE.findall(bytes(copy))
                if found:
                    self.usage = int(found[-1])
            return
        copy += body
        if not more:
            self.ended = True
            whole = payload(copy)
            if whole is not None:
                self.usage = self.meter.usage(whole)

    async def _events(self, events: list[bytes], message: Message, more: bool) -> None:
        budget = self.budget
        if budget is not None:
            for index, event in enumerate(events):
                if not await self._metered(event, budget):
                    await self._end(events[:index])
                    return
        if not self.pace:
            if len(events) == 1 and events[0] is message.get("body"):
                await self._send(message)  # the common case: forwarded as received
            elif events or not more:
                await self._send(
                    {"type": "http.response.body", "body": b"".join(events), "more_body": more}
                )
            return
        last = len(events) - 1
        for index, event in enumerate(events):
            await self._wait()
            await self._send(
                {"type": "http.response.body", "body": event, "more_body": more or index < last}
            )
        if not events and not more:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _metered(self, event: bytes, budget: Budget) -> bool:
        """Count the event's output; False when it does not fit in the budget."""
        tokens = self._tokens(data_of(event) or b"")
        return not tokens or await self._fits(tokens, budget)

    def _tokens(self, data: bytes) -> int:
        """The output tokens an event's JSON data carries; its usage is noted on the way."""
        event = payload(data)
        if event is None:
            return 0
        if event.get("usage") is not None or "response" in event:
            usage = self.meter.usage(event)
            if usage is not None:
                self.usage = usage
        elif self.learn and self.frame is None:
            self.frame = frame(bytes(data), event)
        return self.meter.streamed(event)

    async def _fits(self, tokens: int, budget: Budget) -> bool:
        """Count ``tokens`` more of output; False when they do not fit in the budget."""
        seen = self.seen + tokens
        over = budget.prompt + seen - budget.charged
        if (
            over > 0
            and self.cuts
            and (budget.open_ended or over > budget.charged + OVERRUN_SLACK)
            and not await budget.extend(over, self.clock())
        ):
            capacity = min(charge.burst for charge in budget.charges)
            if budget.prompt + seen > capacity:  # more than a full budget: no wait would do
                self.outgrown = capacity
            return False
        self.seen = seen
        return True

    async def _end(self, fitting: list[bytes]) -> None:
        for event in fitting:
            if self.pace:
                await self._wait()
            await self._send({"type": "http.response.body", "body": event, "more_body": True})
        self.cut = True
        spent = BUDGET_OUTGROWN.format(capacity=self.outgrown) if self.outgrown else BUDGET_SPENT
        body = error_event(spent, "rate_limit_exceeded")
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
        raise StreamCut("the stream was ended by guardrail: its token budget ran out")

    async def _wait(self) -> None:
        # Event k is due at first + k * pace: an absolute schedule, so that rounding in the
        # epoch-second clock does not pile up over a long stream. An app slower than the pace
        # restarts the schedule rather than bursting to catch up.
        now = self.clock()
        due = self.paced_from + self.paced * self.pace
        if due > now:
            await self.sleep(due - now)
        else:
            self.paced_from, self.paced = now, 0
        self.paced += 1


def with_headers(send: Send, extra: list[tuple[bytes, bytes]], status: list[int] | None) -> Send:
    """The plain relay: add headers to ``http.response.start`` (noting its status) and pass
    every other message straight through."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            if status is not None:
                status[0] = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return wrapped
