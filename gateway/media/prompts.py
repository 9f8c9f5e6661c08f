"""Prompts for play, recognize and hold: ACS PlaySources turned into 8 kHz mono int16 audio.

`decode_wav` and `synthesize` are the blocking parts (WAV parsing and resampling, espeak-ng);
`PromptLoader` is the Twisted adapter that fetches file sources (file://, https://), runs
the blocking parts in the reactor's thread pool and caches the results.

Invariants:
- Every refusal is a `PromptError` carrying the PlayFailed resultInformation (ACS_REST.md
  section 9): 400/8535 invalid file format, 400/8536 file download failed, 500/9999 when
  speech synthesis fails, 400/8523 for a malformed PlaySource.
- Accepted WAV: RIFF, PCM (or EXTENSIBLE PCM) 16-bit mono at a rate in `RATES`; every chunk
  length is checked against the bytes present before it is read.
- Resampling is `gateway.media.resample.resample`: one windowed-sinc (Kaiser) low-pass
  evaluated at the output instants, exact for the rational ratios 8000/22050 and 8000/44100.
- file:// sources resolve under `media_dir` (symlinks followed, then checked); remote ones
  pass `check_url` (the SSRF guard), http:// only when insecure, redirects re-checked per
  hop, bodies capped at `max_bytes`, the whole fetch bounded by `timeout`.
- Cached audio is read-only and shared; the cache is an LRU bounded in bytes.
"""

from __future__ import annotations

import html
import logging
import re
import struct
import subprocess
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np
import numpy.typing as npt
from OpenSSL import SSL
from treq.client import HTTPClient

# IOpenSSLTrustRoot is public API (optionsForClientTLS's trustRoot) defined in a private module
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from gateway.media.resample import resample

__all__ = ["RATE", "RATES", "PromptError", "PromptLoader", "decode_wav", "espeak_voice",
           "ssml_text", "synthesize"]  # fmt: skip

log = logging.getLogger("gateway.media.prompts")

RATE: Final = 8000
RATES: Final = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
INVALID_FORMAT: Final = 8535
DOWNLOAD_FAILED: Final = 8536
MAX_BYTES: Final = 20 * 1024 * 1024
CACHE_BYTES: Final = 64 * 1024 * 1024
MAX_TEXT: Final = 4000  # characters of text (or SSML after stripping) per source
MAX_REDIRECTS: Final = 5
DEFAULT_VOICE: Final = "en-us"
ESPEAK: Final = "espeak-ng"

_PCM_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_VOICE_ALIASES: Final = {"zh": "cmn", "zh-cn": "cmn", "zh-tw": "cmn", "zh-hk": "yue", "no": "nb"}

Pcm = npt.NDArray[np.int16]


class PromptError(Exception):
    """A PlaySource that cannot be played: `code`/`sub_code`/`message` for PlayFailed."""

    def __init__(self, sub_code: int, message: str, *, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.sub_code = sub_code
        self.message = message


def _bad(reason: str) -> PromptError:
    return PromptError(INVALID_FORMAT, f"invalid file format: {reason}")


def _download_failed(reason: str) -> PromptError:
    return PromptError(DOWNLOAD_FAILED, f"file download failed: {reason}")


# ---------------------------------------------------------------------------------------------
# WAV


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(id, body offset, declared size) of each chunk after the RIFF/WAVE header."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _bad("not a RIFF WAVE file")
    found: list[tuple[bytes, int, int]] = []
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        found.append((chunk_id, offset + 8, size))
        if chunk_id == b"data":
            break
        offset += 8 + size + (size & 1)
    return found


def decode_wav(data: bytes) -> Pcm:
    """Mono int16 samples at 8000 Hz from a 16-bit mono PCM WAV file at a rate in RATES."""
    rate: int | None = None
    for chunk_id, body, size in _chunks(data):
        if body + size > len(data):
            raise _bad(f"truncated {chunk_id.decode('latin-1')!r} chunk")
        if chunk_id == b"fmt ":
            rate = _parse_fmt(data[body : body + size])
        elif chunk_id == b"data":
            if rate is None:
                raise _bad("data chunk before the fmt chunk")
            if size == 0 or size % 2:
                raise _bad(f"data chunk of {size} bytes is not whole 16-bit samples")
            samples = np.frombuffer(data, dtype="<i2", count=size // 2, offset=body)
            if rate == RATE:
                return samples.astype(np.int16)
            pcm = resample(samples.astype(np.int16), rate, RATE)
            if not len(pcm):
                raise _bad("shorter than one 8 kHz sample")
            return pcm
    raise _bad("no fmt and data chunks")


def _parse_fmt(fmt: bytes) -> int:
    if len(fmt) < 16:
        raise _bad(f"fmt chunk of {len(fmt)} bytes")
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID must be PCM
        if len(fmt) < 40 or fmt[24:26] != b"\x01\x00" or fmt[26:40] != _PCM_GUID_TAIL:
            raise _bad("extensible format is not PCM")
    elif tag != 1:
        raise _bad(f"format tag {tag} is not PCM")
    if channels != 1:
        raise _bad(f"{channels} channels, only mono is supported")
    if bits != 16:
        raise _bad(f"{bits}-bit samples, only 16-bit is supported")
    if rate not in RATES:
        raise _bad(f"sample rate {rate} Hz is not one of {sorted(RATES)}")
    if align != 2 or byte_rate != 2 * rate:
        raise _bad(f"block align {align} / byte rate {byte_rate} disagree with 16-bit mono")
    return int(rate)


# ---------------------------------------------------------------------------------------------
# Speech (espeak-ng)


@lru_cache(maxsize=1)
def _installed_voices() -> frozenset[str]:
    try:
        listing = subprocess.run(
            [ESPEAK, "--voices"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.split()[1].lower() for line in listing.splitlines()[1:] if line.split())


def espeak_voice(*names: str | None) -> str:
    """The espeak-ng voice for the first name that maps to an installed one, else en-us.

    A name is an espeak-ng voice ("en-gb-scotland"), a locale ("en-US", "de-DE" -> "de")
    or an Azure voice name whose locale prefix is used ("fr-FR-DeniseNeural" -> "fr-fr").
    """
    voices = _installed_voices()
    for name in names:
        lowered = (name or "").strip().lower().replace("_", "-")
        parts = lowered.split("-")
        candidates = [lowered, "-".join(parts[:2]), parts[0]]
        for candidate in candidates:
            candidate = _VOICE_ALIASES.get(candidate, candidate)
            if candidate and re.fullmatch(r"[a-z0-9-]+", candidate) and candidate in voices:
                return candidate
    return DEFAULT_VOICE


def synthesize(text: str, voice: str | None) -> bytes:
    """A WAV file (16-bit mono, espeak-ng's 22050 Hz) speaking `text`. Blocking: use a thread.

    `voice` goes through `espeak_voice`. Failures raise PromptError (500/9999).
    """
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise PromptError(8523, f"text must be 1 to {MAX_TEXT} characters, not {len(text)}")
    command = [ESPEAK, "--stdout", "--stdin", "-v", espeak_voice(voice)]
    try:
        done = subprocess.run(
            command, input=text.encode(), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PromptError(9999, f"speech synthesis failed: {exc}", code=500) from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()[:200]
        raise PromptError(9999, f"speech synthesis failed: {detail}", code=500)
    return _seal(done.stdout)


def _seal(wav: bytes) -> bytes:
    """Set the RIFF and data sizes of a streamed WAV (espeak-ng --stdout writes placeholders)."""
    body = next((body for chunk_id, body, _ in _chunks(wav) if chunk_id == b"data"), None)
    if body is None:
        raise PromptError(9999, "speech synthesis failed: no audio", code=500)
    length = (len(wav) - body) & ~1
    sealed = bytearray(wav[: body + length])
    struct.pack_into("<I", sealed, 4, len(sealed) - 8)
    struct.pack_into("<I", sealed, body - 4, length)
    return bytes(sealed)


def ssml_text(ssml: str) -> tuple[str, str | None]:
    """(plain text, voice) of an SSML document: tags dropped, entities decoded; the voice is
    the first <voice name=...>, else the xml:lang, else None."""
    voice = re.search(r"<voice\b[^>]*?\bname\s*=\s*[\"']([^\"']+)", ssml)
    lang = re.search(r"\bxml:lang\s*=\s*[\"']([^\"']+)", ssml)
    text = re.sub(r"<!--.*?-->|<[^>]*>", " ", ssml, flags=re.DOTALL)
    plain = " ".join(html.unescape(text).split())
    found = voice or lang
    return plain, found.group(1) if found else None


# ---------------------------------------------------------------------------------------------
# Twisted adapter


@implementer(IPolicyForHTTPS, IOpenSSLTrustRoot)
class _SystemAndPemTrust:
    """HTTPS policy trusting the system store plus one PEM bundle (the [rest] callback_ca)."""

    def __init__(self, pem: Path) -> None:
        self._pem = str(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:  # noqa: N802
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self)

    def _addCACertsToContext(self, context: SSL.Context) -> None:  # noqa: N802
        context.set_default_verify_paths()
        context.load_verify_locations(self._pem)


class _CappedBody(Protocol):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.size += len(data)
        if self.size > self.limit and not self.done.called:
            self._abort()
            self.done.errback(_download_failed(f"larger than {self.limit} bytes"))
        elif not self.done.called:
            self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):  # type: ignore[no-untyped-call]
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(_download_failed(reason.getErrorMessage()))


def _reason(exc: BaseException) -> str:
    reasons = getattr(exc, "reasons", None)  # twisted.web's ResponseNeverReceived and kin
    if isinstance(reasons, list) and reasons:
        return "; ".join(str(reason.getErrorMessage()) for reason in reasons)
    return str(exc) or type(exc).__name__


def _read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    body = _CappedBody(limit)
    response.deliverBody(body)  # type: ignore[no-untyped-call]
    return body.done


class PromptLoader:
    """Loads PlaySources as 8 kHz audio: fetch, synthesize or read, decode, cache."""

    def __init__(
        self,
        reactor: Any,
        media_dir: Path,
        ca: Path | None,
        insecure: bool,
        check_url: Callable[[str], str | None],
        *,
        max_bytes: int = MAX_BYTES,
        cache_bytes: int = CACHE_BYTES,
        timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.media_dir = media_dir.resolve()
        self.insecure = insecure
        self.check_url = check_url
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.timeout = timeout
        policy: IPolicyForHTTPS
        if ca is None:
            policy = BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]
        else:
            policy = _SystemAndPemTrust(ca)
        agent = Agent(reactor, policy, connectTimeout=timeout)  # type: ignore[no-untyped-call]
        self._http = HTTPClient(agent)
        self._cache: OrderedDict[Hashable, Pcm] = OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[Hashable, list[Deferred[Pcm]]] = {}
        self.hits = 0
        self.misses = 0

    def load(self, source: Mapping[str, object]) -> Deferred[Pcm]:
        """The audio of one PlaySource wire object; fails with PromptError."""
        try:
            key, produce = self._plan(source)
        except PromptError as exc:
            return fail(exc)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return succeed(cached)
        waiter: Deferred[Pcm] = Deferred()
        if key in self._pending:
            self._pending[key].append(waiter)
            return waiter
        self.misses += 1
        self._pending[key] = [waiter]
        produce().addBoth(self._settle, key)
        return waiter

    def _plan(self, source: Mapping[str, object]) -> tuple[Hashable, Callable[[], Deferred[Pcm]]]:
        """(cache key, producer) for a source; PromptError if it is malformed or refused."""
        kind = source.get("kind")
        body = source.get(kind) if isinstance(kind, str) else None
        if not isinstance(body, Mapping):
            raise PromptError(8523, f"play source kind {kind!r} without its {kind!r} object")
        if kind == "text":
            names = body.get("voiceName"), body.get("sourceLocale")
            key, produce = self._plan_speech(body.get("text"), *names)
        elif kind == "ssml":
            ssml = body.get("ssmlText")
            text, voice = ssml_text(ssml) if isinstance(ssml, str) else (None, None)
            key, produce = self._plan_speech(text, voice)
        elif kind == "file" and isinstance(body.get("uri"), str):
            key, produce = self._plan_file(str(body["uri"]))
        else:
            raise PromptError(8523, f"unsupported play source {kind!r}")
        cache_id = source.get("playSourceCacheId")
        return (("id", cache_id) if isinstance(cache_id, str) and cache_id else key), produce

    def _plan_speech(
        self, text: object, *names: object
    ) -> tuple[Hashable, Callable[[], Deferred[Pcm]]]:
        if not isinstance(text, str):
            raise PromptError(8523, "text play source without its text")
        wanted = tuple(name if isinstance(name, str) else None for name in names)

        def speak() -> Pcm:
            return decode_wav(synthesize(text, espeak_voice(*wanted)))

        return ("text", text, wanted), lambda: self._thread(speak)

    def _plan_file(self, uri: str) -> tuple[Hashable, Callable[[], Deferred[Pcm]]]:
        if urlsplit(uri).scheme.lower() != "file":
            self._check_remote(uri)
            return ("uri", uri), lambda: self._download(uri)
        path = self._local_path(uri)
        stat = path.stat()
        if stat.st_size > self.max_bytes:
            raise _download_failed(f"{uri} is larger than {self.max_bytes} bytes")

        def read() -> Pcm:
            return decode_wav(path.read_bytes())

        return ("file", str(path), stat.st_mtime_ns, stat.st_size), lambda: self._thread(read)

    def _local_path(self, uri: str) -> Path:
        """The file a file:// URI names: an absolute path under media_dir, else a path
        relative to media_dir; anything resolving outside it is refused."""
        parts = urlsplit(uri)
        raw = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not raw.strip("/") or "\x00" in raw:
            raise _download_failed(f"{uri!r} is not a local file URI")
        path = Path(raw).resolve() if raw.startswith("/") else None
        if path is None or not path.is_relative_to(self.media_dir):
            path = (self.media_dir / raw.lstrip("/")).resolve()
        if not path.is_relative_to(self.media_dir):
            raise _download_failed(f"{uri!r} is outside the media directory")
        if not path.is_file():
            raise _download_failed(f"{uri!r}: no such file")
        return path

    def _check_remote(self, url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.insecure):
            raise _download_failed(f"scheme {scheme!r} not allowed ({url})")
        reason = self.check_url(url)
        if reason is not None:
            raise _download_failed(f"{url} refused: {reason}")

    def _thread(self, work: Callable[[], Pcm]) -> Deferred[Pcm]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), work)

    def _download(self, uri: str) -> Deferred[Pcm]:
        def late(_: object, timeout: float) -> NoReturn:
            raise _download_failed(f"{uri}: no answer within {timeout} s")

        fetch = Deferred.fromCoroutine(self._fetch(uri))
        fetch.addTimeout(self.timeout, self.reactor, onTimeoutCancel=late)
        return fetch.addCallback(lambda data: self._thread(lambda: decode_wav(data)))

    async def _fetch(self, url: str) -> bytes:
        """The body at url (checked by _plan_file), following redirects that pass the checks."""
        for hop in range(MAX_REDIRECTS + 1):
            if hop:
                self._check_remote(url)
            try:
                response = await self._http.get(url, allow_redirects=False, unbuffered=True)
            except Exception as exc:  # DNS, connection, TLS, HTTP parsing
                raise _download_failed(f"{url}: {_reason(exc)}") from exc
            location = response.headers.getRawHeaders(b"location") or [b""]
            length = response.length
            too_big = length is not UNKNOWN_LENGTH and length > self.max_bytes
            if response.code != 200 or too_big:  # drop the body and the connection
                _read_body(response, 0).addErrback(lambda _: None)
            if response.code in _REDIRECTS and location[0]:
                url = urljoin(url, location[0].decode("latin-1"))
            elif response.code != 200:
                raise _download_failed(f"HTTP {response.code} from {url}")
            elif too_big:
                raise _download_failed(f"{url} is larger than {self.max_bytes} bytes")
            else:
                return await _read_body(response, self.max_bytes)
        raise _download_failed(f"more than {MAX_REDIRECTS} redirects")

    def _settle(self, result: Pcm | Failure, key: Hashable) -> None:
        waiters = self._pending.pop(key, [])
        if isinstance(result, Failure):
            error = result.value
            if not isinstance(error, PromptError):
                log.error("prompt load failed unexpectedly: %s", result.getTraceback())
                error = PromptError(9999, f"prompt failed: {error}", code=500)
            for waiter in waiters:
                if not waiter.called:
                    waiter.errback(error)
            return
        result.flags.writeable = False
        self._store(key, result)
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(result)

    def _store(self, key: Hashable, pcm: Pcm) -> None:
        if pcm.nbytes > self.cache_bytes:
            return
        self._cache[key] = pcm
        self._cached_bytes += pcm.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.nbytes
