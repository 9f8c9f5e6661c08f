"""ACS access-key HMAC (gateway/rest/hmac.py): ACS_REST.md section 2.

Layers: the published constant (hash of the empty body), round trips through `sign`, signatures
made by the SDK's own HMACCredentialsPolicy (azure-communication-callautomation) over an
azure.core request and then tampered with, and every refusal with its reason.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Mapping

import pytest
from azure.communication.callautomation._shared.policy import HMACCredentialsPolicy
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from gateway.rest.errors import RestError
from gateway.rest.hmac import (
    SIGNED_HEADERS,
    content_hash,
    origin_form,
    parse_http_date,
    sign,
    string_to_sign,
    verify,
)

KEY = b"a 32 byte access key for tests.."
KEY_B64 = base64.b64encode(KEY).decode("ascii")
NOW = 1_795_000_000.0  # 2026-11-18
HOST = "127.0.0.1:8443"
TARGET = "/calling/callConnections?api-version=2026-03-12"
BODY = b'{"targets": [{"rawId": "4:+15551234567"}], "callbackUri": "https://cb/x"}'


def signed(
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    host: str = HOST,
    now: float = NOW,
    key: bytes = KEY,
) -> dict[str, str]:
    """Lower-case headers of a request signed with `sign`, Host included."""
    headers = {
        name.lower(): value for name, value in sign(method, target, host, body, key, now).items()
    }
    headers["host"] = host
    return headers


def denied(
    headers: Mapping[str, str],
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    now: float = NOW,
    key: bytes = KEY,
) -> str:
    """The reason `verify` refuses with; fails the test if it accepts."""
    with pytest.raises(RestError) as info:
        verify(method, target, headers, body, key, now)
    assert (info.value.status, info.value.code) == (401, "Denied")
    assert info.value.body() == {"error": {"code": "Denied", "message": info.value.message}}
    return info.value.message


# -- the algorithm's parts ---------------------------------------------------------------------


def test_empty_body_hash_is_the_published_constant() -> None:
    # ACS_REST.md section 2 step 5
    assert content_hash(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_string_to_sign_joins_the_last_line_with_semicolons() -> None:
    text = string_to_sign("post", "/p?q=1", "Mon, 23 Nov 2026 23:25:42 GMT", "h:1", "HASH")
    assert text == "POST\n/p?q=1\nMon, 23 Nov 2026 23:25:42 GMT;h:1;HASH"


def test_sign_produces_the_sdk_header_shapes() -> None:
    headers = sign("GET", "/x", HOST, b"", KEY, NOW)
    assert set(headers) == {"x-ms-date", "x-ms-content-sha256", "Authorization"}
    assert headers["x-ms-date"] == email.utils.formatdate(NOW, usegmt=True)
    assert headers["x-ms-date"].endswith(" GMT")
    assert headers["Authorization"].startswith(
        f"HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature="
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("Sun, 06 Nov 1994 08:49:37 -0000", 784111777.0),
        ("Sun, 06 Nov 1994 09:49:37 +0100", 784111777.0),
        ("yesterday", None),
        ("", None),
        ("Sun, 06 Nov 1994 25:99:37 GMT", None),
    ],
)
def test_parse_http_date(value: str, expected: float | None) -> None:
    assert parse_http_date(value) == expected


def test_origin_form_strips_an_absolute_target() -> None:
    assert origin_form("/a?b") == "/a?b"
    assert origin_form("https://h:1/a?b") == "/a?b"
    assert origin_form("https://h:1") == "/"


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", TARGET, BODY),
        ("GET", "/calling/callConnections/cc1?api-version=2026-03-12", b""),
        ("DELETE", "/calling/callConnections/cc1?api-version=2026-03-12", b""),
        ("POST", "/calling/callConnections/cc1:terminate?api-version=2026-03-12", b""),
        ("GET", "/calling/callConnections/cc1/participants/4%3A%2B15551234567?api-version=x", b""),
        ("POST", "/x", '{"name": "Zoë ☎"}'.encode()),
    ],
)
def test_round_trip(method: str, target: str, body: bytes) -> None:
    verify(method, target, signed(method, target, body), body, KEY, NOW)


def test_skew_bounds() -> None:
    headers = signed()
    verify("POST", TARGET, headers, BODY, KEY, NOW + 899)
    verify("POST", TARGET, headers, BODY, KEY, NOW - 899)
    assert "away from the server clock" in denied(headers, now=NOW + 901)
    assert "away from the server clock" in denied(headers, now=NOW - 901)
    verify("POST", TARGET, headers, BODY, KEY, NOW + 1000, skew=1200)


def test_default_https_port_in_either_form() -> None:
    # pitfall in section 2 step 4: the signed host may say :443 where Host does not, or reverse
    explicit = signed(host="gw.example:443")
    explicit["host"] = "gw.example"
    verify("POST", TARGET, explicit, BODY, KEY, NOW)
    implicit = signed(host="gw.example")
    implicit["host"] = "gw.example:443"
    verify("POST", TARGET, implicit, BODY, KEY, NOW)
    other_port = signed(host="gw.example:8443")
    other_port["host"] = "gw.example"
    denied(other_port)


def test_ipv6_host() -> None:
    headers = signed(host="[::1]:8443")
    verify("POST", TARGET, headers, BODY, KEY, NOW)
    headers = signed(host="[::1]")
    headers["host"] = "[::1]:443"
    verify("POST", TARGET, headers, BODY, KEY, NOW)


# -- signatures made by the SDK's own policy ---------------------------------------------------


def sdk_signed(
    method: str, url: str, body: object | None = None, endpoint: str = f"https://{HOST}"
) -> tuple[str, dict[str, str], bytes]:
    """(raw target, lower-case headers with Host, raw body) as the SDK policy signs them."""
    request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
    HMACCredentialsPolicy(endpoint, KEY_B64).on_request(
        PipelineRequest(request, PipelineContext(None))
    )
    headers = {name.lower(): value for name, value in request.headers.items()}
    netloc = url.split("//", 1)[1].split("/", 1)[0]
    headers["host"] = netloc.removesuffix(":443")  # what urllib3 sends
    target = "/" + url.split("//", 1)[1].split("/", 1)[1]
    raw = request.content.encode("utf-8") if isinstance(request.content, str) else b""
    return target, headers, raw


CREATE_URL = f"https://{HOST}/calling/callConnections?api-version=2026-03-12"
CREATE_BODY = {"targets": [{"rawId": "4:+15551234567", "phoneNumber": {"value": "+15551234567"}}],
               "callbackUri": "https://cb/x", "sourceDisplayName": "Zoë"}  # fmt: skip


def test_sdk_signature_is_accepted() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    assert b"\\u00eb" in body  # json.dumps escapes non-ASCII: the hash covers these bytes
    verify("POST", target, headers, body, KEY, time.time())


def test_sdk_signature_on_a_bodyless_get_with_an_encoded_path() -> None:
    path = "/calling/callConnections/cc1/participants/4%3A%2B15551234567"
    url = f"https://{HOST}{path}?api-version=2026-03-12"
    target, headers, body = sdk_signed("GET", url)
    assert body == b""
    verify("GET", target, headers, body, KEY, time.time())
    decoded = target.replace("4%3A%2B", "4:+")
    assert "signature does not match" in denied(headers, "GET", decoded, b"", time.time())


def test_sdk_signature_with_an_explicit_443_endpoint() -> None:
    url = "https://gw.example:443/calling/callConnections?api-version=2026-03-12"
    target, headers, body = sdk_signed("POST", url, CREATE_BODY, endpoint="https://gw.example:443")
    assert headers["host"] == "gw.example"
    verify("POST", target, headers, body, KEY, time.time())


def test_sdk_signature_tampered_body() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    tampered = body.replace(b"+15551234567", b"+15559999999")
    reason = denied(headers, target=target, body=tampered, now=time.time())
    assert reason == "Request 'x-ms-content-sha256' differs from generated content hash."
    # the attacker also fixes the hash header: then the signature no longer matches
    fixed = {**headers, "x-ms-content-sha256": content_hash(tampered)}
    assert "signature" in denied(fixed, target=target, body=tampered, now=time.time())


@pytest.mark.parametrize(
    "target_edit",
    [
        lambda t: t.replace("callConnections", "callConnections:answer"),
        lambda t: t.replace("2026-03-12", "2025-06-15"),
        lambda t: t.split("?")[0],
        lambda t: t + "&x=1",
    ],
)
def test_sdk_signature_tampered_path_or_query(target_edit: object) -> None:
    assert callable(target_edit)
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    assert "signature" in denied(headers, target=target_edit(target), body=body, now=time.time())


def test_sdk_signature_tampered_method() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    assert "signature" in denied(headers, "PUT", target, body, time.time())


def test_sdk_signature_tampered_date() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    now = time.time()
    later = {**headers, "x-ms-date": email.utils.formatdate(now + 60, usegmt=True)}
    assert "signature" in denied(later, target=target, body=body, now=now)
    stale = {**headers, "x-ms-date": email.utils.formatdate(now - 3600, usegmt=True)}
    assert "away from the server clock" in denied(stale, target=target, body=body, now=now)


def test_sdk_signature_tampered_host() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    for host in ("127.0.0.1:8444", "localhost:8443", "127.0.0.1"):
        moved = {**headers, "host": host}
        assert "signature" in denied(moved, target=target, body=body, now=time.time())


def test_sdk_signature_wrong_key() -> None:
    target, headers, body = sdk_signed("POST", CREATE_URL, CREATE_BODY)
    assert "signature" in denied(headers, target=target, body=body, now=time.time(), key=b"x" * 32)


# -- refusals and their reasons ----------------------------------------------------------------


def without(headers: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


def test_missing_headers() -> None:
    headers = signed()
    assert denied(without(headers, "authorization")) == "Missing 'Authorization' header."
    assert denied(without(headers, "x-ms-date")) == "Missing 'x-ms-date' header."
    assert denied(without(headers, "x-ms-content-sha256")) == (
        "Missing 'x-ms-content-sha256' header."
    )
    assert denied(without(headers, "host")) == "Missing 'Host' header."
    assert denied({**headers, "host": ""}) == "Missing 'Host' header."


def test_unparsable_date() -> None:
    assert "Unparsable 'x-ms-date'" in denied({**signed(), "x-ms-date": "2026-11-18T00:00:00Z"})


def with_authorization(value: str) -> dict[str, str]:
    return {**signed(), "authorization": value}


def test_wrong_scheme() -> None:
    reason = denied(with_authorization("Bearer eyJ0eXAi"))
    assert reason == "Unsupported authorization scheme 'Bearer'; expected HMAC-SHA256."


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    headers = signed()
    auth = headers["authorization"].replace("HMAC-SHA256", "hmac-sha256")
    auth = auth.replace("SignedHeaders=", "signedheaders=").replace("&Signature=", "&SIGNATURE=")
    verify("POST", TARGET, {**headers, "authorization": auth}, BODY, KEY, NOW)


@pytest.mark.parametrize(
    "signed_headers",
    [
        "host;x-ms-date;x-ms-content-sha256",
        "x-ms-date;host",
        "x-ms-date;host;x-ms-content-sha256;a",
    ],
)
def test_wrong_signed_headers(signed_headers: str) -> None:
    signature = signed()["authorization"].split("Signature=")[1]
    reason = denied(
        with_authorization(f"HMAC-SHA256 SignedHeaders={signed_headers}&Signature={signature}")
    )
    assert reason.startswith(f"SignedHeaders must be '{SIGNED_HEADERS}'")


@pytest.mark.parametrize(
    "value",
    [
        "HMAC-SHA256",
        "HMAC-SHA256 ",
        "HMAC-SHA256 garbage",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=",
        "HMAC-SHA256 Signature=abc&Signature=abc",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=not base64!",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=YWJj",
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=" + "A" * 600,
    ],
)
def test_garbled_authorization(value: str) -> None:
    assert denied(with_authorization(value)).startswith("Garbled 'Authorization' header")


def test_extra_authorization_parameters_are_ignored() -> None:
    # App Configuration's variant has Credential=...; ACS has none (section 2 step 8)
    headers = signed()
    auth = headers["authorization"].replace("HMAC-SHA256 ", "HMAC-SHA256 Credential=id&")
    verify("POST", TARGET, {**headers, "authorization": auth}, BODY, KEY, NOW)


def test_signature_mismatch_reason() -> None:
    reason = denied(signed(), key=b"another key")
    assert reason == "Request signature does not match (wrong access key, host or path?)."


def test_absolute_form_target_verifies_over_its_path() -> None:
    headers = signed()
    verify("POST", f"https://{HOST}{TARGET}", headers, BODY, KEY, NOW)
