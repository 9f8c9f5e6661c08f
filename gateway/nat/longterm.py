"""The server side of STUN's long-term credential mechanism (RFC 8489 section 9.2): stateless
nonces, the checks on a request, and the responses the TURN server signs or bounds.

Invariants:
- Sans-I/O, the clock an argument. Keys come from ``TurnAuth`` (static users and coturn-style
  time-limited credentials).
- A nonce is ``EXPIRY`` (10 lowercase hex digits, unix seconds) followed by 16 characters of
  URL-safe base64 of an HMAC-SHA1, keyed with a per-server random secret, over the expiry and
  the client's address: valid only from the address it was issued to and only until its
  expiry; the server keeps nothing per unauthenticated source; it never starts with RFC 8489's
  "obMatJos2" security-feature cookie (so clients stay on the RFC 5389 MD5 key).
- Check order (RFC 8489 section 9.2.4): no MESSAGE-INTEGRITY(-SHA256) -> 401 challenge;
  USERNAME, REALM or NONCE missing -> 400; unknown user or bad integrity -> 401 challenge;
  stale nonce -> 438, signed since the integrity held. The 401 carries REALM and NONCE and no
  integrity; it and the Binding success are the only answers that may exceed the request.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gateway.nat.credentials import TurnAuth
from gateway.nat.stun import (
    MESSAGE_INTEGRITY,
    MESSAGE_INTEGRITY_SHA256,
    NONCE,
    REALM,
    Address,
    Class,
    Message,
    check_integrity,
    check_integrity_sha256,
)

__all__ = ["Authenticated", "LongTermAuth", "Nonces", "Refused", "bounded_error", "signed"]

_HEAD = 10  # hex digits of a nonce's expiry


class Nonces:
    """Issues and checks nonces that last ``lifetime`` seconds."""

    __slots__ = ("_secret", "lifetime")

    def __init__(self, secret: bytes, lifetime: int) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def issue(self, client: Address, now: float) -> str:
        """A nonce for ``client``, valid until ``now + lifetime``."""
        head = f"{int(now) + self.lifetime:0{_HEAD}x}"
        return head + self._mac(head, client)

    def valid(self, nonce: str, client: Address, now: float) -> bool:
        """Whether ``nonce`` was issued here to ``client`` and has not expired at ``now``;
        anything else (expired, another client's, forged, malformed) is stale (438)."""
        head = nonce[:_HEAD]
        try:
            expiry = int(head, 16)
        except ValueError:
            return False
        if f"{expiry:0{_HEAD}x}" != head:  # int() accepts signs, spaces, "0x", underscores
            return False
        mac = self._mac(head, client).encode()
        return hmac.compare_digest(mac, nonce[_HEAD:].encode()) and now <= expiry

    def _mac(self, head: str, client: Address) -> str:
        text = f"{head}|{client[0]}|{client[1]}".encode()
        digest = hmac.new(self._secret, text, "sha1").digest()
        return base64.urlsafe_b64encode(digest[:12]).decode("ascii")


class Authenticated(NamedTuple):
    """A request whose integrity holds: who sent it, and how to sign the answer."""

    username: str
    key: bytes
    sha256: bool  # the request had MESSAGE-INTEGRITY-SHA256 only: answer in kind


class Refused(NamedTuple):
    """A request that does not pass: ``code`` 401 (challenge), 400 or 438, ``reason`` the
    counter to bump ("auth_challenges", "auth_failures", "auth_incomplete", "stale_nonces"),
    ``response`` the answer's octets (None: a 400 larger than the request, not sent)."""

    code: int
    reason: str
    response: bytes | None


class LongTermAuth:
    """Checks requests against ``TurnAuth`` and answers the ones that fail."""

    def __init__(self, auth: TurnAuth, nonces: Nonces, software: str) -> None:
        self.auth = auth
        self.nonces = nonces
        self.software = software

    def check(
        self, msg: Message, raw: bytes, client: Address, now: float
    ) -> Authenticated | Refused:
        """RFC 8489 section 9.2.4, in the order of the module docstring."""
        has_sha1 = msg.get(MESSAGE_INTEGRITY) is not None
        if not has_sha1 and msg.get(MESSAGE_INTEGRITY_SHA256) is None:
            return Refused(401, "auth_challenges", self.challenge(msg, client, now))
        try:
            username, realm, nonce = msg.username(), msg.realm(), msg.nonce()
        except ValueError:
            username = None
        if username is None or realm is None or nonce is None:
            return Refused(400, "auth_incomplete", bounded_error(msg, 400, len(raw)))
        key = self.auth.key_for(username, now)
        verify = check_integrity if has_sha1 else check_integrity_sha256
        if key is None or not verify(raw, key):
            return Refused(401, "auth_failures", self.challenge(msg, client, now))
        auth = Authenticated(username, key, not has_sha1)
        if not self.nonces.valid(nonce, client, now):
            fresh = (self.auth.realm, self.nonces.issue(client, now))
            attributes = [(REALM, fresh[0].encode()), (NONCE, fresh[1].encode())]
            return Refused(438, "stale_nonces", signed(msg, auth, self.software, attributes, 438))
        return auth

    def challenge(self, msg: Message, client: Address, now: float) -> bytes:
        """401 with REALM and a fresh NONCE, no integrity, FINGERPRINT."""
        reply = (
            Message(msg.method, Class.ERROR, msg.transaction_id)
            .with_error_code(401)
            .with_realm(self.auth.realm)
            .with_nonce(self.nonces.issue(client, now))
        )
        return bytes(reply.with_fingerprint())


def signed(
    msg: Message,
    auth: Authenticated,
    software: str,
    attributes: Iterable[tuple[int, bytes]] = (),
    code: int = 0,
) -> bytes:
    """A success (``code`` 0) or error response to an authenticated request: ``attributes``,
    SOFTWARE, MESSAGE-INTEGRITY (or -SHA256, as the request) with its key, FINGERPRINT."""
    if code:
        reply = Message(msg.method, Class.ERROR, msg.transaction_id).with_error_code(code)
    else:
        reply = Message(msg.method, Class.SUCCESS, msg.transaction_id)
    for attr_type, value in attributes:
        reply = reply.with_attribute(attr_type, value)
    reply = reply.with_software(software)
    if auth.sha256:
        reply = reply.with_integrity_sha256(auth.key)
    else:
        reply = reply.with_integrity(auth.key)
    return bytes(reply.with_fingerprint())


def bounded_error(
    msg: Message, code: int, limit: int, attributes: Sequence[tuple[int, bytes]] = ()
) -> bytes | None:
    """An error response to an unauthenticated request of ``limit`` octets, never larger:
    in full with FINGERPRINT, else without reason phrase and FINGERPRINT, else None."""
    for reason in (None, ""):
        reply = Message(msg.method, Class.ERROR, msg.transaction_id).with_error_code(code, reason)
        for attr_type, value in attributes:
            reply = reply.with_attribute(attr_type, value)
        data = bytes(reply.with_fingerprint() if reason is None else reply)
        if len(data) <= limit:
            return data
    return None
