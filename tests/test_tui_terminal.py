"""The console as its own process in a pseudo-terminal: the terminal going away mid-call
(an SSH connection dropping), SIGHUP and SIGTERM. Each must hang up, record the call in the
history, and exit with its status, never leave a process behind (see
softphone/tui/terminal.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from softphone.tui.terminal import (
    EXIT_HANGUP,
    EXIT_TERMINATED,
    SHUTDOWN_DEADLINE,
    terminal_hung_up,
)

from .audio_env import VirtualAudio, provide_virtual_audio
from .ptyterm import Terminal, console_command

ECHO = "+15550100"
FIRST_NUMBER = "+15550150"
ALT_SCREEN_OFF = b"\x1b[?1049l"  # Textual leaves the alternate screen on a clean exit


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    yield from provide_virtual_audio(tmp_path_factory)


def console(tmp_path: Path) -> Terminal:
    """``audin-phone --sandbox`` (its own embedded core) on the virtual sound cards."""
    size = (100, 30)
    args, env = console_command(
        tmp_path, ["--sandbox"], input=VirtualAudio.MIC, output=VirtualAudio.SPEAKER, size=size
    )
    return Terminal(args, env, size=size)


def in_echo_call(term: Terminal) -> None:
    term.wait_for(FIRST_NUMBER, timeout=30)
    mark = term.mark()
    term.type(ECHO + "d")
    term.wait_for("ACTIVE", timeout=20, after=mark)


def exit_status(term: Terminal) -> tuple[int, float]:
    """The process's exit status and how long it took to exit."""
    start = time.monotonic()
    status = term.process.wait(timeout=SHUTDOWN_DEADLINE + 10)
    return status, time.monotonic() - start


def history_rows(tmp_path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        rows = db.execute("SELECT direction, number, end_reason FROM calls").fetchall()
    return [tuple(row) for row in rows]


def test_terminal_gone_mid_call_hangs_up_records_and_exits(
    virtual_audio: VirtualAudio, tmp_path: Path
) -> None:
    """The pty's other side closes without a SIGHUP (the pty is not the console's controlling
    terminal): before, Textual's input thread spun on the end-of-file for good and the
    process never exited. Now the console notices within 0.2 s, hangs up, records the
    call and exits with 129 well before its shutdown deadline."""
    with console(tmp_path) as term:
        in_echo_call(term)
        term.hang_up()
        status, seconds = exit_status(term)
    assert status == EXIT_HANGUP
    assert seconds < SHUTDOWN_DEADLINE / 2, f"exited after {seconds:.1f} s (the deadline?)"
    assert history_rows(tmp_path) == [("outbound", ECHO, "hangup")]


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGHUP, EXIT_HANGUP), (signal.SIGTERM, EXIT_TERMINATED)]
)
def test_signal_mid_call_hangs_up_records_and_exits(
    virtual_audio: VirtualAudio, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    with console(tmp_path) as term:
        in_echo_call(term)
        mark = term.mark()
        term.process.send_signal(sig)
        code, seconds = exit_status(term)
        term.wait_closed(timeout=10)  # everything it wrote before exiting has been read
        drawn = term.output(mark)
    assert code == status
    assert seconds < SHUTDOWN_DEADLINE / 2
    assert history_rows(tmp_path) == [("outbound", ECHO, "hangup")]
    if sig == signal.SIGTERM:  # the terminal is still there: it is restored as on a quit
        assert ALT_SCREEN_OFF in drawn
    else:  # a hang-up: nothing more is drawn on a terminal that is gone
        assert ALT_SCREEN_OFF not in drawn


def test_terminal_hung_up_and_detach(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        assert not terminal_hung_up(slave)
        os.write(master, b"x")  # input waiting is not a hang-up
        assert not terminal_hung_up(slave)
        os.close(master)
        master = -1
        assert terminal_hung_up(slave)
    finally:
        os.close(slave)
        if master >= 0:
            os.close(master)
    assert terminal_hung_up(slave)  # a closed descriptor counts as gone too

    # detach_terminal rewires 0-2 of the process: try it in a child.
    # A stream being opened in another thread meanwhile (a quiet_stderr block) must not
    # put the dead terminal back on fd 2 when it ends.
    script = (
        "import os, select, sys\n"
        "from softphone.media.devices import quiet_stderr\n"
        "from softphone.tui.terminal import detach_terminal\n"
        "from softphone.tui.terminal import release_input\n"
        "with quiet_stderr():\n"
        "    hold = detach_terminal()\n"
        "os.write(2, b'into /dev/null too')\n"
        "os.write(1, b'into /dev/null')\n"
        "ready, _, _ = select.select([0], [], [], 0.2)\n"
        "if ready: sys.exit(3)  # input must not look readable while held\n"
        "release_input(hold)\n"
        "sys.exit(0 if os.read(0, 10) == b'' else 4)  # then end-of-file\n"
    )
    master, slave = os.openpty()
    try:
        child = subprocess.run(
            [sys.executable, "-c", script],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            timeout=30,
            check=False,
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    try:
        leaked = os.read(master, 1024)
    except OSError:  # nothing waiting (EAGAIN), or nothing and the child is gone (EIO)
        leaked = b""
    finally:
        os.close(master)
    assert child.returncode == 0  # fd 0 is a pipe that never delivers: no spinning on EOF
    assert b"into /dev/null" not in leaked
