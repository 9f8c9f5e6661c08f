"""ICE-lite on anchored legs (gateway.media.icelite): the SDP a lite agent gives, connectivity
checks answered and signed (RFC 8445 7.3, RFC 8489 9.1), nomination moving where media
goes, and the MediaSession answering ICE offers as a lite agent."""

from __future__ import annotations

from test_media_session import (
    TE101,
    a_offer,
    b_answer,
    new_session,
    out_of,
    parse,
    streams,
)

from gateway.media.icelite import IceLite, ice_lines
from gateway.nat import stun

PEER = ("203.0.113.9", 40000)


def check(ice: IceLite, *, username: str | None = None, pwd: str | None = None,
          nominate: bool = False) -> bytes:
    """A full agent's connectivity check toward ``ice`` (RFC 8445 7.2.2)."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, stun.new_transaction_id())
    message = message.with_text(stun.USERNAME, username or f"{ice.ufrag}:peerufrag")
    message = message.with_attribute(stun.PRIORITY, (1845501695).to_bytes(4, "big"))
    message = message.with_attribute(stun.ICE_CONTROLLING, bytes(8))
    if nominate:
        message = message.with_attribute(stun.USE_CANDIDATE, b"")
    key = stun.short_term_key(pwd or ice.pwd)
    return message.with_integrity(key).with_fingerprint().encode()


def test_a_valid_check_gets_a_signed_success_naming_its_source() -> None:
    ice = IceLite.new()
    ice.set_remote("peerufrag", "peerpassword0123456789")
    response, nominated = ice.handle(check(ice), PEER)
    assert response is not None and not nominated
    message = stun.Message.parse(response)
    assert message.cls == stun.Class.SUCCESS
    assert message.xor_address(stun.XOR_MAPPED_ADDRESS) == PEER
    assert stun.check_integrity(response, stun.short_term_key(ice.pwd))
    assert stun.check_fingerprint(response)
    response, nominated = ice.handle(check(ice, nominate=True), PEER)
    assert nominated and ice.nominated == PEER


def test_bad_checks_get_no_answer_or_a_signed_400_and_never_nominate() -> None:
    ice = IceLite.new()
    # a wrong or missing MESSAGE-INTEGRITY: no answer at all (a spoofed source gets nothing)
    assert ice.handle(check(ice, pwd="not-the-password-at-all", nominate=True), PEER) == (
        None, False)
    bare = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, stun.new_transaction_id())
    assert ice.handle(bare.encode(), PEER) == (None, False)
    # signed with our password but for another ufrag: a 400, signed
    response, nominated = ice.handle(check(ice, username="someoneelse:peer"), PEER)
    assert response is not None and not nominated
    assert stun.Message.parse(response).error_code().code == 400  # type: ignore[union-attr]
    assert stun.check_integrity(response, stun.short_term_key(ice.pwd))
    assert ice.handle(b"\x00\x01garbage", PEER) == (None, False)
    assert ice.nominated is None and ice.checks == 0 and ice.refused == 3


def test_the_lite_agent_sdp_lines() -> None:
    ice = IceLite.new()
    session, media = ice_lines(ice, "192.0.2.1", 30000, rtcp_mux=False)
    assert session == ["a=ice-lite"]
    assert f"a=ice-ufrag:{ice.ufrag}" in media and f"a=ice-pwd:{ice.pwd}" in media
    assert any(line.endswith("192.0.2.1 30000 typ host") and " 1 UDP " in line
               for line in media)
    assert any(line.endswith("192.0.2.1 30001 typ host") and " 2 UDP " in line
               for line in media)
    assert len(ice.ufrag) >= 4 and len(ice.pwd) >= 22  # RFC 8839 5.4


def test_an_ice_offer_is_answered_as_lite_and_a_nominating_check_moves_media() -> None:
    manager, session = new_session()
    offer = a_offer(*TE101, "a=ice-ufrag:peerufrag", "a=ice-pwd:peerpassword0123456789",
                    "a=candidate:1 1 UDP 2130706431 198.51.100.1 5004 typ host")
    session.offer("a", offer)
    answer = session.answer("b", b_answer())
    desc = parse(answer)
    assert ("ice-lite", None) in desc.attributes
    media = desc.media[0]
    ufrag, pwd = media.attribute("ice-ufrag"), media.attribute("ice-pwd")
    assert ufrag and pwd
    sa, _ = streams(session)
    assert sa.ice is not None and sa.ice.remote_ufrag == "peerufrag"
    before = sa.remote
    sa.on_stun(check(sa.ice, nominate=True), PEER, rtcp=False)
    sent = out_of(manager, sa).rtp
    assert sent and sent[-1][1] == PEER
    assert stun.Message.parse(sent[-1][0]).cls == stun.Class.SUCCESS
    assert sa.remote == PEER != before and sa.counters.stun_in == 1


def test_no_ice_without_credentials_and_stun_on_such_a_leg_is_counted() -> None:
    manager, session = new_session()
    session.offer("a", a_offer())
    answer = session.answer("b", b_answer())
    assert b"ice" not in answer
    sa, _ = streams(session)
    sa.on_stun(b"\x00\x01\x00\x00" + bytes(16), PEER, rtcp=False)
    assert sa.counters.stun_dropped == 1 and not out_of(manager, sa).rtp
