"""SIP URIs and name-addr values (RFC 3261 sections 19.1, 20.10, 25.1).

Invariants:
- Parsed values are immutable; ``str(value)`` gives back the exact text that
  was parsed unless the value was changed with one of the ``with_*`` methods.
- Escapes (``%HH``) are kept as written; ``unescape`` decodes them exactly once
  (RFC 4475 section 3.1.1.3).
- Text is handled as latin-1 decoded bytes so every octet round-trips.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from gateway.sip.errors import SipParseError

# RFC 3261 section 25.1: token characters.
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# Octets a URI never carries unescaped (RFC 3261 section 25.1): controls, SP, '<', '>', '"'.
_URI_ILLEGAL_RE = re.compile(r'[\x00-\x20\x7f<>"]')
WS = " \t"

Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    return _TOKEN_RE.match(text) is not None


def is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts U+00B2 (superscript two, a latin-1
    octet), which ``int()`` then rejects with ValueError."""
    return text.isascii() and text.isdigit()


_PARAMCHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+\Z")


def _is_paramchars(text: str) -> bool:
    return _PARAMCHARS_RE.match(text) is not None


def unescape(text: str) -> str:
    """Decode %HH escapes exactly once (so "%2541" becomes "%41", not "A")."""
    if "%" not in text:
        return text
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def parse_params(text: str, what: str, *, uri: bool = False) -> Params:
    """Parse ``;name=value;flag`` (text starts after the first ``;``).

    Header parameter values are tokens, hosts or quoted strings (RFC 3261
    ``generic-param``); URI parameter values may also use ``paramchar``.
    """
    valid = _is_paramchars if uri else is_token
    out: list[tuple[str, str | None]] = []
    for part in text.split(";") if '"' not in text else _split_quoted_params(text, what):
        name, eq, value = part.partition("=")
        name = name.strip(WS)
        if not name or not valid(name):
            raise SipParseError(f"bad parameter in {what}")
        if eq:
            value = value.strip(WS)
            if not value:
                raise SipParseError(f"empty parameter value in {what}")
            if value[0] == '"':
                if len(value) < 2 or value[-1] != '"':
                    raise SipParseError(f"bad parameter value in {what}")
            elif value[0] == "[":  # IPv6reference, e.g. received=[2001:db8::1] (RFC 5118 4.5)
                if value[-1] != "]" or not valid(value[1:-1].replace(":", "0")):
                    raise SipParseError(f"bad parameter value in {what}")
            elif not valid(value.replace(":", "")):  # an unbracketed IPv6 address is a host
                raise SipParseError(f"bad parameter value in {what}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _split_quoted_params(text: str, what: str) -> list[str]:
    """Split on ';' outside quoted strings (a gen-value may be a quoted-string)."""
    parts, quoted = _split_outside(text, ";", angles=False)
    if quoted:
        raise SipParseError(f"unterminated quoted string in {what}")
    return parts


def _split_outside(value: str, sep: str, *, angles: bool) -> tuple[list[str], bool]:
    """Split ``value`` on ``sep`` outside quoted strings (and outside <> when ``angles``).

    Returns the parts and whether a quoted string was left open.
    """
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif angles and c == "<":
            depth += 1
        elif angles and c == ">":
            depth = max(depth - 1, 0)
        elif c == sep and depth == 0:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts, quoted


def render_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: Params, name: str) -> str | None:
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return "" if v is None else v
    return None


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(n.lower() == lname for n, _ in params)


def set_param(params: Params, name: str, value: str | None) -> Params:
    lname = name.lower()
    kept = tuple((n, v) for n, v in params if n.lower() != lname)
    return (*kept, (name, value))


def parse_host(hostport: str, what: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; IPv6 references must be bracketed (RFC 5118 section 4.2)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        addr = hostport[1:end]
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise SipParseError(f"bad IPv6 address in {what}") from None
        rest = hostport[end + 1 :]
        host = f"[{addr}]"
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what}")
        return host, _parse_port(rest[1:], what)
    host, colon, port = hostport.partition(":")
    if ":" in port:
        raise SipParseError(f"IPv6 address without [] in {what}")  # RFC 5118 section 4.2
    if not host or _HOSTNAME_RE.match(host) is None:
        raise SipParseError(f"bad host in {what}")
    if colon:
        return host, _parse_port(port, what)
    return host, None


def _parse_port(text: str, what: str) -> int:
    if not is_digits(text) or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"bad port in {what}")
    return int(text)


def host_for_socket(host: str) -> str:
    """``[2001:db8::1]`` -> ``2001:db8::1``; other hosts unchanged."""
    return host[1:-1] if host.startswith("[") else host


def host_for_uri(addr: str) -> str:
    """An address as a URI host: IPv6 literals get brackets."""
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips: URI, or any other absolute URI kept opaque (``host`` empty)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: Params
    headers: str | None
    raw: str

    @classmethod
    def parse(cls, text: str) -> SipUri:
        if _URI_ILLEGAL_RE.search(text) is not None:
            raise SipParseError("illegal character in URI")  # RFC 4475 sections 3.1.2.7-8, 14
        scheme, colon, rest = text.partition(":")
        if not colon or _SCHEME_RE.match(scheme) is None:
            raise SipParseError("URI has no scheme")
        lscheme = scheme.lower()
        if lscheme not in ("sip", "sips"):
            if not rest:
                raise SipParseError("bad URI")
            return cls(lscheme, None, None, "", None, (), None, text)
        user: str | None = None
        password: str | None = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if not userinfo:
                raise SipParseError("empty user part in URI")
            user, pcolon, pwd = userinfo.partition(":")
            password = pwd if pcolon else None
        headers: str | None = None
        q = rest.find("?")
        if q >= 0:
            rest, headers = rest[:q], rest[q + 1 :]
        hostport, semi, ptext = rest.partition(";")
        host, port = parse_host(hostport, "URI")
        params = parse_params(ptext, "URI", uri=True) if semi else ()
        return cls(lscheme, user, password, host, port, params, headers, text)

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def params_unescaped(self) -> Params:
        """URI parameters with names and values unescaped once (RFC 3261 section 19.1.4)."""
        return tuple((unescape(n), None if v is None else unescape(v)) for n, v in self.params)

    def __str__(self) -> str:
        return self.raw

    @classmethod
    def build(
        cls,
        host: str,
        port: int | None = None,
        *,
        user: str | None = None,
        params: Params = (),
        scheme: str = "sip",
    ) -> SipUri:
        host = host_for_uri(host)
        text = f"{scheme}:"
        if user is not None:
            text += f"{user}@"
        text += host
        if port is not None:
            text += f":{port}"
        text += render_params(params)
        return cls(scheme, user, None, host, port, params, None, text)


def _split_quoted(text: str, what: str) -> tuple[str, str]:
    """``text`` starts with a quote: return (quoted-string, rest)."""
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return text[: i + 1], text[i + 1 :]
        i += 1
    raise SipParseError(f"unterminated quoted string in {what}")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``[display] <uri>;params`` or a bare ``addr-spec;params`` (RFC 3261 section 20.10)."""

    display: str | None
    uri: SipUri
    params: Params
    raw: str

    @classmethod
    def parse(cls, text: str, what: str = "address") -> NameAddr:
        text = text.strip(WS)
        if not text:
            raise SipParseError(f"empty {what}")
        display: str | None = None
        rest = text
        if rest.startswith('"'):
            display, rest = _split_quoted(rest, what)
            rest = rest.lstrip(WS)
            if not rest.startswith("<"):
                raise SipParseError(f"quoted display name without <uri> in {what}")
        lt = rest.find("<")
        if lt >= 0 and display is None and '"' in rest[:lt]:
            lt = -1  # the '<' is inside a quoted param value of an addr-spec
        if lt >= 0:
            if display is None and lt > 0:
                display = rest[:lt].rstrip(WS)
                if any(c not in TOKEN_CHARS and c not in WS for c in display):
                    raise SipParseError(f"display name must be quoted in {what}")
            gt = rest.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated <uri> in {what}")
            uri_text = rest[lt + 1 : gt]
            tail = rest[gt + 1 :].strip(WS)
            uri = SipUri.parse(uri_text)
        else:
            # addr-spec form: the params after the URI are header params, and
            # the URI may carry neither ',', '?' nor ';' params (RFC 3261 section 20).
            uri_text, semi, ptail = rest.partition(";")
            uri_text = uri_text.rstrip(WS)
            if "?" in uri_text or "," in uri_text:
                raise SipParseError(f"addr-spec with headers must use <> in {what}")
            uri = SipUri.parse(uri_text)
            tail = semi + ptail
        params: Params = ()
        if tail:
            if not tail.startswith(";"):
                raise SipParseError(f"junk after URI in {what}")
            params = parse_params(tail[1:], what)
        return cls(display, uri, params, text)

    @property
    def tag(self) -> str | None:
        value = get_param(self.params, "tag")
        return value or None

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_tag(self, tag: str) -> NameAddr:
        return self._rebuild(set_param(self.params, "tag", tag))

    def _rebuild(self, params: Params) -> NameAddr:
        text = f"{self.display} <{self.uri}>" if self.display else f"<{self.uri}>"
        return NameAddr(self.display, self.uri, params, text + render_params(params))

    def __str__(self) -> str:
        return self.raw

    @classmethod
    def build(cls, uri: SipUri, *, display: str | None = None, params: Params = ()) -> NameAddr:
        text = f"{display} <{uri}>" if display else f"<{uri}>"
        return cls(display, uri, params, text + render_params(params))


def split_commas(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <>."""
    if "," not in value:
        return [value.strip(WS)]
    parts, _ = _split_outside(value, ",", angles=True)
    return [part.strip(WS) for part in parts]
