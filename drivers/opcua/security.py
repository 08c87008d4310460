"""The gateway's application certificate and its trust list for server certificates.

Layout of ``pki_dir`` (as node-opcua and the UA reference stacks lay theirs out)::

    own/cert.der  own/key.pem   the gateway's self-signed application instance certificate,
                                made on first start (key mode 0600), renewed when invalid
    trusted/                    server certificates (DER or PEM) the gateway accepts
    rejected/                   server certificates it refused; move one to trusted/ to accept it

A server certificate is trusted only explicitly: by its file in ``trusted/`` or named by
``connection.server_certificate``. The check compares the whole certificate (its SHA-256
thumbprint), so a server presenting another certificate for the same name is refused too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path
from typing import NamedTuple

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citytwin.drivers.errors import ConnectError
from citytwin.drivers.opcua.binding import OpcUaConnection


class OwnCertificate(NamedTuple):
    cert: Path
    key: Path


def thumbprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def first_certificate(der: bytes) -> bytes:
    """A server may send its certificate followed by its chain: keep the leading one."""
    length = int.from_bytes(der[2:4], "big") + 4 if len(der) > 4 and der[1] == 0x82 else len(der)
    return der[:length]


def _subject(der: bytes) -> str:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "an unreadable certificate"
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value!s}" if names else cert.subject.rfc4514_string()


def _load_der(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError:
            return None
    return data


def _own_sync(conn: OpcUaConnection) -> OwnCertificate:
    own = conn.pki_dir / "own"
    own.mkdir(parents=True, exist_ok=True)
    for sub in ("trusted", "rejected"):
        (conn.pki_dir / sub).mkdir(exist_ok=True)
    key, cert = own / "key.pem", own / "cert.der"
    if not key.exists():  # written here, not by asyncua, so that it is never world-readable
        pem = cert_gen.dump_private_key_as_pem(cert_gen.generate_private_key())
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    asyncio.run(cert_gen.setup_self_signed_certificate(
        key, cert, conn.application_uri, socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH], {"organizationName": "citytwin-gateway"},
    ))
    return OwnCertificate(cert, key)


async def own_certificate(conn: OpcUaConnection) -> OwnCertificate:
    """The gateway's certificate and key, generated when absent (in a thread: RSA is slow)."""
    try:
        return await asyncio.to_thread(_own_sync, conn)
    except OSError as exc:
        raise ConnectError(f"cannot prepare the gateway certificate in {conn.pki_dir}: {exc}") from None


def _trusted(conn: OpcUaConnection) -> set[str]:
    prints: set[str] = set()
    # regular files only: a stray directory or pipe in trusted/ must not stall the check
    paths = sorted(p for p in (conn.pki_dir / "trusted").glob("*") if p.is_file())
    if conn.server_certificate is not None:
        paths.append(conn.server_certificate)
    for path in paths:
        der = _load_der(path)
        if der is not None:
            prints.add(thumbprint(der))
    return prints


def _check_trusted_sync(conn: OpcUaConnection, der: bytes) -> None:
    if thumbprint(der) in _trusted(conn):
        return
    rejected = conn.pki_dir / "rejected" / f"{thumbprint(der)[:16]}.der"
    try:
        rejected.parent.mkdir(parents=True, exist_ok=True)
        rejected.write_bytes(der)
    except OSError:
        pass
    raise ConnectError(
        f"the server certificate of {conn.url} ({_subject(der)}, SHA-256 {thumbprint(der)}) is "
        f"not trusted; to trust it, move {rejected} into {conn.pki_dir / 'trusted'}/ "
        "(or name it in connection.server_certificate)"
    )


async def check_trusted(conn: OpcUaConnection, der: bytes) -> None:
    """Raises ConnectError naming the certificate and how to trust it; keeps it in rejected/.

    The trust list is read (and a refused certificate written) in a worker thread: a slow
    disk or a large trusted/ must not stall the event loop every other device shares.
    """
    await asyncio.to_thread(_check_trusted_sync, conn, der)


async def server_endpoint(conn: OpcUaConnection, mode: ua.MessageSecurityMode, policy_uri: str) -> ua.EndpointDescription:
    """The server's endpoint for ``mode``/``policy_uri``, asked over an unsecured channel."""
    probe = Client(conn.url, timeout=conn.timeout)
    endpoints = await probe.connect_and_get_server_endpoints()
    for endpoint in endpoints:
        if endpoint.SecurityMode == mode and endpoint.SecurityPolicyUri == policy_uri:
            return endpoint
    offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]} {e.SecurityMode.name}" for e in endpoints})
    raise ConnectError(
        f"{conn.url} offers no {conn.security_policy} {conn.security_mode} endpoint; it offers: "
        + ", ".join(offered)
    )
