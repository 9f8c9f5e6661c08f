"""gateway.nat.credentials: time-limited TURN credentials (TURN REST API draft, coturn's
use-auth-secret) and the long-term key the TURN server derives from them.

The password is checked against an independent transcription of the draft's formula
(base64 of HMAC-SHA1 keyed with the shared secret over the username), and against a value
computed once with openssl so a change in encoding shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.nat import stun
from gateway.nat.credentials import (
    TurnAuth,
    check_credentials,
    make_credentials,
    parse_username,
    rest_password,
)

SECRET = "north"
NOW = 1_700_000_000.75


def reference_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_make_credentials() -> None:
    username, password = make_credentials(SECRET, "alice", 3600, NOW)
    assert username == "1700003600:alice"
    assert password == reference_password(SECRET, username)
    assert len(base64.b64decode(password)) == 20


def test_known_password() -> None:
    # base64(HMAC-SHA1("north", "1700003600:alice")), computed with openssl:
    # printf %s 1700003600:alice | openssl dgst -sha1 -hmac north -binary | base64
    assert rest_password(SECRET, "1700003600:alice") == "wjwSXO2ch1B6VaLTLMy2Avn5O9o="
    assert rest_password(SECRET.encode(), "x") == rest_password(SECRET, "x")


def test_empty_user_gives_bare_expiry() -> None:
    username, _ = make_credentials(SECRET, "", 60, NOW)
    assert username == "1700000060"
    assert parse_username(username) == (1700000060, "")


@pytest.mark.parametrize(("secret", "ttl"), [(SECRET, 0), (SECRET, -5), ("", 60), (b"", 60)])
def test_make_credentials_refuses(secret: str | bytes, ttl: int) -> None:
    with pytest.raises(ValueError):
        make_credentials(secret, "alice", ttl, NOW)


@pytest.mark.parametrize(
    ("username", "parsed"),
    [
        ("1700003600:alice", (1700003600, "alice")),
        ("1700003600:alice:with:colons", (1700003600, "alice:with:colons")),
        ("1700003600:", (1700003600, "")),
        ("0:x", (0, "x")),
    ],
)
def test_parse_username(username: str, parsed: tuple[int, str]) -> None:
    assert parse_username(username) == parsed


@pytest.mark.parametrize(
    "username",
    [
        "alice",
        "alice:1700003600",
        "",
        ":alice",
        "17000036 00:a",
        "\u0661\u0662:a",
        "1" * 13 + ":a",
        "-1:a",
        "+1:a",
        "1700003600\n",
    ],
)
def test_parse_username_refuses(username: str) -> None:
    with pytest.raises(ValueError, match="not a time-limited TURN username"):
        parse_username(username)


def test_check_credentials() -> None:
    username, password = make_credentials(SECRET, "alice", 600, NOW)
    assert check_credentials(SECRET, username, password, NOW)
    assert check_credentials(SECRET, username, password, 1700000600)  # the expiry second
    assert not check_credentials(SECRET, username, password, 1700000600.001)  # expired
    assert not check_credentials(SECRET, username, password, NOW + 601)
    assert not check_credentials("other", username, password, NOW)
    assert not check_credentials(SECRET, username, password[:-2] + "AA", NOW)
    assert not check_credentials(SECRET, "1700000600:bob", password, NOW)
    assert not check_credentials(SECRET, "alice", password, NOW)
    assert not check_credentials("", username, password, NOW)


def test_turn_auth_time_limited_key() -> None:
    auth = TurnAuth(realm="gateway.local", secret=SECRET)
    username, password = make_credentials(SECRET, "alice", 600, NOW)
    key = auth.key_for(username, NOW)
    assert key == stun.long_term_key(username, "gateway.local", password)
    assert key == hashlib.md5(f"{username}:gateway.local:{password}".encode()).digest()
    assert auth.refusal(username, NOW) is None
    assert auth.key_for(username, NOW + 601) is None
    assert auth.refusal(username, NOW + 601) == "TURN username expired at 1700000600"


def test_turn_auth_key_verifies_a_client_request() -> None:
    """End to end: a client signs an Allocate with the credentials, the server's key checks."""
    auth = TurnAuth(realm="gateway.local", secret=SECRET)
    username, password = make_credentials(SECRET, "alice", 600, NOW)
    client_key = stun.long_term_key(username, "gateway.local", password)
    request = (
        stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, bytes(range(12)))
        .with_requested_transport()
        .with_username(username)
        .with_realm("gateway.local")
        .with_nonce("abc")
        .with_integrity(client_key)
        .with_fingerprint()
    )
    raw = bytes(request)
    received = stun.Message.parse(raw)
    received_username = received.username()
    assert received_username is not None
    server_key = auth.key_for(received_username, NOW)
    assert server_key is not None
    assert stun.check_integrity(raw, server_key)


def test_turn_auth_static_users() -> None:
    auth = TurnAuth(realm="r", users={"bob": "pw", "1234": "numeric"})
    assert auth.key_for("bob", NOW) == stun.long_term_key("bob", "r", "pw")
    assert auth.key_for("carol", NOW) is None
    assert auth.refusal("carol", NOW) == "unknown TURN user 'carol'"
    # Without a secret a numeric name is an ordinary static user.
    assert auth.key_for("1234", NOW) == stun.long_term_key("1234", "r", "numeric")


def test_turn_auth_both_sources() -> None:
    auth = TurnAuth(realm="r", secret=SECRET, users={"bob": "pw"})
    username, password = make_credentials(SECRET, "bob", 60, NOW)
    assert auth.key_for(username, NOW) == stun.long_term_key(username, "r", password)
    assert auth.key_for("bob", NOW) == stun.long_term_key("bob", "r", "pw")
    assert auth.key_for("1:bob", NOW) is None  # time-limited form, long expired


def test_turn_auth_without_secret_refuses_time_limited_names() -> None:
    auth = TurnAuth(realm="r")
    username, _ = make_credentials(SECRET, "alice", 60, NOW)
    assert auth.key_for(username, NOW) is None
