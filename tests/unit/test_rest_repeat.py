"""Repeatable requests (gateway/rest/repeat.py): ACS_REST.md section 3, with time stepped by hand.

Every row of the section 3 table, the choice of clock for the First-Sent age, expiry, the caps
on memory, and the exact errors (status, ACS code).
"""

from __future__ import annotations

import email.utils
import uuid

import pytest

from gateway.rest.errors import RestError
from gateway.rest.repeat import Answer, RepeatStore, Ticket

NOW = 1_795_000_000.0
PATH = "/calling/callConnections"
BODY = b'{"targets": [], "callbackUri": "https://cb/x"}'
CREATED = Answer(
    201, (("Content-Type", "application/json; charset=utf-8"),), b'{"callConnectionId":"c1"}'
)


def date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def new_id() -> str:
    return str(uuid.uuid4())


def begin(
    store: RepeatStore,
    request_id: str | None,
    *,
    sent: float | None = NOW,
    now: float = NOW,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    client_now: float | None = None,
) -> Ticket | None:
    first_sent = None if sent is None else date(sent)
    return store.begin(request_id, first_sent, method, path, body, now, client_now)


def refused(store: RepeatStore, request_id: str | None, **kwargs: object) -> RestError:
    with pytest.raises(RestError) as info:
        begin(store, request_id, **kwargs)  # type: ignore[arg-type]
    return info.value


def executed(
    store: RepeatStore, request_id: str, answer: Answer = CREATED, **kwargs: object
) -> Ticket:
    """A new request: begin says execute, then its answer is recorded."""
    ticket = begin(store, request_id, **kwargs)  # type: ignore[arg-type]
    assert ticket is not None and ticket.replay is None
    store.finish(ticket, answer)
    return ticket


# -- the table, row by row ---------------------------------------------------------------------


def test_no_headers_means_no_repeatability() -> None:
    store = RepeatStore()
    assert begin(store, None, sent=None) is None
    assert len(store) == 0


@pytest.mark.parametrize(
    "request_id",
    [
        "",
        "abc",
        "123",
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4())[:-1],
        str(uuid.uuid4()).replace("-", ""),
    ],
)
def test_malformed_request_id(request_id: str) -> None:
    err = refused(RepeatStore(), request_id)
    assert (err.status, err.code) == (400, "8523")
    assert "is not a UUID" in err.message


@pytest.mark.parametrize("first_sent", ["", "now", "2026-11-18T00:00:00Z"])
def test_malformed_first_sent(first_sent: str) -> None:
    with pytest.raises(RestError) as info:
        RepeatStore().begin(new_id(), first_sent, "POST", PATH, BODY, NOW)
    assert (info.value.status, info.value.code) == (400, "8523")
    assert "is not an HTTP date" in info.value.message


def test_one_header_without_the_other() -> None:
    err = refused(RepeatStore(), new_id(), sent=None)
    assert (err.status, err.message) == (
        400,
        "Repeatability-First-Sent is required with the other header.",
    )
    with pytest.raises(RestError) as info:
        RepeatStore().begin(None, date(NOW), "POST", PATH, BODY, NOW)
    assert info.value.message == "Repeatability-Request-ID is required with the other header."


def test_first_sent_older_than_the_window_is_412() -> None:
    store = RepeatStore()
    err = refused(store, new_id(), sent=NOW - 301)
    assert (err.status, err.code) == (412, "PreconditionFailed")
    assert "beyond the 300 s repeatability window" in err.message
    assert begin(store, new_id(), sent=NOW - 299) is not None


def test_first_sent_far_in_the_future_is_refused() -> None:
    err = refused(RepeatStore(), new_id(), sent=NOW + 301)
    assert (err.status, err.message) == (400, "Repeatability-First-Sent is in the future.")
    assert begin(RepeatStore(), new_id(), sent=NOW + 60) is not None


def test_new_id_executes_and_same_request_replays() -> None:
    store = RepeatStore()
    request_id = new_id()
    first = executed(store, request_id)
    assert first.request_id == request_id
    retry = begin(store, request_id, now=NOW + 1.6)
    assert retry is not None and retry.replay == CREATED
    assert store.replayed == 1
    store.finish(retry, Answer(500, (), b""))  # finishing a replay changes nothing
    again = begin(store, request_id, now=NOW + 3)
    assert again is not None and again.replay == CREATED


def test_request_id_is_case_insensitive() -> None:
    store = RepeatStore()
    request_id = new_id()
    executed(store, request_id.upper())
    ticket = begin(store, request_id)
    assert ticket is not None and ticket.replay == CREATED


@pytest.mark.parametrize(
    "change",
    [{"body": BODY + b" "}, {"path": PATH + ":answer"}, {"method": "PUT"}, {"body": b""}],
)
def test_same_id_different_request_is_400(change: dict[str, object]) -> None:
    store = RepeatStore()
    request_id = new_id()
    executed(store, request_id)
    err = refused(store, request_id, now=NOW + 1, **change)
    assert (err.status, err.code) == (400, "8523")
    assert (
        err.message
        == f"Repeatability-Request-ID {request_id} was already used for a different request."
    )


def test_same_request_still_running_is_409() -> None:
    store = RepeatStore()
    request_id = new_id()
    ticket = begin(store, request_id)
    assert ticket is not None and ticket.replay is None
    err = refused(store, request_id, now=NOW + 0.5)
    assert (err.status, err.code) == (409, "8519")
    store.finish(ticket, CREATED)
    replay = begin(store, request_id, now=NOW + 1)
    assert replay is not None and replay.replay == CREATED


def test_4xx_answers_are_replayed() -> None:
    store = RepeatStore()
    request_id = new_id()
    refusal = Answer(404, (("Content-Type", "application/json"),), b'{"error":{}}')
    executed(store, request_id, refusal)
    ticket = begin(store, request_id, now=NOW + 1)
    assert ticket is not None and ticket.replay == refusal


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_answers_are_not_replayed_but_executed_again(status: int) -> None:
    store = RepeatStore()
    request_id = new_id()
    executed(store, request_id, Answer(status, (), b""))
    assert len(store) == 0
    retry = begin(store, request_id, now=NOW + 0.8)
    assert retry is not None and retry.replay is None
    store.finish(retry, CREATED)
    replay = begin(store, request_id, now=NOW + 2)
    assert replay is not None and replay.replay == CREATED


# -- clocks and expiry -------------------------------------------------------------------------


def test_first_sent_age_uses_the_clients_clock_when_given() -> None:
    # a client 10 minutes behind the server: First-Sent looks 10 minutes old on the server clock
    store = RepeatStore()
    behind = NOW - 600
    assert refused(store, new_id(), sent=behind).status == 412
    ticket = begin(store, new_id(), sent=behind, client_now=behind + 2)
    assert ticket is not None and ticket.replay is None
    assert refused(store, new_id(), sent=behind, client_now=behind + 301).status == 412


def test_ids_expire_after_the_window() -> None:
    store = RepeatStore()
    request_id = new_id()
    executed(store, request_id)
    replay = begin(store, request_id, now=NOW + 299.9)
    assert replay is not None and replay.replay is not None
    # past the window: forgotten (a retry that late fails the First-Sent check anyway)
    fresh = begin(store, new_id(), now=NOW + 300, sent=NOW + 300)
    assert fresh is not None
    assert len(store) == 1
    forgotten = begin(store, request_id, now=NOW + 301, sent=NOW + 290, client_now=NOW + 295)
    assert forgotten is not None and forgotten.replay is None


def test_answer_after_expiry_is_not_stored() -> None:
    store = RepeatStore(window=10)
    slow = begin(store, new_id())
    assert slow is not None
    begin(store, new_id(), now=NOW + 11, sent=NOW + 11)  # expires the slow one
    store.finish(slow, CREATED)
    assert len(store) == 1


def test_custom_window() -> None:
    store = RepeatStore(window=60)
    assert refused(store, new_id(), sent=NOW - 61).status == 412
    assert "beyond the 60 s repeatability window" in refused(store, new_id(), sent=NOW - 61).message


# -- bounded memory ----------------------------------------------------------------------------


def test_entry_cap_evicts_the_oldest() -> None:
    store = RepeatStore(max_entries=3)
    ids = [new_id() for _ in range(5)]
    for offset, request_id in enumerate(ids):
        executed(store, request_id, now=NOW + offset)
    assert len(store) == 3
    assert store.evicted == 2
    oldest = begin(store, ids[0], now=NOW + 6)
    assert oldest is not None and oldest.replay is None  # forgotten: executed again
    newest = begin(store, ids[4], now=NOW + 6)
    assert newest is not None and newest.replay == CREATED


def test_byte_cap_evicts_the_oldest() -> None:
    big = Answer(200, (), b"x" * 10_000)
    store = RepeatStore(max_bytes=25_000)
    ids = [new_id() for _ in range(4)]
    for request_id in ids:
        executed(store, request_id, big)
    assert len(store) == 2
    kept = begin(store, ids[3])
    assert kept is not None and kept.replay == big


def test_many_requests_stay_within_the_cap() -> None:
    store = RepeatStore(max_entries=1000)
    for step in range(5000):
        executed(store, new_id(), now=NOW + step * 0.01, sent=NOW + step * 0.01)
    assert len(store) == 1000
