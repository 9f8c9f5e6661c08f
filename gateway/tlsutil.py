"""The gateway's TLS certificate: loaded from [tls], or a self-signed pair created once.

The self-signed certificate covers every address the gateway listens on plus
``localhost`` (DESIGN.md, REST contract), so SIP-over-TLS peers and ACS SDK
clients can verify it with ``connection_verify=<cert>``.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("gateway.tls")


def ensure_certificate(cert: Path, key: Path, hosts: Iterable[str]) -> bool:
    """Create a self-signed pair at ``cert``/``key`` if either is missing.

    Returns True when a new pair was written.
    """
    if cert.exists() and key.exists():
        return False
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    seen: set[str] = {"localhost"}
    for host in [*hosts, "127.0.0.1", "::1"]:
        if host in seen or not host:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acs-gateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.info("created a self-signed certificate %s for %s", cert, ", ".join(sorted(seen)))
    return True


def server_options(cert: Path, key: Path) -> object:
    """Twisted TLS server options for the pair."""
    from twisted.internet import ssl

    pem = cert.read_bytes() + b"\n" + key.read_bytes()
    return ssl.PrivateCertificate.loadPEM(pem).options()  # type: ignore[no-untyped-call]


def client_options(hostname: str) -> object:
    """Twisted TLS client options verifying ``hostname`` against the system trust store."""
    from twisted.internet import ssl

    return ssl.optionsForClientTLS(hostname)
