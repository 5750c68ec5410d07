"""The console's idea of "now": the wall clock, or a frozen one (screenshots, tests).

Every time the app shows (log timestamps, the call timer, the token countdown, history) is
read from one :class:`Clock`, so a frozen clock makes the whole screen reproducible.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware datetime."""
        ...


class SystemClock:
    """Local wall-clock time."""

    def now(self) -> datetime:
        return datetime.now().astimezone()


class FrozenClock:
    """Always the same instant."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self.at = at

    def now(self) -> datetime:
        return self.at


def format_duration(seconds: float) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` above."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"
