"""A tiny SIP UDP client made of text templates, for edge cases SIPp scenarios cannot
express compactly (exact limits, loops, Max-Forwards). Independent of the gateway's codec.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ([^\r\n]*)")


@dataclass
class Reply:
    status: int
    reason: str
    raw: bytes

    def header(self, name: str) -> str | None:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", head, re.I | re.M)
        return m.group(1).strip() if m else None

    @property
    def to_tag(self) -> str:
        to = self.header("To") or ""
        m = re.search(r";\s*tag=([^;\s]+)", to)
        return m.group(1) if m else ""


class RawUac:
    """Sends requests from one UDP socket and reads the replies."""

    def __init__(self, gateway_port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.gateway = (host, gateway_port)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.gateway)

    def recv(self, timeout: float = 5.0) -> Reply | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return None
            m = _STATUS.match(data)
            if m:
                return Reply(int(m.group(1)), m.group(2).decode("latin-1"), data)

    def final(
        self, timeout: float = 5.0, method: str | None = None, call_id: str | None = None
    ) -> Reply | None:
        """The next final (>= 200) response (to ``method`` / in ``call_id`` when given).

        Other responses read meanwhile are discarded (e.g. a retransmitted final).
        """
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(0.0, deadline - time.monotonic()))
            if reply is None:
                return None
            cseq = (reply.header("CSeq") or "").split()
            if (
                reply.status >= 200
                and (method is None or cseq[-1:] == [method])
                and (call_id is None or reply.header("Call-ID") == call_id)
            ):
                return reply

    def invite(
        self,
        number: str,
        *,
        call_id: str | None = None,
        max_forwards: int = 70,
        branch: str | None = None,
        extra: str = "",
    ) -> tuple[str, str]:
        """Send an INVITE; returns (call_id, branch)."""
        call_id = call_id or uuid.uuid4().hex
        branch = branch or "z9hG4bK" + uuid.uuid4().hex
        self.send(self.request("INVITE", number, call_id, branch, 1, "", max_forwards, extra))
        return call_id, branch

    def request(
        self,
        method: str,
        number: str,
        call_id: str,
        branch: str,
        cseq: int,
        to_tag: str = "",
        max_forwards: int = 70,
        extra: str = "",
        cseq_method: str | None = None,
    ) -> bytes:
        gw = f"{self.gateway[0]}:{self.gateway[1]}"
        to_tag_param = f";tag={to_tag}" if to_tag else ""
        return (
            f"{method} sip:{number}@{gw} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:+15550001111@{self.host}:{self.port}>;tag=raw{call_id[:10]}\r\n"
            f"To: <sip:{number}@{gw}>{to_tag_param}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {cseq_method or method}\r\n"
            f"Contact: <sip:raw@{self.host}:{self.port}>\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n"
        ).encode()

    def ack_error(self, number: str, call_id: str, branch: str, reply: Reply) -> None:
        """ACK a non-2xx final (same branch as the INVITE, RFC 3261 section 17.1.1.3)."""
        self.send(self.request("ACK", number, call_id, branch, 1, reply.to_tag))

    def cancel(self, number: str, call_id: str, branch: str) -> None:
        self.send(self.request("CANCEL", number, call_id, branch, 1))
