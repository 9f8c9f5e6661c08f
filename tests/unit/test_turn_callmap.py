"""Which call a TURN allocation served (gateway.nat.callmap): relay candidates and c=/m=
addresses of live allocations, bounded, forgotten once used."""

from __future__ import annotations

from gateway.nat.callmap import CallMap, relay_addresses

ICE_SDP = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
           b"m=audio 4000 RTP/AVP 0\r\n"
           b"a=candidate:1 1 UDP 2130706431 10.0.0.2 4000 typ host\r\n"
           b"a=candidate:2 1 UDP 16777215 10.71.0.2 14308 typ relay raddr 1.2.3.4 rport 5\r\n")
TCP_CLIENT_SDP = (b"v=0\r\no=- 1 1 IN IP4 10.71.0.2\r\ns=-\r\nc=IN IP4 10.71.0.2\r\nt=0 0\r\n"
                  b"m=audio 16146 RTP/AVP 0\r\n")


def test_relay_candidates_and_the_audio_address_are_found() -> None:
    assert relay_addresses(ICE_SDP) == {("10.71.0.2", 14308), ("10.0.0.2", 4000)}
    assert relay_addresses(TCP_CLIENT_SDP) == {("10.71.0.2", 16146)}
    assert relay_addresses(b"") == set()


def test_only_live_relays_are_kept_and_a_lookup_forgets() -> None:
    live = {("10.71.0.2", 14308), ("10.71.0.2", 16146)}
    calls = CallMap(lambda address: address in live)
    calls.note("call-1", ICE_SDP)
    calls.note("room/abc", TCP_CLIENT_SDP)
    assert calls.call_for(("10.0.0.2", 4000)) is None  # a host address, not a relay
    assert calls.call_for(("10.71.0.2", 14308)) == "call-1"
    assert calls.call_for(("10.71.0.2", 14308)) is None
    assert calls.call_for(("10.71.0.2", 16146)) == "room/abc"
