"""gateway.media.sfu: the SFU Forwarder's per-receiver SSRC slots.

Sources send hand-numbered packets at hand-set times; what each receiver gets is parsed back
with RtpPacket and checked per slot: continuity across a switch (RFC 3550 section 8: a slot
is one stream), gaps kept, late packets from before a switch dropped, never a receiver's own
stream, payload untouched, the receiver's payload type, no extension or CSRC.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from gateway.media.rtp import RtpPacket
from gateway.media.sfu import Forwarder

FRAME = 960
PT = 111


def forward(
    forwarder: Forwarder, source: str, seq: int, ts: int, now: float, marker: bool = False
) -> dict[str, RtpPacket]:
    payload = f"{source}:{seq}".encode()
    sent = forwarder.forward(source, payload, seq, ts, marker, now)
    packets = {receiver: RtpPacket.parse(data) for receiver, data in sent}
    assert len(packets) == len(sent)  # one packet per receiver
    for packet in packets.values():
        assert packet.payload == payload
        assert packet.csrc == () and packet.extension is None and packet.padding == 0
    return packets


def stream(
    forwarder: Forwarder, source: str, seqs: range | list[int], start: float, ts0: int = 0
) -> list[dict[str, RtpPacket]]:
    """Packets of ``source`` one 20 ms frame apart (seq and ts in step)."""
    first = seqs[0]
    return [
        forward(
            forwarder,
            source,
            seq % 65536,
            ts0 + (seq - first) * FRAME,
            start + (seq - first) * 0.02,
        )
        for seq in seqs
    ]


def one_receiver(slots: int = 1) -> Forwarder:
    forwarder = Forwarder(slots)
    forwarder.add_receiver("r", PT)
    return forwarder


def test_unselected_source_gives_nothing() -> None:
    forwarder = one_receiver()
    assert forwarder.forward("a", b"x", 1, 1, False, 0.0) == []
    forwarder.select({"a"}, 0.0)
    assert forwarder.forward("b", b"x", 1, 1, False, 0.0) == []
    assert forwarder.forwarded == 0


def test_first_packet_of_a_new_slot_has_marker_and_then_follows_the_source() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    packets = [p["r"] for p in stream(forwarder, "a", range(100, 105), 0.0, ts0=5000)]
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert packets[0].payload_type == PT
    assert len({p.ssrc for p in packets}) == 1
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) % 65536
        assert after.timestamp == (before.timestamp + FRAME) % 2**32
    assert forwarder.forwarded == 5


def test_source_marker_is_passed_on_after_the_first_packet() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    forward(forwarder, "a", 1, 0, 0.0)
    assert forward(forwarder, "a", 2, 960, 0.02, marker=True)["r"].marker
    assert not forward(forwarder, "a", 3, 1920, 0.04)["r"].marker


def test_switch_keeps_the_slot_continuous() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    last = stream(forwarder, "a", range(100, 105), 0.0)[-1]["r"]  # sent at t = 0.08
    forwarder.select({"b"}, 0.09)
    assert forwarder.forward("a", b"late a", 105, 5 * FRAME, False, 0.10) == []
    first = forward(forwarder, "b", 40000, 123456, 0.12)["r"]  # 40 ms after a's last
    assert first.ssrc == last.ssrc
    assert first.sequence == (last.sequence + 1) % 65536
    assert first.timestamp == (last.timestamp + 1920) % 2**32
    assert first.marker
    second = forward(forwarder, "b", 40001, 123456 + FRAME, 0.14)["r"]
    assert second.sequence == (first.sequence + 1) % 65536
    assert second.timestamp == (first.timestamp + FRAME) % 2**32
    assert not second.marker


def test_switch_right_away_still_advances_a_frame() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    last = forward(forwarder, "a", 7, 0, 1.0)["r"]
    forwarder.select({"b"}, 1.0)
    first = forward(forwarder, "b", 9, 0, 1.001)["r"]
    assert first.timestamp == (last.timestamp + FRAME) % 2**32


def test_switch_after_a_long_pause_advances_by_the_wall_clock() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    last = forward(forwarder, "a", 7, 0, 1.0)["r"]
    forwarder.select({"b"}, 2.0)
    first = forward(forwarder, "b", 9, 0, 3.5)["r"]
    assert first.timestamp == (last.timestamp + 2.5 * 48000) % 2**32


def test_source_loss_is_a_gap() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    first = forward(forwarder, "a", 10, 0, 0.0)["r"]
    after = forward(forwarder, "a", 13, 3 * FRAME, 0.06)["r"]  # 11 and 12 lost
    assert after.sequence == (first.sequence + 3) % 65536
    assert after.timestamp == (first.timestamp + 3 * FRAME) % 2**32


def test_reordering_after_the_switch_is_kept_and_older_packets_dropped() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    first = forward(forwarder, "a", 500, 0, 0.0)["r"]
    assert forwarder.forward("a", b"old", 499, 0, False, 0.01) == []
    assert forwarder.forward("a", b"old", 100, 0, False, 0.01) == []  # far before
    third = forward(forwarder, "a", 502, 2 * FRAME, 0.04)["r"]
    second = forward(forwarder, "a", 501, FRAME, 0.05)["r"]  # late, but after the switch
    assert [second.sequence, third.sequence] == [(first.sequence + n) % 65536 for n in (1, 2)]
    assert second.timestamp == (first.timestamp + FRAME) % 2**32
    fourth = forward(forwarder, "a", 503, 3 * FRAME, 0.06)["r"]
    assert fourth.sequence == (first.sequence + 3) % 65536
    assert forwarder.forwarded == 4


def test_late_packet_from_before_the_switch_is_dropped_after_a_reselect() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    stream(forwarder, "a", range(1, 6), 0.0)
    forwarder.select({"b"}, 0.1)
    stream(forwarder, "b", range(1, 3), 0.1)
    forwarder.select({"a"}, 0.2)
    back = forward(forwarder, "a", 20, 19 * FRAME, 0.2)["r"]
    assert back.marker
    assert forwarder.forward("a", b"a 19", 19, 18 * FRAME, False, 0.21) == []
    then = forward(forwarder, "a", 21, 20 * FRAME, 0.22)["r"]
    assert then.sequence == (back.sequence + 1) % 65536


def test_sequence_wraps_and_long_runs_stay_ahead() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    first = forward(forwarder, "a", 65534, 2**32 - FRAME, 0.0)["r"]
    # (source seq, packets since the first): the slot follows past 2**15 and 2**16 packets
    # (steps under the restart threshold) instead of taking them for old ones
    for n, ahead in enumerate([1, 2, 3, *range(903, 120004, 900)], 1):
        seq, ts = (65534 + ahead) % 65536, (2**32 - FRAME + ahead * FRAME) % 2**32
        got = forward(forwarder, "a", seq, ts, n * 0.02)["r"]
        assert got.sequence == (first.sequence + ahead) % 65536
        assert got.timestamp == (first.timestamp + ahead * FRAME) % 2**32


def test_a_source_restarting_its_numbering_continues_the_slot() -> None:
    """A jump of 1000 or more sequence numbers (a new SSRC or encoder at the source, RFC 3550
    lets it restart) is a restart: the slot goes on from its own last seq/ts, marked."""
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    first = forward(forwarder, "a", 40000, 5000, 0.0)["r"]
    second = forward(forwarder, "a", 40001, 5000 + FRAME, 0.02)["r"]
    restarted = forward(forwarder, "a", 7, 123, 0.04)["r"]  # behind by 39994: not "old"
    assert restarted.sequence == (second.sequence + 1) % 65536 and restarted.marker
    assert restarted.timestamp == (second.timestamp + FRAME) % 2**32
    after = forward(forwarder, "a", 8, 123 + FRAME, 0.06)["r"]
    assert after.sequence == (restarted.sequence + 1) % 65536
    assert after.sequence == (first.sequence + 3) % 65536
    forwarder.restart_source("a")
    again = forward(forwarder, "a", 9, 123 + 2 * FRAME, 0.08)["r"]
    assert again.sequence == (after.sequence + 1) % 65536 and again.marker


def test_receiver_never_gets_its_own_stream() -> None:
    forwarder = Forwarder(4)
    for party in "abc":
        forwarder.add_receiver(party, PT)
    forwarder.select({"a", "b", "c"}, 0.0)
    for party in "abc":
        assert party not in forward(forwarder, party, 1, 0, 0.0)
        assert party not in forwarder.slots_of(party).values()
        assert sorted(forwarder.slots_of(party).values()) == sorted(set("abc") - {party})


def test_five_sources_five_receivers_all_get_four_streams() -> None:
    parties = ["p1", "p2", "p3", "p4", "p5"]
    forwarder = Forwarder(4)
    for party in parties:
        forwarder.add_receiver(party, PT)
    forwarder.select(parties, 0.0)
    got: dict[str, dict[int, list[RtpPacket]]] = {party: defaultdict(list) for party in parties}
    for tick in range(10):
        for party in parties:
            packets = forward(forwarder, party, 1000 + tick, tick * FRAME, tick * 0.02)
            assert set(packets) == set(parties) - {party}
            for receiver, packet in packets.items():
                got[receiver][packet.ssrc].append(packet)
    for receiver in parties:
        streams = got[receiver]
        assert len(streams) == 4
        sources = {bytes(s[0].payload).split(b":")[0].decode() for s in streams.values()}
        assert sources == set(parties) - {receiver}
        for received in streams.values():
            seqs = [packet.sequence for packet in received]
            assert seqs == [(seqs[0] + n) % 65536 for n in range(10)]
    assert forwarder.forwarded == 10 * 5 * 4


def test_more_selected_than_slots_fills_every_slot_once() -> None:
    forwarder = one_receiver(slots=2)
    forwarder.select({"a", "b", "c"}, 0.0)
    assert len(forwarder.slots_of("r")) == 2
    assert len(set(forwarder.slots_of("r").values())) == 2


def test_freed_slot_is_reused_with_its_ssrc() -> None:
    forwarder = one_receiver(slots=2)
    forwarder.select({"a", "b"}, 0.0)
    before = {source: ssrc for ssrc, source in forwarder.slots_of("r").items()}
    forward(forwarder, "b", 1, 0, 0.0)
    forwarder.select({"a", "c"}, 0.1)
    after = {source: ssrc for ssrc, source in forwarder.slots_of("r").items()}
    assert after == {"a": before["a"], "c": before["b"]}
    assert forward(forwarder, "c", 50, 0, 0.12)["r"].ssrc == before["b"]
    forwarder.select({"a", "b"}, 0.2)  # b comes back: a free slot again, the same SSRC
    assert {source: ssrc for ssrc, source in forwarder.slots_of("r").items()} == before


def test_slot_ssrcs_differ_and_stay() -> None:
    forwarder = Forwarder(8)
    forwarder.add_receiver("r", PT)
    forwarder.select({f"s{n}" for n in range(8)}, 0.0)
    ssrcs = set(forwarder.slots_of("r"))
    assert len(ssrcs) == 8
    forwarder.select({f"s{n}" for n in range(4, 12)}, 1.0)
    assert set(forwarder.slots_of("r")) == ssrcs


def test_payload_type_per_receiver_and_set_pt() -> None:
    forwarder = Forwarder(2)
    forwarder.add_receiver("x", 111)
    forwarder.add_receiver("y", 96)
    forwarder.select({"a"}, 0.0)
    packets = forward(forwarder, "a", 1, 0, 0.0)
    assert (packets["x"].payload_type, packets["y"].payload_type) == (111, 96)
    forwarder.set_pt("y", 120)
    assert forward(forwarder, "a", 2, FRAME, 0.02)["y"].payload_type == 120
    forwarder.set_pt("nobody", 5)


def test_receiver_added_later_gets_the_selection_and_removed_gets_nothing() -> None:
    forwarder = Forwarder(2)
    forwarder.select({"a", "b"}, 0.0)
    forwarder.add_receiver("a", PT)
    assert set(forwarder.slots_of("a").values()) == {"b"}
    assert set(forward(forwarder, "b", 1, 0, 0.0)) == {"a"}
    forwarder.remove_receiver("a")
    assert forward(forwarder, "b", 2, FRAME, 0.02) == {}
    assert forwarder.slots_of("a") == {}
    forwarder.remove_receiver("a")


def test_forget_source_frees_its_slots() -> None:
    forwarder = Forwarder(1)
    forwarder.add_receiver("r", PT)
    forwarder.select({"a"}, 0.0)
    ssrc = next(iter(forwarder.slots_of("r")))
    forwarder.forget_source("a")
    assert forwarder.slots_of("r") == {}
    assert forwarder.forward("a", b"x", 1, 0, False, 0.0) == []
    forwarder.select({"b"}, 0.1)
    assert forwarder.slots_of("r") == {ssrc: "b"}


def test_memoryview_payload() -> None:
    forwarder = one_receiver()
    forwarder.select({"a"}, 0.0)
    data = bytearray(b"\x00\x00opus frame")
    [(receiver, packet)] = forwarder.forward("a", memoryview(data)[2:], 1, 0, False, 0.0)
    assert receiver == "r" and RtpPacket.parse(packet).payload == b"opus frame"


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Forwarder(0)
