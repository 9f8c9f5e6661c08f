"""SFU forwarding: the selected parties' Opus packets sent on to every other party unchanged in
payload, each on one of the receiver's SSRC "slots".

A receiver has up to ``slots`` outgoing streams. Each slot is one RTP stream of its own
(RFC 3550 section 8: one SSRC, one sequence number space, one timeline) that carries one
source at a time; when the selection changes, a slot passes from one source to another and
its numbering goes on from where it stopped, so the receiver sees one continuous stream
whose talker changed (a marker bit at the switch, RFC 3551 section 4.1), not a new stream.

Invariants:
- Pure: packets and times in, packets out; no sockets, no clock (``now`` is an argument,
  seconds on any one epoch).
- A receiver's own stream is never forwarded to it; a source sits in at most one slot of a
  receiver; a slot keeps its SSRC for the receiver's lifetime.
- Per slot, the sequence number is the slot's last + 1 at each switch and then follows the
  source's own differences, so a source's loss stays a gap and its reordering stays
  reordering; the timestamp jumps at a switch by the wall-clock time since the slot's last
  packet (at least one frame) and then follows the source's own timestamps. A packet older
  than the switch point (its sequence number before the first one forwarded) is dropped, so
  numbers never go back across a switch.
- Each packet is built fresh by ``rtp.build``: the receiver's payload type, version 2, no
  padding, no CSRC, no header extension (the source's RFC 6464 level is not relayed).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from gateway.media.rtp import build
from gateway.sip.ids import random_hex

__all__ = ["Forwarder"]

_SEQ_MOD: Final = 1 << 16
_SEQ_HALF: Final = 1 << 15
_TS_MOD: Final = 1 << 32
#: A jump of the source's sequence numbers this large is a restart, not loss or reordering.
_RESTART: Final = 1000


def _random(nbytes: int) -> int:
    return int(random_hex(nbytes), 16)


@dataclass(slots=True, eq=False)
class _Slot:
    """One outgoing stream of a receiver."""

    receiver: str
    ssrc: int
    source: str | None = None
    previous: str | None = None  # the last source it carried (preferred if it comes back)
    fresh: bool = True  # nothing of `source` forwarded since it took the slot
    seq: int = field(default_factory=lambda: _random(2))  # last sent (random before any)
    ts: int = field(default_factory=lambda: _random(4))  # its timestamp
    sent: float | None = None  # when the slot last sent a packet; None: never
    # The switch point: the source's first forwarded packet and what it was sent as
    src_seq: int = 0  # sequence number of the source's newest forwarded packet
    src_ahead: int = 0  # how far past the switch point that one is
    src_ts0: int = 0
    out_seq0: int = 0
    out_ts0: int = 0


class Forwarder:
    """Per-receiver SSRC slots for forwarded streams (SFU). Pure: packets in, packets out.
    clock: the RTP clock (48000 for Opus), frame: ticks per 20 ms (960)."""

    def __init__(self, slots: int, clock: int = 48000) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.slots = slots
        self.clock = clock
        self.frame = clock // 50
        self.forwarded = 0
        self._pts: dict[str, int] = {}
        self._slots: dict[str, list[_Slot]] = {}
        self._selected: frozenset[str] = frozenset()
        self._routes: dict[str, list[_Slot]] = {}  # source -> the slots carrying it

    # --- membership --------------------------------------------------------------------------

    def add_receiver(self, receiver: str, pt: int) -> None:
        """A party that gets forwarded streams (pt: its Opus payload type); it gets slots for
        the current selection at once. Adding one again only changes its pt."""
        self._pts[receiver] = pt
        if receiver in self._slots:
            return
        slots: list[_Slot] = []
        while len(slots) < self.slots:
            ssrc = _random(4)
            if all(slot.ssrc != ssrc for slot in slots):
                slots.append(_Slot(receiver, ssrc))
        self._slots[receiver] = slots
        self._assign(receiver)
        self._reroute()

    def set_pt(self, receiver: str, pt: int) -> None:
        """The receiver's Opus payload type changed (a re-INVITE)."""
        if receiver in self._pts:
            self._pts[receiver] = pt

    def remove_receiver(self, receiver: str) -> None:
        self._pts.pop(receiver, None)
        if self._slots.pop(receiver, None) is not None:
            self._reroute()

    def forget_source(self, source: str) -> None:
        """A party left: it is no longer selected and its slots are free."""
        self._selected = self._selected - {source}
        for slots in self._slots.values():
            for slot in slots:
                if slot.source == source:
                    _free(slot)
        self._reroute()

    # --- selection ---------------------------------------------------------------------------

    def select(self, sources: Collection[str], now: float) -> None:
        """The sources forwarded from now on (ActiveSpeakers.selected restricted to the Opus
        sources, or every source when fewer than slots). A receiver's slot keeps its source
        while selected; a newly selected source takes a free slot of each receiver (never the
        receiver's own stream); a slot freed is reused later (same SSRC).

        ``now`` is not needed: a switch is timed by the new source's first packet."""
        selected = frozenset(sources)
        if selected == self._selected:
            return
        self._selected = selected
        for receiver, slots in self._slots.items():
            for slot in slots:
                if slot.source is not None and slot.source not in selected:
                    _free(slot)
            self._assign(receiver)
        self._reroute()

    def _assign(self, receiver: str) -> None:
        """Give each selected source without a slot of ``receiver`` a free one: the slot it
        had last if that is free, else the first free slot."""
        slots = self._slots[receiver]
        placed = {slot.source for slot in slots}
        for source in sorted(self._selected - placed - {receiver}):
            free = [slot for slot in slots if slot.source is None]
            if not free:
                return
            slot = next((slot for slot in free if slot.previous == source), free[0])
            slot.source = slot.previous = source
            slot.fresh = True

    def _reroute(self) -> None:
        routes: dict[str, list[_Slot]] = {}
        for slots in self._slots.values():
            for slot in slots:
                if slot.source is not None:
                    routes.setdefault(slot.source, []).append(slot)
        self._routes = routes

    # --- packets -----------------------------------------------------------------------------

    def forward(
        self, source: str, payload: bytes | memoryview, seq: int, ts: int, marker: bool, now: float
    ) -> list[tuple[str, bytes]]:
        """The packets to send for one arriving source packet: (receiver, RTP bytes built with
        the receiver's pt and the slot's ssrc/seq/ts; no extension, no CSRC). Unselected
        source: []. The first packet of a source in a slot: seq = slot's last + 1, ts = slot's
        last ts + round((now - slot's last send time) * clock) (at least +1 frame; random
        start for a new slot), marker set. After that seq/ts follow the source's own
        differences (so source loss shows as a gap); a packet older than the slot's switch
        point (seq before the first one forwarded, modulo 2**16) is dropped."""
        routes = self._routes.get(source)
        if not routes:
            return []
        data = bytes(payload)
        out: list[tuple[str, bytes]] = []
        for slot in routes:
            if not slot.fresh:
                step = (seq - slot.src_seq + _SEQ_HALF) % _SEQ_MOD - _SEQ_HALF
                if not -_RESTART < step < _RESTART:  # the source restarted its numbering
                    slot.fresh = True
            if slot.fresh:
                out_seq = (slot.seq + 1) % _SEQ_MOD
                if slot.sent is None:
                    out_ts = slot.ts
                else:
                    gap = max(self.frame, round((now - slot.sent) * self.clock))
                    out_ts = (slot.ts + gap) % _TS_MOD
                slot.fresh = False
                slot.src_seq, slot.src_ahead, slot.src_ts0 = seq, 0, ts
                slot.out_seq0, slot.out_ts0 = out_seq, out_ts
                slot.seq, slot.ts = out_seq, out_ts
                mark = True
            else:
                step = (seq - slot.src_seq + _SEQ_HALF) % _SEQ_MOD - _SEQ_HALF
                ahead = slot.src_ahead + step
                if ahead < 0:  # from before the switch point
                    continue
                out_seq = (slot.out_seq0 + ahead) % _SEQ_MOD
                out_ts = (slot.out_ts0 + ts - slot.src_ts0) % _TS_MOD
                if step > 0:  # the newest so far: the slot's position
                    slot.src_seq, slot.src_ahead = seq, ahead
                    slot.seq, slot.ts = out_seq, out_ts
                mark = marker
            slot.sent = now
            pt = self._pts[slot.receiver]
            out.append((slot.receiver, build(pt, out_seq, out_ts, slot.ssrc, mark, data)))
        self.forwarded += len(out)
        return out

    # --- status ------------------------------------------------------------------------------

    def restart_source(self, source: str) -> None:
        """``source`` starts numbering afresh (a new SSRC, a new encoder): each slot that
        carries it continues its own numbering from the next packet, as at a switch."""
        for slot in self._routes.get(source, ()):
            slot.fresh = True

    def slots_of(self, receiver: str) -> dict[int, str]:
        """ssrc -> source of the receiver's occupied slots (for tests and status)."""
        return {s.ssrc: s.source for s in self._slots.get(receiver, ()) if s.source is not None}


def _free(slot: _Slot) -> None:
    slot.source = None
    slot.fresh = True
