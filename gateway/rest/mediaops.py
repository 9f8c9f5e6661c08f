"""Media operations of the app's own leg in one call: play, recognize DTMF, continuous DTMF,
send DTMF, cancel; recordings are kept by the API (gateway.rest.api).

Each operation answers the REST request at once (202/200) and reports its outcome as events
(ACS_REST.md section 7.4): PlayStarted then PlayCompleted | PlayFailed | PlayCanceled;
RecognizeCompleted | RecognizeFailed | RecognizeCanceled; one
ContinuousDtmfRecognitionToneReceived per key press; SendDtmfTonesCompleted | ...Failed.
Audio comes from ``PromptLoader`` (file, https, text to speech) and goes out through the
call's ``Bridge``; key presses come from the bridge (RFC 4733) or from SIP INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import FirstError, gatherResults

from gateway.media.prompts import PromptError
from gateway.media.recognize import DtmfCollector, Outcome, tone_name
from gateway.rest.events import result_information

if TYPE_CHECKING:
    import numpy

    from gateway.calls.appcall import AppCalls
    from gateway.calls.appmodel import AppCall, Party
    from gateway.media.prompts import PromptLoader
    from gateway.sip.message import Request

log = logging.getLogger("gateway.app")

_CANCELED = (400, 8508, "Action falied, the operation was canceled.")


@dataclass(slots=True)
class Play:
    """One play_media (or a recognize prompt) in progress."""

    context: str | None
    callback: str | None
    to: tuple[str, ...] | None
    bridge_id: int | None = None
    done: bool = False
    for_recognize: bool = False


@dataclass(slots=True)
class Recognize:
    party: Party
    collector: DtmfCollector
    context: str | None
    callback: str | None
    interrupt_prompt: bool
    prompt: Play | None = None
    timer: Any = None


@dataclass(slots=True)
class MediaOps:
    """The media operations of one app call."""

    apps: AppCalls
    call: AppCall
    loader: PromptLoader
    call_later: Callable[..., Any]
    now: Callable[[], float]
    plays: list[Play] = field(default_factory=list)
    recognize: Recognize | None = None
    continuous: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    sequence: int = 0

    # ------------------------------------------------------------------ play
    def play(self, sources: Sequence[Mapping[str, object]], to: Sequence[Party] | None,
             loop: bool, context: str | None, callback: str | None, *,
             for_recognize: bool = False, started: Callable[[], None] | None = None) -> Play:
        names = None if not to else tuple(p.name for p in to)
        play = Play(context, callback, names, for_recognize=for_recognize)
        self.plays.append(play)
        loads = [self.loader.load(source) for source in sources]
        d = gatherResults(loads, consumeErrors=True)
        d.addCallbacks(lambda arrays: self._start(play, arrays, loop, started),
                       lambda failure: self._load_failed(play, failure, len(sources)))
        return play

    def _start(self, play: Play, arrays: list[numpy.ndarray], loop: bool,
               started: Callable[[], None] | None) -> None:
        import numpy as np

        bridge = self.call.bridge
        if play.done or bridge is None or self.call.ended:
            return
        pcm = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            play.bridge_id = bridge.play(pcm, to=play.to, loop=loop,
                                         done=lambda finished: self._played(play, finished))
        except (KeyError, ValueError) as exc:  # its party left while the source loaded
            play.done = True
            self._drop(play)
            if not play.for_recognize:
                self._emit("PlayFailed", play.context, play.callback, {
                    "failedPlaySourceIndex": 0, "resultInformation": result_information(
                        400, 8523, f"the play's participant left the call ({exc})")})
            return
        if not play.for_recognize:
            self._emit("PlayStarted", play.context, play.callback)
        if started is not None:
            started()

    def _load_failed(self, play: Play, failure: Any, count: int) -> None:
        """A source could not be loaded: PlayFailed (or RecognizeFailed for a prompt)."""
        if play.done:
            return
        play.done = True
        self._drop(play)
        exc, index = failure.value, 0
        if isinstance(exc, FirstError):
            index = min(exc.index, count - 1)
            exc = exc.subFailure.value
        if isinstance(exc, PromptError):
            code, sub, text = exc.code, exc.sub_code, exc.message
        else:
            log.error("call %s: play source failed: %s", self.call.id, failure.getTraceback())
            code, sub, text = 500, 9999, "Unknown internal server error."
        rec = self.recognize
        if play.for_recognize and rec is not None and rec.prompt is play:
            rec.prompt = None
            self._end_recognize(Outcome(False, (), 500, 8511, f"Prompt failed: {text}"),
                                failed_index=index)
            return
        self._emit("PlayFailed", play.context, play.callback,
                   {"failedPlaySourceIndex": index,
                    "resultInformation": result_information(code, sub, text)})

    def _played(self, play: Play, finished: bool) -> None:
        if play.done:
            return
        play.done = True
        self._drop(play)
        rec = self.recognize
        if play.for_recognize:
            if rec is not None and rec.prompt is play:
                rec.prompt = None
                rec.collector.prompt_done(self.now())
                self._arm(rec)
            return
        if finished:
            self._emit("PlayCompleted", play.context, play.callback)
        else:
            self._emit("PlayCanceled", play.context, play.callback,
                       {"resultInformation": result_information(*_CANCELED)})

    def _drop(self, play: Play) -> None:
        if play in self.plays:
            self.plays.remove(play)

    def _stop_play(self, play: Play) -> None:
        bridge = self.call.bridge
        if play.bridge_id is not None and bridge is not None:
            bridge.cancel_play(play.bridge_id)  # done(False) -> _played
        elif not play.done:
            play.done = True
            self._drop(play)
            if not play.for_recognize:
                self._emit("PlayCanceled", play.context, play.callback,
                           {"resultInformation": result_information(*_CANCELED)})

    def interrupt(self) -> None:
        """interruptCallMediaOperation: what plays now stops (as canceled)."""
        for play in list(self.plays):
            self._stop_play(play)

    def stop_music(self, party: Party) -> None:
        """unhold: what plays to this party alone (its music on hold) stops."""
        for play in list(self.plays):
            if play.to == (party.name,) and not play.for_recognize:
                self._stop_play(play)

    # ------------------------------------------------------------------ recognize
    def start_recognize(self, party: Party, *, max_tones: int, stop_tones: frozenset[str],
                        inter_tone: float, initial_silence: float,
                        prompt: Sequence[Mapping[str, object]], interrupt_prompt: bool,
                        context: str | None, callback: str | None) -> None:
        collector = DtmfCollector(max_tones, stop_tones, inter_tone, initial_silence,
                                  self.now(), prompt=bool(prompt))
        rec = Recognize(party, collector, context, callback, interrupt_prompt)
        self.recognize = rec
        if prompt:
            rec.prompt = self.play(prompt, [party], False, context, callback,
                                   for_recognize=True)
        else:
            self._arm(rec)

    def _arm(self, rec: Recognize) -> None:
        if rec.timer is not None and rec.timer.active():
            rec.timer.cancel()
        rec.timer = None
        deadline = rec.collector.deadline()
        if deadline is not None:
            rec.timer = self.call_later(max(0.0, deadline - self.now()) + 0.001, self._poll, rec)

    def _poll(self, rec: Recognize) -> None:
        rec.timer = None
        if self.recognize is not rec:
            return
        outcome = rec.collector.poll(self.now())
        if outcome is not None:
            self._end_recognize(outcome)
        else:
            self._arm(rec)

    def _end_recognize(self, outcome: Outcome, failed_index: int | None = None) -> None:
        rec = self.recognize
        if rec is None:
            return
        self.recognize = None
        if rec.timer is not None and rec.timer.active():
            rec.timer.cancel()
        if rec.prompt is not None and not rec.prompt.done:
            self._stop_play(rec.prompt)
        info = result_information(outcome.code, outcome.sub_code, outcome.message)
        if outcome.completed:
            self._emit("RecognizeCompleted", rec.context, rec.callback,
                       {"recognitionType": "dtmf",
                        "dtmfResult": {"tones": list(outcome.tones)},
                        "resultInformation": info})
        else:
            data: dict[str, object] = {"resultInformation": info}
            if failed_index is not None:
                data["failedPlaySourceIndex"] = failed_index
            self._emit("RecognizeFailed", rec.context, rec.callback, data)

    # ------------------------------------------------------------------ DTMF in
    def dtmf(self, party: Party, digit: str) -> None:
        try:
            tone = tone_name(digit)
        except ValueError:
            return
        rec = self.recognize
        if rec is not None and rec.party is party:
            if rec.prompt is not None and rec.interrupt_prompt and not rec.prompt.done:
                prompt, rec.prompt = rec.prompt, None
                self._stop_play(prompt)
                rec.collector.prompt_done(self.now())
            outcome = rec.collector.tone(tone, self.now())
            if outcome is not None:
                self._end_recognize(outcome)
            else:
                self._arm(rec)
        target = self.continuous.get(party.name)
        if target is not None:
            self.sequence += 1
            self._emit("ContinuousDtmfRecognitionToneReceived", target[0], target[1],
                       {"tone": tone, "sequenceId": self.sequence,
                        "participant": party.identifier()})

    def info(self, party: Party, req: Request) -> None:
        """SIP INFO dtmf-relay (Signal=5) or application/dtmf from a party."""
        if req.content_type not in ("application/dtmf-relay", "application/dtmf"):
            return
        text = req.body.decode("ascii", "replace").strip()
        digit = text
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "signal":
                digit = value.strip()
        if len(digit) == 1:
            self.dtmf(party, digit)

    def start_continuous(self, party: Party, context: str | None, callback: str | None) -> None:
        self.continuous[party.name] = (context, callback)

    def stop_continuous(self, party: Party, context: str | None, callback: str | None) -> None:
        if self.continuous.pop(party.name, None) is not None:
            self._emit("ContinuousDtmfRecognitionStopped", context, callback)

    # ------------------------------------------------------------------ DTMF out
    def send_dtmf(self, party: Party, digits: str, context: str | None,
                  callback: str | None) -> None:
        bridge = self.call.bridge
        assert bridge is not None

        def done(ok: bool) -> None:
            if ok:
                self._emit("SendDtmfTonesCompleted", context, callback)
            else:
                self._emit("SendDtmfTonesFailed", context, callback, {
                    "resultInformation": result_information(
                        400, 8534, "the participant negotiated no telephone-event")})

        bridge.send_dtmf(party.name, digits, done)

    # ------------------------------------------------------------------ ends
    def cancel_all(self, quiet: bool = False) -> None:
        """cancelAllMediaOperations: every play and the recognition end as canceled."""
        rec = self.recognize
        if rec is not None:
            self.recognize = None
            if rec.timer is not None and rec.timer.active():
                rec.timer.cancel()
            if not quiet:
                self._emit("RecognizeCanceled", rec.context, rec.callback,
                           {"resultInformation": result_information(*_CANCELED)})
        if quiet:  # the app is gone: stop the audio, report nothing
            bridge = self.call.bridge
            for play in list(self.plays):
                play.done = True
                if play.bridge_id is not None and bridge is not None:
                    bridge.cancel_play(play.bridge_id)
            self.plays.clear()
        else:
            self.interrupt()

    def party_gone(self, party: Party) -> None:
        rec = self.recognize
        if rec is not None and rec.party is party:
            self._end_recognize(Outcome(False, (), 400, 8510,
                                        "Action failed, the participant left."))
        self.continuous.pop(party.name, None)

    def close(self) -> None:
        for name in list(self.continuous):
            context, callback = self.continuous.pop(name)
            self._emit("ContinuousDtmfRecognitionStopped", context, callback)

    def _emit(self, name: str, context: str | None, callback: str | None,
              data: Mapping[str, object] | None = None) -> None:
        self.apps.emit(self.call, name, data, context=context, url=callback)
