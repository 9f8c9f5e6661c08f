"""Which call a TURN allocation served: relay addresses seen in the SDP the gateway carries.

A client that uses the gateway's TURN offers its relayed address in its SDP: as the c=/m=
address when it sends all its media through the relay (a TCP-only client, case 4), or as an
``a=candidate ... typ relay`` line when it does ICE (case 3). Every SDP the gateway receives
from a party is shown to ``CallMap.note`` with the call's CDR key; when an allocation ends, its
usage row takes the call of the last SDP that named its relay address (``call_for``).

Invariants: bounded (``MAX_ENTRIES``, oldest forgotten first); only addresses of live
allocations are kept (``is_relay``), so ordinary SDP costs one regex scan and nothing else.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MAX_ENTRIES", "CallMap", "relay_addresses"]

MAX_ENTRIES = 100_000
_CANDIDATE = re.compile(rb"^a=candidate:\S+ \d{1,3} udp \d{1,10} (\S+) (\d{1,5}) typ relay",
                        re.I | re.M)
_CONNECTION = re.compile(rb"^c=IN IP[46] ([^\s/]+)", re.M)
_MEDIA = re.compile(rb"^m=audio (\d{1,5}) ", re.M)


def relay_addresses(body: bytes) -> set[tuple[str, int]]:
    """The (host, port) pairs an SDP names: relay candidates, and its audio address."""
    found = {(m.group(1).decode("ascii", "replace"), int(m.group(2)))
             for m in _CANDIDATE.finditer(body)}
    connection, media = _CONNECTION.search(body), _MEDIA.search(body)
    if connection is not None and media is not None:
        found.add((connection.group(1).decode("ascii", "replace"), int(media.group(1))))
    return found


class CallMap:
    """Relay address -> the CDR key of the call whose SDP named it."""

    def __init__(self, is_relay: Callable[[tuple[str, int]], bool]) -> None:
        self.is_relay = is_relay
        self._calls: OrderedDict[tuple[str, int], str] = OrderedDict()

    def note(self, call_key: str, body: bytes) -> None:
        """Never raises: it runs where a call's SDP crosses the gateway."""
        if not body:
            return
        try:
            addresses = relay_addresses(body)
        except ValueError:
            return
        for address in addresses:
            if self.is_relay(address):
                self._calls[address] = call_key
                self._calls.move_to_end(address)
                if len(self._calls) > MAX_ENTRIES:
                    self._calls.popitem(last=False)

    def call_for(self, relay: tuple[str, int]) -> str | None:
        """The call that used ``relay`` (forgotten afterwards: the allocation has ended)."""
        return self._calls.pop(relay, None)
