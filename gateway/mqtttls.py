"""TLS for MQTT connections to the hub broker, shared by the gateway's hub link and ``citytwin hub``.

Verification is on unless explicitly skipped: the broker's certificate must chain to
``ca_file`` (or to the system's trusted CAs when none is given) and match the host name.
A client certificate (mutual TLS) is sent when ``cert_file`` is given; ``key_file`` may be
omitted when the certificate file also holds the key.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsSetupError(Exception):
    """A CA, certificate or key file could not be loaded; the message names the file."""


def client_context(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    insecure_skip_verify: bool = False,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load CA file {ca_file}: {exc}") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load client certificate {cert_file} / key {key_file}: {exc}") from None
    elif key_file is not None:
        raise TlsSetupError("a client key file needs its certificate file as well")
    if insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
