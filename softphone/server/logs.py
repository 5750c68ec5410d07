"""Logging of audin-core: to stderr, as Rich text or one JSON object per line, never with a
secret in it (session tokens and API keys are masked whatever the code logging them did)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final, Literal

LogFormat = Literal["text", "json"]

SECRET: Final = re.compile(
    r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]{4,}"  # a JWT (session token)
    r"|audin_[0-9a-f]{6,}\.[\w-]{8,}"  # an API key
    r"|adm_[\w-]{16,}"  # the admin key
)
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def mask(text: str) -> str:
    return SECRET.sub(lambda m: m.group(0)[:6] + "…<redacted>", text)


class MaskSecrets(logging.Filter):
    """Rewrites each record's message with every token or key masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Configure the root logger for the core process (stdout stays for ``--json`` output)."""
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(MaskSecrets())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
