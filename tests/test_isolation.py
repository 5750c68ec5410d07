"""Account isolation: an operator of one account cannot list, answer, dial from or open the
media of another account's numbers and calls, whatever it sends.

Two accounts on one real core (``acct_a`` and ``acct_b``, plus the sandbox's), tokens from
``POST /v1/operator-sessions/token`` with each account's API key, raw WebSocket messages as
well as the SDK. tests/test_security.py already covers: tokens for another account's numbers
(403), set_availability and caller ids limited to the token's numbers, offers reaching only
the owning account, accept/hangup of a foreign ringing call, a foreign media upgrade of an
outbound call (404) and the admin key; this file covers the rest.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from softphone.engine import Operator, OperatorError, PresenceState
from softphone.protocol import ErrorCode
from softphone.server import CoreServer
from softphone.server.core import CallStatus

from .conftest import EventLog, wait_until
from .test_security import (
    TOKEN_PATH,
    Account,
    _api_token,
    dial_echo,
    make_account,
    presence,
    recv_json,
    recv_text_json,
    refused_upgrade,
    send_json,
    ws_connect,
)

A_LINE, A_NUMBER = "pn_a1", "+15557770001"
B_LINE, B_NUMBER = "pn_b1", "+15558880001"
ECHO = "+15550100"
GHOST_SID = "CA" + "7" * 32


@dataclass
class Tenants:
    core: CoreServer
    a: Account
    b: Account


@pytest.fixture
def tenants(core: CoreServer) -> Tenants:
    return Tenants(
        core,
        make_account(core, "acct_a", [(A_LINE, A_NUMBER)]),
        make_account(core, "acct_b", [(B_LINE, B_NUMBER)]),
    )


@pytest.fixture
async def alice(tenants: Tenants) -> AsyncIterator[ClientConnection]:
    """Operator ``alice`` of account A, online on A's number."""
    token = await _api_token(tenants.core, tenants.a, "alice", [A_LINE])
    async with presence(tenants.core, "alice", token) as ws:
        await go_online(ws, A_LINE)
        yield ws


@pytest.fixture
async def bob(tenants: Tenants) -> AsyncIterator[ClientConnection]:
    """Operator ``bob`` of account B, online on B's number."""
    token = await _api_token(tenants.core, tenants.b, "bob", [B_LINE])
    async with presence(tenants.core, "bob", token) as ws:
        await go_online(ws, B_LINE)
        yield ws


async def go_online(ws: ClientConnection, line: str) -> None:
    await send_json(ws, {"type": "set_availability", "id": "on", "phoneNumberIds": [line]})
    reply = await recv_json(ws)
    assert (reply["type"], reply["accepted"]) == ("availability", [line]), reply


async def expect_error(ws: ClientConnection, message: dict[str, Any], code: str) -> str:
    """Send ``message`` and expect an ``error`` with ``code`` in reply to it (no other
    message in between: nothing about the target call reaches this socket)."""
    await send_json(ws, message)
    reply = await recv_json(ws)
    assert reply["type"] == "error", reply
    assert (reply["code"], reply["replyTo"]) == (code, message["id"]), reply
    text = reply["message"]
    assert isinstance(text, str)
    return text


async def nothing_pending(ws: ClientConnection) -> None:
    """The next message on ``ws`` is the pong of a fresh ping: nothing else was queued."""
    await send_json(ws, {"type": "ping", "ts": 99.0})
    reply = await recv_json(ws)
    assert (reply["type"], reply["ts"]) == ("pong", 99.0), reply


async def ring_b(core: CoreServer) -> str:
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            "/v1/admin/inbound-calls",
            headers={"X-Admin-Key": core.admin_key},
            json={"from": "+15559990000", "to": B_NUMBER, "params": {"secret": "b-only"}},
        )
    assert response.status_code == 201, response.text
    sid = response.json()["callSid"]
    assert isinstance(sid, str)
    return sid


def meddling(sid: str, tag: str) -> list[dict[str, Any]]:
    """Every presence request that names a call."""
    return [
        {"type": "accept", "id": f"{tag}-accept", "callSid": sid},
        {"type": "reject", "id": f"{tag}-reject", "callSid": sid},
        {"type": "reject", "id": f"{tag}-busy", "callSid": sid, "reason": "busy"},
        {"type": "hangup", "id": f"{tag}-hangup", "callSid": sid},
        {"type": "send_message", "id": f"{tag}-msg", "callSid": sid, "content": "hi"},
        {"type": "post_feedback", "id": f"{tag}-fb", "callSid": sid, "score": 1},
    ]


# --------------------------------------------------------------------------- numbers


async def test_number_list_shows_only_the_accounts_own(tenants: Tenants) -> None:
    core = tenants.core
    for account, line, number in ((tenants.a, A_LINE, A_NUMBER), (tenants.b, B_LINE, B_NUMBER)):
        token = await _api_token(core, account, "op", [line])
        async with httpx.AsyncClient(base_url=core.url) as client:
            response = await client.get(
                "/v1/phone-numbers", headers={"Authorization": f"Bearer {token}"}
            )
        assert [n["phoneNumber"] for n in response.json()["phoneNumbers"]] == [number]


def api_key_operator(core: CoreServer, account: Account, ref: str, lines: list[str]) -> Operator:
    """An SDK operator whose tokens come from the token endpoint with ``account``'s key
    (standing in for that customer's backend)."""

    async def get_token() -> Any:
        async with httpx.AsyncClient(base_url=core.url) as client:
            response = await client.post(
                TOKEN_PATH,
                headers={"X-API-Key": account.api_key},
                json={"operatorRef": ref, "displayName": ref.title(), "phoneNumberIds": lines},
            )
            response.raise_for_status()
            return response.json()

    return Operator(core.url, get_token, audio="null", request_timeout=3.0)


async def test_sdk_operator_sees_and_uses_only_its_accounts_numbers(
    tenants: Tenants, bob: ClientConnection
) -> None:
    core = tenants.core
    operator = api_key_operator(core, tenants.a, "alice", [A_LINE])
    events = EventLog(operator)
    try:
        numbers = await operator.list_phone_numbers()
        assert [(n.id, n.phone_number) for n in numbers] == [(A_LINE, A_NUMBER)]
        result = await operator.go_online([A_LINE, B_LINE, "pn_15550150"])
        assert result.accepted == (A_LINE,)
        assert set(result.rejected) == {B_LINE, "pn_15550150"}
        assert operator.state == PresenceState.ONLINE
        with pytest.raises(OperatorError) as info:
            await operator.dial(ECHO, caller_id=B_NUMBER)
        assert info.value.code == ErrorCode.CALLER_ID_NOT_ALLOWED
        # B's inbound call is offered to bob only, never to the SDK operator of A.
        sid = await ring_b(core)
        offer = await recv_json(bob)
        assert (offer["type"], offer["callSid"]) == ("call_offer", sid)
        assert events.of("incoming_call") == []
        # Even coming online again on B's number (which the token does not allow) does not
        # bring the ringing call to A.
        result = await operator.go_online([A_LINE, B_LINE])
        assert result.rejected == (B_LINE,)
        assert events.of("incoming_call") == []
        assert core.core.calls[sid].status == CallStatus.RINGING
        assert {s.claims.operator_ref for s in core.core.calls[sid].offered} == {"bob"}
    finally:
        await operator.close()


# --------------------------------------------------------------------------- calls


async def test_a_foreign_call_cannot_be_touched_ringing_or_in_progress(
    tenants: Tenants, alice: ClientConnection, bob: ClientConnection
) -> None:
    core = tenants.core
    sid = await ring_b(core)
    offer = await recv_json(bob)
    assert (offer["type"], offer["callSid"]) == ("call_offer", sid)
    await nothing_pending(alice)

    # Ringing: every request on B's call is CALL_NOT_FOUND, worded as for a call that does
    # not exist at all (no oracle of other accounts' call ids).
    for message in meddling(sid, "ringing"):
        text = await expect_error(alice, message, "CALL_NOT_FOUND")
        ghost = await expect_error(alice, {**message, "callSid": GHOST_SID}, "CALL_NOT_FOUND")
        assert text.replace(sid, GHOST_SID) == ghost
        assert B_NUMBER not in text
    call = core.core.calls[sid]
    assert call.status == CallStatus.RINGING
    assert {s.claims.operator_ref for s in call.offered} == {"bob"}
    status, detail = await refused_upgrade(
        core, await _api_token(core, tenants.a, "alice", [A_LINE]), f"/v1/calls/{sid}/media"
    )
    assert (status, detail["code"]) == (404, "CALL_NOT_FOUND")

    # Bob still has the offer and answers; the call goes in progress on his media leg.
    await nothing_pending(bob)
    await send_json(bob, {"type": "accept", "id": "take", "callSid": sid})
    assert (await recv_json(bob))["type"] == "ack"
    bob_token = await _api_token(core, tenants.b, "bob", [B_LINE])
    async with ws_connect(core, bob_token, f"/v1/calls/{sid}/media") as media:
        await send_json(media, {"type": "hello", "protocol": 1})
        assert (await recv_text_json(media))["type"] == "media_ready"
        await wait_until(lambda: call.status == CallStatus.IN_PROGRESS, timeout=3)

        for message in meddling(sid, "live"):
            await expect_error(alice, message, "CALL_NOT_FOUND")
        status, detail = await refused_upgrade(
            core, await _api_token(core, tenants.a, "alice", [A_LINE]), f"/v1/calls/{sid}/media"
        )
        assert (status, detail["code"]) == (404, "CALL_NOT_FOUND")
        assert "bob" not in detail["message"]
        assert B_NUMBER not in detail["message"]
        assert core.core.calls[sid].status == CallStatus.IN_PROGRESS
        leg = core.core.calls[sid].media
        assert leg is not None
        assert not leg.peer.closed

        # Alice's own media leg: call-naming messages on it cannot reach B's call either,
        # and her DTMF and mute stay on her own call.
        own = await dial_echo(alice)
        alice_token = await _api_token(core, tenants.a, "alice", [A_LINE])
        async with ws_connect(core, alice_token, f"/v1/calls/{own}/media") as alice_media:
            await send_json(alice_media, {"type": "hello", "protocol": 1})
            assert (await recv_text_json(alice_media))["type"] == "media_ready"
            for message in (
                {"type": "hangup", "id": "m-hangup", "callSid": sid},
                {"type": "send_message", "id": "m-msg", "callSid": sid, "content": "hi"},
            ):
                await send_json(alice_media, message)
                reply = await recv_text_json(alice_media)
                assert (reply["type"], reply["code"], reply["replyTo"]) == (
                    "error",
                    "CALL_NOT_FOUND",
                    message["id"],
                )
            await send_json(alice_media, {"type": "dtmf", "digits": "123"})
            await send_json(alice_media, {"type": "mute", "muted": True})
            await wait_until(lambda: core.store.dtmf(own) == "123", timeout=3)
            # Alice ends her own call; her presence saw only her own call's messages.
            await send_json(alice, {"type": "hangup", "id": "own-end", "callSid": own})
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1].get("replyTo") != "own-end":
                seen.append(await recv_json(alice))
            assert all(m.get("callSid", own) == own for m in seen), seen
        assert core.store.dtmf(sid) == ""
        assert call.dtmf == []
        assert not leg.muted
        assert core.core.calls[sid].status == CallStatus.IN_PROGRESS

        # Bob's call is intact: he talks to the caller and hangs up himself.
        assert (await recv_json(bob))["type"] == "call_answered"
        await send_json(bob, {"type": "send_message", "id": "bm", "callSid": sid, "content": "x"})
        assert (await recv_json(bob))["type"] == "ack"
        await send_json(bob, {"type": "hangup", "id": "bh", "callSid": sid})
        replies = [await recv_json(bob), await recv_json(bob)]
        assert {r["type"] for r in replies} == {"ack", "call_ended"}
    # Ended: feedback on it is refused too, and the record is bob's alone.
    await expect_error(
        alice, {"type": "post_feedback", "id": "late", "callSid": sid, "score": 1}, "CALL_NOT_FOUND"
    )
    record = core.store.call(sid)
    assert record is not None
    assert (record.account_id, record.operator_ref, record.end_reason) == (
        "acct_b",
        "bob",
        "hangup",
    )
    assert core.store.feedback(sid) == []


async def test_a_colleague_and_a_stranger_are_told_apart_only_within_the_account(
    tenants: Tenants, bob: ClientConnection
) -> None:
    """Another operator of B learns the call exists (FORBIDDEN); A's operator does not."""
    core = tenants.core
    sid = await ring_b(core)
    assert (await recv_json(bob))["callSid"] == sid
    await send_json(bob, {"type": "accept", "id": "take", "callSid": sid})
    assert (await recv_json(bob))["type"] == "ack"
    colleague = await _api_token(core, tenants.b, "carol", [B_LINE])
    stranger = await _api_token(core, tenants.a, "alice", [A_LINE])
    status, detail = await refused_upgrade(core, colleague, f"/v1/calls/{sid}/media")
    assert (status, detail["code"]) == (403, "FORBIDDEN")
    status, detail = await refused_upgrade(core, stranger, f"/v1/calls/{sid}/media")
    assert (status, detail["code"]) == (404, "CALL_NOT_FOUND")


async def test_dialling_another_accounts_number_does_not_reach_it(
    tenants: Tenants, alice: ClientConnection, bob: ClientConnection
) -> None:
    core = tenants.core
    await expect_error(
        alice,
        {"type": "dial", "id": "spoof", "to": ECHO, "callerId": B_NUMBER},
        "CALLER_ID_NOT_ALLOWED",
    )
    await send_json(alice, {"type": "dial", "id": "cross", "to": B_NUMBER})
    created = await recv_json(alice)
    assert created["type"] == "call_created", created
    sid = created["callSid"]
    assert created["from"] == A_NUMBER
    token = await _api_token(core, tenants.a, "alice", [A_LINE])
    async with ws_connect(core, token, f"/v1/calls/{sid}/media") as media:
        await send_json(media, {"type": "hello", "protocol": 1})
        assert (await recv_text_json(media))["type"] == "media_ready"
        ended = await recv_text_json(media)
        assert (ended["type"], ended["reason"]) == ("call_ended", "failed")
    # Bob was never offered anything, and no inbound call exists for B.
    await nothing_pending(bob)
    assert all(c.account_id != "acct_b" for c in core.core.calls.values())
    record = core.store.call(sid)
    assert record is not None
    assert (record.account_id, record.direction) == ("acct_a", "outbound")


async def test_update_token_cannot_switch_account(
    tenants: Tenants, alice: ClientConnection
) -> None:
    """A socket of A cannot become B's by renewing its token with one of B's."""
    core = tenants.core
    b_token = await _api_token(core, tenants.b, "alice", [B_LINE])
    await expect_error(alice, {"type": "update_token", "id": "swap", "token": b_token}, "FORBIDDEN")
    await send_json(alice, {"type": "set_availability", "id": "b-line", "phoneNumberIds": [B_LINE]})
    reply = await recv_json(alice)
    assert (reply["accepted"], reply["rejected"]) == ([], [B_LINE])


async def test_many_guessed_sids_all_look_alike(
    tenants: Tenants, alice: ClientConnection, bob: ClientConnection
) -> None:
    """Probing call ids gives the same answer for B's live calls and for nonexistent ones."""
    core = tenants.core
    live = [await ring_b(core) for _ in range(3)]
    for _ in live:
        assert (await recv_json(bob))["type"] == "call_offer"
    ghosts = ["CA" + f"{i:032x}" for i in range(3)]
    answers = []
    for sid in live + ghosts:
        text = await expect_error(
            alice, {"type": "hangup", "id": "probe", "callSid": sid}, "CALL_NOT_FOUND"
        )
        answers.append(re.sub(r"CA[0-9a-f]{32}", "CA…", text))
    assert len(set(answers)) == 1
    assert all(core.core.calls[sid].status == CallStatus.RINGING for sid in live)
