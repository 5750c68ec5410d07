"""Security and robustness of a real core over real loopback sockets.

API keys and the token endpoint, expired and forged session tokens (HTTP and WebSocket
upgrade), protocol version negotiation, malformed input on open sockets, and the SDK's
handling of refused or unobtainable tokens. Every test uses the in-process ``core`` fixture
and waits on real messages with timeouts (no sleeps).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from softphone.engine import ClientErrorCode, Operator, OperatorError, PresenceState, TokenInfo
from softphone.protocol import CloseCode, ErrorCode
from softphone.server import CoreServer
from softphone.server.auth import TokenAuthority, new_api_key, utc_iso
from softphone.server.store import PhoneNumberRow

from .conftest import EventLog, sandbox_token

TOKEN_PATH = "/v1/operator-sessions/token"
NUMBERS_PATH = "/v1/phone-numbers"
PRESENCE_PATH = "/v1/presence"
SANDBOX_LINE = "pn_15550150"
ECHO_NUMBER = "+15550100"
SID = "CA" + "0123456789abcdef" * 2
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TIMEOUT = 3.0


# --------------------------------------------------------------------------- helpers


def ws_base(core: CoreServer) -> str:
    return "ws" + core.url.removeprefix("http")


def ws_connect(core: CoreServer, token: str | None, path: str = PRESENCE_PATH) -> connect:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return connect(
        ws_base(core) + path,
        additional_headers=headers,
        open_timeout=TIMEOUT,
        close_timeout=2.0,
        ping_interval=None,
    )


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


async def send_json(ws: ClientConnection, value: dict[str, Any]) -> None:
    await ws.send(json.dumps(value))


async def expect_closed(ws: ClientConnection, code: int) -> None:
    """The next receive sees the close (no further message) and the close code is ``code``."""
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert info.value.rcvd is not None, "the core did not send a close frame"
    assert info.value.rcvd.code == code


async def hello(ws: ClientConnection, protocol: int = 1) -> dict[str, Any]:
    await send_json(ws, {"type": "hello", "protocol": protocol, "client": "pytest"})
    return await recv_json(ws)


@contextlib.asynccontextmanager
async def presence(
    core: CoreServer, operator_ref: str = "op-1", token: str | None = None
) -> AsyncIterator[ClientConnection]:
    """An open presence socket after hello/welcome (a sandbox operator unless ``token``)."""
    if token is None:
        token = await sandbox_token(core.url, operator_ref)
    async with ws_connect(core, token) as ws:
        welcome = await hello(ws)
        assert welcome["type"] == "welcome", welcome
        assert welcome["operatorRef"] == operator_ref
        yield ws


async def assert_usable(ws: ClientConnection, tag: str) -> None:
    """A ping gets its pong and a set_availability gets its availability."""
    ts = 1000.0 + len(tag)
    await send_json(ws, {"type": "ping", "ts": ts})
    pong = await recv_json(ws)
    assert pong["type"] == "pong", pong
    assert pong["ts"] == ts
    await send_json(
        ws, {"type": "set_availability", "id": f"av-{tag}", "phoneNumberIds": [SANDBOX_LINE]}
    )
    availability = await recv_json(ws)
    assert availability == {
        "type": "availability",
        "accepted": [SANDBOX_LINE],
        "rejected": [],
        "replyTo": f"av-{tag}",
    }


def assert_error_body(response: httpx.Response, status: int, code: ErrorCode) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code.value
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


async def refused_upgrade(
    core: CoreServer, token: str | None, path: str = PRESENCE_PATH
) -> tuple[int, dict[str, Any]]:
    """Open a WebSocket that the core must refuse; return (HTTP status, error detail)."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(core, token, path):
            pass
    response = info.value.response
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(bytes(response.body or b""))
    assert set(body) == {"error"}
    return response.status_code, body["error"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def core_secret(core: CoreServer, kid: str) -> bytes:
    return next(secret for k, secret, _ in core.store.signing_keys() if k == kid)


# --------------------------------------------------------------------------- API keys


@dataclass
class Account:
    id: str
    api_key: str
    key_id: str
    secret: str
    key_hash: bytes
    number_ids: tuple[str, ...]


def make_account(core: CoreServer, account_id: str, numbers: list[tuple[str, str]]) -> Account:
    now = utc_iso(time.time())
    core.store.create_account(account_id, account_id.title(), now)
    api_key, row = new_api_key(account_id)
    core.store.add_api_key(row, now)
    for pn_id, number in numbers:
        core.store.add_phone_number(PhoneNumberRow(pn_id, account_id, number, f"Line {pn_id}"))
    key_id, _, secret = api_key.removeprefix("audin_").partition(".")
    assert key_id == row.key_id
    return Account(account_id, api_key, key_id, secret, row.hash, tuple(n for n, _ in numbers))


@pytest.fixture
def account(core: CoreServer) -> Account:
    return make_account(core, "acct_test", [("pn_t1", "+15557770001"), ("pn_t2", "+15557770002")])


@pytest.fixture
def other_account(core: CoreServer) -> Account:
    return make_account(core, "acct_other", [("pn_o1", "+15558880001")])


TOKEN_BODY = {"operatorRef": "alice", "displayName": "Alice", "phoneNumberIds": ["pn_t1"]}


async def test_token_endpoint_issues_a_working_token(
    core: CoreServer, account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": account.api_key},
            json={**TOKEN_BODY, "ttlSeconds": 120},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"token", "expiresAt"}
        assert ISO_UTC.match(body["expiresAt"])
        claims = core.tokens.verify(body["token"])
        assert claims.account_id == account.id
        assert claims.operator_ref == "alice"
        assert claims.display_name == "Alice"
        assert claims.phone_number_ids == ("pn_t1",)
        assert 110 <= claims.expires_at - time.time() <= 130
        assert body["expiresAt"] == utc_iso(claims.expires_at)
        # Neither the key nor its secret is echoed back, in the body or the headers.
        for leak in (account.api_key, account.secret):
            assert leak not in response.text
            assert all(leak not in value for value in response.headers.values())

        numbers = await client.get(
            NUMBERS_PATH, headers={"Authorization": f"Bearer {body['token']}"}
        )
        assert numbers.status_code == 200, numbers.text
        assert numbers.json() == {
            "phoneNumbers": [
                {"id": "pn_t1", "phoneNumber": "+15557770001", "displayName": "Line pn_t1"}
            ]
        }
    # The core never logs the API key, its secret or the token it issued.
    for leak in (account.api_key, account.secret, body["token"]):
        assert leak not in caplog.text


async def test_token_endpoint_defaults_to_no_numbers_and_dedupes(
    core: CoreServer, account: Account
) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        bare = await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": account.api_key},
            json={"operatorRef": "bob", "displayName": "Bob"},
        )
        assert bare.status_code == 200, bare.text
        assert core.tokens.verify(bare.json()["token"]).phone_number_ids == ()
        dup = await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": account.api_key},
            json={**TOKEN_BODY, "phoneNumberIds": ["pn_t2", "pn_t1", "pn_t2"]},
        )
        assert dup.status_code == 200, dup.text
        assert core.tokens.verify(dup.json()["token"]).phone_number_ids == ("pn_t2", "pn_t1")


def _flip(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda a: f"audin_{a.key_id}.{_flip(a.secret)}", id="wrong-secret"),
        pytest.param(lambda a: f"audin_{_flip(a.key_id)}.{a.secret}", id="unknown-key-id"),
        pytest.param(lambda a: f"audin_{a.key_id}.", id="empty-secret"),
        pytest.param(lambda a: f"audin_{a.key_id}.{a.secret}x", id="secret-with-suffix"),
        pytest.param(lambda a: a.api_key.removeprefix("audin_"), id="malformed-no-prefix"),
        pytest.param(lambda a: f"audin_{a.key_id}{a.secret}", id="malformed-no-dot"),
        pytest.param(lambda a: "garbage", id="malformed-garbage"),
        pytest.param(lambda a: f"Bearer {a.api_key}", id="malformed-bearer"),
        pytest.param(lambda a: "", id="empty"),
        pytest.param(lambda a: None, id="missing"),
    ],
)
async def test_token_endpoint_refuses_bad_api_keys(
    core: CoreServer, account: Account, make_key: Callable[[Account], str | None]
) -> None:
    key = make_key(account)
    headers = {"X-API-Key": key} if key is not None else {}
    async with httpx.AsyncClient(base_url=core.url) as client:
        # The right key works first, so a cached verification cannot let a wrong one in.
        ok = await client.post(TOKEN_PATH, headers={"X-API-Key": account.api_key}, json=TOKEN_BODY)
        assert ok.status_code == 200, ok.text
        response = await client.post(TOKEN_PATH, headers=headers, json=TOKEN_BODY)
        assert_error_body(response, 401, ErrorCode.INVALID_API_KEY)
        assert "token" not in response.json()
        assert account.secret not in response.text
        # Body validation is not reached without a valid key.
        unauth_bad_body = await client.post(TOKEN_PATH, headers=headers, content=b"{nope")
        assert_error_body(unauth_bad_body, 401, ErrorCode.INVALID_API_KEY)


async def test_token_endpoint_refuses_another_accounts_numbers(
    core: CoreServer, account: Account, other_account: Account
) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        for ids in (["pn_o1"], ["pn_t1", "pn_o1"], [SANDBOX_LINE], ["pn_does_not_exist"]):
            response = await client.post(
                TOKEN_PATH,
                headers={"X-API-Key": account.api_key},
                json={**TOKEN_BODY, "phoneNumberIds": ids},
            )
            assert_error_body(response, 403, ErrorCode.FORBIDDEN)
            assert "token" not in response.json()
        # And the other account's key cannot get a token for this account's numbers.
        response = await client.post(
            TOKEN_PATH, headers={"X-API-Key": other_account.api_key}, json=TOKEN_BODY
        )
        assert_error_body(response, 403, ErrorCode.FORBIDDEN)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"displayName": "Alice"}',
        b'{"operatorRef": "alice"}',
        b'{"operatorRef": 5, "displayName": "Alice"}',
        b'{"operatorRef": "has space", "displayName": "Alice"}',
        b'{"operatorRef": "alice", "displayName": ""}',
        b'{"operatorRef": "alice", "displayName": "Alice", "phoneNumberIds": "pn_t1"}',
        b'{"operatorRef": "alice", "displayName": "Alice", "ttlSeconds": 5}',
        b'{"operatorRef": "alice", "displayName": "Alice", "ttlSeconds": 100000}',
    ],
    ids=[
        "empty",
        "not-json",
        "array",
        "no-operator-ref",
        "no-display-name",
        "ref-not-string",
        "ref-with-space",
        "empty-display-name",
        "numbers-not-list",
        "ttl-too-short",
        "ttl-too-long",
    ],
)
async def test_token_endpoint_refuses_bad_bodies(
    core: CoreServer, account: Account, content: bytes
) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": account.api_key, "Content-Type": "application/json"},
            content=content,
        )
    assert_error_body(response, 400, ErrorCode.BAD_REQUEST)


# Regression guard; the bug was: a token request body over
# MAX_BODY_BYTES (16 KiB) is answered by aiohttp with HTTP 413 text/plain 'Maximum request body
# size 16384 exceeded.', not the JSON ErrorBody {error:{code:MESSAGE_TOO_LARGE}} that every
# non-2xx answer must carry (softphone/server/app.py errors_middleware re-raises web.HTTPException
# other than 405).
async def test_token_endpoint_oversized_body_gets_a_json_error(
    core: CoreServer, account: Account
) -> None:
    body = {**TOKEN_BODY, "pad": "x" * 20_000}
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(TOKEN_PATH, headers={"X-API-Key": account.api_key}, json=body)
    assert_error_body(response, 413, ErrorCode.MESSAGE_TOO_LARGE)


async def test_database_stores_no_plaintext_api_key(core: CoreServer, account: Account) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            TOKEN_PATH, headers={"X-API-Key": account.api_key}, json=TOKEN_BODY
        )
        assert response.status_code == 200
    data_dir = Path(core.store.path).parent
    blobs = {p.name: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    everything = b"".join(blobs.values())
    # Sanity: we are scanning the files that hold the key row (its id and hash are there)...
    assert Path(core.store.path).name in blobs
    assert account.key_id.encode() in everything
    assert account.key_hash in everything
    assert account.key_hash != account.secret.encode()
    # ...but neither the key nor its secret is stored in any form we can grep for.
    for leak in (account.api_key, account.secret):
        for encoded in (leak.encode(), leak.encode("utf-16-le"), base64.b64encode(leak.encode())):
            assert encoded not in everything, f"plaintext API key material found in {data_dir}"


# --------------------------------------------------------------------------- expired tokens


async def _expired_token(core: CoreServer) -> str:
    fresh = await sandbox_token(core.url, "op-expired")
    past = TokenAuthority(core.store, clock=lambda: time.time() - 7200)
    token, exp = past.issue(
        account_id="acct_sandbox",
        operator_ref="op-expired",
        display_name="Expired",
        phone_number_ids=(SANDBOX_LINE,),
        ttl=600,
    )
    assert exp < time.time()
    # The past authority signs with the core's own key (same kid, and the core accepts a
    # not-yet-expired token it signs), so the refusal below is about expiry only.
    assert jwt.get_unverified_header(token)["kid"] == jwt.get_unverified_header(fresh)["kid"]
    long_lived, _ = past.issue(
        account_id="acct_sandbox",
        operator_ref="op-expired",
        display_name="Expired",
        phone_number_ids=(),
        ttl=3 * 3600,
    )
    assert core.tokens.verify(long_lived).operator_ref == "op-expired"
    return token


async def test_expired_token_is_refused_over_http(core: CoreServer) -> None:
    token = await _expired_token(core)
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.get(NUMBERS_PATH, headers={"Authorization": f"Bearer {token}"})
    detail = assert_error_body(response, 401, ErrorCode.TOKEN_EXPIRED)
    assert token not in detail["message"]


async def test_expired_token_is_refused_at_websocket_upgrade(core: CoreServer) -> None:
    token = await _expired_token(core)
    status, detail = await refused_upgrade(core, token)
    assert status == 401
    assert detail["code"] == "TOKEN_EXPIRED"
    assert token not in detail["message"]


# --------------------------------------------------------------------------- forged tokens


def forge_other_secret(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    return jwt.encode(
        claims, secrets.token_bytes(32), algorithm="HS256", headers={"kid": header["kid"]}
    )


def forge_tampered_payload(core: CoreServer, real: str) -> str:
    head, _payload, signature = real.split(".")
    _, claims = unverified(real)
    claims["pns"] = [*claims["pns"], "pn_t1"]
    claims["sub"] = "someone-else"
    return f"{head}.{b64url_json(claims)}.{signature}"


def forge_extended_expiry(core: CoreServer, real: str) -> str:
    head, _payload, signature = real.split(".")
    _, claims = unverified(real)
    claims["exp"] += 86400
    return f"{head}.{b64url_json(claims)}.{signature}"


def forge_alg_none(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    return (
        f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{b64url_json(claims)}."
    )


def forge_alg_none_with_signature(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    signature = real.split(".")[2]
    head = b64url_json({"alg": "none", "typ": "JWT", "kid": header["kid"]})
    return f"{head}.{b64url_json(claims)}.{signature}"


def forge_hs512_real_key(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    key = core_secret(core, header["kid"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # 32-byte key for HS512
        return jwt.encode(claims, key, algorithm="HS512", headers={"kid": header["kid"]})


def forge_unknown_kid(core: CoreServer, real: str) -> str:
    _, claims = unverified(real)
    return jwt.encode(
        claims, secrets.token_bytes(32), algorithm="HS256", headers={"kid": "kforged"}
    )


def forge_no_kid(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    return jwt.encode(claims, core_secret(core, header["kid"]), algorithm="HS256")


def forge_wrong_issuer(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    claims["iss"] = "evil-core"
    return jwt.encode(
        claims, core_secret(core, header["kid"]), algorithm="HS256", headers={"kid": header["kid"]}
    )


def forge_missing_jti(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    del claims["jti"]
    return jwt.encode(
        claims, core_secret(core, header["kid"]), algorithm="HS256", headers={"kid": header["kid"]}
    )


def forge_unknown_account(core: CoreServer, real: str) -> str:
    header, claims = unverified(real)
    claims["acc"] = "acct_gone"
    return jwt.encode(
        claims, core_secret(core, header["kid"]), algorithm="HS256", headers={"kid": header["kid"]}
    )


def forge_garbage(core: CoreServer, real: str) -> str:
    return "garbage"


def forge_three_garbage_parts(core: CoreServer, real: str) -> str:
    return "a.b.c"


def forge_truncated(core: CoreServer, real: str) -> str:
    return real[: len(real) // 2]


def forge_bad_json_header(core: CoreServer, real: str) -> str:
    return f"{b64url(b'{not json')}.{real.split('.', 1)[1]}"


FORGERIES = [
    forge_other_secret,
    forge_tampered_payload,
    forge_extended_expiry,
    forge_alg_none,
    forge_alg_none_with_signature,
    forge_hs512_real_key,
    forge_unknown_kid,
    forge_no_kid,
    forge_wrong_issuer,
    forge_missing_jti,
    forge_unknown_account,
    forge_garbage,
    forge_three_garbage_parts,
    forge_truncated,
    forge_bad_json_header,
]


def _forgery_id(forge: Callable[..., str]) -> str:
    return forge.__name__.removeprefix("forge_").replace("_", "-")


async def test_forgery_harness_resigned_token_is_accepted(core: CoreServer) -> None:
    """Control: re-signing the same claims with the core's own key and kid is accepted, so the
    forgeries below are refused because of what was changed, not because of the harness."""
    real = await sandbox_token(core.url)
    header, claims = unverified(real)
    resigned = jwt.encode(
        claims, core_secret(core, header["kid"]), algorithm="HS256", headers={"kid": header["kid"]}
    )
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.get(NUMBERS_PATH, headers={"Authorization": f"Bearer {resigned}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("forge", FORGERIES, ids=_forgery_id)
async def test_forged_token_is_refused_over_http(
    core: CoreServer, forge: Callable[[CoreServer, str], str]
) -> None:
    token = forge(core, await sandbox_token(core.url))
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.get(NUMBERS_PATH, headers={"Authorization": f"Bearer {token}"})
    detail = assert_error_body(response, 401, ErrorCode.TOKEN_INVALID)
    assert token not in detail["message"]


@pytest.mark.parametrize("forge", FORGERIES, ids=_forgery_id)
async def test_forged_token_is_refused_at_websocket_upgrade(
    core: CoreServer, forge: Callable[[CoreServer, str], str]
) -> None:
    token = forge(core, await sandbox_token(core.url))
    status, detail = await refused_upgrade(core, token)
    assert status == 401
    assert detail["code"] == "TOKEN_INVALID"
    assert not core.core.sessions


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer"],
    ids=["missing", "empty", "bearer-only", "basic", "other-scheme", "lowercase-bearer-only"],
)
async def test_missing_bearer_token_is_auth_required(
    core: CoreServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.get(NUMBERS_PATH, headers=headers)
    assert_error_body(response, 401, ErrorCode.AUTH_REQUIRED)
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            ws_base(core) + PRESENCE_PATH, additional_headers=headers, open_timeout=TIMEOUT
        ):
            pass
    assert info.value.response.status_code == 401
    body = json.loads(bytes(info.value.response.body or b""))
    assert body["error"]["code"] == "AUTH_REQUIRED"


async def test_update_token_with_forged_or_foreign_token_is_refused(core: CoreServer) -> None:
    async with presence(core, "op-1") as ws:
        real = await sandbox_token(core.url, "op-1")
        forged = forge_other_secret(core, real)
        await send_json(ws, {"type": "update_token", "id": "t1", "token": forged})
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == "TOKEN_INVALID"
        assert error["replyTo"] == "t1"
        assert forged not in error["message"]
        other = await sandbox_token(core.url, "op-2")
        await send_json(ws, {"type": "update_token", "id": "t2", "token": other})
        error = await recv_json(ws)
        assert (error["type"], error["code"], error["replyTo"]) == ("error", "FORBIDDEN", "t2")
        await send_json(ws, {"type": "update_token", "id": "t3", "token": real})
        assert await recv_json(ws) == {"type": "ack", "replyTo": "t3"}
        await assert_usable(ws, "after-update")


async def test_open_socket_is_closed_with_4001_when_its_token_expires(core: CoreServer) -> None:
    # A token signed by the core's key that expires one to two seconds from now.
    soon = TokenAuthority(core.store, clock=lambda: time.time() - 598)
    token, exp = soon.issue(
        account_id="acct_sandbox",
        operator_ref="op-1",
        display_name="Soon Expired",
        phone_number_ids=(SANDBOX_LINE,),
        ttl=600,
    )
    assert time.time() < exp <= time.time() + 2
    async with presence(core, "op-1", token=token) as ws:
        error = await recv_json(ws, timeout=exp - time.time() + 3)
        assert (error["type"], error["code"]) == ("error", "TOKEN_EXPIRED")
        assert time.time() >= exp
        await expect_closed(ws, CloseCode.UNAUTHORIZED)


async def _api_token(core: CoreServer, account: Account, ref: str, numbers: list[str]) -> str:
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": account.api_key},
            json={"operatorRef": ref, "displayName": ref, "phoneNumberIds": numbers},
        )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


async def test_availability_is_limited_to_numbers_of_the_token(
    core: CoreServer, account: Account, other_account: Account
) -> None:
    alice = await _api_token(core, account, "alice", ["pn_t1"])
    async with presence(core, "op-1") as sandbox_ws, presence(core, "alice", alice) as alice_ws:
        await send_json(
            sandbox_ws,
            {
                "type": "set_availability",
                "id": "s1",
                "phoneNumberIds": [SANDBOX_LINE, "pn_t1", "pn_o1"],
            },
        )
        assert await recv_json(sandbox_ws) == {
            "type": "availability",
            "accepted": [SANDBOX_LINE],
            "rejected": ["pn_t1", "pn_o1"],
            "replyTo": "s1",
        }
        # pn_t2 belongs to alice's account but is not in her token.
        await send_json(
            alice_ws,
            {
                "type": "set_availability",
                "id": "a1",
                "phoneNumberIds": ["pn_t1", "pn_t2", SANDBOX_LINE],
            },
        )
        assert await recv_json(alice_ws) == {
            "type": "availability",
            "accepted": ["pn_t1"],
            "rejected": ["pn_t2", SANDBOX_LINE],
            "replyTo": "a1",
        }
        # Neither may call from a number that is not theirs.
        await send_json(
            sandbox_ws, {"type": "dial", "id": "d1", "to": ECHO_NUMBER, "callerId": "+15557770001"}
        )
        error = await recv_json(sandbox_ws)
        assert (error["type"], error["code"], error["replyTo"]) == (
            "error",
            "CALLER_ID_NOT_ALLOWED",
            "d1",
        )
        await send_json(
            alice_ws, {"type": "dial", "id": "d2", "to": ECHO_NUMBER, "callerId": "+15557770002"}
        )
        error = await recv_json(alice_ws)
        assert (error["type"], error["code"], error["replyTo"]) == (
            "error",
            "CALLER_ID_NOT_ALLOWED",
            "d2",
        )


async def test_inbound_offer_reaches_only_the_owning_account(
    core: CoreServer, account: Account
) -> None:
    alice = await _api_token(core, account, "alice", ["pn_t1"])
    async with presence(core, "op-1") as sandbox_ws, presence(core, "alice", alice) as alice_ws:
        for ws, pn in ((sandbox_ws, SANDBOX_LINE), (alice_ws, "pn_t1")):
            await send_json(ws, {"type": "set_availability", "id": "on", "phoneNumberIds": [pn]})
            assert (await recv_json(ws))["accepted"] == [pn]
        async with httpx.AsyncClient(base_url=core.url) as client:
            response = await client.post(
                "/v1/admin/inbound-calls",
                headers={"X-Admin-Key": core.admin_key},
                json={"from": "+15559990000", "to": "+15557770001"},
            )
        assert response.status_code == 201, response.text
        assert response.json()["offeredTo"] == 1
        sid = response.json()["callSid"]
        offer = await recv_json(alice_ws)
        assert (offer["type"], offer["callSid"], offer["phoneNumberId"]) == (
            "call_offer",
            sid,
            "pn_t1",
        )
        # The sandbox operator got nothing before its pong, and cannot take the call.
        await send_json(sandbox_ws, {"type": "ping", "ts": 5.0})
        assert (await recv_json(sandbox_ws))["type"] == "pong"
        await send_json(sandbox_ws, {"type": "accept", "id": "steal", "callSid": sid})
        error = await recv_json(sandbox_ws)
        assert (error["type"], error["code"], error["replyTo"]) == (
            "error",
            "CALL_NOT_FOUND",
            "steal",
        )
        await send_json(sandbox_ws, {"type": "hangup", "id": "kill", "callSid": sid})
        error = await recv_json(sandbox_ws)
        assert (error["type"], error["code"], error["replyTo"]) == (
            "error",
            "CALL_NOT_FOUND",
            "kill",
        )


async def test_admin_endpoints_require_the_admin_key(core: CoreServer) -> None:
    operator_token = await sandbox_token(core.url)
    inbound = {"from": "+15559990000", "to": "+15550150"}
    async with httpx.AsyncClient(base_url=core.url) as client:
        for headers in (
            {},
            {"X-Admin-Key": ""},
            {"X-Admin-Key": core.admin_key + "x"},
            {"X-Admin-Key": core.admin_key[:-1]},
            {"Authorization": f"Bearer {operator_token}"},
            {"X-API-Key": core.admin_key},
        ):
            response = await client.post("/v1/admin/inbound-calls", headers=headers, json=inbound)
            assert_error_body(response, 403, ErrorCode.FORBIDDEN)
            for method, path in (
                ("GET", f"/v1/admin/calls/{SID}"),
                ("POST", f"/v1/admin/calls/{SID}/hangup"),
            ):
                response = await client.request(method, path, headers=headers)
                assert_error_body(response, 403, ErrorCode.FORBIDDEN)
        assert core.admin_key not in response.text
        # Control: the right key is accepted.
        ok = await client.post(
            "/v1/admin/inbound-calls", headers={"X-Admin-Key": core.admin_key}, json=inbound
        )
        assert ok.status_code == 201, ok.text


# --------------------------------------------------------------------------- versions


async def test_hello_with_unsupported_version_is_refused_with_4002(core: CoreServer) -> None:
    token = await sandbox_token(core.url)
    async with ws_connect(core, token) as ws:
        error = await hello(ws, protocol=2)
        assert error["type"] == "error"
        assert error["code"] == "UNSUPPORTED_VERSION"
        assert "1" in error["message"]
        await expect_closed(ws, CloseCode.UNSUPPORTED_VERSION)
    assert not core.core.sessions


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"type":"ping","ts":1}', "UNEXPECTED_MESSAGE"),
        ('{"type":"set_availability","id":"x","phoneNumberIds":[]}', "UNEXPECTED_MESSAGE"),
        ("not json", "MALFORMED_MESSAGE"),
        ('{"type":"hello"}', "MALFORMED_MESSAGE"),
        ('{"type":"hello","protocol":"1"}', "MALFORMED_MESSAGE"),
        ('{"type":"frobnicate"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type":"mute","muted":true}', "UNEXPECTED_MESSAGE"),
        (b"\x01\x00\x00\x01", "UNEXPECTED_MESSAGE"),
    ],
    ids=[
        "ping",
        "set-availability",
        "garbage",
        "hello-no-protocol",
        "hello-bad-protocol",
        "unknown-type",
        "media-only",
        "binary",
    ],
)
async def test_first_message_must_be_a_valid_hello(
    core: CoreServer, first: str | bytes, code: str
) -> None:
    token = await sandbox_token(core.url)
    async with ws_connect(core, token) as ws:
        await ws.send(first)
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        await expect_closed(ws, CloseCode.PROTOCOL_ERROR)
    assert not core.core.sessions


async def test_http_unsupported_version_lists_supported_versions(core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        for method, path in (
            ("GET", "/v2/phone-numbers"),
            ("POST", "/v2/operator-sessions/token"),
            ("GET", "/v0/health"),
            ("GET", "/v2"),
        ):
            response = await client.request(method, path)
            detail = assert_error_body(response, 400, ErrorCode.UNSUPPORTED_VERSION)
            assert detail["supportedVersions"] == [1]
        not_found = await client.get("/v1/no-such-endpoint")
        detail = assert_error_body(not_found, 404, ErrorCode.NOT_FOUND)
        assert "supportedVersions" not in detail
    status, detail = await refused_upgrade(core, await sandbox_token(core.url), "/v2/presence")
    assert status == 400
    assert detail["code"] == "UNSUPPORTED_VERSION"
    assert detail["supportedVersions"] == [1]


async def test_plain_http_get_on_a_websocket_path_gets_a_json_error(core: CoreServer) -> None:
    token = await sandbox_token(core.url)
    async with httpx.AsyncClient(base_url=core.url) as client:
        unauthenticated = await client.get(PRESENCE_PATH)
        assert_error_body(unauthenticated, 401, ErrorCode.AUTH_REQUIRED)
        no_upgrade = await client.get(PRESENCE_PATH, headers={"Authorization": f"Bearer {token}"})
        assert_error_body(no_upgrade, 400, ErrorCode.BAD_REQUEST)
    assert not core.core.sessions


# --------------------------------------------------------------------------- malformed input


MALFORMED_ON_PRESENCE: list[tuple[str, str | bytes, str, str | None]] = [
    ("garbage", "this is {not json", "MALFORMED_MESSAGE", None),
    ("json-array", '[{"type":"ping","ts":1}]', "MALFORMED_MESSAGE", None),
    ("no-type", '{"id":"n1","ts":1}', "MALFORMED_MESSAGE", "n1"),
    ("unknown-type", '{"type":"frobnicate","id":"u1"}', "UNKNOWN_MESSAGE_TYPE", "u1"),
    (
        "bad-field",
        '{"type":"set_availability","id":"b1","phoneNumberIds":"pn"}',
        "MALFORMED_MESSAGE",
        "b1",
    ),
    ("bad-callsid", '{"type":"accept","id":"b2","callSid":"CA1"}', "MALFORMED_MESSAGE", "b2"),
    ("missing-field", '{"type":"ping","id":"m1"}', "MALFORMED_MESSAGE", "m1"),
    ("binary", b"\x01\x00\x00\x01" + b"\x00" * 164, "UNEXPECTED_MESSAGE", None),
    ("media-only", '{"type":"mute","muted":true}', "UNEXPECTED_MESSAGE", None),
    (
        "core-message",
        '{"type":"pong","id":"c1","ts":1,"serverTime":"2024-01-01T00:00:00Z"}',
        "UNEXPECTED_MESSAGE",
        "c1",
    ),
    ("second-hello", '{"type":"hello","protocol":1,"id":"h2"}', "UNEXPECTED_MESSAGE", "h2"),
    (
        "too-large",
        json.dumps({"type": "ping", "id": "big1", "ts": 1, "pad": "x" * 20_000}),
        "MESSAGE_TOO_LARGE",
        "big1",
    ),
    ("bad-number", '{"type":"dial","id":"d1","to":"5550100"}', "INVALID_NUMBER", "d1"),
    (
        "unknown-call",
        json.dumps({"type": "accept", "id": "a1", "callSid": SID}),
        "CALL_NOT_FOUND",
        "a1",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "reply_to"),
    [pytest.param(p, c, r, id=i) for i, p, c, r in MALFORMED_ON_PRESENCE],
)
async def test_malformed_message_on_presence_is_answered_and_socket_stays_usable(
    core: CoreServer, payload: str | bytes, code: str, reply_to: str | None
) -> None:
    async with presence(core) as ws:
        await assert_usable(ws, "before")
        await ws.send(payload)
        error = await recv_json(ws)
        assert error["type"] == "error", error
        assert error["code"] == code
        assert error.get("replyTo") == reply_to
        assert error["message"]
        await assert_usable(ws, "after")
        # The session stayed registered with the core the whole time.
        assert len(core.core.sessions) == 1


async def test_garbage_on_one_socket_does_not_disturb_another_operator(core: CoreServer) -> None:
    async with presence(core, "op-noisy") as noisy, presence(core, "op-calm") as calm:

        async def make_noise() -> None:
            for i in range(19):  # stays under the 20-error limit
                await noisy.send(f"garbage #{i}" if i % 2 else b"\x00" * i)
                error = await recv_json(noisy)
                assert error["type"] == "error"

        async def keep_working() -> None:
            await send_json(calm, {"type": "ping", "ts": 42.0})
            pong = await recv_json(calm)
            assert (pong["type"], pong["ts"]) == ("pong", 42.0)
            await send_json(calm, {"type": "dial", "id": "call-1", "to": ECHO_NUMBER})
            while (created := await recv_json(calm))["type"] != "call_created":
                assert created["type"] not in ("error", "call_ended"), created
            assert created["replyTo"] == "call-1"
            assert created["to"] == ECHO_NUMBER
            assert re.match(r"^CA[0-9a-f]{32}$", created["callSid"])

        await asyncio.gather(make_noise(), keep_working())
        await assert_usable(noisy, "noisy")


async def test_twenty_consecutive_invalid_messages_close_with_4000(core: CoreServer) -> None:
    async with presence(core) as ws:
        for i in range(20):
            await ws.send(f"not json {i}")
            error = await recv_json(ws)
            assert (error["type"], error["code"]) == ("error", "MALFORMED_MESSAGE")
        await expect_closed(ws, CloseCode.PROTOCOL_ERROR)


async def test_a_valid_message_resets_the_invalid_message_count(core: CoreServer) -> None:
    async with presence(core) as ws:
        for round_ in range(3):
            for i in range(19):
                await ws.send(f"not json {round_}.{i}")
                assert (await recv_json(ws))["type"] == "error"
            await assert_usable(ws, f"round-{round_}")


# Regression guard; the bug was: a 4 KB text frame nesting
# JSON ~2000 levels deep makes decode_message / request_id_of raise RecursionError inside
# CoreServer._read_loop; the presence handler dies (session closed on the core, 'request GET
# /v1/presence failed' logged) but the socket is neither answered nor closed, so the client hangs
# until its own timeout.
async def test_deeply_nested_json_is_answered_and_socket_stays_usable(core: CoreServer) -> None:
    async with presence(core) as ws:
        await ws.send("[" * 2000 + "]" * 2000)
        error = await recv_json(ws)
        assert (error["type"], error["code"]) == ("error", "MALFORMED_MESSAGE")
        await assert_usable(ws, "after-nesting")


# Regression guard; the bug was: validate_e164 accepts a
# trailing newline ('$' in E164_PATTERN), so the core creates a call to '+15550100\n' instead of
# answering INVALID_NUMBER.
async def test_dial_to_number_with_trailing_newline_is_invalid(core: CoreServer) -> None:
    async with presence(core) as ws:
        await send_json(ws, {"type": "dial", "id": "nl", "to": ECHO_NUMBER + "\n"})
        reply = await recv_json(ws)
        assert (reply["type"], reply.get("code"), reply["replyTo"]) == (
            "error",
            "INVALID_NUMBER",
            "nl",
        )


# --------------------------------------------------------------------------- media legs


async def recv_text_json(ws: ClientConnection) -> dict[str, Any]:
    """The next text message of a media leg, skipping binary audio frames."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                value = json.loads(raw)
                assert isinstance(value, dict)
                return value


async def recv_audio(ws: ClientConnection) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                return raw
            assert json.loads(raw)["type"] not in ("error", "call_ended"), raw


async def dial_echo(ws: ClientConnection) -> str:
    await send_json(ws, {"type": "dial", "id": "dial-echo", "to": ECHO_NUMBER})
    while (created := await recv_json(ws))["type"] != "call_created":
        assert created["type"] not in ("error", "call_ended"), created
    sid = created["callSid"]
    assert isinstance(sid, str)
    return sid


@contextlib.asynccontextmanager
async def echo_media_leg(
    core: CoreServer, presence_ws: ClientConnection, operator: str = "op-1"
) -> AsyncIterator[tuple[str, ClientConnection]]:
    """Dial the echo line on ``presence_ws`` and open the call's media leg (``hello`` ->
    ``media_ready``): yields the call sid and the media WebSocket."""
    sid = await dial_echo(presence_ws)
    token = await sandbox_token(core.url, operator)
    async with ws_connect(core, token, f"/v1/calls/{sid}/media") as media:
        await send_json(media, {"type": "hello", "protocol": 1})
        assert (await recv_text_json(media))["type"] == "media_ready"
        yield sid, media


async def test_media_leg_access_control(core: CoreServer, account: Account) -> None:
    async with presence(core, "op-1") as ws:
        sid = await dial_echo(ws)
        media_path = f"/v1/calls/{sid}/media"
        owner = await sandbox_token(core.url, "op-1")
        colleague = await sandbox_token(core.url, "op-2")
        async with httpx.AsyncClient(base_url=core.url) as client:
            response = await client.post(
                TOKEN_PATH, headers={"X-API-Key": account.api_key}, json=TOKEN_BODY
            )
            stranger = response.json()["token"]
        # Same account, other operator: forbidden. Other account: the call does not exist.
        status, detail = await refused_upgrade(core, colleague, media_path)
        assert (status, detail["code"]) == (403, "FORBIDDEN")
        status, detail = await refused_upgrade(core, stranger, media_path)
        assert (status, detail["code"]) == (404, "CALL_NOT_FOUND")
        status, detail = await refused_upgrade(core, forge_other_secret(core, owner), media_path)
        assert (status, detail["code"]) == (401, "TOKEN_INVALID")
        status, detail = await refused_upgrade(core, None, media_path)
        assert (status, detail["code"]) == (401, "AUTH_REQUIRED")
        for other_path in (f"/v1/calls/CA{'f' * 32}/media", "/v1/calls/not-a-sid/media"):
            status, detail = await refused_upgrade(core, owner, other_path)
            assert (status, detail["code"]) == (404, "CALL_NOT_FOUND")
        # The owner may open it.
        async with ws_connect(core, owner, media_path) as media:
            await send_json(media, {"type": "hello", "protocol": 1})
            ready = await recv_text_json(media)
            assert ready["type"] == "media_ready"
            assert ready["callSid"] == sid


async def test_media_leg_refuses_unsupported_version(core: CoreServer) -> None:
    async with presence(core, "op-1") as ws:
        sid = await dial_echo(ws)
        token = await sandbox_token(core.url, "op-1")
        async with ws_connect(core, token, f"/v1/calls/{sid}/media") as media:
            error = await hello(media, protocol=2)
            assert (error["type"], error["code"]) == ("error", "UNSUPPORTED_VERSION")
            await expect_closed(media, CloseCode.UNSUPPORTED_VERSION)


MALFORMED_ON_MEDIA: list[tuple[str, str | bytes, str, str | None]] = [
    ("garbage", "{{{", "MALFORMED_MESSAGE", None),
    ("short-frame", b"\x01\x00\x00\x01", "MALFORMED_FRAME", None),
    ("long-frame", b"\x01\x00\x00\x01" + b"\x00" * 200, "MALFORMED_FRAME", None),
    ("bad-kind", b"\x02\x00\x00\x01\x00\x00\x00\xa0" + b"\xff" * 160, "MALFORMED_FRAME", None),
    ("reserved-flag", b"\x01\x80\x00\x01\x00\x00\x00\xa0" + b"\xff" * 160, "MALFORMED_FRAME", None),
    ("bad-dtmf", '{"type":"dtmf","digits":"12x"}', "MALFORMED_MESSAGE", None),
    ("presence-only", '{"type":"dial","id":"p1","to":"+15550100"}', "UNEXPECTED_MESSAGE", "p1"),
    ("unknown-type", '{"type":"frobnicate","id":"u1"}', "UNKNOWN_MESSAGE_TYPE", "u1"),
]


@pytest.mark.parametrize(
    ("payload", "code", "reply_to"),
    [pytest.param(p, c, r, id=i) for i, p, c, r in MALFORMED_ON_MEDIA],
)
async def test_malformed_input_on_media_is_answered_and_leg_stays_usable(
    core: CoreServer, payload: str | bytes, code: str, reply_to: str | None
) -> None:
    async with presence(core, "op-1") as ws, echo_media_leg(core, ws) as (_, media):
        await media.send(payload)
        error = await recv_text_json(media)
        assert error["type"] == "error", error
        assert error["code"] == code
        assert error.get("replyTo") == reply_to
        await send_json(media, {"type": "ping", "ts": 7.0})
        pong = await recv_text_json(media)
        assert (pong["type"], pong["ts"]) == ("pong", 7.0)
        # Audio still flows: the echo line sends our frame straight back.
        payload_in = bytes(range(160))
        await media.send(b"\x01\x01\x00\x00\x00\x00\x00\x00" + payload_in)
        echoed = await recv_audio(media)
        assert len(echoed) == 168
        assert echoed[8:] == payload_in


# --------------------------------------------------------------------------- SDK side


class CountingGetToken:
    def __init__(self, result: Callable[[], Any]) -> None:
        self.calls = 0
        self._result = result

    async def __call__(self) -> Any:
        self.calls += 1
        return self._result()


def assert_no_token(error: BaseException, *tokens: str) -> None:
    for token in tokens:
        for text in (str(error), repr(error), getattr(error, "message", "")):
            assert token not in text


async def test_sdk_list_numbers_with_forged_token_retries_once_then_unauthorized(
    core: CoreServer,
) -> None:
    forged = forge_other_secret(core, await sandbox_token(core.url))
    get_token = CountingGetToken(lambda: forged)
    operator = Operator(core.url, get_token, request_timeout=TIMEOUT, audio="null")
    try:
        with pytest.raises(OperatorError) as info:
            await operator.list_phone_numbers()
        assert info.value.code == ClientErrorCode.UNAUTHORIZED
        assert get_token.calls == 2
        assert_no_token(info.value, forged)
        assert operator.token is not None
        assert forged not in operator.token
    finally:
        await operator.close()


async def test_sdk_go_online_with_forged_token_fails_and_returns_offline(
    core: CoreServer,
) -> None:
    forged = forge_tampered_payload(core, await sandbox_token(core.url))
    get_token = CountingGetToken(lambda: {"token": forged, "expiresAt": "2099-01-01T00:00:00Z"})
    operator = Operator(
        core.url, get_token, request_timeout=TIMEOUT, audio="null", reconnect_backoff=(0.05,)
    )
    events = EventLog(operator)
    try:
        with pytest.raises(OperatorError) as info:
            await operator.go_online([SANDBOX_LINE])
        assert info.value.code == ErrorCode.TOKEN_INVALID
        assert operator.state == PresenceState.OFFLINE
        assert events.of("presence_state_changed") == [
            PresenceState.CONNECTING,
            PresenceState.OFFLINE,
        ]
        assert get_token.calls == 1
        assert_no_token(info.value, forged)
        for error in events.of("error"):
            assert_no_token(error, forged)
        assert not core.core.sessions
    finally:
        await operator.close()


async def test_sdk_go_online_with_expired_token_fails_with_token_expired(
    core: CoreServer,
) -> None:
    expired = await _expired_token(core)
    operator = Operator(
        core.url, CountingGetToken(lambda: expired), request_timeout=TIMEOUT, audio="null"
    )
    try:
        with pytest.raises(OperatorError) as info:
            await operator.go_online([SANDBOX_LINE])
        assert info.value.code == ErrorCode.TOKEN_EXPIRED
        assert operator.state == PresenceState.OFFLINE
        assert_no_token(info.value, expired)
    finally:
        await operator.close()


async def test_sdk_get_token_failure_is_token_fetch_failed(core: CoreServer) -> None:
    def boom() -> str:
        raise RuntimeError("token backend is down")

    get_token = CountingGetToken(boom)
    operator = Operator(core.url, get_token, request_timeout=TIMEOUT, audio="null")
    events = EventLog(operator)
    try:
        with pytest.raises(OperatorError) as info:
            await operator.go_online([SANDBOX_LINE])
        assert info.value.code == ClientErrorCode.TOKEN_FETCH_FAILED
        assert isinstance(info.value.cause, RuntimeError)
        assert operator.state == PresenceState.OFFLINE
        error = await events.wait_for("error", timeout=TIMEOUT)
        assert isinstance(error, OperatorError)
        assert error.code == ClientErrorCode.TOKEN_FETCH_FAILED
        with pytest.raises(OperatorError) as listing:
            await operator.list_phone_numbers()
        assert listing.value.code == ClientErrorCode.TOKEN_FETCH_FAILED
        assert get_token.calls == 2
        assert not core.core.sessions
    finally:
        await operator.close()


@pytest.mark.parametrize(
    "result",
    [pytest.param({}, id="no-token"), pytest.param("", id="empty"), pytest.param(42, id="int")],
)
async def test_sdk_get_token_with_unusable_result_is_token_fetch_failed(
    core: CoreServer, result: object
) -> None:
    operator = Operator(
        core.url, CountingGetToken(lambda: result), request_timeout=TIMEOUT, audio="null"
    )
    try:
        with pytest.raises(OperatorError) as info:
            await operator.go_online([SANDBOX_LINE])
        assert info.value.code == ClientErrorCode.TOKEN_FETCH_FAILED
        assert operator.state == PresenceState.OFFLINE
    finally:
        await operator.close()


async def test_sdk_never_shows_the_raw_token(
    core: CoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient() as client:
        response = await client.post(core.url + "/sandbox/token", json={"operatorRef": "op-1"})
    body = response.json()
    raw = body["token"]
    info = TokenInfo(raw)
    dated = TokenInfo(raw, expires_at=datetime.now(UTC))
    for value in (info, dated):
        assert raw not in str(value)
        assert raw not in repr(value)
        assert raw not in f"{value}"
        assert raw not in f"{[value]}"
    operator = Operator(
        core.url, CountingGetToken(lambda: body), request_timeout=TIMEOUT, audio="null"
    )
    try:
        result = await operator.go_online([SANDBOX_LINE])
        assert result.accepted == (SANDBOX_LINE,)
        assert operator.token is not None
        assert raw not in operator.token
        assert raw not in repr(operator._token)
        numbers = await operator.list_phone_numbers()
        assert {n.id for n in numbers} == {"pn_15550150", "pn_15550151"}
    finally:
        await operator.close()
    # Neither the SDK nor the core logs the token (third-party libraries are not checked).
    ours = [r for r in caplog.records if r.name.startswith("audin")]
    assert ours, "expected some audin log records at DEBUG"
    for record in ours:
        assert raw not in record.getMessage()
