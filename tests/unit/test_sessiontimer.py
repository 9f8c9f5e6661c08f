"""Session-timer header parsing (RFC 4028 section 4) and SDP origin continuity (RFC 3264 8)."""

from __future__ import annotations

import pytest

from gateway.calls.sessiontimer import (
    SessionTimer,
    continue_origin,
    has_option,
    origin_line,
    parse_min_se,
    parse_session_expires,
)
from gateway.sip.errors import SipParseError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", (1800, None)),
        ("1800;refresher=uac", (1800, "uac")),
        ("90 ; refresher = UAS", (90, "uas")),
        ("600;foo=bar;refresher=uac", (600, "uac")),
    ],
)
def test_session_expires_parses(value: str, expected: tuple[int, str | None]) -> None:
    assert parse_session_expires(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "1800;refresher=both", "١٨٠٠"])
def test_bad_session_expires_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_session_expires(value)


def test_min_se_and_option_tags() -> None:
    assert parse_min_se("90") == 90 and parse_min_se(None) is None
    with pytest.raises(SipParseError):
        parse_min_se("ninety")
    assert has_option(["100rel, timer"], "timer")
    assert has_option(["replaces", "Timer"], "timer")
    assert not has_option(["100rel"], "timer")


def test_timer_deadlines() -> None:
    timer = SessionTimer(90, we_refresh=True, refresher="uac")
    assert timer.refresh_after == 45
    assert timer.expire_after == 60  # 90 - min(32, 30)
    assert SessionTimer(1800, False, "uas").expire_after == 1768  # 1800 - 32
    assert timer.header() == "90;refresher=uac"


PREVIOUS = b"v=0\r\no=- 100 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"


def test_sdp_from_another_origin_keeps_the_legs_origin_with_the_next_version() -> None:
    other = b"v=0\r\no=bob 555 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\n"
    out = continue_origin(PREVIOUS, other)
    assert origin_line(out) == b"o=- 100 2 IN IP4 192.0.2.1"
    assert b"c=IN IP4 192.0.2.9" in out  # only the origin changes
    again = continue_origin(out, other)
    assert origin_line(again) == b"o=- 100 3 IN IP4 192.0.2.1"


def test_sdp_of_the_same_session_is_left_alone() -> None:
    newer = b"v=0\r\no=- 100 2 IN IP4 192.0.2.1\r\ns=-\r\n"
    assert continue_origin(PREVIOUS, newer) == newer
    assert continue_origin(PREVIOUS, PREVIOUS) == PREVIOUS
    assert continue_origin(b"", newer) == newer
    assert continue_origin(PREVIOUS, b"v=0\r\ns=-\r\n") == b"v=0\r\ns=-\r\n"
