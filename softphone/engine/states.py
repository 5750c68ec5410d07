"""Presence and call state machines of the SDK, with their allowed transitions (pure)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Generic, TypeVar


class PresenceState(StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    DESTROYED = "destroyed"


PRESENCE_TRANSITIONS: Final[dict[PresenceState, frozenset[PresenceState]]] = {
    PresenceState.OFFLINE: frozenset({PresenceState.CONNECTING, PresenceState.DESTROYED}),
    PresenceState.CONNECTING: frozenset(
        {PresenceState.ONLINE, PresenceState.OFFLINE, PresenceState.DESTROYED}
    ),
    PresenceState.ONLINE: frozenset(
        {PresenceState.RECONNECTING, PresenceState.OFFLINE, PresenceState.DESTROYED}
    ),
    PresenceState.RECONNECTING: frozenset(
        {PresenceState.ONLINE, PresenceState.OFFLINE, PresenceState.DESTROYED}
    ),
    PresenceState.DESTROYED: frozenset(),
}


class CallState(StrEnum):
    PENDING = "pending"
    """Inbound, offered to this operator, not answered yet."""
    RINGING = "ringing"
    """Outbound, the far end is being alerted."""
    CONNECTING = "connecting"
    """Accepted or dialled; the media leg is opening."""
    ACTIVE = "active"
    """Answered, media flowing both ways."""
    RECONNECTING = "reconnecting"
    """The media leg dropped and is being re-opened."""
    ENDED = "ended"


CALL_TRANSITIONS: Final[dict[CallState, frozenset[CallState]]] = {
    CallState.PENDING: frozenset({CallState.CONNECTING, CallState.ENDED}),
    CallState.CONNECTING: frozenset({CallState.RINGING, CallState.ACTIVE, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ACTIVE, CallState.ENDED}),
    CallState.ACTIVE: frozenset({CallState.RECONNECTING, CallState.ENDED}),
    CallState.RECONNECTING: frozenset({CallState.ACTIVE, CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

S = TypeVar("S", PresenceState, CallState)


class InvalidTransition(RuntimeError):
    pass


class StateMachine(Generic[S]):
    """Holds a state and refuses transitions that are not in the table."""

    def __init__(self, initial: S, table: dict[S, frozenset[S]]) -> None:
        self._state: S = initial
        self._table: dict[S, frozenset[S]] = table

    @property
    def state(self) -> S:
        return self._state

    def can(self, new: S) -> bool:
        return new in self._table[self._state]

    def go(self, new: S) -> S:
        """Move to ``new`` and return the previous state; raise InvalidTransition if not allowed."""
        if new not in self._table[self._state]:
            raise InvalidTransition(f"{self._state.value} -> {new.value} is not allowed")
        old: S = self._state
        self._state = new
        return old
