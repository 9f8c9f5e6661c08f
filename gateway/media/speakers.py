"""Who is heard in a conference room: audio levels, the mixed/forwarded set, the dominant one.

- ``level_dbov`` measures a decoded frame; ``audio_level`` reads the level a sender put in its
  RTP packets (RFC 6464 client-to-mixer audio level, an RFC 8285 header extension element), so
  an SFU can choose without decoding.
- ``ActiveSpeakers`` turns per-tick levels into the set of parties mixed (MCU) or forwarded
  (SFU) and the dominant speaker (ACS DominantSpeakersChanged).

Invariants:
- Levels are dBov: 0 is a full-scale square wave (RFC 6464 section 3), -127 is the floor and
  the level of silence; anything outside [-127, 0] is clamped.
- ``audio_level`` never raises on any bytes: every length is checked before it is read and a
  packet that is not well-formed RTP with a well-formed extension block gives None.
- ``ActiveSpeakers`` is pure: ticks are calls, no clock. Each update costs O(n log n) in the
  members (one sort), never O(n**2).
- ``selected`` is a subset of the last update's members (minus discarded ones) of at most
  ``max_mixed``, and all of them while they are no more than ``max_mixed``. A selected member
  leaves it only for one whose smoothed level is at least ``HYSTERESIS_DB`` above its own.
- ``dominant`` is None or a member whose smoothed level was above ``FLOOR_DB`` when it was
  chosen; ``update`` returns True exactly when it changed during that call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["SILENCE_DB", "ActiveSpeakers", "audio_level", "level_dbov"]

SILENCE_DB: Final = -127.0
FLOOR_DB: Final = -60.0  # a dominant speaker must be louder than this
HYSTERESIS_DB: Final = 3.0
ATTACK: Final = 0.5  # smoothing factor for a rising level
RELEASE: Final = 0.05  # and for a falling one
SWITCH_TICKS: Final = 15  # 300 ms of a louder member before the dominant one changes
QUIET_TICKS: Final = 50  # 1 s below FLOOR_DB and the dominant one is dropped

_FULL_SCALE: Final = 32768.0
_ONE_BYTE: Final = 0xBEDE  # RFC 8285 section 4.2
_TWO_BYTE_MASK: Final = 0xFFF0  # RFC 8285 section 4.3: 0x100 then 4 "appbits"
_TWO_BYTE: Final = 0x1000


def level_dbov(pcm: npt.NDArray[np.int16]) -> float:
    """RMS level in dBov (0 = full scale square wave, -127 floor for silence)."""
    if not len(pcm):
        return SILENCE_DB
    samples = pcm.astype(np.float64)
    power = float(np.dot(samples, samples)) / len(samples)
    if power <= 0.0:
        return SILENCE_DB
    return max(SILENCE_DB, min(0.0, 10.0 * math.log10(power / (_FULL_SCALE * _FULL_SCALE))))


def audio_level(data: bytes, ext_id: int) -> int | None:
    """RFC 6464 level (0..127, as -dBov) from an RTP packet's RFC 8285 header extension
    (one-byte 0xBEDE and two-byte 0x100x forms) with id ext_id; None when absent/malformed.
    Never raises on any bytes (it runs per packet)."""
    size = len(data)
    if size < 16 or data[0] >> 6 != 2 or not data[0] & 0x10:  # RFC 3550 5.1: V=2, X set
        return None
    start = 12 + 4 * (data[0] & 0x0F)  # after the CSRC list
    if start + 4 > size:
        return None
    profile = data[start] << 8 | data[start + 1]
    end = start + 4 + 4 * (data[start + 2] << 8 | data[start + 3])  # RFC 3550 5.3.1
    if end > size:
        return None
    pos = start + 4
    if profile == _ONE_BYTE:
        while pos < end:
            byte = data[pos]
            element, length = byte >> 4, (byte & 0x0F) + 1
            if element == 0:  # a padding byte (its length field is 0)
                pos += 1
                continue
            if element == 15:  # RFC 8285 4.2: reserved, stop processing the block
                return None
            if pos + 1 + length > end:
                return None
            if element == ext_id:
                return data[pos + 1] & 0x7F  # RFC 6464 section 3: V bit, then the level
            pos += 1 + length
    elif profile & _TWO_BYTE_MASK == _TWO_BYTE:
        while pos < end:
            element = data[pos]
            if element == 0:  # padding
                pos += 1
                continue
            if pos + 2 > end:
                return None
            length = data[pos + 1]
            if pos + 2 + length > end:
                return None
            if element == ext_id:
                return data[pos + 2] & 0x7F if length else None
            pos += 2 + length
    return None


class ActiveSpeakers:
    """Who is mixed/forwarded (up to max_mixed) and who is the dominant speaker.
    update(members, levels) once per 20 ms tick: members = every party that may be heard
    (not muted, not held), levels = dBov of each member's audio this tick (a member absent from
    levels was silent: -127). Smoothed level per member: attack alpha 0.5 (rising), release
    alpha 0.05 (falling). selected: all members when len(members) <= max_mixed; else the
    max_mixed members with the highest smoothed level, with hysteresis: a selected member is
    replaced only by one whose smoothed level is >= 3 dB above it; ties keep earlier selected,
    then join order. dominant: the member with the highest smoothed level above -60 dBov; it
    changes when another member is >= 3 dB louder for 15 consecutive ticks (300 ms), or at once
    when the current one leaves the members or is below -60 for 50 ticks; None when none.
    update returns True when `dominant` changed this tick.

    A member missing from one update's members (muted, held) loses its smoothed level: it
    starts again from silence when it is back. Join order is the order in which update first
    saw each member; ``discard`` (the party left) forgets it entirely and takes it out of
    ``selected`` at once; if it was the dominant one, the next update replaces it.
    """

    def __init__(self, max_mixed: int) -> None:
        if max_mixed < 1:
            raise ValueError(f"max_mixed must be at least 1, not {max_mixed}")
        self.max_mixed = max_mixed
        self.selected: frozenset[str] = frozenset()
        self.dominant: str | None = None
        self._smoothed: dict[str, float] = {}
        self._joined: dict[str, int] = {}  # member -> join rank
        self._joins = 0
        self._louder: dict[str, int] = {}  # consecutive ticks >= 3 dB above the dominant one
        self._quiet = 0  # consecutive ticks the dominant one spent below FLOOR_DB

    def update(self, members: Sequence[str], levels: Mapping[str, float]) -> bool:
        """One tick: smooth the levels, then choose ``selected`` and ``dominant``."""
        present = dict.fromkeys(members)
        previous = self._smoothed
        smoothed: dict[str, float] = {}
        for member in present:
            if member not in self._joined:
                self._joined[member] = self._joins
                self._joins += 1
            level = levels.get(member, SILENCE_DB)
            level = SILENCE_DB if level != level else max(SILENCE_DB, min(0.0, level))  # NaN
            old = previous.get(member, SILENCE_DB)
            smoothed[member] = old + (ATTACK if level > old else RELEASE) * (level - old)
        self._smoothed = smoothed
        self._select()
        return self._elect()

    def _key(self, member: str) -> tuple[float, int]:
        """Sort key, strongest first: loudest, then earliest joined."""
        return -self._smoothed[member], self._joined[member]

    def _select(self) -> None:
        members = self._smoothed
        limit = self.max_mixed
        if len(members) <= limit:
            self.selected = frozenset(members)
            return
        ranked = sorted(members, key=self._key)
        kept = [member for member in ranked if member in self.selected][:limit]
        challengers = [member for member in ranked if member not in self.selected]
        free = limit - len(kept)
        chosen = kept + challengers[:free]  # fill: loudest first (ties: join order)
        challengers = challengers[free:]
        incumbents = kept[::-1]  # weakest first
        swaps = 0
        for challenger, incumbent in zip(challengers, incumbents):
            if members[challenger] < members[incumbent] + HYSTERESIS_DB:
                break
            swaps += 1
        if swaps:
            dropped = set(incumbents[:swaps])
            chosen = [member for member in chosen if member not in dropped]
            chosen += challengers[:swaps]
        self.selected = frozenset(chosen)

    def _elect(self) -> bool:
        members = self._smoothed
        current = self.dominant
        loudest = min(members, key=self._key) if members else None
        audible = loudest if loudest is not None and members[loudest] > FLOOR_DB else None
        if current is None or current not in members:
            return self._crown(audible)
        level = members[current]
        self._quiet = self._quiet + 1 if level < FLOOR_DB else 0
        if self._quiet >= QUIET_TICKS:
            return self._crown(audible)
        before = self._louder
        louder: dict[str, int] = {}
        best: str | None = None
        for member, other in members.items():
            if member != current and other >= level + HYSTERESIS_DB:
                count = louder[member] = before.get(member, 0) + 1
                if count >= SWITCH_TICKS and (best is None or self._key(member) < self._key(best)):
                    best = member
        self._louder = louder
        if best is not None:
            return self._crown(best)
        return False

    def _crown(self, member: str | None) -> bool:
        changed = member != self.dominant
        self.dominant = member
        self._louder.clear()
        self._quiet = 0
        return changed

    def discard(self, member: str) -> None:
        """Forget a member that left: out of ``selected`` now, out of every count."""
        self._smoothed.pop(member, None)
        self._joined.pop(member, None)
        self._louder.pop(member, None)
        if member in self.selected:
            self.selected = self.selected - {member}

    def smoothed(self, member: str) -> float:
        """A member's smoothed level (dBov) after the last update; -127 when not a member."""
        return self._smoothed.get(member, SILENCE_DB)

    def ranking(self) -> list[str]:
        """The selected members, loudest (smoothed) first; ties in join order."""
        return sorted((m for m in self.selected if m in self._smoothed), key=self._key)
