"""Event log: every SDK event, timestamped, errors highlighted, tokens redacted, filterable."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from softphone.engine import redact

MAX_ENTRIES: Final = 2000
_JWT: Final = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_BEARER: Final = re.compile(r"(?i)(bearer\s+|token[=:]\s*)([A-Za-z0-9._~+/-]{12,}=*)")


def redact_text(text: str) -> str:
    """Replace anything that looks like a session token with its redacted form."""
    text = _JWT.sub(lambda m: redact(m.group(0)), text)
    return _BEARER.sub(lambda m: m.group(1) + redact(m.group(2)), text)


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: datetime
    name: str
    text: str
    error: bool

    def line(self) -> Text:
        line = Text()  # long lines wrap: nothing of an event is cut off
        line.append(self.at.strftime("%H:%M:%S "), style="dim")
        line.append(self.name, style="bold red" if self.error else "cyan")
        line.append(" ")
        line.append(self.text, style="red" if self.error else "")
        return line

    def matches(self, needle: str) -> bool:
        needle = needle.lower()
        return needle in self.name.lower() or needle in self.text.lower()


class EventLog(Vertical):
    """A RichLog of entries and a filter input (shown with ``/``, hidden with escape)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: deque[LogEntry] = deque(maxlen=MAX_ENTRIES)
        self.filter = ""
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        yield RichLog(id="log-lines", wrap=True, markup=False, auto_scroll=True, min_width=1)
        yield Input(placeholder="filter (esc: done)", id="log-filter", compact=True)

    def add(self, at: datetime, name: str, text: str, *, error: bool = False) -> None:
        entry = LogEntry(at, name, redact_text(text), error)
        self.entries.append(entry)
        if not self.filter or entry.matches(self.filter):
            self.query_one(RichLog).write(entry.line())

    def set_filter(self, needle: str) -> None:
        self.filter = needle.strip()
        self.border_subtitle = f"filter: {self.filter}" if self.filter else ""
        log = self.query_one(RichLog)
        log.clear()
        for entry in self.entries:
            if not self.filter or entry.matches(self.filter):
                log.write(entry.line())

    def shown_entries(self) -> list[LogEntry]:
        return [e for e in self.entries if not self.filter or e.matches(self.filter)]

    def open_filter(self) -> None:
        box = self.query_one(Input)
        box.value = self.filter
        self.add_class("filtering")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.close_filter()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.has_class("filtering"):
            event.stop()
            self.close_filter()

    def close_filter(self) -> None:
        self.remove_class("filtering")
        self.query_one(RichLog).focus()
