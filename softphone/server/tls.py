"""TLS for audin-core: ``--tls-cert`` / ``--tls-key`` make it serve https and wss."""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigError(Exception):
    """The certificate or key cannot be used; the message is one line for the operator."""


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer) with the PEM certificate chain ``cert`` and its
    unencrypted private key ``key``."""
    for kind, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise TlsConfigError(f"TLS {kind} file {path} does not exist or is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def no_password() -> bytes:
        raise TlsConfigError(f"the TLS key {key} is encrypted; give an unencrypted key")

    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key), password=no_password)
    except TlsConfigError:
        raise
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or str(exc)
        raise TlsConfigError(
            f"cannot use the TLS certificate {cert} with the key {key}: {reason}"
            " (both must be PEM and belong together)"
        ) from None
    except OSError as exc:
        raise TlsConfigError(
            f"cannot read the TLS certificate {cert} or key {key}: {exc.strerror or exc}"
        ) from None
    return context
