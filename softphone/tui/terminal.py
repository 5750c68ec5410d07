"""The console's terminal going away, and the signals that end it.

An operator's SSH connection drops, or the terminal window is closed, in the middle of a
call. The kernel then hangs up the pseudo-terminal: ``SIGHUP`` reaches the console when the
terminal was its controlling terminal (an SSH login), and in every case the terminal's file
descriptors report ``POLLHUP``: reads return end-of-file and writes fail. Left alone, the
console would either die at once on ``SIGHUP`` (the call never recorded in the history) or,
without the signal, hang for good: Textual's input thread spins on the end-of-file and the
screen writer blocks once its thread has died on the failed write.

So the app treats both as "the terminal is gone" (:func:`terminal_hung_up`, checked five
times a second, and ``SIGHUP``): it stops drawing, points descriptors 0-2 away from the
dead terminal (:func:`detach_terminal`), hangs up, records the call, goes offline and exits
with status 129 (128 + SIGHUP). ``SIGTERM`` (a service manager, ``kill``) does the same
with the terminal still there, restored as on a normal quit, status 143. A deadline
(:func:`exit_deadline`) ends the process if that shutdown ever takes longer than
:data:`SHUTDOWN_DEADLINE` seconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from typing import Final

from softphone.media.devices import point_stderr_at

__all__ = [
    "EXIT_HANGUP",
    "EXIT_TERMINATED",
    "SHUTDOWN_DEADLINE",
    "detach_terminal",
    "exit_deadline",
    "release_input",
    "terminal_hung_up",
]

EXIT_HANGUP: Final = 129
"""Exit status when the terminal went away (128 + SIGHUP, as a shell reports it)."""
EXIT_TERMINATED: Final = 143
"""Exit status after SIGTERM (128 + SIGTERM)."""
SHUTDOWN_DEADLINE: Final = 10.0
"""Seconds the hang-up, history write and going offline may take before a forced exit."""

_POLL: Final = hasattr(select, "poll")  # not on Windows: no hang-up detection there
_HUNG_UP: Final = select.POLLHUP | select.POLLERR | select.POLLNVAL if _POLL else 0


def terminal_hung_up(fd: int = 0) -> bool:
    """True when the terminal on ``fd`` has hung up (its other side closed). A quick,
    non-blocking ``poll``; False for a working terminal, with or without input waiting
    (and where there is no ``poll``, on Windows)."""
    if not _POLL:
        return False
    poller = select.poll()
    try:
        poller.register(fd, select.POLLIN)
        events = poller.poll(0)
    except (OSError, ValueError):
        return True
    return any(mask & _HUNG_UP for _, mask in events)


def detach_terminal() -> int:
    """Point descriptors 0-2 away from a terminal that hung up: output to ``/dev/null`` (so
    writes still queued succeed instead of failing), input to a pipe that delivers nothing
    (so a thread reading it sleeps instead of spinning on end-of-file).

    Returns the pipe's write end: close it (:func:`release_input`) just before the app's
    own shutdown stops its input thread, which may be blocked reading the pipe; the close
    gives it the end-of-file that lets it finish."""
    read_end, write_end = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(read_end, 0)
        os.dup2(null, 1)
        point_stderr_at(null)  # not undone by a stream being opened meanwhile
    finally:
        os.close(read_end)
        os.close(null)
    return write_end


def release_input(write_end: int) -> None:
    """End the input of :func:`detach_terminal` (its readers see end-of-file)."""
    with contextlib.suppress(OSError):
        os.close(write_end)


def exit_deadline(seconds: float, status: int) -> threading.Timer:
    """End the process with ``status`` after ``seconds`` unless it has exited by then: the
    last resort of a shutdown that hangs. Returns the (daemon) timer, already started."""
    timer = threading.Timer(seconds, os._exit, (status,))
    timer.daemon = True
    timer.name = "exit-deadline"
    timer.start()
    return timer
