"""DTMF collection for the ACS `recognize` action (recognizeInputType "dtmf"); sans-I/O.

The call's app leg feeds each detected key press (RFC 4733 event, SIP INFO or in-band) to a
`DtmfCollector` as an ACS DtmfTone name, fires `poll(now)` when `deadline()` is reached, and
tells it when the prompt has finished playing (`prompt_done`). The first `Outcome` returned is
the answer: it becomes RecognizeCompleted or RecognizeFailed (ACS_REST.md section 7.3) with the
`resultInformation` codes of section 9.

Invariants:
- No reactor, no clock: time is the `now` argument (seconds, any epoch, non-decreasing).
- Exactly one Outcome per collector. After it, `tone` and `poll` return None and `deadline`
  is None; late tones are ignored, never queued.
- A deadline is reached when `now >= deadline`. A tone arriving at or after the deadline that
  has not been polled yet loses to the timeout: the outcome does not depend on whether the
  timer fired before the packet was read.
- Initial silence runs from `start` when there is no prompt, and from `prompt_done(now)` when
  there is one; while the prompt plays there is no deadline. The first tone stops it for good;
  from then on the inter-tone timeout runs from the latest tone.
- A stop tone ends collection and is not part of `tones`. Stop tones win over max tones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DTMF_TONES",
    "DtmfCollector",
    "Outcome",
    "digit_of",
    "tone_name",
]

#: ACS DtmfTone wire strings, indexed like the RFC 4733 section 3.2 event codes 0..15
#: ("0123456789*#ABCD").
DTMF_TONES: Final = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "asterisk", "pound", "a", "b", "c", "d",
)  # fmt: skip
_DIGITS: Final = "0123456789*#ABCD"
_NAME_OF_DIGIT: Final = dict(zip(_DIGITS, DTMF_TONES, strict=True))
_DIGIT_OF_NAME: Final = dict(zip(DTMF_TONES, _DIGITS, strict=True))

# resultInformation (code, subCode, message) per ending, ACS_REST.md section 9.
MAX_TONES: Final = (200, 8531, "Action completed, max digits received.")
STOP_TONE: Final = (200, 8514, "Action completed as stop tone was detected.")
#: Section 9 lists 400/8532 both for the older RecognizeFailed and for the newer
#: RecognizeCompleted carrying the tones collected before the silence.
INTER_TONE: Final = (400, 8532, "Action failed, inter-digit silence timeout reached.")
INITIAL_SILENCE: Final = (400, 8510, "Action failed, initial silence timeout reached.")


def tone_name(digit: str) -> str:
    """The ACS DtmfTone for an RFC 4733 DTMF digit ("0"-"9", "*", "#", "A"-"D", any case)."""
    name = _NAME_OF_DIGIT.get(digit.upper()) if len(digit) == 1 else None
    if name is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return name


def digit_of(name: str) -> str:
    """The RFC 4733 DTMF digit ("0"-"9", "*", "#", "A"-"D") for an ACS DtmfTone name.

    Tone names are matched case-insensitively (the SDK sends lower case; some apps do not).
    """
    digit = _DIGIT_OF_NAME.get(name.lower())
    if digit is None:
        raise ValueError(f"not an ACS DtmfTone: {name!r}")
    return digit


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a DTMF recognition ended.

    `completed` selects RecognizeCompleted (with `dtmfResult.tones` = `tones`) over
    RecognizeFailed; `code`, `sub_code`, `message` are its `resultInformation`.
    """

    completed: bool
    tones: tuple[str, ...]
    code: int
    sub_code: int
    message: str


class DtmfCollector:
    """Collects key presses for one recognize operation until one of its endings.

    `max_tones` >= 1 presses complete it (8531); any of `stop_tones` completes it (8514);
    `initial_silence` seconds without a first press fail it (8510); `inter_tone` seconds
    after the latest press complete it with the presses so far (8532). `start` is when the
    operation began; with `prompt=True` the initial silence waits for `prompt_done`.
    """

    def __init__(
        self,
        max_tones: int,
        stop_tones: frozenset[str],
        inter_tone: float,
        initial_silence: float,
        start: float,
        *,
        prompt: bool = False,
    ) -> None:
        if max_tones < 1:
            raise ValueError(f"max_tones must be at least 1, not {max_tones}")
        if inter_tone <= 0:
            raise ValueError(f"inter_tone must be positive, not {inter_tone}")
        if initial_silence < 0:
            raise ValueError(f"initial_silence must not be negative, not {initial_silence}")
        unknown = sorted(tone for tone in stop_tones if tone not in _DIGIT_OF_NAME)
        if unknown:
            raise ValueError(f"unknown stop tones: {', '.join(unknown)}")
        self.max_tones = max_tones
        self.stop_tones = stop_tones
        self.inter_tone = inter_tone
        self.initial_silence = initial_silence
        self._tones: list[str] = []
        self._outcome: Outcome | None = None
        self._prompt_playing = prompt
        self._deadline: float | None = None if prompt else start + initial_silence

    @property
    def tones(self) -> tuple[str, ...]:
        """Presses collected so far (stop tone excluded)."""
        return tuple(self._tones)

    @property
    def outcome(self) -> Outcome | None:
        """The ending once there is one, else None."""
        return self._outcome

    def deadline(self) -> float | None:
        """When `poll` must next be called; None when nothing is timed (done, or prompt)."""
        return None if self._outcome is not None else self._deadline

    def prompt_done(self, now: float) -> None:
        """The prompt finished (or was interrupted): initial silence starts now.

        Does nothing without a prompt, after a first tone, twice, or once finished.
        """
        if self._outcome is not None or not self._prompt_playing:
            return
        self._prompt_playing = False
        if not self._tones:
            self._deadline = now + self.initial_silence

    def tone(self, tone: str, now: float) -> Outcome | None:
        """One key press (an ACS DtmfTone name); returns the outcome if this ends it.

        A press at or past an unpolled deadline yields the timeout outcome instead, and the
        press is dropped. Presses after the outcome are ignored (None).
        """
        if tone not in _DIGIT_OF_NAME:
            raise ValueError(f"not an ACS DtmfTone: {tone!r}")
        timed_out = self.poll(now)
        if timed_out is not None or self._outcome is not None:
            return timed_out
        if tone in self.stop_tones:
            return self._finish(True, STOP_TONE)
        self._tones.append(tone)
        if len(self._tones) >= self.max_tones:
            return self._finish(True, MAX_TONES)
        self._deadline = now + self.inter_tone
        return None

    def poll(self, now: float) -> Outcome | None:
        """The timeout outcome if a deadline has been reached, else None."""
        if self._outcome is not None or self._deadline is None or now < self._deadline:
            return None
        if self._tones:
            return self._finish(True, INTER_TONE)
        return self._finish(False, INITIAL_SILENCE)

    def _finish(self, completed: bool, result: tuple[int, int, str]) -> Outcome:
        code, sub_code, message = result
        self._outcome = Outcome(completed, tuple(self._tones), code, sub_code, message)
        self._deadline = None
        return self._outcome
