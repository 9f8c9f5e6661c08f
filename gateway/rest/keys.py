"""The REST access key and the connection string the ACS SDK takes.

The key is [rest] access_key when set (validated as base64 by gateway.config), else the one kept
in var/rest_access_key under the current working directory, else 32 random bytes generated into
that file (mode 0600) by whichever of `run` and `connection-string` needs it first. Creation is
atomic: two processes racing both end up with the key that reached the disk first.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import secrets
from pathlib import Path
from typing import Final

from gateway.config import Config
from gateway.errors import ConfigError, Problem

__all__ = ["ACCESS_KEY_FILE", "access_key", "connection_string"]

#: Where a generated key is kept, relative to the current working directory.
ACCESS_KEY_FILE: Final = Path("var/rest_access_key")

_log = logging.getLogger(__name__)


def access_key(config: Config) -> str:
    """The base64 REST access key (HMAC secret); generated into var/ on first need."""
    if config.rest.access_key:
        return config.rest.access_key
    path = Path.cwd() / ACCESS_KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            return _read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    _log.warning("generated a REST access key into %s", path)
    return key


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


def _read_key(path: Path) -> str:
    """The key in `path`; FileNotFoundError if absent, ConfigError if unusable."""
    try:
        key = path.read_text(encoding="ascii").strip()
        if base64.b64decode(key, validate=True):
            return key
    except (UnicodeDecodeError, binascii.Error, ValueError):
        pass
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {exc.strerror}")]) from exc
    raise ConfigError(
        [Problem(str(path), "(file)", "not a base64 access key (delete it to generate a new one)")]
    )
