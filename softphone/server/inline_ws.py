"""WebSocket messages handled as they are parsed: the media relay's fast path on aiohttp.

aiohttp delivers every WebSocket message through a queue to a task awaiting
``ws.receive()``: for a media leg that is a future, a task wake-up and an event-loop pass
per 20 ms frame, which measured about a third of the core's CPU under load (see
docs/performance.md, "Core under load"). :class:`InlineWebSocketResponse` lets the owner of
a WebSocket install a *handler* that sees each binary message inside aiohttp's
``data_received``, synchronously, as soon as the frame is parsed. The handler returns True
when it has dealt with the message; anything else (text, control frames, a binary message
the handler declines or fails on) is queued as usual for ``ws.receive()``.

Consequences for the handler: it runs inside the transport's callback, so it must not
block or await (write to transports, count, return); messages it takes are handled before
earlier text messages still waiting in the queue (audio frames overtake control messages
by at most one pass of the reading task).

This relies on aiohttp internals that have been stable across the 3.x series: the
``WebSocketDataQueue`` class looked up by ``aiohttp.web_ws`` when a response starts
(``WebSocketResponse._post_start``) and its ``feed_data(message, size)``. They are checked
when this module is imported; without them :data:`INLINE_AVAILABLE` is False and
:func:`set_inline_handler` returns False, so everything goes through ``ws.receive()`` —
slower, with the same behaviour. tests/test_core_inline.py fails if the pinned aiohttp
stops supporting the fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from aiohttp import web, web_ws

__all__ = [
    "INLINE_AVAILABLE",
    "InlineHandler",
    "InlineWebSocketResponse",
    "inline_handler_failures",
    "set_inline_handler",
]

log = logging.getLogger("audin.core")

InlineHandler = Callable[[bytes], bool]
"""Called with the payload of each binary message; True: handled (not queued)."""

_BINARY: Final = aiohttp.WSMsgType.BINARY

_DataQueue: type[Any] | None
try:  # aiohttp >= 3.11 (the C or the pure-Python reader module alike)
    from aiohttp._websocket.reader import WebSocketDataQueue as _DataQueue
except ImportError:  # pragma: no cover - depends on the installed aiohttp
    _DataQueue = None

INLINE_AVAILABLE: Final = (
    _DataQueue is not None
    and getattr(web_ws, "WebSocketDataQueue", None) is _DataQueue
    and callable(getattr(web.WebSocketResponse, "_post_start", None))
    and callable(getattr(_DataQueue, "feed_data", None))
)
"""Whether this aiohttp offers the hook (else every message goes through the queue)."""


def _inline_queue_class() -> type[Any] | None:
    if not INLINE_AVAILABLE:  # pragma: no cover - depends on the installed aiohttp
        return None
    assert _DataQueue is not None

    class InlineQueue(_DataQueue):  # type: ignore[misc, valid-type]
        """aiohttp's message queue, offering binary messages to a handler first."""

        handler: InlineHandler | None = None
        failures = 0

        def feed_data(self, data: Any, size: int) -> None:
            handler = self.handler
            if handler is not None and data[0] is _BINARY:
                try:
                    if handler(data[1]):
                        return
                except Exception:
                    # Never let a handler's bug break aiohttp's parser: log it, stop using
                    # the handler, and let the reading task see this message.
                    self.failures += 1
                    self.handler = None
                    log.exception("inline WebSocket handler failed; using the queue")
            super().feed_data(data, size)

    return InlineQueue


_InlineQueue: Final = _inline_queue_class()


class InlineWebSocketResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose binary messages can be handled inline
    (:func:`set_inline_handler`); it behaves exactly like its parent until one is set."""

    def _post_start(self, *args: Any, **kwargs: Any) -> None:
        if _InlineQueue is None:  # pragma: no cover - depends on the installed aiohttp
            super()._post_start(*args, **kwargs)
            return
        # _post_start is synchronous: nothing else runs on the loop while the name is
        # swapped, so only this response gets the inline queue.
        saved = getattr(web_ws, "WebSocketDataQueue")  # noqa: B009 (not exported)
        setattr(web_ws, "WebSocketDataQueue", _InlineQueue)  # noqa: B010
        try:
            super()._post_start(*args, **kwargs)
        finally:
            setattr(web_ws, "WebSocketDataQueue", saved)  # noqa: B010


def _queue_of(ws: web.WebSocketResponse) -> Any:
    queue = getattr(ws, "_reader", None)
    return queue if _InlineQueue is not None and isinstance(queue, _InlineQueue) else None


def set_inline_handler(ws: web.WebSocketResponse, handler: InlineHandler | None) -> bool:
    """Install (or with None remove) the inline handler of a prepared
    :class:`InlineWebSocketResponse`. False when the fast path is not available here: the
    caller's ``ws.receive()`` loop then gets every message."""
    queue = _queue_of(ws)
    if queue is None:
        return False
    queue.handler = handler
    return True


def inline_handler_failures(ws: web.WebSocketResponse) -> int:
    """How many times an inline handler raised on this WebSocket (then removed)."""
    queue = _queue_of(ws)
    return int(queue.failures) if queue is not None else 0
