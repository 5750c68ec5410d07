"""Shared fixtures: a real audin-core on 127.0.0.1 (in-process or as a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from softphone.engine import Operator, token_url_provider
from softphone.server import CoreConfig, CoreServer
from softphone.server.core import CoreTimings


@contextlib.asynccontextmanager
async def sandbox_core(tmp_path: Path, **config: Any) -> AsyncIterator[CoreServer]:
    """An in-process sandbox core on an ephemeral loopback port, data in ``tmp_path/core``.
    Its echo line answers right after ``call_ringing`` (``echo_ring=0``): tests speaking the
    raw protocol send audio as soon as ``media_ready`` arrives. ``config``: other
    :class:`CoreConfig` fields (limits, TLS...); other timings are the defaults."""
    settings: dict[str, Any] = {"timings": CoreTimings(echo_ring=0.0), **config}
    async with CoreServer(
        CoreConfig(data_dir=tmp_path / "core", port=0, sandbox=True, **settings)
    ) as server:
        yield server


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """The default sandbox core of a test (see :func:`sandbox_core`)."""
    async with sandbox_core(tmp_path) as server:
        yield server


@dataclass
class CoreProcess:
    url: str
    token_url: str
    data_dir: Path
    info: dict[str, Any]
    process: subprocess.Popen[str]

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "softphone.server.cli",
                *args,
                "--core-url",
                self.url,
                "--data-dir",
                str(self.data_dir),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def start_core_process(
    data_dir: Path,
    *args: str,
    sandbox: bool = True,
    port: int = 0,
    log_level: str | None = "warning",
    stderr: Any = subprocess.PIPE,
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``audin-core`` as a separate process (``--json``); return it and the JSON line
    it prints once listening. Raises with its stderr if it does not start."""
    argv = [sys.executable, "-m", "softphone.server.cli", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--json"]
    if sandbox:
        argv.append("--sandbox")
    if log_level is not None:
        argv += ["--log-level", log_level]
    proc = subprocess.Popen(
        [*argv, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("{"):
        proc.kill()
        err = proc.stderr.read() if proc.stderr is not None else ""
        proc.wait()
        raise RuntimeError(f"audin-core did not start: {line}{err}")
    return proc, json.loads(line)


def stop_core_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def core_process(tmp_path: Path) -> Iterator[CoreProcess]:
    """``audin-core --sandbox`` as a real separate process on an ephemeral port."""
    data_dir = tmp_path / "core-data"
    proc, info = start_core_process(data_dir)
    try:
        yield CoreProcess(info["coreUrl"], info["tokenUrl"], data_dir, info, proc)
    finally:
        stop_core_process(proc)


def sandbox_operator(url: str, operator_ref: str = "op-1", **kwargs: Any) -> Operator:
    """An Operator whose tokens come from the sandbox token endpoint (silent audio device
    unless ``audio=`` is given: tests never touch the machine's sound card by accident)."""
    kwargs.setdefault("audio", "null")
    return Operator(
        url,
        token_url_provider(
            url + "/sandbox/token",
            body={"operatorRef": operator_ref, "displayName": operator_ref.upper()},
        ),
        **kwargs,
    )


async def sandbox_token(url: str, operator_ref: str = "op-1") -> str:
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/sandbox/token", json={"operatorRef": operator_ref})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait, bounded, for state that has no event of its own (a device clock's progress, the
    core's internal tables). Checks every 10 ms on the event loop; fails on timeout."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a condition, not an event, by design)
            await asyncio.sleep(0.01)


class EventLog:
    """Collects events of an Operator and lets a test wait for one without sleeping."""

    def __init__(self, operator: Operator) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        for name in (
            "presence_state_changed",
            "availability_changed",
            "incoming_call",
            "call_started",
            "call_ended",
            "error",
        ):
            operator.on(name, lambda value, n=name: self._add(n, value))

    def _add(self, name: str, value: Any) -> None:
        self.events.append((name, value))
        self._changed.set()

    def of(self, name: str) -> list[Any]:
        return [v for n, v in self.events if n == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while len(self.of(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(name)[count - 1]
