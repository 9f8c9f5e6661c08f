"""HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760).

Both ends of the exchange: ``DigestClient`` answers a carrier's 401/407 challenge,
``DigestServer`` challenges requests from sources that match no trunk and checks the
answers, ``FailureTracker`` stops answering sources that keep failing.

Invariants:
- Sans-I/O: no clock, no sockets. ``now`` (seconds, any monotonic origin) is an argument;
  randomness comes from ``gateway.sip.ids.random_hex`` or an injected factory.
- Text is handled as the codec hands it over (``gateway.sip.message``): header values are
  latin-1 decoded octets, so a value taken from the wire hashes as its latin-1 encoding
  and is echoed unchanged. Text from configuration (username, password, server realm) is
  real text and hashes as UTF-8 (RFC 7616 section 3.4, ``charset=UTF-8``).
- Supported algorithms: MD5, SHA-256 and their ``-sess`` variants (RFC 7616 section
  3.4.2, RFC 8760 section 2.1); qop ``auth`` and ``auth-int``; RFC 2069-style challenges
  without qop (RFC 3261 section 22.4 keeps them for backward compatibility).
- A parse or usability failure raises ``AuthError`` with its reason; the server side
  never raises on peer input, it answers an ``AuthResult``.
- Everything a peer controls is bounded: parameters per header, remembered realms,
  tracked nonces, tracked failing sources.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.sip.errors import SipError
from gateway.sip.ids import random_hex

__all__ = [
    "AuthError",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "FailureTracker",
    "choose_challenge",
    "parse_challenge",
]

MAX_PARAMS: Final = 32  # auth-params in one header value; RFC 7616 defines 13
MAX_REALMS: Final = 64  # realms a DigestClient remembers
MAX_NONCES: Final = 10_000  # nonces a DigestServer tracks nc for
MAX_SOURCES: Final = 10_000  # sources a FailureTracker tracks
MAX_NC: Final = 0xFFFFFFFF  # nc is 8 hex digits (RFC 7616 section 3.4)


class AuthError(SipError):
    """A challenge or credential that is malformed or cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------
# algorithms (RFC 7616 section 3.4.2, RFC 8760 section 2.1)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str  # the spelling RFC 7616 section 6.1 registers
    hash: Callable[[bytes], str]  # hex digest, lower case (RFC 7616 section 3.4.1)
    sess: bool  # A1 also covers nonce and cnonce (RFC 7616 section 3.4.2)
    strength: int  # local preference among offered challenges, higher first


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_ALGORITHMS: Final = {
    a.name.upper(): a
    for a in (
        _Algorithm("SHA-256", _sha256, False, 2),
        _Algorithm("SHA-256-sess", _sha256, True, 2),
        _Algorithm("MD5", _md5, False, 1),
        _Algorithm("MD5-sess", _md5, True, 1),
    )
}


def _algorithm(name: str) -> _Algorithm:
    found = _ALGORITHMS.get(name.upper())
    if found is None:
        raise AuthError(f"unknown algorithm {name}")
    return found


def _digest(
    algorithm: _Algorithm,
    *,
    username: bytes,
    realm: bytes,
    password: bytes,
    method: bytes,
    uri: bytes,
    nonce: bytes,
    nc: str,
    cnonce: bytes,
    qop: str | None,
    body: bytes,
) -> str:
    """The ``response`` value: RFC 7616 section 3.4.1, or RFC 2069's when qop is None."""
    h = algorithm.hash
    ha1 = h(b"%s:%s:%s" % (username, realm, password))
    if algorithm.sess:  # RFC 7616 section 3.4.2
        ha1 = h(b"%s:%s:%s" % (ha1.encode(), nonce, cnonce))
    a2 = b"%s:%s" % (method, uri)
    if qop == "auth-int":  # RFC 7616 section 3.4.3; RFC 3261 section 22.4: H("") if no body
        a2 += b":" + h(body).encode()
    if qop is None:  # RFC 2617 section 3.2.2.1, the RFC 2069 computation
        return h(b"%s:%s:%s" % (ha1.encode(), nonce, h(a2).encode()))
    data = b"%s:%s:%s:%s:%s" % (nonce, nc.encode(), cnonce, qop.encode(), h(a2).encode())
    return h(ha1.encode() + b":" + data)


def _wire(text: str) -> bytes:
    """The octets of a value taken from (or bound for) the wire; see the module invariants."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # real text a caller passed in; SIP is UTF-8
        return text.encode("utf-8")


def _to_wire(text: str) -> str:
    """Real text as the codec carries it: its UTF-8 octets, latin-1 decoded."""
    return text.encode("utf-8").decode("latin-1")


# --------------------------------------------------------------------------
# parsing (RFC 3261 section 25.1, RFC 7235 section 2.1, RFC 7616 sections 3.3 and 3.4)
# --------------------------------------------------------------------------

_FOLD_RE: Final = re.compile(r"[ \t]*\r?\n[ \t]+")  # RFC 3261 section 7.3.1: folding is one SP
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Unquoted values: RFC 7616 asks for tokens, but carriers send base64 nonces bare.
_BARE_RE: Final = re.compile(r'[^\x00-\x20\x7f",]+')
_CTL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LWS: Final = " \t"


def _scheme(value: str) -> tuple[str, str]:
    """Split ``value`` into its auth-scheme and the rest (RFC 7235 section 2.1)."""
    text = _FOLD_RE.sub(" ", value).strip(_LWS)
    match = _TOKEN_RE.match(text)
    if match is None:
        raise AuthError("no authentication scheme")
    end = match.end()
    if end < len(text) and text[end] not in _LWS:
        raise AuthError(f"malformed authentication scheme {text[: end + 1]!r}")
    return match.group(), text[end:]


def _quoted(text: str, pos: int, name: str) -> tuple[str, int]:
    """The quoted-string starting at ``text[pos] == '"'``, unescaped, and the end position."""
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":  # quoted-pair (RFC 3261 section 25.1)
            i += 1
            if i == n:
                break
            c = text[i]
        if _CTL_RE.match(c):
            raise AuthError(f"control character in quoted {name}")
        out.append(c)
        i += 1
    raise AuthError(f"unterminated quoted-string in {name}")


def _params(text: str, what: str) -> dict[str, str]:
    """The ``name=value`` list after the scheme; names lower-cased, values unquoted."""
    params: dict[str, str] = {}
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in _LWS + ",":  # empty list elements (RFC 7230 section 7)
            i += 1
        if i == n:
            return params
        match = _TOKEN_RE.match(text, i)
        if match is None:
            raise AuthError(f"malformed {what} parameter at {text[i : i + 20]!r}")
        name = match.group().lower()
        i = match.end()
        while i < n and text[i] in _LWS:
            i += 1
        if i == n or text[i] != "=":
            raise AuthError(f"{what} parameter {name} has no value")
        i += 1
        while i < n and text[i] in _LWS:
            i += 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i, name)
        else:
            bare = _BARE_RE.match(text, i)
            if bare is None:
                raise AuthError(f"{what} parameter {name} has no value")
            value, i = bare.group(), bare.end()
        if name in params:  # RFC 7235 section 2.1: each parameter at most once
            raise AuthError(f"duplicate {what} parameter {name}")
        if len(params) == MAX_PARAMS:
            raise AuthError(f"more than {MAX_PARAMS} {what} parameters")
        params[name] = value
        while i < n and text[i] in _LWS:
            i += 1
        if i < n and text[i] != ",":
            raise AuthError(f"expected ',' after {what} parameter {name}")


def _digest_params(value: str, what: str) -> dict[str, str]:
    scheme, rest = _scheme(value)
    if scheme.lower() != "digest":  # RFC 3261 section 22.1: only Digest is defined for SIP
        raise AuthError(f"unsupported scheme {scheme}")
    return _params(rest, what)


def _qop_list(value: str) -> tuple[str, ...]:
    return tuple(q for q in (part.strip(_LWS).lower() for part in value.split(",")) if q)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (WWW-Authenticate or Proxy-Authenticate, RFC 7616 section 3.3)."""

    scheme: str  # always "Digest"
    realm: str
    nonce: str
    algorithm: str  # "MD5", "SHA-256", "MD5-sess" or "SHA-256-sess"; MD5 when absent
    qop: tuple[str, ...]  # lower case, in the server's order; () for an RFC 2069 challenge
    opaque: str | None
    stale: bool
    domain: str | None


def parse_challenge(value: str) -> Challenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate value.

    Each SIP header field carries one challenge (RFC 3261 section 7.3.1 exempts these
    headers from comma combination). Raises ``AuthError`` for a scheme other than Digest,
    a syntax error, a missing realm or nonce, or an algorithm this module does not know.
    """
    params = _digest_params(value, "challenge")
    realm = params.get("realm")
    if realm is None:  # RFC 7616 section 3.3: realm and nonce are required
        raise AuthError("challenge has no realm")
    nonce = params.get("nonce")
    if nonce is None:
        raise AuthError("challenge has no nonce")
    return Challenge(
        scheme="Digest",
        realm=realm,
        nonce=nonce,
        algorithm=_algorithm(params.get("algorithm", "MD5")).name,
        qop=_qop_list(params["qop"]) if "qop" in params else (),
        opaque=params.get("opaque"),
        # RFC 7616 section 3.3: "true" (case-insensitive) or else false.
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
    )


def _choose_qop(challenge: Challenge) -> str | None:
    """The qop to answer with: auth, else auth-int, else None for an RFC 2069 challenge."""
    if not challenge.qop:
        if _algorithm(challenge.algorithm).sess:
            # -sess hashes the cnonce, which RFC 2617 section 3.2.2 forbids without qop.
            raise AuthError(f"algorithm {challenge.algorithm} without qop")
        return None
    for qop in ("auth", "auth-int"):  # RFC 7616 section 3.4: one the server offered
        if qop in challenge.qop:
            return qop
    raise AuthError(f"no supported qop in {','.join(challenge.qop)}")


def choose_challenge(values: Sequence[str]) -> Challenge | None:
    """The challenge to answer among a response's WWW-/Proxy-Authenticate values.

    RFC 8760 section 2.4: the UAC ignores challenges it cannot use and takes the topmost
    one it supports, unless local policy says otherwise. The gateway's policy: the
    strongest hash wins (SHA-256 over MD5), then a challenge with qop over one without,
    then the server's order. None if no value is usable.
    """
    best: Challenge | None = None
    best_rank = (-1, -1)
    for value in values:
        try:
            challenge = parse_challenge(value)
            qop = _choose_qop(challenge)
        except AuthError:
            continue
        rank = (_algorithm(challenge.algorithm).strength, qop is not None)
        if rank > best_rank:
            best, best_rank = challenge, rank
    return best


# --------------------------------------------------------------------------
# rendering (RFC 7616 section 3.4)
# --------------------------------------------------------------------------


def _quote(text: str, name: str) -> str:
    if _CTL_RE.search(text):
        raise AuthError(f"control character in {name}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password for one carrier (the password stays out of ``repr``)."""

    username: str
    password: str = field(repr=False)


@dataclass(slots=True)
class _Session:
    challenge: Challenge
    nc: int  # requests sent with this nonce so far
    cnonce: str  # kept for the nonce's lifetime with -sess algorithms


def _new_cnonce() -> str:
    return random_hex(16)


class DigestClient:
    """Answers challenges for one set of credentials.

    Remembers the last challenge per realm, so later requests reuse the nonce with an
    incrementing nc (RFC 7616 section 3.4) and can be sent with credentials up front
    (``preemptive``, RFC 3261 section 22.3). ``cnonce_factory`` exists for tests that
    reproduce published examples; it defaults to 128 random bits.
    """

    def __init__(
        self, credentials: Credentials, cnonce_factory: Callable[[], str] = _new_cnonce
    ) -> None:
        self.credentials = credentials
        self._cnonce = cnonce_factory
        self._sessions: dict[str, _Session] = {}

    def authorization(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """The Authorization / Proxy-Authorization value answering ``challenge``.

        ``uri`` is the Request-URI (RFC 3261 section 22.4); ``body`` matters only for
        qop=auth-int. A new nonce starts at nc=00000001; the same nonce again counts up.
        Raises ``AuthError`` if the challenge cannot be answered.
        """
        _choose_qop(challenge)
        session = self._sessions.get(challenge.realm)
        if (
            session is None
            or session.challenge.nonce != challenge.nonce
            or session.challenge.algorithm != challenge.algorithm
        ):
            session = _Session(challenge, 0, self._cnonce())
            self._remember(challenge.realm, session)
        else:
            session.challenge = challenge  # opaque or qop may have changed
        return self._answer(session, method, uri, body)

    def preemptive(self, realm: str, method: str, uri: str, body: bytes = b"") -> str | None:
        """A value reusing the remembered nonce for ``realm`` with the next nc, or None."""
        session = self._sessions.get(realm)
        if session is None or session.nc >= MAX_NC:
            return None
        return self._answer(session, method, uri, body)

    def forget(self, realm: str) -> None:
        """Drop what is remembered for ``realm`` (credentials refused, trunk removed)."""
        self._sessions.pop(realm, None)

    def _remember(self, realm: str, session: _Session) -> None:
        self._sessions.pop(realm, None)
        while len(self._sessions) >= MAX_REALMS:
            del self._sessions[next(iter(self._sessions))]  # the least recently challenged
        self._sessions[realm] = session

    def _answer(self, session: _Session, method: str, uri: str, body: bytes) -> str:
        challenge = session.challenge
        algorithm = _algorithm(challenge.algorithm)
        qop = _choose_qop(challenge)
        if session.nc >= MAX_NC:
            self.forget(challenge.realm)
            raise AuthError("nonce count exhausted")
        session.nc += 1
        nc = f"{session.nc:08x}"
        # -sess: one cnonce per nonce, so A1 is the same whether a server computes it once
        # (RFC 2617 section 3.2.2.2) or per request; otherwise a fresh cnonce each time.
        cnonce = session.cnonce if algorithm.sess or session.nc == 1 else self._cnonce()
        username = self.credentials.username
        response = _digest(
            algorithm,
            username=username.encode("utf-8"),
            realm=_wire(challenge.realm),
            password=self.credentials.password.encode("utf-8"),
            method=_wire(method),
            uri=_wire(uri),
            nonce=_wire(challenge.nonce),
            nc=nc,
            cnonce=_wire(cnonce),
            qop=qop,
            body=body,
        )
        # RFC 7616 section 3.4: username, realm, nonce, uri, response, cnonce and opaque
        # quoted; algorithm, qop and nc never.
        parts = [
            f"username={_quote(_to_wire(username), 'username')}",
            f"realm={_quote(challenge.realm, 'realm')}",
            f"nonce={_quote(challenge.nonce, 'nonce')}",
            f"uri={_quote(uri, 'uri')}",
            f'response="{response}"',
            f"algorithm={algorithm.name}",
        ]
        if qop is not None:
            parts += [f"cnonce={_quote(cnonce, 'cnonce')}", f"qop={qop}", f"nc={nc}"]
        if challenge.opaque is not None:  # RFC 7616 section 3.4: returned unchanged
            parts.append(f"opaque={_quote(challenge.opaque, 'opaque')}")
        return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------
# server side
# --------------------------------------------------------------------------


class AuthResult(enum.Enum):
    """What ``DigestServer.verify`` concluded about a request's credentials."""

    OK = "ok"  # accept the request
    MISSING = "missing"  # no credentials for our realm: answer 401 with a challenge
    STALE = "stale"  # right password, expired nonce: 401 with stale=true (RFC 7616 3.3)
    BAD = "bad"  # wrong response, forged nonce or opaque, replayed nc: 403 or 401
    UNKNOWN_USER = "unknown_user"  # lookup found no such user
    MALFORMED = "malformed"  # not Digest, unparsable, or unusable parameters: 400


_NC_RE: Final = re.compile(r"[0-9A-Fa-f]{8}\Z")
_HEX_RE: Final = re.compile(r"[0-9a-f]+\Z")
_STAMP_HEX: Final = 12  # milliseconds, 48 bits: about 8,900 years
_SALT_HEX: Final = 16
_MAC_HEX: Final = 32
_NONCE_LEN: Final = _STAMP_HEX + _SALT_HEX + _MAC_HEX


@dataclass(frozen=True, slots=True)
class _Answer:
    """The parameters of a Digest credential (RFC 7616 section 3.4)."""

    username: str  # as on the wire
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: _Algorithm
    qop: str
    nc: str
    cnonce: str
    opaque: str | None


def _parse_answer(value: str) -> _Answer:
    params = _digest_params(value, "credential")
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in params:
            raise AuthError(f"credential has no {name}")
    qop = params.get("qop")
    if qop is None:
        # RFC 7616 section 3.4: qop is required when the challenge offered it, as ours do;
        # an RFC 2069 answer would carry no nc to detect replays with.
        raise AuthError("credential has no qop")
    qop = qop.lower()
    if qop not in ("auth", "auth-int"):
        raise AuthError(f"unsupported qop {qop}")
    nc = params.get("nc")
    if nc is None or not _NC_RE.match(nc):
        raise AuthError("credential needs nc of 8 hex digits with qop")
    cnonce = params.get("cnonce")
    if not cnonce:
        raise AuthError("credential needs cnonce with qop")
    return _Answer(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=_algorithm(params.get("algorithm", "MD5")),
        qop=qop,
        nc=nc.lower(),
        cnonce=cnonce,
        opaque=params.get("opaque"),
    )


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two peer-influenced strings."""
    return hmac.compare_digest(_wire(a), _wire(b))


class DigestServer:
    """Challenges requests and verifies their credentials for one realm.

    Nonces are stateless (RFC 7616 section 3.3 suggests time-stamp plus a keyed hash):
    12 hex digits of issue time in milliseconds, 16 random hex digits (two challenges in
    the same millisecond still differ, so their nc counts stay apart), and 32 hex digits
    of HMAC-SHA-256(secret, stamp salt ":" realm). The only state is the highest nc seen
    per nonce, for replay detection (RFC 7616 section 3.4), kept until the nonce expires
    and capped at ``max_nonces``; a nonce that had to be forgotten early is answered
    STALE, never accepted again.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        *,
        max_nonces: int = MAX_NONCES,
    ) -> None:
        if not secret:
            raise ValueError("DigestServer needs a non-empty secret")
        if nonce_ttl <= 0 or max_nonces < 1:
            raise ValueError("nonce_ttl and max_nonces must be positive")
        if not algorithms:
            raise ValueError("DigestServer needs at least one algorithm")
        try:
            self._algorithms = tuple(_algorithm(name) for name in algorithms)
            self._realm = _to_wire(realm)
            _quote(self._realm, "realm")
        except AuthError as err:
            raise ValueError(err.reason) from err
        self.realm = realm
        self._secret = secret
        self._ttl_ms = int(nonce_ttl * 1000)
        self._max_nonces = max_nonces
        self._opaque = self._mac(b"opaque")
        # nonce -> (highest nc, expiry in ms); insertion order = order of first use.
        self._nc: dict[str, tuple[int, int]] = {}
        self._forgotten_upto = -1  # highest issue stamp of a nonce forgotten while valid

    def challenge_headers(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per algorithm in preference order (RFC 8760
        section 2.3), sharing one nonce and opaque as in RFC 7616 section 3.9.1."""
        nonce = self._make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm={_quote(self._realm, "realm")}, qop="auth", '
            f'algorithm={a.name}, nonce="{nonce}", opaque="{self._opaque}"{tail}'
            for a in self._algorithms
        ]

    def verify(
        self,
        method: str,
        header_value: str | None,
        lookup: Callable[[str], str | None],
        now: float,
        body: bytes = b"",
        *,
        uri: str | None = None,
    ) -> tuple[AuthResult, str | None]:
        """Check a request's Authorization value; returns the result and the username.

        ``lookup`` maps a username to its password (None: unknown). ``uri``, when given,
        must equal the credential's digest-uri (RFC 7616 section 3.4.6 check). The order
        follows RFC 7616 section 3.3: STALE only for a correct response on an expired
        nonce, so the client may retry without asking anyone for a password.
        """
        if header_value is None:
            return AuthResult.MISSING, None
        try:
            answer = _parse_answer(header_value)
        except AuthError:
            return AuthResult.MALFORMED, None
        username = _wire(answer.username).decode("utf-8", "replace")
        if answer.realm != self._realm:  # RFC 3261 section 22.3: none for our realm
            return AuthResult.MISSING, username
        if answer.algorithm not in self._algorithms:
            return AuthResult.MALFORMED, username
        issued = self._check_nonce(answer.nonce)
        if issued is None:
            return AuthResult.BAD, username
        if answer.opaque is not None and not _same(answer.opaque, self._opaque):
            return AuthResult.BAD, username
        if uri is not None and answer.uri != uri:
            return AuthResult.BAD, username
        password = lookup(username)
        # an unknown name costs the same digest as a known one: how long the refusal takes
        # must not tell which names exist
        expected = _digest(
            answer.algorithm,
            username=_wire(answer.username),
            realm=_wire(answer.realm),
            password=(password or "").encode("utf-8"),
            method=_wire(method),
            uri=_wire(answer.uri),
            nonce=_wire(answer.nonce),
            nc=answer.nc,
            cnonce=_wire(answer.cnonce),
            qop=answer.qop,
            body=body,
        )
        if password is None:
            return AuthResult.UNKNOWN_USER, username
        if not _same(expected, answer.response):
            return AuthResult.BAD, username
        now_ms = int(now * 1000)
        if not issued <= now_ms <= issued + self._ttl_ms:
            return AuthResult.STALE, username
        return self._count(answer.nonce, int(answer.nc, 16), issued, now_ms), username

    def _mac(self, data: bytes) -> str:
        mac = hmac.new(self._secret, data + b":" + _wire(self._realm), hashlib.sha256)
        return mac.hexdigest()[:_MAC_HEX]

    def _make_nonce(self, now: float) -> str:
        if now < 0:
            raise ValueError("now must not be negative")
        head = f"{int(now * 1000):0{_STAMP_HEX}x}{random_hex(_SALT_HEX // 2)}"
        return head + self._mac(head.encode())

    def _check_nonce(self, nonce: str) -> int | None:
        """The issue stamp (ms) of a nonce this server made, or None for a forged one."""
        if len(nonce) != _NONCE_LEN or not _HEX_RE.match(nonce):
            return None
        head, mac = nonce[:-_MAC_HEX], nonce[-_MAC_HEX:]
        if not hmac.compare_digest(mac.encode(), self._mac(head.encode()).encode()):
            return None
        return int(head[:_STAMP_HEX], 16)

    def _count(self, nonce: str, nc: int, issued: int, now_ms: int) -> AuthResult:
        """Accept ``nc`` only above the highest seen for ``nonce`` (RFC 7616 section 3.4)."""
        seen = self._nc.get(nonce)
        if seen is None:
            if issued <= self._forgotten_upto:
                return AuthResult.STALE  # its count was dropped: cannot rule out a replay
            self._make_room(now_ms)
        elif nc <= seen[0]:
            return AuthResult.BAD
        self._nc[nonce] = (nc, issued + self._ttl_ms)
        return AuthResult.OK

    def _make_room(self, now_ms: int) -> None:
        if len(self._nc) < self._max_nonces:
            return
        for key, (_, expires) in list(self._nc.items()):
            if expires < now_ms:
                del self._nc[key]
        # Still full: forget the oldest tenth at once, so the sweep above stays rare.
        keep = self._max_nonces - max(1, self._max_nonces // 10)
        while len(self._nc) > keep:
            key = next(iter(self._nc))
            issued = self._nc.pop(key)[1] - self._ttl_ms
            self._forgotten_upto = max(self._forgotten_upto, issued)


# --------------------------------------------------------------------------
# failing sources
# --------------------------------------------------------------------------


class FailureTracker:
    """After ``limit`` failed authentications from one source within ``window`` seconds,
    the source is blocked for ``block_for`` seconds: the gateway answers nothing to it.

    ``blocked()`` counts every True answer in ``dropped``. Memory is bounded: at most
    ``max_sources`` sources with failures and as many blocked ones, each with at most
    ``limit`` timestamps; the oldest entries go first when a table is full.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        block_for: float = 300.0,
        *,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        if limit < 1 or window <= 0 or block_for < 0 or max_sources < 1:
            raise ValueError("limit, window and max_sources must be positive")
        self.limit = limit
        self.window = window
        self.block_for = block_for
        self.max_sources = max_sources
        self.dropped = 0
        # source -> failure times; insertion order = order of the last failure.
        self._failures: dict[str, deque[float]] = {}
        # source -> end of its block; insertion order = order of expiry.
        self._blocked: dict[str, float] = {}

    def record_failure(self, source: str, now: float) -> bool:
        """Count a failure; True when it makes ``source`` blocked."""
        self._prune_blocked(now)
        if self._is_blocked(source, now):
            return False
        times = self._failures.pop(source, None)
        if times is None:
            times = deque(maxlen=self.limit)
        self._prune_failures(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        if len(times) < self.limit:
            self._failures[source] = times
            return False
        while len(self._blocked) >= self.max_sources:
            del self._blocked[next(iter(self._blocked))]  # the block that ends first
        self._blocked[source] = now + self.block_for
        return True

    def record_success(self, source: str) -> None:
        """Forget the failures of ``source`` (its block, if any, runs its course)."""
        self._failures.pop(source, None)

    def blocked(self, source: str, now: float) -> bool:
        """True while ``source`` is blocked; each True answer counts one dropped request."""
        self._prune_blocked(now)
        if self._is_blocked(source, now):
            self.dropped += 1
            return True
        return False

    def tracked(self) -> int:
        """Sources currently held in memory (with failures or blocked)."""
        return len(self._failures) + len(self._blocked)

    def _is_blocked(self, source: str, now: float) -> bool:
        until = self._blocked.get(source)
        if until is None:
            return False
        if now < until:
            return True
        del self._blocked[source]
        return False

    def _prune_blocked(self, now: float) -> None:
        """Drop blocks that ran out (insertion order is expiry order: one ``block_for``)."""
        blocked = self._blocked
        while blocked:
            first = next(iter(blocked))
            if blocked[first] > now:
                break
            del blocked[first]

    def _prune_failures(self, now: float) -> None:
        """Drop sources whose last failure left the window; then the oldest over the cap."""
        failures = self._failures
        while failures:
            first = next(iter(failures))
            if failures[first][-1] > now - self.window and len(failures) < self.max_sources:
                break
            del failures[first]
