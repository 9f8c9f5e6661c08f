"""ICE-lite on the gateway's media ports (RFC 8445 section 2.5, RFC 8839 for the SDP).

When a leg's peer does ICE (its SDP carries ``a=ice-ufrag``/``a=ice-pwd``), the gateway
answers as a lite agent: it lists one host candidate per component (its media address and
RTP port, and RTCP port + 1 unless rtcp-mux), says ``a=ice-lite``, and answers the peer's
connectivity checks (STUN Binding requests arriving on those ports, told apart from RTP by
their first octet, RFC 7983) with a success carrying XOR-MAPPED-ADDRESS, signed with its
own password (short-term credentials, RFC 8489 section 9.1) and fingerprinted. The full
agent (the peer) is controlling; the pair it nominates (USE-CANDIDATE) is where the gateway
sends from then on, which is what makes a peer behind NAT reachable, or a peer that only
gets through a TURN relay.

Invariants:
- A check is answered only when its MESSAGE-INTEGRITY verifies with our password; a signed
  check with another USERNAME than "OURUFRAG:THEIRS" gets a signed 400; an unsigned or
  wrongly signed one gets nothing (no response to spoofed sources: no amplification).
- Our ufrag/pwd stay the same for the leg until the peer restarts ICE (its ufrag changes).
- Nothing here raises on any datagram: a malformed one is None (counted by the caller).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from gateway.media.negotiate import PeerMedia
from gateway.nat import stun

__all__ = ["IceLite", "ice_lines", "peer_credentials"]

_ALPHABET = string.ascii_letters + string.digits + "+/"
# RFC 8445 5.1.2.1: type preference 126 (host), local preference 65535
_HOST_PRIORITY = (126 << 24) | (65535 << 8)


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def peer_credentials(peer: PeerMedia) -> tuple[str, str] | None:
    """The peer's (ice-ufrag, ice-pwd), media level first then session level; None when it
    does not do ICE."""
    media = peer.sdp.media[peer.index]
    ufrag = media.attribute("ice-ufrag") or _session_attr(peer, "ice-ufrag")
    pwd = media.attribute("ice-pwd") or _session_attr(peer, "ice-pwd")
    if not ufrag or not pwd:
        return None
    return ufrag.strip(), pwd.strip()


def _session_attr(peer: PeerMedia, name: str) -> str | None:
    return next((v for n, v in peer.sdp.attributes if n == name), None)


@dataclass(slots=True)
class IceLite:
    """One leg's ICE-lite agent (one stream, one or two components)."""

    ufrag: str
    pwd: str
    remote_ufrag: str = ""
    remote_pwd: str = ""
    checks: int = 0  # checks answered with a success
    refused: int = 0  # checks answered with an error
    nominated: tuple[str, int] | None = None

    @classmethod
    def new(cls) -> IceLite:
        return cls(_token(8), _token(24))

    def set_remote(self, ufrag: str, pwd: str) -> None:
        """The peer's credentials (a new ufrag is an ICE restart: the nomination is reset)."""
        if ufrag != self.remote_ufrag:
            self.nominated = None
        self.remote_ufrag, self.remote_pwd = ufrag, pwd

    def handle(self, data: bytes, source: tuple[str, int]) -> tuple[bytes | None, bool]:
        """A STUN message received from ``source``: (the response to send, or None; whether
        this check nominated ``source``). Indications and responses are ignored."""
        try:
            request = stun.Message.parse(data)
        except ValueError:
            return None, False
        if request.method != stun.Method.BINDING or request.cls != stun.Class.REQUEST:
            return None, False
        key = stun.short_term_key(self.pwd)
        try:
            username = request.username()
            signed = stun.check_integrity(data, key)
        except ValueError:
            return None, False
        if not signed:  # no or a wrong MESSAGE-INTEGRITY: silence (nothing to amplify)
            self.refused += 1
            return None, False
        if username is None or username.split(":", 1)[0] != self.ufrag:
            self.refused += 1
            return _error(request, 400, key), False
        self.checks += 1
        response = stun.Message(stun.Method.BINDING, stun.Class.SUCCESS,
                                request.transaction_id)
        response = response.with_xor_address(stun.XOR_MAPPED_ADDRESS, source[0], source[1])
        response = response.with_integrity(key).with_fingerprint()
        nominated = request.get(stun.USE_CANDIDATE) is not None
        if nominated:
            self.nominated = source
        return response.encode(), nominated


def _error(request: stun.Message, code: int, key: bytes | None) -> bytes | None:
    response = stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id)
    response = response.with_error_code(code)
    if key is not None:
        response = response.with_integrity(key)
    return response.with_fingerprint().encode()


def ice_lines(ice: IceLite, address: str, port: int, rtcp_mux: bool
              ) -> tuple[list[str], list[str]]:
    """(session-level, media-level) SDP lines of the gateway as a lite agent."""
    media = [f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}"]
    media.append(f"a=candidate:1 1 UDP {_HOST_PRIORITY + 255} {address} {port} typ host")
    if not rtcp_mux:
        media.append(f"a=candidate:1 2 UDP {_HOST_PRIORITY + 254} {address} {port + 1} "
                     "typ host")
    media.append("a=end-of-candidates")
    return ["a=ice-lite"], media
