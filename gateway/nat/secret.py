"""The TURN REST API shared secret: time-limited TURN credentials are made and checked with it.

The secret is [turn] auth_secret when set, else the one kept in var/turn_auth_secret under the
current working directory, else 32 random bytes (URL-safe base64 text) generated into that file
(mode 0600) by whichever part of the gateway needs it first: the TURN service checking
credentials and the REST relay configuration (gateway.rest.relayconfig) issuing them both call
:func:`turn_secret`, so they always agree. Creation is atomic: two processes racing both end up
with the secret that reached the disk first. The secret is the text itself (its UTF-8 bytes key
the HMAC), as coturn's ``static-auth-secret`` is: pointing coturn at the same text makes it
accept the gateway's credentials.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

from gateway.config import Config
from gateway.errors import ConfigError, Problem

__all__ = ["TURN_SECRET_FILE", "turn_secret"]

#: Where a generated secret is kept, relative to the current working directory.
TURN_SECRET_FILE: Final = Path("var/turn_auth_secret")

_log = logging.getLogger(__name__)


def turn_secret(config: Config) -> str:
    """The TURN REST API shared secret: [turn] auth_secret, else generated into var/ once."""
    if config.turn.auth_secret:
        return config.turn.auth_secret
    path = Path.cwd() / TURN_SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            return _read_secret(path)
    finally:
        tmp.unlink(missing_ok=True)
    _log.warning("generated a TURN auth secret into %s", path)
    return secret


def _read_secret(path: Path) -> str:
    """The secret in `path`; FileNotFoundError if absent, ConfigError if unusable."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        secret = ""
    except OSError as exc:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {exc.strerror}")]) from exc
    if not secret:
        raise ConfigError(
            [Problem(str(path), "(file)", "empty TURN auth secret (delete it to generate one)")]
        )
    return secret
