"""RFC 4475 (SIP torture messages, section 3) and RFC 5118 (IPv6 torture messages,
section 4) through the gateway's receive path.

The path is the gateway's: ``parse_datagram``; then a request goes through
``validate_request`` with the methods the gateway serves, a response through
``validate_response``; a request that fails gets ``error_response`` (nothing when the
RFC says drop). Every row of both index files (``tests/vectors/*.tsv``, loaded, never
retyped) must have an entry in ``EXPECTED``, with the RFC section that asks for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.message import (
    Request,
    Response,
    SipMessage,
    error_response,
    make_response_from_error,
    parse_datagram,
)
from gateway.sip.uri import NameAddr
from gateway.sip.validate import validate_request, validate_response

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# The methods the gateway serves (REGISTER is not served yet: 405, RFC 3261 section 8.2.1).
ALLOWED = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "PRACK", "UPDATE", "REFER", "NOTIFY"}
)
ALLOW_VALUE = "ACK, BYE, CANCEL, INFO, INVITE, NOTIFY, OPTIONS, PRACK, REFER, UPDATE"


@dataclass(frozen=True)
class Row:
    corpus: str  # "rfc4475" or "rfc5118": the folder of the file
    name: str
    section: str
    expected: str
    note: str

    @property
    def path(self) -> Path:
        return VECTORS / self.corpus / self.name


def load_index(corpus: str, index: str) -> list[Row]:
    lines = (VECTORS / index).read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["name", "section", "expected", "note"]
    rows = []
    for line in lines[1:]:
        name, section, expected, note = line.split("\t")
        rows.append(Row(corpus, name, section, expected, note))
    return rows


ROWS = load_index("rfc4475", "torture_index.tsv") + load_index("rfc5118", "torture_ipv6_index.tsv")
VARIANTS = ["rfc4475/variants/baddn.with-final-crlf.dat", "rfc5118/variants/ipv6-in-sdp.cl241.dat"]

# "ok": accepted (a request passes validate_request, a response validate_response).
# (status, answered, error text): refused with that status; ``answered`` says whether a
# response goes back (False: dropped, as the RFC says, or no Via/CSeq to answer with).
Expected = str | tuple[int, bool, str]
OK = "ok"
NOT_SERVED = "method REGISTER not served"

EXPECTED: dict[str, Expected] = {
    # -- RFC 4475 section 3.1.1: valid messages ---------------------------------------
    "wsinv.dat": OK,  # 3.1.1.1
    "intmeth.dat": (501, True, "method !interesting-Method0123456789_*+`.%indeed'~ not served"),
    # ^ 3.1.1.2: a UAS answers an unknown method with 501 (RFC 3261 section 8.2.1)
    "esc01.dat": OK,  # 3.1.1.3
    "escnull.dat": (405, True, NOT_SERVED),  # 3.1.1.4: valid; REGISTER not served
    "esc02.dat": (501, True, "method RE%47IST%45R not served"),  # 3.1.1.5: not REGISTER
    "lwsdisp.dat": OK,  # 3.1.1.6
    "longreq.dat": OK,  # 3.1.1.7
    "dblreq.dat": (405, True, NOT_SERVED),  # 3.1.1.8: the REGISTER; the INVITE is discarded
    "semiuri.dat": OK,  # 3.1.1.9
    "transports.dat": OK,  # 3.1.1.10
    "mpart01.dat": (405, True, "method MESSAGE not served"),  # 3.1.1.11: MESSAGE not served
    "unreason.dat": OK,  # 3.1.1.12 (a response)
    "noreason.dat": OK,  # 3.1.1.13 (a response)
    # -- RFC 4475 section 3.1.2: invalid messages -------------------------------------
    "badinv01.dat": (400, True, "bad parameter in Via"),  # 3.1.2.1
    "clerr.dat": (400, True, "body shorter than Content-Length"),  # 3.1.2.2 (UDP)
    "ncl.dat": (400, True, "bad Content-Length"),  # 3.1.2.3
    "scalar02.dat": (400, True, "CSeq number out of range"),  # 3.1.2.4
    "scalarlg.dat": (400, False, "CSeq number out of range"),  # 3.1.2.5: response dropped
    "quotbal.dat": (400, True, "unterminated quoted string in To"),  # 3.1.2.6
    "ltgtruri.dat": (400, True, "illegal character in URI"),  # 3.1.2.7
    "lwsruri.dat": (400, True, "malformed Request-Line"),  # 3.1.2.8
    "lwsstart.dat": (400, True, "malformed Request-Line"),  # 3.1.2.9
    "trws.dat": (400, True, "malformed Request-Line"),  # 3.1.2.10
    "escruri.dat": (400, True, "Request-URI carries escaped headers"),  # 3.1.2.11
    "baddate.dat": (400, True, "Date must be in GMT"),  # 3.1.2.12 (RFC 3261 section 20.17)
    "regbadct.dat": (400, True, "addr-spec with headers must use <> in Contact"),  # 3.1.2.13
    "badaspec.dat": (400, True, "illegal character in URI"),  # 3.1.2.14
    "baddn.dat": (400, True, "display name must be quoted in From"),  # 3.1.2.15
    "badvers.dat": (505, True, "SIP version not supported"),  # 3.1.2.16
    "mismatch01.dat": (400, True, "CSeq method does not match the Request-Line"),  # 3.1.2.17
    "mismatch02.dat": (501, True, "CSeq method does not match the Request-Line"),  # 3.1.2.18
    "bigcode.dat": (400, False, "bad status code"),  # 3.1.2.19: response dropped
    # -- RFC 4475 section 3.2: transaction layer ---------------------------------------
    "badbranch.dat": (400, True, "Via branch is only the magic cookie"),  # 3.2.1
    # -- RFC 4475 section 3.3: application layer (the gateway is a UAS) ----------------
    "insuf.dat": (400, True, "missing mandatory header From"),  # 3.3.1
    "unkscm.dat": (416, True, "unsupported URI scheme"),  # 3.3.2
    "novelsc.dat": (416, True, "unsupported URI scheme"),  # 3.3.3
    "unksm2.dat": (405, True, NOT_SERVED),  # 3.3.4: no registrar here, so 405 first
    "bext01.dat": (420, True, "unsupported extension"),  # 3.3.5 (RFC 3261 section 8.2.2.3)
    "invut.dat": (415, True, "unsupported body type"),  # 3.3.6 (RFC 3261 section 8.2.3)
    "regaut01.dat": (405, True, NOT_SERVED),  # 3.3.7
    "multi01.dat": (400, True, "repeated single-valued header CSeq"),  # 3.3.8
    "mcl01.dat": (400, True, "conflicting Content-Length headers"),  # 3.3.9
    "bcast.dat": OK,  # 3.3.10: a response; nothing is ever sent to its second Via
    "zeromf.dat": OK,  # 3.3.11: a UAS answers OPTIONS whatever Max-Forwards (RFC 3261 11)
    "cparam01.dat": (405, True, NOT_SERVED),  # 3.3.12
    "cparam02.dat": (405, True, NOT_SERVED),  # 3.3.13
    "regescrt.dat": (405, True, NOT_SERVED),  # 3.3.14
    "sdp01.dat": (406, True, "no acceptable answer body type"),  # 3.3.15
    # -- RFC 4475 section 3.4: backward compatibility ----------------------------------
    "inv2543.dat": OK,  # 3.4.1: body runs to the end of the datagram
    # -- not in RFC 4475: no version on the Request-Line, a header without ':', and no Via
    # to answer to, so nothing is sent
    "test.dat": (400, False, "malformed header line"),
    # -- RFC 5118 section 4: IPv6 ---------------------------------------------------------
    "ipv6-good.dat": (405, True, NOT_SERVED),  # 4.1: parses; REGISTER not served
    "ipv6-bad.dat": (400, True, "IPv6 address without [] in URI"),  # 4.2
    "port-ambiguous.dat": (405, True, NOT_SERVED),  # 4.3: parses, no port guessed
    "port-unambiguous.dat": (405, True, NOT_SERVED),  # 4.4
    "via-received-param-with-delim.dat": OK,  # 4.5 (robust accept)
    "via-received-param-no-delim.dat": OK,  # 4.5
    # 4.6: Content-Length 268, body 251 octets: shorter body is an error over UDP (RFC 3261
    # section 18.3), see tests/vectors/README.md
    "ipv6-in-sdp.dat": (400, True, "body shorter than Content-Length"),
    "mult-ip-in-header.dat": OK,  # 4.7
    "mult-ip-in-sdp.dat": OK,  # 4.8: Content-Length 181 < 189 octets: body truncated
    "ipv4-mapped-ipv6.dat": OK,  # 4.9: Content-Length 236 < 245 octets: body truncated
    # 4.10: the RFC allows rejecting the extra colon or repairing it; the gateway rejects
    "ipv6-bug-abnf-3-colons.dat": (400, True, "bad IPv6 address in URI"),
    "ipv6-correct-abnf-2-colons.dat": OK,  # 4.10
    # -- variants (tests/vectors/README.md) ------------------------------------------------
    "baddn.with-final-crlf.dat": (400, True, "display name must be quoted in From"),
    "ipv6-in-sdp.cl241.dat": OK,  # 4.6 with Content-Length 241 < 251 octets: truncated
}

# Rows the index calls valid that the gateway refuses on purpose (documented above).
REFUSED_ALTHOUGH_VALID = {"ipv6-in-sdp.dat"}


@dataclass
class Received:
    """What the gateway made of one datagram."""

    msg: SipMessage | None
    error: SipParseError | None
    answer: bytes | None


def receive(data: bytes) -> Received:
    """The gateway's receive path for one UDP datagram, as the transport and UAS run it."""
    try:
        msg = parse_datagram(data)
    except SipParseError as err:
        return Received(None, err, error_response(None, err))
    try:
        if isinstance(msg, Response):
            validate_response(msg)
        else:
            validate_request(msg, ALLOWED, supported=())
    except SipParseError as err:
        answer = error_response(msg, err) if isinstance(msg, Request) else None
        return Received(msg, err, answer)
    return Received(msg, None, None)


def load(name: str) -> bytes:
    for row in ROWS:
        if row.name == name:
            return row.path.read_bytes()
    return (VECTORS / name).read_bytes()


def body_of(data: bytes) -> bytes:
    return data[data.index(b"\r\n\r\n") + 4 :]


# --------------------------------------------------------------------------------------
# the vector files themselves
# --------------------------------------------------------------------------------------
def read_sums(sums: str) -> dict[str, str]:
    out = {}
    for line in (VECTORS / sums).read_text(encoding="ascii").splitlines():
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out


@pytest.mark.parametrize(
    ("sums", "folder"),
    [("rfc4475.sha256", "rfc4475"), ("rfc5118.sha256", "rfc5118"), ("variants.sha256", "")],
)
def test_sha256_files_match_the_vectors(sums: str, folder: str) -> None:
    listed = read_sums(sums)
    base = VECTORS / folder
    for name, digest in listed.items():
        assert hashlib.sha256((base / name).read_bytes()).hexdigest() == digest, name
    if folder:
        on_disk = {p.name for p in base.glob("*.dat")}
        assert on_disk == set(listed)
    else:
        assert sorted(listed) == sorted(VARIANTS)


def test_indexes_name_every_vector_and_the_table_every_row() -> None:
    for corpus in ("rfc4475", "rfc5118"):
        indexed = {row.name for row in ROWS if row.corpus == corpus}
        assert indexed == {p.name for p in (VECTORS / corpus).glob("*.dat")}
    assert len([r for r in ROWS if r.corpus == "rfc4475" and r.section != "(none)"]) == 49
    assert len([r for r in ROWS if r.corpus == "rfc5118"]) == 12
    names = [row.name for row in ROWS] + [Path(v).name for v in VARIANTS]
    assert sorted(EXPECTED) == sorted(names)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_table_agrees_with_the_index(row: Row) -> None:
    """Valid rows are accepted, or refused only for policy (method not served); invalid
    rows are never accepted."""
    outcome = EXPECTED[row.name]
    if row.expected in ("valid", "valid-syntax", "robust-accept", "backward-compat"):
        if row.name in REFUSED_ALTHOUGH_VALID:
            assert outcome != OK
        else:
            assert outcome == OK or outcome[0] in (405, 501)
    elif row.expected in ("invalid", "not-in-rfc"):
        assert outcome != OK


# --------------------------------------------------------------------------------------
# every vector through the receive path
# --------------------------------------------------------------------------------------
def check(data: bytes, outcome: Expected) -> Received:
    got = receive(data)
    if outcome == OK:
        assert got.error is None, got.error
        assert got.msg is not None
        return got
    assert not isinstance(outcome, str)
    status, answered, text = outcome
    assert got.error is not None
    assert (got.error.status, str(got.error)) == (status, text)
    if answered:
        assert got.answer is not None
        check_answer(data, got)
    else:
        assert got.answer is None
    if isinstance(got.msg, Request) and status not in (400, 505):
        structured(got.msg)  # refused for policy only: the message itself is fine
    return got


def check_answer(data: bytes, got: Received) -> None:
    """The answer parses, has the status, and the request's Via, Call-ID, CSeq (RFC 3261
    section 8.2.6.2), a To tag (same for a retransmission, section 8.2.7)."""
    assert got.error is not None and got.answer is not None
    answer = parse_datagram(got.answer)
    assert isinstance(answer, Response)
    assert answer.status == got.error.status
    if got.msg is not None:
        request_headers = [(k, v) for k, v, _ in got.msg.fields]
    else:
        request_headers = got.error.raw_headers
    vias = [v for k, v, _ in answer.fields if k == "via"]
    assert vias == [v for k, v in request_headers if k == "via"]
    for key in ("call-id", "cseq", "from"):
        values = [v for k, v in request_headers if k == key]
        assert answer.count(key) == min(len(values), 1)
        if values:
            assert answer.get(key) == values[0]
    request_to = [v for k, v in request_headers if k == "to"]
    if request_to:
        try:
            had_tag = NameAddr.parse(request_to[0]).tag is not None
        except SipParseError:  # e.g. quotbal: a To that does not parse is copied as it is
            assert answer.get("to") == request_to[0]
        else:
            assert answer.to.tag is not None
            if had_tag:
                assert answer.get("to") == request_to[0]
    assert receive(data).answer == got.answer  # a retransmission gets the same bytes
    for name, value in got.error.extra_headers:
        assert answer.get(name) == value


def structured(msg: SipMessage) -> None:
    """Every structured header the gateway reads parses."""
    assert msg.vias and msg.top_via == msg.vias[0]
    msg.cseq  # noqa: B018
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    assert msg.call_id
    msg.contacts  # noqa: B018
    msg.routes  # noqa: B018
    msg.record_routes  # noqa: B018
    if isinstance(msg, Request):
        msg.uri  # noqa: B018
        msg.max_forwards  # noqa: B018


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_vector(row: Row) -> None:
    data = row.path.read_bytes()
    got = check(data, EXPECTED[row.name])
    if EXPECTED[row.name] == OK:
        assert got.msg is not None
        structured(got.msg)


@pytest.mark.parametrize("path", VARIANTS)
def test_variant(path: str) -> None:
    check((VECTORS / path).read_bytes(), EXPECTED[Path(path).name])


def test_validation_errors_carry_no_start_line() -> None:
    """Why ``error_response`` exists: an error from ``validate_request`` knows nothing of
    the request, so ``make_response_from_error`` alone cannot answer it."""
    msg = parse_datagram(load("unkscm.dat"))
    assert isinstance(msg, Request)
    with pytest.raises(SipParseError) as info:
        validate_request(msg, ALLOWED)
    assert info.value.start_line is None
    assert make_response_from_error(info.value) is None
    answer = error_response(msg, info.value)
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 416 Unsupported URI Scheme\r\n")


# --------------------------------------------------------------------------------------
# what each vector is about (RFC 4475 section 3, RFC 5118 section 4)
# --------------------------------------------------------------------------------------
def request(name: str) -> Request:
    msg = parse_datagram(load(name))
    assert isinstance(msg, Request)
    return msg


def response(name: str) -> Response:
    msg = parse_datagram(load(name))
    assert isinstance(msg, Response)
    return msg


def test_wsinv_folding_and_unknown_headers() -> None:
    """RFC 4475 section 3.1.1.1: folding, LWS, compact and long names, leading zeros;
    unknown headers go out untouched."""
    data = load("wsinv.dat")
    msg = request("wsinv.dat")
    assert msg.uri.params == (("unknownparam", None),)
    assert msg.to.uri.raw == "sip:vivekg@chair-dnrc.example.com"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == '"J Rosenberg \\\\\\""'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.get("subject") == ""
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = msg.contacts
    assert contact.display == '"Quoted string \\"\\""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    [route] = msg.routes
    assert route.uri.params[-1] == ("unknown-no-value", None)
    assert len(msg.body) == 150
    out = bytes(msg)
    assert b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n" in out
    assert b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in out
    assert out == data
    # a change elsewhere leaves them byte-exact too
    changed = bytes(msg.with_prepended("Via", "SIP/2.0/UDP gw.example.net;branch=z9hG4bKgw"))
    assert b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n" in changed


def test_intmeth_token_punctuation() -> None:
    """RFC 4475 section 3.1.1.2."""
    msg = request("intmeth.dat")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.to.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    value = msg.from_.param("fromParam''~+*_!.-%")
    assert value is not None
    working = "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"  # UTF-8 text
    assert value.encode("latin-1").decode("utf-8") == f'"{working}"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    extension = msg.get("extensionHeader-!.%*+_`'~")
    assert extension is not None
    assert extension.encode("latin-1").decode("utf-8") == "\ufeff\u5927\u505c\u96fb"
    answer = receive(load("intmeth.dat")).answer
    assert answer is not None and f"\r\nAllow: {ALLOW_VALUE}\r\n".encode() in answer


def test_esc01_unescapes_once() -> None:
    """RFC 4475 section 3.1.1.3: the Contact param name ends as 'value%41', not 'valueA'."""
    msg = request("esc01.dat")
    assert msg.uri.user_unescaped == "sips:user@example.com"
    assert msg.uri.host == "example.net"
    assert msg.to.uri.user_unescaped == "user"
    assert msg.from_.uri.user_unescaped == "I have spaces"
    [contact] = msg.contacts
    assert contact.uri.user_unescaped == "caller"
    assert contact.uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert contact.uri.params_unescaped == (("lr", None), ("name", "value%41"))
    assert msg.content_type == "application/sdp"


def test_escnull_keeps_nul_and_two_contacts() -> None:
    """RFC 4475 section 3.1.1.4: %00 does not truncate; the two Contacts differ."""
    msg = request("escnull.dat")
    assert msg.to.uri.user_unescaped == "null-\x00-null"
    assert msg.from_.uri.user_unescaped == "null-\x00-null"
    users = [c.uri.user_unescaped for c in msg.contacts]
    assert users == ["\x00", "\x00\x00"]
    assert len({str(c.uri) for c in msg.contacts}) == 2


def test_esc02_method_is_not_register() -> None:
    """RFC 4475 section 3.1.1.5: escapes mean nothing in a method or a header name."""
    msg = request("esc02.dat")
    assert msg.method == "RE%47IST%45R"
    assert msg.to.display == '"%Z%45"'
    assert msg.from_.display == '"%Z%45"'
    assert [str(c.uri) for c in msg.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    answer = receive(load("esc02.dat")).answer
    assert answer is not None and answer.startswith(b"SIP/2.0 501 Not Implemented\r\n")
    assert f"\r\nAllow: {ALLOW_VALUE}\r\n".encode() in answer


def test_lwsdisp_display_name_without_space() -> None:
    """RFC 4475 section 3.1.1.6."""
    msg = request("lwsdisp.dat")
    assert msg.from_.display == "caller"
    assert str(msg.from_.uri) == "sip:caller@example.com"
    assert msg.from_.tag == "323"


def test_longreq_is_not_truncated() -> None:
    """RFC 4475 section 3.1.1.7: lengths as in the file."""
    data = load("longreq.dat")
    msg = request("longreq.dat")
    assert len(msg.vias) == 34
    assert msg.vias[0].host == "sip33.example.com"
    assert msg.vias[-1].received == "192.0.2.5"
    assert len(msg.vias[-1].branch or "") == 215
    assert msg.to.display is not None and len(msg.to.display) == 105
    assert msg.to.uri.port == 6000
    assert [len(n) for n, _ in msg.to.uri.params] == [13, 109, 128]
    assert len(msg.to.uri.params[0][1] or "") == 89
    assert len(msg.from_.tag or "") == 155
    assert len(msg.from_.uri.user or "") == 115
    assert len(msg.from_.params) == 3
    assert len(msg.call_id) == 141
    header = "Unknown-LongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLong-Name"  # noqa: E501
    assert len(msg.get(header) or "") == 306
    assert len(msg.fields) == 43
    assert len(msg.body) == 150
    assert bytes(msg) == data


def test_dblreq_trailing_invite_is_discarded() -> None:
    """RFC 4475 section 3.1.1.8, RFC 3261 section 18.3."""
    msg = request("dblreq.dat")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    out = bytes(msg)
    assert b"INVITE" not in out
    assert out == load("dblreq.dat")[: len(out)]
    assert out.endswith(b"Content-Length: 0\r\n\r\n")


def test_semiuri_user_part_holds_the_param() -> None:
    """RFC 4475 section 3.1.1.9."""
    msg = request("semiuri.dat")
    assert msg.uri.user == "user;par=u%40example.net"
    assert msg.uri.user_unescaped == "user;par=u@example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == ()
    assert msg.get_all("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_five_vias() -> None:
    """RFC 4475 section 3.1.1.10."""
    msg = request("transports.dat")
    assert [(v.transport, v.host) for v in msg.vias] == [
        ("UDP", "t1.example.com"),
        ("SCTP", "t2.example.com"),
        ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"),
        ("TCP", "t5.example.com"),
    ]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body_framed_by_content_length() -> None:
    """RFC 4475 section 3.1.1.11: 553 octets, NULs included."""
    data = load("mpart01.dat")
    msg = request("mpart01.dat")
    assert len(msg.body) == 553
    assert msg.body == body_of(data)
    assert b"\x00" in msg.body
    assert msg.content_type == "multipart/mixed"
    binary = msg.body[msg.body.index(b"Content-Type: application/octet-stream") :]
    assert b"\x00" in binary
    assert bytes(msg) == data


def test_unreason_reason_phrase_is_opaque() -> None:
    """RFC 4475 section 3.1.1.12."""
    msg = response("unreason.dat")
    assert msg.status == 200
    reason = msg.reason.encode("latin-1").decode("utf-8")
    assert reason == (
        "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e"
        "\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e"
        "\u0441\u0442\u043e\u0435"
    )
    assert len(msg.body) == 154
    assert bytes(msg) == load("unreason.dat")


def test_noreason_empty_reason_phrase() -> None:
    """RFC 4475 section 3.1.1.13."""
    msg = response("noreason.dat")
    assert (msg.status, msg.reason) == (100, "")
    assert bytes(msg).startswith(b"SIP/2.0 100 \r\n")


def test_scalar02_and_scalarlg_overflow_caught() -> None:
    """RFC 4475 sections 3.1.2.4 and 3.1.2.5: no overflow; the response is dropped."""
    msg = request("scalar02.dat")
    with pytest.raises(SipParseError, match=r"^CSeq number out of range$"):
        msg.cseq  # noqa: B018
    with pytest.raises(SipParseError, match=r"^bad Max-Forwards$"):
        msg.max_forwards  # noqa: B018
    resp = response("scalarlg.dat")
    with pytest.raises(SipParseError) as info:
        validate_response(resp)
    assert info.value.respond is False
    assert error_response(None, info.value) is None


def test_bigcode_dropped() -> None:
    """RFC 4475 section 3.1.2.19."""
    with pytest.raises(SipParseError) as info:
        parse_datagram(load("bigcode.dat"))
    assert info.value.respond is False
    assert make_response_from_error(info.value) is None


def test_badvers_answered_505() -> None:
    """RFC 4475 section 3.1.2.16."""
    got = receive(load("badvers.dat"))
    assert got.answer is not None
    assert got.answer.startswith(b"SIP/2.0 505 Version Not Supported\r\n")


def test_insuf_answered_400_without_missing_headers() -> None:
    """RFC 4475 section 3.3.1: 400 with what the request had (Via and CSeq)."""
    got = receive(load("insuf.dat"))
    assert got.answer is not None
    answer = parse_datagram(got.answer)
    assert isinstance(answer, Response)
    assert [k for k, _, _ in answer.fields] == ["via", "cseq", "warning", "content-length"]
    assert answer.get("warning") == '399 acs-gateway "missing mandatory header From"'


def test_unkscm_novelsc_416() -> None:
    """RFC 4475 sections 3.3.2 and 3.3.3."""
    assert request("unkscm.dat").uri.scheme == "nobodyknowsthisscheme"
    assert str(request("unkscm.dat").uri) == "nobodyKnowsThisScheme:totallyopaquecontent"
    assert request("novelsc.dat").uri.scheme == "soap.beep"


def test_bext01_unsupported_lists_require_tags_only() -> None:
    """RFC 4475 section 3.3.5; a UAS lists the Require tags (RFC 3261 section 8.2.2.3),
    not the Proxy-Require ones."""
    got = receive(load("bext01.dat"))
    assert got.error is not None
    assert got.error.extra_headers == (
        ("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),
    )
    assert got.answer is not None
    assert b"\r\nUnsupported: nothingSupportsThis, nothingSupportsThisEither\r\n" in got.answer
    assert b"noProxiesSupportThis" not in got.answer
    # a tag the gateway supports is not listed, whatever its case
    msg = request("bext01.dat")
    with pytest.raises(SipParseError) as info:
        validate_request(msg, ALLOWED, supported=("NOTHINGSUPPORTSTHIS",))
    assert info.value.extra_headers == (("Unsupported", "nothingSupportsThisEither"),)
    validate_request(msg, ALLOWED, supported=("nothingsupportsthis", "nothingsupportsthiseither"))


def test_invut_415_with_accept() -> None:
    """RFC 4475 section 3.3.6, RFC 3261 section 8.2.3."""
    got = receive(load("invut.dat"))
    assert got.answer is not None
    assert got.answer.startswith(b"SIP/2.0 415 Unsupported Media Type\r\n")
    assert b"\r\nAccept: application/sdp\r\n" in got.answer


def test_multi01_answer_copies_the_first_of_each() -> None:
    """RFC 4475 section 3.3.8: one CSeq and one Call-ID in the 400."""
    got = receive(load("multi01.dat"))
    assert got.answer is not None
    answer = parse_datagram(got.answer)
    assert answer.count("cseq") == answer.count("call-id") == answer.count("to") == 1
    assert answer.get("cseq") == "5 INVITE"
    assert answer.get("call-id") == "multi01.98asdh@192.0.2.1"
    assert str(answer.to.uri) == "sip:user@example.com"


def test_mcl01_conflicting_lengths() -> None:
    """RFC 4475 section 3.3.9."""
    with pytest.raises(SipParseError, match=r"^conflicting Content-Length headers$"):
        parse_datagram(load("mcl01.dat"))


def test_bcast_second_via_is_broadcast() -> None:
    """RFC 4475 section 3.3.10: parsed, matched by the top Via only; nothing is answered."""
    msg = response("bcast.dat")
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]
    validate_response(msg)
    assert receive(load("bcast.dat")).answer is None


def test_zeromf_options_is_answered_by_the_uas() -> None:
    """RFC 4475 section 3.3.11; RFC 3261 section 11: Max-Forwards 0 stops proxies only."""
    msg = request("zeromf.dat")
    assert msg.max_forwards == 0
    validate_request(msg, ALLOWED)


def test_cparam_header_param_versus_uri_param() -> None:
    """RFC 4475 sections 3.3.12 and 3.3.13."""
    [addr_spec] = request("cparam01.dat").contacts
    assert addr_spec.uri.params == ()
    assert addr_spec.params == (("unknownparam", None),)
    [name_addr] = request("cparam02.dat").contacts
    assert name_addr.uri.params == (("unknownparam", None),)
    assert name_addr.params == ()


def test_regescrt_escaped_route_stays_in_the_uri() -> None:
    """RFC 4475 section 3.3.14."""
    [contact] = request("regescrt.dat").contacts
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_unksm2_and_regaut01_parse() -> None:
    """RFC 4475 sections 3.3.4 and 3.3.7: unknown URI schemes and auth schemes parse."""
    msg = request("unksm2.dat")
    assert (msg.to.uri.scheme, str(msg.to.uri)) == ("isbn", "isbn:2983792873")
    assert str(msg.from_.uri) == "http://www.example.com"
    assert [str(c.uri) for c in msg.contacts] == ["name:John_Smith"]
    auth = request("regaut01.dat").get("authorization")
    assert auth is not None and auth.startswith("NoOneKnowsThisScheme ")
    assert request("regaut01.dat").get("content-length") == "0"


def test_inv2543_body_runs_to_the_end_of_the_datagram() -> None:
    """RFC 4475 section 3.4.1, RFC 3261 section 18.3."""
    data = load("inv2543.dat")
    msg = request("inv2543.dat")
    assert not msg.has("content-length")
    assert not msg.has("max-forwards")
    assert msg.body == body_of(data)
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert msg.top_via.branch is None
    # To is an addr-spec: ';user=phone' is a header param (RFC 3261 section 20.10)
    assert msg.to.uri.params == ()
    assert msg.to.param("user") == "phone"
    assert msg.from_.uri.param("user") == "phone"
    assert msg.record_routes[0].uri.param("maddr") == "ss1.example.com"
    assert bytes(msg).endswith(f"Content-Length: {len(msg.body)}\r\n\r\n".encode() + msg.body)


def test_ipv6_hosts() -> None:
    """RFC 5118 sections 4.1, 4.7, 4.9, 4.10."""
    good = request("ipv6-good.dat")
    assert (good.uri.host, good.uri.port) == ("[2001:db8::10]", None)
    assert good.top_via.host == "[2001:db8::9:1]"
    assert good.contacts[0].uri.host == "[2001:db8::1]"
    mult = request("mult-ip-in-header.dat")
    assert [(v.transport, v.host, v.port) for v in mult.vias] == [
        ("UDP", "[2001:db8::9:1]", 6050),
        ("UDP", "192.0.2.1", None),
        ("TCP", "[2001:db8::9:255]", None),
    ]
    assert mult.vias[2].received == "192.0.2.200"
    mapped = request("ipv4-mapped-ipv6.dat")
    assert [(v.host, v.port) for v in mapped.vias] == [
        ("[::ffff:192.0.2.10]", 19823),
        ("[::ffff:192.0.2.2]", None),
    ]
    assert mapped.contacts[0].uri.host == "[::ffff:192.0.2.2]"
    two = request("ipv6-correct-abnf-2-colons.dat")
    assert two.uri.host == two.to.uri.host == "[2001:db8::192.0.2.1]"


def test_port_ambiguous_and_unambiguous() -> None:
    """RFC 5118 sections 4.3 and 4.4: no port is guessed inside the brackets."""
    ambiguous = request("port-ambiguous.dat").uri
    assert (ambiguous.host, ambiguous.port) == ("[2001:db8::10:5070]", None)
    unambiguous = request("port-unambiguous.dat").uri
    assert (unambiguous.host, unambiguous.port) == ("[2001:db8::10]", 5070)


def test_via_received_both_forms() -> None:
    """RFC 5118 section 4.5."""
    with_delim = request("via-received-param-with-delim.dat").top_via
    assert with_delim.received == "[2001:db8::9:255]"
    assert with_delim.branch == "z9hG4bKas3-111"
    no_delim = request("via-received-param-no-delim.dat").top_via
    assert no_delim.received == "2001:db8::9:255"
    assert no_delim.branch == "z9hG4bKas3"


def test_ipv6_bad_and_three_colons() -> None:
    """RFC 5118 sections 4.2 and 4.10 (rejecting the 3-colon form is allowed)."""
    with pytest.raises(SipParseError, match=r"^IPv6 address without \[\] in URI$"):
        request("ipv6-bad.dat").uri  # noqa: B018
    with pytest.raises(SipParseError, match=r"^bad IPv6 address in URI$"):
        request("ipv6-bug-abnf-3-colons.dat").uri  # noqa: B018


@pytest.mark.parametrize(
    ("name", "length", "octets"),
    [
        ("mult-ip-in-sdp.dat", 181, 189),  # RFC 5118 section 4.8
        ("ipv4-mapped-ipv6.dat", 236, 245),  # RFC 5118 section 4.9
        ("rfc5118/variants/ipv6-in-sdp.cl241.dat", 241, 251),  # section 4.6, variant
    ],
)
def test_rfc5118_longer_body_is_truncated(name: str, length: int, octets: int) -> None:
    """RFC 3261 section 18.3: octets past Content-Length are discarded (README.md)."""
    data = load(name)
    assert len(body_of(data)) == octets
    msg = parse_datagram(data)
    assert msg.get("content-length") == str(length)
    assert msg.body == body_of(data)[:length]


def test_rfc5118_shorter_body_is_rejected() -> None:
    """RFC 5118 section 4.6: Content-Length 268, 251 octets: 400 (README.md)."""
    data = load("ipv6-in-sdp.dat")
    assert len(body_of(data)) == 251
    got = receive(data)
    assert got.error is not None and str(got.error) == "body shorter than Content-Length"
    assert got.answer is not None and got.answer.startswith(b"SIP/2.0 400 Bad Request\r\n")


# --------------------------------------------------------------------------------------
# validation rules beyond the vectors (RFC 3261 section 8.2)
# --------------------------------------------------------------------------------------
def test_mismatch02_501_carries_allow() -> None:
    """RFC 4475 section 3.1.2.18: 501 for the unknown method, with Allow."""
    got = receive(load("mismatch02.dat"))
    assert got.error is not None
    assert got.error.extra_headers == (("Allow", ALLOW_VALUE),)


def test_expires_out_of_range_is_not_fatal() -> None:
    """RFC 3261 sections 20.19 and 10.2.1.1, RFC 4475 section 3.1.2.4: a malformed or huge
    expiry reads as a default; only the CSeq of scalar02 makes it a 400."""
    data = load("scalar02.dat").replace(b"CSeq: 36893488147419103232 REGISTER", b"CSeq: 1 REGISTER")
    assert data != load("scalar02.dat")
    msg = parse_datagram(data.replace(b"Max-Forwards: 300", b"Max-Forwards: 70"))
    assert isinstance(msg, Request)
    assert len(msg.get("expires") or "") == 101
    assert msg.contacts[0].param("expires") == "280297596632815"
    validate_request(msg, ALLOWED | {"REGISTER"})


def test_require_is_ignored_on_ack_and_cancel() -> None:
    """RFC 3261 section 8.2.2.3."""
    msg = request("bext01.dat")
    for method in ("ACK", "CANCEL"):
        changed = Request(method, msg.uri_text, msg.fields, b"").with_header("CSeq", f"8 {method}")
        validate_request(changed, ALLOWED)


def test_validate_response_needs_the_matching_headers() -> None:
    """RFC 3261 section 17.1.3: a response that cannot be matched is dropped."""
    resp = response("noreason.dat")
    validate_response(resp)
    for name in ("via", "from", "to", "call-id", "cseq"):
        with pytest.raises(SipParseError) as info:
            validate_response(resp.without_header(name))
        assert info.value.respond is False
    with pytest.raises(SipParseError) as info:
        validate_response(resp.with_header("Via", "SIP/2.0/UDP"))
    assert (str(info.value), info.value.respond) == ("bad Via sent-by", False)
