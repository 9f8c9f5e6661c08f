"""SIP URIs and name-addr values (RFC 3261 sections 19.1, 20.10, 25.1; RFC 5118 section 4).

Each value is parsed, its fields checked, and ``str()`` must give back the exact text.
"""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.uri import (
    NameAddr,
    Params,
    SipUri,
    get_param,
    has_param,
    host_for_socket,
    host_for_uri,
    parse_host,
    parse_params,
    render_params,
    set_param,
    split_commas,
    unescape,
)

# text, scheme, user, password, host, port, params, headers
URIS: list[tuple[str, str, str | None, str | None, str, int | None, Params, str | None]] = [
    ("sip:example.com", "sip", None, None, "example.com", None, (), None),
    ("sip:alice@atlanta.example.com", "sip", "alice", None, "atlanta.example.com", None, (), None),
    (
        "SIP:Alice@Atlanta.example.com:5060",
        "sip",
        "Alice",
        None,
        "Atlanta.example.com",
        5060,
        (),
        None,
    ),
    (
        "sips:bob:secret@192.0.2.4:5061;transport=tcp",
        "sips",
        "bob",
        "secret",
        "192.0.2.4",
        5061,
        (("transport", "tcp"),),
        None,
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
        "sip",
        "+1-212-555-1212",
        "1234",
        "gateway.example.com",
        None,
        (("user", "phone"),),
        None,
    ),
    ("sip:p1.example.com;lr", "sip", None, None, "p1.example.com", None, (("lr", None),), None),
    (
        "sip:alice@atlanta.example.com?subject=project%20x&priority=urgent",
        "sip",
        "alice",
        None,
        "atlanta.example.com",
        None,
        (),
        "subject=project%20x&priority=urgent",
    ),
    (
        "sip:alice@atlanta.example.com;maddr=239.255.255.1;ttl=15?x=y",
        "sip",
        "alice",
        None,
        "atlanta.example.com",
        None,
        (("maddr", "239.255.255.1"), ("ttl", "15")),
        "x=y",
    ),
    # RFC 5118 sections 4.1, 4.3, 4.4, 4.9, 4.10
    ("sip:[2001:db8::10]", "sip", None, None, "[2001:db8::10]", None, (), None),
    ("sip:[2001:db8::10:5070]", "sip", None, None, "[2001:db8::10:5070]", None, (), None),
    ("sip:user@[2001:db8::10]:5070", "sip", "user", None, "[2001:db8::10]", 5070, (), None),
    ("sip:ted@[::ffff:192.0.2.2]", "sip", "ted", None, "[::ffff:192.0.2.2]", None, (), None),
    (
        "sip:user@[2001:db8::192.0.2.1]",
        "sip",
        "user",
        None,
        "[2001:db8::192.0.2.1]",
        None,
        (),
        None,
    ),
    (
        "sip:h;maddr=[2001:db8::1]",
        "sip",
        None,
        None,
        "h",
        None,
        (("maddr", "[2001:db8::1]"),),
        None,
    ),
    # RFC 4475 sections 3.1.1.3 and 3.1.1.9: escapes kept as written
    (
        "sip:user;par=u%40example.net@example.com",
        "sip",
        "user;par=u%40example.net",
        None,
        "example.com",
        None,
        (),
        None,
    ),
    (
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
        "sip",
        "cal%6Cer",
        None,
        "host5.example.net",
        None,
        (("%6C%72", None), ("n%61me", "v%61lue%25%34%31")),
        None,
    ),
    # other schemes are kept opaque
    ("tel:+1-201-555-0123", "tel", None, None, "", None, (), None),
    (
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "nobodyknowsthisscheme",
        None,
        None,
        "",
        None,
        (),
        None,
    ),
    ("soap.beep://192.0.2.103:3002", "soap.beep", None, None, "", None, (), None),
]


@pytest.mark.parametrize(
    ("text", "scheme", "user", "password", "host", "port", "params", "headers"), URIS
)
def test_sip_uri_parse_and_round_trip(
    text: str,
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: Params,
    headers: str | None,
) -> None:
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        scheme,
        user,
        password,
        host,
        port,
    )
    assert (uri.params, uri.headers) == (params, headers)
    assert str(uri) == text
    assert SipUri.parse(str(uri)) == uri
    assert uri.is_sip == (scheme in ("sip", "sips"))


def test_sip_uri_params() -> None:
    uri = SipUri.parse("sip:gw.example.com;Transport=TCP;lr;maddr=192.0.2.1")
    assert uri.transport == "tcp"
    assert uri.param("LR") == ""
    assert uri.param("maddr") == "192.0.2.1"
    assert uri.param("ttl") is None
    assert SipUri.parse("sip:gw.example.com").transport is None


# text, error
URI_ERRORS = [
    ("", "URI has no scheme"),
    ("example.com", "URI has no scheme"),
    ("1sip:example.com", "URI has no scheme"),
    ("sip:", "bad host in URI"),
    ("tel:", "bad URI"),
    ("sip:@example.com", "empty user part in URI"),
    ("sip:user@", "bad host in URI"),
    ("sip:user@-bad.example.com", "bad host in URI"),
    ("sip:user@example.com:", "bad port in URI"),
    ("sip:user@example.com:65536", "bad port in URI"),
    ("sip:user@example.com:5o60", "bad port in URI"),
    ("sip:user@example.com:\xb2", "bad port in URI"),  # isdigit() but not int()
    ("sip:user@example.com;", "bad parameter in URI"),
    ("sip:user@example.com;lr;", "bad parameter in URI"),
    ("sip:user@example.com;a=", "empty parameter value in URI"),
    ("sip:user@example.com;a=b=c", "bad parameter value in URI"),
    ("sip:user@example.com;x=[]", "bad parameter value in URI"),
    ("sip:2001:db8::10", "IPv6 address without [] in URI"),  # RFC 5118 section 4.2
    ("sip:[2001:db8::10", "unterminated IPv6 reference in URI"),
    ("sip:[2001:db8:::192.0.2.1]", "bad IPv6 address in URI"),  # RFC 5118 section 4.10
    ("sip:[example.com]", "bad IPv6 address in URI"),
    ("sip:[2001:db8::10]5070", "junk after IPv6 reference in URI"),
    ("sip:user@example.com ", "illegal character in URI"),  # RFC 4475 section 3.1.2.8
    (" sip:t.watson@example.org", "illegal character in URI"),  # RFC 4475 section 3.1.2.14
    ("<sip:user@example.com>", "illegal character in URI"),  # RFC 4475 section 3.1.2.7
    ('sip:"user"@example.com', "illegal character in URI"),
    ("sip:us\x00er@example.com", "illegal character in URI"),
    ("tel:+1 555", "illegal character in URI"),
]


@pytest.mark.parametrize(("text", "error"), URI_ERRORS)
def test_sip_uri_errors(text: str, error: str) -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse(text)
    assert str(info.value) == error
    assert info.value.status == 400


def test_sip_uri_build() -> None:
    uri = SipUri.build("2001:db8::1", 5060, user="alice", params=(("transport", "tcp"),))
    assert str(uri) == "sip:alice@[2001:db8::1]:5060;transport=tcp"
    assert SipUri.parse(str(uri)) == uri
    plain = SipUri.build("gw.example.com", scheme="sips")
    assert str(plain) == "sips:gw.example.com"
    assert SipUri.parse(str(plain)) == plain


def test_hosts() -> None:
    assert host_for_socket("[2001:db8::1]") == "2001:db8::1"
    assert host_for_socket("192.0.2.1") == "192.0.2.1"
    assert host_for_uri("2001:db8::1") == "[2001:db8::1]"
    assert host_for_uri("[2001:db8::1]") == "[2001:db8::1]"
    assert host_for_uri("gw.example.com") == "gw.example.com"
    assert parse_host("[::1]:5060", "Via") == ("[::1]", 5060)
    assert parse_host("192.0.2.1", "Via") == ("192.0.2.1", None)
    assert parse_host("255.255.255.255:5060", "Via") == ("255.255.255.255", 5060)


# --------------------------------------------------------------------------------------
# escapes (RFC 3261 section 19.1.2; RFC 4475 sections 3.1.1.3 to 3.1.1.5)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("alice", "alice"),
        ("I%20have%20spaces", "I have spaces"),
        ("%75se%72", "user"),
        ("v%61lue%25%34%31", "value%41"),  # once: not "valueA"
        ("%2541", "%41"),
        ("null-%00-null", "null-\x00-null"),  # a NUL does not truncate
        ("%Z%45", "%ZE"),  # a bad escape stays as it is
        ("100%", "100%"),
        ("%e4%C3", "\xe4\xc3"),
    ],
)
def test_unescape_once(text: str, plain: str) -> None:
    assert unescape(text) == plain


def test_uri_unescaped_views() -> None:
    uri = SipUri.parse("sip:sips%3Auser%40example.com@example.net;n%61me=v%61lue%25%34%31;%6C%72")
    assert uri.user == "sips%3Auser%40example.com"
    assert uri.user_unescaped == "sips:user@example.com"
    assert uri.params_unescaped == (("name", "value%41"), ("lr", None))
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net;n%61me=v%61lue%25%34%31;%6C%72"
    assert SipUri.parse("sip:example.com").user_unescaped is None
    nul, nulnul = SipUri.parse("sip:%00@h.example.com"), SipUri.parse("sip:%00%00@h.example.com")
    assert (nul.user_unescaped, nulnul.user_unescaped) == ("\x00", "\x00\x00")
    assert nul != nulnul


# --------------------------------------------------------------------------------------
# name-addr and addr-spec (RFC 3261 section 20.10)
# --------------------------------------------------------------------------------------
# text, display, uri, params
NAME_ADDRS: list[tuple[str, str | None, str, Params]] = [
    ("<sip:alice@atlanta.example.com>", None, "sip:alice@atlanta.example.com", ()),
    (
        "Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Alice",
        "sip:alice@atlanta.example.com",
        (("tag", "1928301774"),),
    ),
    (
        '"Alice Liddell" <sip:alice@atlanta.example.com>',
        '"Alice Liddell"',
        "sip:alice@atlanta.example.com",
        (),
    ),
    (
        '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8',
        '"J Rosenberg \\\\\\""',
        "sip:jdrosen@example.com",
        (("tag", "98asjd8"),),
    ),
    ('"a, b <c>" <sip:x@example.com>', '"a, b <c>"', "sip:x@example.com", ()),
    (
        "caller<sip:caller@example.com>;tag=323",
        "caller",
        "sip:caller@example.com",
        (("tag", "323"),),
    ),  # RFC 4475 section 3.1.1.6
    (
        "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>",
        "token1~` token2'+_ token3*%!.-",
        "sip:mundane@example.com",
        (),
    ),
    # addr-spec: what follows the URI are header params (RFC 4475 section 3.3.12)
    (
        "sip:+19725552222@gw1.example.net;unknownparam",
        None,
        "sip:+19725552222@gw1.example.net",
        (("unknownparam", None),),
    ),
    (
        "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        None,
        "sip:vivekg@chair-dnrc.example.com",
        (("tag", "1918181833n"),),
    ),
    # inside <> the params are the URI's (RFC 4475 section 3.3.13)
    (
        "<sip:+19725552222@gw1.example.net;unknownparam>",
        None,
        "sip:+19725552222@gw1.example.net;unknownparam",
        (),
    ),
    (
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
        None,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        (),
    ),
    (
        '<sip:a@example.com>;+sip.instance="<urn:uuid:1;2>";expires=60',
        None,
        "sip:a@example.com",
        (("+sip.instance", '"<urn:uuid:1;2>"'), ("expires", "60")),
    ),
    ("<urn:service:sos>", None, "urn:service:sos", ()),
    # a '<' inside a quoted header param of an addr-spec does not start a <uri>
    ('sip:a@example.com;x="<y>"', None, "sip:a@example.com", (("x", '"<y>"'),)),
    ("Caller <sip:caller@[2001:db8::1]>", "Caller", "sip:caller@[2001:db8::1]", ()),
]


@pytest.mark.parametrize(("text", "display", "uri", "params"), NAME_ADDRS)
def test_name_addr_parse_and_round_trip(
    text: str, display: str | None, uri: str, params: Params
) -> None:
    addr = NameAddr.parse(f"  {text} ")
    assert (addr.display, str(addr.uri), addr.params) == (display, uri, params)
    assert str(addr) == text
    assert NameAddr.parse(str(addr)) == addr


def test_name_addr_tag_and_params() -> None:
    addr = NameAddr.parse("<sip:a@example.com>;TAG=x1;q=0.5;flag")
    assert addr.tag == "x1"
    assert addr.param("Q") == "0.5"
    assert addr.param("flag") == ""
    assert addr.param("none") is None
    assert NameAddr.parse("<sip:a@example.com>;tag").tag is None


@pytest.mark.parametrize(
    ("text", "tagged"),
    [
        ("sip:bob@biloxi.example.com", "<sip:bob@biloxi.example.com>;tag=t1"),
        ("Bob <sip:bob@biloxi.example.com>", "Bob <sip:bob@biloxi.example.com>;tag=t1"),
        ('"Bob B" <sip:bob@b.example.com>;x=1', '"Bob B" <sip:bob@b.example.com>;x=1;tag=t1'),
        ("<sip:bob@b.example.com>;tag=old;x=1", "<sip:bob@b.example.com>;x=1;tag=t1"),
        # an addr-spec with URI params must gain <> or the params would change owner
        ("sip:bob@b.example.com;user=phone", "<sip:bob@b.example.com>;user=phone;tag=t1"),
    ],
)
def test_with_tag(text: str, tagged: str) -> None:
    addr = NameAddr.parse(text).with_tag("t1")
    assert str(addr) == tagged
    assert addr.tag == "t1"
    assert NameAddr.parse(str(addr)) == addr
    assert NameAddr.parse(text).raw == text  # the original is unchanged


def test_name_addr_build() -> None:
    uri = SipUri.parse("sip:gw@192.0.2.9:5060")
    assert str(NameAddr.build(uri)) == "<sip:gw@192.0.2.9:5060>"
    built = NameAddr.build(uri, display='"Gateway"', params=(("tag", "a1"),))
    assert str(built) == '"Gateway" <sip:gw@192.0.2.9:5060>;tag=a1'
    assert NameAddr.parse(str(built)) == built


NAME_ADDR_ERRORS = [
    ("", "empty To"),
    ("   ", "empty To"),
    ('"Mr. J. User <sip:j.user@example.com>', "unterminated quoted string in To"),
    ('"Bob" sip:bob@example.com', "quoted display name without <uri> in To"),
    ("Bell, Alexander <sip:a.g.bell@example.com>", "display name must be quoted in To"),
    ("<sip:bob@example.com", "unterminated <uri> in To"),
    (
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "addr-spec with headers must use <> in To",
    ),
    ("<sip:bob@example.com> junk", "junk after URI in To"),
    ("<sip:bob@example.com>;", "bad parameter in To"),
    ("<sip:bob@example.com>;tag=a b", "bad parameter value in To"),
    ('<sip:bob@example.com>;x="open', "unterminated quoted string in To"),
    ("< sip:t.watson@example.org >", "illegal character in URI"),
    ("<sip:bob@[::1>", "unterminated IPv6 reference in URI"),
]


@pytest.mark.parametrize(("text", "error"), NAME_ADDR_ERRORS)
def test_name_addr_errors(text: str, error: str) -> None:
    with pytest.raises(SipParseError) as info:
        NameAddr.parse(text, "To")
    assert str(info.value) == error


# --------------------------------------------------------------------------------------
# params and comma lists (RFC 3261 sections 7.3.1, 25.1)
# --------------------------------------------------------------------------------------
def test_params_helpers() -> None:
    params = parse_params(' Branch = z9hG4bK1 ; rport ; x="a;b" ', "Via")
    assert params == (("Branch", "z9hG4bK1"), ("rport", None), ("x", '"a;b"'))
    assert get_param(params, "branch") == "z9hG4bK1"
    assert get_param(params, "RPORT") == ""
    assert has_param(params, "X") and not has_param(params, "y")
    changed = set_param(params, "BRANCH", "z9hG4bK2")
    assert changed == (("rport", None), ("x", '"a;b"'), ("BRANCH", "z9hG4bK2"))
    assert render_params(changed) == ';rport;x="a;b";BRANCH=z9hG4bK2'
    assert parse_params(render_params(changed)[1:], "Via") == changed
    assert parse_params("received=2001:db8::9:255", "Via") == (("received", "2001:db8::9:255"),)


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a", ["a"]),
        ("  a  ", ["a"]),
        ("a, b,c", ["a", "b", "c"]),
        (
            '"Doe, John" <sip:j@example.com>, <sip:k@example.com>',
            ['"Doe, John" <sip:j@example.com>', "<sip:k@example.com>"],
        ),
        ('"a \\", b" <sip:x@h>, <sip:y@h>', ['"a \\", b" <sip:x@h>', "<sip:y@h>"]),
        ("<sip:x@h;p=a,b>, <sip:y@h>", ["<sip:x@h;p=a,b>", "<sip:y@h>"]),
        ("SIP/2.0/UDP a;branch=1 ,\t SIP/2.0/UDP b", ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b"]),
        (";;,,;;,;", [";;", "", ";;", ";"]),  # RFC 4475 section 3.1.1.1, kept as it is
        ("a,", ["a", ""]),
    ],
)
def test_split_commas(value: str, items: list[str]) -> None:
    assert split_commas(value) == items
