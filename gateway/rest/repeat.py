"""Repeatable requests (ACS_REST.md section 3; OASIS Repeatable Requests 1.0), sans I/O.

The SDK puts ``Repeatability-Request-ID`` (a UUID) and ``Repeatability-First-Sent``
(IMF-fixdate) on the POSTs that start something (create, answer, add participant, transfer...),
once per request object, so its automatic retries (POST on 500/503/504) carry the same pair. The
store makes such a retry harmless:

| Request-ID / First-Sent            | result                                             |
|------------------------------------|----------------------------------------------------|
| either malformed, or only one sent | 400 (8523)                                         |
| First-Sent older than the window   | 412                                                |
| new                                | execute, then :meth:`RepeatStore.finish` stores it |
| seen, different request            | 400 (8523)                                         |
| seen, same request, still running  | 409 (8519)                                         |
| seen, same request, answered < 500 | the stored answer, replayed byte for byte          |
| seen, same request, answered 5xx   | executed again (5xx answers are not stored)        |

"Same request" means the same SHA-256 of method, path (without the query, which only carries
api-version) and raw body. Invariants: an ID is remembered for `window` seconds from when it was
first seen; memory is bounded by an entry count and a byte count, the oldest entries going first
when either is exceeded; time is only ever the `now` passed in.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, NamedTuple

from gateway.rest.errors import RestError
from gateway.rest.hmac import parse_http_date

__all__ = ["Answer", "RepeatStore", "Ticket"]

#: How long a Request-ID is tracked, in seconds (ACS: 5 minutes).
WINDOW: Final = 300.0
MAX_ENTRIES: Final = 50_000
MAX_BYTES: Final = 64 * 1024 * 1024
_ENTRY_OVERHEAD: Final = 256  # rough bytes per entry besides the stored body and headers
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Answer(NamedTuple):
    """A complete HTTP answer as sent: status, headers to repeat, raw body.

    Tuples of numbers, strings and bytes only (here and in ``_Entry``): CPython stops tracking
    such tuples in its cyclic collector, so the store's tens of thousands of entries (5
    minutes of requests) add nothing to the full collections' pauses.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Ticket:
    """What :meth:`RepeatStore.begin` decided for a request carrying the headers.

    `replay` is the stored answer to send again, or None: execute the request, then pass its
    answer to :meth:`RepeatStore.finish` with this ticket.
    """

    request_id: str
    fingerprint: bytes
    replay: Answer | None


class _Entry(NamedTuple):
    fingerprint: bytes
    expires: float
    answer: Answer | None  # None while the original is still running
    size: int


class RepeatStore:
    """Request-ID -> (request fingerprint, answer), for `window` seconds."""

    def __init__(
        self, window: float = WINDOW, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._bytes = 0
        self.replayed = 0  # answers sent again
        self.evicted = 0  # live entries dropped to stay within the caps

    def __len__(self) -> int:
        return len(self._entries)

    def begin(
        self,
        request_id: str | None,
        first_sent: str | None,
        method: str,
        path: str,
        body: bytes,
        now: float,
        client_now: float | None = None,
    ) -> Ticket | None:
        """Decide about a request; None when it carries neither header (no repeatability).

        `client_now` is the request's own (verified) ``x-ms-date`` if known: the age of
        First-Sent is then measured on the client's clock, so a client whose clock is a few
        minutes off the server's is not refused. Raises RestError (400, 409, 412) per the table.
        """
        if request_id is None and first_sent is None:
            return None
        if request_id is None or first_sent is None:
            missing = (
                "Repeatability-Request-ID" if request_id is None else "Repeatability-First-Sent"
            )
            raise RestError(400, "8523", f"{missing} is required with the other header.")
        request_id = request_id.strip()
        if not _UUID.fullmatch(request_id):
            raise RestError(
                400, "8523", f"Repeatability-Request-ID {request_id[:64]!r} is not a UUID."
            )
        sent = parse_http_date(first_sent)
        if sent is None:
            raise RestError(
                400, "8523", f"Repeatability-First-Sent {first_sent[:64]!r} is not an HTTP date."
            )
        age = (now if client_now is None else client_now) - sent
        if age > self.window:
            raise RestError(
                412,
                "PreconditionFailed",
                f"Repeatability-First-Sent is {age:.0f} s old, beyond the {self.window:.0f} s "
                "repeatability window.",
            )
        if age < -self.window:
            raise RestError(400, "8523", "Repeatability-First-Sent is in the future.")
        self._expire(now)
        key = request_id.lower()
        fingerprint = _fingerprint(method, path, body)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise RestError(
                    400,
                    "8523",
                    f"Repeatability-Request-ID {request_id} was already used for a different "
                    "request.",
                )
            if entry.answer is None:
                raise RestError(409, "8519", f"The request {request_id} is still being processed.")
            self.replayed += 1
            return Ticket(key, fingerprint, entry.answer)
        self._entries[key] = _Entry(fingerprint, now + self.window, None, _ENTRY_OVERHEAD)
        self._bytes += _ENTRY_OVERHEAD
        self._enforce_caps()
        return Ticket(key, fingerprint, None)

    def finish(self, ticket: Ticket, answer: Answer) -> None:
        """Record the answer to an executed request; a 5xx answer forgets the ID instead."""
        if ticket.replay is not None:
            return
        entry = self._entries.get(ticket.request_id)
        if entry is None or entry.answer is not None or entry.fingerprint != ticket.fingerprint:
            return  # expired or evicted meanwhile: nothing to replay later
        if answer.status >= 500:
            self._drop(ticket.request_id)
            return
        size = _ENTRY_OVERHEAD + len(answer.body) + sum(len(n) + len(v) for n, v in answer.headers)
        self._bytes += size - entry.size
        self._entries[ticket.request_id] = entry._replace(size=size, answer=answer)
        self._enforce_caps()

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            self._drop(key)

    def _enforce_caps(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
            self.evicted += 1

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size


def _fingerprint(method: str, path: str, body: bytes) -> bytes:
    digest = hashlib.sha256(f"{method.upper()}\n{path}\n".encode())
    digest.update(body)
    return digest.digest()
