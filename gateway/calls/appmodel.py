"""The model of app calls (REST-controlled calls): the call (a callConnection), its phone
parties (SIP dialogs ending at the gateway), and inbound calls waiting for the app."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.calls.b2bua import Dialog
from gateway.config import Trunk
from gateway.rest.events import acs_user_identifier, phone_identifier
from gateway.sip.transaction import ClientTransaction, ServerTransaction, Target

if TYPE_CHECKING:
    from gateway.calls.appcall import AppCalls
    from gateway.calls.trunks import TrunkState
    from gateway.media.bridge import Bridge


class EventSink(Protocol):
    """Where app events go (gateway.rest.delivery.Delivery)."""

    def call_event(
        self, call_key: str, url: str, name: str, data: Mapping[str, object]
    ) -> None: ...

    def call_closed(self, call_key: str) -> None: ...

    def incoming_call(self, data: Mapping[str, object], subject: str) -> None: ...


class Party(Dialog):
    """One phone party of an app call: a SIP dialog ending at the gateway."""

    __slots__ = (
        "app",
        "attempt",
        "cancel_callback",
        "cancel_context",
        "cancel_reason",
        "direction",
        "hold_txn",
        "invitation_id",
        "invite_txn",
        "muted",
        "number",
        "on_hold",
        "op_callback",
        "op_context",
        "purpose",
        "refer",
        "refer_txn",
        "route",
        "state",
        "timer",
        "transfer_to",
        "trunk_state",
    )

    def __init__(self, app: AppCall, name: str, call_id: str, local_uri: str, remote_uri: str,
                 target: Target, trunk: str | None, number: str, direction: str) -> None:
        super().__init__(name, call_id, local_uri, remote_uri, target, trunk)
        self.app = app
        self.number = number
        self.direction = direction  # "in" | "out"
        self.state = "ringing"  # ringing | connected | ended
        self.invite_txn: ServerTransaction | ClientTransaction | None = None
        self.hold_txn: ClientTransaction | None = None
        self.muted = False
        self.on_hold = False
        self.invitation_id: str | None = None
        self.op_context: str | None = None
        self.op_callback: str | None = None
        self.purpose = "target"  # target (create) | add | transfer
        self.route: tuple[str, ...] = ()
        self.attempt = 0
        # why a CANCEL was sent: "app" (cancel_add_participant), "timeout" (invitation
        # timeout), "remove" (remove_participant while ringing), "answered" (a group call
        # answered elsewhere), "ended" (the call ended); and the cancel request's context
        self.cancel_reason: str | None = None
        self.cancel_context: str | None = None
        self.cancel_callback: str | None = None
        self.timer: Any = None
        self.trunk_state: TrunkState | None = None
        self.refer = False  # the peer's Allow lists REFER (RFC 3515)
        self.refer_txn: ClientTransaction | None = None
        self.transfer_to: str | None = None  # a REFER in progress: the target number

    @property
    def raw_id(self) -> str:
        return phone_identifier(self.number)["rawId"]  # type: ignore[return-value]

    def identifier(self) -> dict[str, object]:
        return phone_identifier(self.number)


@dataclass(slots=True)
class Incoming:
    """An inbound app call waiting for answer/reject/redirect."""

    call: AppCall
    party: Party
    txn: ServerTransaction
    trunk: Trunk
    expires: float


class AppCall:
    """One REST-controlled call (a callConnection)."""

    def __init__(self, calls: AppCalls, source_number: str) -> None:
        self.calls = calls
        self.id = str(uuid.uuid4())
        self.server_call_id = secrets.token_urlsafe(18)
        self.correlation_id = str(uuid.uuid4())
        self.app_raw_id = f"8:acs:{calls.resource}_{uuid.uuid4()}"
        self.callback_uri = ""
        self.context: str | None = None  # the create/answer operationContext
        self.state = "connecting"
        self.parties: dict[str, Party] = {}
        self.counter = 0
        self.sequence = 0
        self.bridge: Bridge | None = None
        self.source_number = source_number
        self.source_display: str | None = None
        self.targets: list[dict[str, object]] = []
        self.app_left = False  # hang_up by the app with other parties still in the call
        self.ended = False
        self.trunk_in: TrunkState | None = None
        self.started = time.time()
        self.media: Any = None  # gateway.rest.mediaops.MediaOps, set by the API
        self.cdr_status = 0
        self.release_side: str | None = None
        self.reason: str | None = None
        self.room: str | None = None  # a dial plan's conference room (no app participant)
        self.speaker_sequence = 0

    @property
    def event_key(self) -> str:
        """The call's key in event delivery and in the CDR: its id, made unique per instance
        for a room (a room's name, hence its id, is reused by the next room of that name)."""
        return self.id if self.room is None else f"{self.id}/{self.server_call_id[:8]}"

    def phones(self, state: str | None = "connected") -> list[Party]:
        return [p for p in self.parties.values() if state is None or p.state == state]

    def participant(self, raw_id: str) -> Party | None:
        for party in self.parties.values():
            if party.state != "ended" and party.raw_id == raw_id:
                return party
        return None

    def app_participant(self) -> dict[str, object]:
        return {"identifier": acs_user_identifier(self.app_raw_id), "isMuted": False,
                "isOnHold": False}

    def participants(self) -> list[dict[str, object]]:
        out = [{"identifier": p.identifier(), "isMuted": p.muted, "isOnHold": p.on_hold}
               for p in self.phones()]
        if not self.app_left and self.room is None:
            out.append(self.app_participant())
        return out

    def properties(self) -> dict[str, object]:
        props: dict[str, object] = {
            "callConnectionId": self.id,
            "serverCallId": self.server_call_id,
            "correlationId": self.correlation_id,
            "callConnectionState": self.state,
            "callbackUri": self.callback_uri,
            "targets": self.targets,
            "source": acs_user_identifier(self.app_raw_id),
            "answeredBy": {"id": self.app_raw_id},
        }
        if self.source_number:
            props["sourceCallerIdNumber"] = {"value": self.source_number}
        if self.source_display:
            props["sourceDisplayName"] = self.source_display
        return props
