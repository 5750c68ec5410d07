"""examples/customer_backend.py: the customer's token server, between a real core (its API
key stays there) and the SDK."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from softphone import CallState, EndReason, Operator, token_url_provider
from softphone.engine import ClientErrorCode, OperatorError

from .conftest import EventLog, start_core_process, stop_core_process

ROOT = Path(__file__).resolve().parent.parent
NUMBER = "+15557000001"


@dataclass
class Production:
    url: str
    data_dir: Path
    account: dict[str, Any]


def _core_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def production_core(tmp_path: Path) -> Iterator[Production]:
    """A core without the sandbox: an account made with ``audin-core account create``."""
    data_dir = tmp_path / "core"
    created = _core_cli(
        "account", "create", "Acme", "--number", NUMBER, "--data-dir", str(data_dir), "--json"
    )
    assert created.returncode == 0, created.stderr
    proc, info = start_core_process(data_dir, sandbox=False)
    try:
        yield Production(info["coreUrl"], data_dir, json.loads(created.stdout))
    finally:
        stop_core_process(proc)


@pytest.fixture
def backend(
    production_core: Production, tmp_path: Path
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    account = production_core.account
    number_id = account["numbers"][0]["id"]
    users = tmp_path / "users.toml"
    users.write_text(
        "[users.alice]\n"
        f'secret_sha256 = "{hashlib.sha256(b"alice-secret").hexdigest()}"\n'
        'operator_ref = "alice"\n'
        'display_name = "Alice Example"\n'
        f'phone_number_ids = ["{number_id}"]\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "customer_backend.py"),
            "--core-url",
            production_core.url,
            "--users",
            str(users),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AUDIN_API_KEY": account["apiKey"], "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "customer backend on http://" in line, line + (
            proc.stderr.read() if proc.stderr else ""
        )
        url = line.split(" on ")[1].split()[0]
        yield url, account["apiKey"], {"process": proc, "numberId": number_id}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_operator_gets_tokens_from_the_customer_backend(
    production_core: Production, backend: tuple[str, str, dict[str, Any]]
) -> None:
    url, api_key, info = backend
    get_token = token_url_provider(
        url + "/api/operator/token", headers={"Authorization": "Bearer alice-secret"}
    )
    operator = Operator(production_core.url, get_token, audio="null")
    log = EventLog(operator)
    try:
        numbers = await operator.list_phone_numbers()
        assert [(n.id, n.phone_number) for n in numbers] == [(info["numberId"], NUMBER)]
        await operator.go_online([info["numberId"]])
        assert operator.identity == "alice"
        placed = await asyncio.to_thread(
            _core_cli,
            "inbound",
            "--to",
            NUMBER,
            "--from",
            "+15551234567",
            "--core-url",
            production_core.url,
            "--data-dir",
            str(production_core.data_dir),
        )
        assert placed.returncode == 0, placed.stderr
        call = await log.wait_for("incoming_call")
        await call.accept()
        assert await call.wait_started(10)
        assert call.state == CallState.ACTIVE
        await call.hangup()
        assert call.end_reason == EndReason.HANGUP
    finally:
        await operator.close()

    wrong = Operator(
        production_core.url,
        token_url_provider(url + "/api/operator/token", headers={"Authorization": "Bearer guess"}),
        audio="null",
    )
    try:
        with pytest.raises(OperatorError) as refused:
            await wrong.go_online([info["numberId"]])
        assert refused.value.code == ClientErrorCode.TOKEN_FETCH_FAILED
        assert "401" in refused.value.message
    finally:
        await wrong.close()

    proc = info["process"]
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "token issued for alice" in err
    assert "token refused" in err
    assert api_key not in err  # the API key is never logged, nor any token
    assert api_key.split(".")[1] not in err
    assert "eyJ" not in err
