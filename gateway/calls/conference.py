"""Conference rooms reached through the dial plan (``action = "conference:NAME"``).

A room is a call of the REST model (an ``AppCall`` with ``room`` set, callConnectionId
``conference-NAME``) without an app participant: the Call Automation API lists, mutes,
plays to, records and terminates it like any call, and its events (ParticipantsUpdated,
DominantSpeakersChanged) go to the room's ``[conferences.NAME] callback_uri`` if it has one.
Its media is a ``Bridge`` in the room's mode (``mcu`` mixes, ``sfu`` forwards Opus).

An INVITE routed to a room is answered at once (200 with the room's SDP; the caller's ACK
connects it). The room is created by its first party and ends when its last party leaves
(or when the app terminates it). With a PIN (``[conferences.NAME] pin``) a new party is
answered but *waiting*: it is not heard and hears only the room's beeps, until it keys the
PIN then ``#`` (RFC 4733; ``*`` starts again). A wrong PIN beeps low; the third wrong one, or
``PIN_TIMEOUT`` seconds without the right one, hangs the party up (BYE).

Invariants:
- A party is in the room's bridge from its 200 until it leaves; a waiting party is held in
  the mixer (not heard, hears only what plays to it) and nothing else changes when it joins.
- One room per name at a time: a name whose room ended starts a new room (same id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.calls.appmodel import AppCall, Party
from gateway.calls.b2bua import uas_names
from gateway.calls.sessiontimer import cancel_timer, has_option
from gateway.config import Trunk
from gateway.media.bridge import Bridge, BridgeError
from gateway.rest.events import phone_identifier
from gateway.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.appcall import AppCalls
    from gateway.calls.trunks import TrunkState

log = logging.getLogger("gateway.app")

__all__ = ["PIN_ATTEMPTS", "PIN_TIMEOUT", "Conferences", "room_id"]

PIN_ATTEMPTS = 3
PIN_TIMEOUT = 30.0


def room_id(name: str) -> str:
    """The callConnectionId of room ``name``."""
    return f"conference-{name}"


def _beeps(hz: float, count: int) -> np.ndarray:
    """``count`` 150 ms beeps of ``hz`` 100 ms apart (8 kHz int16)."""
    t = np.arange(int(0.15 * 8000)) / 8000
    beep = (6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    gap = np.zeros(800, dtype=np.int16)
    return np.concatenate([part for _ in range(count) for part in (beep, gap)])


ASK_PIN = _beeps(880.0, 2)
WRONG_PIN = _beeps(300.0, 1)


@dataclass(slots=True)
class _Waiting:
    """A party keying its PIN."""

    party: Party
    keyed: list[str] = field(default_factory=list)
    attempts: int = 0
    timer: Any = None


class Conferences:
    """The rooms by name, and the parties still keying a PIN."""

    def __init__(self, apps: AppCalls) -> None:
        self.apps = apps
        self.rooms: dict[str, AppCall] = {}
        self.waiting: dict[tuple[str, str], _Waiting] = {}  # (call id, party name)
        self.joins = 0
        self.pin_failures = 0

    # ------------------------------------------------------------------ joining
    def join(self, txn: ServerTransaction, trunk: Trunk, trunk_in: TrunkState, name: str,
             number: str) -> None:
        """An INVITE routed to room ``name``: answer it and put the caller in the room."""
        apps = self.apps
        b2b = apps.b2bua
        req = txn.request
        room = self.rooms.get(name)
        if apps.manager is None or (room is None and len(apps.calls) >= apps.max_calls):
            trunk_in.release()
            b2b._respond(txn, 503, None, (("Retry-After", str(b2b.config.sip.retry_after)),))
            return
        if room is None or room.ended:
            room = self._create(name, number, trunk.name)
        caller = req.from_.uri.user or "anonymous"
        party = apps._new_party(room, req.call_id, *uas_names(req), txn.source, trunk.name,
                                caller if caller.startswith("+") or caller == "anonymous"
                                else "+" + caller, "in")
        party.take_invite(req)
        party.refer = has_option(req.values("allow"), "refer")
        party.invite_txn = txn
        party.trunk_state = trunk_in
        txn.owner = party
        now = b2b.stack.reactor.seconds()
        if b2b.cdr is not None:
            b2b.cdr.leg_started(room.event_key, party.cdr_id, "in", trunk.name,
                                party.remote_uri, now, req.call_id)
        bridge = room.bridge
        assert bridge is not None
        try:
            sdp = bridge.accept(party.name, party.remote_sdp, trunk.codecs, trunk.srtp)
        except BridgeError as exc:
            log.info("room %s: %s refused (%s)", name, caller, exc.text)
            b2b._respond(txn, exc.status, None, (), to_tag=party.local_tag)
            b2b.stack.flush()
            apps._party_gone(party, exc.status)
            apps._maybe_end(room)
            return
        self.joins += 1
        pin = b2b.config.conference(name).pin
        if pin:
            bridge.set_waiting(party.name, True)
            wait = self.waiting[(room.id, party.name)] = _Waiting(party)
            wait.timer = b2b.call_later(PIN_TIMEOUT, self._pin_timeout, room, party)
            self._beep(room, party, ASK_PIN)
        apps.inbound.send_answer(party, txn, sdp)
        log.info("room %s: %s joins as %s (%d parties)", name, caller, party.name,
                 len(bridge.legs()))

    def _create(self, name: str, number: str, trunk: str) -> AppCall:
        apps = self.apps
        b2b = apps.b2bua
        settings = b2b.config.conference(name)
        room = AppCall(apps, number)
        room.id = room_id(name)
        room.room = name
        room.callback_uri = settings.callback_uri
        room.state = "connected"
        room.targets = [phone_identifier(number)]
        assert apps.manager is not None
        room.bridge = Bridge(
            apps.manager, room.id,
            on_dtmf=lambda leg, digit: apps._dtmf(room, leg, digit),
            on_timeout=lambda leg, why: apps._media_timeout(room, leg, why),
            on_speakers=lambda legs: apps.speakers_changed(room, legs),
            mode=settings.mode or b2b.config.media.conference_mode)
        room.bridge.on_sdp = lambda body: b2b.sdp_seen(room.event_key, body)
        apps._register(room)
        self.rooms[name] = room
        now = b2b.stack.reactor.seconds()
        if b2b.cdr is not None:
            b2b.cdr.call_started(room.event_key, "conference", number, trunk, now)
            b2b.cdr.call_answered(room.event_key, now, trunk)
        log.info("room %s: created (%s)", name, room.bridge.mode)
        return room

    def ended(self, room: AppCall) -> None:
        """``room`` is over: its name is free for a new room."""
        if room.room is not None and self.rooms.get(room.room) is room:
            del self.rooms[room.room]
        for key in [k for k in self.waiting if k[0] == room.id]:
            cancel_timer(self.waiting.pop(key).timer)

    # ------------------------------------------------------------------ the PIN
    def is_waiting(self, room: AppCall, party: Party) -> bool:
        return (room.id, party.name) in self.waiting

    def digit(self, room: AppCall, party: Party, digit: str) -> None:
        """A digit keyed by a waiting party."""
        wait = self.waiting.get((room.id, party.name))
        if wait is None or room.room is None:
            return
        if digit == "*":
            wait.keyed.clear()
            return
        if digit != "#":
            if len(wait.keyed) < 32:
                wait.keyed.append(digit)
            return
        pin = self.apps.b2bua.config.conference(room.room).pin
        if "".join(wait.keyed) == pin:
            self._admit(room, wait)
            return
        wait.keyed.clear()
        wait.attempts += 1
        self.pin_failures += 1
        log.info("room %s: %s keyed a wrong PIN (%d)", room.room, party.name, wait.attempts)
        if wait.attempts >= PIN_ATTEMPTS:
            self._drop(room, party, "wrong PIN")
        else:
            self._beep(room, party, WRONG_PIN)

    def _admit(self, room: AppCall, wait: _Waiting) -> None:
        party = wait.party
        cancel_timer(wait.timer)
        del self.waiting[(room.id, party.name)]
        if room.bridge is not None:
            room.bridge.set_waiting(party.name, False)
        log.info("room %s: %s keyed the PIN, joined", room.room, party.name)

    def _pin_timeout(self, room: AppCall, party: Party) -> None:
        wait = self.waiting.get((room.id, party.name))
        if wait is not None:
            wait.timer = None
            self._drop(room, party, "no PIN")

    def _drop(self, room: AppCall, party: Party, why: str) -> None:
        wait = self.waiting.pop((room.id, party.name), None)
        if wait is not None:
            cancel_timer(wait.timer)
        self.apps.drop(room, party, why)

    def _beep(self, room: AppCall, party: Party, pcm: np.ndarray) -> None:
        if room.bridge is not None and party.name in room.bridge.legs():
            room.bridge.play(pcm, to=[party.name], loop=False, done=lambda ok: None)

    def party_gone(self, room: AppCall, party: Party) -> None:
        wait = self.waiting.pop((room.id, party.name), None)
        if wait is not None:
            cancel_timer(wait.timer)

    def status(self) -> list[dict[str, object]]:
        """Each room's figures for the status file."""
        out: list[dict[str, object]] = []
        for name, room in self.rooms.items():
            entry: dict[str, object] = {"name": name, "id": room.id}
            if room.bridge is not None:
                entry.update(room.bridge.status())
            entry["waiting"] = sum(1 for k in self.waiting if k[0] == room.id)
            out.append(entry)
        return out
