"""The RTP port pool: even ports of [media] port_range, handed out and taken back.

Sans-I/O: the pool only does the bookkeeping. The adapter binds the port it is given and,
when the bind fails (someone else holds it), gives it back and asks for another. A released
port is usable again at once (DESIGN.md), but goes to the back of the queue: the pool hands
out the port that has been free longest, so late packets of an ended call rarely reach a new
one (and when they do, strict source latching drops them).

Each allocation is an even RTP port; the odd port above it is the RTCP port (RFC 3550
section 11) and belongs to the same allocation, so the range holds (last - first + 1) // 2
pairs.
"""

from __future__ import annotations

from collections import deque


class PortsExhausted(Exception):
    """Every port pair of the range is in use; the call gets 503 (or 488 for a re-offer)."""


class PortPool:
    __slots__ = ("_free", "_used", "first", "last")

    def __init__(self, first: int, last: int) -> None:
        if first % 2:
            first += 1
        if not 0 < first < last <= 65535:
            raise ValueError(f"port range {first}-{last} holds no RTP/RTCP pair")
        self.first = first
        self.last = last
        self._free: deque[int] = deque(range(first, last, 2))
        self._used: set[int] = set()

    @property
    def size(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        """The next free even port (its RTCP port is the one above)."""
        try:
            port = self._free.popleft()
        except IndexError:
            raise PortsExhausted(
                f"all {self.size} RTP port pairs of {self.first}-{self.last} are in use"
            ) from None
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give ``port`` back (to the end of the queue); unknown ports are ignored."""
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)
