"""Digest authentication (gateway/sip/auth.py): RFC 3261 section 22, RFC 7616, RFC 8760.

Layers: the published examples (RFC 7616 section 3.9.1, RFC 2617 section 3.5, RFC 2069
section 2.4 with erratum 749), the challenge parser, the client's nonce reuse, a
client/server pair with time stepped by hand, and the failure tracker.

The examples' inputs and answers are written out below with their RFC section: this
module may not add files under tests/vectors, so they are not loaded from a data file as
STYLE.md habit 6 asks. RFC 4475's regaut01 is loaded from tests/vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from gateway.sip.auth import (
    AuthError,
    AuthResult,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    FailureTracker,
    choose_challenge,
    parse_challenge,
)
from gateway.sip.errors import SipError
from gateway.sip.message import Request, parse_datagram

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# RFC 7616 section 3.9.1: one nonce and opaque, offered with SHA-256 and with MD5.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
)
RFC7616_ANSWERS = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}
# RFC 2617 section 3.5 (qop=auth, MD5) and RFC 2069 section 2.4 (no qop) share these.
RFC2617_NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
RFC2617_OPAQUE = "5ccc069c403ebaf9f0171e9517f40e41"

USERS = {"alice": "wonderland", "bob": "builder"}


def fixed(cnonce: str) -> DigestClient:
    """A client whose cnonce is ``cnonce`` (the published examples fix it)."""
    return DigestClient(Credentials("Mufasa", "Circle of Life"), lambda: cnonce)


def params(value: str) -> dict[str, str]:
    """The parameters of an Authorization value, as written (quotes kept)."""
    assert value.startswith("Digest ")
    out = {}
    for part in value[len("Digest ") :].split(", "):
        name, _, raw = part.partition("=")
        out[name] = raw
    return out


def counter() -> DigestClient:
    """A client whose cnonces are c1, c2, ... so tests can see when a new one is drawn."""
    n = iter(range(1, 1000))
    return DigestClient(Credentials("alice", "wonderland"), lambda: f"c{next(n)}")


# --------------------------------------------------------------------------
# published examples
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_rfc7616_section_3_9_1(alg: str) -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE.format(alg=alg))
    value = fixed(RFC7616_CNONCE).authorization(challenge, "GET", "/dir/index.html")
    # RFC 7616 section 3.4: these quoted, algorithm/qop/nc bare; auth chosen over auth-int.
    assert value == (
        'Digest username="Mufasa", realm="http-auth@example.org", '
        f'nonce="{RFC7616_NONCE}", uri="/dir/index.html", '
        f'response="{RFC7616_ANSWERS[alg]}", algorithm={alg}, cnonce="{RFC7616_CNONCE}", '
        f'qop=auth, nc=00000001, opaque="{RFC7616_OPAQUE}"'
    )


def test_rfc2617_section_3_5() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        f'nonce="{RFC2617_NONCE}", opaque="{RFC2617_OPAQUE}"'
    )
    client = DigestClient(Credentials("Mufasa", "Circle Of Life"), lambda: "0a4f113b")
    got = params(client.authorization(challenge, "GET", "/dir/index.html"))
    assert got["response"] == '"6629fae49393a05397450978507c4ef1"'
    assert (got["qop"], got["nc"], got["cnonce"]) == ("auth", "00000001", '"0a4f113b"')
    assert got["algorithm"] == "MD5"  # the default when the challenge names none


def test_rfc2069_section_2_4_no_qop() -> None:
    """RFC 2069 section 2.4, corrected by erratum 749: the printed response
    e966c932a9242554e42c8ee200cec7f6 is wrong; MD5(HA1:nonce:HA2) is 1949323746fe...."""
    challenge = parse_challenge(
        f'Digest realm="testrealm@host.com", nonce="{RFC2617_NONCE}", opaque="{RFC2617_OPAQUE}"'
    )
    assert challenge.qop == ()
    client = DigestClient(Credentials("Mufasa", "CircleOfLife"))
    value = client.authorization(challenge, "GET", "/dir/index.html")
    got = params(value)
    assert got["response"] == '"1949323746fe6a43ef61f9606e7febea"'
    assert not {"qop", "nc", "cnonce"} & got.keys()  # RFC 2617 section 3.2.2: none without qop
    assert got["opaque"] == f'"{RFC2617_OPAQUE}"'


@pytest.mark.parametrize(("alg", "hash_name"), [("MD5-sess", "md5"), ("SHA-256-sess", "sha256")])
def test_sess_algorithms_follow_rfc7616_section_3_4_2(alg: str, hash_name: str) -> None:
    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{h('Mufasa:http-auth@example.org:Circle of Life')}:{RFC7616_NONCE}:{RFC7616_CNONCE}")
    ha2 = h("GET:/dir/index.html")
    expected = h(f"{ha1}:{RFC7616_NONCE}:00000001:{RFC7616_CNONCE}:auth:{ha2}")
    challenge = parse_challenge(RFC7616_CHALLENGE.format(alg=alg))
    value = fixed(RFC7616_CNONCE).authorization(challenge, "GET", "/dir/index.html")
    assert params(value)["response"] == f'"{expected}"'
    assert params(value)["algorithm"] == alg


def test_auth_int_hashes_the_body_rfc7616_section_3_4_3() -> None:
    def h(text: bytes) -> str:
        return hashlib.md5(text).hexdigest()

    body = b"v=0\r\n"
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    value = DigestClient(Credentials("u", "p"), lambda: "c").authorization(
        challenge, "INVITE", "sip:bob@example.com", body
    )
    ha2 = h(b"INVITE:sip:bob@example.com:" + h(body).encode())
    expected = h(f"{h(b'u:r:p')}:n:00000001:c:auth-int:{ha2}".encode())
    assert params(value)["response"] == f'"{expected}"'
    assert params(value)["qop"] == "auth-int"


# --------------------------------------------------------------------------
# challenge parsing
# --------------------------------------------------------------------------


def test_parse_challenge_fields() -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE.format(alg="SHA-256"))
    assert challenge == Challenge(
        scheme="Digest",
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
        stale=False,
        domain=None,
    )


@pytest.mark.parametrize(
    ("text", "stale"),
    [("stale=true", True), ("stale=TRUE", True), ('stale="true"', True), ("stale=false", False)],
)
def test_stale(text: str, stale: bool) -> None:
    assert parse_challenge(f'Digest realm="r", nonce="n", {text}').stale is stale


def test_parse_is_robust() -> None:
    value = (
        'digest REALM = "a \\"quoted\\", realm" ,,\r\n  Nonce=abc/DEF+=,'
        ' qop=" Auth ,auth-int", Algorithm="md5-SESS", domain="sip:a.example sip:b.example",'
        ' userhash=false, charset=UTF-8 , opaque="\\\\x"'
    )
    challenge = parse_challenge(value)
    assert challenge.realm == 'a "quoted", realm'
    assert challenge.nonce == "abc/DEF+="
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == "MD5-sess"
    assert challenge.domain == "sip:a.example sip:b.example"
    assert challenge.opaque == "\\x"


def test_escaped_realm_is_escaped_again_in_the_answer() -> None:
    challenge = parse_challenge('Digest realm="a\\"b\\\\c", nonce="n", qop="auth"')
    value = DigestClient(Credentials('we"ird\\', "p")).authorization(challenge, "BYE", "sip:x")
    got = params(value)
    assert got["realm"] == '"a\\"b\\\\c"'
    assert got["username"] == '"we\\"ird\\\\"'


def test_regaut01_unknown_scheme_rfc4475_section_3_3_7() -> None:
    message = parse_datagram((VECTORS / "rfc4475" / "regaut01.dat").read_bytes())
    assert isinstance(message, Request)
    value = message.get("authorization")
    assert value is not None
    with pytest.raises(AuthError) as err:
        parse_challenge(value)
    assert err.value.reason == "unsupported scheme NoOneKnowsThisScheme"
    assert isinstance(err.value, SipError)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest realm="r"', "challenge has no nonce"),
        ('Digest nonce="n"', "challenge has no realm"),
        ("Digest", "challenge has no realm"),
        # The quote closes after "nonce=": what follows cannot be a parameter list.
        ('Digest realm="r, nonce="n"', "expected ',' after challenge parameter realm"),
        ('Digest realm="r", nonce="n', "unterminated quoted-string in nonce"),
        ('Digest realm="r", nonce="n\\', "unterminated quoted-string in nonce"),
        ('Basic realm="r"', "unsupported scheme Basic"),
        ("NoOneKnowsThisScheme opaque-data=here", "unsupported scheme NoOneKnowsThisScheme"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "unknown algorithm SHA-512-256"),
        ('Digest realm="r", nonce="n", algorithm=SHA3', "unknown algorithm SHA3"),
        ('Digest realm="r", realm="s", nonce="n"', "duplicate challenge parameter realm"),
        ('Digest realm="r" nonce="n"', "expected ',' after challenge parameter realm"),
        ('Digest realm="r", nonce', "challenge parameter nonce has no value"),
        ('Digest realm="r", nonce=, qop="auth"', "challenge parameter nonce has no value"),
        ('Digest realm="a\x01b", nonce="n"', "control character in quoted realm"),
        ("", "no authentication scheme"),
        ('Digest, realm="r"', "malformed authentication scheme 'Digest,'"),
    ],
)
def test_malformed_challenges(value: str, reason: str) -> None:
    with pytest.raises(AuthError) as err:
        parse_challenge(value)
    assert err.value.reason == reason
    assert str(err.value) == reason


def test_too_many_parameters() -> None:
    value = 'Digest realm="r", nonce="n", ' + ", ".join(f"x{i}=1" for i in range(40))
    with pytest.raises(AuthError, match="more than 32 challenge parameters"):
        parse_challenge(value)


# --------------------------------------------------------------------------
# choosing among challenges (RFC 8760 section 2.4)
# --------------------------------------------------------------------------


def test_choose_prefers_sha256_whatever_the_order() -> None:
    md5 = RFC7616_CHALLENGE.format(alg="MD5")
    sha = RFC7616_CHALLENGE.format(alg="SHA-256")
    for values in ([md5, sha], [sha, md5]):
        chosen = choose_challenge(values)
        assert chosen is not None and chosen.algorithm == "SHA-256"


def test_choose_skips_what_it_cannot_use() -> None:
    values = [
        'Basic realm="r"',
        "NoOneKnowsThisScheme opaque-data=here",
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n2", qop="auth-conf"',  # no qop we can answer
        'Digest realm="r", nonce="n3", algorithm=MD5-sess',  # -sess needs qop
        'Digest realm="r", nonce="n4',  # unterminated
        'Digest realm="r", nonce="n5", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="n6", algorithm=MD5, qop="auth"',
    ]
    chosen = choose_challenge(values)
    assert chosen is not None and chosen.nonce == "n5"  # topmost of the usable equals


def test_choose_prefers_qop_over_rfc2069_then_none() -> None:
    chosen = choose_challenge(
        ['Digest realm="r", nonce="old"', 'Digest realm="r", nonce="qop", qop=auth']
    )
    assert chosen is not None and chosen.nonce == "qop"
    assert choose_challenge([]) is None
    assert choose_challenge(['Basic realm="r"', 'Digest realm="r"']) is None


def test_unusable_challenge_raises_in_authorization() -> None:
    client = DigestClient(Credentials("u", "p"))
    with pytest.raises(AuthError, match="no supported qop in auth-conf"):
        client.authorization(
            parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"'), "A", "B"
        )
    with pytest.raises(AuthError, match="algorithm MD5-sess without qop"):
        client.authorization(
            parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess'), "A", "B"
        )
    assert client.preemptive("r", "A", "B") is None  # nothing was remembered


def test_control_characters_never_reach_the_header() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    with pytest.raises(AuthError, match="control character in username"):
        DigestClient(Credentials("a\r\nX-Injected: 1", "p")).authorization(challenge, "A", "sip:b")
    with pytest.raises(AuthError, match="control character in uri"):
        DigestClient(Credentials("a", "p")).authorization(challenge, "A", "sip:b\r\n")


def test_credentials_repr_hides_the_password() -> None:
    assert "secret" not in repr(Credentials("alice", "secret"))


# --------------------------------------------------------------------------
# the client's nonce reuse (RFC 7616 section 3.4)
# --------------------------------------------------------------------------


def test_nc_counts_up_on_reuse_and_restarts_on_a_new_nonce() -> None:
    client = counter()
    first = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    a = params(client.authorization(first, "INVITE", "sip:b"))
    b = params(client.authorization(first, "INVITE", "sip:b"))
    c = params(client.preemptive("r", "BYE", "sip:b") or "")
    assert (a["nc"], b["nc"], c["nc"]) == ("00000001", "00000002", "00000003")
    assert (a["cnonce"], b["cnonce"], c["cnonce"]) == ('"c1"', '"c2"', '"c3"')  # fresh each time
    assert c["nonce"] == '"n1"' and c["uri"] == '"sip:b"'
    second = dataclasses.replace(first, nonce="n2", stale=True)
    d = params(client.authorization(second, "INVITE", "sip:b"))
    assert (d["nonce"], d["nc"]) == ('"n2"', "00000001")
    e = params(client.preemptive("r", "INVITE", "sip:b") or "")
    assert (e["nonce"], e["nc"]) == ('"n2"', "00000002")


def test_sess_keeps_one_cnonce_per_nonce() -> None:
    client = counter()
    challenge = parse_challenge('Digest realm="r", nonce="n1", qop="auth", algorithm=MD5-sess')
    cnonces = [params(client.authorization(challenge, "A", "sip:b"))["cnonce"] for _ in range(3)]
    assert cnonces == ['"c1"'] * 3


def test_realms_are_separate_and_forgettable() -> None:
    client = counter()
    client.authorization(parse_challenge('Digest realm="carrier", nonce="n", qop=auth'), "A", "u")
    client.authorization(parse_challenge('Digest realm="proxy", nonce="m", qop=auth'), "A", "u")
    assert params(client.preemptive("carrier", "A", "u") or "")["nc"] == "00000002"
    assert params(client.preemptive("proxy", "A", "u") or "")["nonce"] == '"m"'
    assert client.preemptive("elsewhere", "A", "u") is None
    client.forget("carrier")
    assert client.preemptive("carrier", "A", "u") is None
    client.forget("never-seen")  # no error


def test_preemptive_for_an_rfc2069_challenge_has_no_nc() -> None:
    client = counter()
    client.authorization(parse_challenge('Digest realm="r", nonce="n"'), "A", "u")
    value = client.preemptive("r", "A", "u")
    assert value is not None and "nc=" not in value


# --------------------------------------------------------------------------
# client/server pair with time stepped by hand
# --------------------------------------------------------------------------

NOW = 1_000_000.0
TTL = 300.0


def server(
    algorithms: tuple[str, ...] = ("SHA-256", "MD5"), max_nonces: int = 10_000
) -> DigestServer:
    return DigestServer("gateway.example", b"test-secret", TTL, algorithms, max_nonces=max_nonces)


def answer(
    srv: DigestServer,
    user: str = "alice",
    password: str = "wonderland",
    *,
    now: float = NOW,
    method: str = "INVITE",
    uri: str = "sip:bob@gateway.example",
) -> tuple[DigestClient, str]:
    challenge = choose_challenge(srv.challenge_headers(now))
    assert challenge is not None
    client = DigestClient(Credentials(user, password))
    return client, client.authorization(challenge, method, uri)


def test_challenge_headers_rfc7616_section_3_3() -> None:
    headers = server().challenge_headers(NOW)
    assert len(headers) == 2
    sha, md5 = (parse_challenge(h) for h in headers)
    assert (sha.algorithm, md5.algorithm) == ("SHA-256", "MD5")  # preference order
    assert sha.nonce == md5.nonce and sha.opaque == md5.opaque  # as in RFC 7616 3.9.1
    assert sha.realm == "gateway.example" and sha.qop == ("auth",) and not sha.stale
    assert headers[1].startswith('Digest realm="gateway.example", qop="auth", algorithm=MD5, ')
    assert parse_challenge(server().challenge_headers(NOW, stale=True)[0]).stale


def test_round_trip_ok() -> None:
    srv = server()
    client, value = answer(srv)
    assert "algorithm=SHA-256" in value
    assert srv.verify("INVITE", value, USERS.get, NOW + 1) == (AuthResult.OK, "alice")
    later = client.preemptive("gateway.example", "BYE", "sip:bob@gateway.example")
    assert srv.verify("BYE", later, USERS.get, NOW + 2) == (AuthResult.OK, "alice")


def test_round_trip_md5_only() -> None:
    srv = server(algorithms=("MD5",))
    _, value = answer(srv)
    assert "algorithm=MD5," in value
    assert srv.verify("INVITE", value, USERS.get, NOW) == (AuthResult.OK, "alice")


def test_wrong_password_method_or_uri_is_bad() -> None:
    srv = server()
    _, value = answer(srv, password="guess")
    assert srv.verify("INVITE", value, USERS.get, NOW) == (AuthResult.BAD, "alice")
    _, value = answer(srv)
    assert srv.verify("BYE", value, USERS.get, NOW)[0] is AuthResult.BAD  # method is in A2
    uri = "sip:carol@gateway.example"
    assert srv.verify("INVITE", value, USERS.get, NOW, uri=uri)[0] is AuthResult.BAD
    assert srv.verify("INVITE", value, USERS.get, NOW, uri="sip:bob@gateway.example")[0] is (
        AuthResult.OK
    )


def test_unknown_user() -> None:
    srv = server()
    _, value = answer(srv, "mallory", "x")
    assert srv.verify("INVITE", value, USERS.get, NOW) == (AuthResult.UNKNOWN_USER, "mallory")


def test_expired_nonce_is_stale_only_with_the_right_password() -> None:
    srv = server()
    _, value = answer(srv)
    assert srv.verify("INVITE", value, USERS.get, NOW + TTL + 1) == (AuthResult.STALE, "alice")
    _, wrong = answer(srv, password="guess")
    assert srv.verify("INVITE", wrong, USERS.get, NOW + TTL + 1)[0] is AuthResult.BAD
    _, edge = answer(srv)
    assert srv.verify("INVITE", edge, USERS.get, NOW + TTL)[0] is AuthResult.OK
    _, early = answer(srv, now=NOW + 10)  # a stamp from the future: a restarted clock
    assert srv.verify("INVITE", early, USERS.get, NOW)[0] is AuthResult.STALE


def test_tampered_or_foreign_nonce_is_bad() -> None:
    srv = server()
    challenge = choose_challenge(srv.challenge_headers(NOW))
    assert challenge is not None
    nonce = challenge.nonce
    longer = f"{int((NOW + 3600) * 1000):012x}" + nonce[12:]  # stretch its life
    flipped = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    foreign = choose_challenge(
        DigestServer("gateway.example", b"other-secret").challenge_headers(NOW)
    )
    assert foreign is not None
    for bad in (longer, flipped, foreign.nonce, "short", nonce.upper()):
        value = counter().authorization(
            dataclasses.replace(challenge, nonce=bad), "INVITE", "sip:b"
        )
        assert srv.verify("INVITE", value, USERS.get, NOW) == (AuthResult.BAD, "alice"), bad


def test_wrong_opaque_is_bad() -> None:
    srv = server()
    challenge = choose_challenge(srv.challenge_headers(NOW))
    assert challenge is not None
    value = counter().authorization(dataclasses.replace(challenge, opaque="x"), "A", "sip:b")
    assert srv.verify("A", value, USERS.get, NOW)[0] is AuthResult.BAD
    no_opaque = counter().authorization(dataclasses.replace(challenge, opaque=None), "A", "s")
    assert srv.verify("A", no_opaque, USERS.get, NOW)[0] is AuthResult.OK


def test_replayed_nc_is_bad() -> None:
    srv = server()
    client, first = answer(srv)
    assert srv.verify("INVITE", first, USERS.get, NOW)[0] is AuthResult.OK
    assert srv.verify("INVITE", first, USERS.get, NOW + 1) == (AuthResult.BAD, "alice")
    second = client.preemptive("gateway.example", "INVITE", "sip:bob@gateway.example")
    third = client.preemptive("gateway.example", "INVITE", "sip:bob@gateway.example")
    assert srv.verify("INVITE", third, USERS.get, NOW + 2)[0] is AuthResult.OK
    assert srv.verify("INVITE", second, USERS.get, NOW + 3)[0] is AuthResult.BAD  # went back


def test_two_challenges_in_one_millisecond_keep_separate_counts() -> None:
    srv = server()
    _, a = answer(srv, "alice", "wonderland")
    _, b = answer(srv, "bob", "builder")
    assert params(a)["nonce"] != params(b)["nonce"]
    assert srv.verify("INVITE", a, USERS.get, NOW)[0] is AuthResult.OK
    assert srv.verify("INVITE", b, USERS.get, NOW)[0] is AuthResult.OK


def test_auth_int_answer_is_checked_over_the_body() -> None:
    srv = server()
    challenge = choose_challenge(srv.challenge_headers(NOW))
    assert challenge is not None
    auth_int = dataclasses.replace(challenge, qop=("auth-int",))
    value = counter().authorization(auth_int, "INVITE", "sip:b", b"v=0\r\n")
    assert srv.verify("INVITE", value, USERS.get, NOW, b"v=1\r\n")[0] is AuthResult.BAD
    assert srv.verify("INVITE", value, USERS.get, NOW, b"v=0\r\n")[0] is AuthResult.OK


def test_missing_and_other_realm() -> None:
    srv = server()
    assert srv.verify("INVITE", None, USERS.get, NOW) == (AuthResult.MISSING, None)
    other = DigestServer("elsewhere", b"test-secret")
    _, value = answer(other)
    assert srv.verify("INVITE", value, USERS.get, NOW) == (AuthResult.MISSING, "alice")


def valid_credential() -> str:
    _, value = answer(server())
    return value


@pytest.mark.parametrize(
    "value",
    [
        "NoOneKnowsThisScheme opaque-data=here",  # RFC 4475 section 3.3.7
        "Basic YWxpY2U6d29uZGVybGFuZA==",
        'Digest username="alice, realm="gateway.example"',
        "Digest",
        "",
        valid_credential().replace("response=", "reply="),  # no response
        valid_credential().replace(", qop=auth", ""),  # RFC 2069 answer to a qop challenge
        valid_credential().replace("qop=auth", "qop=auth-conf"),
        valid_credential().replace("nc=00000001", "nc=1"),
        valid_credential().replace("nc=00000001", "nc=0000000g"),
        valid_credential().replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
        valid_credential() + ", nc=00000002",  # duplicate parameter
    ],
)
def test_malformed_credentials(value: str) -> None:
    assert server().verify("INVITE", value, USERS.get, NOW) == (AuthResult.MALFORMED, None)


def test_algorithm_not_offered_is_malformed() -> None:
    srv = server(algorithms=("SHA-256",))
    challenge = choose_challenge(srv.challenge_headers(NOW))
    assert challenge is not None
    md5 = counter().authorization(dataclasses.replace(challenge, algorithm="MD5"), "A", "s")
    assert srv.verify("A", md5, USERS.get, NOW) == (AuthResult.MALFORMED, "alice")


def test_utf8_username_and_password_through_the_codec() -> None:
    srv = DigestServer("réseau", b"k")
    users = {"jürgen": "pässword"}
    challenge = choose_challenge(srv.challenge_headers(NOW))
    assert challenge is not None
    value = DigestClient(Credentials("jürgen", "pässword")).authorization(challenge, "A", "s")
    wire = value.encode("latin-1")  # what the codec would send: UTF-8 octets
    assert "jürgen".encode() in wire
    assert srv.verify("A", wire.decode("latin-1"), users.get, NOW) == (AuthResult.OK, "jürgen")


def test_forgotten_nonce_counts_are_never_trusted_again() -> None:
    srv = server(max_nonces=10)
    first = answer(srv, now=NOW)[1]
    assert srv.verify("INVITE", first, USERS.get, NOW)[0] is AuthResult.OK
    for i in range(10):  # ten more live nonces push the first one out
        value = answer(srv, now=NOW + 1 + i)[1]
        assert srv.verify("INVITE", value, USERS.get, NOW + 1 + i)[0] is AuthResult.OK
    assert srv.verify("INVITE", first, USERS.get, NOW + 20)[0] is AuthResult.STALE  # not OK
    # Expired entries are swept when room is needed; later nonces are tracked as before.
    late = NOW + TTL + 100
    value = answer(srv, now=late)[1]
    assert srv.verify("INVITE", value, USERS.get, late)[0] is AuthResult.OK
    assert srv.verify("INVITE", value, USERS.get, late)[0] is AuthResult.BAD
    assert len(srv._nc) <= 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b""},
        {"nonce_ttl": 0.0},
        {"algorithms": ()},
        {"algorithms": ("SHA-512-256",)},
        {"realm": "bad\r\nrealm"},
    ],
)
def test_server_configuration_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"realm": "r", "secret": b"k"} | kwargs
    with pytest.raises(ValueError):
        DigestServer(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# failure tracker
# --------------------------------------------------------------------------


def test_blocks_after_limit_failures_within_the_window() -> None:
    tracker = FailureTracker(limit=3, window=60.0, block_for=300.0)
    assert [tracker.record_failure("10.0.0.1", t) for t in (0.0, 10.0, 20.0)] == [
        False,
        False,
        True,
    ]
    assert tracker.blocked("10.0.0.1", 21.0)
    assert tracker.blocked("10.0.0.1", 319.9)
    assert not tracker.blocked("10.0.0.2", 21.0)
    assert tracker.dropped == 2
    assert not tracker.record_failure("10.0.0.1", 30.0)  # already blocked: not counted again
    assert not tracker.blocked("10.0.0.1", 320.0)  # the block ran out
    assert tracker.dropped == 2
    assert not tracker.record_failure("10.0.0.1", 321.0)  # counting starts afresh


def test_failures_outside_the_window_do_not_add_up() -> None:
    tracker = FailureTracker(limit=3, window=60.0)
    results = [tracker.record_failure("s", t) for t in (0.0, 40.0, 80.0, 120.0, 160.0)]
    assert results == [False] * 5  # never three within 60 s
    assert tracker.record_failure("s", 170.0)  # 120, 160, 170


def test_success_clears_the_count() -> None:
    tracker = FailureTracker(limit=2)
    assert not tracker.record_failure("s", 0.0)
    tracker.record_success("s")
    assert not tracker.record_failure("s", 1.0)
    assert tracker.record_failure("s", 2.0)
    tracker.record_success("s")  # a success does not lift a block
    assert tracker.blocked("s", 3.0)


def test_memory_is_bounded() -> None:
    tracker = FailureTracker(limit=2, window=60.0, block_for=100.0, max_sources=50)
    for i in range(1000):
        tracker.record_failure(f"a{i}", float(i) / 100)
    assert tracker.tracked() <= 50
    for i in range(1000):  # blocked sources are capped too
        tracker.record_failure(f"b{i}", 20.0)
        tracker.record_failure(f"b{i}", 20.0)
    assert tracker.tracked() <= 100
    assert tracker.blocked("b999", 21.0)
    tracker.record_failure("late", 500.0)  # everything else is out of its window or block
    assert tracker.tracked() == 1


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"window": 0.0}, {"block_for": -1.0}, {"max_sources": 0}]
)
def test_tracker_configuration_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailureTracker(**kwargs)  # type: ignore[arg-type]
