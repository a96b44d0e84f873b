"""Live policy reload: the policy file read again, validated, and swapped in between requests.

Triggers: ``await guardrail.reload()``, SIGHUP (``reload.sighup``) and changes to the file
(``reload.watch``, with watchfiles). Reading, parsing and building the new view run in a
thread; the swap is one attribute write on the event loop (``recompile.py``). Buckets, risk
state, issued challenges and the audit chain are kept. A policy that does not validate, or
that changes what only a restart can (``restart_only.py``), is refused whole: every error is
logged, the trail records the refusal, and the policy in force stays.

Each reload is one audit record, ``"action": "policy_reload"`` with ``previous`` (the hash it
replaced), or ``"action": "policy_reload_refused"`` with the keys at fault (never their values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from guardrail.audit.record import format_ts
from guardrail.cautions import cautions
from guardrail.errors import GuardrailError, PolicyError
from guardrail.policy import Policy
from guardrail.recompile import recompiled
from guardrail.reload_triggers import listen, unlisten, watch_file
from guardrail.restart_only import unchangeable

if TYPE_CHECKING:
    from guardrail.actions.captcha import Siteverify
    from guardrail.middleware import Guardrail
    from guardrail.policy import Reload

logger = logging.getLogger("guardrail")


class Reloader:
    """One guardrail's reloads, one at a time, and the triggers its policy turns on."""

    def __init__(self, guard: Guardrail) -> None:
        self._guard = guard
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # triggered reloads, held until done
        self._stop: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watched: str | None = None  # the file the watcher watches
        self._retired: list[Siteverify] = []  # replaced CAPTCHA clients: a request may hold one

    async def reload(
        self, policy: Policy | str | os.PathLike[str] | None = None, trigger: str = "call"
    ) -> Policy:
        guard = self._guard
        if not guard._started:
            raise GuardrailError("guardrail has not started: there is no policy to reload yet")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = guard._view
            old = current._policy
            try:
                view = await asyncio.to_thread(self._prepare, current, policy)
            except Exception as exc:
                self._refused(old, policy, trigger, exc)
                raise
            if view is None:
                logger.info(
                    "guardrail: policy %s unchanged (%s): nothing reloaded", old.digest, trigger
                )
                return old
            self._swap(current, view, trigger)
        # Outside the lock: turning the watch off awaits the watcher, which may be waiting
        # for the lock with a reload of its own. As the policy in force says, whichever it is.
        await self.arm(guard.policy.reload)
        return view._policy

    def _prepare(
        self, current: Guardrail, policy: Policy | str | os.PathLike[str] | None
    ) -> Guardrail | None:
        """In a thread: the new policy read and checked, and its view built; None if unchanged."""
        if policy is None:
            policy = current._policy.source
            if policy.startswith("<"):
                raise GuardrailError(
                    f"the policy in force was not read from a file ({policy}): pass the new "
                    "one to reload()"
                )
        new = policy if isinstance(policy, Policy) else Policy.from_yaml(policy)
        if new.digest == current._policy.digest:
            return None
        issues = unchangeable(current._policy, new, self._guard.secret)
        if issues:
            raise PolicyError(issues)
        for caution in cautions(new):
            logger.warning("guardrail: %s", caution)
        return recompiled(self._guard, current, new)

    def _swap(self, current: Guardrail, view: Guardrail, trigger: str) -> None:
        guard, old, new = self._guard, current._policy, view._policy
        guard._view = view  # the next request decides on it; those running finish on theirs
        guard.unmatched.rehead({"policy": new.digest, "mode": new.mode}, new.unmatched)
        if current.siteverify is not None and current.siteverify is not view.siteverify:
            self._retired.append(current.siteverify)
        record = _record(new, guard.clock(), "policy_reload", trigger)
        record["previous"] = old.digest
        guard.audit.emit(record)
        logger.info(
            "guardrail: policy reloaded (%s): %s in force, was %s", trigger, new.digest, old.digest
        )

    def _refused(self, old: Policy, asked: object, trigger: str, exc: Exception) -> None:
        logger.error(
            "guardrail: policy reload (%s) refused, %s stays in force: %s: %s",
            trigger,
            old.digest,
            type(exc).__name__,
            exc,
        )
        record = _record(old, self._guard.clock(), "policy_reload_refused", trigger)
        if isinstance(asked, Policy):
            record["source"] = asked.source
        elif isinstance(asked, (str, os.PathLike)):
            record["source"] = os.fspath(asked)
        if isinstance(exc, PolicyError):  # where, never what: a value may be a secret
            record["errors"] = [{"line": i.line, "key": i.path} for i in exc.issues]
        else:
            record["errors"] = [{"error": type(exc).__name__}]
        self._guard.audit.emit(record)

    # -- triggers -----------------------------------------------------------------------------

    def trigger(self, trigger: str) -> None:
        """Reload in a task of its own (from a signal handler or the watcher)."""
        task = asyncio.ensure_future(self._quietly(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, trigger: str) -> None:
        with contextlib.suppress(Exception):  # logged and recorded by reload()
            await self.reload(trigger=trigger)

    async def arm(self, conf: Reload) -> None:
        """Turn the triggers on or off as the policy in force says."""
        if conf.sighup:
            listen(self.trigger)
        else:
            unlisten(self.trigger)
        source = self._guard.policy.source
        if self._watcher is not None and (not conf.watch or source != self._watched):
            await self._unwatch()  # off, or another file to watch: reload() was given a path
        if conf.watch and self._watcher is None:
            self._stop, self._watched = asyncio.Event(), source
            self._watcher = asyncio.ensure_future(self._watch(source, self._stop))

    async def _unwatch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if self._stop is not None:
            self._stop.set()
        if watcher is not None and watcher is not asyncio.current_task():
            await watcher

    async def _watch(self, source: str, stop: asyncio.Event) -> None:
        await watch_file(source, stop, lambda: self._quietly("watch"))

    async def close(self) -> None:
        """At shutdown: triggers off, reloads under way finished, replaced clients closed."""
        unlisten(self.trigger)
        await self._unwatch()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for siteverify in self._retired:
            await siteverify.close()
        self._retired.clear()


def _record(policy: Policy, now: float, action: str, trigger: str) -> dict[str, Any]:
    return {
        "ts": format_ts(now),
        "policy": policy.digest,
        "mode": policy.mode,
        "route": None,
        "action": action,
        "trigger": trigger,
        "source": policy.source,
    }
