"""audin-core: the reference operator service speaking protocol v1.

HTTP and WebSocket front (aiohttp), SQLite store, token authority, presence registry,
call router and the simulated telephone network of the sandbox. Depends on
``softphone.protocol`` only (and later ``softphone.media`` for simulated far ends).
"""

from __future__ import annotations

from softphone.server.app import CoreConfig, CoreServer

__all__ = ["CoreConfig", "CoreServer"]
