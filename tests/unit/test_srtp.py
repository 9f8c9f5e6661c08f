"""gateway.media.srtp: SDES-keyed SRTP/SRTCP over libsrtp (RFC 3711, RFC 4568, RFC 7714).

Known answers come from ``tests/vectors/srtp_vectors.md`` (loaded, never retyped; each test
names the section of that file and the RFC section behind it). libsrtp keys every stream
through its KDF, so only the full-packet vectors keyed by a *master* key (sections 3 and the
libsrtp GCM packet of section 5) can go through `SrtpContext`. The others (raw AES-CM
keystream, KDF outputs, RFC 7714 packets keyed by session keys, AES-256-CM, which pylibsrtp
has no profile for) check ``Ref``, a small reference SRTP written here on `cryptography`.
``Ref`` is then used to check libsrtp beyond the vectors: roll-over counter wrap, every suite,
and E=0 (unencrypted) SRTCP, which libsrtp's protect never produces.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pylibsrtp
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pylibsrtp._binding import lib  # type: ignore[import-not-found]

from gateway.media.srtp import (
    DEFAULT_REPLAY_WINDOW,
    MAX_REPLAY_WINDOW,
    MIN_REPLAY_WINDOW,
    SUITES,
    SrtpContext,
    SrtpError,
    generate_master,
    get_suite,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "srtp_vectors.md"
CM80, CM32, GCM128, GCM256 = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
)


# ---------------------------------------------------------------------------------------------
# Loading srtp_vectors.md


def _sections() -> dict[str, str]:
    text = VECTORS.read_text(encoding="utf-8")
    parts = re.split(r"^## (\d+)\. ", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


SECTIONS = _sections()


def test_vectors_file_is_the_shared_copy() -> None:
    digest = hashlib.sha256(VECTORS.read_bytes()).hexdigest()
    assert digest == "0e121046d940f0a183c90af3fa0f4b561f8894a72719930805bf079218989bd8"


def _hex(token: str) -> bytes:
    """Hex from a backticked value; "000102…1f" is the run of consecutive bytes it abbreviates."""
    token = token.replace(" ", "")
    if "…" in token:
        head, tail = token.split("…")
        start = bytes.fromhex(head)
        assert all(b == start[0] + i for i, b in enumerate(start)), token
        end = bytes.fromhex(tail)[0]
        return bytes(range(start[0], end + 1))
    return bytes.fromhex(token)


def _after(section: str, label: str, count: int = 1) -> list[bytes]:
    """The first `count` backticked hex values after `label` in section `section`."""
    text = SECTIONS[section]
    start = text.index(label) + len(label)
    tokens = re.findall(r"`([^`]+)`", text[start:])[:count]
    assert len(tokens) == count, (section, label)
    return [_hex(t) for t in tokens]


def _one(section: str, label: str) -> bytes:
    return _after(section, label)[0]


def _match(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    assert match is not None, pattern
    return match


def _table(section: str, pattern: str) -> list[tuple[str, ...]]:
    rows = re.findall(pattern, SECTIONS[section], flags=re.MULTILINE)
    assert rows, (section, pattern)
    return rows


KEYSTREAM_ROWS = _table("1", r"^\| ([0-9A-F]{32}) \| ([0-9A-F]{32}) \|$")
KDF_ROWS = _table("2", r"^\| (0x0[0-9a-f]) \| [^|]+\| ([0-9A-F]{32}) \| ([0-9A-F]+)")


# ---------------------------------------------------------------------------------------------
# Reference SRTP on `cryptography`: AES-CM (RFC 3711 section 4.1.1), the AES-CM PRF key
# derivation (section 4.3.1/4.3.3), HMAC-SHA1 (section 4.2.1), AES-GCM (RFC 7714 sections 8-9)


def keystream(key: bytes, counter_block: bytes, length: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def prf_iv(master_salt: bytes, label: int) -> bytes:
    """x = master_salt XOR (label << 48) (RFC 3711 section 4.3.1, r = 0), as a 16-byte IV.

    A 12-byte GCM master salt is zero-padded to 112 bits first (RFC 7714 section 11).
    """
    x = int.from_bytes(master_salt.ljust(14, b"\0"), "big") ^ (label << 48)
    return (x << 16).to_bytes(16, "big")


def kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    return keystream(master_key, prf_iv(master_salt, label), length)


def xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad))


@dataclass(frozen=True)
class Ref:
    """Session keys for one direction of one suite, with RTP and RTCP transforms."""

    gcm: bool
    tag: int
    rtp_key: bytes
    rtp_salt: bytes
    rtp_auth: bytes
    rtcp_key: bytes
    rtcp_salt: bytes
    rtcp_auth: bytes

    @classmethod
    def from_master(cls, suite_name: str, master: bytes) -> Ref:
        s = get_suite(suite_name)
        key, salt = master[: s.key_length], master[s.key_length :]
        gcm = suite_name.startswith("AEAD")
        auth = 0 if gcm else 20

        def derive(label: int, length: int) -> bytes:
            return kdf(key, salt, label, length) if length else b""

        return cls(
            gcm=gcm,
            tag=s.rtp_tag_length,
            rtp_key=derive(0, s.key_length),
            rtp_salt=derive(2, s.salt_length),
            rtp_auth=derive(1, auth),
            rtcp_key=derive(3, s.key_length),
            rtcp_salt=derive(5, s.salt_length),
            rtcp_auth=derive(4, auth),
        )

    def protect(self, rtp: bytes, roc: int = 0) -> bytes:
        header, payload = rtp[:12], rtp[12:]
        seq, ssrc = struct.unpack("!2xH4xI", header)
        if self.gcm:  # RFC 7714 section 8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt
            iv = xor(struct.pack("!HIIH", 0, ssrc, roc, seq), self.rtp_salt)
            return header + AESGCM(self.rtp_key).encrypt(iv, payload, header)
        index = (roc << 16) | seq  # RFC 3711 section 4.1.1
        iv = (int.from_bytes(self.rtp_salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        body = header + xor(payload, keystream(self.rtp_key, iv.to_bytes(16, "big"), len(payload)))
        mac = hmac.new(self.rtp_auth, body + struct.pack("!I", roc), hashlib.sha1).digest()
        return body + mac[: self.tag]

    def protect_rtcp(self, rtcp: bytes, index: int, *, encrypt: bool = True) -> bytes:
        header, payload = rtcp[:8], rtcp[8:]
        (ssrc,) = struct.unpack("!4xI", header)
        trailer = struct.pack("!I", (0x80000000 if encrypt else 0) | index)
        if self.gcm:  # RFC 7714 section 9.1: IV = (00 00 || SSRC || 00 00 || index) XOR salt
            iv = xor(struct.pack("!HIHI", 0, ssrc, 0, index), self.rtcp_salt)
            if encrypt:
                sealed = AESGCM(self.rtcp_key).encrypt(iv, payload, header + trailer)
                return header + sealed + trailer
            tag = AESGCM(self.rtcp_key).encrypt(iv, b"", header + payload + trailer)
            return header + payload + tag + trailer
        if encrypt:
            iv = (int.from_bytes(self.rtcp_salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
            payload = xor(payload, keystream(self.rtcp_key, iv.to_bytes(16, "big"), len(payload)))
        body = header + payload + trailer
        return body + hmac.new(self.rtcp_auth, body, hashlib.sha1).digest()[:10]


def rtp(seq: int, ssrc: int = 0xCAFEBABE, payload: bytes = b"\xab" * 160, ts: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload


def rtcp_rr(ssrc: int = 0xCAFEBABE) -> bytes:
    """An RTCP receiver report with no report blocks (RFC 3550 section 6.4.2)."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def pair(suite_name: str, master: bytes | None = None) -> tuple[SrtpContext, SrtpContext]:
    master = master if master is not None else generate_master(suite_name)
    return (
        SrtpContext(suite_name, master, inbound=False),
        SrtpContext(suite_name, master, inbound=True),
    )


# ---------------------------------------------------------------------------------------------
# srtp_vectors.md section 1: RFC 3711 Appendix B.2, AES-CM keystream (reference model)


@pytest.mark.parametrize(
    ("counter", "expected"), KEYSTREAM_ROWS, ids=[r[0] for r in KEYSTREAM_ROWS]
)
def test_b2_aes_cm_keystream(counter: str, expected: str) -> None:
    key = _one("1", "Session key:")
    salt = _one("1", "Session salt (already in IV position):")
    assert bytes.fromhex(counter)[:14] == salt[:14]
    assert keystream(key, bytes.fromhex(counter), 16) == bytes.fromhex(expected)


# ---------------------------------------------------------------------------------------------
# Section 2: RFC 3711 Appendix B.3, key derivation (reference model)


@pytest.mark.parametrize(("label", "iv", "expected"), KDF_ROWS, ids=[r[0] for r in KDF_ROWS])
def test_b3_key_derivation(label: str, iv: str, expected: str) -> None:
    master_key, master_salt = _one("2", "Master key:"), _one("2", "Master salt:")
    assert prf_iv(master_salt, int(label, 16)) == bytes.fromhex(iv)
    want = bytes.fromhex(expected)
    assert kdf(master_key, master_salt, int(label, 16), len(want)) == want


def test_b3_auth_key_full_keystream() -> None:
    """The longer PRF output the RFC prints for label 0x01 continues the 20 bytes used."""
    master_key, master_salt = _one("2", "Master key:"), _one("2", "Master salt:")
    text = SECTIONS["2"]
    pattern = r"\| 0x01 \|.*\| ([0-9A-F]+) \(the RFC prints more keystream: …([0-9A-F]+)\)"
    first, rest = _match(pattern, text).groups()
    want = bytes.fromhex(first + rest)
    assert kdf(master_key, master_salt, 1, len(want)) == want


# ---------------------------------------------------------------------------------------------
# Section 3: libsrtp srtp_validate(), AES_CM_128_HMAC_SHA1_80 full packets (through libsrtp)

MASTER_80 = b"".join(_after("3", "Master key+salt (30 bytes):", 2))
RTP_PLAIN = _one("3", "RTP plaintext (SSRC 0xcafebabe")
SRTP_80 = _one("3", "SRTP (ciphertext + 10-byte tag):")
RTCP_PLAIN = _one("3", "RTCP plaintext:")
SRTCP_80 = _one("3", "SRTCP (E=1, index 1, then tag):")


def test_validate_rtp_protect_and_unprotect() -> None:
    out, into = pair(CM80, MASTER_80)
    assert out.protect(RTP_PLAIN) == SRTP_80
    assert into.unprotect(SRTP_80) == RTP_PLAIN


def test_validate_rtcp_protect_and_unprotect() -> None:
    out, into = pair(CM80, MASTER_80)
    assert out.protect_rtcp(RTCP_PLAIN) == SRTCP_80  # first SRTCP packet: index 1
    assert into.unprotect_rtcp(SRTCP_80) == RTCP_PLAIN


def test_validate_packets_match_reference_model() -> None:
    ref = Ref.from_master(CM80, MASTER_80)
    assert ref.protect(RTP_PLAIN) == SRTP_80
    assert ref.protect_rtcp(RTCP_PLAIN, 1) == SRTCP_80


def test_validate_rtp_with_32_bit_tag() -> None:
    """Same ciphertext; the tag is the leftmost 32 bits of the same HMAC (RFC 3711 4.2)."""
    out, into = pair(CM32, MASTER_80)
    expected = SRTP_80[:-10] + SRTP_80[-10:-6]
    assert out.protect(RTP_PLAIN) == expected
    assert into.unprotect(expected) == RTP_PLAIN


def test_validate_rtcp_with_32_bit_suite_keeps_80_bit_tag() -> None:
    """AES_CM_128_HMAC_SHA1_32 shortens the SRTP tag only (RFC 4568 6.2.1, RFC 5764 4.1.2)."""
    out, into = pair(CM32, MASTER_80)
    assert out.protect_rtcp(RTCP_PLAIN) == SRTCP_80
    assert into.unprotect_rtcp(SRTCP_80) == RTCP_PLAIN


# ---------------------------------------------------------------------------------------------
# Section 4: RFC 6188, AES-256 counter mode (reference model: pylibsrtp has no AES-256-CM
# profile, so the gateway does not offer AES_256_CM_HMAC_SHA1_80)


def test_rfc6188_7_1_keystream() -> None:
    key, iv, stream = _after("4", "§7.1 AES-256 CM keystream.", 3)
    assert keystream(key, iv, len(stream)) == stream


def test_rfc6188_7_2_key_derivation() -> None:
    master_key, master_salt = _after("4", "§7.2 AES-256 KDF.", 2)
    rtcp_key, rtcp_auth, rtcp_salt = _after("4", "SRTCP labels 3/4/5:", 3)
    expected = {
        0: _one("4", "cipher key (label 0):"),
        1: _one("4", "auth key (label 1, 20 bytes):"),
        2: _one("4", "salt (label 2):"),
        3: rtcp_key,
        4: rtcp_auth,
        5: rtcp_salt,
    }
    for label, want in expected.items():
        assert kdf(master_key, master_salt, label, len(want)) == want, label


def test_rfc6188_full_packet() -> None:
    master_key, master_salt = _after("4", "§7.2 AES-256 KDF.", 2)
    ref = Ref(
        gcm=False,
        tag=10,
        rtp_key=kdf(master_key, master_salt, 0, 32),
        rtp_salt=kdf(master_key, master_salt, 2, 14),
        rtp_auth=kdf(master_key, master_salt, 1, 20),
        rtcp_key=b"",
        rtcp_salt=b"",
        rtcp_auth=b"",
    )
    assert ref.protect(RTP_PLAIN) == _one("4", "same plaintext as §3:")
    assert "AES_256_CM_HMAC_SHA1_80" not in SUITES


# ---------------------------------------------------------------------------------------------
# Section 5: RFC 7714, AES-GCM


def _rfc7714_ref(key: bytes) -> Ref:
    salt = _one("5", "Salt:")
    return Ref(True, 16, key, salt, b"", key, salt, b"")


RFC7714_RTP = _one("5", "RTP plaintext (SSRC 0x5501a0b2")


def test_rfc7714_rtp_iv() -> None:
    seq, ssrc = struct.unpack("!2xH4xI", RFC7714_RTP[:12])
    iv = xor(struct.pack("!HIIH", 0, ssrc, 0, seq), _one("5", "Salt:"))
    assert iv == _one("5", "IV = (00 00 || SSRC || ROC || SEQ) XOR salt =")


def test_rfc7714_16_1_aes_128_gcm_rtp() -> None:
    ref = _rfc7714_ref(_one("5", "Key (128):"))
    assert ref.protect(RFC7714_RTP) == _one("5", "§16.1 AEAD_AES_128_GCM SRTP")


def test_rfc7714_aes_256_gcm_rtp() -> None:
    ref = _rfc7714_ref(_one("5", "Key (256):"))
    assert ref.protect(RFC7714_RTP) == _one("5", "AEAD_AES_256_GCM, same packet")


def test_rfc7714_17_aes_128_gcm_rtcp() -> None:
    plain = _one("5", "§17 SRTCP: plaintext")
    index = int(_match(r"SRTCP index (0x[0-9a-f]+)", SECTIONS["5"]).group(1), 16)
    (ssrc,) = struct.unpack("!4xI", plain[:8])
    iv = xor(struct.pack("!HIHI", 0, ssrc, 0, index), _one("5", "Salt:"))
    assert iv == _one("5", "IV = (00 00 || SSRC || 00 00 || index) XOR salt =")
    ref = _rfc7714_ref(_one("5", "Key (128):"))
    assert ref.protect_rtcp(plain, index) == _one("5", "The 128-bit result")


GCM_MASTER_KEY, GCM_MASTER_SALT, GCM_VALIDATE = _after("5", "(uses the RFC 7714 KDF)", 3)


def test_validate_gcm_through_libsrtp() -> None:
    """libsrtp srtp_validate_gcm(): master key+salt through the KDF, plaintext of section 3."""
    out, into = pair(GCM128, GCM_MASTER_KEY + GCM_MASTER_SALT)
    assert out.protect(RTP_PLAIN) == GCM_VALIDATE
    assert into.unprotect(GCM_VALIDATE) == RTP_PLAIN


def test_validate_gcm_matches_reference_model() -> None:
    ref = Ref.from_master(GCM128, GCM_MASTER_KEY + GCM_MASTER_SALT)
    assert ref.protect(RTP_PLAIN) == GCM_VALIDATE


# ---------------------------------------------------------------------------------------------
# libsrtp against the reference model beyond the vectors


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_every_suite_matches_reference_across_roc_wrap(suite_name: str) -> None:
    """SEQ 0xFFFF then 0x0000 increments the ROC (RFC 3711 section 3.3.1)."""
    master = generate_master(suite_name)
    out, into = pair(suite_name, master)
    ref = Ref.from_master(suite_name, master)
    for seq, roc in ((0xFFFE, 0), (0xFFFF, 0), (0x0000, 1), (0x0001, 1)):
        packet = rtp(seq, payload=bytes(range(37)))
        protected = out.protect(packet)
        assert protected == ref.protect(packet, roc), (seq, roc)
        assert into.unprotect(protected) == packet


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_every_suite_rtcp_matches_reference(suite_name: str) -> None:
    master = generate_master(suite_name)
    out, into = pair(suite_name, master)
    ref = Ref.from_master(suite_name, master)
    packet = RTCP_PLAIN
    for index in (1, 2, 3):
        protected = out.protect_rtcp(packet)
        assert protected == ref.protect_rtcp(packet, index)
        assert into.unprotect_rtcp(protected) == packet


@pytest.mark.parametrize("suite_name", [GCM128, GCM256])
def test_unencrypted_gcm_srtcp_is_authenticated_and_accepted(suite_name: str) -> None:
    """E=0 SRTCP (RFC 7714 section 9.2) still carries a tag, which libsrtp checks."""
    master = generate_master(suite_name)
    into = SrtpContext(suite_name, master, inbound=True)
    ref = Ref.from_master(suite_name, master)
    packet = ref.protect_rtcp(RTCP_PLAIN, 7, encrypt=False)
    assert into.unprotect_rtcp(packet) == RTCP_PLAIN
    forged = bytearray(ref.protect_rtcp(RTCP_PLAIN, 8, encrypt=False))
    forged[12] ^= 0x01
    with pytest.raises(SrtpError) as info:
        into.unprotect_rtcp(bytes(forged))
    assert info.value.reason == "auth"


@pytest.mark.parametrize("suite_name", [CM80, CM32])
def test_unencrypted_aes_cm_srtcp_is_refused(suite_name: str) -> None:
    """E=0 SRTCP with a valid tag (RFC 3711 section 3.4): libsrtp refuses it for the AES-CM
    suites, whose policy requires encrypted SRTCP (UNENCRYPTED_SRTCP, RFC 4568 section 6.3.2,
    is never negotiated), with srtp_err_status_cant_check; the encrypted packet that follows
    from the same sender still gets through."""
    master = generate_master(suite_name)
    into = SrtpContext(suite_name, master, inbound=True)
    ref = Ref.from_master(suite_name, master)
    with pytest.raises(SrtpError, match="unable to perform desired validation") as info:
        into.unprotect_rtcp(ref.protect_rtcp(RTCP_PLAIN, 7, encrypt=False))
    assert (info.value.reason, info.value.status) == ("other", 14)
    assert into.unprotect_rtcp(ref.protect_rtcp(RTCP_PLAIN, 8)) == RTCP_PLAIN


def test_rtp_reordered_around_the_wrap() -> None:
    """Index guessing (RFC 3711 3.3.1) holds when 0x0000 arrives before 0xFFFF."""
    out, into = pair(CM80)
    packets = {seq: out.protect(rtp(seq)) for seq in (0xFFFD, 0xFFFE, 0xFFFF, 0x0000, 0x0001)}
    for seq in (0xFFFD, 0x0000, 0xFFFE, 0x0001, 0xFFFF):
        assert into.unprotect(packets[seq]) == rtp(seq)


# ---------------------------------------------------------------------------------------------
# Suites, keys, round trips


def test_suites_agree_with_libsrtp_profiles() -> None:
    for s in SUITES.values():
        assert s.key_length == lib.srtp_profile_get_master_key_length(s.profile), s.name
        assert s.salt_length == lib.srtp_profile_get_master_salt_length(s.profile), s.name
    assert {s.name: s.master_length for s in SUITES.values()} == {
        CM80: 30,
        CM32: 30,
        GCM128: 28,
        GCM256: 44,
    }


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_generate_master(suite_name: str) -> None:
    first, second = generate_master(suite_name), generate_master(suite_name)
    assert len(first) == len(second) == SUITES[suite_name].master_length
    assert first != second


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_round_trip(suite_name: str) -> None:
    out, into = pair(suite_name)
    s = SUITES[suite_name]
    for seq in range(100, 110):
        packet = rtp(seq, payload=bytes([seq & 0xFF]) * 160, ts=seq * 160)
        protected = out.protect(packet)
        assert len(protected) == len(packet) + s.rtp_tag_length
        assert protected[12:172] != packet[12:]
        assert into.unprotect(protected) == packet
    for _ in range(3):
        protected = out.protect_rtcp(RTCP_PLAIN)
        assert len(protected) == len(RTCP_PLAIN) + 4 + s.rtcp_tag_length
        assert into.unprotect_rtcp(protected) == RTCP_PLAIN
    assert into.auth_failures == into.replays == 0


def test_unknown_suite() -> None:
    with pytest.raises(SrtpError, match=r"unsupported SRTP crypto suite 'F8_128_HMAC_SHA1_80'"):
        SrtpContext("F8_128_HMAC_SHA1_80", bytes(30), inbound=True)
    with pytest.raises(SrtpError, match="unsupported"):
        generate_master("NULL_HMAC_SHA1_80")


@pytest.mark.parametrize(
    ("suite_name", "length"), [(CM80, 29), (CM80, 31), (GCM128, 30), (GCM256, 28)]
)
def test_wrong_master_length(suite_name: str, length: int) -> None:
    with pytest.raises(
        SrtpError, match=rf"needs a \d+-byte master key\+salt .* got {length} bytes"
    ):
        SrtpContext(suite_name, bytes(length), inbound=False)


def test_master_must_be_bytes() -> None:
    with pytest.raises(SrtpError, match="must be bytes, not bytearray"):
        SrtpContext(CM80, bytearray(30), inbound=False)  # type: ignore[arg-type]


def test_error_is_a_value_error_with_reason() -> None:
    error = SrtpError("x")
    assert isinstance(error, ValueError)
    assert (error.reason, error.status) == ("other", None)


def test_libsrtp_messages_are_the_ones_mapped() -> None:
    """pylibsrtp keeps only the message: check the texts still sit at libsrtp's status codes."""
    assert pylibsrtp.ERRORS[7] == "authentication failure"
    assert pylibsrtp.ERRORS[9] == "replay check failed (bad index)"
    assert pylibsrtp.ERRORS[10] == "replay check failed (index too old)"
    assert pylibsrtp.ERRORS[26] == "packet index is too old to consider"


# ---------------------------------------------------------------------------------------------
# Rejections


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_wrong_key_is_an_auth_failure(suite_name: str) -> None:
    out = SrtpContext(suite_name, generate_master(suite_name), inbound=False)
    into = SrtpContext(suite_name, generate_master(suite_name), inbound=True)
    with pytest.raises(SrtpError, match="SRTP unprotect failed: authentication failure") as info:
        into.unprotect(out.protect(rtp(1)))
    assert (info.value.reason, info.value.status) == ("auth", 7)
    with pytest.raises(SrtpError) as info:
        into.unprotect_rtcp(out.protect_rtcp(RTCP_PLAIN))
    assert info.value.reason == "auth"
    assert (into.auth_failures, into.replays) == (2, 0)


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_same_packet_twice_is_a_replay(suite_name: str) -> None:
    out, into = pair(suite_name)
    packet = out.protect(rtp(1))
    into.unprotect(packet)
    with pytest.raises(SrtpError, match="replay check failed") as info:
        into.unprotect(packet)
    assert info.value.reason == "replay"
    control = out.protect_rtcp(RTCP_PLAIN)
    into.unprotect_rtcp(control)
    with pytest.raises(SrtpError) as info:
        into.unprotect_rtcp(control)
    assert info.value.reason == "replay"
    assert (into.auth_failures, into.replays) == (0, 2)


def test_older_than_the_window_is_a_replay() -> None:
    out, into = pair(CM80)
    old = out.protect(rtp(1))
    into.unprotect(out.protect(rtp(1 + DEFAULT_REPLAY_WINDOW + 10)))
    with pytest.raises(SrtpError, match=r"index too old") as info:
        into.unprotect(old)
    assert info.value.reason == "replay"
    assert into.replays == 1


def test_a_wider_window_accepts_older_packets() -> None:
    master = generate_master(CM80)
    out = SrtpContext(CM80, master, inbound=False)
    into = SrtpContext(CM80, master, inbound=True, replay_window=MAX_REPLAY_WINDOW)
    old = out.protect(rtp(1))
    into.unprotect(out.protect(rtp(5000)))
    assert into.unprotect(old) == rtp(1)
    with pytest.raises(SrtpError):
        into.unprotect(old)


@pytest.mark.parametrize("window", [0, 1, MIN_REPLAY_WINDOW - 1, MAX_REPLAY_WINDOW + 1])
def test_window_out_of_range(window: int) -> None:
    with pytest.raises(SrtpError, match=r"replay window must be 64\.\.32767 packets"):
        SrtpContext(CM80, bytes(30), inbound=True, replay_window=window)


def test_outbound_refuses_the_same_sequence_number_twice() -> None:
    out, _ = pair(CM80)
    out.protect(rtp(9))
    with pytest.raises(SrtpError) as info:
        out.protect(rtp(9))
    assert info.value.reason == "replay"


@pytest.mark.parametrize("where", ["header", "payload", "tag"])
@pytest.mark.parametrize("suite_name", list(SUITES))
def test_flipped_bit_fails_authentication(suite_name: str, where: str) -> None:
    """Authenticate before decrypting (RFC 3711 section 3.3): one flipped bit anywhere fails."""
    out, into = pair(suite_name)
    packet = bytearray(out.protect(rtp(3)))
    packet[{"header": 4, "payload": 40, "tag": len(packet) - 1}[where]] ^= 0x10
    with pytest.raises(SrtpError) as info:
        into.unprotect(bytes(packet))
    assert info.value.reason == "auth"
    assert into.auth_failures == 1
    assert into.unprotect(out.protect(rtp(4))) == rtp(4)  # the stream carries on


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_truncated_packets(suite_name: str) -> None:
    out, into = pair(suite_name)
    s = SUITES[suite_name]
    packet = out.protect(rtp(5))
    for length in (0, 1, 11, 12, 12 + s.rtp_tag_length - 1):
        with pytest.raises(SrtpError, match=rf"SRTP packet truncated: {length} bytes") as info:
            into.unprotect(packet[:length])
        assert info.value.reason == "other"
    with pytest.raises(SrtpError) as info:  # long enough to parse, tag cut short
        into.unprotect(packet[:-1])
    assert info.value.reason == "auth"
    control = out.protect_rtcp(RTCP_PLAIN)
    for length in (0, 7, 8 + 4 + s.rtcp_tag_length - 1):
        with pytest.raises(SrtpError, match=rf"SRTCP packet truncated: {length} bytes"):
            into.unprotect_rtcp(control[:length])
    with pytest.raises(SrtpError, match=r"RTP packet truncated: 11 bytes, header is 12"):
        out.protect(rtp(6)[:11])
    with pytest.raises(SrtpError, match=r"RTCP packet truncated: 7 bytes, header is 8"):
        out.protect_rtcp(RTCP_PLAIN[:7])
    assert into.unprotect(out.protect(rtp(7))) == rtp(7)


def test_oversized_packet() -> None:
    out, into = pair(CM80)
    with pytest.raises(SrtpError, match=r"SRTP protect failed: packet is too long \(1500 bytes\)"):
        out.protect(rtp(1, payload=bytes(1488)))
    with pytest.raises(SrtpError, match=r"SRTP unprotect failed: packet is too long"):
        into.unprotect(rtp(1, payload=bytes(1600)))


def test_malformed_header_is_other() -> None:
    """A CSRC count pointing past the packet: libsrtp refuses it before any crypto."""
    out, into = pair(CM80)
    packet = bytearray(out.protect(rtp(1, payload=b"")))
    packet[0] |= 0x0F  # CC = 15
    with pytest.raises(SrtpError) as info:
        into.unprotect(bytes(packet))
    assert info.value.reason == "other"
    assert info.value.status is not None


# ---------------------------------------------------------------------------------------------
# Several SSRCs through one inbound context


def test_different_ssrcs_through_one_inbound_context() -> None:
    master = generate_master(CM80)
    into = SrtpContext(CM80, master, inbound=True)
    senders = {ssrc: SrtpContext(CM80, master, inbound=False) for ssrc in (1, 0xCAFEBABE, 77)}
    sent = {}
    for seq in (10, 11, 12):
        for ssrc, out in senders.items():
            packet = rtp(seq, ssrc=ssrc)
            sent[ssrc, seq] = out.protect(packet)
            assert into.unprotect(sent[ssrc, seq]) == packet
    # Replay state is per SSRC: SSRC 1's seq 12 again is a replay, SSRC 2's seq 12 is new.
    with pytest.raises(SrtpError) as info:
        into.unprotect(sent[1, 12])
    assert info.value.reason == "replay"
    fresh = SrtpContext(CM80, master, inbound=False)
    assert into.unprotect(fresh.protect(rtp(12, ssrc=2))) == rtp(12, ssrc=2)
    # The RTCP of every sender gets through too.
    for ssrc, out in senders.items():
        assert into.unprotect_rtcp(out.protect_rtcp(rtcp_rr(ssrc))) == rtcp_rr(ssrc)
