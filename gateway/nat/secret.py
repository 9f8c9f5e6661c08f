"""The TURN REST API shared secret: time-limited TURN credentials are made and checked with it.

The secret is [turn] auth_secret when set, else the one kept in var/turn_auth_secret under the
current working directory, else 32 random bytes (URL-safe base64 text) generated into that file
(mode 0600, atomically: gateway.keptfile) by whichever part of the gateway needs it first: the
TURN service checking credentials and the REST relay configuration (gateway.rest.relayconfig)
issuing them both call :func:`turn_secret`, so they always agree. The secret is the text itself
(its UTF-8 bytes key the HMAC), as coturn's ``static-auth-secret`` is: pointing coturn at the
same text makes it accept the gateway's credentials.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

from gateway.config import Config
from gateway.keptfile import kept_secret

__all__ = ["TURN_SECRET_FILE", "turn_secret"]

#: Where a generated secret is kept, relative to the current working directory.
TURN_SECRET_FILE: Final = Path("var/turn_auth_secret")


def turn_secret(config: Config) -> str:
    """The TURN REST API shared secret: [turn] auth_secret, else generated into var/ once."""
    if config.turn.auth_secret:
        return config.turn.auth_secret
    return kept_secret(
        TURN_SECRET_FILE,
        lambda: secrets.token_urlsafe(32),
        _problem,
        "a TURN auth secret",
    )


def _problem(secret: str) -> str | None:
    return None if secret else "empty TURN auth secret (delete it to generate one)"
