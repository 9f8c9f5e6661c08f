"""The media plane's Twisted adapter: UDP ports, the 20 ms media clock, RTCP and timeouts.

``MediaManager`` owns the port pool and every open ``LegStream``'s sockets. Per packet it
does the least it can: ``datagramReceived`` stamps the time and calls the stream, and
catches whatever escapes (a bug) so that one bad packet never stops the reactor or another
call. Work that is not per packet runs on two shared clocks, not one timer per call:

- the media clock (every 20 ms, only while something is transcoded or mixed) drives every
  transcoder's jitter buffer, decoder and encoder, and every bridge's mixer (anything with
  ``tick(now)``: ``Ticker``); when the reactor was late it runs the missed ticks at once
  (``LoopingCall`` reports how many), counting each as late;
- housekeeping (every second) sends RTCP reports (every ``rtcp_interval`` seconds per leg,
  staggered) and ends calls whose peer has sent nothing for ``[media] timeout`` seconds.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall

from gateway.config import MediaConfig
from gateway.media.ports import PortPool, PortsExhausted
from gateway.media.stream import Address, Counters, LegStream

if TYPE_CHECKING:
    from gateway.media.bridge import Bridge
    from gateway.media.session import MediaSession

log = logging.getLogger(__name__)


class Ticker(Protocol):
    """What rides the media clock: a transcoder, or a bridge's mixer (gateway.media.bridge).
    ``tick(now)`` runs once per 20 ms frame; it must not block."""

    def tick(self, now: float) -> None: ...


def _call_of(ticker: Ticker) -> object:
    """The call id of a ticker, for the log (a transcoder's session's, a bridge's own)."""
    owner = getattr(ticker, "session", ticker)
    return getattr(owner, "call_id", "?")


FRAME = 0.02  # one 20 ms frame
# The media clock ticks every FRAME / SLICES and runs one slice of the transcoders each time:
# every transcoder still gets a tick per frame, but no callback runs all of them at once
# (with 50 transcoded calls that held the reactor 10-13 ms of every 20, delaying relayed
# packets and pushing ticks late).
SLICES = 4
# Housekeeping (RTCP reports, media timeouts, lost DTMF ends) runs every HOUSEKEEPING seconds
# over the share of sessions whose turn it is, so that reports are spread evenly.
HOUSEKEEPING = 0.2
_BIND_ATTEMPTS = 16
_COUNTER_VALUES = operator.attrgetter(*Counters.__slots__)  # a stream's counters, in order


class _MediaPort(DatagramProtocol):
    """One socket of a stream: its RTP port (where RTCP may arrive too, muxed: RFC 5761
    section 4 tells them apart by the second octet) or, with ``rtcp_only``, its RTCP port."""

    def __init__(self, manager: MediaManager, rtcp_only: bool = False) -> None:
        self.manager = manager
        self.rtcp_only = rtcp_only
        self.stream: LegStream | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        stream = self.stream
        if stream is None:
            return
        try:
            if datagram and datagram[0] < 4:  # STUN (RFC 7983): an ICE connectivity check
                stream.on_stun(datagram, addr, self.rtcp_only)
            elif self.rtcp_only or (len(datagram) > 1 and 192 <= datagram[1] <= 223):
                stream.on_rtcp(datagram, addr, self.manager.seconds())
            else:
                stream.on_rtp(datagram, addr, self.manager.seconds())
        except Exception:  # a bug: count it, keep the port and every other call alive
            self.manager.handler_errors += 1
            log.exception("media port %s: error handling a datagram from %s",
                          stream.port + self.rtcp_only, addr)


class _Sockets:
    __slots__ = ("rtcp", "rtcp_proto", "rtp", "rtp_proto")

    def __init__(self, rtp: Any, rtp_proto: _MediaPort, rtcp: Any, rtcp_proto: _MediaPort
                 ) -> None:
        self.rtp = rtp
        self.rtp_proto = rtp_proto
        self.rtcp = rtcp
        self.rtcp_proto = rtcp_proto


class MediaManager:
    def __init__(self, reactor: Any, config: MediaConfig) -> None:
        self.reactor = reactor
        self.seconds = reactor.seconds
        self.config = config
        self.address = config.address
        self.pool = PortPool(*config.port_range)
        self.sockets: dict[LegStream, _Sockets] = {}
        self.sessions: set[MediaSession] = set()
        self.bridges: set[Bridge] = set()  # closed by stop(); a bridge adds and removes itself
        self.transcoders: list[Ticker] = []
        self.handler_errors = 0
        self.send_errors = 0  # datagrams the kernel refused (counted, dropped)
        self.late_ticks = 0  # ticks run a whole frame (20 ms) or more late (frames went late)
        self.ticks = 0
        self.timeouts = 0
        self.closed_totals: dict[str, int] = {}
        self._clock: LoopingCall | None = None
        self._slices: list[list[Ticker]] = [[] for _ in range(SLICES)]
        self._slice = 0  # the slice the next tick runs
        self._next_slice = 0  # the slice a new transcoder joins
        self._house = LoopingCall(self._housekeeping)
        self._house.clock = reactor
        self._house_started = False
        self._rtcp_turn = 0

    def now(self) -> float:
        return float(self.seconds())

    # ------------------------------------------------------------------ sessions
    def new_session(self, call_id: str, **callbacks: Any) -> MediaSession:
        from gateway.media.session import MediaSession

        session = MediaSession(self, call_id, **callbacks)
        self.sessions.add(session)
        if not self._house_started:
            self._house_started = True
            self._house.start(HOUSEKEEPING, now=False)
        return session

    def session_closed(self, session: MediaSession) -> None:
        self.sessions.discard(session)

    # ------------------------------------------------------------------ ports
    def open_stream(self, session: object = None) -> LegStream:
        """A new stream on a free RTP/RTCP port pair (PortsExhausted when there is none).
        ``session`` (a MediaSession or a Bridge) is the stream's owner; it is not kept."""
        failed: list[int] = []
        try:
            for _ in range(_BIND_ATTEMPTS):
                port = self.pool.allocate()
                rtp_proto, rtcp_proto = _MediaPort(self), _MediaPort(self, rtcp_only=True)
                try:
                    rtp = self.reactor.listenUDP(port, rtp_proto, interface=self.address)
                except CannotListenError:
                    failed.append(port)
                    continue
                try:
                    rtcp = self.reactor.listenUDP(port + 1, rtcp_proto, interface=self.address)
                except CannotListenError:
                    rtp.stopListening()
                    failed.append(port)
                    continue
                stream = LegStream(port, self._sender(rtp), self._sender(rtcp))
                rtp_proto.stream = rtcp_proto.stream = stream
                self.sockets[stream] = _Sockets(rtp, rtp_proto, rtcp, rtcp_proto)
                return stream
            raise PortsExhausted(f"no bindable RTP port pair in {_BIND_ATTEMPTS} attempts")
        finally:
            for port in failed:
                self.pool.release(port)

    def _sender(self, port: Any) -> Callable[[bytes, Address], None]:
        """``sendto`` on the port's socket. Twisted's ``Port.write`` re-checks the address
        family on every datagram (a fifth of the relay's CPU in the profile); the address
        here is always an IP literal of the right family, from the SDP or a received packet.
        A send that fails (buffer full, ICMP unreachable reported back) drops the packet and
        is counted."""
        sendto = port.socket.sendto

        def send(data: bytes, addr: Address) -> None:
            try:
                sendto(data, addr)
            except OSError:
                self.send_errors += 1

        return send

    def close_stream(self, stream: LegStream) -> None:
        sockets = self.sockets.pop(stream, None)
        if sockets is None:
            return
        sockets.rtp_proto.stream = sockets.rtcp_proto.stream = None
        sockets.rtp.stopListening()
        sockets.rtcp.stopListening()
        self.pool.release(stream.port)
        totals = self.closed_totals
        for name, value in stream.counters.as_dict().items():
            totals[name] = totals.get(name, 0) + value

    # ------------------------------------------------------------------ media clock
    def add_transcoder(self, transcoder: Ticker) -> None:
        self.transcoders.append(transcoder)
        self._slices[self._next_slice].append(transcoder)
        self._next_slice = (self._next_slice + 1) % SLICES
        if self._clock is None:
            self._clock = LoopingCall.withCount(self._tick)
            self._clock.clock = self.reactor
            self._clock.start(FRAME / SLICES, now=False)

    def remove_transcoder(self, transcoder: Ticker) -> None:
        try:
            self.transcoders.remove(transcoder)
        except ValueError:
            return
        for group in self._slices:
            if transcoder in group:
                group.remove(transcoder)
                break
        if not self.transcoders and self._clock is not None:
            clock, self._clock = self._clock, None
            if clock.running:
                clock.stop()

    def _tick(self, count: int) -> None:
        """One slice of the transcoders per FRAME / SLICES; missed slices run at once."""
        now = self.now()
        if count > SLICES:  # a whole frame (20 ms) or more behind: frames went out late
            self.late_ticks += count - SLICES
        step = FRAME / SLICES
        for i in range(count):
            at = now - (count - 1 - i) * step
            group = self._slices[self._slice]
            self._slice = (self._slice + 1) % SLICES
            for transcoder in list(group):
                try:
                    transcoder.tick(at)
                except Exception:
                    self.handler_errors += 1
                    log.exception("call %s: transcoder failed", _call_of(transcoder))
                    self.remove_transcoder(transcoder)
        self.ticks += count

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        now = self.now()
        timeout = self.config.timeout
        turns = max(1, round(self.config.rtcp_interval / HOUSEKEEPING))
        self._rtcp_turn = (self._rtcp_turn + 1) % turns
        for session in list(self.sessions):
            try:
                self._keep(session, now, timeout, turns)
            except Exception:
                self.handler_errors += 1
                log.exception("call %s: media housekeeping failed", session.call_id)

    def _keep(self, session: MediaSession, now: float, timeout: float, turns: int) -> None:
        if session.trackers:
            session.poll_dtmf(now)
        for side in session.sides.values():
            stream = side.stream
            if stream is None or side.codec is None:
                continue
            if hash(stream) % turns == self._rtcp_turn:
                stream.rtcp_report(now, session.cname, session.ssrc)
            if (
                timeout > 0
                and stream.sends
                and session.active
                and session.mode != "none"
                and now - stream.last_rx > timeout
                and session.on_timeout is not None
            ):
                self.timeouts += 1
                callback, session.on_timeout = session.on_timeout, None
                callback("media timeout")
                return

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, object]:
        # one column sum per counter over every live stream (a dict per stream cost 5 ms of
        # the reactor per status at 1000 calls)
        names = Counters.__slots__
        columns = zip(*map(_COUNTER_VALUES, (stream.counters for stream in self.sockets)),
                      strict=True)
        totals = dict(zip(names, map(sum, columns), strict=True)) if self.sockets else {}
        for name, value in self.closed_totals.items():
            totals[name] = totals.get(name, 0) + value
        return {
            "media_sessions": len(self.sessions),
            "media_streams": len(self.sockets),
            "media_ports_free": self.pool.free,
            "media_ports_total": self.pool.size,
            "transcoders": len(self.transcoders),
            "media_handler_errors": self.handler_errors,
            "media_send_errors": self.send_errors,
            "media_late_ticks": self.late_ticks,
            "media_timeouts": self.timeouts,
            **{f"rtp_{name}": value for name, value in sorted(totals.items())},
        }

    def calls(self, limit: int = 1000) -> dict[str, object]:
        """Live media of up to ``limit`` calls, by call id (for the status file)."""
        out: dict[str, object] = {}
        for session in self.sessions:
            if len(out) >= limit:
                break
            if session.mode != "none":
                out[session.call_id] = session.live()
        return out

    def stop(self) -> None:
        for session in list(self.sessions):
            session.close()
        for bridge in list(self.bridges):
            bridge.close()
        if self._clock is not None and self._clock.running:
            self._clock.stop()
        if self._house.running:
            self._house.stop()


def address_of(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"
