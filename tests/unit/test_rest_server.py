"""The REST HTTPS server (gateway/rest/server.py) driven by the real ACS SDK over loopback TLS.

The server runs on its own Twisted reactor instance in a background thread (not the global
reactor, so nothing else in the test session is affected), listening on 127.0.0.1 port 0 with a
throwaway certificate from gateway.tlsutil. A recording fake Api stands in for gateway.rest.api.
The client is ``azure-communication-callautomation`` itself (ACS_REST.md: the real client this
surface serves); requests the SDK cannot send (replays, broken JSON, bad versions) go through
http.client, signed with gateway.rest.hmac.sign. Also: the pure router, one row per route.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from gateway.config import HostPort, RestConfig
from gateway.rest.errors import RestError
from gateway.rest.hmac import sign
from gateway.rest.server import Reply, Route, listen, route
from gateway.tlsutil import ensure_certificate

KEY = b"rest server test access key 32b!"
KEY_B64 = base64.b64encode(KEY).decode("ascii")
VERSION = "api-version=2026-03-12"
PSTN = {"kind": "phoneNumber", "rawId": "4:+15551234567", "phoneNumber": {"value": "+15551234567"}}
CALL = {"callConnectionId": "cc1", "serverCallId": "sc1", "targets": [PSTN],
        "callConnectionState": "connecting", "callbackUri": "https://cb/x",
        "correlationId": "corr-1"}  # fmt: skip


@dataclass
class FakeApi:
    """Records every call; answers from `replies` (a Reply, or an exception to raise)."""

    calls: list[tuple[str, dict[str, str], Mapping[str, object] | None]] = field(
        default_factory=list
    )
    replies: dict[str, Reply | Exception] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def handle(self, op: str, ids: Mapping[str, str], body: Mapping[str, object] | None) -> Reply:
        self.calls.append((op, dict(ids), body))
        reply = self.replies.get(op, RestError(404, "8522", f"no reply for {op}"))
        if isinstance(reply, Exception):
            raise reply
        return reply

    def recording_file(self, recording_id: str) -> Path | None:
        return self.files.get(recording_id)


@dataclass
class Served:
    port: int
    cert: Path
    api: FakeApi
    tmp: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, key: str = KEY_B64) -> CallAutomationClient:
        return CallAutomationClient.from_connection_string(
            f"endpoint=https://{self.host}/;accesskey={key}",
            connection_verify=str(self.cert),
            retry_backoff_factor=0.01,
        )

    def raw(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        key: bytes = KEY,
    ) -> tuple[int, dict[str, str], bytes]:
        """A request signed with `sign` over http.client: (status, lower-case headers, body)."""
        context = ssl.create_default_context(cafile=str(self.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            sent = {**sign(method, target, self.host, body, key, time.time()), **(headers or {})}
            if body:
                sent["Content-Type"] = "application/json"
            conn.request(method, target, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()


@pytest.fixture(scope="module")
def reactor() -> Iterator[Any]:
    own = EPollReactor()  # type: ignore[no-untyped-call]
    thread = threading.Thread(target=own.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    yield own
    own.callFromThread(own.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def served(reactor: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("rest")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    ensure_certificate(cert, key, ["127.0.0.1"])
    api = FakeApi()
    rest = RestConfig(listen=HostPort("127.0.0.1", 0))
    port = blockingCallFromThread(reactor, listen, reactor, rest, cert, key, api, KEY)
    yield Served(port.getHost().port, cert, api, tmp)
    blockingCallFromThread(reactor, port.stopListening)


@pytest.fixture
def gw(served: Served) -> Served:
    served.api.calls.clear()
    served.api.replies.clear()
    served.api.files.clear()
    return served


def error_of(body: bytes) -> tuple[str, str]:
    error = json.loads(body)["error"]
    return error["code"], error["message"]


# -- through the SDK ---------------------------------------------------------------------------


def test_create_call(gw: Served) -> None:
    gw.api.replies["create"] = Reply(201, CALL)
    props = gw.client().create_call(
        PhoneNumberIdentifier("+15551234567"),
        "https://cb/x",
        source_caller_id_number=PhoneNumberIdentifier("+15550000000"),
        operation_context="ctx",
    )
    assert gw.api.calls == [("create", {}, {
        "targets": [{"rawId": "4:+15551234567", "phoneNumber": {"value": "+15551234567"}}],
        "sourceCallerIdNumber": {"value": "+15550000000"},
        "operationContext": "ctx",
        "callbackUri": "https://cb/x",
    })]  # fmt: skip
    assert props.call_connection_id == "cc1"
    assert props.server_call_id == "sc1"
    assert props.call_connection_state == "connecting"
    assert props.correlation_id == "corr-1"
    assert [t.raw_id for t in props.targets or []] == ["4:+15551234567"]


def test_wrong_key_is_client_authentication_error(gw: Served) -> None:
    other = base64.b64encode(b"x" * 32).decode("ascii")
    with pytest.raises(ClientAuthenticationError) as info:
        gw.client(other).get_call_connection("cc1").get_call_properties()
    assert "(Denied) Request signature does not match" in str(info.value)
    assert gw.api.calls == []


def test_get_participant_decodes_the_raw_id(gw: Served) -> None:
    participant = {"identifier": PSTN, "isMuted": True, "isOnHold": False}
    gw.api.replies["get_participant"] = Reply(200, participant)
    got = (
        gw.client()
        .get_call_connection("cc1")
        .get_participant(PhoneNumberIdentifier("+15551234567"))
    )
    assert gw.api.calls == [
        ("get_participant", {"call": "cc1", "participant": "4:+15551234567"}, None)
    ]
    assert got.identifier.raw_id == "4:+15551234567"
    assert got.is_muted is True


def test_list_participants(gw: Served) -> None:
    user = {
        "kind": "communicationUser",
        "rawId": "8:acs:gw_1",
        "communicationUser": {"id": "8:acs:gw_1"},
    }
    value = [{"identifier": PSTN, "isMuted": False}, {"identifier": user, "isMuted": False}]
    gw.api.replies["list_participants"] = Reply(200, {"value": value})
    got = list(gw.client().get_call_connection("cc1").list_participants())
    assert [p.identifier.raw_id for p in got] == ["4:+15551234567", "8:acs:gw_1"]
    assert gw.api.calls == [("list_participants", {"call": "cc1"}, None)]


def test_204_hang_up_and_terminate(gw: Served) -> None:
    gw.api.replies["hang_up"] = Reply(204, None)
    gw.api.replies["terminate"] = Reply(204, None)
    connection = gw.client().get_call_connection("cc1")
    connection.hang_up(is_for_everyone=False)
    connection.hang_up(is_for_everyone=True)
    assert gw.api.calls == [
        ("hang_up", {"call": "cc1"}, None),
        ("terminate", {"call": "cc1"}, None),
    ]


def test_202_and_200_answers(gw: Served) -> None:
    gw.api.replies["participants:add"] = Reply(
        202, {"participant": {"identifier": PSTN, "isMuted": False}, "operationContext": "oc",
              "invitationId": "inv-1"})  # fmt: skip
    gw.api.replies["participants:mute"] = Reply(200, {"operationContext": "m"})
    gw.api.replies["hold"] = Reply(200, None)
    gw.api.replies["cancelAllMediaOperations"] = Reply(202, None)
    connection = gw.client().get_call_connection("cc1")
    added = connection.add_participant(
        PhoneNumberIdentifier("+15551234567"), operation_context="oc"
    )
    assert (added.invitation_id, added.operation_context) == ("inv-1", "oc")
    muted = connection.mute_participant(
        CommunicationUserIdentifier("8:acs:x"), operation_context="m"
    )
    assert muted.operation_context == "m"
    connection.hold(PhoneNumberIdentifier("+15551234567"))
    connection.cancel_all_media_operations()
    assert [(op, ids) for op, ids, _ in gw.api.calls] == [
        ("participants:add", {"call": "cc1"}),
        ("participants:mute", {"call": "cc1"}),
        ("hold", {"call": "cc1"}),
        ("cancelAllMediaOperations", {"call": "cc1"}),
    ]
    assert gw.api.calls[3][2] is None  # body-less POST, Content-Length: 0


def test_recordings(gw: Served) -> None:
    state = {
        "recordingId": "rec1",
        "recordingState": "active",
        "recordingKind": "azureCommunicationServices",
    }
    gw.api.replies["start_recording"] = Reply(200, state)
    gw.api.replies["get_recording"] = Reply(200, state)
    gw.api.replies["pause_recording"] = Reply(202, None)
    gw.api.replies["stop_recording"] = Reply(204, None)
    client = gw.client()
    started = client.start_recording(call_connection_id="cc1")
    assert (started.recording_id, started.recording_state) == ("rec1", "active")
    assert client.get_recording_properties("rec1").recording_id == "rec1"
    client.pause_recording("rec1")
    client.stop_recording("rec1")
    assert [(op, ids) for op, ids, _ in gw.api.calls] == [
        ("start_recording", {}),
        ("get_recording", {"recording": "rec1"}),
        ("pause_recording", {"recording": "rec1"}),
        ("stop_recording", {"recording": "rec1"}),
    ]


def test_api_refusal_reaches_the_sdk(gw: Served) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        gw.client().get_call_connection("nope").get_call_properties()
    assert "(8522) no reply for get_call" in str(info.value)


def test_sdk_retries_a_post_after_500_with_the_same_repeatability_id(gw: Served) -> None:
    seen: list[Mapping[str, object] | None] = []

    failures = [RuntimeError("half-done create")]
    original = gw.api.handle

    def flaky(op: str, ids: Mapping[str, str], body: Mapping[str, object] | None) -> Reply:
        seen.append(body)
        if failures:
            raise failures.pop()
        return original(op, ids, body)

    gw.api.replies["create"] = Reply(201, CALL)
    gw.api.handle = flaky  # type: ignore[method-assign]
    try:
        props = gw.client().create_call(PhoneNumberIdentifier("+15551234567"), "https://cb/x")
    finally:
        del gw.api.handle
    assert props.call_connection_id == "cc1"
    assert len(seen) == 2 and seen[0] == seen[1]  # the 500 was not stored, so it ran again


def test_replies_that_are_not_successes_are_internal_errors(gw: Served) -> None:
    gw.api.replies["create"] = Reply(302, CALL)  # refusals must be raised as RestError
    gw.api.replies["hang_up"] = Reply(204, {"unexpected": True})  # 204 carries no body
    status, _, body = gw.raw("POST", f"/calling/callConnections?{VERSION}", b"{}")
    assert (status, error_of(body)[0]) == (500, "InternalError")
    status, _, body = gw.raw("DELETE", f"/calling/callConnections/cc1?{VERSION}")
    assert (status, error_of(body)[0]) == (500, "InternalError")


def test_the_sdk_checks_success_codes_exactly(gw: Served) -> None:
    gw.api.replies["create"] = Reply(200, CALL)  # create must answer 201 (pitfall 3)
    with pytest.raises(HttpResponseError):
        gw.client().create_call(PhoneNumberIdentifier("+15551234567"), "https://cb/x")
    assert len(gw.api.calls) == 1  # a 200 is not retried


# -- raw requests ------------------------------------------------------------------------------


def repeat_headers(request_id: str, age: float = 0.0) -> dict[str, str]:
    first_sent = email.utils.formatdate(time.time() - age, usegmt=True)
    return {"Repeatability-Request-ID": request_id, "Repeatability-First-Sent": first_sent}


def test_retried_post_with_the_same_repeatability_id_is_replayed(gw: Served) -> None:
    gw.api.replies["create"] = Reply(201, CALL)
    headers = repeat_headers(str(uuid.uuid4()))
    body = b'{"targets": [], "callbackUri": "https://cb/x"}'
    first = gw.raw("POST", f"/calling/callConnections?{VERSION}", body, headers)
    gw.api.replies["create"] = Reply(201, {**CALL, "callConnectionId": "cc2"})  # would differ
    second = gw.raw("POST", f"/calling/callConnections?{VERSION}", body, headers)
    assert first[0] == second[0] == 201
    assert first[2] == second[2]
    assert json.loads(second[2])["callConnectionId"] == "cc1"
    assert second[1]["repeatability-result"] == "accepted"
    assert len(gw.api.calls) == 1
    # the query (api-version) is not part of the request's identity: still a replay
    other_version = gw.raw("POST", "/calling/callConnections?api-version=2025-06-15", body, headers)
    assert other_version[:1] + other_version[2:] == first[:1] + first[2:]
    assert len(gw.api.calls) == 1
    reused = gw.raw("POST", f"/calling/callConnections?{VERSION}", body + b" ", headers)
    assert (reused[0], error_of(reused[2])[0]) == (400, "8523")
    fresh = gw.raw(
        "POST", f"/calling/callConnections?{VERSION}", body, repeat_headers(str(uuid.uuid4()))
    )
    assert json.loads(fresh[2])["callConnectionId"] == "cc2"
    assert len(gw.api.calls) == 2


def test_stale_first_sent_is_412(gw: Served) -> None:
    headers = repeat_headers(str(uuid.uuid4()), age=600)
    status, _, body = gw.raw("POST", f"/calling/callConnections?{VERSION}", b"{}", headers)
    assert (status, error_of(body)[0]) == (412, "PreconditionFailed")
    assert gw.api.calls == []


@pytest.mark.parametrize("body", [b"{", b'{"a": NaN}', b"\xff\xfe{", b"[1, 2]", b'"text"', b"null"])
def test_malformed_or_non_object_json_is_400_8523(gw: Served, body: bytes) -> None:
    status, headers, answer = gw.raw("POST", f"/calling/callConnections?{VERSION}", body)
    assert status == 400
    assert error_of(answer)[0] == "8523"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert gw.api.calls == []


@pytest.mark.parametrize(
    "query", ["", "?api-version=2099-01-01", "?api-version=", f"?{VERSION}&{VERSION}", "?x=1"]
)
def test_unknown_api_version_is_400(gw: Served, query: str) -> None:
    gw.api.replies["get_call"] = Reply(200, CALL)
    status, _, body = gw.raw("GET", "/calling/callConnections/cc1" + query)
    code, message = error_of(body)
    assert (status, code) == (400, "UnsupportedApiVersion")
    assert "2026-03-12" in message
    assert gw.api.calls == []


@pytest.mark.parametrize("version", ["2023-03-06", "2025-06-15", "2026-03-12"])
def test_known_api_versions_are_accepted(gw: Served, version: str) -> None:
    gw.api.replies["get_call"] = Reply(200, CALL)
    status, headers, body = gw.raw("GET", f"/calling/callConnections/cc1?api-version={version}")
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == CALL


def test_bad_signature_is_401_with_an_error_body(gw: Served) -> None:
    status, _, body = gw.raw("GET", f"/calling/callConnections/cc1?{VERSION}", key=b"wrong")
    assert (status, error_of(body)[0]) == (401, "Denied")
    context = ssl.create_default_context(cafile=str(gw.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=context, timeout=10)
    conn.request("GET", f"/calling/callConnections/cc1?{VERSION}")
    response = conn.getresponse()
    assert (response.status, error_of(response.read())) == (
        401,
        ("Denied", "Missing 'Authorization' header."),
    )
    conn.close()


def test_not_found_and_method_not_allowed(gw: Served) -> None:
    status, _, body = gw.raw("GET", f"/calling/nothing?{VERSION}")
    assert (status, error_of(body)[0]) == (404, "NotFound")
    status, _, body = gw.raw("POST", f"/calling/callConnections/cc1:dance?{VERSION}", b"{}")
    assert (status, error_of(body)[0]) == (404, "NotFound")
    status, _, body = gw.raw("PUT", f"/calling/callConnections/cc1?{VERSION}", b"{}")
    assert (status, error_of(body)[0]) == (405, "MethodNotAllowed")


def test_oversized_body_is_413(gw: Served) -> None:
    body = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    status, _, answer = gw.raw("POST", f"/calling/callConnections?{VERSION}", body)
    assert (status, error_of(answer)[0]) == (413, "RequestEntityTooLarge")
    assert gw.api.calls == []


def test_client_request_id_is_echoed(gw: Served) -> None:
    gw.api.replies["hang_up"] = Reply(204, None)
    status, headers, body = gw.raw(
        "DELETE",
        f"/calling/callConnections/cc1?{VERSION}",
        headers={"x-ms-client-request-id": "abc-1"},
    )
    assert (status, body, headers["x-ms-client-request-id"]) == (204, b"", "abc-1")
    assert "content-type" not in headers
    status, headers, _ = gw.raw("GET", f"/calling/x?{VERSION}")
    assert "x-ms-client-request-id" not in headers


def test_unexpected_exception_is_500_and_the_server_lives_on(gw: Served) -> None:
    gw.api.replies["get_call"] = KeyError("bug")
    status, _, body = gw.raw("GET", f"/calling/callConnections/cc1?{VERSION}")
    assert (status, error_of(body)[0]) == (500, "InternalError")
    gw.api.replies["get_call"] = Reply(200, CALL)
    assert gw.raw("GET", f"/calling/callConnections/cc1?{VERSION}")[0] == 200


def test_recording_download(gw: Served) -> None:
    wav = gw.tmp / "rec1.wav"
    wav.write_bytes(b"RIFF" + bytes(range(256)) * 2000)
    gw.api.files["rec1"] = wav
    status, headers, body = gw.raw("GET", "/recordings/rec1")
    assert (status, headers["content-type"], body) == (200, "audio/wav", wav.read_bytes())
    assert headers["content-length"] == str(len(body))
    status, _, body = gw.raw("GET", "/recordings/rec2")
    assert (status, error_of(body)[0]) == (404, "8522")
    gw.api.files["gone"] = gw.tmp / "missing.wav"
    assert gw.raw("GET", "/recordings/gone")[0] == 404
    assert gw.raw("GET", "/recordings/rec1", key=b"wrong")[0] == 401
    assert gw.raw("DELETE", "/recordings/rec1")[0] == 405


def open_fds_to(path: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink() == path
        except OSError:
            pass
    return count


def test_recording_download_abandoned_by_the_client(gw: Served) -> None:
    wav = gw.tmp / "long.wav"
    wav.write_bytes(b"RIFF" + b"\x01" * (8 * 1024 * 1024))
    gw.api.files["long"] = wav
    context = ssl.create_default_context(cafile=str(gw.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=context, timeout=10)
    conn.request(
        "GET",
        "/recordings/long",
        headers=sign("GET", "/recordings/long", gw.host, b"", KEY, time.time()),
    )
    response = conn.getresponse()
    assert response.status == 200
    assert len(response.read(100_000)) == 100_000
    conn.close()  # before the end of the file
    deadline = time.monotonic() + 5
    while open_fds_to(wav) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds_to(wav) == 0  # the server closed its file
    status, _, body = gw.raw("GET", "/recordings/long")
    assert status == 200 and len(body) == wav.stat().st_size


# -- the router, one row per route (rest-spec.md) ----------------------------------------------


C = "/calling/callConnections"
CC1 = {"call": "cc1"}
REC1 = {"recording": "rec1"}
CALL_ACTIONS = [
    "terminate", "transferToParticipant", "play", "recognize", "cancelAllMediaOperations",
    "startContinuousDtmfRecognition", "stopContinuousDtmfRecognition", "sendDtmfTones", "hold",
    "unhold", "startMediaStreaming", "stopMediaStreaming", "startTranscription",
    "stopTranscription", "updateTranscription",
]  # fmt: skip
PARTICIPANT_ACTIONS = ["add", "remove", "mute", "unmute", "cancelAddParticipant", "moveHere"]
ROUTES = [
    ("POST", C, "create", {}),
    *[("POST", f"{C}:{action}", action, {}) for action in ["answer", "redirect", "reject",
                                                             "connect"]],
    ("GET", f"{C}/cc1", "get_call", CC1),
    ("DELETE", f"{C}/cc1", "hang_up", CC1),
    *[("POST", f"{C}/cc1:{action}", action, CC1) for action in CALL_ACTIONS],
    ("GET", f"{C}/cc1/participants", "list_participants", CC1),
    ("GET", f"{C}/cc1/participants/4%3A%2B15551234567", "get_participant",
     {"call": "cc1", "participant": "4:+15551234567"}),
    ("GET", f"{C}/cc1/participants/8%3Aacs%3Ax_y", "get_participant",
     {"call": "cc1", "participant": "8:acs:x_y"}),
    *[("POST", f"{C}/cc1/participants:{action}", f"participants:{action}", CC1)
      for action in PARTICIPANT_ACTIONS],
    ("POST", "/calling/recordings", "start_recording", {}),
    ("GET", "/calling/recordings/rec1", "get_recording", REC1),
    ("DELETE", "/calling/recordings/rec1", "stop_recording", REC1),
    ("POST", "/calling/recordings/rec1:pause", "pause_recording", REC1),
    ("POST", "/calling/recordings/rec1:resume", "resume_recording", REC1),
    ("GET", "/recordings/rec1", "download_recording", REC1),
    ("GET", f"{C}/a%3Ab%2Fc", "get_call", {"call": "a:b/c"}),
    ("POST", f"{C}/a%3Ab:play", "play", {"call": "a:b"}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "op", "ids"), ROUTES)
def test_route(method: str, path: str, op: str, ids: dict[str, str]) -> None:
    assert route(method, path) == Route(op, ids)


@pytest.mark.parametrize(
    "path",
    [
        "/", "", "/calling", "/calling/", f"{C}/", f"{C}:dance", f"{C}/cc1:dance",
        f"{C}/cc1/participants:dance", f"{C}/cc1/participants/", f"{C}/cc1/other",
        f"{C}/cc1/participants/a/b", f"{C}/cc1:play/x", "/calling/recordings/rec1:stop",
        "/calling/recordings/", "/calling/callconnections", "/recordings/", "/recordings/a/b",
        f"{C}//participants", f"{C}/cc1:play:play",
    ],
)  # fmt: skip
def test_unknown_paths_are_404(path: str) -> None:
    with pytest.raises(RestError) as info:
        route("POST", path)
    assert (info.value.status, info.value.code) == (404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/calling/callConnections"),
        ("GET", "/calling/callConnections:answer"),
        ("POST", "/calling/callConnections/cc1"),
        ("GET", "/calling/callConnections/cc1:play"),
        ("DELETE", "/calling/callConnections/cc1/participants"),
        ("POST", "/calling/callConnections/cc1/participants/4%3A%2B1"),
        ("GET", "/calling/recordings"),
        ("PUT", "/calling/recordings/rec1"),
        ("POST", "/recordings/rec1"),
        ("HEAD", "/calling/callConnections/cc1"),
    ],
)
def test_wrong_methods_are_405(method: str, path: str) -> None:
    with pytest.raises(RestError) as info:
        route(method, path)
    assert (info.value.status, info.value.code) == (405, "MethodNotAllowed")
