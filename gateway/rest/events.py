"""Pure builders for what the gateway POSTs to apps, and the CommunicationIdentifier wire model.

Callback events are CloudEvents 1.0 in structured mode (ACS_REST.md section 7.1); IncomingCall and
the subscription validation handshake use the Event Grid schema (sections 8.1, 8.3). Identifiers
follow section 4: what we emit always carries ``kind`` + ``rawId`` + the one sub-object; what we
accept is what the SDK sends (``rawId`` + one sub-object, no ``kind``, ``cloud`` in any case).

Invariants: nothing here touches the clock, the network or the reactor (``now`` is an argument,
POSIX seconds or an aware datetime); event ids are fresh uuid4 unless one is passed in; a
malformed identifier raises ``RestError(400, "8523", ...)`` naming the offending field.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway.rest.errors import RestError

__all__ = [
    "API_VERSION",
    "GATEWAY_TOPIC",
    "INCOMING_CALL_TYPE",
    "VALIDATION_TYPE",
    "Identifier",
    "acs_user_identifier",
    "cloud_event",
    "event_time",
    "incoming_call_event",
    "parse_identifier",
    "phone_identifier",
    "result_information",
    "validation_event",
]

API_VERSION: Final = "2026-03-12"
EVENT_TYPE_PREFIX: Final = "Microsoft.Communication."
INCOMING_CALL_TYPE: Final = "Microsoft.Communication.IncomingCall"
VALIDATION_TYPE: Final = "Microsoft.EventGrid.SubscriptionValidationEvent"
#: Event Grid ``topic`` of every IncomingCall / validation event: the shape of an ACS resource id
#: (section 8.1) naming the gateway, so parsers that split it still work.
GATEWAY_TOPIC: Final = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/acs-gateway"
    "/providers/microsoft.communication/communicationservices/acs-gateway"
)

Now = float | datetime.datetime


def event_time(now: Now, *, zulu: bool = False) -> str:
    """ISO-8601 UTC with 7 fractional digits, ``+00:00`` (CloudEvents) or ``Z`` (Event Grid)."""
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            raise ValueError("event_time needs an aware datetime")
        utc = now.astimezone(datetime.UTC)
        whole, ticks = utc.replace(microsecond=0), utc.microsecond * 10
    else:
        seconds, ticks = divmod(round(now * 10_000_000), 10_000_000)
        whole = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ticks:07d}" + ("Z" if zulu else "+00:00")


def cloud_event(
    call_connection_id: str,
    name: str,
    data: Mapping[str, object],
    now: Now,
    api_version: str = API_VERSION,
    *,
    event_id: str | None = None,
) -> dict[str, object]:
    """The CloudEvent ``Microsoft.Communication.<name>`` for one call (section 7.1)."""
    event_type = EVENT_TYPE_PREFIX + name
    source = f"calling/callConnections/{call_connection_id}"
    return {
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": event_time(now),
        "subject": source,
        "data": {**data, "version": api_version, "publicEventType": event_type},
    }


def incoming_call_event(
    data: Mapping[str, object], subject: str, now: Now, *, event_id: str | None = None
) -> dict[str, object]:
    """The Event Grid IncomingCall event (section 8.1); ``subject`` "/caller/X/recipient/Y"."""
    return _grid_event(INCOMING_CALL_TYPE, subject, dict(data), "1.0", now, event_id)


def validation_event(
    code: str, url: str, now: Now, *, event_id: str | None = None
) -> dict[str, object]:
    """The Event Grid SubscriptionValidationEvent (section 8.3) carrying ``code`` to echo back."""
    data: dict[str, object] = {"validationCode": code, "validationUrl": url}
    return _grid_event(VALIDATION_TYPE, "", data, "2", now, event_id)


def _grid_event(
    event_type: str,
    subject: str,
    data: dict[str, object],
    data_version: str,
    now: Now,
    event_id: str | None,
) -> dict[str, object]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "topic": GATEWAY_TOPIC,
        "subject": subject,
        "eventType": event_type,
        "eventTime": event_time(now, zulu=True),
        "dataVersion": data_version,
        "metadataVersion": "1",
        "data": data,
    }


def result_information(
    code: int,
    sub_code: int,
    message: str,
    sip: tuple[int, str] | None = None,
    q850: tuple[int, str] | None = None,
) -> dict[str, object]:
    """``resultInformation`` (sections 7.2, 9); ``sip``/``q850`` are (code, reason) pairs."""
    info: dict[str, object] = {"code": code, "subCode": sub_code, "message": message}
    if sip is not None:
        info["sipDetails"] = {"code": sip[0], "message": sip[1]}
    if q850 is not None:
        info["q850Details"] = {"code": q850[0], "message": q850[1]}
    return info


# --- CommunicationIdentifier (section 4) -------------------------------------------------------

PHONE: Final = "phoneNumber"
ACS_USER: Final = "communicationUser"
TEAMS_USER: Final = "microsoftTeamsUser"
TEAMS_APP: Final = "microsoftTeamsApp"
TEAMS_EXTENSION: Final = "teamsExtensionUser"
UNKNOWN: Final = "unknown"

#: kind -> (the sub-object field holding the identifier's value, required fields, optional ones)
_SUB_OBJECTS: Final[dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]] = {
    PHONE: ("value", ("value",), ("isAnonymous", "assertedId")),
    ACS_USER: ("id", ("id",), ()),
    TEAMS_USER: ("userId", ("userId",), ("isAnonymous", "cloud")),
    TEAMS_APP: ("appId", ("appId",), ("cloud",)),
    TEAMS_EXTENSION: ("userId", ("userId", "tenantId", "resourceId"), ("cloud",)),
}
_KINDS: Final = {k.lower(): k for k in (*_SUB_OBJECTS, UNKNOWN)}
_RAW_PREFIX: Final = {PHONE: "4:", TEAMS_USER: "8:", TEAMS_APP: "28:", TEAMS_EXTENSION: "8:"}
_CLOUDS: Final = frozenset({"public", "dod", "gcch"})
_MAX_ID: Final = 1024
_PHONE_VALUE: Final = re.compile(r"\+?[0-9*#]{1,32}|anonymous")
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class Identifier:
    """A parsed CommunicationIdentifier: ``kind`` (wire spelling), ``rawId``, main value.

    ``value`` is the phone number (E.164 or "anonymous"), the ACS user id, the Teams user/app id,
    or for ``unknown`` the rawId itself. ``details`` keeps the sub-object's known fields as
    received (``cloud`` lower-cased) so ``to_wire`` can echo the identifier; it does not take part
    in equality.
    """

    kind: str
    raw_id: str
    value: str
    details: tuple[tuple[str, str | bool], ...] = field(default=(), compare=False)

    def to_wire(self) -> dict[str, object]:
        """The identifier as the gateway emits it: kind + rawId + sub-object (section 4)."""
        if self.kind == UNKNOWN:
            return {"kind": UNKNOWN, "rawId": self.raw_id}
        if self.kind == PHONE and self.value == ANONYMOUS:
            return phone_identifier(ANONYMOUS)
        if self.kind == ACS_USER:
            return acs_user_identifier(self.raw_id)
        sub = dict(self.details) or {_SUB_OBJECTS[self.kind][0]: self.value}
        return {"kind": self.kind, "rawId": self.raw_id, self.kind: sub}


def phone_identifier(number: str, *, raw_id: str | None = None) -> dict[str, object]:
    """A phoneNumber identifier; "anonymous" (withheld CLI) gives rawId "4:anonymous"."""
    if number.lower() == ANONYMOUS:
        return {
            "kind": PHONE,
            "rawId": "4:" + ANONYMOUS,
            PHONE: {"value": ANONYMOUS, "isAnonymous": True},
        }
    return {"kind": PHONE, "rawId": raw_id or "4:" + number, PHONE: {"value": number}}


def acs_user_identifier(raw_id: str) -> dict[str, object]:
    """A communicationUser identifier ("8:acs:..."); the SDK takes the id from rawId."""
    return {"kind": ACS_USER, "rawId": raw_id, ACS_USER: {"id": raw_id}}


def parse_identifier(obj: object, field: str = "identifier") -> Identifier:
    """Parse a CommunicationIdentifierModel from a request body; ``field`` names it in errors."""
    if not isinstance(obj, Mapping):
        raise _bad(field, "must be a JSON object")
    subs = [k for k in _SUB_OBJECTS if k in obj]
    if len(subs) > 1:
        raise _bad(field, f"has more than one identifier object ({', '.join(subs)})")
    kind = subs[0] if subs else UNKNOWN
    declared = obj.get("kind")
    if declared is not None:
        if not isinstance(declared, str) or declared.lower() not in _KINDS:
            raise _bad(f"{field}.kind", f"unknown kind {declared!r}")
        if subs and _KINDS[declared.lower()] != kind:
            raise _bad(f"{field}.kind", f"is {declared!r} but the object holds {kind!r}")
        if not subs and _KINDS[declared.lower()] != UNKNOWN:
            raise _bad(field, f"kind {declared!r} needs a {_KINDS[declared.lower()]!r} object")
    raw = obj.get("rawId")
    if raw is not None and not _is_id(raw):
        raise _bad(f"{field}.rawId", "must be a non-empty string")
    if kind == UNKNOWN:
        if raw is None:
            raise _bad(field, "needs rawId or one identifier object")
        assert isinstance(raw, str)
        return Identifier(UNKNOWN, raw, raw)
    sub = obj[kind]
    value, details = _sub_object(sub, kind, f"{field}.{kind}")
    if raw is None:
        raw = _derive_raw_id(kind, sub)
    assert isinstance(raw, str)
    if kind == ACS_USER and raw != value:
        raise _bad(f"{field}.rawId", "differs from communicationUser.id")
    prefix = _RAW_PREFIX.get(kind)
    if prefix is not None and not raw.startswith(prefix):
        raise _bad(f"{field}.rawId", f"a {kind} rawId starts with {prefix!r}")
    if kind == PHONE and value == ANONYMOUS:
        raw = "4:" + ANONYMOUS
    return Identifier(kind, raw, value, details)


def _sub_object(
    sub: object, kind: str, where: str
) -> tuple[str, tuple[tuple[str, str | bool], ...]]:
    """The sub-object's main value and its known fields, validated."""
    if not isinstance(sub, Mapping):
        raise _bad(where, "must be a JSON object")
    main, required, optional = _SUB_OBJECTS[kind]
    for name in required:
        if not _is_id(sub.get(name)):
            raise _bad(f"{where}.{name}", "is required (non-empty string)")
    for flag in ("isAnonymous",):
        if flag in sub and not isinstance(sub[flag], bool):
            raise _bad(f"{where}.{flag}", "must be a boolean")
    for text in ("assertedId", "cloud"):
        if text in sub and not isinstance(sub[text], str):
            raise _bad(f"{where}.{text}", "must be a string")
    cloud = sub.get("cloud")
    if isinstance(cloud, str) and cloud.lower() not in _CLOUDS:
        raise _bad(f"{where}.cloud", f"unknown cloud {cloud!r} (public, dod, gcch)")
    value = sub[main]
    assert isinstance(value, str)
    if kind == PHONE:
        if sub.get("isAnonymous") is True or value.lower() == ANONYMOUS:
            return ANONYMOUS, (("value", ANONYMOUS), ("isAnonymous", True))
        if not _PHONE_VALUE.fullmatch(value):
            raise _bad(f"{where}.value", f"not a phone number: {value!r}")
    details = [(name, sub[name]) for name in (*required, *optional) if name in sub]
    return value, tuple((k, v.lower() if k == "cloud" else v) for k, v in details)


def _derive_raw_id(kind: str, sub: Mapping[str, object]) -> str:
    """rawId for public-cloud identifiers sent without one (the SDK always sends it)."""
    if kind == PHONE:
        return "4:" + str(sub["value"])
    if kind == TEAMS_USER:
        return "8:orgid:" + str(sub["userId"])
    if kind == TEAMS_APP:
        return "28:orgid:" + str(sub["appId"])
    if kind == TEAMS_EXTENSION:
        return f"8:acs:{sub['resourceId']}_{sub['tenantId']}_{sub['userId']}"
    return str(sub["id"])


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID


def _bad(where: str, problem: str) -> RestError:
    return RestError(400, "8523", f"Invalid {where}: {problem}.")
