"""WebSocket and HTTP plumbing of the SDK: URLs, authenticated connects, error mapping."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from softphone.engine.errors import ClientErrorCode, OperatorError
from softphone.protocol import FRAME_BYTES, MAX_MESSAGE_BYTES
from softphone.protocol.http import parse_error_body

MAX_INCOMING = max(MAX_MESSAGE_BYTES, FRAME_BYTES) * 4


_SECRET = re.compile(
    r'"token"\s*:\s*"[^"]*"?'  # a token field in a logged frame (maybe cut short)
    r"|eyJ[\w.\-]*(?:\.\.\.)?[\w.\-]*"  # a JWT, whole or elided ("eyJhb...xyz")
)


def _mask(value: object) -> object:
    """``value`` with every token masked; frames and other objects are rendered first."""
    if value is None or isinstance(value, int | float):
        return value
    text = (
        bytes(value).decode("utf-8", "replace")
        if isinstance(value, bytes | bytearray)
        else str(value)
    )
    if "eyJ" not in text and '"token"' not in text:
        return value
    return _SECRET.sub(
        lambda m: '"token":"<redacted>"' if m.group(0).startswith('"') else "<redacted token>",
        text,
    )


class RedactAuthorization(logging.Filter):
    """Hide tokens in websockets' debug log: the ``Authorization`` header of a handshake
    (logged as ``"> %s: %s"``) and any token inside a logged frame (``update_token``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_mask(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _mask(record.msg)
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2:
            if any(isinstance(a, str) and a.lower() == "authorization" for a in args):
                record.args = tuple(
                    "<redacted>" if i > 0 and str(args[i - 1]).lower() == "authorization" else a
                    for i, a in enumerate(args)
                )
        elif isinstance(record.msg, str) and "bearer " in record.msg.lower():
            record.msg = record.msg[: record.msg.lower().index("bearer ")] + "Bearer <redacted>"
        return True


ws_logger = logging.getLogger("audin.sdk.websocket")
ws_logger.addFilter(RedactAuthorization())


def http_base(core_url: str) -> str:
    """Normalise a core URL to ``http(s)://host:port`` (ws(s) accepted too)."""
    parts = urlsplit(core_url.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise OperatorError(
            ClientErrorCode.CONNECTION_FAILED,
            f"core URL {core_url!r} must look like http://host:port or https://host",
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_url(core_url: str, path: str) -> str:
    """``http`` is upgraded to ``ws`` and ``https`` to ``wss``, as the seed SDK does."""
    base = http_base(core_url)
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """Certificates are verified (system trust store, or ``ca_file`` instead: a PEM bundle
    of the CAs to trust, e.g. a private core's own CA). There is no switch to turn
    verification off."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise OperatorError(
            ClientErrorCode.TLS_UNTRUSTED, f"cannot use the CA file {ca_file}: {exc}", exc
        ) from None


def is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def untrusted(url: str, exc: BaseException) -> OperatorError:
    reason = getattr(exc, "verify_message", None) or str(exc)
    return OperatorError(
        ClientErrorCode.TLS_UNTRUSTED,
        f"the TLS certificate of {url} is not trusted ({reason}); give the CA that signed it"
        " as ca_file (--ca-file)",
        exc,
    )


async def connect_ws(
    url: str,
    token: str,
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    connection: type[ClientConnection] = ClientConnection,
) -> ClientConnection:
    """Open an authenticated WebSocket; map every failure to an OperatorError with a code.
    ``connection``: the ClientConnection subclass to create (the media leg's handles audio
    frames as they are parsed)."""
    try:
        return await asyncio.wait_for(
            websockets.connect(
                url,
                create_connection=connection,
                ssl=(tls or tls_context()) if url.startswith("wss://") else None,
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=MAX_INCOMING,
                compression=None,  # G.711 does not compress; deflate costs CPU and delay
                ping_interval=None,
                close_timeout=2.0,
                open_timeout=None,
                logger=ws_logger,
            ),
            timeout,
        )
    except websockets.InvalidStatus as exc:
        response = exc.response
        detail = parse_error_body(bytes(response.body or b""))
        if detail is not None:
            raise OperatorError(detail.code, detail.message, exc) from None
        raise OperatorError(
            ClientErrorCode.CONNECTION_FAILED,
            f"{url} refused the WebSocket: HTTP {response.status_code}",
        ) from None
    except TimeoutError as exc:
        raise OperatorError(
            ClientErrorCode.TIMEOUT, f"no answer from {url} within {timeout:.0f} s", exc
        ) from None
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        if is_certificate_error(exc):
            raise untrusted(url, exc) from None
        raise OperatorError(
            ClientErrorCode.CONNECTION_FAILED, f"cannot connect to {url}: {exc}", exc
        ) from None
