"""Administration with ``audin-core``: accounts, API keys, numbers (straight into the
database, seen by the running core), operators online, call lists and signing-key rotation
(through the running core's admin API).

The commands run in-process (``softphone.server.cli.main``; in a worker thread when they
talk to a core served by the test's event loop) against a real core on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from softphone.engine import PresenceState
from softphone.protocol import CloseCode, ErrorCode
from softphone.server import CoreConfig, CoreServer
from softphone.server.cli import main
from softphone.server.core import CoreTimings

from .conftest import EventLog, sandbox_operator, sandbox_token
from .test_security import (
    assert_error_body,
    assert_usable,
    dial_echo,
    expect_closed,
    presence,
    recv_json,
    send_json,
)

TOKEN_PATH = "/v1/operator-sessions/token"


class Cli:
    """Runs ``audin-core`` commands in-process and captures what they print."""

    def __init__(self, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
        self._capsys = capsys
        self.data_dir = data_dir

    def run(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        out, err = self._capsys.readouterr()
        return code, out, err

    def db(self, *args: str) -> tuple[int, str, str]:
        """A database command on this data folder."""
        return self.run(*args, "--data-dir", str(self.data_dir))

    def db_json(self, *args: str) -> Any:
        code, out, err = self.db(*args, "--json")
        assert code == 0, (args, out, err)
        return json.loads(out)

    async def admin(self, core: CoreServer, *args: str) -> tuple[int, str, str]:
        """An admin API command against ``core`` (run in a thread: the core is on our loop)."""
        return await asyncio.to_thread(
            self.run, *args, "--core-url", core.url, "--data-dir", str(self.data_dir)
        )

    async def admin_json(self, core: CoreServer, *args: str) -> Any:
        code, out, err = await self.admin(core, *args, "--json")
        assert code == 0, (args, out, err)
        return json.loads(out)


@pytest.fixture
async def prod_core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """A production (not sandbox) core: its database is ``<data dir>/core.db``."""
    server = CoreServer(CoreConfig(data_dir=tmp_path / "data", port=0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def token_status(core: CoreServer, api_key: str, numbers: list[str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=core.url) as client:
        return await client.post(
            TOKEN_PATH,
            headers={"X-API-Key": api_key},
            json={"operatorRef": "alice", "displayName": "Alice", "phoneNumberIds": numbers},
        )


# --------------------------------------------------------------------------- help


def test_help_documents_every_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cli = Cli(capsys, tmp_path)
    code, out, _ = cli.run("--help")
    assert code == 0
    for words in (
        "account create",
        "account list",
        "key rotate ACCOUNT_ID [--keep-old]",
        "key revoke KEY_ID",
        "key list ACCOUNT_ID",
        "number add ACCOUNT_ID E164 [--name NAME]",
        "number remove E164",
        "number list [ACCOUNT_ID]",
        "operators",
        "calls [--active] [--account ID] [--limit N]",
        "signing-key rotate [--revoke-previous]",
        "--tls-cert",
        "--tls-key",
        "--token-rate",
        "--token-burst",
        "--max-connections-per-token",
        "--sandbox acts on sandbox.db",
    ):
        assert words in out, words
    for command in (
        ["account", "create"],
        ["account", "list"],
        ["key", "rotate"],
        ["key", "revoke"],
        ["key", "list"],
        ["number", "add"],
        ["number", "remove"],
        ["number", "list"],
        ["operators"],
        ["calls"],
        ["signing-key"],
    ):
        code, out, _ = cli.run(*command, "--help")
        assert code == 0, command
        assert "usage: audin-core" in out


# --------------------------------------------------------------------------- database commands


async def test_accounts_keys_and_numbers_on_a_running_core(
    prod_core: CoreServer, capsys: pytest.CaptureFixture[str]
) -> None:
    core = prod_core
    cli = Cli(capsys, core.config.data_dir)
    created = cli.db_json("account", "create", "Acme", "--number", "+15551230000")
    account, key1 = created["accountId"], created["apiKey"]
    line1 = created["numbers"][0]["id"]
    assert created["keyId"] in key1
    assert (await token_status(core, key1, [line1])).status_code == 200

    listed = cli.db_json("account", "list")["accounts"]
    assert [(a["accountId"], a["name"], a["numbers"], a["activeKeys"]) for a in listed] == [
        (account, "Acme", 1, 1)
    ]

    # Numbers: an added number is usable at once, a removed one is refused at once.
    added = cli.db_json("number", "add", account, "+15551230001", "--name", "Support")
    line2 = added["id"]
    assert (added["phoneNumber"], added["displayName"]) == ("+15551230001", "Support")
    response = await token_status(core, key1, [line1, line2])
    assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=core.url) as client:
        numbers = await client.get(
            "/v1/phone-numbers", headers={"Authorization": f"Bearer {response.json()['token']}"}
        )
    assert [n["phoneNumber"] for n in numbers.json()["phoneNumbers"]] == [
        "+15551230000",
        "+15551230001",
    ]
    code, _, err = cli.db("number", "add", account, "+15551230001")
    assert code == 1
    assert "already belongs" in err
    code, _, err = cli.db("number", "add", "ACnope", "+15551230009")
    assert code == 1
    assert "no account ACnope" in err
    code, _, err = cli.db("number", "add", account, "15551230009")
    assert code == 2
    assert cli.db_json("number", "list", account)["phoneNumbers"] == [
        {
            "id": line1,
            "accountId": account,
            "phoneNumber": "+15551230000",
            "displayName": "+15551230000",
        },
        {
            "id": line2,
            "accountId": account,
            "phoneNumber": "+15551230001",
            "displayName": "Support",
        },
    ]
    assert len(cli.db_json("number", "list")["phoneNumbers"]) == 2
    removed = cli.db_json("number", "remove", "+15551230001")
    assert removed["id"] == line2
    assert_error_body(await token_status(core, key1, [line2]), 403, ErrorCode.FORBIDDEN)
    async with httpx.AsyncClient(base_url=core.url) as client:
        inbound = await client.post(
            "/v1/admin/inbound-calls",
            headers={"X-Admin-Key": core.admin_key},
            json={"from": "+15559990000", "to": "+15551230001"},
        )
    assert_error_body(inbound, 404, ErrorCode.NOT_FOUND)
    code, _, err = cli.db("number", "remove", "+15551230001")
    assert code == 1
    assert "no account owns" in err

    # Keys: rotation with --keep-old keeps both; plain rotation revokes the others at once,
    # although the core has them cached from the requests just made.
    rotated = cli.db_json("key", "rotate", account, "--keep-old")
    key2 = rotated["apiKey"]
    assert rotated["revoked"] == []
    for key in (key1, key2):
        assert (await token_status(core, key, [line1])).status_code == 200
    rotated = cli.db_json("key", "rotate", account)
    key3 = rotated["apiKey"]
    assert sorted(rotated["revoked"]) == sorted(
        [created["keyId"], key2.removeprefix("audin_").split(".")[0]]
    )
    for key in (key1, key2):
        assert_error_body(await token_status(core, key, [line1]), 401, ErrorCode.INVALID_API_KEY)
    assert (await token_status(core, key3, [line1])).status_code == 200
    key3_id = rotated["keyId"]
    revoked = cli.db_json("key", "revoke", key3_id)
    assert revoked["keyId"] == key3_id
    assert revoked["revokedAt"]
    assert_error_body(await token_status(core, key3, [line1]), 401, ErrorCode.INVALID_API_KEY)
    code, _, err = cli.db("key", "revoke", "000000000000")
    assert code == 1
    assert "no API key" in err

    # Listing shows ids and dates, never a secret or hash.
    code, out, _ = cli.db("key", "list", account)
    assert code == 0
    assert "KEY ID" in out
    for key in (key1, key2, key3):
        key_id, _, secret = key.removeprefix("audin_").partition(".")
        assert key_id in out
        assert secret not in out
    keys = cli.db_json("key", "list", account)["keys"]
    assert len(keys) == 3
    assert all(k["revokedAt"] for k in keys)
    assert set(keys[0]) == {"keyId", "createdAt", "revokedAt"}
    assert cli.db_json("account", "list")["accounts"][0]["activeKeys"] == 0


async def test_database_commands_take_sandbox_for_a_sandbox_core(
    core: CoreServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, core.config.data_dir)
    assert core.config.db_path.name == "sandbox.db"
    # Without --sandbox the commands look for core.db, which this folder does not have.
    code, _, err = cli.db("number", "list")
    assert code == 1
    assert "core.db" in err
    assert not (core.config.data_dir / "core.db").exists()
    added = cli.db_json("number", "add", "acct_sandbox", "+15550152", "--sandbox")
    token = await sandbox_token(core.url)
    async with httpx.AsyncClient(base_url=core.url) as client:
        numbers = await client.get(
            "/v1/phone-numbers", headers={"Authorization": f"Bearer {token}"}
        )
    assert added["id"] in {n["id"] for n in numbers.json()["phoneNumbers"]}
    accounts = cli.db_json("account", "list", "--sandbox")["accounts"]
    assert [(a["accountId"], a["numbers"]) for a in accounts] == [("acct_sandbox", 3)]
    made = cli.db_json("account", "create", "Second", "--sandbox")
    with sqlite3.connect(core.config.db_path) as db:
        assert db.execute("SELECT name FROM accounts WHERE id = ?", (made["accountId"],)).fetchone()


# --------------------------------------------------------------------------- admin API commands


async def test_operators_and_calls_commands(
    core: CoreServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, core.config.data_dir)
    assert (await cli.admin_json(core, "operators"))["operators"] == []
    code, out, _ = await cli.admin(core, "operators")
    assert (code, out.strip()) == (0, "no operators online")
    async with presence(core, "op-1") as ws:
        await send_json(
            ws, {"type": "set_availability", "id": "a", "phoneNumberIds": ["pn_15550150"]}
        )
        assert (await recv_json(ws))["accepted"] == ["pn_15550150"]
        sid = await dial_echo(ws)
        operators = (await cli.admin_json(core, "operators"))["operators"]
        assert len(operators) == 1
        op = operators[0]
        assert (op["accountId"], op["operatorRef"], op["displayName"]) == (
            "acct_sandbox",
            "op-1",
            "Sandbox Operator",
        )
        assert op["availableOn"] == ["pn_15550150"]
        assert op["callSid"] == sid
        assert op["sessionId"].startswith("OS")
        assert set(op) == {
            "sessionId",
            "accountId",
            "operatorRef",
            "displayName",
            "availableOn",
            "onlineSince",
            "tokenExpiresAt",
            "callSid",
        }
        assert (await cli.admin_json(core, "operators", "--account", "acct_x"))["operators"] == []
        active = (await cli.admin_json(core, "calls", "--active"))["calls"]
        assert [c["callSid"] for c in active] == [sid]
        assert active[0]["status"] != "completed"
        code, out, _ = await cli.admin(core, "calls", "--active")
        assert code == 0
        assert "CALL" in out
        assert sid in out
        await send_json(ws, {"type": "hangup", "id": "h", "callSid": sid})
        while (await recv_json(ws))["type"] != "ack":
            pass
    assert (await cli.admin_json(core, "calls", "--active"))["calls"] == []
    calls = (await cli.admin_json(core, "calls", "--account", "acct_sandbox"))["calls"]
    # No media leg was opened, so the call never got past initiated: hanging up cancels it.
    assert [(c["callSid"], c["status"], c["endReason"]) for c in calls] == [
        (sid, "completed", "cancelled")
    ]
    assert (await cli.admin_json(core, "calls", "--account", "acct_x"))["calls"] == []
    # Newest first, bounded by --limit.
    await core.core.place_inbound("+15559990001", "+15550150", {})
    second = (await cli.admin_json(core, "calls", "--limit", "1"))["calls"]
    assert len(second) == 1
    assert second[0]["callSid"] != sid
    assert second[0]["direction"] == "inbound"
    code, _, _ = await cli.admin(core, "calls", "--limit", "0")
    assert code == 2
    async with httpx.AsyncClient(base_url=core.url) as client:
        for query in ("limit=0", "limit=1001", "limit=x", "active=maybe"):
            response = await client.get(
                f"/v1/admin/calls?{query}", headers={"X-Admin-Key": core.admin_key}
            )
            assert_error_body(response, 400, ErrorCode.BAD_REQUEST)


async def test_admin_commands_report_an_unreachable_core(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cli = Cli(capsys, tmp_path)
    code, _, err = cli.run(
        "operators", "--core-url", "http://127.0.0.1:9", "--admin-key", "adm_x" * 5
    )
    assert code == 3
    assert "cannot reach the core" in err


async def test_new_admin_endpoints_require_the_admin_key(core: CoreServer) -> None:
    operator_token = await sandbox_token(core.url)
    before = core.store.signing_key_rows()
    async with httpx.AsyncClient(base_url=core.url) as client:
        for headers in (
            {},
            {"X-Admin-Key": core.admin_key + "x"},
            {"Authorization": f"Bearer {operator_token}"},
        ):
            for method, path in (
                ("GET", "/v1/admin/operators"),
                ("GET", "/v1/admin/calls"),
                ("GET", "/v1/admin/signing-keys"),
                ("POST", "/v1/admin/signing-keys"),
            ):
                response = await client.request(method, path, headers=headers)
                assert_error_body(response, 403, ErrorCode.FORBIDDEN)
    assert core.store.signing_key_rows() == before


# --------------------------------------------------------------------------- signing keys


async def test_signing_key_rotation_and_revocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = CoreConfig(
        data_dir=tmp_path / "core", port=0, sandbox=True, timings=CoreTimings(echo_ring=0.0)
    )
    core = CoreServer(config)
    await core.start()
    cli = Cli(capsys, config.data_dir)
    operator = sandbox_operator(core.url, "op-sdk", reconnect_backoff=(0.05,))
    events = EventLog(operator)
    try:
        first_kid = core.tokens.active_kid
        old = await sandbox_token(core.url, "op-1")
        await operator.go_online(["pn_15550151"])
        async with presence(core, "op-1", old) as ws:
            rotated = await cli.admin_json(core, "signing-key", "rotate")
            assert rotated["revoked"] == []
            assert rotated["closedSockets"] == 0
            second_kid = rotated["kid"]
            assert second_kid != first_kid
            new = await sandbox_token(core.url, "op-2")
            assert jwt.get_unverified_header(new)["kid"] == second_kid
            # Old tokens keep working: on open sockets and on new requests.
            await assert_usable(ws, "after-rotate")
            async with httpx.AsyncClient(base_url=core.url) as client:
                ok = await client.get(
                    "/v1/phone-numbers", headers={"Authorization": f"Bearer {old}"}
                )
            assert ok.status_code == 200

            revoked = await cli.admin_json(core, "signing-key", "rotate", "--revoke-previous")
            third_kid = revoked["kid"]
            assert sorted(revoked["revoked"]) == sorted([first_kid, second_kid])
            # The raw socket (old token) and the SDK's presence (first-key token) closed.
            assert revoked["closedSockets"] == 2
            error = await recv_json(ws)
            assert (error["type"], error["code"]) == ("error", "TOKEN_INVALID")
            assert "revoked" in error["message"]
            await expect_closed(ws, CloseCode.UNAUTHORIZED)
        async with httpx.AsyncClient(base_url=core.url) as client:
            for token in (old, new):
                refused = await client.get(
                    "/v1/phone-numbers", headers={"Authorization": f"Bearer {token}"}
                )
                detail = assert_error_body(refused, 401, ErrorCode.TOKEN_INVALID)
                assert "revoked" in detail["message"]
        fresh = await sandbox_token(core.url, "op-1")
        assert jwt.get_unverified_header(fresh)["kid"] == third_kid
        # The SDK reconnects by itself with a fresh token.
        await events.wait_for("presence_state_changed", count=4, timeout=10)
        states = events.of("presence_state_changed")
        assert states[-2:] == [PresenceState.RECONNECTING, PresenceState.ONLINE], states
        listed = (await cli.admin_json(core, "signing-key", "list"))["signingKeys"]
        assert [(k["kid"], k["active"], bool(k["revokedAt"])) for k in listed] == [
            (first_kid, False, True),
            (second_kid, False, True),
            (third_kid, True, False),
        ]
        code, out, _ = await cli.admin(core, "signing-key", "list")
        assert code == 0
        assert "KID" in out
        assert third_kid in out
    finally:
        await operator.close()
        await core.stop()
    # Revocation is stored: a restarted core on the same data still refuses the old token.
    again = CoreServer(config)
    await again.start()
    try:
        assert again.tokens.active_kid == third_kid
        async with httpx.AsyncClient(base_url=again.url) as client:
            refused = await client.get(
                "/v1/phone-numbers", headers={"Authorization": f"Bearer {old}"}
            )
            assert_error_body(refused, 401, ErrorCode.TOKEN_INVALID)
            ok = await client.get("/v1/phone-numbers", headers={"Authorization": f"Bearer {fresh}"})
            assert ok.status_code == 200
    finally:
        await again.stop()


async def test_signing_key_rotate_body_is_validated(core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post(
            "/v1/admin/signing-keys",
            headers={"X-Admin-Key": core.admin_key},
            content=b'{"revokePrevious": "yes"}',
        )
        assert_error_body(response, 400, ErrorCode.BAD_REQUEST)
        ok = await client.post("/v1/admin/signing-keys", headers={"X-Admin-Key": core.admin_key})
        assert ok.status_code == 201
        assert ok.json()["revoked"] == []
