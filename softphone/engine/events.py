"""A small event emitter: sync and async listeners, ``on`` returns an unsubscribe callable."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

Listener = Callable[..., Any]


class EventEmitter:
    """Calls sync listeners inline and schedules coroutine listeners as tasks.

    A listener that raises is logged and skipped; it never breaks the emitter or the
    SDK's own processing.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logger

    def on(self, event: str, listener: Listener) -> Callable[[], None]:
        self._listeners.setdefault(event, []).append((listener, False))
        return lambda: self.off(event, listener)

    def once(self, event: str, listener: Listener) -> Callable[[], None]:
        self._listeners.setdefault(event, []).append((listener, True))
        return lambda: self.off(event, listener)

    def off(self, event: str, listener: Listener) -> None:
        entries = self._listeners.get(event, [])
        for i, (fn, _) in enumerate(entries):
            if fn is listener:
                del entries[i]
                return

    def clear(self) -> None:
        self._listeners.clear()

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, []))

    def emit(self, event: str, *args: Any) -> None:
        entries = list(self._listeners.get(event, []))
        if not entries:
            return
        self._listeners[event] = [e for e in self._listeners[event] if not e[1]]
        for listener, _ in entries:
            try:
                result = listener(*args)
            except Exception:
                self._log.exception("listener for %r raised", event)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("async listener raised", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for async listeners still running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
