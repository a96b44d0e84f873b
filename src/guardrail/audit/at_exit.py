"""The end of a process that never sent lifespan events (``uvicorn --lifespan off``, Daphne,
Django under a server without lifespan): nothing closes the audit log, so the last records
would stay in its queue.

Three moments are watched, once the first request has started a log without lifespan:

- a stop signal (SIGTERM, SIGINT), if the server handles it in Python: the log hands over what
  it holds back (refusal counts) while the loop still runs, then the server's handler runs.
  uvicorn then finishes its requests (each waits for its own records to be written, see
  ``Guardrail.__call__``) and re-raises the signal with the default handler,
  which ends the process without ``atexit``: this is the last moment guardrail code runs;
- the writer task being cancelled (``asyncio.run`` ending after Ctrl-C): it writes what is
  queued synchronously (:meth:`AuditLog.exit_sync`);
- ``atexit`` (Daphne: the reactor stops, its loop is left with the writer task pending).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import threading
import weakref
from types import FrameType
from typing import Any

from guardrail.audit.writer import AuditLog

_LOGS: weakref.WeakSet[AuditLog] = weakref.WeakSet()
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_registered = False


def watch(log: AuditLog) -> None:
    """Writes what ``log`` still holds when the process ends, unless it was closed first.
    Called in the serving event loop."""
    global _registered
    _LOGS.add(log)
    if not _registered:
        _registered = True
        atexit.register(_at_exit)
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            _chain(sig, loop)


def _at_exit() -> None:
    for log in list(_LOGS):
        log.exit_sync()


def _chain(sig: int, loop: asyncio.AbstractEventLoop) -> None:
    previous = signal.getsignal(sig)
    # Only in front of a handler of the server's (a Python callable): a default or ignored
    # signal keeps its meaning, and ours is never installed twice.
    if not callable(previous) or getattr(previous, "_guardrail_audit", False):
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: atexit does the rest
            loop.call_soon_threadsafe(_exiting)
        previous(signum, frame)

    marked: Any = handler
    marked._guardrail_audit = True
    signal.signal(sig, handler)


def _exiting() -> None:
    for log in list(_LOGS):
        log.exiting()
