"""The Call Automation operations (ACS_REST.md section 6) on the gateway's app calls.

``CallAutomationApi.handle`` gets one authenticated, parsed request from the HTTPS adapter
(gateway.rest.server) and answers with the exact success status and body the SDK expects, or
raises ``RestError`` with the ACS error status and code. Validation happens before anything
changes, so a refused request leaves the call it names as it was.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.media.recognize import DTMF_TONES, digit_of
from gateway.rest.errors import RestError
from gateway.rest.events import parse_identifier
from gateway.rest.mediaops import MediaOps
from gateway.rest.server import Reply

if TYPE_CHECKING:
    from gateway.calls.appcall import AppCalls
    from gateway.calls.appmodel import AppCall, Party
    from gateway.media.prompts import PromptLoader
    from gateway.rest.delivery import Delivery

log = logging.getLogger("gateway.rest")

_NUMBER = re.compile(r"^\+[0-9]{1,20}$")
# a SIP URI as RFC 3261 section 25.1 spells it: ASCII, no spaces, quotes or angle brackets
_SIP_URI = re.compile(r"^sips?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%:@\[\]]+$")
_TONES = frozenset(DTMF_TONES)
_NOT_HERE = "is not available on this gateway"


@dataclass(slots=True)
class Recording:
    id: str
    call: AppCall
    path: Path
    state: str  # active | inactive
    callback: str | None
    kind: str = "azureCommunicationServices"
    started: float = 0.0


class CallAutomationApi:
    """Implements gateway.rest.server.Api over the app calls."""

    def __init__(self, apps: AppCalls, delivery: Delivery, loader: PromptLoader,
                 recordings_dir: Path, call_later: Callable[..., Any],
                 now: Callable[[], float]) -> None:
        self.apps = apps
        self.delivery = delivery
        self.loader = loader
        self.recordings_dir = recordings_dir
        self.call_later = call_later
        self.now = now
        self.recordings: dict[str, Recording] = {}
        apps.on_end = self._call_ended
        self.ops = 0

    # ------------------------------------------------------------------ dispatch
    def handle(self, op: str, ids: Mapping[str, str], body: Mapping[str, object] | None
               ) -> Reply:
        try:
            return self._handle(op, ids, body)
        finally:
            self.apps.b2bua.stack.flush()  # whatever SIP the operation queued goes out now

    def _handle(self, op: str, ids: Mapping[str, str], body: Mapping[str, object] | None
                ) -> Reply:
        self.ops += 1
        b: Mapping[str, object] = body or {}
        if op in _TOP:
            reply = _TOP[op](self, b)
            if reply.body is not None and isinstance(reply.body.get("callConnectionId"), str):
                self._note(str(reply.body["callConnectionId"]), op)
            return reply
        if "recording" in ids:
            rec = self.recordings.get(ids["recording"])
            reply = self._recording_op(op, ids["recording"], b)
            if rec is not None:
                self._note(rec.call.id, op)
            return reply
        call_id = ids.get("call", "")
        live = self.apps.calls.get(call_id)  # an operation may end the call (hang_up)
        reply = self._call_op(op, ids, b)
        if live is not None and not op.startswith(("get_", "list_")):
            self._note(call_id, op, live.event_key)
        return reply

    def _note(self, call_id: str, op: str, key: str | None = None) -> None:
        """The operation goes into the call's CDR (cdr_calls.operations; a room's CDR key
        is its instance's, its id is the room's)."""
        cdr = self.apps.b2bua.cdr
        if key is None:
            live = self.apps.calls.get(call_id)
            key = live.event_key if live is not None else None
        if cdr is not None and key is not None:
            cdr.app_operation(key, call_id, op, time.time())

    def _call_op(self, op: str, ids: Mapping[str, str], b: Mapping[str, object]) -> Reply:
        call = self.apps.find(ids.get("call", ""))
        handler = _CALL.get(op)
        if handler is None:
            raise RestError(501, "NotImplemented", f"operation {op} {_NOT_HERE}")
        if call.app_left or call.ended:
            if op == "get_call":
                return Reply(200, call.properties())
            raise RestError(400, "8528", f"call {call.id} has ended")
        if op == "get_participant":
            return handler(self, call, {"participant": ids.get("participant", "")})
        return handler(self, call, b)

    def recording_file(self, recording_id: str) -> Path | None:
        rec = self.recordings.get(recording_id)
        if rec is None or rec.state == "active" or not rec.path.is_file():
            return None
        return rec.path

    # ------------------------------------------------------------------ calls
    def _create(self, b: Mapping[str, object]) -> Reply:
        targets = _list(b, "targets", required=True)
        if not targets or len(targets) > 16:
            raise RestError(400, "8523", "targets must list 1 to 16 participants")
        numbers = [self._phone(t, f"targets[{i}]") for i, t in enumerate(targets)]
        callback = self._callback(b, "callbackUri", required=True)
        source = _obj(b, "sourceCallerIdNumber")
        source_number = ""
        if source is not None:
            source_number = self._phone({"phoneNumber": source}, "sourceCallerIdNumber")
        display = _str(b, "sourceDisplayName")
        self._unsupported(b, "mediaStreamingOptions", "transcriptionOptions")
        assert callback is not None
        call = self.apps.create(numbers, callback, _str(b, "operationContext"), source_number,
                                display)
        self._media(call)
        return Reply(201, call.properties())

    def _answer(self, b: Mapping[str, object]) -> Reply:
        context = _str(b, "incomingCallContext", required=True)
        callback = self._callback(b, "callbackUri", required=True)
        self._unsupported(b, "mediaStreamingOptions", "transcriptionOptions")
        assert context is not None and callback is not None
        call = self.apps.inbound.answer(context, callback, _str(b, "operationContext"))
        self._media(call)
        return Reply(200, call.properties())

    def _reject(self, b: Mapping[str, object]) -> Reply:
        context = _str(b, "incomingCallContext", required=True)
        reason = _str(b, "callRejectReason") or "none"
        if reason not in ("none", "busy", "forbidden"):
            raise RestError(400, "8523", "callRejectReason must be none, busy or forbidden")
        assert context is not None
        self.apps.inbound.reject(context, reason)
        return Reply(204, None)

    def _redirect(self, b: Mapping[str, object]) -> Reply:
        context = _str(b, "incomingCallContext", required=True)
        ident = parse_identifier(b.get("target"), "target")
        if ident.kind == "unknown" and ident.raw_id.startswith(("sip:", "sips:")):
            target = ident.raw_id
            if len(target) > 256 or not _SIP_URI.match(target):
                raise RestError(400, "8523", "target: not a SIP URI the gateway can redirect to")
        else:
            target = self._phone(b.get("target"), "target")
        assert context is not None
        self.apps.inbound.redirect(context, target)
        return Reply(204, None)

    def _get_call(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        return Reply(200, call.properties())

    def _hang_up(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self.apps.app_leaves(call)
        return Reply(204, None)

    def _terminate(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self.apps.terminate(call)
        return Reply(204, None)

    def _transfer(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        number = self._phone(b.get("targetParticipant"), "targetParticipant")
        context = _str(b, "operationContext")
        self.apps.require_connected(call)
        self.apps.transfer(call, number, context, self._callback(b, "operationCallbackUri"))
        return Reply(202, {"operationContext": context} if context is not None else {})

    # ------------------------------------------------------------------ participants
    def _list(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        return Reply(200, {"value": call.participants()})

    def _get_participant(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        raw = str(b.get("participant", ""))
        if raw == call.app_raw_id:
            return Reply(200, call.app_participant())
        party = self._party(call, raw)
        return Reply(200, {"identifier": party.identifier(), "isMuted": party.muted,
                           "isOnHold": party.on_hold})

    def _add(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        number = self._phone(b.get("participantToAdd"), "participantToAdd")
        timeout = _int(b, "invitationTimeoutInSeconds", 0, 180)
        context = _str(b, "operationContext")
        callback = self._callback(b, "operationCallbackUri")
        if call.participant(phone_raw(number)) is not None:
            raise RestError(400, "8523", f"{number} is already in the call")
        party = self.apps.add(call, number, timeout=float(timeout) if timeout else None,
                              op_context=context, op_callback=callback)
        out: dict[str, object] = {"invitationId": party.invitation_id,
                                  "participant": {"identifier": party.identifier(),
                                                  "isMuted": False, "isOnHold": False}}
        if context is not None:
            out["operationContext"] = context
        return Reply(202, out)

    def _remove(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        ident = parse_identifier(b.get("participantToRemove"), "participantToRemove")
        party = self._party(call, ident.raw_id, any_state=True)
        context = _str(b, "operationContext")
        callback = self._callback(b, "operationCallbackUri")
        self.apps.remove(call, party, context=context, callback=callback, event=True)
        return Reply(202, {"operationContext": context} if context is not None else {})

    def _mute(self, call: AppCall, b: Mapping[str, object], muted: bool = True) -> Reply:
        targets = _list(b, "targetParticipants", required=True)
        if len(targets) != 1:
            raise RestError(400, "8523", "targetParticipants must name exactly one participant")
        party = self._party(call, parse_identifier(targets[0], "targetParticipants[0]").raw_id)
        context = _str(b, "operationContext")
        if party.muted != muted:
            party.muted = muted
            assert call.bridge is not None
            call.bridge.mute(party.name, muted)
            self.apps.participants_updated(call)
        return Reply(200, {"operationContext": context} if context is not None else {})

    def _unmute(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        return self._mute(call, b, muted=False)

    def _gain(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        """The gateway's extension (no ACS counterpart): ``{"targetParticipant": identifier,
        "gainDb": -30..+18}`` scales how loud the others hear the party in the mix."""
        party = self._party(call, parse_identifier(b.get("targetParticipant"),
                                                   "targetParticipant").raw_id)
        gain = b.get("gainDb")
        if isinstance(gain, bool) or not isinstance(gain, int | float) or not -30 <= gain <= 18:
            raise RestError(400, "8523", "gainDb must be a number from -30 to 18")
        assert call.bridge is not None
        call.bridge.set_gain(party.name, 10 ** (gain / 20))
        return Reply(200, {"gainDb": gain})

    def _cancel_add(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        invitation = _str(b, "invitationId", required=True)
        context = _str(b, "operationContext")
        for party in call.parties.values():
            if party.invitation_id == invitation:
                if party.state != "ringing":
                    raise RestError(400, "8585", "the invitation is no longer pending")
                callback = self._callback(b, "operationCallbackUri")
                party.cancel_context, party.cancel_callback = context, callback
                self.apps.cancel(party, "app")
                out: dict[str, object] = {"invitationId": invitation}
                if context is not None:
                    out["operationContext"] = context
                return Reply(202, out)
        raise RestError(404, "8522", f"invitation {invitation} not found")

    # ------------------------------------------------------------------ media
    def _play(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self.apps.require_connected(call)
        sources = self._sources(b, "playSources")
        to = [self._party(call, parse_identifier(t, "playTo").raw_id)
              for t in _list(b, "playTo")]
        options = _obj(b, "playOptions") or {}
        loop = bool(options.get("loop", False))
        context, callback = _str(b, "operationContext"), self._callback(b, "operationCallbackUri")
        media = self._media(call)
        if b.get("interruptCallMediaOperation") is True:
            media.interrupt()
        media.play(sources, to or None, loop, context, callback)
        return Reply(202, None)

    def _recognize(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self.apps.require_connected(call)
        kind = _str(b, "recognizeInputType", required=True)
        if kind != "dtmf":
            raise RestError(400, "8523", f"recognizeInputType {kind!r} {_NOT_HERE} (dtmf is)")
        options = _obj(b, "recognizeOptions", required=True) or {}
        party = self._party(call, parse_identifier(options.get("targetParticipant"),
                                                   "recognizeOptions.targetParticipant").raw_id)
        silence = _int(options, "initialSilenceTimeoutInSeconds", 0, 300, default=5)
        dtmf = _obj(options, "dtmfOptions") or {}
        inter = _int(dtmf, "interToneTimeoutInSeconds", 1, 60, default=2)
        max_tones = _int(dtmf, "maxTonesToCollect", 1, 32, default=1)
        stops = frozenset(self._tones(dtmf.get("stopTones", []), "stopTones"))
        prompt: list[Mapping[str, object]] = []
        if "playPrompt" in b:
            prompt = [self._source(b["playPrompt"], "playPrompt")]
        elif "playPrompts" in b:
            prompt = self._sources(b, "playPrompts")
        context, callback = _str(b, "operationContext"), self._callback(b, "operationCallbackUri")
        media = self._media(call)
        if media.recognize is not None:
            raise RestError(409, "8519", "a recognize operation is already running")
        if b.get("interruptCallMediaOperation") is True:
            media.interrupt()
        media.start_recognize(party, max_tones=max_tones, stop_tones=stops,
                              inter_tone=float(inter), initial_silence=float(silence),
                              prompt=prompt,
                              interrupt_prompt=bool(options.get("interruptPrompt", False)),
                              context=context, callback=callback)
        return Reply(202, None)

    def _cancel_media(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self._media(call).cancel_all()
        return Reply(202, None)

    def _continuous(self, call: AppCall, b: Mapping[str, object], start: bool = True) -> Reply:
        party = self._party(call, parse_identifier(b.get("targetParticipant"),
                                                   "targetParticipant").raw_id)
        media = self._media(call)
        context, callback = _str(b, "operationContext"), self._callback(b, "operationCallbackUri")
        if start:
            media.start_continuous(party, context, callback)
        else:
            media.stop_continuous(party, context, callback)
        return Reply(200, None)

    def _stop_continuous(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        return self._continuous(call, b, start=False)

    def _send_dtmf(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        self.apps.require_connected(call)
        tones = self._tones(b.get("tones"), "tones")
        if not 1 <= len(tones) <= 18:
            raise RestError(400, "8523", "tones must hold 1 to 18 tones")
        party = self._party(call, parse_identifier(b.get("targetParticipant"),
                                                   "targetParticipant").raw_id)
        context = _str(b, "operationContext")
        self._media(call).send_dtmf(party, "".join(digit_of(t) for t in tones), context,
                                    self._callback(b, "operationCallbackUri"))
        return Reply(202, {"operationContext": context} if context is not None else {})

    def _hold(self, call: AppCall, b: Mapping[str, object], on: bool = True) -> Reply:
        party = self._party(call, parse_identifier(b.get("targetParticipant"),
                                                   "targetParticipant").raw_id)
        raw = b.get("playSourceInfo") if on else None
        music = self._source(raw, "playSourceInfo") if raw is not None else None
        context = _str(b, "operationContext")
        if party.on_hold == on:
            return Reply(200, None)
        self.apps.hold(call, party, on)
        media = self._media(call)
        if music is not None:
            media.play([music], [party], True, context, None)
        elif not on:
            media.stop_music(party)
        return Reply(200, None)

    def _unhold(self, call: AppCall, b: Mapping[str, object]) -> Reply:
        return self._hold(call, b, on=False)

    # ------------------------------------------------------------------ recordings
    def _start_recording(self, b: Mapping[str, object]) -> Reply:
        call_id = _str(b, "callConnectionId")
        locator = _obj(b, "callLocator")
        call: AppCall | None = None
        if call_id is not None:
            call = self.apps.find(call_id)
        elif locator is not None:
            server_id = locator.get("serverCallId")
            call = self.apps.by_server_id.get(str(server_id)) if server_id else None
            if call is None:
                raise RestError(404, "8522", "callLocator names no call of this gateway")
        else:
            raise RestError(400, "8523", "callConnectionId or callLocator is required")
        self.apps.require_connected(call)
        channel = _str(b, "recordingChannelType") or "mixed"
        fmt = _str(b, "recordingFormatType") or "wav"
        if channel not in ("mixed", "unmixed") or fmt != "wav":
            raise RestError(400, "8523", "recordings are WAV, mixed or unmixed")
        if any(r.call is call and r.state != "stopped" for r in self.recordings.values()):
            raise RestError(400, "8553", "the call is already being recorded")
        rid = uuid.uuid4().hex
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        rec = Recording(rid, call, self.recordings_dir / f"{rid}.wav", "active",
                        self._callback(b, "recordingStateCallbackUri"), started=time.time())
        assert call.bridge is not None
        call.bridge.record_start(rec.path, channel == "unmixed")
        self.recordings[rid] = rec
        if b.get("pauseOnStart") is True:
            call.bridge.record_pause()
            rec.state = "inactive"
        self._recording_changed(rec)
        return Reply(200, self._recording_body(rec))

    def _recording_op(self, op: str, rid: str, b: Mapping[str, object]) -> Reply:
        rec = self.recordings.get(rid)
        if rec is None:
            raise RestError(404, "8522", f"recording {rid} not found")
        if op == "get_recording":
            return Reply(200, self._recording_body(rec))
        bridge = rec.call.bridge
        if rec.state == "stopped" or bridge is None or rec.call.ended:
            raise RestError(400, "8585", f"recording {rid} has ended")
        if op == "stop_recording":
            bridge.record_stop()
            rec.state = "stopped"
            self._recording_changed(rec)
            return Reply(204, None)
        if op == "pause_recording" and rec.state == "active":
            bridge.record_pause()
            rec.state = "inactive"
            self._recording_changed(rec)
        elif op == "resume_recording" and rec.state == "inactive":
            bridge.record_resume()
            rec.state = "active"
            self._recording_changed(rec)
        elif op not in ("pause_recording", "resume_recording"):
            raise RestError(404, "NotFound", f"no operation {op} on recordings")
        return Reply(202, None)

    def _recording_body(self, rec: Recording) -> dict[str, object]:
        state = "inactive" if rec.state == "stopped" else rec.state
        return {"recordingId": rec.id, "recordingState": state, "recordingKind": rec.kind}

    def _recording_changed(self, rec: Recording) -> None:
        state = "inactive" if rec.state == "stopped" else rec.state
        self.apps.emit(rec.call, "RecordingStateChanged",
                       {"recordingId": rec.id, "state": state,
                        "startDateTime": _iso(rec.started), "recordingKind": rec.kind},
                       url=rec.callback, with_context=False)

    def _call_ended(self, call: AppCall) -> None:
        for rec in self.recordings.values():
            if rec.call is call and rec.state != "stopped":
                rec.state = "stopped"
        # a call's recordings stay downloadable; forget the oldest beyond a bound
        while len(self.recordings) > 10000:
            self.recordings.pop(next(iter(self.recordings)))

    # ------------------------------------------------------------------ helpers
    def _media(self, call: AppCall) -> MediaOps:
        if call.media is None:
            call.media = MediaOps(self.apps, call, self.loader, self.call_later, self.now)
        media: MediaOps = call.media
        return media

    def _party(self, call: AppCall, raw_id: str, any_state: bool = False) -> Party:
        party = call.participant(raw_id)
        if party is None or (party.state != "connected" and not any_state):
            raise RestError(404, "8522", f"participant {raw_id} not found in call {call.id}")
        return party

    def _phone(self, obj: object, where: str) -> str:
        ident = parse_identifier(obj, where)
        if ident.kind != "phoneNumber" or not _NUMBER.match(ident.value):
            raise RestError(400, "8523",
                            f"{where} must be a phone number in E.164 (+ and digits); "
                            f"{ident.kind} participants {_NOT_HERE}")
        return ident.value

    def _callback(self, b: Mapping[str, object], key: str, required: bool = False
                  ) -> str | None:
        url = _str(b, key, required=required)
        if url is None:
            return None
        reason = self.delivery.check_url(url)
        if reason is not None:
            raise RestError(400, "8523", f"{key}: {reason}")
        return url

    def _source(self, obj: object, where: str) -> Mapping[str, object]:
        if not isinstance(obj, Mapping):
            raise RestError(400, "8523", f"{where} must be a play source object")
        kind = obj.get("kind")
        if kind == "file":
            sub = obj.get("file")
            if not isinstance(sub, Mapping) or not isinstance(sub.get("uri"), str):
                raise RestError(400, "8523", f"{where}.file.uri is required")
        elif kind == "text":
            sub = obj.get("text")
            if not isinstance(sub, Mapping) or not isinstance(sub.get("text"), str):
                raise RestError(400, "8523", f"{where}.text.text is required")
        elif kind == "ssml":
            sub = obj.get("ssml")
            if not isinstance(sub, Mapping) or not isinstance(sub.get("ssmlText"), str):
                raise RestError(400, "8523", f"{where}.ssml.ssmlText is required")
        else:
            raise RestError(400, "8523", f"{where}.kind must be file, text or ssml")
        return obj

    def _sources(self, b: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
        items = _list(b, key, required=True)
        if not items:
            raise RestError(400, "8523", f"{key} must not be empty")
        return [self._source(item, f"{key}[{i}]") for i, item in enumerate(items)]

    @staticmethod
    def _tones(obj: object, where: str) -> list[str]:
        if not isinstance(obj, list) or not all(isinstance(t, str) for t in obj):
            raise RestError(400, "8523", f"{where} must be a list of DTMF tones")
        bad = [t for t in obj if t.lower() not in _TONES]
        if bad:
            raise RestError(400, "8523", f"{where}: unknown tones {', '.join(bad)}")
        return [t.lower() for t in obj]

    @staticmethod
    def _unsupported(b: Mapping[str, object], *keys: str) -> None:
        for key in keys:
            if key in b:
                raise RestError(400, "8523", f"{key}: media streaming and transcription "
                                             f"{_NOT_HERE}")


def phone_raw(number: str) -> str:
    return "4:" + number


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e7):07d}Z"


def _str(b: Mapping[str, object], key: str, required: bool = False) -> str | None:
    value = b.get(key)
    if value is None:
        if required:
            raise RestError(400, "8523", f"{key} is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise RestError(400, "8523", f"{key} must be a non-empty string")
    if len(value) > 4096:
        raise RestError(400, "8523", f"{key} is longer than 4096 characters")
    return value


def _obj(b: Mapping[str, object], key: str, required: bool = False
         ) -> Mapping[str, object] | None:
    value = b.get(key)
    if value is None:
        if required:
            raise RestError(400, "8523", f"{key} is required")
        return None
    if not isinstance(value, Mapping):
        raise RestError(400, "8523", f"{key} must be an object")
    return value


def _list(b: Mapping[str, object], key: str, required: bool = False) -> Sequence[object]:
    value = b.get(key)
    if value is None:
        if required:
            raise RestError(400, "8523", f"{key} is required")
        return []
    if not isinstance(value, list):
        raise RestError(400, "8523", f"{key} must be a list")
    return value


def _int(b: Mapping[str, object], key: str, low: int, high: int, default: int = 0) -> int:
    value = b.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RestError(400, "8523", f"{key} must be an integer from {low} to {high}")
    return value


_TOP: dict[str, Callable[[CallAutomationApi, Mapping[str, object]], Reply]] = {
    "create": CallAutomationApi._create,
    "answer": CallAutomationApi._answer,
    "reject": CallAutomationApi._reject,
    "redirect": CallAutomationApi._redirect,
    "start_recording": CallAutomationApi._start_recording,
}
_CALL: dict[str, Callable[[CallAutomationApi, AppCall, Mapping[str, object]], Reply]] = {
    "get_call": CallAutomationApi._get_call,
    "hang_up": CallAutomationApi._hang_up,
    "terminate": CallAutomationApi._terminate,
    "transferToParticipant": CallAutomationApi._transfer,
    "list_participants": CallAutomationApi._list,
    "get_participant": CallAutomationApi._get_participant,
    "participants:add": CallAutomationApi._add,
    "participants:remove": CallAutomationApi._remove,
    "participants:mute": CallAutomationApi._mute,
    "participants:unmute": CallAutomationApi._unmute,
    "participants:gain": CallAutomationApi._gain,
    "participants:cancelAddParticipant": CallAutomationApi._cancel_add,
    "play": CallAutomationApi._play,
    "recognize": CallAutomationApi._recognize,
    "cancelAllMediaOperations": CallAutomationApi._cancel_media,
    "startContinuousDtmfRecognition": CallAutomationApi._continuous,
    "stopContinuousDtmfRecognition": CallAutomationApi._stop_continuous,
    "sendDtmfTones": CallAutomationApi._send_dtmf,
    "hold": CallAutomationApi._hold,
    "unhold": CallAutomationApi._unhold,
}
