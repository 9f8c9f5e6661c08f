"""The pure event and identifier builders of gateway.rest.events (ACS_REST.md sections 4, 7, 8).

Every event built is parsed back with the parsers apps use (azure-core's CloudEvent, the SDK's
identifier deserializer), and identifiers exactly as the SDK 1.6.0 serializes them are parsed.
"""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from azure.communication.callautomation import (
    CommunicationUserIdentifier,
    MicrosoftTeamsAppIdentifier,
    MicrosoftTeamsUserIdentifier,
    PhoneNumberIdentifier,
    TeamsExtensionUserIdentifier,
    UnknownIdentifier,
)
from azure.communication.callautomation._generated.models import CommunicationIdentifierModel
from azure.communication.callautomation._utils import deserialize_identifier, serialize_identifier
from azure.core.messaging import CloudEvent

from gateway.rest.errors import RestError
from gateway.rest.events import (
    API_VERSION,
    GATEWAY_TOPIC,
    Identifier,
    acs_user_identifier,
    cloud_event,
    event_time,
    incoming_call_event,
    parse_identifier,
    phone_identifier,
    result_information,
    validation_event,
)

NOW = 1_795_563_942.1234567  # 2026-11-24T...
CLOUD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00")
GRID_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")

# Section 7.3, every callback event name.
EVENT_NAMES = """CallConnected CallDisconnected CreateCallFailed AnswerFailed ConnectFailed
ParticipantsUpdated AddParticipantSucceeded AddParticipantFailed RemoveParticipantSucceeded
RemoveParticipantFailed CancelAddParticipantSucceeded CancelAddParticipantFailed
MoveParticipantSucceeded MoveParticipantFailed CallTransferAccepted CallTransferFailed PlayStarted
PlayCompleted PlayCanceled PlayFailed RecognizeCompleted RecognizeFailed RecognizeCanceled
ContinuousDtmfRecognitionToneReceived ContinuousDtmfRecognitionToneFailed
ContinuousDtmfRecognitionStopped SendDtmfTonesCompleted SendDtmfTonesFailed HoldFailed
RecordingStateChanged StartRecordingFailed MediaStreamingStarted MediaStreamingStopped
MediaStreamingFailed TranscriptionStarted TranscriptionStopped TranscriptionUpdated
TranscriptionFailed""".split()


def common(**extra: object) -> dict[str, object]:
    ok = result_information(200, 0, "Action completed successfully.")
    return {"callConnectionId": "cc1", "serverCallId": "sc1", "correlationId": "corr1",
            "operationContext": "oc", "resultInformation": ok, **extra}


# --- time --------------------------------------------------------------------------------------


def test_event_time_has_seven_fractional_digits() -> None:
    assert event_time(0.0) == "1970-01-01T00:00:00.0000000+00:00"
    assert event_time(0.0, zulu=True) == "1970-01-01T00:00:00.0000000Z"
    assert event_time(1.23456789) == "1970-01-01T00:00:01.2345679+00:00"
    assert event_time(59.99999999) == "1970-01-01T00:01:00.0000000+00:00"  # carries into seconds


def test_event_time_accepts_aware_datetimes_only() -> None:
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    when = datetime.datetime(2026, 11, 24, 1, 30, 0, 123456, tzinfo=berlin)
    assert event_time(when) == "2026-11-24T00:30:00.1234560+00:00"
    with pytest.raises(ValueError):
        event_time(datetime.datetime(2026, 11, 24))


# --- CloudEvents (section 7.1) -----------------------------------------------------------------


def test_cloud_event_envelope_matches_section_7_1() -> None:
    event = cloud_event("cc1", "PlayCompleted", common(), NOW)
    assert set(event) == {"id", "source", "type", "specversion", "datacontenttype", "time",
                          "subject", "data"}
    assert uuid.UUID(str(event["id"])).version == 4
    assert event["source"] == event["subject"] == "calling/callConnections/cc1"
    assert event["type"] == "Microsoft.Communication.PlayCompleted"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert CLOUD_TIME.fullmatch(str(event["time"]))
    assert event["data"] == {**common(), "version": API_VERSION,
                             "publicEventType": "Microsoft.Communication.PlayCompleted"}


def test_cloud_event_ids_are_fresh_unless_given() -> None:
    first = cloud_event("cc1", "PlayStarted", {}, NOW)
    second = cloud_event("cc1", "PlayStarted", {}, NOW)
    assert first["id"] != second["id"]
    assert cloud_event("cc1", "PlayStarted", {}, NOW, event_id="e1")["id"] == "e1"
    assert cloud_event("cc1", "PlayStarted", {}, NOW, "2025-06-15")["data"] == {
        "version": "2025-06-15", "publicEventType": "Microsoft.Communication.PlayStarted"}


def test_cloud_event_does_not_touch_the_callers_data() -> None:
    data = common()
    cloud_event("cc1", "CallConnected", data, NOW)
    assert "version" not in data


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_azure_core_parses_every_event(name: str) -> None:
    event = cloud_event("cc1", name, common(), NOW)
    parsed = CloudEvent.from_dict(event)
    assert parsed.type == f"Microsoft.Communication.{name}"
    assert parsed.source == "calling/callConnections/cc1"
    assert parsed.subject == "calling/callConnections/cc1"
    assert parsed.specversion == "1.0"
    assert parsed.id == event["id"]
    assert parsed.data["callConnectionId"] == "cc1"
    assert parsed.data["resultInformation"]["subCode"] == 0
    assert parsed.time == datetime.datetime.fromtimestamp(int(NOW), datetime.UTC).replace(
        microsecond=123456)


# --- Event Grid (section 8) --------------------------------------------------------------------


def test_incoming_call_event_is_event_grid_schema() -> None:
    data = {"to": phone_identifier("+15550001111"), "from": phone_identifier("anonymous"),
            "serverCallId": "sc1", "callerDisplayName": "", "incomingCallContext": "ctx",
            "correlationId": "corr1"}
    event = incoming_call_event(data, "/caller/4:anonymous/recipient/4:+15550001111", NOW)
    assert set(event) == {"id", "topic", "subject", "eventType", "eventTime", "dataVersion",
                          "metadataVersion", "data"}
    assert event["eventType"] == "Microsoft.Communication.IncomingCall"
    assert event["topic"] == GATEWAY_TOPIC
    assert event["subject"] == "/caller/4:anonymous/recipient/4:+15550001111"
    assert event["dataVersion"] == "1.0" and event["metadataVersion"] == "1"
    assert GRID_TIME.fullmatch(str(event["eventTime"]))
    assert event["data"] == data
    assert uuid.UUID(str(event["id"])).version == 4
    with pytest.raises(ValueError, match="EventGrid"):  # not a CloudEvent: azure-core says so
        CloudEvent.from_dict(event)


def test_validation_event_carries_the_code() -> None:
    event = validation_event("code-1", "", NOW, event_id="v1")
    assert event == {
        "id": "v1", "topic": GATEWAY_TOPIC, "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": event_time(NOW, zulu=True), "dataVersion": "2", "metadataVersion": "1",
        "data": {"validationCode": "code-1", "validationUrl": ""},
    }


def test_result_information() -> None:
    assert result_information(200, 0, "ok") == {"code": 200, "subCode": 0, "message": "ok"}
    assert result_information(486, 560486, "Busy Here", sip=(486, "Busy Here"),
                              q850=(17, "User busy")) == {
        "code": 486, "subCode": 560486, "message": "Busy Here",
        "sipDetails": {"code": 486, "message": "Busy Here"},
        "q850Details": {"code": 17, "message": "User busy"},
    }


# --- identifiers (section 4) -------------------------------------------------------------------


def sdk_wire(identifier: object) -> dict[str, object]:
    """The identifier exactly as the SDK puts it in a request body."""
    wire: dict[str, object] = serialize_identifier(identifier).serialize()  # type: ignore[arg-type]
    return wire


def sdk_reads(wire: dict[str, object]) -> object:
    """What the SDK makes of an identifier the gateway sends."""
    return deserialize_identifier(CommunicationIdentifierModel.deserialize(wire))


def test_phone_identifier() -> None:
    wire = phone_identifier("+15551234567")
    assert wire == {"kind": "phoneNumber", "rawId": "4:+15551234567",
                    "phoneNumber": {"value": "+15551234567"}}
    parsed = sdk_reads(wire)
    assert isinstance(parsed, PhoneNumberIdentifier)
    assert parsed.raw_id == "4:+15551234567" and parsed.properties["value"] == "+15551234567"


def test_anonymous_phone_identifier() -> None:
    wire = phone_identifier("anonymous")
    assert wire == {"kind": "phoneNumber", "rawId": "4:anonymous",
                    "phoneNumber": {"value": "anonymous", "isAnonymous": True}}
    parsed = sdk_reads(wire)
    assert isinstance(parsed, PhoneNumberIdentifier)
    assert parsed.properties["is_anonymous"] is True


def test_acs_user_identifier() -> None:
    wire = acs_user_identifier("8:acs:gw_1")
    assert wire == {"kind": "communicationUser", "rawId": "8:acs:gw_1",
                    "communicationUser": {"id": "8:acs:gw_1"}}
    parsed = sdk_reads(wire)
    assert isinstance(parsed, CommunicationUserIdentifier) and parsed.raw_id == "8:acs:gw_1"


SDK_IDENTIFIERS = [
    (PhoneNumberIdentifier("+15551234567"), Identifier("phoneNumber", "4:+15551234567",
                                                       "+15551234567")),
    (CommunicationUserIdentifier("8:acs:res_u1"), Identifier("communicationUser", "8:acs:res_u1",
                                                             "8:acs:res_u1")),
    (MicrosoftTeamsUserIdentifier("aad1", cloud="GCCH"),  # the SDK sends cloud upper-case
     Identifier("microsoftTeamsUser", "8:gcch:aad1", "aad1")),
    (MicrosoftTeamsAppIdentifier("app1", cloud="DOD"),
     Identifier("microsoftTeamsApp", "28:dod:app1", "app1")),
    (TeamsExtensionUserIdentifier(user_id="u", tenant_id="t", resource_id="r"),
     Identifier("teamsExtensionUser", "8:acs:r_t_u", "u")),
    (UnknownIdentifier("99:whatever"), Identifier("unknown", "99:whatever", "99:whatever")),
]


@pytest.mark.parametrize(("sdk", "expected"), SDK_IDENTIFIERS)
def test_parse_what_the_sdk_sends(sdk: object, expected: Identifier) -> None:
    wire = sdk_wire(sdk)
    assert "kind" not in wire  # the SDK never sends kind
    assert parse_identifier(wire) == expected


@pytest.mark.parametrize(("sdk", "expected"), SDK_IDENTIFIERS)
def test_to_wire_round_trips_through_the_sdk(sdk: object, expected: Identifier) -> None:
    wire = parse_identifier(sdk_wire(sdk)).to_wire()
    assert wire["kind"] == expected.kind and wire["rawId"] == expected.raw_id
    assert parse_identifier(wire) == expected
    back = sdk_reads(wire)
    assert back == sdk  # the SDK's identifiers compare by rawId and type
    assert type(back) is type(sdk)


def test_to_wire_echoes_the_sub_object() -> None:
    teams = parse_identifier(sdk_wire(MicrosoftTeamsUserIdentifier("aad1", cloud="GCCH")))
    assert teams.to_wire() == {"kind": "microsoftTeamsUser", "rawId": "8:gcch:aad1",
                               "microsoftTeamsUser": {"userId": "aad1", "isAnonymous": False,
                                                      "cloud": "gcch"}}
    assert Identifier("microsoftTeamsApp", "28:orgid:a", "a").to_wire() == {
        "kind": "microsoftTeamsApp", "rawId": "28:orgid:a", "microsoftTeamsApp": {"appId": "a"}}
    assert Identifier("unknown", "99:x", "99:x").to_wire() == {"kind": "unknown", "rawId": "99:x"}
    anonymous = parse_identifier({"rawId": "4:anonymous", "phoneNumber": {"value": "anonymous"}})
    assert anonymous.to_wire() == phone_identifier("anonymous")


def test_parse_accepts_kind_cloud_and_asserted_id_variants() -> None:
    assert parse_identifier({"kind": "PhoneNumber", "rawId": "4:+1555_+1666",
                             "phoneNumber": {"value": "+1555", "assertedId": "+1666"}}) == \
        Identifier("phoneNumber", "4:+1555_+1666", "+1555")
    assert parse_identifier({"phoneNumber": {"value": "+1555"}}).raw_id == "4:+1555"
    assert parse_identifier({"rawId": "4:anonymous", "phoneNumber": {
        "value": "x", "isAnonymous": True}}) == Identifier("phoneNumber", "4:anonymous",
                                                           "anonymous")
    teams = {"rawId": "8:orgid:a", "microsoftTeamsUser": {"userId": "a", "cloud": "Public"}}
    assert parse_identifier(teams).value == "a"
    assert parse_identifier({"kind": "unknown", "rawId": "x"}).kind == "unknown"
    assert parse_identifier({"rawId": "4:+1", "phoneNumber": {"value": "+1"}, "extra": 1}).value \
        == "+1"  # unknown keys are ignored


MALFORMED = [
    ("not an object", "identifier"),
    (["4:+1"], "identifier"),
    ({}, "needs rawId"),
    ({"rawId": ""}, "identifier.rawId"),
    ({"rawId": 7}, "identifier.rawId"),
    ({"rawId": "x" * 1025}, "identifier.rawId"),
    ({"rawId": "4:+1", "phoneNumber": {"value": "+1"}, "communicationUser": {"id": "8:acs:x"}},
     "more than one"),
    ({"kind": "robot", "rawId": "x"}, "identifier.kind"),
    ({"kind": 1, "rawId": "x"}, "identifier.kind"),
    ({"kind": "communicationUser", "rawId": "4:+1", "phoneNumber": {"value": "+1"}},
     "identifier.kind"),
    ({"kind": "phoneNumber", "rawId": "4:+1"}, "needs a 'phoneNumber' object"),
    ({"rawId": "4:+1", "phoneNumber": "+1"}, "identifier.phoneNumber"),
    ({"rawId": "4:+1", "phoneNumber": {}}, "identifier.phoneNumber.value"),
    ({"rawId": "4:+1", "phoneNumber": {"value": 15551234567}}, "identifier.phoneNumber.value"),
    ({"rawId": "4:abc", "phoneNumber": {"value": "abc"}}, "not a phone number"),
    ({"rawId": "4:+1", "phoneNumber": {"value": "+1", "isAnonymous": "no"}}, "isAnonymous"),
    ({"rawId": "4:+1", "phoneNumber": {"value": "+1", "assertedId": 5}}, "assertedId"),
    ({"rawId": "8:acs:x", "phoneNumber": {"value": "+1"}}, "starts with '4:'"),
    ({"rawId": "8:acs:a", "communicationUser": {"id": "8:acs:b"}}, "differs"),
    ({"rawId": "8:orgid:a", "microsoftTeamsUser": {"userId": "a", "cloud": "mars"}}, "cloud"),
    ({"rawId": "8:orgid:a", "microsoftTeamsUser": {"userId": "a", "cloud": 1}}, "cloud"),
    ({"rawId": "28:orgid:a", "microsoftTeamsApp": {}}, "appId"),
    ({"rawId": "8:acs:r_t_u", "teamsExtensionUser": {"userId": "u", "tenantId": "t"}},
     "resourceId"),
]


@pytest.mark.parametrize(("wire", "mentions"), MALFORMED)
def test_malformed_identifiers_are_8523(wire: object, mentions: str) -> None:
    with pytest.raises(RestError) as caught:
        parse_identifier(wire)
    assert (caught.value.status, caught.value.code) == (400, "8523")
    assert mentions in caught.value.message


def test_error_names_the_field_given() -> None:
    with pytest.raises(RestError, match=r"targets\[0\]\.phoneNumber\.value"):
        parse_identifier({"rawId": "4:+1", "phoneNumber": {}}, "targets[0]")
