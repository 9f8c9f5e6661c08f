"""The adaptive jitter buffer, driven by hand: packets pushed at chosen arrival times, ``pop``
called on a simulated 20 ms media clock. Nothing sleeps; every time is an argument.

The helpers build a sender (sequence numbers, timestamps, marker bits), a network (an arrival
time per packet, or None for a packet lost on the way) and a media clock, and return the
frames in playout order. ``kinds()`` spells a run of frames as a string: ``a`` audio, ``l``
lost, ``e`` empty.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from gateway.media.jitter import MAX_DROPOUT, MAX_MISORDER, Frame, JitterBuffer

RATE, TICKS = 8000, 160  # G.711 at 20 ms
FRAME = TICKS / RATE
SSRC = 0x11223344
PHASE = 0.005  # the media clock ticks at 5, 25, 45 ... ms


@dataclass(frozen=True)
class Sent:
    seq: int
    ts: int
    arrival: float
    marker: bool = False
    ssrc: int = SSRC

    @property
    def payload(self) -> bytes:
        return self.seq.to_bytes(2, "big")


def talk(
    count: int,
    *,
    seq: int = 1000,
    ts: int = 160_000,
    start: float = 0.0,
    network: float = 0.01,
    marker: bool = True,
    ssrc: int = SSRC,
    ticks: int = TICKS,
    rate: int = RATE,
) -> list[Sent]:
    """``count`` packets sent every frame from ``start``, each arriving ``network`` later."""
    return [
        Sent(
            (seq + i) & 0xFFFF,
            (ts + i * ticks) & 0xFFFFFFFF,
            start + i * ticks / rate + network,
            marker and i == 0,
            ssrc,
        )
        for i in range(count)
    ]


def run(
    jb: JitterBuffer,
    sent: list[Sent],
    *,
    until: float | None = None,
    frame: float = FRAME,
    start: float = PHASE,
) -> list[Frame]:
    """Push every packet at its arrival and pop on the media clock (pushes first when they
    share a time with a tick). Without ``until`` the clock stops once every packet has been
    pushed and the buffer is empty, so the end of the stream is not concealed."""
    pushes = sorted(sent, key=lambda p: p.arrival)
    frames: list[Frame] = []
    tick, index = start, 0
    while True:
        while index < len(pushes) and pushes[index].arrival <= tick:
            packet = pushes[index]
            jb.push(
                packet.seq, packet.ts, packet.ssrc, packet.marker, packet.payload, packet.arrival
            )
            index += 1
        if until is None and index == len(pushes) and jb.buffered == 0:
            return frames
        if until is not None and tick > until:
            return frames
        while (popped := jb.pop(tick)) is not None:
            frames.append(popped)
        tick += frame


def kinds(frames: list[Frame]) -> str:
    return "".join(frame.kind[0] for frame in frames)


def played_seqs(frames: list[Frame]) -> list[int]:
    return [int.from_bytes(f.payload, "big") for f in frames if f.kind == "audio"]


def until_last_audio(frames: list[Frame]) -> list[Frame]:
    last = max(i for i, frame in enumerate(frames) if frame.kind == "audio")
    return frames[: last + 1]


def jb(**kwargs: float) -> JitterBuffer:
    return JitterBuffer(RATE, TICKS, **kwargs)


# --- construction and input checks ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clock_rate": 0, "frame_ticks": 160},
        {"clock_rate": 8000, "frame_ticks": 0},
        {"clock_rate": 8000, "frame_ticks": 160, "min_delay": 0.3, "max_delay": 0.2},
        {"clock_rate": 8000, "frame_ticks": 160, "min_delay": -0.01},
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seq", "ts", "ssrc"), [(-1, 0, 0), (65536, 0, 0), (0, -1, 0), (0, 1 << 32, 0), (0, 0, 1 << 32)]
)
def test_push_rejects_out_of_range_header_fields(seq: int, ts: int, ssrc: int) -> None:
    buffer = jb()
    with pytest.raises(ValueError, match="out of range"):
        buffer.push(seq, ts, ssrc, False, b"x", 0.0)
    assert buffer.received == 0


def test_nothing_to_pop_before_the_first_packet() -> None:
    buffer = jb()
    assert buffer.pop(0.0) is None
    assert buffer.pop(10.0) is None
    assert buffer.delay == 0.0
    assert buffer.peek() is None


def test_first_frame_waits_min_delay_then_one_frame_per_period() -> None:
    buffer = jb(min_delay=0.04)
    for packet in talk(5, network=0.0):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    assert buffer.pop(0.0) is None
    assert buffer.pop(0.039) is None
    first = buffer.pop(0.041)
    assert first is not None and first.kind == "audio" and first.seq == 1000
    assert first.restart and first.marker and first.ssrc == SSRC and first.ts == 160_000
    assert buffer.pop(0.041) is None  # the next slot is a frame later
    assert buffer.pop(0.050) is None  # more than half a frame early
    second = buffer.pop(0.055)  # within half a frame of the caller's tick
    assert second is not None and second.seq == 1001 and not second.restart
    assert buffer.delay == pytest.approx(0.041)  # locked to the caller's first tick


# --- order ---------------------------------------------------------------------------


def test_in_order_stream_plays_every_packet_in_order() -> None:
    buffer = jb()
    frames = until_last_audio(run(buffer, talk(50)))
    assert kinds(frames) == "a" * 50
    assert played_seqs(frames) == list(range(1000, 1050))
    assert [f.ts for f in frames] == [160_000 + i * TICKS for i in range(50)]
    assert (buffer.received, buffer.played, buffer.lost, buffer.late) == (50, 50, 0, 0)
    assert (buffer.duplicates, buffer.overflow, buffer.resyncs) == (0, 0, 0)
    assert [f.restart for f in frames] == [True] + [False] * 49


def test_frames_come_out_evenly_whatever_the_arrival_pattern() -> None:
    sent = talk(30)
    # packets arrive in bursts of three, within the playout delay
    bursty = [
        Sent(p.seq, p.ts, p.arrival + (2 - i % 3) * 0.006, p.marker) for i, p in enumerate(sent)
    ]
    buffer = jb(min_delay=0.04, max_delay=0.04)
    frames = until_last_audio(run(buffer, bursty))
    assert kinds(frames) == "a" * 30
    assert played_seqs(frames) == list(range(1000, 1030))


def test_reordered_packets_are_put_back_in_order() -> None:
    sent = talk(20)
    swapped = [
        Sent(p.seq, p.ts, p.arrival + (0.012 if i in (5, 11) else 0.0), p.marker)
        for i, p in enumerate(sent)
    ]  # 5 comes after 6, 11 after 12
    buffer = jb(min_delay=0.04)
    frames = until_last_audio(run(buffer, swapped))
    assert played_seqs(frames) == list(range(1000, 1020))
    assert (buffer.lost, buffer.late) == (0, 0)


def test_reordering_before_playout_starts_from_the_earliest_packet() -> None:
    sent = talk(10, network=0.02)
    early_second = [
        Sent(p.seq, p.ts, p.arrival - (0.015 if i == 1 else 0.0), p.marker)
        for i, p in enumerate(sent)
    ]
    buffer = jb()
    frames = until_last_audio(run(buffer, early_second))
    assert played_seqs(frames) == list(range(1000, 1010))
    assert buffer.late == 0


# --- loss --------------------------------------------------------------------------------


def test_a_lost_packet_gives_one_lost_frame_with_the_next_payload_for_fec() -> None:
    sent = [p for p in talk(20) if p.seq != 1007]
    buffer = jb(min_delay=0.04)
    frames = until_last_audio(run(buffer, sent))
    assert kinds(frames) == "a" * 7 + "l" + "a" * 12
    lost = frames[7]
    assert lost.seq == 1007
    assert lost.ts == 160_000 + 7 * TICKS
    assert lost.payload == b""
    assert lost.next_payload == (1008).to_bytes(2, "big")
    assert buffer.lost == 1
    assert buffer.played == 19


def test_peek_shows_the_packets_after_a_lost_frame() -> None:
    buffer = jb(min_delay=0.06)
    for packet in talk(8, network=0.0):
        if packet.seq != 1003:
            buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    frames = []
    now = 0.06
    while len(frames) < 4:
        frame = buffer.pop(now)
        if frame is not None:
            frames.append(frame)
        now += 0.001
    assert kinds(frames) == "aaal"
    assert buffer.peek() == (1004).to_bytes(2, "big")
    assert buffer.peek(2) == (1005).to_bytes(2, "big")
    assert buffer.peek(10) is None


def test_two_lost_in_a_row_only_the_second_can_use_fec() -> None:
    sent = [p for p in talk(20) if p.seq not in (1007, 1008)]
    buffer = jb(min_delay=0.04)
    frames = until_last_audio(run(buffer, sent))
    assert kinds(frames) == "a" * 7 + "ll" + "a" * 11
    assert [f.seq for f in frames[7:9]] == [1007, 1008]
    assert frames[7].next_payload is None
    assert frames[8].next_payload == (1009).to_bytes(2, "big")
    assert buffer.lost == 2


def test_a_late_packet_is_dropped_and_counted() -> None:
    sent = talk(20)
    late = [Sent(p.seq, p.ts, p.arrival + (0.15 if p.seq == 1005 else 0.0), p.marker) for p in sent]
    buffer = jb(min_delay=0.04, max_delay=0.04)  # a fixed delay: no waiting for it
    frames = until_last_audio(run(buffer, late))
    assert kinds(frames) == "aaaaalaaaaaaaaaaaaaa"
    assert 1005 not in played_seqs(frames)
    assert (buffer.late, buffer.lost, buffer.played) == (1, 1, 19)


def test_a_late_duplicate_of_a_played_packet_is_a_duplicate() -> None:
    buffer = jb()
    sent = talk(10)
    frames = run(buffer, sent)
    buffer.push(1003, 160_000 + 3 * TICKS, SSRC, False, b"again", sent[-1].arrival + 0.5)
    assert buffer.duplicates == 1
    assert buffer.late == 0
    assert played_seqs(until_last_audio(frames)) == list(range(1000, 1010))


def test_duplicates_are_dropped_and_counted() -> None:
    doubled = [q for p in talk(20) for q in (p, Sent(p.seq, p.ts, p.arrival + 0.002, p.marker))]
    buffer = jb()
    frames = until_last_audio(run(buffer, doubled))
    assert played_seqs(frames) == list(range(1000, 1020))
    assert (buffer.received, buffer.duplicates, buffer.played) == (40, 20, 20)


def test_stream_end_is_concealed_for_60_ms_then_silent() -> None:
    buffer = jb()
    frames = run(buffer, talk(10), until=0.5)
    assert kinds(frames).startswith("a" * 10 + "lll" + "eeee")
    assert set(kinds(frames)[13:]) == {"e"}


# --- wraps (RFC 3550 appendix A.1) ----------------------------------------------------------


def test_sequence_numbers_wrap() -> None:
    buffer = jb()
    frames = until_last_audio(run(buffer, talk(30, seq=65520)))
    assert [f.seq for f in frames] == [(65520 + i) & 0xFFFF for i in range(30)]
    assert (buffer.lost, buffer.resyncs, buffer.late) == (0, 0, 0)


def test_timestamps_wrap() -> None:
    buffer = jb()
    frames = until_last_audio(run(buffer, talk(30, ts=(1 << 32) - 5 * TICKS)))
    assert [f.ts for f in frames][:7] == [(1 << 32) - 5 * TICKS + i * TICKS for i in range(5)] + [
        0,
        160,
    ]
    assert (buffer.lost, buffer.resyncs) == (0, 0)
    assert len(frames) == 30


def test_both_wrap_with_loss_and_reordering_across_the_wrap() -> None:
    sent = talk(30, seq=65530, ts=(1 << 32) - 8 * TICKS)
    network = [
        Sent(p.seq, p.ts, p.arrival + (0.012 if p.seq == 65535 else 0.0), p.marker)
        for p in sent
        if p.seq != 2
    ]
    buffer = jb(min_delay=0.04)
    frames = until_last_audio(run(buffer, network))
    assert [f.seq for f in frames] == [(65530 + i) & 0xFFFF for i in range(30)]
    assert kinds(frames) == "a" * 8 + "l" + "a" * 21
    assert (buffer.lost, buffer.late, buffer.resyncs) == (1, 0, 0)


def test_wrapped_sequence_reordered_just_before_playout() -> None:
    buffer = jb(min_delay=0.04)
    buffer.push(0, 1000, SSRC, False, b"b", 0.010)
    buffer.push(65535, 840, SSRC, True, b"a", 0.012)  # older, across the wrap
    assert [f.payload for f in (buffer.pop(0.06), buffer.pop(0.08))] == [b"a", b"b"]  # type: ignore[union-attr]


def test_opus_clock_and_long_streams() -> None:
    buffer = JitterBuffer(48000, 960)
    sent = talk(3000, seq=64000, ts=(1 << 32) - 100 * 960, ticks=960, rate=48000)
    frames = run(buffer, sent)
    assert kinds(frames) == "a" * 3000
    assert [f.ts for f in frames[99:102]] == [(1 << 32) - 960, 0, 960]
    assert [f.seq for f in frames[1534:1538]] == [65534, 65535, 0, 1]
    assert (buffer.lost, buffer.resyncs) == (0, 0)


# --- restarts --------------------------------------------------------------------------


def test_ssrc_change_resyncs_and_plays_the_new_source() -> None:
    first = talk(20)
    second = talk(20, seq=7, ts=99, start=first[-1].arrival + 0.1, ssrc=0xABCDEF)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + second))
    audio = [f for f in frames if f.kind == "audio"]
    assert [f.ssrc for f in audio] == [SSRC] * 20 + [0xABCDEF] * 20
    assert [f.seq for f in audio][20:] == list(range(7, 27))
    assert buffer.resyncs == 1
    assert [f.restart for f in audio] == [True] + [False] * 19 + [True] + [False] * 19


def test_ssrc_change_flushes_what_the_old_source_left() -> None:
    buffer = jb(min_delay=0.1)
    for packet in talk(5, network=0.0):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    assert buffer.buffered == 5
    buffer.push(7, 99, 0xABCDEF, True, b"new", 0.09)
    assert (buffer.buffered, buffer.resyncs) == (1, 1)
    first = buffer.pop(0.09 + 0.1)
    assert first is not None
    assert (first.payload, first.ssrc, first.restart) == (b"new", 0xABCDEF, True)


def test_a_straggler_of_the_old_ssrc_is_dropped_not_switched_back_to() -> None:
    first = talk(20)
    second = talk(20, seq=7, ts=99, start=first[-1].arrival + 0.01, ssrc=0xABCDEF)
    straggler = Sent(1019, first[-1].ts, second[3].arrival + 0.001)
    buffer = jb()
    frames = until_last_audio(run(buffer, [*first[:-1], *second, straggler]))
    assert buffer.resyncs == 1
    assert buffer.late == 1
    assert played_seqs(frames)[-20:] == list(range(7, 27))


def test_the_old_ssrc_may_come_back_after_a_while() -> None:
    first = talk(10)
    second = talk(10, seq=7, ts=99, start=0.3, ssrc=0xABCDEF)
    third = talk(10, seq=2000, ts=5000, start=2.0)
    buffer = jb()
    run(buffer, first + second + third)
    assert buffer.resyncs == 2
    assert buffer.played == 30


def test_timestamp_jump_resyncs() -> None:
    first = talk(20)
    # same SSRC, the sequence carries on, but the timestamps jumped by ten minutes
    jumped = talk(20, seq=1020, ts=160_000 + 20 * TICKS + 600 * RATE, start=first[-1].arrival + 0.1)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + jumped))
    assert played_seqs(frames) == list(range(1000, 1040))
    assert buffer.resyncs == 1
    assert [f.seq for f in frames if f.restart] == [1000, 1020]


def test_a_timestamp_jump_flushes_the_packets_still_waiting() -> None:
    first = talk(20)
    jumped = talk(20, seq=1020, ts=160_000 + 20 * TICKS + 600 * RATE, start=first[-1].arrival)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + jumped))
    played = played_seqs(frames)
    assert played[-20:] == list(range(1020, 1040))
    assert 17 <= len(played) - 20 < 20  # what was buffered at the jump (the delay) is gone
    assert buffer.resyncs == 1


def test_backward_timestamp_jump_resyncs() -> None:
    first = talk(20, ts=10_000_000)
    jumped = talk(20, seq=1020, ts=0, start=first[-1].arrival + 0.1)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + jumped))
    assert played_seqs(frames) == list(range(1000, 1040))
    assert buffer.resyncs == 1


def test_one_packet_far_out_of_sequence_is_dropped() -> None:
    sent = talk(20)
    stray = Sent(1000 + MAX_DROPOUT + 500, sent[5].ts, sent[5].arrival + 0.001)
    buffer = jb()
    frames = until_last_audio(run(buffer, [*sent, stray]))
    assert played_seqs(frames) == list(range(1000, 1020))
    assert buffer.resyncs == 0


def test_two_packets_in_sequence_after_a_jump_restart_playout() -> None:
    first = talk(20)
    restart_seq = 1019 + MAX_DROPOUT + 1
    restarted = talk(20, seq=restart_seq, ts=first[-1].ts + TICKS, start=first[-1].arrival + 0.1)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + restarted))
    # the first packet of the new sequence was held back, then played once the second came
    assert played_seqs(frames) == [*range(1000, 1020), *range(restart_seq, restart_seq + 20)]
    assert buffer.resyncs == 1


def test_a_sequence_far_behind_restarts_too() -> None:
    first = talk(20, seq=5000)
    behind_seq = 5000 - MAX_MISORDER - 50
    behind = talk(20, seq=behind_seq, ts=first[-1].ts + TICKS, start=first[-1].arrival + 0.1)
    buffer = jb()
    frames = until_last_audio(run(buffer, first + behind))
    assert played_seqs(frames) == [*range(5000, 5020), *range(behind_seq, behind_seq + 20)]
    assert buffer.resyncs == 1


def test_a_stalled_caller_restarts_playout() -> None:
    buffer = jb()
    sent = talk(10)
    run(buffer, sent, until=0.2)
    later = talk(10, seq=1010, ts=160_000 + 10 * TICKS, start=3.0)
    frames = run(buffer, later, start=3.005)
    assert buffer.resyncs >= 1
    assert played_seqs(until_last_audio(frames)) == list(range(1010, 1020))


def test_ten_late_packets_in_a_row_restart_playout() -> None:
    # the path got 400 ms longer (more than max_delay): everything after is late
    sent = talk(60)
    shifted = [
        Sent(p.seq, p.ts, p.arrival + (0.4 if i >= 20 else 0.0), p.marker)
        for i, p in enumerate(sent)
    ]
    buffer = jb()
    frames = until_last_audio(run(buffer, shifted))
    assert buffer.resyncs == 1
    assert buffer.late == 10
    assert played_seqs(frames)[-30:] == list(range(1030, 1060))


def test_a_caller_that_woke_late_gets_every_due_frame() -> None:
    buffer = jb()
    for packet in talk(10, network=0.0):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    assert buffer.pop(0.02) is not None  # locks the slot clock at 20 ms
    burst = []
    while (frame := buffer.pop(0.101)) is not None:  # woke 80 ms late
        burst.append(frame)
    assert [f.seq for f in burst] == [1001, 1002, 1003, 1004]
    assert buffer.pop(0.101) is None


# --- overflow -----------------------------------------------------------------------------


def test_overflow_drops_the_oldest_beyond_max_delay() -> None:
    buffer = jb(max_delay=0.1)
    for packet in talk(30, network=0.0):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, 0.0)  # all at once
    assert buffer.buffered == 6  # 100 ms of packets, and the one being waited on
    assert buffer.overflow == 24
    frames = [buffer.pop(0.02 + i * FRAME) for i in range(6)]
    assert [f.seq for f in frames if f is not None] == list(range(1024, 1030))


def test_memory_is_bounded_when_nobody_pops() -> None:
    buffer = jb()
    for packet in talk(5000):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    assert buffer.buffered <= 11
    assert buffer.overflow >= 4989


# --- pauses: DTX and silence suppression ----------------------------------------------------


def spurts(
    *lengths_and_gaps: int,
    network: float = 0.01,
    marker: bool = True,
    seq: int = 1000,
    slot: int = 0,
) -> list[Sent]:
    """Talk spurts of the given lengths (frames) separated by the given gaps (frames):
    ``spurts(10, 25, 10)``: 10 frames, 25 silent, 10 frames. Sequence numbers run on; the
    first packet is sent at ``slot`` frames from 0 with sequence number ``seq``."""
    sent = []
    for index, count in enumerate(lengths_and_gaps):
        if index % 2:
            slot += count
            continue
        for i in range(count):
            sent.append(
                Sent(seq, 160_000 + slot * TICKS, slot * FRAME + network, marker and i == 0)
            )
            seq += 1
            slot += 1
    return sent


def test_silence_with_a_marker_is_empty_not_lost() -> None:
    buffer = jb()
    frames = until_last_audio(run(buffer, spurts(10, 25, 10)))
    pattern = kinds(frames)
    assert pattern.startswith("a" * 10) and pattern.endswith("a" * 10)
    gap = pattern[10:-10]
    # nothing tells a loss from a pause at first; once the next packet is here, it is a pause
    assert gap == "lll" + "e" * (len(gap) - 3)
    assert buffer.lost == 0  # the three were taken back when the marker packet came in time
    assert buffer.played == 20
    assert played_seqs(frames) == list(range(1000, 1020))


def test_dtx_without_marker_is_empty_too() -> None:
    # Opus DTX: the sequence runs on, the timestamp jumps, no marker (RFC 7587 section 3.1.3)
    buffer = JitterBuffer(48000, 960)
    sent = [Sent(p.seq, p.ts * 6, p.arrival, False) for p in spurts(10, 20, 10, marker=False)]
    frames = until_last_audio(run(buffer, sent))
    pattern = kinds(frames)
    gap = pattern[10:-10]
    assert pattern[:10] == pattern[-10:] == "a" * 10
    assert gap == "lll" + "e" * (len(gap) - 3)
    assert (buffer.lost, buffer.resyncs, buffer.played) == (0, 0, 20)


def test_a_pause_known_in_advance_is_all_empty() -> None:
    # with 100 ms of delay, the first packet after a short pause is here before the pause
    buffer = jb(min_delay=0.1, max_delay=0.1)
    for packet in talk(5, network=0.0):
        buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
    buffer.push(1005, 160_000 + 9 * TICKS, SSRC, True, b"m", 0.18)  # sent at slot 9
    frames = [buffer.pop(0.1 + i * FRAME) for i in range(10)]
    assert kinds([f for f in frames if f is not None]) == "aaaaaeeeea"
    assert [f.ts for f in frames if f is not None][5:] == [
        160_000 + i * TICKS for i in range(5, 10)
    ]
    assert buffer.lost == 0


def test_a_lost_packet_before_a_marker_is_not_concealed_into_the_pause() -> None:
    sent = [p for p in spurts(10, 25, 10) if p.seq != 1009]
    buffer = jb(min_delay=0.04)
    frames = until_last_audio(run(buffer, sent))
    assert played_seqs(frames) == [*range(1000, 1009), *range(1010, 1020)]
    assert kinds(frames)[9:12] == "lll"  # 1009 never came: these stand as losses
    assert set(kinds(frames)[12:-10]) == {"e"}
    assert buffer.lost == 3


def test_spurt_start_takes_the_target_delay() -> None:
    buffer = jb(min_delay=0.06)
    frames = run(buffer, spurts(10, 25, 10))
    # each spurt's first packet waits min_delay (the target without jitter), within a frame
    starts = [f for f in frames if f.kind == "audio" and f.marker]
    assert len(starts) == 2
    assert 0.06 - 1e-9 <= buffer.delay < 0.06 + FRAME


# --- adaptation ---------------------------------------------------------------------------


def jittery(
    count: int, spread: float, *, seed: int = 7, spurt: int = 0, gap: int = 0
) -> list[Sent]:
    """Packets delayed by 10 ms plus a uniform 0..spread; in spurts when ``spurt`` is set."""
    rng = random.Random(seed)
    sent, seq, slot = [], 1000, 0
    while len(sent) < count:
        for i in range(spurt or count):
            delay = 0.01 + rng.uniform(0.0, spread)
            sent.append(Sent(seq & 0xFFFF, 160_000 + slot * TICKS, slot * FRAME + delay, i == 0))
            seq += 1
            slot += 1
        slot += gap
    return sent[:count]


def test_delay_grows_under_jitter_on_a_continuous_stream() -> None:
    buffer = jb()
    frames = run(buffer, jittery(500, 0.08))
    assert buffer.target_delay > 0.07
    assert 0.07 < buffer.delay <= buffer.max_delay + FRAME
    assert buffer.jitter > 0.01
    assert buffer.played >= 480
    assert buffer.late + buffer.lost < 25
    # once grown, the tail of the stream plays clean
    assert "l" not in kinds(until_last_audio(frames))[-200:]


def test_delay_stays_within_max_delay_under_huge_jitter() -> None:
    buffer = jb(max_delay=0.12)
    run(buffer, jittery(400, 0.5, spurt=25, gap=10))
    assert buffer.target_delay == pytest.approx(0.12)
    assert buffer.delay <= 0.12 + FRAME


def test_delay_comes_down_after_the_jitter_calms() -> None:
    buffer = jb()
    rough = jittery(300, 0.08, spurt=50, gap=15)  # 390 slots
    run(buffer, rough)
    assert buffer.delay > 0.07
    calm = spurts(50, 15, 50, 15, 50, 15, 50, 15, 50, seq=1300, slot=400)
    frames = run(buffer, calm)
    assert buffer.resyncs == 0
    assert buffer.target_delay == pytest.approx(0.02)
    assert 0.02 <= buffer.delay < 0.04
    assert "l" not in kinds(until_last_audio(frames))[-50:]


def test_delay_changes_only_across_lost_or_empty_frames() -> None:
    buffer = jb()
    sent = jittery(400, 0.06, spurt=40, gap=10)
    pushes = sorted(sent, key=lambda p: p.arrival)
    index, tick = 0, PHASE
    history: list[tuple[str, float]] = []
    while index < len(pushes) or buffer.buffered:
        while index < len(pushes) and pushes[index].arrival <= tick:
            packet = pushes[index]
            buffer.push(packet.seq, packet.ts, SSRC, packet.marker, packet.payload, packet.arrival)
            index += 1
        while (frame := buffer.pop(tick)) is not None:
            history.append((frame.kind, buffer.delay))
        tick += FRAME
    # the delay is measured against the quickest recent packet, which new packets can lower;
    # that moves every slot alike. What must not happen is a slot skipped or repeated between
    # two audio frames: the delay seen over two audio frames in a row moves by less than a
    # frame (a frame is what a skip or a hold would move it by).
    steps = [
        abs(b - a)
        for (kind_a, a), (kind_b, b) in itertools.pairwise(history)
        if kind_a == kind_b == "audio"
    ]
    assert steps and max(steps) < FRAME / 2
    # and it did change, across the lost and empty frames
    assert max(d for _, d in history) - min(d for _, d in history) > FRAME


def test_a_step_in_network_delay_is_absorbed_by_holding() -> None:
    sent = talk(150)
    stepped = [
        Sent(p.seq, p.ts, p.arrival + (0.1 if i >= 50 else 0.0), p.marker)
        for i, p in enumerate(sent)
    ]
    buffer = jb()
    frames = until_last_audio(run(buffer, stepped))
    assert buffer.resyncs == 0
    assert buffer.delay > 0.1
    assert buffer.late <= 6
    assert "l" not in kinds(frames)[60:]
    assert played_seqs(frames)[-80:] == list(range(1070, 1150))


def test_a_packet_waited_for_is_not_counted_lost() -> None:
    # every tenth packet takes 50 ms more. The first of them is lost (the buffer did not know
    # better) and comes late; it teaches the target, so each later one is waited for: the
    # slot is held (a "lost" frame is concealed meanwhile) and the packet then plays.
    sent = talk(60)
    slow = [
        Sent(p.seq, p.ts, p.arrival + (0.05 if i % 10 == 5 else 0.0), p.marker)
        for i, p in enumerate(sent)
    ]
    buffer = jb()
    frames = run(buffer, slow)
    assert (buffer.lost, buffer.late) == (1, 1)
    assert played_seqs(frames) == [seq for seq in range(1000, 1060) if seq != 1005]
    assert kinds(frames).count("l") > 1  # the waits, concealed, not counted as losses
    assert buffer.delay > 0.05


# --- bookkeeping ------------------------------------------------------------------------------


def test_counters_add_up() -> None:
    sent = jittery(600, 0.1, seed=11, spurt=30, gap=8)
    network = [p for p in sent if p.seq % 37]  # some lost on the way
    network += [Sent(p.seq, p.ts, p.arrival + 0.003, p.marker) for p in network[::13]]  # dups
    buffer = jb()
    run(buffer, network)
    assert buffer.resyncs == 0
    assert buffer.received == len(network)
    accounted = buffer.played + buffer.late + buffer.duplicates + buffer.overflow + buffer.buffered
    assert accounted == buffer.received
    assert buffer.lost >= sum(1 for p in sent if p.seq % 37 == 0) - 1


def test_frames_are_immutable() -> None:
    frame = Frame("audio", 0, b"x", 1)
    with pytest.raises(AttributeError):
        frame.kind = "lost"  # type: ignore[misc]


def test_the_sliding_minimum_transit_is_the_windows_minimum() -> None:
    """The delay figures read the smallest transit of the last 128 packets for every packet;
    the running minimum kept for that must be exactly min() over that window, through
    rises, falls and plateaus."""
    rng = random.Random(7)
    jb = JitterBuffer(8000, 160)
    now = 100.0
    full = 0
    for i in range(2000):
        now += 0.02 + (0.03 if 600 <= i < 900 else 0.0) * rng.random()
        if i == 1200:
            now -= 0.05  # the path got shorter: the minimum drops at once
        jb.push(i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 1, False, b"\xff" * 160, now)
        jb.pop(now)
        window = list(jb._transits)
        assert jb._lows[0][1] == min(window), i
        full += len(window) == 128  # (a resync starts the window over)
    assert full > 1000
