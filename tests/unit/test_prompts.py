"""PlaySources to audio (gateway/media/prompts.py): WAV parsing and resampling, espeak-ng,
SSML, and the Twisted loader against the file system and a real HTTPS server on 127.0.0.1."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.media.prompts import (
    RATES,
    PromptError,
    PromptLoader,
    decode_wav,
    espeak_voice,
    ssml_text,
    synthesize,
)
from gateway.tlsutil import ensure_certificate, server_options

EXTENSIBLE_PCM = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def fmt_chunk(
    rate: int,
    *,
    tag: int = 1,
    channels: int = 1,
    bits: int = 16,
    byte_rate: int | None = None,
    align: int | None = None,
) -> bytes:
    align = channels * bits // 8 if align is None else align
    byte_rate = rate * align if byte_rate is None else byte_rate
    body = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, align, bits)
    return b"fmt " + struct.pack("<I", len(body)) + body


def wav(
    samples: npt.NDArray[Any] | bytes,
    rate: int = 8000,
    *,
    fmt: bytes | None = None,
    extra: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    """A RIFF WAVE file: fmt chunk (default 16-bit mono PCM), optional chunks, data chunk."""
    pcm = samples if isinstance(samples, bytes) else np.asarray(samples, "<i2").tobytes()
    size = len(pcm) if data_size is None else data_size
    body = b"WAVE" + (fmt_chunk(rate) if fmt is None else fmt) + extra
    body += b"data" + struct.pack("<I", size) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> Any:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant(pcm: npt.NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def rms_db(pcm: npt.NDArray[np.int16], reference: float) -> float:
    trimmed = pcm[200:-200].astype(np.float64)  # skip the filter's edge transients
    rms = max(float(np.sqrt(np.mean(trimmed**2))), 1e-6)
    return 20 * np.log10(rms / reference)


def refused(data: bytes) -> PromptError:
    with pytest.raises(PromptError) as caught:
        decode_wav(data)
    return caught.value


# --- decode_wav: rates and resampling -----------------------------------------------------


@pytest.mark.parametrize("rate", sorted(RATES))
def test_1khz_tone_keeps_its_frequency_at_every_rate(rate: int) -> None:
    pcm = decode_wav(wav(tone(1000, rate, 2.0), rate))
    assert pcm.dtype == np.int16
    assert len(pcm) == 16000
    assert abs(dominant(pcm) - 1000) <= 10
    assert abs(rms_db(pcm, 10000 / np.sqrt(2))) < 0.2


@pytest.mark.parametrize("rate", sorted(RATES - {8000}))
def test_passband_is_flat_to_3400_hz(rate: int) -> None:
    for freq in (300, 2000, 3400):
        pcm = decode_wav(wav(tone(freq, rate), rate))
        assert abs(rms_db(pcm, 10000 / np.sqrt(2))) < 0.5, freq


def test_6khz_in_a_16khz_file_does_not_alias() -> None:
    pcm = decode_wav(wav(tone(6000, 16000), 16000))
    assert rms_db(pcm, 10000 / np.sqrt(2)) < -30


@pytest.mark.parametrize(("rate", "freq"), [(22050, 9000), (24000, 7000), (44100, 5500),
                                            (44100, 12000), (48000, 20000)])  # fmt: skip
def test_no_aliasing_from_above_the_telephone_band(rate: int, freq: int) -> None:
    pcm = decode_wav(wav(tone(freq, rate), rate))
    assert rms_db(pcm, 10000 / np.sqrt(2)) < -30


def test_8khz_is_passed_through_unchanged() -> None:
    samples = np.arange(-500, 500, dtype=np.int16) * 30
    assert np.array_equal(decode_wav(wav(samples)), samples)


def test_output_length_follows_the_rate_ratio() -> None:
    assert len(decode_wav(wav(np.zeros(441, np.int16), 44100))) == 80
    assert len(decode_wav(wav(np.zeros(2205, np.int16), 22050))) == 800
    assert len(decode_wav(wav(np.zeros(7, np.int16), 48000))) == 1


def test_full_scale_square_wave_is_clipped_not_wrapped() -> None:
    square = np.where(np.arange(4800) // 24 % 2, 32767, -32768).astype(np.int16)
    pcm = decode_wav(wav(square, 48000))
    assert pcm.min() >= -32768 and pcm.max() <= 32767
    assert pcm.max() > 30000 and pcm.min() < -30000


def test_extensible_pcm_and_extra_chunks_are_accepted() -> None:
    base = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16)
    body = base + struct.pack("<HHI", 22, 16, 4) + EXTENSIBLE_PCM
    fmt = b"fmt " + struct.pack("<I", len(body)) + body
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # odd size, padded (RIFF rule)
    pcm = decode_wav(wav(tone(1000, 16000), 16000, fmt=fmt, extra=odd))
    assert abs(dominant(pcm) - 1000) <= 10


def test_trailing_chunks_after_data_are_ignored() -> None:
    data = wav(tone(500, 8000, 0.1)) + b"LIST" + struct.pack("<I", 4) + b"abcd"
    assert len(decode_wav(data)) == 800


# --- decode_wav: refusals (8535) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a RIFF WAVE"),
        (b"RIFF", "not a RIFF WAVE"),
        (b"RIFX" + wav(b"\x00\x00")[4:], "not a RIFF WAVE"),
        (b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 40, "not a RIFF WAVE"),
        (b"ID3\x03" + b"\x00" * 60, "not a RIFF WAVE"),
        (wav(b"\x00\x00", fmt=b"fmt " + struct.pack("<I", 14) + b"\x01\x00" * 7), "fmt chunk"),
        (wav(b"\x00\x00", fmt=fmt_chunk(8000, tag=3, bits=32)), "format tag 3"),
        (wav(b"\x00\x00", fmt=fmt_chunk(8000, tag=7, bits=8)), "format tag 7"),  # mu-law
        (wav(b"\x00\x00" * 4, fmt=fmt_chunk(8000, channels=2)), "2 channels"),
        (wav(b"\x00\x00", fmt=fmt_chunk(8000, bits=8)), "8-bit"),
        (wav(b"\x00\x00", fmt=fmt_chunk(8000, bits=24)), "24-bit"),
        (wav(b"\x00\x00", 11025), "sample rate 11025"),
        (wav(b"\x00\x00", 32000), "sample rate 32000"),
        (wav(b"\x00\x00", fmt=fmt_chunk(16000, byte_rate=16000)), "byte rate 16000"),
        (wav(b"\x00\x00", fmt=fmt_chunk(16000, align=4)), "block align 4"),
        (wav(b""), "data chunk of 0 bytes"),
        (wav(b"\x00\x00\x00"), "data chunk of 3 bytes"),
        (wav(b"\x00\x00" * 5, 48000), "shorter than one 8 kHz sample"),
        (wav(b"\x00\x00" * 10, data_size=40), "truncated 'data' chunk"),
        (wav(b"\x00\x00" * 10, data_size=0x7FFFF000), "truncated 'data' chunk"),
        (wav(b"\x00\x00")[:30], "truncated 'fmt ' chunk"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt and data"),
        (b"RIFF\x0c\x00\x00\x00WAVEdata\x00\x00\x00\x00", "data chunk before the fmt"),
    ],
)
def test_malformed_files_are_refused_with_8535(data: bytes, reason: str) -> None:
    error = refused(data)
    assert (error.code, error.sub_code) == (400, 8535)
    assert error.message.startswith("invalid file format: ")
    assert reason in error.message


def test_extensible_float_is_refused() -> None:
    base = struct.pack("<HHIIHH", 0xFFFE, 1, 8000, 16000, 2, 16)
    guid = b"\x03" + EXTENSIBLE_PCM[1:]  # KSDATAFORMAT_SUBTYPE_IEEE_FLOAT
    body = base + struct.pack("<HHI", 22, 16, 4) + guid
    error = refused(wav(b"\x00\x00", fmt=b"fmt " + struct.pack("<I", len(body)) + body))
    assert "extensible format is not PCM" in error.message


def test_every_truncation_is_refused_cleanly() -> None:
    # Each prefix of a valid file either decodes (the data chunk's end) or raises PromptError
    # 8535: never an IndexError, struct.error or a read past the end.
    whole = wav(tone(440, 16000, 0.01), 16000, extra=b"LIST" + struct.pack("<I", 2) + b"ab")
    for cut in range(len(whole)):
        assert refused(whole[:cut]).sub_code == 8535, cut
    assert len(decode_wav(whole)) == 80


def test_random_bytes_after_the_header_only_raise_prompt_errors() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        noise = rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        data = b"RIFF" + struct.pack("<I", len(noise) + 4) + b"WAVE" + noise
        try:
            decode_wav(data)
        except PromptError as error:
            assert error.sub_code == 8535


# --- espeak-ng ----------------------------------------------------------------------------


def test_espeak_ng_is_installed() -> None:
    # Not a skip: the gateway speaks text sources with it, so its absence is a failure.
    assert shutil.which("espeak-ng"), "espeak-ng missing: apt-get install espeak-ng"


def test_synthesize_gives_a_sealed_wav_of_plausible_length() -> None:
    data = synthesize("Hello world, this is a test of the gateway.", "en-US")
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8  # no streaming placeholder
    pcm = decode_wav(data)
    seconds = len(pcm) / 8000
    assert 1.0 < seconds < 6.0
    assert np.abs(pcm).max() > 3000  # speech, not silence
    longer = decode_wav(synthesize("Hello world, this is a test of the gateway. " * 3, None))
    assert len(longer) > 2 * len(pcm)


def test_synthesize_other_voices() -> None:
    german = decode_wav(synthesize("Guten Tag, willkommen.", "de-DE-KatjaNeural"))
    assert 0.5 < len(german) / 8000 < 5.0


def test_text_that_starts_like_an_option_is_spoken() -> None:
    pcm = decode_wav(synthesize("--help -v xx", None))
    assert len(pcm) > 4000


@pytest.mark.parametrize("text", ["", "   ", "x" * 4001])
def test_synthesize_refuses_empty_or_huge_text(text: str) -> None:
    with pytest.raises(PromptError) as caught:
        synthesize(text, None)
    assert caught.value.sub_code == 8523


@pytest.mark.parametrize(
    ("names", "voice"),
    [
        (("en-US",), "en-us"),
        (("en-GB",), "en-gb"),
        (("en_GB",), "en-gb"),
        (("en-US-JennyNeural",), "en-us"),
        (("fr-FR-DeniseNeural",), "fr-fr"),
        (("de-DE",), "de"),
        (("pt-BR",), "pt-br"),
        (("zh-CN",), "cmn"),
        (("en-gb-scotland",), "en-gb-scotland"),
        (("JennyNeural", "es-ES"), "es"),
        ((None, "it-IT"), "it"),
        (("xx-YY",), "en-us"),
        (("../../etc",), "en-us"),
        ((None, None), "en-us"),
        ((), "en-us"),
    ],
)
def test_espeak_voice_mapping(names: tuple[str | None, ...], voice: str) -> None:
    assert espeak_voice(*names) == voice


def test_ssml_text() -> None:
    ssml = (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        '<voice name="en-GB-RyanNeural">Press <emphasis>one</emphasis> &amp; wait'
        '<break time="500ms"/>please.<!-- a <comment> --></voice></speak>'
    )
    assert ssml_text(ssml) == ("Press one & wait please.", "en-GB-RyanNeural")
    assert ssml_text('<speak xml:lang="de-DE">Hallo</speak>') == ("Hallo", "de-DE")
    assert ssml_text("plain &lt;text&gt;") == ("plain <text>", None)


# --- PromptLoader (real reactor, real files, real HTTPS on loopback) ------------------------

SPEECH = {"kind": "text", "text": {"text": "Please enter your account number.",
                                   "sourceLocale": "en-US"}}  # fmt: skip


class _Files(Resource):
    isLeaf = True

    def __init__(self, files: dict[bytes, bytes]) -> None:
        super().__init__()
        self.files = files
        self.hanging: list[Request] = []
        self.requests: list[bytes] = []

    def render_GET(self, request: Request) -> bytes | int:  # noqa: N802
        path = request.path
        self.requests.append(path)
        if path == b"/hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        if path == b"/loop":
            request.setResponseCode(307)
            request.setHeader(b"location", b"/loop")
            return b""
        if path.startswith(b"/redirect"):
            request.setResponseCode(302)
            request.setHeader(b"location", request.args.get(b"to", [b"/a.wav"])[0])
            return b""
        if path == b"/chunked.wav":
            request.write(self.files[b"/a.wav"])  # no Content-Length: chunked
            request.finish()
            return NOT_DONE_YET
        if path not in self.files:
            request.setResponseCode(404)
            return b"not found"
        return self.files[path]


class LoaderTests(unittest.TestCase):
    def setUp(self) -> None:
        # not self.mktemp(): under pytest that writes into the current directory
        self.root = Path(tempfile.mkdtemp(prefix="prompts-")).resolve()
        self.addCleanup(shutil.rmtree, self.root, True)
        self.media = self.root / "media"
        (self.media / "sub").mkdir(parents=True)
        self.audio = tone(1000, 16000, 0.5)
        self.file_bytes = wav(self.audio, 16000)
        (self.media / "a.wav").write_bytes(self.file_bytes)
        (self.media / "sub" / "b.wav").write_bytes(wav(tone(700, 8000, 0.25)))
        (self.media / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
        (self.root / "secret.wav").write_bytes(self.file_bytes)
        (self.media / "link.wav").symlink_to(self.root / "secret.wav")
        self.checked: list[str] = []

    def check_url(self, url: str) -> str | None:
        self.checked.append(url)
        return "private address" if "blocked" in url else None

    def loader(self, **options: Any) -> PromptLoader:
        ca = options.pop("ca", None)
        insecure = options.pop("insecure", False)
        return PromptLoader(reactor, self.media, ca, insecure, self.check_url, **options)

    async def error(self, d: Deferred[Any]) -> PromptError:
        try:
            await d
        except PromptError as error:
            return error
        raise AssertionError("the source loaded")

    def https(self) -> tuple[str, Path, _Files]:
        cert, key = self.root / "tls" / "cert.pem", self.root / "tls" / "key.pem"
        ensure_certificate(cert, key, ["127.0.0.1"])
        files = _Files({b"/a.wav": self.file_bytes, b"/bad.wav": b"RIFF"})
        site = Site(files)
        port = reactor.listenSSL(0, site, server_options(cert, key), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [r.finish() for r in files.hanging if not r.finished])
        return f"https://127.0.0.1:{port.getHost().port}", cert, files

    # file://

    async def test_file_uri_relative_and_absolute_under_media_dir(self) -> None:
        loader = self.loader()
        relative = await loader.load({"kind": "file", "file": {"uri": "file:///a.wav"}})
        assert len(relative) == 4000 and abs(dominant(relative) - 1000) <= 10
        absolute = await loader.load(
            {"kind": "file", "file": {"uri": (self.media / "sub" / "b.wav").as_uri()}}
        )
        assert len(absolute) == 2000
        nested = await loader.load({"kind": "file", "file": {"uri": "file:sub/b.wav"}})
        assert nested is absolute  # same file, same cache entry

    async def test_path_traversal_is_refused(self) -> None:
        loader = self.loader()
        for uri in [
            "file:///../secret.wav",
            "file:///sub/../../secret.wav",
            "file:///%2e%2e/secret.wav",
            "file:../secret.wav",
            "file:///link.wav",  # a symlink pointing outside
            (self.root / "secret.wav").as_uri(),
            "file:///etc/passwd",
            "file://evil.example/a.wav",
            "file:///a.wav%00.txt",
            "file:///",
        ]:
            error = await self.error(loader.load({"kind": "file", "file": {"uri": uri}}))
            assert (error.code, error.sub_code) == (400, 8536), uri
            assert error.message.startswith("file download failed: "), uri

    async def test_missing_and_invalid_files(self) -> None:
        loader = self.loader()
        missing = await self.error(loader.load({"kind": "file", "file": {"uri": "file:///x.wav"}}))
        assert missing.sub_code == 8536 and "no such file" in missing.message
        bad = await self.error(loader.load({"kind": "file", "file": {"uri": "file:///bad.wav"}}))
        assert bad.sub_code == 8535

    async def test_file_too_large(self) -> None:
        loader = self.loader(max_bytes=1000)
        error = await self.error(loader.load({"kind": "file", "file": {"uri": "file:///a.wav"}}))
        assert error.sub_code == 8536 and "larger than 1000 bytes" in error.message

    async def test_malformed_sources(self) -> None:
        loader = self.loader()
        for source in [
            {},
            {"kind": "file"},
            {"kind": "file", "file": {}},
            {"kind": "file", "file": {"uri": 5}},
            {"kind": "text", "text": {"voiceName": "en-US-JennyNeural"}},
            {"kind": "ssml", "ssml": {}},
            {"kind": "video", "video": {"uri": "file:///a.wav"}},
        ]:
            error = await self.error(loader.load(source))
            assert error.sub_code == 8523, source

    async def test_schemes(self) -> None:
        loader = self.loader()
        for uri, reason in [
            ("ftp://127.0.0.1/a.wav", "scheme 'ftp' not allowed"),
            ("http://127.0.0.1/a.wav", "scheme 'http' not allowed"),
            ("https://blocked.example/a.wav", "refused: private address"),
        ]:
            error = await self.error(loader.load({"kind": "file", "file": {"uri": uri}}))
            assert error.sub_code == 8536 and reason in error.message, uri

    # https://

    async def test_https_with_the_extra_ca(self) -> None:
        base, cert, files = self.https()
        loader = self.loader(ca=cert)
        pcm = await loader.load({"kind": "file", "file": {"uri": base + "/a.wav"}})
        assert len(pcm) == 4000 and abs(dominant(pcm) - 1000) <= 10
        assert self.checked == [base + "/a.wav"]
        again = await loader.load({"kind": "file", "file": {"uri": base + "/a.wav"}})
        assert again is pcm and files.requests == [b"/a.wav"]  # served from the cache
        chunked = await loader.load({"kind": "file", "file": {"uri": base + "/chunked.wav"}})
        assert np.array_equal(chunked, pcm)

    async def test_https_without_the_ca_is_untrusted(self) -> None:
        base, _, _ = self.https()
        error = await self.error(self.loader().load({"kind": "file", "file": {"uri": base}}))
        assert error.sub_code == 8536

    async def test_https_errors(self) -> None:
        base, cert, _ = self.https()
        loader = self.loader(ca=cert)
        missing = await self.error(loader.load({"kind": "file", "file": {"uri": base + "/x"}}))
        assert "HTTP 404" in missing.message
        bad = await self.error(loader.load({"kind": "file", "file": {"uri": base + "/bad.wav"}}))
        assert bad.sub_code == 8535

    async def test_https_size_cap(self) -> None:
        base, cert, _ = self.https()
        loader = self.loader(ca=cert, max_bytes=1000)
        for path in ["/a.wav", "/chunked.wav"]:
            uri = base + path
            error = await self.error(loader.load({"kind": "file", "file": {"uri": uri}}))
            assert error.sub_code == 8536 and "larger than 1000 bytes" in error.message, path

    async def test_redirects_are_followed_and_checked(self) -> None:
        base, cert, _ = self.https()
        loader = self.loader(ca=cert)
        pcm = await loader.load({"kind": "file", "file": {"uri": base + "/redirect"}})
        assert len(pcm) == 4000
        assert self.checked == [base + "/redirect", base + "/a.wav"]
        blocked = base + "/redirect?to=https://blocked.example/a.wav"
        error = await self.error(loader.load({"kind": "file", "file": {"uri": blocked}}))
        assert "refused: private address" in error.message
        loop = base + "/loop"
        error = await self.error(loader.load({"kind": "file", "file": {"uri": loop}}))
        assert "redirects" in error.message

    async def test_http_only_when_insecure(self) -> None:
        files = _Files({b"/a.wav": self.file_bytes})
        port = reactor.listenTCP(0, Site(files), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        uri = f"http://127.0.0.1:{port.getHost().port}/a.wav"
        pcm = await self.loader(insecure=True).load({"kind": "file", "file": {"uri": uri}})
        assert len(pcm) == 4000

    async def test_a_silent_server_times_out(self) -> None:
        base, cert, _ = self.https()
        loader = self.loader(ca=cert, timeout=0.5)
        error = await self.error(loader.load({"kind": "file", "file": {"uri": base + "/hang"}}))
        assert error.sub_code == 8536 and "no answer within 0.5 s" in error.message

    # text and ssml

    async def test_text_is_spoken_once_for_concurrent_loads(self) -> None:
        loader = self.loader()
        first, second = loader.load(SPEECH), loader.load(SPEECH)
        a, b = await first, await second
        assert a is b and loader.misses == 1
        assert 1.0 < len(a) / 8000 < 6.0
        assert not a.flags.writeable  # shared audio is read-only
        assert (await loader.load(SPEECH)) is a and loader.hits == 1

    async def test_ssml_is_spoken(self) -> None:
        source = {"kind": "ssml", "ssml": {"ssmlText": '<speak xml:lang="en-US">Goodbye.</speak>'}}
        pcm = await self.loader().load(source)
        assert 0.3 < len(pcm) / 8000 < 3.0

    async def test_cancelled_waiter_does_not_disturb_the_others(self) -> None:
        loader = self.loader()
        first, second = loader.load(SPEECH), loader.load(SPEECH)
        first.cancel()
        first.addErrback(lambda _: None)
        assert len(await second) > 8000

    # the cache

    async def test_play_source_cache_id_names_the_audio(self) -> None:
        loader = self.loader()
        a = {"kind": "file", "file": {"uri": "file:///a.wav"}, "playSourceCacheId": "greeting"}
        b = {"kind": "file", "file": {"uri": "file:///sub/b.wav"}, "playSourceCacheId": "greeting"}
        first = await loader.load(a)
        assert (await loader.load(b)) is first

    async def test_lru_eviction_is_bounded_in_bytes(self) -> None:
        loader = self.loader(cache_bytes=9000)  # a.wav: 8000 bytes, b.wav: 4000 bytes
        a = {"kind": "file", "file": {"uri": "file:///a.wav"}}
        b = {"kind": "file", "file": {"uri": "file:///sub/b.wav"}}
        await loader.load(a)
        await loader.load(b)  # evicts a
        assert loader.misses == 2
        await loader.load(b)
        assert loader.hits == 1
        await loader.load(a)  # decoded again; evicts b
        assert loader.misses == 3
        await loader.load(a)
        assert loader.hits == 2

    async def test_a_changed_file_is_read_again(self) -> None:
        loader = self.loader()
        source = {"kind": "file", "file": {"uri": "file:///sub/b.wav"}}
        before = await loader.load(source)
        (self.media / "sub" / "b.wav").write_bytes(wav(tone(700, 8000, 0.5)))
        after = await loader.load(source)
        assert (len(before), len(after)) == (2000, 4000)
