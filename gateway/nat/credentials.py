"""TURN credentials: time-limited ones (the TURN REST API draft, draft-uberti-behave-turn-rest,
as coturn's ``use-auth-secret``/``static-auth-secret`` implements it) and static long-term ones,
and the long-term key the TURN server checks MESSAGE-INTEGRITY with.

Invariants:
- Pure functions of their arguments: the current time ``now`` (unix seconds) is always passed
  in, never read here.
- A time-limited username is ``"EXPIRY:USER"`` (or just ``"EXPIRY"`` when USER is empty), EXPIRY
  being the unix time in whole seconds after which it is refused; its password is
  base64(HMAC-SHA1(secret, username)). ``":"`` is coturn's default ``rest-api-separator``.
  Only the EXPIRY-first form is accepted (coturn also guesses at "USER:EXPIRY"; we do not).
- A username is usable while ``now <= EXPIRY`` (coturn refuses only once EXPIRY is in the
  past); any malformed or expired username gets no key, and so a 401.
- The long-term key is ``stun.long_term_key`` (MD5 of "username:realm:password"), with no
  SASLprep: the time-limited passwords are base64 and the usernames ASCII, where it changes
  nothing.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.nat.stun import long_term_key

__all__ = [
    "TurnAuth",
    "check_credentials",
    "make_credentials",
    "parse_username",
    "rest_password",
]

# Up to 12 digits: far beyond any real expiry, and it keeps int() of a peer's string cheap.
_USERNAME = re.compile(r"([0-9]{1,12})(?::(.*))?", re.DOTALL)


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def rest_password(secret: str | bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), the password of a time-limited username."""
    digest = hmac.new(_secret_bytes(secret), username.encode("utf-8"), "sha1").digest()
    return base64.b64encode(digest).decode("ascii")


def make_credentials(secret: str | bytes, user: str, ttl: int, now: float) -> tuple[str, str]:
    """``(username, password)`` valid for ``ttl`` seconds from ``now`` (unix seconds).

    The username is ``f"{int(now) + ttl}:{user}"``, or the bare expiry when ``user`` is empty.
    Raises ValueError for a ``ttl`` that is not positive or an empty secret.
    """
    if ttl <= 0:
        raise ValueError(f"TURN credential ttl {ttl} is not positive")
    if not secret:
        raise ValueError("TURN auth secret is empty")
    expiry = int(now) + ttl
    username = f"{expiry}:{user}" if user else str(expiry)
    return username, rest_password(secret, username)


def parse_username(username: str) -> tuple[int, str]:
    """``(expiry, user)`` of a time-limited username; ValueError if it is not one."""
    match = _USERNAME.fullmatch(username)
    if match is None:
        raise ValueError(f"not a time-limited TURN username: {username!r}")
    return int(match.group(1)), match.group(2) or ""


def _refusal(secret: str | bytes, username: str, now: float) -> str | None:
    if not secret:
        return "time-limited credentials are not configured"
    try:
        expiry, _ = parse_username(username)
    except ValueError as error:
        return str(error)
    if now > expiry:
        return f"TURN username expired at {expiry}"
    return None


def check_credentials(secret: str | bytes, username: str, password: str, now: float) -> bool:
    """Whether ``username``/``password`` are time-limited credentials made with ``secret``
    and not yet expired at ``now``."""
    if _refusal(secret, username, now) is not None:
        return False
    return hmac.compare_digest(rest_password(secret, username), password)


@dataclass(frozen=True, slots=True)
class TurnAuth:
    """The TURN server's credential source: the ``[turn]`` realm, ``auth_secret`` (time-limited
    credentials; empty means off) and ``users`` (static long-term credentials).

    A username of the time-limited form is looked up as such when a secret is configured;
    any other username is looked up in ``users``.
    """

    realm: str
    secret: str = ""
    users: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, username: str, now: float) -> str | None:
        """Why ``username`` gets no key at ``now`` (for the log), or None when it gets one."""
        if self.secret and _USERNAME.fullmatch(username):
            return _refusal(self.secret, username, now)
        if username in self.users:
            return None
        return f"unknown TURN user {username!r}"

    def key_for(self, username: str, now: float) -> bytes | None:
        """The long-term key (RFC 8489 section 9.2.2) for ``username`` at ``now``, or None
        (unknown, malformed or expired): the server then answers 401."""
        if self.refusal(username, now) is not None:
            return None
        if self.secret and _USERNAME.fullmatch(username):
            password = rest_password(self.secret, username)
        else:
            password = self.users[username]
        return long_term_key(username, self.realm, password)
