"""LocalPresence: the in-memory index of who answers on which number (pure, no sockets)."""

from __future__ import annotations

import itertools

from softphone.server.auth import Claims
from softphone.server.core import OperatorSession
from softphone.server.registry import LocalPresence

_ids = itertools.count()


class _Peer:
    closed = False


def session(account: str, operator: str, opened_at: float) -> OperatorSession:
    claims = Claims(account, operator, operator, ("pn_1", "pn_2"), 0, 10**10, f"j{next(_ids)}")
    s = OperatorSession(f"OS{next(_ids)}", claims, _Peer(), 25.0)  # type: ignore[arg-type]
    s.opened_at = opened_at
    return s


def test_sessions_are_found_by_number_and_account_oldest_first() -> None:
    presence = LocalPresence()
    a, b = session("acct_1", "alice", 2.0), session("acct_1", "bob", 1.0)
    other = session("acct_2", "eve", 0.5)
    for s in (a, b, other):
        presence.add(s)
    assert presence.set_numbers(a, {"pn_1", "pn_2"}) == {"pn_1", "pn_2"}
    assert presence.set_numbers(b, {"pn_1"}) == {"pn_1"}
    assert presence.set_numbers(other, {"pn_1"}) == {"pn_1"}  # same id, other account
    assert presence.online_on("acct_1", "pn_1") == [b, a]
    assert presence.online_on("acct_1", "pn_2") == [a]
    assert presence.online_on("acct_2", "pn_1") == [other]
    assert presence.online_on("acct_1", "pn_9") == []
    # Changing the set: only the new numbers are reported, left ones are unindexed.
    assert presence.set_numbers(a, {"pn_2"}) == set()
    assert presence.online_on("acct_1", "pn_1") == [b]
    assert len(presence) == 3


def test_closed_and_removed_sessions_are_not_offered() -> None:
    presence = LocalPresence()
    old, new = session("acct_1", "alice", 1.0), session("acct_1", "alice", 2.0)
    for s in (old, new):
        presence.add(s)
        presence.set_numbers(s, {"pn_1"})
    assert presence.newest_of(("acct_1", "alice")) is new
    new.closed = True
    assert presence.newest_of(("acct_1", "alice")) is old
    assert presence.online_on("acct_1", "pn_1") == [old]
    presence.remove(old)
    presence.remove(new)
    assert presence.online_on("acct_1", "pn_1") == []
    assert presence.newest_of(("acct_1", "alice")) is None
    assert dict(presence.by_id()) == {}
    assert list(presence) == []
