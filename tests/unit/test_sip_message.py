"""SIP messages: round trip, stream framing, building, changing (RFC 3261 sections 7, 8.2.6,
9.1, 17.1.1.3, 18.3, 20).

Parsing is tested on the published vectors (``tests/vectors``, RFC 4475 section 3 and RFC
5118 section 4); the builders on one small dialog written here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.headers import COMPACT, CSeq, Via, canonical_name, header_key, parse_uint
from gateway.sip.message import (
    MAX_HEADERS,
    Message,
    Request,
    Response,
    SipMessage,
    StreamFramer,
    error_response,
    make_ack,
    make_cancel,
    make_request,
    make_response,
    make_response_from_error,
    parse_datagram,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ALL_VECTORS = sorted(
    path for folder in ("rfc4475", "rfc5118") for path in VECTORS.glob(f"{folder}/**/*.dat")
)


def vector_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def parses(path: Path) -> bool:
    try:
        parse_datagram(path.read_bytes())
    except SipParseError:
        return False
    return True


def framed_exactly(data: bytes) -> bool:
    """One Content-Length, and exactly that many octets after the blank line."""
    msg = parse_datagram(data)
    length = msg.get("content-length")
    head_end = data.find(b"\r\n\r\n")
    return (
        msg.count("content-length") == 1
        and length is not None
        and head_end >= 0
        and parse_uint(length, "Content-Length") == len(data) - head_end - 4
    )


PARSEABLE = [p for p in ALL_VECTORS if parses(p)]
STREAMABLE = [p for p in PARSEABLE if framed_exactly(p.read_bytes())]


def start_line(msg: SipMessage) -> tuple[object, ...]:
    if isinstance(msg, Request):
        return ("request", msg.method, msg.uri_text)
    return ("response", msg.status, msg.reason)


def same(a: SipMessage, b: SipMessage) -> None:
    assert start_line(a) == start_line(b)
    assert a.fields == b.fields
    assert a.body == b.body


def test_vector_sets_are_not_empty() -> None:
    assert len(ALL_VECTORS) == 64
    assert len(PARSEABLE) == 54
    assert len(STREAMABLE) == 48


# --------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PARSEABLE, ids=vector_id)
def test_round_trip(path: Path) -> None:
    """parse -> bytes -> parse: same start line, headers and body; byte-exact when the
    datagram held exactly one message framed by its Content-Length."""
    data = path.read_bytes()
    msg = parse_datagram(data)
    out = bytes(msg)
    again = parse_datagram(out)
    assert type(again) is type(msg)
    assert start_line(again) == start_line(msg)
    assert again.body == msg.body
    if framed_exactly(data):
        assert out == data
        assert again.fields == msg.fields
    else:  # Content-Length is added, or rewritten to the body kept (RFC 3261 section 18.3)
        assert [f for f in again.fields if f[0] != "content-length"] == [
            f for f in msg.fields if f[0] != "content-length"
        ]
        assert again.get_all("content-length") == [str(len(msg.body))]
    assert bytes(again) == out


# --------------------------------------------------------------------------------------
# stream framing (RFC 3261 section 18.3)
# --------------------------------------------------------------------------------------
def feed_in_chunks(framer: StreamFramer, stream: bytes, size: int) -> list[SipMessage]:
    out: list[SipMessage] = []
    for i in range(0, len(stream), size):
        out.extend(framer.feed(stream[i : i + size]))
    return out


def test_stream_one_byte_at_a_time_yields_the_datagram_messages() -> None:
    datagrams = [p.read_bytes() for p in STREAMABLE]
    framer = StreamFramer()
    got = feed_in_chunks(framer, b"".join(datagrams), 1)
    assert len(got) == len(datagrams)
    for message, data in zip(got, datagrams):
        same(message, parse_datagram(data))
    assert framer.buffered == 0
    assert framer.pings == 0


@pytest.mark.parametrize("size", [2, 3, 7, 64, 1500, 1 << 20])
def test_stream_any_chunking_gives_the_same_messages(size: int) -> None:
    datagrams = [p.read_bytes() for p in STREAMABLE]
    got = feed_in_chunks(StreamFramer(), b"".join(datagrams), size)
    assert [start_line(m) for m in got] == [start_line(parse_datagram(d)) for d in datagrams]
    assert [m.body for m in got] == [parse_datagram(d).body for d in datagrams]


def test_stream_keep_alive_pings_are_counted_one_byte_at_a_time() -> None:
    """RFC 5626 section 3.5.1: CRLFCRLF between messages is a ping; a lone CRLF before a
    start-line is ignored (RFC 3261 section 7.5)."""
    datagrams = [p.read_bytes() for p in STREAMABLE[:6]]
    stream = b"\r\n" + b"\r\n\r\n".join(datagrams) + b"\r\n\r\n\r\n\r\n"
    framer = StreamFramer()
    got = feed_in_chunks(framer, stream, 1)
    assert len(got) == 6
    for message, data in zip(got, datagrams):
        same(message, parse_datagram(data))
    assert framer.pings == 5 + 2
    assert framer.buffered == 0


@pytest.mark.parametrize(("stream", "pings"), [(b"\r\n", 0), (b"\r\n\r\n", 1), (b"\r\n" * 5, 2)])
def test_stream_pings_alone(stream: bytes, pings: int) -> None:
    for size in (1, len(stream)):
        framer = StreamFramer()
        assert feed_in_chunks(framer, stream, size) == []
        assert framer.pings == pings


def test_stream_trailing_bytes_wait_for_the_rest() -> None:
    first, second = (p.read_bytes() for p in STREAMABLE[:2])
    framer = StreamFramer()
    cut = len(second) - 10
    got = framer.feed(first + second[:cut])
    assert len(got) == 1
    same(got[0], parse_datagram(first))
    assert framer.buffered == cut
    assert framer.feed(b"") == []
    rest = framer.feed(second[cut:] + b"OPTIONS sip:")
    assert len(rest) == 1
    same(rest[0], parse_datagram(second))
    assert framer.buffered == len(b"OPTIONS sip:")


def test_stream_a_body_that_looks_like_a_message_is_a_body() -> None:
    """mpart01's body holds NULs and CRLFCRLF: only Content-Length frames it."""
    data = (VECTORS / "rfc4475/mpart01.dat").read_bytes()
    got = feed_in_chunks(StreamFramer(), data + data, 1)
    assert [len(m.body) for m in got] == [553, 553]


def test_stream_header_block_cap_413() -> None:
    framer = StreamFramer(max_buffer=64)
    head = b"OPTIONS sip:user@example.com SIP/2.0\r\n" + b"X-Filler: 0123456789\r\n" * 3
    with pytest.raises(SipParseError) as info:
        feed_in_chunks(framer, head, 1)
    assert (info.value.status, str(info.value)) == (413, "header block too large")
    assert framer.buffered == 65  # raised on the first octet past the cap


def test_stream_message_cap_513_before_the_body_arrives() -> None:
    data = (VECTORS / "rfc4475/mpart01.dat").read_bytes()
    head = data[: data.index(b"\r\n\r\n") + 4]
    framer = StreamFramer(max_buffer=len(data) - 1)
    with pytest.raises(SipParseError) as info:
        framer.feed(head)
    assert (info.value.status, str(info.value)) == (513, "message too large")
    answer = make_response_from_error(info.value)
    assert answer is not None and answer.startswith(b"SIP/2.0 513 Message Too Large\r\n")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rfc4475/inv2543.dat", "missing Content-Length on a stream transport"),
        ("rfc4475/ncl.dat", "bad Content-Length"),
        ("rfc4475/mcl01.dat", "conflicting Content-Length headers"),
        ("rfc4475/test.dat", "malformed header line"),
    ],
)
def test_stream_framing_errors(name: str, text: str) -> None:
    """RFC 3261 section 18.3: Content-Length is mandatory on streams; RFC 4475 sections
    3.4.1, 3.1.2.3, 3.3.9. The caller answers if it can, then closes."""
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed((VECTORS / name).read_bytes())
    assert (info.value.status, str(info.value)) == (400, text)
    if name != "rfc4475/test.dat":  # test.dat has no Via to answer to
        answer = make_response_from_error(info.value)
        assert answer is not None and answer.startswith(b"SIP/2.0 400 Bad Request\r\n")


def test_stream_response_errors_are_never_answered() -> None:
    data = (VECTORS / "rfc4475/bcast.dat").read_bytes().replace(b"Content-Length: 154\r\n", b"")
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(data)
    assert info.value.respond is False
    assert make_response_from_error(info.value) is None


# --------------------------------------------------------------------------------------
# datagram parsing edges (RFC 3261 sections 7, 18.3)
# --------------------------------------------------------------------------------------
OPTIONS = (
    b"OPTIONS sip:user@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i\r\n"
    b"To: <sip:user@example.com>\r\n"
    b"From: <sip:caller@example.net>;tag=3ghsd41\r\n"
    b"Call-ID: edge.jfasdlfnm2o2l43r5u0asdfas\r\n"
    b"CSeq: 39234321 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse_error(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_datagram(data)
    return info.value


def test_leading_crlfs_are_ignored() -> None:
    msg = parse_datagram(b"\r\n\r\n" + OPTIONS)
    assert isinstance(msg, Request) and msg.method == "OPTIONS"
    assert bytes(msg) == OPTIONS


def test_empty_datagram_is_dropped() -> None:
    err = parse_error(b"\r\n\r\n")
    assert (str(err), err.respond) == ("empty message", False)


def test_bare_lf_is_tolerated() -> None:
    msg = parse_datagram(OPTIONS.replace(b"\r\n", b"\n"))
    assert isinstance(msg, Request)
    assert msg.cseq == CSeq(39234321, "OPTIONS")


def test_version_is_case_insensitive() -> None:
    """RFC 3261 section 7.1: the version string is case-insensitive."""
    msg = parse_datagram(OPTIONS.replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1))
    assert isinstance(msg, Request)
    assert bytes(msg) == OPTIONS
    resp = parse_datagram(b"sip/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(resp, Response) and resp.status == 200


@pytest.mark.parametrize(
    ("data", "status", "text", "respond"),
    [
        (
            OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
            505,
            "SIP version not supported",
            True,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not a SIP request", False),
        (b"OPT:ONS sip:a@b SIP/2.0\r\n\r\n", 400, "bad method", False),
        (b"SIP/2.0 \xb200 OK\r\nContent-Length: 0\r\n\r\n", 400, "bad status code", False),
        (b"SIP/2.0 99 Low\r\nContent-Length: 0\r\n\r\n", 400, "bad status code", False),
        (b"SIP/3.0 200 OK\r\nContent-Length: 0\r\n\r\n", 400, "SIP version not supported", False),
        (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\nBad\r\n\r\n",
            400,
            "malformed header line",
            False,
        ),
        (
            OPTIONS.replace(b"Content-Length: 0", b"Content-Length: \xb9"),
            400,
            "bad Content-Length",
            True,
        ),
        (
            OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000),
            400,
            "bad Content-Length",
            True,
        ),
        (
            OPTIONS.replace(b"Max-Forwards: 70\r\n", b"X: y\r\n" * MAX_HEADERS),
            413,
            "too many headers",
            True,
        ),
    ],
)
def test_parse_errors(data: bytes, status: int, text: str, respond: bool) -> None:
    err = parse_error(data)
    assert (err.status, str(err), err.respond) == (status, text, respond)
    answer = make_response_from_error(err)
    if respond:
        assert answer is not None
        resp = parse_datagram(answer)
        assert isinstance(resp, Response) and resp.status == status
    else:
        assert answer is None


def test_no_answer_without_via_or_cseq_or_to_an_ack() -> None:
    assert make_response_from_error(parse_error(OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)))
    no_via = OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1).replace(b"Via: ", b"X-Via: ")
    assert make_response_from_error(parse_error(no_via)) is None
    ack = OPTIONS.replace(b"OPTIONS sip", b"ACK sip").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    assert make_response_from_error(parse_error(ack)) is None


# --------------------------------------------------------------------------------------
# structured headers (RFC 3261 section 20)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seq", "method"),
    [
        ("1 INVITE", 1, "INVITE"),
        ("0009  INVITE", 9, "INVITE"),
        ("4294967295 BYE", 2**32 - 1, "BYE"),
        ("0" * 5000 + "7 ACK", 7, "ACK"),
    ],
)
def test_cseq(text: str, seq: int, method: str) -> None:
    assert CSeq.parse(text) == CSeq(seq, method)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("INVITE", "bad CSeq"),
        ("1", "bad CSeq"),
        ("1 INVITE x", "bad CSeq"),
        ("-1 INVITE", "bad CSeq"),
        ("\xb2 INVITE", "bad CSeq"),  # superscript two: isdigit() but not int()
        ("1 INV/ITE", "bad CSeq"),
        ("4294967296 INVITE", "CSeq number out of range"),
        ("9" * 5000 + " INVITE", "CSeq number out of range"),  # no int() of 5000 digits
    ],
)
def test_cseq_errors(text: str, error: str) -> None:
    with pytest.raises(SipParseError) as info:
        CSeq.parse(text)
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("text", "limit", "value"),
    [("0", 255, 0), ("0068", 255, 68), ("255", 255, 255), (" 70 ", 255, 70)],
)
def test_parse_uint(text: str, limit: int, value: int) -> None:
    assert parse_uint(text, "Max-Forwards", limit) == value


@pytest.mark.parametrize("text", ["256", "-1", "", "7a", "\xb9", "1 2", "9" * 5000])
def test_parse_uint_errors(text: str) -> None:
    with pytest.raises(SipParseError, match=r"^bad Max-Forwards$"):
        parse_uint(text, "Max-Forwards", 255)


def test_via() -> None:
    via = Via.parse("SIP / 2.0 / udp  [2001:db8::9:1]:6050 ; branch = z9hG4bK1 ;rport")
    assert (via.transport, via.host, via.port) == ("UDP", "[2001:db8::9:1]", 6050)
    assert (via.branch, via.rport, via.received) == ("z9hG4bK1", "", None)
    changed = via.with_param("received", "192.0.2.1").with_param("rport", "5062")
    assert str(changed) == (
        "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bK1;received=192.0.2.1;rport=5062"
    )
    assert Via.parse(str(changed)) == changed
    spaced = Via.parse("SIP/2.0/TCP\t[2001:db8::1] : 5060 ;branch=z9hG4bK2")
    assert (spaced.transport, spaced.host, spaced.port) == ("TCP", "[2001:db8::1]", 5060)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SIP/2.0 host", "bad Via sent-protocol"),
        ("SIP/2.0/UDP", "bad Via sent-by"),
        ("SIP@/2.0/UDP host", "bad Via sent-protocol"),
        ("SIP/2.0/U;DP host", "bad Via sent-by"),
        ("SIP/2.0/UDP host:99999", "bad port in Via"),
        ("SIP/2.0/UDP host1 host2", "bad Via sent-by"),
        ("SIP/2.0/UDP host: 50 60", "bad Via sent-by"),
        ("SIP/2.0/UDP 2001:db8::1", "IPv6 address without [] in Via"),
        ("SIP/2.0/UDP host;;", "bad parameter in Via"),
        ("SIP/2.0/UDP host;branch=", "empty parameter value in Via"),
        ('SIP/2.0/UDP host;x="open', "unterminated quoted string in Via"),
        ("SIP/2.0/UDP host;received=[2001:db8::1", "bad parameter value in Via"),
    ],
)
def test_via_errors(text: str, error: str) -> None:
    with pytest.raises(SipParseError) as info:
        Via.parse(text)
    assert str(info.value) == error


# --------------------------------------------------------------------------------------
# compact forms (RFC 3261 section 7.3.3)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("letter", "key"), sorted(COMPACT.items()))
def test_compact_form_expands(letter: str, key: str) -> None:
    assert header_key(letter) == header_key(letter.upper()) == key
    assert header_key(canonical_name(key)) == key
    msg = parse_datagram(f"OPTIONS sip:a@example.com SIP/2.0\r\n{letter}: 0\r\n\r\n".encode())
    assert msg.fields == ((key, "0", f"{letter}: 0"),)
    assert msg.get(key) == msg.get(letter) == msg.get(canonical_name(key)) == "0"


def test_compact_forms_in_a_message() -> None:
    compact = (
        b"OPTIONS sip:user@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP host1.example.com;branch=z9hG4bK1\r\n"
        b"V: SIP/2.0/TCP host2.example.com;branch=z9hG4bK2\r\n"
        b"t: <sip:user@example.com>\r\n"
        b"f: <sip:caller@example.net>;tag=3\r\n"
        b"i: compact.1@example.net\r\n"
        b"m: <sip:caller@192.0.2.1>\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"o: presence\r\n"
        b"r: <sip:other@example.com>\r\n"
        b"x: 1800\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n"
        b"\r\n"
        b"hi"
    )
    msg = parse_datagram(compact)
    assert [v.host for v in msg.vias] == ["host1.example.com", "host2.example.com"]
    assert msg.count("Via") == 2
    assert str(msg.to.uri) == "sip:user@example.com"
    assert msg.from_.tag == "3"
    assert msg.call_id == "compact.1@example.net"
    assert str(msg.contacts[0].uri) == "sip:caller@192.0.2.1"
    assert msg.get("Supported") == "timer"
    assert msg.get("Subject") == "hello"
    assert msg.get("Event") == "presence"
    assert msg.get("Refer-To") == "<sip:other@example.com>"
    assert msg.get("Session-Expires") == "1800"
    assert msg.content_type == "text/plain"
    assert msg.body == b"hi"
    assert bytes(msg) == compact  # compact names go out as they came
    longreq = parse_datagram((VECTORS / "rfc4475/longreq.dat").read_bytes())
    assert longreq.count("via") == 34  # v, V, ViA, vIa, "V :" ... all one header


# --------------------------------------------------------------------------------------
# building (RFC 3261 sections 8.2.6, 9.1, 17.1.1.3)
# --------------------------------------------------------------------------------------
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds ,\r\n"
    b" SIP/2.0/UDP relay.atlanta.example.com;branch=z9hG4bK4b43c2ff8.1\r\n"
    b"Via: SIP/2.0/TCP edge.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"Route: <sip:p2.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq:  314159   INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> Request:
    msg = parse_datagram(INVITE)
    assert isinstance(msg, Request)
    return msg


def raw_lines(msg: Message, key: str) -> list[str | None]:
    return [raw for k, _, raw in msg.fields if k == key]


def test_make_response_copies_and_adds_the_to_tag() -> None:
    """RFC 3261 section 8.2.6.2."""
    req = invite()
    resp = make_response(req, 180, to_tag="a6c85cf", headers=[("Contact", "<sip:gw@192.0.2.9>")])
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert [k for k, _, _ in resp.fields] == [
        "via",
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
    ]
    for key in ("via", "from", "call-id", "cseq"):
        assert raw_lines(resp, key) == raw_lines(req, key)  # byte-exact
    assert resp.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"
    assert resp.to.tag == "a6c85cf"
    assert not resp.has("timestamp") and not resp.has("route")
    out = bytes(resp)
    assert out.startswith(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;")
    assert b"\r\n SIP/2.0/UDP relay.atlanta.example.com;branch=z9hG4bK4b43c2ff8.1\r\n" in out
    again = parse_datagram(out)
    assert [v.branch for v in again.vias] == [v.branch for v in req.vias]
    assert again.cseq == req.cseq == CSeq(314159, "INVITE")
    assert again.get("content-length") == "0"


def test_make_response_100_and_in_dialog() -> None:
    req = invite()
    trying = make_response(req, 100, to_tag="ignored")
    assert trying.to.tag is None  # section 8.2.6.1: 100 without a tag
    assert trying.get("timestamp") == "54"
    in_dialog = req.with_header("To", "Bob <sip:bob@biloxi.example.com>;tag=314")
    ok = make_response(in_dialog, 200, "Fine", to_tag="other", body=b"x")
    assert ok.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=314"
    assert (ok.reason, ok.body) == ("Fine", b"x")
    assert make_response(req, 299).reason == "Unknown"


def test_make_ack_for_a_non_2xx() -> None:
    """RFC 3261 section 17.1.1.3: top Via only, CSeq method ACK, To from the response,
    Route copied, same Request-URI, Call-ID and From."""
    req = invite()
    busy = make_response(req, 486, to_tag="bu5y")
    ack = make_ack(req, busy)
    assert (ack.method, ack.uri_text) == ("ACK", req.uri_text)
    assert ack.get_all("via") == ["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"]
    assert ack.cseq == CSeq(314159, "ACK")
    assert ack.get("to") == busy.get("to")
    assert ack.to.tag == "bu5y"
    for key in ("from", "call-id", "route", "max-forwards"):
        assert raw_lines(ack, key) == raw_lines(req, key)
    assert not ack.has("contact") and not ack.has("content-type") and ack.body == b""
    again = parse_datagram(bytes(ack))
    assert isinstance(again, Request)
    assert [str(r.uri) for r in again.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]


def test_make_ack_keeps_a_single_via_line_byte_exact() -> None:
    req = parse_datagram(OPTIONS.replace(b"OPTIONS", b"INVITE"))
    assert isinstance(req, Request)
    ack = make_ack(req, make_response(req, 404, to_tag="t"))
    assert raw_lines(ack, "via") == raw_lines(req, "via")


def test_make_cancel() -> None:
    """RFC 3261 section 9.1: same Request-URI, Call-ID, To, From, CSeq number; one Via,
    the top one; Route copied."""
    req = invite()
    cancel = make_cancel(req)
    assert (cancel.method, cancel.uri_text) == ("CANCEL", req.uri_text)
    assert [(v.host, v.branch) for v in cancel.vias] == [
        ("pc33.atlanta.example.com", "z9hG4bK776asdhds")
    ]
    assert cancel.cseq == CSeq(314159, "CANCEL")
    for key in ("from", "to", "call-id", "route", "max-forwards"):
        assert raw_lines(cancel, key) == raw_lines(req, key)
    assert not cancel.has("contact") and cancel.body == b""
    assert bytes(cancel).endswith(b"Content-Length: 0\r\n\r\n")


def test_make_request() -> None:
    req = make_request(
        "OPTIONS",
        "sip:user@example.com",
        [("v", "SIP/2.0/UDP gw.example.net;branch=z9hG4bKx"), ("Call-ID", "abc"), ("l", "0")],
    )
    assert bytes(req) == (
        b"OPTIONS sip:user@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP gw.example.net;branch=z9hG4bKx\r\n"
        b"Call-ID: abc\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


# --------------------------------------------------------------------------------------
# error responses (RFC 3261 sections 8.2.6, 8.2.7)
# --------------------------------------------------------------------------------------
def test_error_response_is_stateless_and_stable() -> None:
    req = invite()
    err = SipParseError("nope")
    first = error_response(req, err)
    assert first is not None and error_response(invite(), err) == first
    resp = parse_datagram(first)
    assert isinstance(resp, Response)
    assert resp.get("warning") == '399 acs-gateway "nope"'
    tag = resp.to.tag
    assert tag is not None and len(tag) == 16
    other = error_response(req.with_header("Call-ID", "another"), err)
    assert other is not None and parse_datagram(other).to.tag != tag
    assert resp.get_all("via") == req.get_all("via")
    assert (resp.get("from"), resp.get("call-id"), resp.get("cseq")) == (
        req.get("from"),
        req.get("call-id"),
        req.get("cseq"),
    )


def test_error_response_drops() -> None:
    req = invite()
    assert error_response(req, SipParseError("x", respond=False)) is None
    ack = make_ack(req, make_response(req, 486, to_tag="t"))
    assert error_response(ack, SipParseError("bad ACK")) is None  # section 8.2.7
    assert error_response(req.without_header("via"), SipParseError("x")) is None
    assert error_response(req.without_header("cseq"), SipParseError("x")) is None


def test_error_response_extra_headers_and_quotes() -> None:
    err = SipParseError('say "no"\\', 420, extra_headers=[("Unsupported", "foo")])
    answer = error_response(invite(), err)
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 420 Bad Extension\r\n")
    assert b"\r\nUnsupported: foo\r\n" in answer
    assert b"Warning" not in answer
    bad = error_response(invite(), SipParseError('say "no"\\'))
    assert bad is not None and b"Warning: 399 acs-gateway \"say 'no'/\"\r\n" in bad


# --------------------------------------------------------------------------------------
# changing a message: untouched headers stay byte-exact
# --------------------------------------------------------------------------------------
def wsinv() -> Request:
    msg = parse_datagram((VECTORS / "rfc4475/wsinv.dat").read_bytes())
    assert isinstance(msg, Request)
    return msg


def assert_untouched(before: Request, after: Request, changed: set[str]) -> None:
    kept = [f for f in before.fields if f[0] not in changed]
    assert [f for f in after.fields if f[0] not in changed] == kept
    out = bytes(after)
    for _, _, raw in kept:
        if raw is not None and not raw.lower().startswith("content-length"):
            assert f"\r\n{raw}\r\n".encode("latin-1") in out


def test_with_header_replaces_every_instance_in_place() -> None:
    msg = wsinv()
    changed = msg.with_header("Max-Forwards", "67")
    assert changed.get("max-forwards") == "67"
    assert [k for k, _, _ in changed.fields] == [k for k, _, _ in msg.fields]
    assert b"\r\nMax-Forwards: 67\r\n" in bytes(changed)
    assert_untouched(msg, changed, {"max-forwards"})
    one_via = msg.with_header("v", "SIP/2.0/UDP gw.example.net;branch=z9hG4bKgw")
    assert one_via.count("via") == 1
    assert_untouched(msg, one_via, {"via"})
    added = msg.with_header("X-Call", "1")
    assert added.fields[-1] == ("x-call", "1", None)
    assert_untouched(msg, added, {"x-call"})
    assert msg.get("max-forwards") == "0068"  # the original is unchanged


def test_without_header() -> None:
    msg = wsinv()
    changed = msg.without_header("route")
    assert not changed.has("Route")
    assert_untouched(msg, changed, {"route"})


def test_with_prepended() -> None:
    msg = wsinv()
    new = ("via", "SIP/2.0/UDP gw.example.net;branch=z9hG4bKgw", None)
    changed = msg.with_prepended("Via", new[1])
    assert changed.top_via.host == "gw.example.net"
    assert [v.host for v in changed.vias[1:]] == [v.host for v in msg.vias]
    assert changed.fields.index(new) == msg.fields.index(msg.fields[6]) == 6  # first Via
    assert tuple(f for f in changed.fields if f != new) == msg.fields
    out = bytes(changed)
    for _, _, raw in msg.fields:
        assert raw is not None and f"\r\n{raw}\r\n".encode("latin-1") in out
    rr = msg.with_prepended("Record-Route", "<sip:gw.example.net;lr>")
    assert rr.fields[-1] == ("record-route", "<sip:gw.example.net;lr>", None)


def test_without_top_via() -> None:
    msg = wsinv()
    changed = msg.without_top_via()
    assert [v.host for v in changed.vias] == [v.host for v in msg.vias[1:]]
    assert raw_lines(changed, "via") == raw_lines(msg, "via")[1:]  # the folded v: line
    assert_untouched(msg, changed, {"via"})
    listed = invite().without_top_via()  # the top value shares a line with the next
    assert listed.get_all("via") == invite().get_all("via")[1:]
    assert raw_lines(listed, "via")[1:] == raw_lines(invite(), "via")[1:]


def test_with_body() -> None:
    msg = wsinv()
    text = msg.with_body(b"hello", "text/plain")
    assert (text.body, text.content_type, text.get("content-length")) == (
        b"hello",
        "text/plain",
        "5",
    )
    assert_untouched(msg, text, {"content-type", "content-length"})
    out = bytes(text)
    assert b"\r\nContent-Length: 5\r\n" in out and b"\r\nContent-Type: text/plain\r\n" in out
    assert out.endswith(b"q = 0.33\r\n\r\nhello")
    empty = msg.with_body(b"")
    assert not empty.has("content-type")
    assert empty.get("content-length") == "0"
    same_length = msg.with_body(b"x" * 150)
    assert raw_lines(same_length, "content-length") == ["Content-Length   : 150"]
    assert parse_datagram(bytes(text)).body == b"hello"


def test_with_uri() -> None:
    msg = wsinv().with_uri("sip:other@example.com")
    assert bytes(msg).startswith(b"INVITE sip:other@example.com SIP/2.0\r\nTO :\r\n sip:")
