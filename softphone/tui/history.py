"""The local call history: one SQLite file in the platform's data folder.

Blocking SQLite work runs in a worker thread (``asyncio.to_thread``), one short-lived
connection per operation, so the UI loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    direction TEXT NOT NULL,
    number TEXT NOT NULL,
    local_number TEXT NOT NULL,
    duration REAL NOT NULL,
    end_reason TEXT NOT NULL,
    call_sid TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
"""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    started_at: datetime
    direction: str
    """``inbound`` or ``outbound``."""
    number: str
    """The other party."""
    local_number: str
    """Our number: the caller ID (outbound) or the number called (inbound)."""
    duration: float
    """Seconds of talk (0 if never answered)."""
    end_reason: str
    call_sid: str


class CallHistory:
    """Past calls, newest first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise sqlite3.DatabaseError(
                f"{self.path} was written by a newer audin-phone (schema {version})"
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn

    def _add(self, entry: HistoryEntry) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT INTO calls (started_at, direction, number, local_number, duration,"
                    " end_reason, call_sid) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.started_at.isoformat(),
                        entry.direction,
                        entry.number,
                        entry.local_number,
                        entry.duration,
                        entry.end_reason,
                        entry.call_sid,
                    ),
                )
        finally:
            conn.close()

    def _recent(self, limit: int) -> list[HistoryEntry]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT started_at, direction, number, local_number, duration, end_reason,"
                " call_sid FROM calls ORDER BY started_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        finally:
            conn.close()
        return [
            HistoryEntry(datetime.fromisoformat(r[0]), r[1], r[2], r[3], float(r[4]), r[5], r[6])
            for r in rows
        ]

    async def add(self, entry: HistoryEntry) -> None:
        async with self._lock:
            await asyncio.to_thread(self._add, entry)

    async def recent(self, limit: int = 200) -> list[HistoryEntry]:
        async with self._lock:
            return await asyncio.to_thread(self._recent, limit)
