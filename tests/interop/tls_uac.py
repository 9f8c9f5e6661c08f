"""A minimal SIP UAC over TLS for interop tests (Debian's SIPp is built without TLS).

Deliberately independent of the gateway's codec: messages are text templates
and responses are read with the stdlib, so a codec bug cannot hide itself.
One TLS connection carries every call, as a carrier's SBC would do.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field

_LENGTH = re.compile(rb"^(?:content-length|l)\s*:\s*(\d+)\s*$", re.I | re.M)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class TlsResult:
    successful: int = 0
    failed: int = 0
    statuses: list[int] = field(default_factory=list)


class TlsUac:
    def __init__(self, host: str, port: int, cafile: str, timeout: float = 10.0) -> None:
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.host = host
        self.port = port
        self.local = self.sock.getsockname()
        self.buf = b""
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def _send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def _recv_message(self, deadline: float) -> bytes:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buf[:end]
                m = _LENGTH.search(head)
                length = int(m.group(1)) if m else 0
                total = end + 4 + length
                if len(self.buf) >= total:
                    msg, self.buf = self.buf[:total], self.buf[total:]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no SIP message from the gateway")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the gateway closed the TLS connection")
            self.buf += chunk

    def _headers(self, branch: str, call_id: str, cseq: str, to_tag: str = "") -> str:
        lh, lp = self.local[0], self.local[1]
        to = f"<sip:{{number}}@{self.host}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"Via: SIP/2.0/TLS {lh}:{lp};branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:+15550001111@{lh}>;tag=tlsuac{call_id[:8]}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq}\r\n"
            f"Contact: <sip:uac@{lh}:{lp};transport=tls>\r\n"
        )

    def call(self, number: str, hold: float = 0.0) -> int:
        """One call: INVITE, final answer, ACK, BYE. Returns the INVITE's final status."""
        deadline = time.monotonic() + self.timeout
        call_id = uuid.uuid4().hex
        branch = uuid.uuid4().hex
        uri = f"sip:{number}@{self.host}:{self.port};transport=tls"
        self._send(
            f"INVITE {uri} SIP/2.0\r\n"
            + self._headers(branch, call_id, "1 INVITE").replace("{number}", number)
            + f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
        )
        while True:
            msg = self._recv_message(deadline)
            m = _STATUS.match(msg)
            if m is None:
                continue  # a request from the gateway would be unexpected here
            status = int(m.group(1))
            if status >= 200:
                break
        head = msg.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        to_tag = re.search(r"^(?:To|t)\s*:.*;\s*tag=([^;\s]+)", head, re.I | re.M)
        contact = re.search(r"^(?:Contact|m)\s*:.*<([^>]+)>", head, re.I | re.M)
        tag = to_tag.group(1) if to_tag else ""
        if status >= 300:
            self._send(
                f"ACK {uri} SIP/2.0\r\n"
                + self._headers(branch, call_id, "1 ACK", tag).replace("{number}", number)
                + "Content-Length: 0\r\n\r\n"
            )
            return status
        target = contact.group(1) if contact else uri
        self._send(
            f"ACK {target} SIP/2.0\r\n"
            + self._headers(uuid.uuid4().hex, call_id, "1 ACK", tag).replace("{number}", number)
            + "Content-Length: 0\r\n\r\n"
        )
        if hold:
            time.sleep(hold)
        self._send(
            f"BYE {target} SIP/2.0\r\n"
            + self._headers(uuid.uuid4().hex, call_id, "2 BYE", tag).replace("{number}", number)
            + "Content-Length: 0\r\n\r\n"
        )
        while True:
            msg = self._recv_message(deadline)
            m = _STATUS.match(msg)
            if m is not None and b"BYE" in msg.split(b"\r\n\r\n", 1)[0].split(b"CSeq", 1)[-1][:40]:
                bye_status = int(m.group(1))
                return status if bye_status == 200 else bye_status

    def options(self) -> int:
        deadline = time.monotonic() + self.timeout
        call_id = uuid.uuid4().hex
        self._send(
            f"OPTIONS sip:{self.host}:{self.port};transport=tls SIP/2.0\r\n"
            + self._headers(uuid.uuid4().hex, call_id, "1 OPTIONS").replace("{number}", "ping")
            + "Content-Length: 0\r\n\r\n"
        )
        msg = self._recv_message(deadline)
        m = _STATUS.match(msg)
        return int(m.group(1)) if m else 0


def run_calls(
    host: str, port: int, cafile: str, number: str, calls: int, timeout: float = 10.0
) -> TlsResult:
    result = TlsResult()
    uac = TlsUac(host, port, cafile, timeout)
    try:
        for _ in range(calls):
            try:
                status = uac.call(number)
            except (TimeoutError, ConnectionError, OSError):
                result.failed += 1
                result.statuses.append(0)
                uac.close()
                uac = TlsUac(host, port, cafile, timeout)
                continue
            result.statuses.append(status)
            if status == 200:
                result.successful += 1
            else:
                result.failed += 1
    finally:
        uac.close()
    return result
