"""Engine events become Textual messages.

The SDK calls its listeners on the asyncio loop it runs on, which is Textual's loop: a
listener here only posts a message (non-blocking) and returns, so the engine never waits for
the UI, and every UI update happens in a message handler. Audio levels do not come this way:
the app polls the level slot on a timer.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Final

from textual.message import Message

from softphone.engine import Call, Operator
from softphone.engine.call import CallEvent
from softphone.engine.operator import EventName

OPERATOR_EVENTS: Final = typing.get_args(EventName)
"""Every operator event of the SDK."""
CALL_EVENTS: Final = tuple(e for e in typing.get_args(CallEvent) if e not in ("volume", "error"))
"""Every call event but ``volume`` (levels are polled) and ``error`` (the operator's
``error`` event carries call errors too)."""


class EngineEvent(Message):
    """One SDK event: operator-level when ``call`` is None."""

    def __init__(self, name: str, args: tuple[Any, ...], call: Call | None = None) -> None:
        super().__init__()
        self.name = name
        self.args = args
        self.call = call


class EngineBridge:
    """Subscribes to an Operator (and its calls) and posts :class:`EngineEvent` messages."""

    def __init__(self, operator: Operator, post: Callable[[Message], object]) -> None:
        self._operator = operator
        self._post = post
        self._unsubscribe: list[Callable[[], None]] = []
        self._calls: dict[str, list[Callable[[], None]]] = {}

    def attach(self) -> None:
        for name in OPERATOR_EVENTS:
            self._unsubscribe.append(self._operator.on(name, self._listener(name)))

    def _listener(self, name: str, call: Call | None = None) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            self._post(EngineEvent(name, args, call))

        return listener

    def watch_call(self, call: Call) -> None:
        """Forward this call's events until it ends (idempotent)."""
        if call.call_sid in self._calls or call.is_ended:
            return
        offs = [call.on(name, self._listener(name, call)) for name in CALL_EVENTS]
        self._calls[call.call_sid] = offs
        offs.append(call.on("disconnected", lambda: self._forget(call.call_sid)))

    def _forget(self, call_sid: str) -> None:
        for off in self._calls.pop(call_sid, []):
            off()

    def detach(self) -> None:
        for off in self._unsubscribe:
            off()
        self._unsubscribe.clear()
        for sid in list(self._calls):
            self._forget(sid)
