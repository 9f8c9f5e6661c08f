"""SDES-keyed SRTP and SRTCP (RFC 3711, keyed per RFC 4568), over libsrtp through pylibsrtp.

Invariants:
- One `SrtpContext` is one direction of one RTP session: an outbound context only protects,
  an inbound one only unprotects. Both take a single SDES master key+salt; the inbound one
  uses libsrtp's "any inbound" SSRC template, so every SSRC the peer sends under that key gets
  its own stream state (ROC, replay window) the first time one of its packets authenticates.
- Replay protection is always on (RFC 3711 section 3.3.2). SRTP uses libsrtp's default window
  of 128 packets unless `replay_window` asks for a larger one (up to 32767); SRTCP's window is
  fixed at 128 inside libsrtp.
- Every failure raises `SrtpError` (a `ValueError`, so media adapters that drop malformed
  packets on `ValueError` drop these too), whose `reason` is "auth", "replay" or "other".
  Nothing is logged here; the inbound counters `auth_failures` and `replays` are plain ints.
- The per-packet methods do one length check and one libsrtp call; the error path alone
  builds strings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

import pylibsrtp

__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "MAX_REPLAY_WINDOW",
    "MIN_REPLAY_WINDOW",
    "SUITES",
    "SrtpContext",
    "SrtpError",
    "SrtpReason",
    "Suite",
    "generate_master",
    "get_suite",
]

SrtpReason = Literal["auth", "replay", "other"]

#: libsrtp's replay window when none is asked for (srtp_policy_t.window_size = 0).
DEFAULT_REPLAY_WINDOW: Final = 128
#: The window sizes libsrtp accepts (srtp_create rejects anything outside 64..0x7fff).
MIN_REPLAY_WINDOW: Final = 64
MAX_REPLAY_WINDOW: Final = 0x7FFF

_RTP_HEADER: Final = 12  # RFC 3550 section 5.1, fixed part
_RTCP_HEADER: Final = 8  # RFC 3550 section 6.4.1, up to and including the sender's SSRC
_SRTCP_INDEX: Final = 4  # RFC 3711 section 3.4: E flag and 31-bit SRTCP index


@dataclass(frozen=True, slots=True)
class Suite:
    """One SDES crypto suite: the libsrtp profile and the sizes it implies.

    `rtcp_tag_length` differs from `rtp_tag_length` for AES_CM_128_HMAC_SHA1_32: the 32-bit
    tag applies to SRTP only, SRTCP keeps the 80-bit tag (RFC 4568 section 6.2.1, RFC 5764
    section 4.1.2).
    """

    name: str
    profile: int
    key_length: int
    salt_length: int
    rtp_tag_length: int
    rtcp_tag_length: int

    @property
    def master_length(self) -> int:
        """Bytes of the SDES `inline:` key: master key followed by master salt."""
        return self.key_length + self.salt_length


_P = pylibsrtp.Policy

#: The SDES crypto suites libsrtp (through pylibsrtp) implements, by their SDP names:
#: RFC 4568 section 6.2.1 (AES_CM_128_HMAC_SHA1_80/_32) and RFC 7714 section 14.2 (AEAD GCM,
#: 12-byte master salt, 16-byte tag).
SUITES: Final[Mapping[str, Suite]] = MappingProxyType(
    {
        s.name: s
        for s in (
            Suite("AES_CM_128_HMAC_SHA1_80", _P.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10, 10),
            Suite("AES_CM_128_HMAC_SHA1_32", _P.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4, 10),
            Suite("AEAD_AES_128_GCM", _P.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 16, 16),
            Suite("AEAD_AES_256_GCM", _P.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12, 16, 16),
        )
    }
)


class SrtpError(ValueError):
    """SRTP/SRTCP processing failed, or a suite, key or option is unusable.

    `reason` is "auth" (the authentication tag did not verify), "replay" (the packet index was
    seen before or is older than the replay window) or "other" (truncated or malformed packet,
    bad key, unknown suite, any other libsrtp failure). `status` is the libsrtp
    `srtp_err_status_t` value when libsrtp reported the error, else None.
    """

    reason: SrtpReason
    status: int | None

    def __init__(self, message: str, reason: SrtpReason = "other", status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status


# pylibsrtp raises `pylibsrtp.Error(ERRORS[status])`: only the message text survives, so it is
# mapped back to the srtp_err_status_t value (libsrtp include/srtp.h) and from that to a reason.
_STATUS_OF_MESSAGE: Final[Mapping[str, int]] = MappingProxyType(
    {message: status for status, message in enumerate(pylibsrtp.ERRORS)}
)
_AUTH_FAIL: Final = 7  # srtp_err_status_auth_fail
_REPLAY_FAIL: Final = 9  # srtp_err_status_replay_fail: index already seen
_REPLAY_OLD: Final = 10  # srtp_err_status_replay_old: index left of the replay window
_PKT_IDX_OLD: Final = 26  # srtp_err_status_pkt_idx_old: index too old to estimate
_REASON_OF_STATUS: Final[Mapping[int, SrtpReason]] = MappingProxyType(
    {
        _AUTH_FAIL: "auth",
        _REPLAY_FAIL: "replay",
        _REPLAY_OLD: "replay",
        _PKT_IDX_OLD: "replay",
    }
)


def get_suite(name: str) -> Suite:
    """The `Suite` for an SDES suite name; SrtpError for one this module does not implement."""
    try:
        return SUITES[name]
    except KeyError:
        supported = ", ".join(SUITES)
        message = f"unsupported SRTP crypto suite {name!r} (supported: {supported})"
        raise SrtpError(message) from None


def generate_master(suite: str) -> bytes:
    """A fresh random master key+salt for `suite`, as carried in an SDES `inline:` key."""
    return os.urandom(get_suite(suite).master_length)


class SrtpContext:
    """One direction of an SRTP session keyed by one SDES master key+salt.

    `inbound=False` (outbound) contexts serve `protect` and `protect_rtcp`; `inbound=True`
    contexts serve `unprotect` and `unprotect_rtcp` and accept any SSRC (RFC 3711 section
    3.2.3: a cryptographic context per SSRC, all derived from the one master key here).

    `replay_window` sets libsrtp's SRTP replay window in packets (64..32767); None keeps
    libsrtp's default of 128. A wider window accepts packets reordered further back (bonded
    or multipath links) at the cost of one bit per window slot per SSRC. It never turns
    replay protection off. SRTCP's window stays 128.

    An outbound context refuses to protect the same sequence number twice: libsrtp reports a
    replay, raised as SrtpError(reason="replay"), so a duplicated plain RTP packet from the
    other leg is dropped by the caller, never encrypted twice with the same keystream.

    Unencrypted SRTCP (E=0, RFC 3711 section 3.4) is never sent. Received, libsrtp refuses
    it under the AES-CM suites (status 14, "unable to perform desired validation", reason
    "other": their policy requires encrypted SRTCP) and accepts it, authenticated, under
    the GCM suites.
    """

    __slots__ = (
        "_min_rtcp",
        "_min_rtp",
        "_session",
        "auth_failures",
        "inbound",
        "replays",
        "suite",
    )

    def __init__(
        self,
        suite: str,
        master: bytes,
        *,
        inbound: bool,
        replay_window: int | None = None,
    ) -> None:
        chosen = get_suite(suite)
        if not isinstance(master, bytes):
            raise SrtpError(f"SRTP master key must be bytes, not {type(master).__name__}")
        if len(master) != chosen.master_length:
            raise SrtpError(
                f"{chosen.name} needs a {chosen.master_length}-byte master key+salt "
                f"({chosen.key_length}+{chosen.salt_length}), got {len(master)} bytes"
            )
        ssrc_type = _P.SSRC_ANY_INBOUND if inbound else _P.SSRC_ANY_OUTBOUND
        policy = pylibsrtp.Policy(key=master, ssrc_type=ssrc_type, srtp_profile=chosen.profile)
        if replay_window is not None:
            if not MIN_REPLAY_WINDOW <= replay_window <= MAX_REPLAY_WINDOW:
                raise SrtpError(
                    f"SRTP replay window must be {MIN_REPLAY_WINDOW}..{MAX_REPLAY_WINDOW} "
                    f"packets, got {replay_window}"
                )
            policy.window_size = replay_window
        try:
            self._session = pylibsrtp.Session(policy)
        except pylibsrtp.Error as exc:
            raise _error("cannot create SRTP session", exc) from None
        self.suite = chosen
        self.inbound = inbound
        self.auth_failures = 0
        self.replays = 0
        # Shortest packets worth handing to libsrtp (RFC 3711 section 3.1 and 3.4 layouts).
        self._min_rtp = _RTP_HEADER + (chosen.rtp_tag_length if inbound else 0)
        self._min_rtcp = _RTCP_HEADER + (_SRTCP_INDEX + chosen.rtcp_tag_length if inbound else 0)

    def protect(self, rtp: bytes) -> bytes:
        """SRTP packet for the RTP packet `rtp` (RFC 3711 section 3.3)."""
        if len(rtp) < _RTP_HEADER:
            raise SrtpError(f"RTP packet truncated: {len(rtp)} bytes, header is {_RTP_HEADER}")
        try:
            return self._session.protect(rtp)
        except pylibsrtp.Error as exc:
            raise _error("SRTP protect failed", exc) from None
        except ValueError as exc:  # pylibsrtp: longer than its 1500-byte buffer allows
            raise SrtpError(f"SRTP protect failed: {exc} ({len(rtp)} bytes)") from None

    def unprotect(self, srtp: bytes) -> bytes:
        """RTP packet inside the SRTP packet `srtp`, authenticated and replay-checked."""
        if len(srtp) < self._min_rtp:
            raise SrtpError(
                f"SRTP packet truncated: {len(srtp)} bytes, shorter than the {_RTP_HEADER}-byte "
                f"header and {self.suite.rtp_tag_length}-byte tag"
            )
        try:
            return self._session.unprotect(srtp)
        except pylibsrtp.Error as exc:
            raise self._inbound_error("SRTP", exc) from None
        except ValueError as exc:
            raise SrtpError(f"SRTP unprotect failed: {exc} ({len(srtp)} bytes)") from None

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """SRTCP packet (encrypted, E=1) for the compound RTCP packet `rtcp` (RFC 3711 3.4)."""
        if len(rtcp) < _RTCP_HEADER:
            raise SrtpError(f"RTCP packet truncated: {len(rtcp)} bytes, header is {_RTCP_HEADER}")
        try:
            return self._session.protect_rtcp(rtcp)
        except pylibsrtp.Error as exc:
            raise _error("SRTCP protect failed", exc) from None
        except ValueError as exc:
            raise SrtpError(f"SRTCP protect failed: {exc} ({len(rtcp)} bytes)") from None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """RTCP packet inside the SRTCP packet `srtcp` (E=1 or E=0), authenticated."""
        if len(srtcp) < self._min_rtcp:
            raise SrtpError(
                f"SRTCP packet truncated: {len(srtcp)} bytes, shorter than the {_RTCP_HEADER}-"
                f"byte header, {_SRTCP_INDEX}-byte index and {self.suite.rtcp_tag_length}-byte tag"
            )
        try:
            return self._session.unprotect_rtcp(srtcp)
        except pylibsrtp.Error as exc:
            raise self._inbound_error("SRTCP", exc) from None
        except ValueError as exc:
            raise SrtpError(f"SRTCP unprotect failed: {exc} ({len(srtcp)} bytes)") from None

    def _inbound_error(self, what: str, exc: pylibsrtp.Error) -> SrtpError:
        error = _error(f"{what} unprotect failed", exc)
        if error.reason == "auth":
            self.auth_failures += 1
        elif error.reason == "replay":
            self.replays += 1
        return error


def _error(context: str, exc: pylibsrtp.Error) -> SrtpError:
    message = str(exc)
    status = _STATUS_OF_MESSAGE.get(message)
    reason = _REASON_OF_STATUS.get(status, "other") if status is not None else "other"
    return SrtpError(f"{context}: {message} (libsrtp status {status})", reason, status)
