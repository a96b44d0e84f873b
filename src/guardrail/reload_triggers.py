"""What makes a guardrail reload its policy by itself: SIGHUP, and the policy file changing.

SIGHUP: one handler on the main thread's event loop for every guardrail of the process that
asks for it (``loop.add_signal_handler`` keeps one callback per signal). Elsewhere (another
thread's loop, Windows) it is said once and left alone: ``reload()`` and the watch still work.

The watch (watchfiles, the ``reload`` extra) watches the file's directory, not the file: an
editor or a deploy tool renames a new file over it, and a Kubernetes ConfigMap swaps its
``..data`` link beside it; a watch on the old inode would see neither.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable

logger = logging.getLogger("guardrail")

SIGHUP = getattr(signal, "SIGHUP", None)  # not on Windows

Trigger = Callable[[str], None]

_listening: list[Trigger] = []  # guardrails reloading on SIGHUP, in the order they asked
_installed: asyncio.AbstractEventLoop | None = None


def listen(trigger: Trigger) -> None:
    """Call ``trigger("sighup")`` on every SIGHUP, from the running loop."""
    global _installed
    if trigger in _listening:
        return
    loop = asyncio.get_running_loop()
    if _installed is not loop:
        if SIGHUP is None or threading.current_thread() is not threading.main_thread():
            logger.warning(
                "guardrail: reload.sighup: signals reach only the main thread's event loop "
                "(and not on Windows); this guardrail reloads on file changes or reload() only"
            )
            return
        try:
            loop.add_signal_handler(SIGHUP, _hangup)
        except (NotImplementedError, RuntimeError) as exc:  # a loop without signal support
            logger.warning("guardrail: reload.sighup: SIGHUP cannot be handled here: %s", exc)
            return
        _installed = loop
    _listening.append(trigger)


def unlisten(trigger: Trigger) -> None:
    """Stop calling ``trigger``; the last one out gives SIGHUP back its default."""
    global _installed
    if trigger in _listening:
        _listening.remove(trigger)
    if not _listening and _installed is not None:
        if not _installed.is_closed() and SIGHUP is not None:
            _installed.remove_signal_handler(SIGHUP)
        _installed = None


def _hangup() -> None:
    for trigger in list(_listening):
        trigger("sighup")


async def watch_file(
    source: str, stop: asyncio.Event, changed: Callable[[], Awaitable[None]]
) -> None:
    """Await ``changed()`` after each change to the file ``source`` until ``stop`` is set."""
    try:
        from watchfiles import awatch
    except ImportError:
        logger.error(
            "guardrail: reload.watch needs watchfiles: pip install 'guardrail[reload]'; "
            "the policy file is not watched (SIGHUP and reload() still work)"
        )
        return
    path = await asyncio.to_thread(_file, source)
    if path is None:
        logger.error("guardrail: reload.watch: the policy was not read from a file")
        return

    def ours(_change: object, name: str) -> bool:
        # The file itself (rewritten, or renamed over), or a ConfigMap's ``..data`` link
        return name == path or os.path.basename(name).startswith("..")

    directory = os.path.dirname(path)
    try:
        async for _ in awatch(directory, watch_filter=ours, stop_event=stop, recursive=False):
            await changed()
    except Exception as exc:  # the directory gone, the inotify watch limit reached...
        logger.error("guardrail: reload.watch stopped watching %s: %s", path, exc)


def _file(source: str) -> str | None:
    path = os.path.abspath(source)
    return path if os.path.isfile(path) else None
