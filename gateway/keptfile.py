"""Secrets the gateway keeps in files under var/: read when present, else generated once.

The REST access key (gateway.rest.keys) and the TURN REST API shared secret (gateway.nat.secret)
are both kept this way when the configuration does not set them. Creation is atomic: the secret
is written to a private temporary file (mode 0600) and hard-linked into place, so two processes
racing both end up with the one that reached the disk first.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from gateway.errors import ConfigError, Problem

__all__ = ["kept_secret"]

_log = logging.getLogger(__name__)


def kept_secret(
    relative: Path, generate: Callable[[], str], problem: Callable[[str], str | None], what: str
) -> str:
    """The secret in ``relative`` (under the current working directory), generated there by
    ``generate`` when the file does not exist. ``problem`` says what is wrong with a secret read
    back (None when it is usable); an unusable or unreadable file is a ConfigError naming it."""
    path = Path.cwd() / relative
    try:
        return _read(path, problem)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first
        except FileExistsError:
            return _read(path, problem)
    finally:
        tmp.unlink(missing_ok=True)
    _log.warning("generated %s into %s", what, path)
    return secret


def _read(path: Path, problem: Callable[[str], str | None]) -> str:
    """The secret in ``path``; FileNotFoundError if absent, ConfigError if unusable."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        secret = ""
    except OSError as exc:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {exc.strerror}")]) from exc
    reason = problem(secret)
    if reason is not None:
        raise ConfigError([Problem(str(path), "(file)", reason)])
    return secret
