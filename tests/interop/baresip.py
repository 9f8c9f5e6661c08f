"""baresip as a real softphone on loopback: sends a sine tone, records what it receives.

:class:`Baresip` writes a private config directory (``config`` and ``accounts``; nothing is
read from ``~/.baresip``), starts ``baresip -f DIR`` as a child process (stopped by PID: the
``quit`` command, then SIGTERM, then SIGKILL) and drives it over ``ctrl_tcp`` (netstrings
holding JSON: commands ``{"command": "dial", "params": URI, "token": T}``, answers
``{"response": true, "ok": ..., "data": ..., "token": T}``, events ``{"event": true,
"type": "CALL_ESTABLISHED", ...}``).

baresip 1.0.0 facts (Debian baresip-core 1.0.0-4) this module relies on, checked by
``test_baresip_selfcheck.py``:

- ``ausine`` is a source only and takes the tone frequency, an integer from 10 to 20000 Hz,
  as its device: ``audio_source ausine,440``. It refuses anything but 48 kHz stereo, hence
  ``ausrc_srate 48000`` and ``ausrc_channels 2``; baresip resamples and downmixes for the
  codec.
- ``aufile`` in 1.0.0 is a *source* only (it reads a WAV file); it cannot record. Recording
  is done by the ``sndfile`` audio filter: with ``snd_path DIR`` every audio stream writes
  ``DIR/dump-<time>-enc.wav`` (what is sent, after the filters, at the codec's rate) and
  ``DIR/dump-<time>-dec.wav`` (what was received and decoded). libsndfile writes the WAV
  header sizes when the file is closed, i.e. when the call ends: read the files after
  CALL_CLOSED (:meth:`Baresip.received_wav` waits for that).
- sndfile builds ``SND_PATH/dump-YYYY-MM-DD-HH-MM-SS-dec.wav`` in a 128-byte buffer and
  truncates longer names silently (no ``.wav``): a long ``recordings_dir`` is reached through a
  short symlink in /tmp. Names have 1-second resolution: a call starting in the same second as
  the previous one overwrites its dumps (:meth:`Baresip.mark` archives them first).
- A player is still needed; ``aubridge`` (its player is a sink that never pulls unless an
  ``aubridge`` source with the same device name exists) stands in for a sound card. The
  decoding and the ``sndfile`` filter run on RTP arrival, so the recording does not depend on
  the player.
- ``net_interface lo`` fails in this sandbox (``could not get IPv4 address``);
  ``net_interface 127.0.0.1`` works and puts 127.0.0.1 into the SDP.
- ``stdio.so`` needs a terminal on stdin: not loaded. ``menu.so`` provides the ``dial``,
  ``hangup`` and ``accept`` commands; ``quit`` is a core command.
- ``answermode=auto`` answers an incoming INVITE at once: ``180 Ringing``, then
  ``200 Answering``. An INVITE whose Request-URI user is not the account's user gets
  ``404 Not Found`` (1.0.0 has no catch-all account in its config).
- Media: RTP is sent to the address in the peer's SDP from the moment of the answer; baresip
  does not latch onto the source of the RTP it receives (no symmetric RTP), but accepts and
  decodes RTP from any source. RTCP goes to port+1 unless both sides say ``a=rtcp-mux``
  (config ``rtcp_mux yes``). An answer lists every codec it shares with the offer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from .harness import (
    LOOPBACK,
    HarnessError,
    PortKind,
    StartStop,
    _stop_process,
    _tail,
    binary_path,
    free_port,
    free_port_pair,
    port_in_use,
    require_binary,
)

SrtpMode = Literal["srtp", "srtp-mand", "srtp-mandf"]

MODULE_DIR = Path("/usr/lib/baresip/modules")

#: Codec name (as in the SDP / the account's ``audio_codecs``) -> the module providing it.
CODEC_MODULES: Mapping[str, str] = {
    "PCMU": "g711",
    "PCMA": "g711",
    "G722": "g722",
    "G726-32": "g726",
    "GSM": "gsm",
    "L16": "l16",
    "opus": "opus",
}

#: Event types that end a call attempt (a call that fails before answer ends with CLOSED too).
CALL_END_EVENTS = frozenset({"CALL_CLOSED"})

_TAIL_CHARS = 6000
#: Longest ``snd_path`` used as is: sndfile's names are ``SND_PATH/dump-YYYY-MM-DD-HH-MM-SS-
#: dec.wav`` in a 128-byte buffer.
_SND_PATH_MAX = 80


class BaresipError(HarnessError):
    """baresip could not be started, or did not do what a test asked within its time."""


class BaresipNotFoundError(BaresipError):
    """The ``baresip`` binary is not on PATH (Debian package ``baresip-core``)."""


def baresip_path() -> str | None:
    """Path of the ``baresip`` binary (``$BARESIP`` overrides PATH), or None."""
    return binary_path("baresip", "BARESIP")


def require_baresip() -> str:
    """Path of ``baresip``, or :class:`BaresipNotFoundError` saying how to get it."""
    return require_binary(
        "baresip",
        "BARESIP",
        "Debian's baresip-core (apt-get install baresip-core, `make deps` does it)",
        BaresipNotFoundError,
    )


def module_dir() -> Path:
    """Where baresip's modules are (``$BARESIP_MODULES`` overrides the Debian path)."""
    return Path(os.environ.get("BARESIP_MODULES", str(MODULE_DIR)))


# --------------------------------------------------------------------------------------------
# ctrl_tcp: netstrings holding JSON


def netstring(payload: bytes) -> bytes:
    """``LEN:PAYLOAD,`` (https://cr.yp.to/proto/netstrings.txt)."""
    return b"%d:%s," % (len(payload), payload)


def parse_netstrings(buffer: bytearray) -> list[bytes]:
    """Take every complete netstring off the front of ``buffer`` (in place), return payloads.

    Raises ValueError on a malformed length prefix or a missing trailing comma."""
    out: list[bytes] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            if len(buffer) > 10 or (buffer and not buffer.isdigit()):
                raise ValueError(f"bad netstring prefix {bytes(buffer[:20])!r}")
            return out
        prefix = bytes(buffer[:colon])
        if not prefix.isdigit():
            raise ValueError(f"bad netstring length {prefix[:20]!r}")
        length = int(prefix)
        end = colon + 1 + length
        if len(buffer) < end + 1:
            return out
        if buffer[end : end + 1] != b",":
            raise ValueError(f"netstring of length {length} not followed by ','")
        out.append(bytes(buffer[colon + 1 : end]))
        del buffer[: end + 1]


@dataclass(frozen=True)
class BaresipEvent:
    """One ``ctrl_tcp`` event: ``type`` (CALL_ESTABLISHED...), the whole JSON object, and
    when it arrived (``time.monotonic()``)."""

    type: str
    data: Mapping[str, Any]
    at: float

    @property
    def param(self) -> str:
        """The event's free text (for CALL_CLOSED: the reason, e.g. ``Connection reset``)."""
        return str(self.data.get("param", ""))

    @property
    def peer(self) -> str:
        return str(self.data.get("peeruri", ""))

    @property
    def call_id(self) -> str:
        """baresip's call id (the SIP Call-ID of the call), "" for non-call events."""
        return str(self.data.get("id", ""))


@dataclass
class _Ctrl:
    """A ``ctrl_tcp`` connection with a reader thread collecting answers and events."""

    port: int
    sock: socket.socket | None = None
    events: list[BaresipEvent] = field(default_factory=list)
    responses: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    junk: list[str] = field(default_factory=list)
    closed: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def connect(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: OSError | None = None
        while time.monotonic() < deadline:
            try:
                self.sock = socket.create_connection((LOOPBACK, self.port), timeout=1.0)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.05)
        else:
            raise BaresipError(f"ctrl_tcp 127.0.0.1:{self.port} refused connections ({last})")
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, name=f"ctrl_tcp:{self.port}")
        self.thread.daemon = True
        self.thread.start()

    def _read(self) -> None:
        assert self.sock is not None
        buffer = bytearray()
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                try:
                    payloads = parse_netstrings(buffer)
                except ValueError as exc:
                    with self.cond:
                        self.junk.append(f"{exc}: {bytes(buffer[:200])!r}")
                    buffer.clear()
                    continue
                for payload in payloads:
                    self._dispatch(payload)
        except OSError:
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _dispatch(self, payload: bytes) -> None:
        try:
            message = json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            message = None
        with self.cond:
            if not isinstance(message, dict):
                self.junk.append(payload.decode("utf-8", "replace")[:500])
            elif message.get("event"):
                kind = str(message.get("type", ""))
                self.events.append(BaresipEvent(kind, message, time.monotonic()))
            elif message.get("response"):
                self.responses[str(message.get("token", ""))] = message
            else:
                self.junk.append(json.dumps(message)[:500])
            self.cond.notify_all()

    def send(self, command: str, params: str | None, token: str) -> None:
        if self.sock is None or self.closed:
            raise BaresipError(f"ctrl_tcp connection closed (command {command!r})")
        message: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        self.sock.sendall(netstring(json.dumps(message).encode("utf-8")))

    def wait_response(self, token: str, timeout_s: float) -> Mapping[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while token not in self.responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return None
                self.cond.wait(remaining)
            return self.responses.pop(token)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=2.0)


# --------------------------------------------------------------------------------------------
# the softphone


class Baresip(StartStop):
    """One baresip instance on 127.0.0.1, in its own directory ``workdir``.

    - ``codecs``: the account's ``audio_codecs``, in order of preference (``["PCMU"]``,
      ``["opus", "PCMU"]``); only the modules they need are loaded (:data:`CODEC_MODULES`).
    - ``srtp``: None (plain RTP/AVP), ``"srtp"`` (offers RTP/AVP with SDES ``a=crypto``, best
      effort), ``"srtp-mand"`` (RTP/SAVP, SRTP required), ``"srtp-mandf"`` (RTP/SAVPF).
    - ``tone_hz``: the integer frequency ``ausine`` sends (10..20000 Hz).
    - ``record``: load ``sndfile`` so that each call leaves ``recordings/dump-*-dec.wav``
      (received) and ``...-enc.wav`` (sent); :meth:`received_wav` finds it and copies it to
      ``record_path`` when that is given.
    - ``auto_answer``: ``answermode=auto`` (else ``manual``: use :meth:`accept`).
    - the account is ``<sip:USER@127.0.0.1:SIP_PORT>;regint=0`` (never registers); incoming
      INVITEs must carry ``USER`` in the Request-URI (baresip 1.0.0 answers 404 otherwise).
    - ``sip_trace``: ``-s``, every SIP message in the log (:meth:`sip_messages` parses them).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "baresip",
        user: str | None = None,
        codecs: Sequence[str] = ("PCMU",),
        srtp: SrtpMode | None = None,
        tone_hz: int = 440,
        record: bool = True,
        record_path: Path | None = None,
        auto_answer: bool = False,
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        ptime: int | None = None,
        rtcp_mux: bool = False,
        sip_trace: bool = True,
        verbose: bool = False,
        extra_config: Mapping[str, str] | None = None,
        account_params: Mapping[str, str] | None = None,
        ready_timeout_s: float = 10.0,
    ) -> None:
        if not codecs:
            raise ValueError("codecs: at least one codec")
        unknown = [c for c in codecs if c not in CODEC_MODULES]
        if unknown:
            raise ValueError(f"codecs {unknown}: known are {sorted(CODEC_MODULES)}")
        if not 10 <= int(tone_hz) <= 20000:
            raise ValueError(f"tone_hz={tone_hz}: ausine takes 10..20000 Hz")
        self.name = name
        self.workdir = workdir.resolve()
        self.user = user or name
        self.codecs = tuple(codecs)
        self.srtp: SrtpMode | None = srtp
        self.tone_hz = int(tone_hz)
        self.record = record
        self.record_path = record_path
        self.auto_answer = auto_answer
        self.sip_port = sip_port if sip_port is not None else free_port_pair()
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port("tcp")
        self.ptime = ptime
        self.rtcp_mux = rtcp_mux
        self.sip_trace = sip_trace
        self.verbose = verbose
        self.extra_config = dict(extra_config or {})
        self.account_params = dict(account_params or {})
        self.ready_timeout_s = ready_timeout_s
        self.config_dir = self.workdir / "config"
        self.recordings_dir = self.workdir / "recordings"
        self.log_path = self.workdir / "baresip.log"
        self.command: tuple[str, ...] = ()
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._ctrl: _Ctrl | None = None
        self._call_mark = 0
        self._archived_calls = 0
        #: what ``snd_path`` says: ``recordings_dir`` or a short symlink to it (see
        #: :meth:`write_files`)
        self.snd_path: Path | None = None
        self._snd_link_dir: Path | None = None

    # -- configuration ---------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The URI that reaches this instance directly: ``sip:USER@127.0.0.1:PORT``."""
        return f"sip:{self.user}@{LOOPBACK}:{self.sip_port}"

    @property
    def aor(self) -> str:
        return self.uri

    def modules(self) -> list[str]:
        """The ``module`` lines, in load order (codec modules in preference order)."""
        names: list[str] = []
        for codec in self.codecs:
            module = CODEC_MODULES[codec]
            if module not in names:
                names.append(module)
        if self.srtp is not None:
            names.append("srtp")
        if self.record:
            names.append("sndfile")
        names += ["ausine", "aubridge"]
        return names

    def config(self) -> dict[str, str]:
        """The ``config`` file as {key: value} (``module`` lines are added by
        :meth:`config_text`)."""
        values = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "net_interface": LOOPBACK,
            "call_local_timeout": "30",
            "call_max_calls": "4",
            "audio_path": "/usr/share/baresip",
            "audio_source": f"ausine,{self.tone_hz}",
            # aubridge players are sinks nothing reads (no aubridge source of that name)
            "audio_player": f"aubridge,{self.name}-play",
            "audio_alert": f"aubridge,{self.name}-alert",
            "ausrc_srate": "48000",
            "ausrc_channels": "2",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "audio_buffer": "20-160",
            "rtp_tos": "0",
            "rtcp_mux": "yes" if self.rtcp_mux else "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "no",
            "module_path": str(module_dir()),
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "ringback_disabled": "yes",
            "menu_bell": "no",
            "statmode_default": "off",
        }
        if self.record:
            values["snd_path"] = str(self.snd_path or self.recordings_dir)
        values.update(self.extra_config)
        return values

    def config_text(self) -> str:
        lines = [f"{key}\t{value}" for key, value in self.config().items()]
        lines += [f"module\t{name}.so" for name in self.modules()]
        lines += ["module_tmp\taccount.so", "module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        return "\n".join(lines) + "\n"

    def account_line(self) -> str:
        params = {
            "regint": "0",
            "answermode": "auto" if self.auto_answer else "manual",
            "audio_codecs": ",".join(self.codecs),
        }
        if self.srtp is not None:
            params["mediaenc"] = self.srtp
        if self.ptime is not None:
            params["ptime"] = str(self.ptime)
        params.update(self.account_params)
        return f"<{self.aor}>" + "".join(f";{k}={v}" for k, v in params.items())

    def write_files(self) -> None:
        """Write ``config``, ``accounts`` and ``contacts``. ``sndfile`` builds its file names
        in a 128-byte buffer and silently truncates longer ones (``.../dump-...-dec`` without
        ``.wav``), so a long ``recordings_dir`` (pytest's tmp paths) is reached through a
        short symlink ``/tmp/baresip-rec-XXXX/r``, removed by :meth:`stop`."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        if self.record:
            self.recordings_dir.mkdir(parents=True, exist_ok=True)
            if self.snd_path is None:
                if len(str(self.recordings_dir)) <= _SND_PATH_MAX:
                    self.snd_path = self.recordings_dir
                else:
                    base = "/tmp" if os.access("/tmp", os.W_OK) else None
                    self._snd_link_dir = Path(tempfile.mkdtemp(prefix="baresip-rec-", dir=base))
                    self.snd_path = self._snd_link_dir / "r"
                    self.snd_path.symlink_to(self.recordings_dir, target_is_directory=True)
                if len(str(self.snd_path)) > _SND_PATH_MAX:
                    raise BaresipError(
                        f"{self.name}: snd_path {self.snd_path} too long for sndfile's "
                        f"128-byte file names (set TMPDIR or use a shorter workdir)"
                    )
        (self.config_dir / "config").write_text(self.config_text())
        (self.config_dir / "accounts").write_text(self.account_line() + "\n")
        # present (even empty) so that baresip writes no templates of its own
        (self.config_dir / "contacts").write_text("")

    # -- process ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BaresipError(f"{self.name}: not started")
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Write the config, start baresip, wait until it listens and ctrl_tcp answers."""
        if self._proc is not None:
            raise BaresipError(f"{self.name}: already started")
        binary = require_baresip()
        if not (module_dir() / "ausine.so").is_file():
            raise BaresipNotFoundError(
                f"no ausine.so in {module_dir()}: baresip-core incomplete (set BARESIP_MODULES)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        checks: list[tuple[int, PortKind]] = [
            (self.sip_port, "udp"),
            (self.sip_port, "tcp"),
            (self.ctrl_port, "tcp"),
        ]
        for port, kind in checks:
            if port_in_use(port, kind):
                raise BaresipError(f"{self.name}: {kind} port {port} already in use")
        self.write_files()
        command = [binary, "-f", str(self.config_dir)]
        if self.sip_trace:
            command.append("-s")
        if self.verbose:
            command.append("-v")
        self.command = tuple(command)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(self.workdir)),
        )
        try:
            self.wait_ready(self.ready_timeout_s)
        except BaresipError:
            self.stop(grace_s=2.0)
            raise
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait for ``baresip is ready.`` in the log, then connect to ctrl_tcp."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while "baresip is ready." not in self.log_text():
            if not self.running():
                raise BaresipError(
                    f"{self.name}: baresip exited with code "
                    f"{self._proc.returncode if self._proc else None} before it was ready\n"
                    f"{self.describe()}"
                )
            if time.monotonic() >= deadline:
                raise BaresipError(
                    f"{self.name}: not ready within {timeout_s:g} s\n{self.describe()}"
                )
            time.sleep(0.05)
        if self._ctrl is None:
            ctrl = _Ctrl(self.ctrl_port)
            try:
                ctrl.connect(max(1.0, deadline - time.monotonic()))
            except BaresipError as exc:
                raise BaresipError(f"{self.name}: {exc}\n{self.describe()}") from exc
            self._ctrl = ctrl

    def stop(self, grace_s: float = 5.0) -> int | None:
        """``quit`` over ctrl_tcp, then SIGTERM by PID, then SIGKILL; the exit code."""
        if self._proc is None:
            return None
        if self.exit_code is None:
            if self._proc.poll() is None and self._ctrl is not None and not self._ctrl.closed:
                with contextlib.suppress(OSError, BaresipError):
                    self._ctrl.send("quit", None, "quit")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=grace_s / 2)
            with contextlib.suppress(subprocess.TimeoutExpired):  # not even SIGKILL: None
                _stop_process(self._proc, grace_s / 2, signal.SIGTERM)
            self.exit_code = self._proc.poll()
        if self._ctrl is not None:
            self._ctrl.close()
        if self._snd_link_dir is not None:
            shutil.rmtree(self._snd_link_dir, ignore_errors=True)  # the link, not its target
            self._snd_link_dir = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.exit_code

    # -- commands and events ---------------------------------------------------------------

    def run_command(self, command: str, params: str | None = None, timeout_s: float = 5.0) -> str:
        """Run a baresip command over ctrl_tcp; its answer text (``data``).
        :class:`BaresipError` when it is refused or not answered within ``timeout_s``."""
        ctrl = self._require_ctrl()
        token = secrets.token_hex(4)
        ctrl.send(command, params, token)
        response = ctrl.wait_response(token, timeout_s)
        if response is None:
            raise BaresipError(
                f"{self.name}: no answer to {command!r} within {timeout_s:g} s\n{self.describe()}"
            )
        if not response.get("ok", False):
            raise BaresipError(
                f"{self.name}: command {command} {params or ''} failed: "
                f"{response.get('data')!r}\n{self.describe()}"
            )
        return str(response.get("data", ""))

    def mark(self) -> int:
        """Make only events from now on count for :meth:`wait_event` and friends (they start
        at the first event otherwise); :meth:`dial` does it. Use it on a callee before its
        second incoming call. Also archives the recordings so far as ``NNNN-dump-...wav``:
        sndfile names files by the second, so a call starting in the same second as the
        previous one would overwrite its dumps. Returns the index of the next event."""
        self._call_mark = len(self.events())
        current = sorted(self.recordings_dir.glob("dump-*.wav")) if self.record else []
        if current:
            self._archived_calls += 1
            for path in current:
                path.rename(path.with_name(f"{self._archived_calls:04d}-{path.name}"))
        return self._call_mark

    def dial(self, uri: str, timeout_s: float = 5.0) -> str:
        """``dial URI`` (after :meth:`mark`); its answer text."""
        self.mark()
        return self.run_command("dial", uri, timeout_s)

    def accept(self, timeout_s: float = 5.0) -> str:
        """Answer the ringing incoming call (``answermode=manual``)."""
        return self.run_command("accept", None, timeout_s)

    def hangup(self, timeout_s: float = 5.0) -> str:
        return self.run_command("hangup", None, timeout_s)

    def events(self) -> list[BaresipEvent]:
        """Every event received so far, oldest first."""
        ctrl = self._require_ctrl()
        with ctrl.cond:
            return list(ctrl.events)

    def event_types(self) -> list[str]:
        return [event.type for event in self.events()]

    def wait_event(
        self,
        types: str | Sequence[str],
        timeout_s: float,
        *,
        since: int | None = None,
        fail_on: Sequence[str] = (),
    ) -> BaresipEvent:
        """The first event of one of ``types`` at index >= ``since`` (default: since the last
        :meth:`dial`). An event in ``fail_on`` seen first, a dead process or the timeout
        raise :class:`BaresipError` with the events and the log tail."""
        wanted = {types} if isinstance(types, str) else set(types)
        stop = set(fail_on)
        start = self._call_mark if since is None else since
        ctrl = self._require_ctrl()
        deadline = time.monotonic() + timeout_s
        with ctrl.cond:
            while True:
                for event in ctrl.events[start:]:
                    if event.type in wanted:
                        return event
                    if event.type in stop:
                        raise BaresipError(
                            f"{self.name}: {event.type} ({event.param!r}) while waiting for "
                            f"{sorted(wanted)}\n{self.describe()}"
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0 or ctrl.closed or not self.running():
                    why = "timed out" if remaining <= 0 else "baresip or ctrl_tcp went away"
                    raise BaresipError(
                        f"{self.name}: {why} after {timeout_s:g} s waiting for "
                        f"{sorted(wanted)}\n{self.describe()}"
                    )
                ctrl.cond.wait(min(remaining, 0.2))

    def wait_incoming(self, timeout_s: float = 5.0) -> BaresipEvent:
        return self.wait_event("CALL_INCOMING", timeout_s, fail_on=["CALL_CLOSED"])

    def wait_established(self, timeout_s: float = 5.0) -> BaresipEvent:
        """CALL_ESTABLISHED (fails at once on CALL_CLOSED)."""
        return self.wait_event("CALL_ESTABLISHED", timeout_s, fail_on=["CALL_CLOSED"])

    def wait_rtp(self, timeout_s: float = 5.0) -> BaresipEvent:
        """CALL_RTPESTAB: the first RTP packet of the call arrived (fails on CALL_CLOSED)."""
        return self.wait_event("CALL_RTPESTAB", timeout_s, fail_on=["CALL_CLOSED"])

    def wait_closed(self, timeout_s: float = 5.0) -> BaresipEvent:
        """CALL_CLOSED; its :attr:`BaresipEvent.param` is the reason (``Connection reset by
        peer``, ``486 Busy Here``...)."""
        return self.wait_event("CALL_CLOSED", timeout_s)

    def _require_ctrl(self) -> _Ctrl:
        if self._ctrl is None:
            raise BaresipError(f"{self.name}: not started (no ctrl_tcp connection)")
        return self._ctrl

    # -- recordings ------------------------------------------------------------------------

    def recordings(self, kind: Literal["dec", "enc"] = "dec") -> list[Path]:
        """The ``sndfile`` dumps of one kind (``dec``: received, ``enc``: sent), oldest
        first: those :meth:`mark` archived, then the current ones."""
        if not self.recordings_dir.is_dir():
            return []
        archived = sorted(self.recordings_dir.glob(f"[0-9][0-9][0-9][0-9]-dump-*-{kind}.wav"))
        current = sorted(self.recordings_dir.glob(f"dump-*-{kind}.wav"))
        return archived + current

    def received_wav(self, timeout_s: float = 5.0) -> Path:
        """The newest received-audio dump, once the call is over (CALL_CLOSED seen since the
        last dial, so the WAV header is final); copied to ``record_path`` when given."""
        if not self.record:
            raise BaresipError(f"{self.name}: started with record=False")
        self.wait_closed(timeout_s)
        deadline = time.monotonic() + timeout_s
        while not (files := self.recordings("dec")):
            if time.monotonic() >= deadline:
                raise BaresipError(
                    f"{self.name}: no dump-*-dec.wav in {self.recordings_dir}\n{self.describe()}"
                )
            time.sleep(0.05)
        path = files[-1]
        # CALL_CLOSED goes out before the call (and the sndfile filter) is freed: wait until
        # libsndfile has written the final sizes into the header
        while not _wav_header_final(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.record_path is not None:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.record_path)
            return self.record_path
        return path

    # -- logs ------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything baresip wrote so far, colour escapes removed."""
        try:
            return strip_ansi(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = _TAIL_CHARS) -> str:
        return strip_ansi(_tail(self.log_path, chars))

    def describe(self) -> str:
        """A paragraph for assertion messages: ports, command, events, log tail."""
        events = ", ".join(
            f"{e.type}({e.param})" if e.param else e.type
            for e in (self._ctrl.events if self._ctrl else [])
        )
        return (
            f"baresip {self.name}: {self.uri}, ctrl_tcp :{self.ctrl_port}, "
            f"pid {self._proc.pid if self._proc else None}, "
            f"exit code {self._proc.poll() if self._proc else None}\n"
            f"command: {' '.join(self.command)}\nworkdir: {self.workdir}\n"
            f"events: [{events}]\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def sip_messages(self) -> list[SipTrace]:
        """SIP messages from the ``-s`` trace in the log (both directions), oldest first."""
        return split_sip_trace(self.log_text())

    def sent(self, method: str | None = None) -> list[SipTrace]:
        """Messages this instance sent; only requests of ``method`` when given."""
        me = f"{LOOPBACK}:{self.sip_port}"
        return [
            m for m in self.sip_messages() if m.src == me and (method is None or m.method == method)
        ]

    def received(self, method: str | None = None) -> list[SipTrace]:
        """Messages this instance received; only requests of ``method`` when given."""
        me = f"{LOOPBACK}:{self.sip_port}"
        return [
            m for m in self.sip_messages() if m.dst == me and (method is None or m.method == method)
        ]

    def sent_invite_sdp(self) -> str | None:
        """The SDP body of the first INVITE this instance sent (needs ``sip_trace``)."""
        invites = self.sent("INVITE")
        return invites[0].body if invites else None


def _wav_header_final(path: Path) -> bool:
    """True when the RIFF size in ``path``'s header matches the file's size (libsndfile
    writes the sizes on close)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 8 and head[:4] == b"RIFF" and int.from_bytes(head[4:], "little") + 8 == size


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# ``baresip -s``: "#", then "UDP 127.0.0.1:A -> 127.0.0.1:B", then the message as sent
_TRACE_HEAD = re.compile(r"^#\n(UDP|TCP|TLS|WS|WSS) (\S+) -> (\S+)\n", re.MULTILINE)


def strip_ansi(text: str) -> str:
    """``text`` without the colour escapes baresip puts around warnings and SIP traces."""
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class SipTrace:
    """One SIP message from a ``baresip -s`` log: transport, source and destination
    (``127.0.0.1:PORT``) and the message with CRLF line ends."""

    transport: str
    src: str
    dst: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        return None if self.text.startswith("SIP/2.0 ") else self.first_line.split(" ", 1)[0]

    @property
    def body(self) -> str:
        return sip_body(self.text)

    def header(self, name: str) -> str | None:
        return _header(self.text, name)


def split_sip_trace(log: str) -> list[SipTrace]:
    """Cut the SIP messages out of a ``baresip -s`` log (raw or :func:`strip_ansi`-ed): each
    is the head line's block up to the blank line after its headers plus ``Content-Length``
    bytes of body."""
    text = strip_ansi(log).replace("\r\n", "\n")
    traces: list[SipTrace] = []
    for match in _TRACE_HEAD.finditer(text):
        lines = text[match.end() :].split("\n")
        head: list[str] = []
        index = 0
        while index < len(lines) and lines[index].strip():
            head.append(lines[index])
            index += 1
        index += 1
        length = 0
        for header in head[1:]:
            name, _, value = header.partition(":")
            if name.strip().lower() in {"content-length", "l"} and value.strip().isdigit():
                length = int(value.strip())
        body: list[str] = []
        size = 0
        while size < length and index < len(lines):
            body.append(lines[index])
            size += len(lines[index]) + 2
            index += 1
        message = "\r\n".join(head) + "\r\n\r\n" + "".join(line + "\r\n" for line in body)
        traces.append(SipTrace(match.group(1), match.group(2), match.group(3), message))
    return traces


def _header(message: str, name: str) -> str | None:
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def sip_body(message: str) -> str:
    """The body of a SIP message (CRLF line ends), "" when it has none."""
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


class BaresipFleet:
    """Starts :class:`Baresip` instances in subdirectories of ``workdir`` and stops them all
    on :meth:`close` (a pytest fixture's teardown), printing each one's log tail (pytest shows
    it when the test failed). ``fleet.start(name="bob", auto_answer=True, ...)`` takes
    :class:`Baresip`'s keyword arguments."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.phones: list[Baresip] = []

    def start(self, name: str = "baresip", **kwargs: Any) -> Baresip:
        require_baresip()
        directory = self.workdir / f"baresip-{name}"
        if directory.exists():
            directory = self.workdir / f"baresip-{name}-{len(self.phones)}"
        phone = Baresip(directory, name=name, **kwargs)
        self.phones.append(phone)
        return phone.start()

    def close(self) -> None:
        for phone in reversed(self.phones):
            code = phone.stop()
            print(f"--- baresip {phone.name} {phone.uri} (exit code {code}) ---")
            print(phone.log_tail(4000))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
