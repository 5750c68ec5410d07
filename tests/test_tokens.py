"""Token lifecycle: renewal before expiry on open sockets, token URLs and token commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from softphone import CallState, PresenceState
from softphone.engine import OperatorError
from softphone.engine.tokens import token_command_provider
from softphone.media import FileAudioDevice
from softphone.server import CoreServer

from .conftest import EventLog, sandbox_operator, wait_until
from .test_e2e_calls import read_wav, write_noise
from .test_resilience import _longest_silence


async def test_tokens_are_renewed_on_open_sockets_before_they_expire(
    core: CoreServer, tmp_path: Path
) -> None:
    """10 s tokens, renewed 7 s before expiry: after 11 s presence and the call's media leg
    are still the same sockets, with no reconnection and no gap in audio."""
    fetched: list[str] = []

    async def get_token() -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                core.url + "/sandbox/token", json={"operatorRef": "op-1", "ttlSeconds": 10}
            )
        data: dict[str, str] = response.json()
        fetched.append(data["token"])
        return data

    play = tmp_path / "noise.wav"
    write_noise(play, 14.0)
    device = FileAudioDevice(play, tmp_path / "rec.wav")
    from softphone import Operator

    operator = Operator(core.url, get_token, audio=lambda _c: device, token_refresh_margin=7.0)
    log = EventLog(operator)
    expiring: list[float] = []
    operator.on("token_will_expire", expiring.append)
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial("+15550100")
        assert await call.wait_started(10)
        reconnects: list[str] = []
        call.on("reconnecting", lambda: reconnects.append("media"))
        await wait_until(lambda: call.duration >= 11.0, timeout=20)
        assert expiring, "token_will_expire never fired"
        assert 6.0 < expiring[0] <= 7.05  # seconds left on the first token to expire
        assert len(fetched) >= 3  # presence, media leg, at least one renewal
        assert operator.state == PresenceState.ONLINE
        assert call.state == CallState.ACTIVE
        assert not reconnects
        states = [s.value for s in log.of("presence_state_changed")]
        assert states == ["connecting", "online"]
        stats = device.stats()
        assert stats.playback_lost == 0  # every frame of the far end arrived
        # An expiry would cost a media-leg reconnection: hundreds of ms of contiguous
        # underruns. (The core shares this event loop and the machine may be loaded, so a
        # stray late 20 ms frame, played as a faded repeat, is allowed: < 2 %.)
        assert stats.playback_underruns <= max(2, stats.frames_played // 50)
        await call.hangup()
    finally:
        await operator.close()
    assert not [e for e in log.of("error") if e.code != "CONNECTION_LOST"]
    recording = read_wav(tmp_path / "rec.wav")[4000:-4000]
    assert _longest_silence(recording) < 0.200 * 8000


async def test_update_token_refuses_another_operators_token(core: CoreServer) -> None:
    operator = sandbox_operator(core.url, "op-1")
    try:
        await operator.go_online(["pn_15550150"])
        async with httpx.AsyncClient() as client:
            other = (
                await client.post(core.url + "/sandbox/token", json={"operatorRef": "op-2"})
            ).json()
        with pytest.raises(OperatorError) as refused:
            await operator.update_token(other)
        assert refused.value.code == "FORBIDDEN"
        assert operator.state == PresenceState.ONLINE
    finally:
        await operator.close()


async def test_token_url_string_and_token_command(core: CoreServer, tmp_path: Path) -> None:
    # A token URL given as a plain string.
    operator = sandbox_operator(core.url)
    from softphone import Operator

    by_url = Operator(core.url, core.url + "/sandbox/token", audio="null")
    try:
        assert [n.phone_number for n in await by_url.list_phone_numbers()] == [
            "+15550150",
            "+15550151",
        ]
    finally:
        await by_url.close()
        await operator.close()

    # A local command that prints the JSON (here: a Python one-liner fetching it).
    script = tmp_path / "helper.py"
    script.write_text(
        "import json, sys, urllib.request\n"
        f"req = urllib.request.Request({core.url + '/sandbox/token'!r}, data=b'{{}}', "
        "method='POST')\n"
        "print(urllib.request.urlopen(req).read().decode())\n"
    )
    by_command = Operator(
        core.url, token_command_provider([sys.executable, str(script)]), audio="null"
    )
    log = EventLog(by_command)
    try:
        await by_command.go_online(["pn_15550151"])
        assert by_command.availability.accepted == ("pn_15550151",)
    finally:
        await by_command.close()
    assert not log.of("error")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent/token-helper"], "cannot run the token command"),
        ([sys.executable, "-c", "import sys; sys.exit(3)"], "exit status 3"),
        ([sys.executable, "-c", "print('not json')"], "did not print JSON"),
        (
            [sys.executable, "-c", "print(json.dumps([1]))".replace("json.dumps([1])", "'[1]'")],
            "no JSON object",
        ),
    ],
)
async def test_token_command_failures_are_coded(
    core: CoreServer, argv: list[str], message: str
) -> None:
    from softphone import Operator

    operator = Operator(core.url, token_command_provider(argv), audio="null")
    log = EventLog(operator)
    try:
        with pytest.raises(OperatorError) as failed:
            await operator.go_online(["pn_15550150"])
        assert failed.value.code == "TOKEN_FETCH_FAILED"
        assert message in failed.value.message
        assert operator.state == PresenceState.OFFLINE
        assert log.of("error")[0].code == "TOKEN_FETCH_FAILED"
    finally:
        await operator.close()
    assert json  # the module is used by the parametrised command above
