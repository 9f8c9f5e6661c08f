"""Call detail records in SQLite: a call row in ``cdr_calls``, a row per leg in ``cdr_legs``.

The schema is DESIGN.md's ("Contract details" → CDRs) plus ``cdr_calls.transfer`` and
``cdr_calls.legs`` and ``cdr_legs.sip_call_id``; ``turn_usage`` is created here too so that the
schema is whole, and is written by the TURN server (``turn_usage``: one row per ended
allocation, queued like the rest and written by the same flushes). Times are UTC epoch seconds
(REAL).
Schema version 1 (``PRAGMA user_version``); creating it is idempotent.

The recording methods (``call_started``, ``leg_*``, ``call_answered``, ``call_ended``) only update
records in memory, so they never touch the disk from the reactor; ``flush`` writes everything
queued in one transaction (``executemany`` of UPSERTs), which at 1,000 calls/s and a flush every
0.2 s is a few hundred rows per transaction. The app calls ``flush`` every 0.2 s and at answer
events; ``close`` flushes a last time.

Durability (what a gateway killed mid-call loses):
- A call is held in memory until it is answered or ends. An answered call is queued at once and
  written by the next flush (with its legs so far), and a call that ends is queued for its final
  row; a call that is never answered (rejected, failed, cancelled) still gets that final row.
- A gateway killed (SIGKILL, crash) loses at most what was queued since the last flush: the
  calls still ringing, and the changes since that flush. An answered call is durable from the
  flush after its answer: the database is in WAL mode and a committed transaction is in the
  WAL file, which the next open of the database reads, so its row is there with ``answered``
  set and ``ended`` NULL. With ``synchronous=NORMAL`` a commit is not fsynced (checkpoints
  are), so a power loss or OS crash, unlike a process kill, may also roll back the last few
  flushes; the database itself stays consistent.
- A flush never raises a database error: it is logged (with the path, the number of calls and
  rows, the error) and the queue is kept for the next flush. While the database stays
  unwritable, calls that have ended keep queuing up to ``max_pending`` rows; past it the oldest
  ended calls are dropped and counted in ``dropped``. Calls still in progress are never dropped
  (they are in memory anyway, bounded by the gateway's concurrent calls).

Invariants:
- A call row is written only from a complete in-memory record and only ever with UPSERTs that
  keep a stored value where the new one is NULL (``COALESCE``), so a row written at answer is
  completed at the end and never loses a field.
- Leg events that arrive for a call that is unknown (already ended and written, or not started
  yet) are still recorded, as leg rows of that call at the next flush.
- Recording methods validate their arguments (raising ``ValueError``/``TypeError`` on a bug in
  the caller), so a queued row can never make a flush fail.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

__all__ = [
    "CALL_COLUMNS",
    "DEFAULT_MAX_PENDING",
    "DIRECTIONS",
    "LEG_COLUMNS",
    "RELEASE_SIDES",
    "SCHEMA_VERSION",
    "TURN_USAGE_COLUMNS",
    "CdrStore",
]

log = logging.getLogger("gateway.store.cdr")

SCHEMA_VERSION: Final = 3
#: Rows of ended calls kept while the database is unwritable before the oldest are dropped.
DEFAULT_MAX_PENDING: Final = 100_000
#: Seconds a flush waits for another writer's lock (it runs on the reactor thread).
DEFAULT_BUSY_TIMEOUT: Final = 0.1

RELEASE_SIDES: Final = frozenset({"caller", "callee", "gateway", "app"})
DIRECTIONS: Final = frozenset({"in", "out"})

CALL_COLUMNS: Final = (
    "call_id",
    "caller",
    "callee",
    "trunk_in",
    "trunk_out",
    "started",
    "answered",
    "ended",
    "duration",
    "status",
    "release_side",
    "reason",
    "transfer",
    "legs",
    "app_call",
    "operations",
)
LEG_COLUMNS: Final = (
    "call_id",
    "leg_id",
    "direction",
    "trunk",
    "remote_uri",
    "started",
    "answered",
    "ended",
    "status",
    "codec",
    "packets_in",
    "packets_out",
    "lost",
    "jitter_ms",
    "mos",
    "sip_call_id",
    "bytes_in",
    "bytes_out",
    "rtt_ms",
    "srtp",
)
TURN_USAGE_COLUMNS: Final = (
    "username",
    "relay",
    "client",
    "transport",
    "started",
    "ended",
    "bytes_in",
    "bytes_out",
    "packets_in",
    "packets_out",
    "call_id",
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS cdr_calls (
    call_id TEXT PRIMARY KEY,
    caller TEXT,
    callee TEXT,
    trunk_in TEXT,
    trunk_out TEXT,
    started REAL,
    answered REAL,
    ended REAL,
    duration REAL,
    status INTEGER,
    release_side TEXT,
    reason TEXT,
    transfer TEXT,
    legs INTEGER,
    app_call TEXT,
    operations TEXT
);
CREATE INDEX IF NOT EXISTS cdr_calls_started ON cdr_calls (started);
CREATE TABLE IF NOT EXISTS cdr_legs (
    call_id TEXT NOT NULL,
    leg_id TEXT NOT NULL,
    direction TEXT,
    trunk TEXT,
    remote_uri TEXT,
    started REAL,
    answered REAL,
    ended REAL,
    status INTEGER,
    codec TEXT,
    packets_in INTEGER,
    packets_out INTEGER,
    lost INTEGER,
    jitter_ms REAL,
    mos REAL,
    sip_call_id TEXT,
    bytes_in INTEGER,
    bytes_out INTEGER,
    rtt_ms REAL,
    srtp TEXT,
    PRIMARY KEY (call_id, leg_id)
);
CREATE TABLE IF NOT EXISTS turn_usage (
    username TEXT,
    relay TEXT,
    client TEXT,
    transport TEXT,
    started REAL,
    ended REAL,
    bytes_in INTEGER,
    bytes_out INTEGER,
    packets_in INTEGER,
    packets_out INTEGER,
    call_id TEXT
);
"""

# leg_ended's media keywords and the types each accepts (None is always accepted).
_MEDIA_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "codec": (str,),
    "packets_in": (int,),
    "packets_out": (int,),
    "lost": (int,),
    "jitter_ms": (int, float),
    "mos": (int, float),
    "bytes_in": (int,),
    "bytes_out": (int,),
    "rtt_ms": (int, float),
    "srtp": (str,),
}
# Columns added to cdr_legs after schema version 1 (ALTER TABLE on an older database).
_LEG_COLUMNS_V2: Final = (
    ("bytes_in", "INTEGER"), ("bytes_out", "INTEGER"), ("rtt_ms", "REAL"), ("srtp", "TEXT"),
)
# Columns added to cdr_calls after schema version 2: the REST callConnectionId of an app call
# and the app's operations on it ("op@seconds-after-start" separated by spaces).
_CALL_COLUMNS_V3: Final = (("app_call", "TEXT"), ("operations", "TEXT"))
#: Operations recorded per call at most (the rest are counted as "+N").
MAX_OPERATIONS: Final = 200


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """An INSERT that, on a key conflict, updates each column unless the new value is NULL."""
    updates = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_CALL_UPSERT: Final = _upsert("cdr_calls", CALL_COLUMNS, ("call_id",))
_TURN_INSERT: Final = (
    f"INSERT INTO turn_usage ({', '.join(TURN_USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TURN_USAGE_COLUMNS))})"
)
# turn_usage columns and the types each accepts (None only for call_id).
_TURN_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "username": (str,),
    "relay": (str,),
    "client": (str,),
    "transport": (str,),
    "started": (int, float),
    "ended": (int, float),
    "bytes_in": (int,),
    "bytes_out": (int,),
    "packets_in": (int,),
    "packets_out": (int,),
    "call_id": (str, type(None)),
}
_LEG_UPSERT: Final = _upsert("cdr_legs", LEG_COLUMNS, ("call_id", "leg_id"))

_Row: TypeAlias = tuple[str | float | int | None, ...]


@dataclass(slots=True)
class _Leg:
    leg_id: str
    direction: str | None = None
    trunk: str | None = None
    remote_uri: str | None = None
    started: float | None = None
    answered: float | None = None
    ended: float | None = None
    status: int | None = None
    codec: str | None = None
    packets_in: int | None = None
    packets_out: int | None = None
    lost: int | None = None
    jitter_ms: float | None = None
    mos: float | None = None
    sip_call_id: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    rtt_ms: float | None = None
    srtp: str | None = None

    def row(self, call_id: str) -> _Row:
        """The values of LEG_COLUMNS, in order."""
        return (
            call_id,
            self.leg_id,
            self.direction,
            self.trunk,
            self.remote_uri,
            self.started,
            self.answered,
            self.ended,
            self.status,
            self.codec,
            self.packets_in,
            self.packets_out,
            self.lost,
            self.jitter_ms,
            self.mos,
            self.sip_call_id,
            self.bytes_in,
            self.bytes_out,
            self.rtt_ms,
            self.srtp,
        )


@dataclass(slots=True)
class _Call:
    call_id: str
    # False: a holder of leg events for a call this store has no call record of (its row was
    # written and forgotten, or call_started has not come yet); only its legs are written.
    known: bool
    caller: str | None = None
    callee: str | None = None
    trunk_in: str | None = None
    trunk_out: str | None = None
    started: float | None = None
    answered: float | None = None
    ended: float | None = None
    duration: float | None = None
    status: int | None = None
    release_side: str | None = None
    reason: str | None = None
    transfer: str | None = None
    legs: dict[str, _Leg] = field(default_factory=dict)
    app_call: str | None = None
    operations: list[str] | None = None
    operations_dropped: int = 0

    @property
    def final(self) -> bool:
        """True once nothing but late leg events can change the record."""
        return self.ended is not None or not self.known

    @property
    def rows(self) -> int:
        return int(self.known) + len(self.legs)

    def row(self) -> _Row:
        """The values of CALL_COLUMNS, in order."""
        return (
            self.call_id,
            self.caller,
            self.callee,
            self.trunk_in,
            self.trunk_out,
            self.started,
            self.answered,
            self.ended,
            self.duration,
            self.status,
            self.release_side,
            self.reason,
            self.transfer,
            len(self.legs),
            self.app_call,
            self._operations(),
        )

    def _operations(self) -> str | None:
        if self.operations is None:
            return None
        more = f" +{self.operations_dropped}" if self.operations_dropped else ""
        return " ".join(self.operations) + more


class CdrStore:
    """CDRs of one SQLite database: record call events in memory, `flush` them in batches.

    Not thread-safe: use it from the reactor thread only. `read_only=True` opens an existing
    database for `last` only (SQLite URI ``mode=ro``; no directory, file or schema is created)
    and raises `sqlite3.Error` if it cannot be opened; a writable store never raises for the
    database, it logs and retries at each flush.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        max_pending: int = DEFAULT_MAX_PENDING,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        """Open (creating the parent directories, the file and the schema) the database `path`."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.path = Path(path)
        self.read_only = read_only
        self.max_pending = max_pending
        #: Records dropped unwritten because the queue was full: ended calls (a CDR with its
        #: legs) and late leg updates of calls already written.
        self.dropped = 0
        self._busy_timeout = busy_timeout
        self._calls: dict[str, _Call] = {}  # every record in memory, by call_id
        self._dirty: dict[str, None] = {}  # call_ids the next flush writes, oldest first
        self._final: dict[str, None] = {}  # queued final records, oldest first (droppable)
        self._final_rows = 0
        self._turn: list[_Row] = []  # turn_usage rows the next flush inserts, oldest first
        self._failures = 0  # failed attempts (open or flush) in a row
        self._dropping = False  # dropped records since the last successful flush
        self._closed = False
        self._db: sqlite3.Connection | None = None
        if read_only:
            self._db = self._connect_read_only()
            return
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._failures = 1
            log.error(
                "cdr: cannot open %s: %s (recording in memory, retrying at each flush)",
                self.path,
                exc,
            )

    # --- recording (in memory only) ------------------------------------------------------------

    def call_started(
        self, call_id: str, caller: str, callee: str, trunk_in: str | None, started: float
    ) -> None:
        """A call arrived; it is kept in memory until it is answered or ends."""
        _check_id("call_id", call_id)
        _check_text(caller=caller, callee=callee, trunk_in=trunk_in)
        call = self._calls.get(call_id)
        if call is not None and call.known:
            log.warning("cdr: call_id=%s started twice; the first start is kept", call_id)
            return
        if call is None:
            call = self._calls[call_id] = _Call(call_id, known=True)
        else:  # leg events came first: the holder becomes the call's record, unqueued
            self._unqueue_final(call)
            self._dirty.pop(call_id, None)
            call.known = True
        call.caller, call.callee, call.trunk_in = caller, callee, trunk_in
        call.started = float(started)

    def leg_started(
        self,
        call_id: str,
        leg_id: str,
        direction: str,
        trunk: str | None,
        remote_uri: str,
        started: float,
        sip_call_id: str,
    ) -> None:
        """A leg (one SIP dialog) of the call began: `direction` "in" (from the caller) or "out"."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        _check_text(trunk=trunk, remote_uri=remote_uri, sip_call_id=sip_call_id)
        call, leg = self._leg(call_id, leg_id)
        leg.direction, leg.trunk, leg.remote_uri = direction, trunk, remote_uri
        leg.started, leg.sip_call_id = float(started), sip_call_id
        self._touch(call)

    def leg_answered(self, call_id: str, leg_id: str, answered: float) -> None:
        """The leg's dialog was answered (2xx)."""
        call, leg = self._leg(call_id, leg_id)
        leg.answered = float(answered)
        self._touch(call)

    def leg_ended(
        self, call_id: str, leg_id: str, ended: float, status: int | None, **media: object
    ) -> None:
        """The leg ended with its final SIP `status` (None: none was sent or received).

        `media` holds the leg's media statistics, each optional: codec (str), packets_in,
        packets_out, lost, bytes_in, bytes_out (int), jitter_ms, mos, rtt_ms (float), srtp
        (str: the SDES suite, or None for plain RTP).
        """
        for name, value in media.items():
            kinds = _MEDIA_FIELDS.get(name)
            if kinds is None:
                raise TypeError(f"leg_ended() got an unexpected media keyword {name!r}")
            if value is not None and not isinstance(value, kinds):
                raise TypeError(f"leg_ended() media {name} must be {kinds[0].__name__}")
        _check_status(status)
        call, leg = self._leg(call_id, leg_id)
        leg.ended, leg.status = float(ended), status
        for name, value in media.items():
            if isinstance(value, int) and _MEDIA_FIELDS[name][-1] is float:
                value = float(value)
            setattr(leg, name, value)
        self._touch(call)

    def app_operation(self, call_id: str, app_call: str, operation: str, at: float) -> None:
        """The REST app acted on the call (``operation``, e.g. "play"), ``at`` (epoch s)."""
        _check_text(app_call=app_call, operation=operation)
        call = self._known_call(call_id, "app_operation")
        if call is None:
            return
        call.app_call = app_call
        if call.operations is None:
            call.operations = []
        if len(call.operations) >= MAX_OPERATIONS:
            call.operations_dropped += 1
            return
        offset = max(0.0, at - (call.started or at))
        call.operations.append(f"{operation}@{offset:.1f}")

    def call_answered(self, call_id: str, answered: float, trunk_out: str | None) -> None:
        """The call was answered: queued at once, so the next flush makes it durable."""
        _check_text(trunk_out=trunk_out)
        call = self._known_call(call_id, "call_answered")
        if call is None:
            return
        if call.answered is not None or call.ended is not None:
            log.debug("cdr: call_id=%s answered again or after its end; ignored", call_id)
            return
        call.answered, call.trunk_out = float(answered), trunk_out
        self._touch(call)

    def call_ended(
        self,
        call_id: str,
        ended: float,
        status: int | None,
        release_side: str,
        reason: str | None,
        transfer: str | None = None,
    ) -> None:
        """The call ended: its final row is queued; duration is ended - answered (0 unanswered).

        `release_side` is "caller", "callee" or "gateway"; `status` the call's final SIP status.
        """
        if release_side not in RELEASE_SIDES:
            raise ValueError(
                f"release_side must be one of {sorted(RELEASE_SIDES)}, not {release_side!r}"
            )
        _check_status(status)
        _check_text(reason=reason, transfer=transfer)
        call = self._known_call(call_id, "call_ended")
        if call is None:
            return
        if call.ended is not None:
            log.warning("cdr: call_id=%s ended twice; the first end is kept", call_id)
            return
        call.ended = float(ended)
        call.duration = max(0.0, call.ended - call.answered) if call.answered is not None else 0.0
        call.status, call.release_side, call.reason = status, release_side, reason
        call.transfer = transfer
        self._touch(call)

    def turn_usage(self, row: Mapping[str, str | float | int | None]) -> None:
        """An ended TURN allocation: ``row`` has the TURN_USAGE_COLUMNS (``call_id`` may be
        absent or None; other keys are ignored, e.g. ``TurnUsage.row()``'s). Queued for the next
        flush; beyond ``max_pending`` queued rows the oldest is dropped (counted in ``dropped``).
        """
        values: list[str | float | int | None] = []
        for name, kinds in _TURN_TYPES.items():
            value = row.get(name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise TypeError(f"turn_usage {name} must be {kinds[0].__name__}, not {value!r}")
            if name in ("started", "ended") and isinstance(value, int):
                value = float(value)
            values.append(value)
        self._turn.append(tuple(values))
        if len(self._turn) > self.max_pending:
            del self._turn[0]
            self.dropped += 1
            if not self._dropping:
                log.error("cdr: queue for %s full: dropped a turn_usage row", self.path)
            self._dropping = True

    # --- writing -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows (calls, legs and TURN usage) the next flush writes."""
        return sum(self._calls[call_id].rows for call_id in self._dirty) + len(self._turn)

    def flush(self) -> int:
        """Write everything queued in one transaction; return the rows written (0 on failure).

        Never raises a database error: a failure is logged and the queue kept for the next
        flush (see the module docstring for how it stays bounded).
        """
        if not self._dirty and not self._turn:
            return 0
        if self._closed or self.read_only:
            log.error(
                "cdr: flush of a closed or read-only store: %d rows for %s not written",
                self.pending,
                self.path,
            )
            return 0
        calls = [self._calls[call_id] for call_id in self._dirty]
        call_rows = [call.row() for call in calls if call.known]
        leg_rows = [leg.row(call.call_id) for call in calls for leg in call.legs.values()]
        turn_rows = self._turn
        try:
            if self._db is None:
                self._db = self._connect()
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_CALL_UPSERT, call_rows)
            self._db.executemany(_LEG_UPSERT, leg_rows)
            self._db.executemany(_TURN_INSERT, turn_rows)
            self._db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._write_failed(exc, calls, len(call_rows) + len(leg_rows) + len(turn_rows))
            return 0
        if self._failures:
            log.warning(
                "cdr: writing %s again after %d failed attempts (%d calls dropped)",
                self.path,
                self._failures,
                self.dropped,
            )
            self._failures = 0
        self._dropping = False
        for call in calls:
            if call.final:
                del self._calls[call.call_id]
        self._dirty.clear()
        self._final.clear()
        self._final_rows = 0
        self._turn = []
        return len(call_rows) + len(leg_rows) + len(turn_rows)

    def close(self) -> None:
        """Flush, then close the database."""
        if self._closed:
            return
        if not self.read_only and self.flush() == 0 and self._dirty:
            log.error("cdr: closing %s with %d rows unwritten", self.path, self.pending)
        self._closed = True
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- reading -------------------------------------------------------------------------------

    def last(self, n: int) -> list[dict[str, object]]:
        """The newest `n` calls in the database (not the queue), by `started` descending.

        Each is a dict of the cdr_calls columns, except that "legs" (the column holds the number
        of legs) is the list of its legs' dicts (the cdr_legs columns), by `started`. Raises
        `sqlite3.Error` (or `OSError`) if the database cannot be read.
        """
        if n <= 0:
            return []
        if self._db is None:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed CdrStore.")
            self._db = self._connect_read_only() if self.read_only else self._connect()
        db = self._db
        newest = "SELECT call_id FROM cdr_calls ORDER BY started DESC, call_id DESC LIMIT ?"
        db.execute("BEGIN")  # one snapshot for both queries
        try:
            calls = _dicts(
                db.execute(
                    f"SELECT * FROM cdr_calls WHERE call_id IN ({newest}) "
                    "ORDER BY started DESC, call_id DESC",
                    (n,),
                )
            )
            legs = _dicts(
                db.execute(
                    f"SELECT * FROM cdr_legs WHERE call_id IN ({newest}) ORDER BY started, leg_id",
                    (n,),
                )
            )
        finally:
            db.execute("COMMIT")
        by_call: dict[object, list[dict[str, object]]] = {call["call_id"]: [] for call in calls}
        for leg in legs:
            by_call[leg["call_id"]].append(leg)
        for call in calls:
            call["legs"] = by_call[call["call_id"]]
        return calls

    # --- internals -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("cdr: %s is in journal mode %s, not WAL", self.path, mode)
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                log.warning(
                    "cdr: %s has schema version %d, newer than %d",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
            bump = f"PRAGMA user_version = {SCHEMA_VERSION};" if version < SCHEMA_VERSION else ""
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {bump} COMMIT;")
            have = {row[1] for row in db.execute("PRAGMA table_info(cdr_legs)")}
            for name, kind in _LEG_COLUMNS_V2:
                if name not in have:  # a version 1 database: add the media columns
                    db.execute(f"ALTER TABLE cdr_legs ADD COLUMN {name} {kind}")
            have = {row[1] for row in db.execute("PRAGMA table_info(cdr_calls)")}
            for name, kind in _CALL_COLUMNS_V3:
                if name not in have:  # a version 1 or 2 database: add the app columns
                    db.execute(f"ALTER TABLE cdr_calls ADD COLUMN {name} {kind}")
        except BaseException:
            db.close()
            raise
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, isolation_level=None)

    def _write_failed(self, exc: BaseException, calls: list[_Call], rows: int) -> None:
        if self._db is not None:  # reopened at the next flush: the file may have been replaced
            self._db.close()
            self._db = None
        self._failures += 1
        level = logging.ERROR if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "cdr: cannot write %s: %s (%d calls, %d rows queued from call_id=%s; "
            "%d failed attempts, %d calls dropped; retrying at each flush)",
            self.path,
            exc,
            len(calls),
            rows,
            calls[0].call_id if calls else "(none, TURN usage only)",
            self._failures,
            self.dropped,
        )

    def _leg(self, call_id: str, leg_id: str) -> tuple[_Call, _Leg]:
        _check_id("call_id", call_id)
        _check_id("leg_id", leg_id)
        call = self._calls.get(call_id)
        if call is None:  # already written and forgotten, or not started yet
            log.debug("cdr: call_id=%s leg_id=%s: leg event for an unknown call", call_id, leg_id)
            call = self._calls[call_id] = _Call(call_id, known=False)
        leg = call.legs.get(leg_id)
        if leg is None:
            leg = call.legs[leg_id] = _Leg(leg_id)
            if call.call_id in self._final:
                self._final_rows += 1
        return call, leg

    def _known_call(self, call_id: str, event: str) -> _Call | None:
        call = self._calls.get(call_id)
        if call is None or not call.known:
            log.warning("cdr: call_id=%s: %s for a call never started; ignored", call_id, event)
            return None
        return call

    def _touch(self, call: _Call) -> None:
        """Queue `call` if it is answered or final (a ringing call stays in memory only)."""
        if call.answered is None and not call.final:
            return
        self._dirty[call.call_id] = None
        if call.final and call.call_id not in self._final:
            self._final[call.call_id] = None
            self._final_rows += call.rows
            while self._final_rows > self.max_pending:
                self._drop_oldest()

    def _unqueue_final(self, call: _Call) -> None:
        if call.call_id in self._final:
            del self._final[call.call_id]
            self._final_rows -= call.rows

    def _drop_oldest(self) -> None:
        call_id = next(iter(self._final))
        call = self._calls.pop(call_id)
        self._unqueue_final(call)
        self._dirty.pop(call_id, None)
        self.dropped += 1
        level = logging.DEBUG if self._dropping else logging.ERROR
        self._dropping = True
        log.log(
            level,
            "cdr: queue for %s full (%d rows): dropped call_id=%s (%d calls dropped)",
            self.path,
            self.max_pending,
            call_id,
            self.dropped,
        )


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")


def _check_text(**values: str | None) -> None:
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None, not {value!r}")


def _check_status(status: int | None) -> None:
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        raise TypeError(f"status must be an int or None, not {status!r}")


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, object]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
