"""gateway.store.cdr: schema, batched UPSERTs, durability across a kill, failure handling, rate."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.store.cdr import SCHEMA_VERSION, CdrStore

REPO = Path(__file__).resolve().parents[2]
LOGGER = "gateway.store.cdr"

# DESIGN.md "Contract details" → CDRs and TURN, then the columns this store adds.
DESIGN_CALL_COLUMNS = [
    "call_id", "caller", "callee", "trunk_in", "trunk_out", "started", "answered", "ended",
    "duration", "status", "release_side", "reason",
]  # fmt: skip
DESIGN_LEG_COLUMNS = [
    "call_id", "leg_id", "direction", "trunk", "remote_uri", "started", "answered", "ended",
    "status", "codec", "packets_in", "packets_out", "lost", "jitter_ms", "mos",
]  # fmt: skip
DESIGN_TURN_COLUMNS = [
    "username", "relay", "client", "transport", "started", "ended", "bytes_in", "bytes_out",
    "packets_in", "packets_out", "call_id",
]  # fmt: skip


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "cdr.sqlite3"


def start_call(store: CdrStore, call_id: str, started: float = 1000.0) -> None:
    """A call from carrier-a with its inbound leg "a" and outbound leg "b" (not answered)."""
    store.call_started(call_id, "+15551230001", "+15559870001", "carrier-a", started)
    store.leg_started(
        call_id, "a", "in", "carrier-a", "sip:+15551230001@10.0.0.1", started, f"{call_id}-a"
    )
    store.leg_started(
        call_id,
        "b",
        "out",
        "carrier-b",
        "sip:+15559870001@10.0.0.2",
        started + 0.01,
        f"{call_id}-b",
    )


def answer_call(store: CdrStore, call_id: str, answered: float) -> None:
    store.leg_answered(call_id, "b", answered)
    store.leg_answered(call_id, "a", answered)
    store.call_answered(call_id, answered, "carrier-b")


def end_call(store: CdrStore, call_id: str, ended: float) -> None:
    media = {"codec": "PCMU", "packets_in": 500, "packets_out": 498, "lost": 2}
    store.leg_ended(call_id, "a", ended, 200, jitter_ms=3.5, mos=4.3, **media)
    store.leg_ended(call_id, "b", ended, 200, jitter_ms=1, mos=4, **media)
    store.call_ended(call_id, ended, 200, "caller", "BYE")


def rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


# --- schema ------------------------------------------------------------------------------------


def test_schema_has_the_design_columns(db_path: Path) -> None:
    CdrStore(db_path).close()
    with sqlite3.connect(db_path) as db:
        info = {
            table: db.execute(f"PRAGMA table_info({table})").fetchall()
            for table in ("cdr_calls", "cdr_legs", "turn_usage")
        }
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = db.execute("PRAGMA index_list(cdr_calls)").fetchall()
        started_index = [row[1] for row in indexes if not row[1].startswith("sqlite_autoindex")]
        assert [db.execute(f"PRAGMA index_info({name})").fetchall() for name in started_index] == [
            [(0, 5, "started")]
        ]

    def columns(table: str) -> list[str]:
        return [row[1] for row in info[table]]

    assert columns("cdr_calls") == [
        *DESIGN_CALL_COLUMNS, "transfer", "legs", "app_call", "operations"
    ]
    assert columns("cdr_legs") == [
        *DESIGN_LEG_COLUMNS, "sip_call_id", "bytes_in", "bytes_out", "rtt_ms", "srtp"
    ]
    assert columns("turn_usage") == DESIGN_TURN_COLUMNS
    types = {row[1]: row[2] for row in info["cdr_calls"]}
    assert [types[c] for c in ("call_id", "started", "duration", "status")] == [
        "TEXT",
        "REAL",
        "REAL",
        "INTEGER",
    ]
    assert [row[1] for row in info["cdr_calls"] if row[5]] == ["call_id"]  # primary key
    assert [row[1] for row in sorted(info["cdr_legs"], key=lambda r: r[5]) if row[5]] == [
        "call_id",
        "leg_id",
    ]


def test_reopen_is_idempotent(db_path: Path) -> None:
    store = CdrStore(db_path)
    start_call(store, "c1")
    end_call(store, "c1", 1001.0)
    store.close()
    schema = rows(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    again, also = CdrStore(db_path), CdrStore(db_path)  # twice, and while the other is open
    assert rows(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema
    assert [call["call_id"] for call in again.last(5)] == ["c1"]
    assert rows(db_path, "PRAGMA user_version") == [(3,)]
    again.close()
    also.close()


# --- what is written when ----------------------------------------------------------------------


def test_answered_call_row_at_answer_completed_at_end(db_path: Path) -> None:
    store = CdrStore(db_path)
    start_call(store, "c1", started=1000.0)
    assert (store.pending, store.flush()) == (0, 0)  # ringing: in memory only
    assert rows(db_path, "SELECT count(*) FROM cdr_calls") == [(0,)]

    answer_call(store, "c1", 1002.5)
    assert store.pending == 3
    assert store.flush() == 3  # the call and its two legs so far
    assert rows(db_path, "SELECT answered, ended, duration, trunk_out, legs FROM cdr_calls") == [
        (1002.5, None, None, "carrier-b", 2)
    ]
    assert store.flush() == 0

    end_call(store, "c1", 1062.75)
    assert store.flush() == 3
    (call,) = store.last(1)
    legs = call.pop("legs")
    assert call == {
        "call_id": "c1",
        "caller": "+15551230001",
        "callee": "+15559870001",
        "trunk_in": "carrier-a",
        "trunk_out": "carrier-b",
        "started": 1000.0,
        "answered": 1002.5,
        "ended": 1062.75,
        "duration": 60.25,
        "status": 200,
        "release_side": "caller",
        "reason": "BYE",
        "transfer": None,
        "app_call": None,
        "operations": None,
    }  # "legs" is the list of leg dicts; the stored count is the `legs` column
    assert legs == [
        {
            "call_id": "c1",
            "leg_id": "a",
            "direction": "in",
            "trunk": "carrier-a",
            "remote_uri": "sip:+15551230001@10.0.0.1",
            "started": 1000.0,
            "answered": 1002.5,
            "ended": 1062.75,
            "status": 200,
            "codec": "PCMU",
            "packets_in": 500,
            "packets_out": 498,
            "lost": 2,
            "jitter_ms": 3.5,
            "mos": 4.3,
            "sip_call_id": "c1-a",
            "bytes_in": None,
            "bytes_out": None,
            "rtt_ms": None,
            "srtp": None,
        },
        {
            "call_id": "c1",
            "leg_id": "b",
            "direction": "out",
            "trunk": "carrier-b",
            "remote_uri": "sip:+15559870001@10.0.0.2",
            "started": 1000.01,
            "answered": 1002.5,
            "ended": 1062.75,
            "status": 200,
            "codec": "PCMU",
            "packets_in": 500,
            "packets_out": 498,
            "lost": 2,
            "jitter_ms": 1.0,
            "mos": 4.0,
            "sip_call_id": "c1-b",
            "bytes_in": None,
            "bytes_out": None,
            "rtt_ms": None,
            "srtp": None,
        },
    ]
    assert store.pending == 0
    store.close()


@pytest.mark.parametrize(
    ("status", "side", "reason"),
    [(486, "callee", "Busy Here"), (487, "caller", "CANCEL"), (503, "gateway", "no route")],
)
def test_unanswered_call_gets_one_row(db_path: Path, status: int, side: str, reason: str) -> None:
    store = CdrStore(db_path)
    start_call(store, "c1")
    store.leg_ended("c1", "b", 1004.0, status)
    store.leg_ended("c1", "a", 1004.0, status)
    store.call_ended("c1", 1004.0, status, side, reason)
    assert store.flush() == 3
    assert rows(db_path, "SELECT answered, ended, duration, status, release_side, reason FROM "
                "cdr_calls") == [(None, 1004.0, 0.0, status, side, reason)]  # fmt: skip
    assert rows(
        db_path, "SELECT leg_id, answered, status, codec FROM cdr_legs ORDER BY leg_id"
    ) == [
        ("a", None, status, None),
        ("b", None, status, None),
    ]
    store.close()


def test_transfer_and_late_leg_events(db_path: Path) -> None:
    store = CdrStore(db_path)
    start_call(store, "c1")
    answer_call(store, "c1", 1001.0)
    store.flush()
    store.leg_ended("c1", "b", 1005.0, 200)  # after answer: queued for the next flush
    store.leg_started("c1", "c", "out", "carrier-b", "sip:+15550001111@10.0.0.3", 1005.0, "c1-c")
    assert store.pending == 4
    store.call_ended("c1", 1009.0, 200, "caller", "BYE", transfer="blind to +15550001111")
    assert store.flush() == 4
    # The leg's final statistics arrive after the call was written and forgotten.
    store.leg_ended("c1", "c", 1009.5, 200, codec="PCMA", packets_in=10, mos=4.1)
    assert store.flush() == 1
    (call,) = store.last(1)
    assert (call["transfer"], call["duration"]) == ("blind to +15550001111", 8.0)
    assert rows(db_path, "SELECT legs FROM cdr_calls") == [(3,)]
    legs = call["legs"]
    assert isinstance(legs, list)
    assert [(leg["leg_id"], leg["direction"], leg["ended"], leg["codec"]) for leg in legs] == [
        ("a", "in", None, None),
        ("b", "out", 1005.0, None),
        ("c", "out", 1009.5, "PCMA"),  # merged into the row written at the end, not replacing it
    ]
    store.close()


def test_last_orders_by_started_and_limits(db_path: Path) -> None:
    store = CdrStore(db_path)
    for i, started in enumerate([1003.0, 1001.0, 1004.0, 1002.0]):
        start_call(store, f"c{i}", started)
        end_call(store, f"c{i}", started + 1)
    store.flush()
    assert [call["call_id"] for call in store.last(3)] == ["c2", "c0", "c3"]
    assert [call["call_id"] for call in store.last(100)] == ["c2", "c0", "c3", "c1"]
    assert store.last(0) == []
    assert all(len(call["legs"]) == 2 for call in store.last(4))  # type: ignore[arg-type]
    store.close()


def test_close_flushes(db_path: Path) -> None:
    store = CdrStore(db_path)
    start_call(store, "c1")
    end_call(store, "c1", 1001.0)
    store.close()
    assert rows(db_path, "SELECT call_id FROM cdr_calls") == [("c1",)]


def test_bad_arguments_raise_at_once(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    store = CdrStore(db_path)
    start_call(store, "c1")
    with pytest.raises(ValueError, match="direction must be 'in' or 'out'"):
        store.leg_started("c1", "x", "sideways", None, "sip:x@h", 1.0, "x")
    with pytest.raises(ValueError, match="release_side must be one of"):
        store.call_ended("c1", 2.0, 200, "nobody", None)
    with pytest.raises(TypeError, match="unexpected media keyword 'rtt'"):
        store.leg_ended("c1", "a", 2.0, 200, rtt=3)
    with pytest.raises(TypeError, match="media packets_in must be int"):
        store.leg_ended("c1", "a", 2.0, 200, packets_in="many")
    with pytest.raises(TypeError, match="remote_uri must be a str or None, not 7"):
        store.leg_started("c1", "x", "in", None, 7, 1.0, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call_id must be a non-empty string"):
        store.call_started("", "a", "b", None, 1.0)
    caplog.set_level(logging.WARNING, LOGGER)
    store.call_answered("nope", 1.0, None)
    store.call_ended("nope", 2.0, None, "gateway", None)
    assert [r.getMessage() for r in caplog.records] == [
        "cdr: call_id=nope: call_answered for a call never started; ignored",
        "cdr: call_id=nope: call_ended for a call never started; ignored",
    ]
    assert store.pending == 0
    store.close()


# --- durability --------------------------------------------------------------------------------

KILLED_GATEWAY = """
import os, sys
from pathlib import Path
from gateway.store.cdr import CdrStore

store = CdrStore(Path(sys.argv[1]))
store.call_started("answered", "+15551230001", "+15559870001", "carrier-a", 1000.0)
store.leg_started("answered", "a", "in", "carrier-a", "sip:a@10.0.0.1", 1000.0, "sip-a")
store.leg_started("answered", "b", "out", "carrier-b", "sip:b@10.0.0.2", 1000.1, "sip-b")
store.leg_answered("answered", "b", 1003.0)
store.call_answered("answered", 1003.0, "carrier-b")
store.call_started("ringing", "+15551230002", "+15559870002", "carrier-a", 1001.0)
assert store.flush() == 3
store.call_ended("answered", 1010.0, 200, "caller", "BYE")  # queued after the flush: lost
store.call_ended("ringing", 1010.0, 487, "caller", "CANCEL")
os._exit(9)  # killed: no close, no flush, no interpreter shutdown
"""


def test_answered_call_survives_a_kill(db_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_GATEWAY), str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert (done.returncode, done.stderr) == (9, "")
    # The commit is in the WAL (not checkpointed into the main file); opening reads it.
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0
    assert rows(db_path, "SELECT call_id, answered, ended, trunk_out FROM cdr_calls") == [
        ("answered", 1003.0, None, "carrier-b")
    ]
    assert rows(db_path, "SELECT leg_id, answered, ended FROM cdr_legs ORDER BY leg_id") == [
        ("a", None, None),
        ("b", 1003.0, None),
    ]
    store = CdrStore(db_path)  # a restarted gateway opens it as usual
    assert [call["call_id"] for call in store.last(10)] == ["answered"]
    store.close()


# --- failures ----------------------------------------------------------------------------------


def make_unwritable(kind: str, db_path: Path) -> None:
    # The database's parent path is a file: unwritable for every user, root included (a
    # read-only directory would not be, and CI runs as root).
    db_path.parent.parent.mkdir(parents=True, exist_ok=True)
    db_path.parent.write_text("not a directory\n")


def make_writable(kind: str, db_path: Path) -> None:
    db_path.parent.unlink()


@pytest.mark.parametrize("kind", ["parent is a file"])
def test_unwritable_path_logs_and_keeps_the_queue(
    db_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_unwritable(kind, db_path)
    caplog.set_level(logging.DEBUG, LOGGER)
    store = CdrStore(db_path)  # does not raise
    start_call(store, "c1")
    end_call(store, "c1", 1001.0)
    assert store.flush() == 0
    assert store.flush() == 0
    assert store.pending == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # the open; the failed flushes that follow log at debug
    assert errors[0].startswith(f"cdr: cannot open {db_path}: ")
    assert f"cdr: cannot write {db_path}: " in caplog.records[-1].getMessage()
    assert "call_id=c1" in caplog.records[-1].getMessage()

    make_writable(kind, db_path)
    assert store.flush() == 3
    assert caplog.records[-1].getMessage() == (
        f"cdr: writing {db_path} again after 3 failed attempts (0 calls dropped)"
    )
    assert [call["call_id"] for call in store.last(5)] == ["c1"]
    store.close()


def test_locked_database_keeps_the_queue(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CdrStore(db_path)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    start_call(store, "c1")
    end_call(store, "c1", 1001.0)
    caplog.set_level(logging.ERROR, LOGGER)
    assert store.flush() == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"cdr: cannot write {db_path}: database is locked (1 calls, 3 rows queued from "
        "call_id=c1; 1 failed attempts, 0 calls dropped; retrying at each flush)"
    ]
    other.execute("ROLLBACK")
    other.close()
    assert store.flush() == 3
    store.close()


def test_queue_is_bounded(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_unwritable("parent is a file", db_path)
    store = CdrStore(db_path, max_pending=10)
    start_call(store, "in-progress")
    answer_call(store, "in-progress", 1001.0)  # queued, but never dropped: it is in memory anyway
    caplog.set_level(logging.DEBUG, LOGGER)
    for i in range(5):  # 3 rows each: the 4th and 5th push the oldest ended calls out
        start_call(store, f"c{i}")
        end_call(store, f"c{i}", 1002.0)
        assert store.flush() == 0
    assert store.dropped == 2
    assert store.pending == 3 + 9
    drops = [r for r in caplog.records if "dropped call_id" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in drops] == [
        (logging.ERROR, f"cdr: queue for {db_path} full (10 rows): dropped call_id=c0 "
         "(1 calls dropped)"),
        (logging.DEBUG, f"cdr: queue for {db_path} full (10 rows): dropped call_id=c1 "
         "(2 calls dropped)"),
    ]  # fmt: skip

    make_writable("parent is a file", db_path)
    assert store.flush() == 12
    assert [call["call_id"] for call in store.last(10)] == ["in-progress", "c4", "c3", "c2"]
    assert store.dropped == 2
    store.close()


def test_read_only_store(db_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        CdrStore(db_path, read_only=True)
    assert not db_path.parent.exists()
    writer = CdrStore(db_path)
    start_call(writer, "c1")
    answer_call(writer, "c1", 1001.0)
    writer.flush()
    reader = CdrStore(db_path, read_only=True)  # while the gateway has it open
    assert [(call["call_id"], call["ended"]) for call in reader.last(5)] == [("c1", None)]
    reader.close()
    writer.close()


# --- rate --------------------------------------------------------------------------------------


def test_flush_rate(db_path: Path) -> None:
    """10,000 lifecycles as the app writes them: a flush every 200 calls' answers and ends."""
    store = CdrStore(db_path)
    calls, batch = 10_000, 200
    written, flushing = 0, 0.0
    began = time.perf_counter()
    for first in range(0, calls, batch):
        ids = [f"call-{i}" for i in range(first, first + batch)]
        for call_id in ids:
            start_call(store, call_id, 1000.0)
            answer_call(store, call_id, 1001.0)
        clock = time.perf_counter()
        written += store.flush()
        flushing += time.perf_counter() - clock
        for call_id in ids:
            end_call(store, call_id, 1060.0)
        clock = time.perf_counter()
        written += store.flush()
        flushing += time.perf_counter() - clock
    total = time.perf_counter() - began
    per_1000 = flushing / calls * 1000
    print(
        f"\ncdr: {calls} call lifecycles ({written} rows) flushed in {flushing:.3f} s "
        f"({per_1000 * 1000:.1f} ms per 1,000 calls, {calls / flushing:,.0f} calls/s, "
        f"{written / flushing:,.0f} rows/s); {total:.3f} s with the recording calls"
    )
    assert written == calls * 6  # each call and its 2 legs at answer, and again at the end
    assert rows(db_path, "SELECT count(*), sum(duration) FROM cdr_calls") == [(calls, calls * 59.0)]
    assert per_1000 < 2.0  # generous: only catches a pathological regression
    store.close()


def test_version_1_database_gets_the_media_columns(tmp_path: Path) -> None:
    """A CDR database written before the media columns existed is upgraded in place."""
    db_path = tmp_path / "old.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.executescript(
            "CREATE TABLE cdr_legs (call_id TEXT NOT NULL, leg_id TEXT NOT NULL, direction TEXT,"
            " trunk TEXT, remote_uri TEXT, started REAL, answered REAL, ended REAL,"
            " status INTEGER, codec TEXT, packets_in INTEGER, packets_out INTEGER,"
            " lost INTEGER, jitter_ms REAL, mos REAL, sip_call_id TEXT,"
            " PRIMARY KEY (call_id, leg_id)); PRAGMA user_version = 1;"
        )
    store = CdrStore(db_path)
    store.call_started("c1", "alice", "bob", "t", 1.0)
    store.leg_started("c1", "a", "in", "t", "sip:a@h", 1.0, "sip-c1")
    store.leg_ended("c1", "a", 2.0, 200, bytes_in=1720, rtt_ms=0.5, srtp="AES_CM_128_HMAC_SHA1_80")
    store.call_ended("c1", 2.0, 200, "caller", "BYE")
    store.flush()
    store.close()
    assert rows(db_path, "SELECT bytes_in, rtt_ms, srtp FROM cdr_legs") == [
        (1720, 0.5, "AES_CM_128_HMAC_SHA1_80")
    ]
    assert rows(db_path, "PRAGMA user_version") == [(3,)]


def test_version_2_database_gets_the_app_columns(tmp_path: Path) -> None:
    """A version 2 database (no app columns in cdr_calls) is upgraded in place."""
    db_path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.executescript(
            "CREATE TABLE cdr_calls (call_id TEXT PRIMARY KEY, caller TEXT, callee TEXT,"
            " trunk_in TEXT, trunk_out TEXT, started REAL, answered REAL, ended REAL,"
            " duration REAL, status INTEGER, release_side TEXT, reason TEXT, transfer TEXT,"
            " legs INTEGER); PRAGMA user_version = 2;"
        )
    store = CdrStore(db_path)
    store.call_started("c1", "+15550001", "+15550002", None, 100.0)
    store.app_operation("c1", "c1", "create", 100.0)
    store.app_operation("c1", "c1", "play", 102.25)
    store.call_ended("c1", 110.0, 200, "app", "terminated by the app")
    store.flush()
    store.close()
    assert rows(db_path, "SELECT app_call, operations, release_side FROM cdr_calls") == [
        ("c1", "create@0.0 play@2.2", "app")
    ]
    assert rows(db_path, "PRAGMA user_version") == [(3,)]


def test_app_operations_are_bounded(tmp_path: Path) -> None:
    from gateway.store.cdr import MAX_OPERATIONS

    db_path = tmp_path / "ops.sqlite3"
    store = CdrStore(db_path)
    store.call_started("c1", "a", "b", None, 0.0)
    for i in range(MAX_OPERATIONS + 5):
        store.app_operation("c1", "c1", "play", float(i))
    store.call_ended("c1", 1.0, 200, "app", None)
    store.flush()
    store.close()
    (ops,) = rows(db_path, "SELECT operations FROM cdr_calls")[0]
    assert ops.count("play@") == MAX_OPERATIONS and ops.endswith(" +5")
