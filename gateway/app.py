"""Wires the gateway onto one reactor: SIP stack, B2BUA, dial plan, STUN/TURN, signals.

SIGHUP reloads the dial plans (the old plan stays if the new one is invalid);
SIGTERM and SIGINT drain: new calls get 503, the process ends when the last
call ends or after the grace period.
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import logging
import signal
import socket
import sys
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall

from gateway.calls.appcall import AppCalls
from gateway.calls.b2bua import B2BUA
from gateway.config import Config, Trunk
from gateway.dialplan.plan import DialPlan
from gateway.errors import ConfigError
from gateway.media.manager import MediaManager
from gateway.media.prompts import PromptLoader
from gateway.nat.allocation import TurnUsage, format_address
from gateway.nat.callmap import CallMap
from gateway.nat.secret import turn_secret
from gateway.nat.service import TurnService
from gateway.observe.metrics import GcPauses
from gateway.observe.metrics import listen as listen_metrics
from gateway.rest.api import CallAutomationApi
from gateway.rest.delivery import Delivery
from gateway.rest.keys import access_key
from gateway.rest.relayconfig import relay_issuer
from gateway.rest.server import listen as listen_rest
from gateway.sip.transaction import Timers, TransactionLayer
from gateway.sip.transport import SipStack
from gateway.store.cdr import CdrStore
from gateway.tlsutil import client_options, ensure_certificate, server_options

log = logging.getLogger("gateway")
DRAIN_GRACE = 30.0
CDR_FLUSH = 0.2  # seconds between CDR batch writes
STATUS_EVERY = 5.0  # seconds between rewrites of the trunk state file


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_plan(config: Config) -> DialPlan:
    return DialPlan.load(
        config.dialplan.files, [t.name for t in config.trunks], list(config.sip.users)
    )


def _resolve_trunks(config: Config) -> Config:
    """Trunks named by host name are resolved once at start-up."""
    trunks: list[Trunk] = []
    for trunk in config.trunks:
        if trunk.host_ip is None:
            try:
                info = socket.getaddrinfo(trunk.host, trunk.port, type=socket.SOCK_DGRAM)
                trunk = dataclasses.replace(trunk, host=str(info[0][4][0]))
            except OSError as exc:
                log.warning("trunk %s: cannot resolve %s: %s", trunk.name, trunk.host, exc)
        trunks.append(trunk)
    return dataclasses.replace(config, trunks=tuple(trunks))


class Gateway:
    """The running gateway (also used by tests that drive a reactor themselves)."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.reactor = reactor
        self.config = config = _resolve_trunks(config)
        self.plan = load_plan(config)
        sip = config.sip
        self.layer = TransactionLayer(Timers(sip.t1, sip.t2, sip.t4))
        self.stack = SipStack(reactor, self.layer, sip.tcp_max_buffer, sip.udp_buffer)
        # the certificate serves HTTPS (always) and SIP over TLS (when listened on)
        hosts = [listen.host for listen in sip.listen] + [config.rest.listen.host]
        ensure_certificate(config.tls.cert, config.tls.key, hosts)
        if any(listen.transport == "tls" for listen in sip.listen):
            self.stack.tls_server_options = server_options(config.tls.cert, config.tls.key)
            self.stack.tls_client_options = client_options
        self.cdr = CdrStore(config.storage.cdr)
        self.media = MediaManager(reactor, config.media) if config.media.anchor else None
        self.b2bua = B2BUA(self.stack, config, self.plan, reactor.callLater, self.cdr,
                           self.media)
        self.stack.user = self.b2bua
        rest = config.rest
        self.delivery = Delivery(reactor, rest, ca=rest.callback_ca,
                                 insecure=rest.allow_insecure_callbacks)
        self.apps = AppCalls(self.b2bua, self.media, self.delivery, rest.incoming_call_timeout,
                             rest.max_app_calls)
        self.b2bua.apps = self.apps
        loader = PromptLoader(reactor, rest.media_dir, rest.callback_ca,
                              rest.allow_insecure_callbacks, self.delivery.check_url)
        self.api = CallAutomationApi(self.apps, self.delivery, loader, rest.recordings_dir,
                                     reactor.callLater, reactor.seconds)
        self._rest_port: Any = None
        self._metrics_port: Any = None
        # the GC's pauses, timed once start-up's own collection is done (run_gateway)
        self.gc_pauses = GcPauses() if config.observe.metrics_listen is not None else None
        # CDRs are written in batches: a call answered is durable within CDR_FLUSH seconds
        self._cdr_flush = LoopingCall(self.cdr.flush)
        self._cdr_flush.clock = reactor
        # STUN always, TURN unless [turn] enabled = false; usage rows go with the CDRs
        self.turn_secret = turn_secret(config)  # [turn] auth_secret, or generated into var/
        self.turn = TurnService(reactor, config.turn, self._turn_usage,
                                secret=self.turn_secret)
        # a usage row names the call whose SDP offered the allocation's relay address
        self.turn_calls = CallMap(lambda relay: self.turn.server.allocation(relay) is not None)
        self.b2bua.sdp_seen = self.turn_calls.note
        self.b2bua.status_sections["turn"] = lambda: self.turn.counters
        self._status = LoopingCall(self.write_status)  # trunks.json for `trunks`
        self._status.clock = reactor
        self._stopping = False
        self._stopped = False

    def start(self) -> None:
        for listen in self.config.sip.listen:
            local = self.stack.listen(listen.transport, listen.host, listen.port)
            log.info("SIP listening on %s:%s", local.transport, local.sent_by)
        turn = self.config.turn
        for transport, address in self.turn.start():
            log.info("STUN%s listening on %s:%s", "/TURN" if turn.enabled else " (TURN off)",
                     transport, format_address(address))
        if turn.enabled and turn.listen:
            log.info("TURN relays on %s ports %d-%d", turn.relay_address,
                     *turn.relay_port_range)
        key = base64.b64decode(access_key(self.config))
        self._rest_port = listen_rest(self.reactor, self.config.rest, self.config.tls.cert,
                                      self.config.tls.key, self.api, key,
                                      relay=relay_issuer(self.config, self.turn_secret))
        metrics = self.config.observe.metrics_listen
        if metrics is not None:
            try:
                self._metrics_port = listen_metrics(self.reactor, metrics, self.b2bua.status,
                                                    self.gc_pauses)
            except CannotListenError as exc:
                raise CannotListenError(  # type: ignore[no-untyped-call]
                    exc.interface, exc.port, f"observe.metrics_listen: {exc.socketError}",
                ) from exc
        # every socket is bound: only now does the gateway speak to its carriers
        self.b2bua.probes.start()
        self.b2bua.registrations.start()
        if self.media is not None:
            media = self.config.media
            log.info("media anchored on %s ports %d-%d (%d RTP/RTCP pairs)", media.address,
                     media.port_range[0], media.port_range[1], self.media.pool.size)
            _raise_fd_limit(2 * self.media.pool.size + 1024)  # 2 sockets per port pair
        if turn.enabled and turn.listen:  # a socket per relay port in use
            media_fds = 2 * self.media.pool.size if self.media is not None else 0
            _raise_fd_limit(media_fds + self.turn.ports.size + 1024)
        self._cdr_flush.start(CDR_FLUSH, now=False)
        self._status.start(STATUS_EVERY, now=False)

    def _turn_usage(self, usage: TurnUsage) -> None:
        call = self.turn_calls.call_for(usage.relay)
        if call is not None:
            usage = dataclasses.replace(usage, call_id=call)
        self.cdr.turn_usage(usage.row())

    def write_status(self) -> None:
        """trunks.json: the B2BUA's status document, the STUN/TURN counters under "turn"."""
        self.b2bua.write_status()

    def reload(self) -> bool:
        try:
            plan = load_plan(self.config)
        except ConfigError as err:
            log.error("dial plan reload failed, keeping the old plan:\n%s", err)
            return False
        self.plan = plan
        self.b2bua.plan = plan
        log.info("dial plan reloaded: %d inbound rules, %d outbound routes",
                 len(plan.inbound_rules), len(plan.outbound_routes))
        return True

    def drain(self, grace: float = DRAIN_GRACE) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.b2bua.draining = True
        active = len(self.b2bua.calls) + len(self.apps.calls)
        log.info("draining: %d calls in progress, grace %ss", active, grace)
        if active == 0:
            self._stop()
            return
        self.b2bua.on_idle = self._stop
        self.reactor.callLater(grace, self._stop)

    def _stop(self) -> None:
        if self._stopped:
            return  # the drain's timer and the last call's end may both get here
        self._stopped = True
        self.b2bua.on_idle = None
        if self.reactor.running:
            counters = self.stack.counters
            b2bua = self.b2bua
            log.info(
                "stopping: calls started %d answered %d failed %d; live calls %d dialogs %d "
                "transactions %d client %d server; parse errors %d (answered %d, dropped %d); "
                "handler bugs %d",
                b2bua.stats.started, b2bua.stats.answered, b2bua.stats.failed,
                len(b2bua.calls), len(b2bua.dialogs), self.layer.client_count,
                self.layer.server_count, counters.parse_errors, counters.answered_errors,
                counters.dropped, counters.handler_errors,
            )
            self.stack.stop_listening()
            if self._rest_port is not None:
                self._rest_port.stopListening()
            if self._metrics_port is not None:
                self._metrics_port.stopListening()
            if self.gc_pauses is not None:
                self.gc_pauses.uninstall()
            self.apps.stop()
            self.delivery.stop()
            if self.media is not None:
                self.b2bua.write_status()
                self.media.stop()
            self.turn.stop()  # usage rows of the live allocations, before the CDRs close
            turn = self.turn.counters
            log.info("stopping TURN: allocations %d total, relayed %d packets to peers and "
                     "%d to clients, handler bugs %d", turn["allocations_total"],
                     turn["packets_to_peer"], turn["packets_to_client"], turn["handler_errors"])
            for loop in (self._cdr_flush, self._status):
                if loop.running:
                    loop.stop()
            self.cdr.close()
            self.write_status()
            self.reactor.stop()


def _raise_fd_limit(wanted: int) -> None:
    """Two sockets per anchored leg (four per call), besides SIP and the CDR database: lift
    the soft open-files limit toward the hard one, and say if the port range cannot fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit to %d: %s", target, exc)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open files limit %d: at most about %d anchored calls fit", soft,
                    max(0, soft - 1024) // 4)


def run_gateway(config: Config) -> int:
    """``acs-gateway run``: serve until SIGTERM/SIGINT; returns the exit status."""
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    setup_logging(config.log.level)
    try:
        gateway = Gateway(config, reactor)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    try:
        gateway.start()
    except CannotListenError as exc:
        print(f"acs-gateway: cannot listen: {exc}", file=sys.stderr)
        return 1
    # what start-up built (modules, config, tables, sockets) lives as long as the process:
    # keep it out of the cyclic collector's full passes, whose pauses delay every call
    gc.collect()
    gc.freeze()
    if gateway.gc_pauses is not None:
        gateway.gc_pauses.install()

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            reactor.callFromThread(gateway.reload)
        else:
            reactor.callFromThread(gateway.drain)

    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    log.info("acs-gateway ready")
    reactor.run(installSignalHandlers=False)
    return 0
