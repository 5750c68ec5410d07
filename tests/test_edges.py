"""`edge`: several cores in order of preference, failover, and `home`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from softphone import Operator, PresenceState, token_url_provider
from softphone.server import CoreConfig, CoreServer

from .conftest import EventLog


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def two_cores(tmp_path: Path) -> AsyncIterator[tuple[CoreServer, CoreServer]]:
    """Two cores sharing one store (and so one signing key), as behind a load balancer."""
    first = CoreServer(CoreConfig(data_dir=tmp_path / "shared", port=0, sandbox=True))
    second = CoreServer(CoreConfig(data_dir=tmp_path / "shared", port=0, sandbox=True))
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        for core in (first, second):
            if core._runner is not None:
                await core.stop()


def operator_for(edges: list[str], token_core: CoreServer) -> Operator:
    return Operator(
        edges,
        token_url_provider(token_core.url + "/sandbox/token"),
        audio="null",
        reconnect_backoff=[0.05],
    )


async def test_an_unreachable_first_edge_is_skipped(
    two_cores: tuple[CoreServer, CoreServer],
) -> None:
    core, _ = two_cores
    dead = f"http://127.0.0.1:{unused_port()}"
    operator = operator_for([dead, core.url], core)
    try:
        numbers = await operator.list_phone_numbers()
        assert len(numbers) == 2
        await operator.go_online([numbers[0].id])
        assert operator.home == core.url
        assert operator.edges == (dead, core.url)
        assert operator.state == PresenceState.ONLINE
    finally:
        await operator.close()


async def test_failover_to_the_next_edge_when_home_goes_down(
    two_cores: tuple[CoreServer, CoreServer],
) -> None:
    first, second = two_cores
    operator = operator_for([first.url, second.url], second)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        assert operator.home == first.url
        await first.stop()
        await log.wait_for("presence_state_changed", count=4, timeout=10)
        assert [s.value for s in log.of("presence_state_changed")] == [
            "connecting",
            "online",
            "reconnecting",
            "online",
        ]
        assert operator.home == second.url
        assert operator.availability.accepted == ("pn_15550150",)
        session = next(iter(second.core.sessions.values()))
        assert session.availability == {"pn_15550150"}
        call = await operator.dial("+15550100")  # media legs follow home
        assert await call.wait_started(10)
        await call.hangup()
    finally:
        await operator.close()
