"""``audin-phone`` as its own process in a pseudo-terminal, for tests and benchmarks.

:class:`Terminal` spawns the console with a pty of a given size (a new session: the pty is
not its controlling terminal, so closing it sends no SIGHUP, as when a terminal emulator
or multiplexer loses its client), collects everything it draws on a thread, and types keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Final

__all__ = ["CLOCK_TICKS", "Terminal", "console_command", "process_cpu_seconds"]

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def console_command(
    work: Path, connection: list[str], *, input: str, output: str, size: tuple[int, int]
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of ``audin-phone`` with everything of its own under
    ``work`` (an empty config file, the history, HOME and the XDG folders), connecting as
    ``connection`` says (``["--sandbox"]``, or ``--core-url`` and ``--token-url``)."""
    script = Path(sys.executable).parent / "audin-phone"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "softphone.cli"]
    config = work / "config.toml"
    config.write_text("")
    args = [
        *command,
        "--config",
        str(config),
        *connection,
        "--input",
        input,
        "--output",
        output,
        "--history",
        str(work / "history.sqlite3"),
    ]
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "HOME": str(work),
        "XDG_CONFIG_HOME": str(work / "config"),
        "XDG_DATA_HOME": str(work / "data"),
        "COLUMNS": str(size[0]),
        "LINES": str(size[1]),
    }
    return args, env


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Terminal:
    """``audin-phone`` in a pseudo-terminal; a thread collects everything it draws."""

    def __init__(
        self, args: list[str], env: dict[str, str], size: tuple[int, int] = (120, 40)
    ) -> None:
        master, slave = pty.openpty()
        cols, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.master = master
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self._output = bytearray()
        self._master_open = True
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            with self._changed:
                if not chunk:
                    self._output += b"\0EOF"
                    self._changed.notify_all()
                    return
                self._output += chunk
                self._changed.notify_all()

    def output(self, after: int = 0) -> bytes:
        """What the console wrote to the terminal (from offset ``after``)."""
        with self._changed:
            return bytes(self._output[after:])

    def mark(self) -> int:
        """The current end of the output: :meth:`wait_for` after it."""
        with self._changed:
            return len(self._output)

    def wait_for(self, text: str, timeout: float, after: int = 0) -> float:
        """Block until ``text`` was drawn (after offset ``after``); the monotonic time then."""
        needle = text.encode()
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle not in self._output[after:]:
                if self._output.endswith(b"\0EOF"):
                    raise RuntimeError(f"audin-phone exited before showing {text!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"audin-phone did not show {text!r} in {timeout:g} s")
                self._changed.wait(left)
            return time.monotonic()

    def type(self, keys: str) -> None:
        for char in keys:
            os.write(self.master, char.encode())

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        return process_cpu_seconds(self.process.pid)

    def wait_closed(self, timeout: float) -> None:
        """Wait until the terminal reports end-of-file: the console exited and everything
        it wrote has been collected."""
        self._reader.join(timeout)
        if self._reader.is_alive():
            raise TimeoutError(f"the terminal was still open after {timeout:g} s")

    def hang_up(self) -> None:
        """Close the terminal's other side, as when the SSH connection or the terminal
        window goes away (no SIGHUP: the pty is not the console's controlling terminal)."""
        if self._master_open:
            self._master_open = False
            os.close(self.master)
        self._reader.join(timeout=5)

    def close(self) -> None:
        """Quit the console with ``q`` (else SIGTERM, else SIGKILL) and close the terminal:
        never leaves the process behind."""
        if self.process.poll() is None and self._master_open:
            self.type("q")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        for stop in (self.process.terminate, self.process.kill):
            if self.process.poll() is not None:
                break
            stop()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        self.hang_up()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
