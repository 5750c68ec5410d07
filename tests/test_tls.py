"""audin-core over TLS (https/wss) with a throwaway CA made by the ``openssl`` CLI.

The SDK verifies the core's certificate: with the CA as ``ca_file`` it goes online and
completes an echo call over wss; without it every connection fails with ``TLS_UNTRUSTED``
and nothing is connected. Bad certificate files stop ``audin-core`` with one line, exit 2.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from softphone.engine import ClientErrorCode, Operator, OperatorError, PresenceState
from softphone.protocol import EndReason
from softphone.server import CoreServer
from softphone.server.tls import TlsConfigError, server_tls_context

from .conftest import EventLog, sandbox_core, start_core_process, stop_core_process, wait_until

ECHO = "+15550100"
LINE_A = "pn_15550150"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _openssl(cwd: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)} failed: {result.stderr}"


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        folder,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate it signs for IP 127.0.0.1, and an unrelated second CA."""
    folder = tmp_path_factory.mktemp("pki")
    _make_ca(folder, "ca")
    _make_ca(folder, "other")
    _openssl(
        folder,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        folder,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    return Pki(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other.pem"
    )


@pytest.fixture
async def tls_core(tmp_path: Path, pki: Pki) -> AsyncIterator[CoreServer]:
    async with sandbox_core(tmp_path, tls_cert=pki.cert, tls_key=pki.key) as server:
        yield server


def _get_token(
    core: CoreServer, ca: Path, ref: str = "op-tls"
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``get_token`` that fetches sandbox tokens over https, trusting ``ca`` (the backend's
    own trust: what is tested is the Operator's)."""

    async def get_token() -> dict[str, Any]:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca)) as client:
            response = await client.post(core.url + "/sandbox/token", json={"operatorRef": ref})
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    return get_token


async def test_core_serves_https_and_health_reports_tls(tls_core: CoreServer, pki: Pki) -> None:
    assert tls_core.url.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=pki.ca)) as client:
        health = await client.get(tls_core.url + "/v1/health")
    assert health.status_code == 200
    assert health.json()["tls"] is True
    # Plain HTTP on the TLS port gets no answer a client could mistake for the core's.
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(tls_core.url.replace("https://", "http://") + "/v1/health")


async def test_sdk_with_ca_file_completes_an_echo_call_over_wss(
    tls_core: CoreServer, pki: Pki
) -> None:
    operator = Operator(
        tls_core.url,
        _get_token(tls_core, pki.ca),
        ca_file=pki.ca,
        audio="null",
    )
    events = EventLog(operator)
    try:
        numbers = await operator.list_phone_numbers()
        assert {n.id for n in numbers} == {"pn_15550150", "pn_15550151"}
        result = await operator.go_online([LINE_A])
        assert result.accepted == (LINE_A,)
        assert operator.state == PresenceState.ONLINE
        call = await operator.dial(ECHO, caller_id="+15550150")
        assert await call.wait_started(10)
        # Audio goes round the echo line through wss both ways.
        await wait_until(lambda: call.stats.frames_received >= 25, timeout=5)
        await call.hangup()
        assert await call.wait_ended(5) == EndReason.HANGUP
    finally:
        await operator.close()
    assert events.of("error") == []


async def test_sdk_without_the_ca_refuses_the_core_with_tls_untrusted(
    tls_core: CoreServer, pki: Pki
) -> None:
    for ca_file in (None, pki.other_ca):
        operator = Operator(
            tls_core.url,
            _get_token(tls_core, pki.ca),
            ca_file=ca_file,
            audio="null",
            reconnect_backoff=(0.05,),
        )
        events = EventLog(operator)
        try:
            with pytest.raises(OperatorError) as online:
                await operator.go_online([LINE_A])
            assert online.value.code == ClientErrorCode.TLS_UNTRUSTED, online.value
            assert "ca_file" in online.value.message
            assert operator.state == PresenceState.OFFLINE
            # go_online raises (the SDK emits ``error`` events only for failures nobody
            # awaits, e.g. while reconnecting); any event there is must be the same code.
            for error in events.of("error"):
                assert error.code == ClientErrorCode.TLS_UNTRUSTED
            with pytest.raises(OperatorError) as listing:
                await operator.list_phone_numbers()
            assert listing.value.code == ClientErrorCode.TLS_UNTRUSTED
        finally:
            await operator.close()
        # Never silently connected: the core saw no session.
        assert not tls_core.core.sessions
        assert PresenceState.ONLINE not in events.of("presence_state_changed")


def test_server_tls_context_rejects_bad_files(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.pem", pki.key, "does not exist"),
        (pki.cert, tmp_path / "missing.key", "does not exist"),
        (garbage, pki.key, "cannot use"),
        (pki.cert, garbage, "cannot use"),
        (pki.ca, pki.key, "cannot use"),  # the key does not belong to the CA certificate
        (tmp_path, pki.key, "not a file"),
    ]
    for cert, key, words in cases:
        with pytest.raises(TlsConfigError, match=words):
            server_tls_context(cert, key)
    assert server_tls_context(pki.cert, pki.key) is not None


def _run_core(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_bad_tls_files_exit_2_with_one_line(tmp_path: Path, pki: Pki) -> None:
    data = str(tmp_path / "data")
    for args, words in (
        (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki.key)], "does not exist"),
        (["--tls-cert", str(pki.cert), "--tls-key", str(pki.ca)], "cannot use"),
        (["--tls-cert", str(pki.cert)], "--tls-cert and --tls-key go together"),
    ):
        result = _run_core("--port", "0", "--data-dir", data, *args)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("audin-core: error: ")
        assert words in lines[0]
        assert result.stdout == ""


def test_cli_with_tls_prints_https_and_wss_urls(tmp_path: Path, pki: Pki) -> None:
    proc, info = start_core_process(
        tmp_path / "data", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)
    )
    try:
        assert info["tls"] is True
        assert info["coreUrl"].startswith("https://127.0.0.1:")
        assert info["presenceUrl"].startswith("wss://127.0.0.1:")
        assert info["presenceUrl"].endswith("/v1/presence")
        assert info["tokenUrl"].startswith("https://")
        assert info["healthUrl"].startswith("https://")
        response = httpx.get(
            info["healthUrl"], verify=ssl.create_default_context(cafile=pki.ca), timeout=10
        )
        assert response.json()["tls"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_headless_call_over_tls_with_the_ca_file(tmp_path: Path, pki: Pki) -> None:
    """`audin-phone call --ca-file`: the CA verifies the core and its token URL; without it
    the certificate is refused and nothing connects."""
    proc, info = start_core_process(
        tmp_path / "data", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)
    )
    base = [
        sys.executable, "-m", "softphone.cli", "call", "+15550100",
        "--core-url", info["coreUrl"], "--token-url", info["tokenUrl"],
        "--seconds", "1", "--json",
    ]  # fmt: skip
    try:
        ok = subprocess.run(
            [*base, "--ca-file", str(pki.ca)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["endReason"] == "hangup"
        refused = subprocess.run(base, check=False, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "certificate" in (refused.stdout + refused.stderr).lower()
        missing = subprocess.run(
            [*base, "--ca-file", str(tmp_path / "nope.pem")],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 2
        assert "--ca-file" in missing.stderr
        assert "Traceback" not in missing.stderr
    finally:
        stop_core_process(proc)
