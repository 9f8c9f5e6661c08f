"""Random identifiers for tags, Call-IDs and branches.

RFC 3261 section 19.3 asks for cryptographically random tags and Call-IDs. One
``os.urandom`` read serves many identifiers, so the call-setup path makes no
system call per identifier (it did: 4% of the gateway's time at 1,000 calls/s).
"""

from __future__ import annotations

import os

_POOL_BYTES = 4096


class _RandomPool:
    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def hex(self, nbytes: int) -> str:
        pos = self._pos
        end = pos + nbytes
        if end > len(self._buf):
            self._buf = os.urandom(_POOL_BYTES)
            pos, end = 0, nbytes
        self._pos = end
        return self._buf[pos:end].hex()


random_hex = _RandomPool().hex
"""``random_hex(n)``: 2n hex digits of cryptographic randomness."""
