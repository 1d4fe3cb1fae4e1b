"""The keyword-spotting WebSocket protocol (``/v1/kws``): what a client may send, what it gets back.

Client to server: a first text message, JSON :class:`Hello`; then binary messages of little-endian PCM
(whole samples of every channel); optionally a last text message ``{"end": true}``: the server steps the
audio left, sends the last events and ``{"type": "end", "samples"}`` (every sample it took) and closes with
1000.

Server to client, one JSON object per text message:

* ``{"type": "ready", "stream", "sample_rate", "keywords", "resumed", "samples"}`` once, after the hello;
  ``samples``: audio of this stream the server has consumed (at the client's rate; more than 0 on resume);
* events, the objects ``streamlmu listen`` prints: ``{"t", "keyword", "score", "stream"}``;
* ``{"t", "level", "top", "top_score"}`` every ``level`` seconds of audio if the hello asked: peak level in
  dBFS and the top label;
* ``{"type": "warning", "reason"}`` (e.g. the client sends faster than real time and is being slowed down),
  ``{"type": "closing", "reason"}`` before the server closes the socket.

Close codes (RFC 6455 and this service): see :data:`CLOSE`. The full description is ``docs/protocol.md``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from streamlmu.audio.sources import pcm_to_float

SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
DTYPES = {"int16": np.dtype("<i2"), "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}
MAX_CHANNELS = 8
STREAM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

CLOSE = {
    "normal": 1000,         # the client sent {"end": true} and got its last events
    "going_away": 1001,     # the server shuts down
    "unsupported": 1003,    # a text message where audio was expected, an unsupported rate, dtype or channels
    "invalid": 1007,        # a bad hello, odd byte counts, NaN or Inf in float PCM
    "policy": 1008,         # no or a wrong token, a stream id already connected, a client that stopped reading
    "too_big": 1009,        # a message over the size limit
    "try_later": 1013,      # the server holds its maximum of streams
}


class ProtocolError(Exception):
    """A client's message breaks the protocol: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Hello:
    """A client's first message: its audio format, the keywords it wants (None: the spotter's), the id of
    the stream to resume (None: a new stream), a level report every ``level`` seconds (0: none), a token,
    and on resuming, the time ``seen`` of the last event the client received (events up to it are not sent
    again)."""

    sample_rate: int
    dtype: str = "int16"
    channels: int = 1
    keywords: tuple[str, ...] | None = None
    stream: str | None = None
    level: float = 0.0
    token: str | None = None
    seen: float | None = None

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        return DTYPES[self.dtype].itemsize * self.channels


def _invalid(reason: str) -> ProtocolError:
    return ProtocolError(CLOSE["invalid"], reason)


def parse_hello(text: str | bytes, labels: tuple[str, ...]) -> Hello:
    """The :class:`Hello` in a first message, checked against the spotter's ``labels``, or a
    :class:`ProtocolError` that names what was expected."""
    if isinstance(text, bytes):
        raise _invalid('the first message must be JSON text like {"sample_rate": 16000, "dtype": "int16"}, '
                       'not binary audio')
    try:
        msg = json.loads(text)
    except ValueError:
        raise _invalid(f"the first message is not JSON: {text[:60]!r}") from None
    if not isinstance(msg, dict):
        raise _invalid(f"the first message must be a JSON object (got {type(msg).__name__})")
    known = {"sample_rate", "dtype", "channels", "keywords", "stream", "level", "token", "seen"}
    if set(msg) - known:
        raise _invalid(f"unknown field(s) {sorted(set(msg) - known)} in the first message (known: {sorted(known)})")
    rate = msg.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise _invalid(f"sample_rate must be an integer number of Hz (got {rate!r})")
    if rate not in SAMPLE_RATES:
        raise ProtocolError(CLOSE["unsupported"], f"sample_rate {rate} Hz is not supported (supported: "
                                                  f"{', '.join(map(str, SAMPLE_RATES))})")
    dtype = msg.get("dtype", "int16")
    if dtype not in DTYPES:
        raise ProtocolError(CLOSE["unsupported"], f"dtype {dtype!r} is not supported (supported: {', '.join(DTYPES)})")
    channels = msg.get("channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(CLOSE["unsupported"], f"channels must be an integer from 1 to {MAX_CHANNELS} "
                                                  f"(got {channels!r})")
    keywords = msg.get("keywords")
    if keywords is not None:
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise _invalid(f"keywords must be a list of labels (got {keywords!r})")
        unknown = [k for k in keywords if k not in labels]
        if unknown:
            raise _invalid(f"unknown keyword(s) {unknown}; this spotter knows {', '.join(labels)}")
        keywords = tuple(keywords)
    stream = msg.get("stream")
    if stream is not None and (not isinstance(stream, str) or not STREAM_ID.match(stream)):
        raise _invalid(f"stream must be an id of 1 to 64 letters, digits or _.:- (got {stream!r})")
    level = msg.get("level", 0)
    if level is True:
        level = 0.1
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 60:
        raise _invalid(f"level must be seconds between level reports, from 0 (none) to 60 (got {level!r})")
    token = msg.get("token")
    if token is not None and not isinstance(token, str):
        raise _invalid("token must be a string")
    seen = msg.get("seen")
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, (int, float)) or stream is None):
        raise _invalid(f"seen must be the time in seconds of the last event received, given with the stream "
                       f"to resume (got {seen!r})")
    return Hello(rate, dtype, channels, keywords, stream, float(level), token,
                 None if seen is None else float(seen))


def decode_pcm(data: bytes, hello: Hello) -> np.ndarray:
    """A binary message as mono float32 samples ``(n,)`` (channels averaged), or a :class:`ProtocolError`."""
    if len(data) % hello.frame_bytes:
        raise _invalid(f"a message must hold whole samples: {len(data)} bytes is not a multiple of "
                       f"{hello.frame_bytes} ({hello.dtype} x {hello.channels} channel(s))")
    pcm = np.frombuffer(data, DTYPES[hello.dtype]).reshape(-1, hello.channels)
    if hello.dtype == "float32":
        bad = ~np.isfinite(pcm)
        if bad.any():
            raise _invalid(f"float32 PCM holds NaN or Inf (sample {int(np.argwhere(bad)[0][0])} of the message); "
                           f"the message was not used")
    audio = pcm_to_float(pcm)
    return audio.mean(axis=1) if hello.channels > 1 else audio[:, 0].copy()
