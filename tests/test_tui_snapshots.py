"""Screenshots of the console compared with committed SVGs (tests/snapshots/tui/).

Deterministic: a frozen clock (log times, timers, the token countdown), fixed operator
identity and token expiry, quality figures held (``live_quality=False``); the core's port and
call SIDs, which change on every run, are normalised before comparing. To accept a change,
run with ``AUDIN_UPDATE_SNAPSHOTS=1`` and review the new SVGs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets._footer import FooterKey

from softphone.engine import CallState
from softphone.server import CoreServer
from softphone.tui import PhoneApp
from softphone.tui.screens.incoming import IncomingCallScreen
from tests.test_tui import (
    ECHO,
    LINE_A,
    make_app,
    started,
    type_number,
    until,
    watched_operator,
)

SNAPSHOTS = Path(__file__).parent / "snapshots" / "tui"
SIZES = [(80, 24), (120, 40)]
_PORT = re.compile(r"(?<=127\.0\.0\.1:)\d{4,5}")
_SID = re.compile(r"(?<=CA)[0-9a-f]{4,32}")
_TERMINAL_ID = re.compile(r"terminal-\d+")


def normalise(svg: str) -> str:
    """Same length for what changes on every run (so the layout is unchanged)."""
    svg = _PORT.sub(lambda m: "9" * len(m.group(0)), svg)
    svg = _SID.sub(lambda m: "x" * len(m.group(0)), svg)
    return _TERMINAL_ID.sub("terminal", svg)


async def check(pilot: Pilot[None], name: str) -> None:
    app = pilot.app
    assert isinstance(app, PhoneApp)

    # the footer recomposes after the bindings change: wait until it shows the current ones
    def footer_ready() -> bool:
        wanted = {
            b.binding.description
            for b in app.screen.active_bindings.values()
            if b.binding.show and b.enabled
        }
        keys = list(app.screen.query(FooterKey))
        shown = {k.description for k in keys if k.region.width > 0} - {"palette"}
        return bool(keys) and shown == wanted

    await until(pilot, footer_ready)
    await pilot.pause()
    width, height = app.size
    path = SNAPSHOTS / f"{name}-{width}x{height}.svg"
    svg = normalise(app.export_screenshot(title=f"audin-phone {name}"))
    if os.environ.get("AUDIN_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        if os.environ.get("AUDIN_UPDATE_SNAPSHOTS") != "1":
            pytest.fail(f"{path.name} did not exist: written, review it and run again")
    assert svg == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; AUDIN_UPDATE_SNAPSHOTS=1 to accept"
    )


@pytest.mark.parametrize("size", SIZES)
async def test_idle_screen(core: CoreServer, tmp_path: Path, size: tuple[int, int]) -> None:
    op = watched_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(size=size) as pilot:
            await started(pilot, app)
            await type_number(pilot, "+1555")
            await pilot.pause()
            await check(pilot, "idle")
    finally:
        await op.close(force=True)


@pytest.mark.parametrize("size", SIZES)
async def test_incoming_call(core: CoreServer, tmp_path: Path, size: tuple[int, int]) -> None:
    op = watched_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(size=size) as pilot:
            await started(pilot, app)
            await pilot.press("o")
            await until(pilot, lambda: len(app.phone.state.accepted) == 2)
            await core.core.place_inbound("+15551230009", LINE_A, {})
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen))
            await check(pilot, "incoming")
            await pilot.press("r")
            await until(pilot, lambda: app.phone.state.offer is None)
    finally:
        await op.close(force=True)


@pytest.mark.parametrize("size", SIZES)
async def test_active_call(core: CoreServer, tmp_path: Path, size: tuple[int, int]) -> None:
    op = watched_operator(core.url)
    app = make_app(op, tmp_path, live_quality=False)
    try:
        async with app.run_test(size=size) as pilot:
            await started(pilot, app)
            await type_number(pilot, ECHO)
            await pilot.press("d")
            await until(
                pilot,
                lambda: (
                    app.phone.state.call is not None
                    and app.phone.state.call.call.state == CallState.ACTIVE
                ),
            )
            await pilot.press("m")
            await until(
                pilot, lambda: app.phone.state.call is not None and app.phone.state.call.muted
            )
            await check(pilot, "call")
            if size == (120, 40):
                assets = Path(__file__).parent.parent / "assets" / "tui-call.svg"
                if os.environ.get("AUDIN_UPDATE_SNAPSHOTS") == "1" or not assets.exists():
                    assets.write_text(normalise(app.export_screenshot()), encoding="utf-8")
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
    finally:
        await op.close(force=True)


@pytest.mark.parametrize("size", SIZES)
async def test_error_state(core: CoreServer, tmp_path: Path, size: tuple[int, int]) -> None:
    op = watched_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(size=size, notifications=True) as pilot:
            await started(pilot, app)
            await type_number(pilot, "+1")
            await pilot.press("d")
            await until(pilot, lambda: bool(app.notices))
            await check(pilot, "error")
    finally:
        await op.close(force=True)
