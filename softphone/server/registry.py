"""The narrow interfaces the core's state machine works through (docs/scaling.md).

``Core`` (core.py) decides; these hold what it decides about:

* :class:`Presence`: which operator sessions are online on which numbers. One process keeps
  it in memory (:class:`LocalPresence`); several nodes would share it (e.g. Redis or NATS
  KV), each node still holding its own sockets.
* :class:`CallRecords`: what the core writes and reads about accounts' numbers and calls.
  :class:`softphone.server.store.Store` (SQLite) implements it; PostgreSQL would too.
* :class:`Network`: where an outbound call goes (a destination of the telephone network)
  and who calls in. The sandbox's simulated network implements it; a SIP trunk would.

Nothing here does I/O; the implementations decide how.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from softphone.server.core import OperatorSession
    from softphone.server.network import Destination, FarEnd
    from softphone.server.store import CallRow, PhoneNumberRow

OperatorKey = tuple[str, str]
"""(account id, operator ref)."""


class Presence(Protocol):
    """Online operator sessions and the numbers each answers on."""

    def add(self, session: OperatorSession) -> None: ...

    def remove(self, session: OperatorSession) -> None: ...

    def set_numbers(self, session: OperatorSession, number_ids: set[str]) -> set[str]:
        """Make ``number_ids`` the session's numbers; return the ones newly added."""
        ...

    def online_on(self, account_id: str, number_id: str) -> list[OperatorSession]:
        """Open sessions answering on a number, oldest first."""
        ...

    def newest_of(self, key: OperatorKey) -> OperatorSession | None:
        """The operator's most recent open session (it may have several: devices, or a
        reconnect overlapping the old socket's timeout)."""
        ...

    def by_id(self) -> Mapping[str, OperatorSession]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[OperatorSession]: ...


class CallRecords(Protocol):
    """The storage the core needs while it runs (records of calls, numbers to route)."""

    def phone_numbers(self, account_id: str) -> list[PhoneNumberRow]: ...

    def phone_number_by_e164(self, number: str) -> PhoneNumberRow | None: ...

    def insert_call(self, row: CallRow) -> None: ...

    def update_call(self, call_sid: str, **fields: str | None) -> None: ...

    def call(self, call_sid: str) -> CallRow | None: ...

    def add_dtmf(self, call_sid: str, digits: str, now: str) -> None: ...

    def add_feedback(
        self,
        *,
        call_sid: str,
        account_id: str,
        operator_ref: str,
        score: int,
        issue: str | None,
        now: str,
    ) -> None: ...


class Network(Protocol):
    """The telephone network behind the core."""

    def route(self, number: str) -> Destination | None: ...

    def inbound_caller(self) -> FarEnd: ...

    def describe(self) -> list[tuple[str, str]]: ...


class LocalPresence:
    """:class:`Presence` in this process's memory, indexed so that an inbound call finds
    the sessions to offer it to without scanning every session."""

    def __init__(self) -> None:
        self._by_id: dict[str, OperatorSession] = {}
        self._by_number: dict[tuple[str, str], dict[str, OperatorSession]] = {}
        self._by_operator: dict[OperatorKey, dict[str, OperatorSession]] = {}

    def add(self, session: OperatorSession) -> None:
        self._by_id[session.session_id] = session
        self._by_operator.setdefault(session.operator_key, {})[session.session_id] = session
        for number_id in session.availability:
            self._index(session, number_id)

    def remove(self, session: OperatorSession) -> None:
        self._by_id.pop(session.session_id, None)
        mine = self._by_operator.get(session.operator_key)
        if mine is not None:
            mine.pop(session.session_id, None)
            if not mine:
                del self._by_operator[session.operator_key]
        for number_id in session.availability:
            self._unindex(session, number_id)

    def set_numbers(self, session: OperatorSession, number_ids: set[str]) -> set[str]:
        added = number_ids - session.availability
        for number_id in session.availability - number_ids:
            self._unindex(session, number_id)
        session.availability = set(number_ids)
        if session.session_id in self._by_id:
            for number_id in added:
                self._index(session, number_id)
        return added

    def online_on(self, account_id: str, number_id: str) -> list[OperatorSession]:
        sessions = self._by_number.get((account_id, number_id), {})
        return sorted((s for s in sessions.values() if not s.closed), key=lambda s: s.opened_at)

    def newest_of(self, key: OperatorKey) -> OperatorSession | None:
        live = [s for s in self._by_operator.get(key, {}).values() if not s.closed]
        return max(live, key=lambda s: s.opened_at) if live else None

    def by_id(self) -> Mapping[str, OperatorSession]:
        return self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[OperatorSession]:
        return iter(list(self._by_id.values()))

    def _index(self, session: OperatorSession, number_id: str) -> None:
        key = (session.claims.account_id, number_id)
        self._by_number.setdefault(key, {})[session.session_id] = session

    def _unindex(self, session: OperatorSession, number_id: str) -> None:
        key = (session.claims.account_id, number_id)
        sessions = self._by_number.get(key)
        if sessions is not None:
            sessions.pop(session.session_id, None)
            if not sessions:
                del self._by_number[key]
