"""The REST access key and the connection string the ACS SDK takes.

The key is [rest] access_key when set (validated as base64 by gateway.config), else the one kept
in var/rest_access_key under the current working directory, else 32 random bytes generated into
that file (mode 0600, atomically: gateway.keptfile) by whichever of `run` and
`connection-string` needs it first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from pathlib import Path
from typing import Final

from gateway.config import Config
from gateway.keptfile import kept_secret

__all__ = ["ACCESS_KEY_FILE", "access_key", "connection_string"]

#: Where a generated key is kept, relative to the current working directory.
ACCESS_KEY_FILE: Final = Path("var/rest_access_key")


def access_key(config: Config) -> str:
    """The base64 REST access key (HMAC secret); generated into var/ on first need."""
    if config.rest.access_key:
        return config.rest.access_key
    return kept_secret(
        ACCESS_KEY_FILE,
        lambda: base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
        _problem,
        "a REST access key",
    )


def connection_string(config: Config) -> str:
    """The ACS connection string "endpoint=https://HOST:PORT/;accesskey=KEY" of [rest] listen.

    An unspecified listen address (0.0.0.0, ::) is given as loopback, since no client can
    connect to it as such.
    """
    listen = config.rest.listen
    host = listen.host
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        host = "127.0.0.1" if ip.version == 4 else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"endpoint=https://{host}:{listen.port}/;accesskey={access_key(config)}"


def _problem(key: str) -> str | None:
    try:
        if base64.b64decode(key, validate=True):
            return None
    except (binascii.Error, ValueError):
        pass
    return "not a base64 access key (delete it to generate a new one)"
