"""A Python client of ``/v1/kws`` (the ``websockets`` library): stream audio, collect what the server says.

>>> import asyncio, soundfile
>>> audio, rate = soundfile.read("speech.wav", dtype="int16")
>>> result = asyncio.run(stream_audio("ws://127.0.0.1:8000/v1/kws", audio, rate))  # doctest: +SKIP
>>> [e["keyword"] for e in result.events]  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
import websockets

from streamlmu.serve.protocol import DTYPES


RECONNECT_CODES = (1001, 1006, 1011, 1012)  # the server went away, the network failed, the server failed
READY_TIMEOUT_S = 10.0  # a server that has not answered the hello by then is taken for gone


@dataclass
class StreamResult:
    """What a stream got back: the ``ready`` message (the last one, after reconnects), events (each with
    ``received``: seconds since the stream's first audio was sent), level reports, warnings, the close code
    and reason, and how many times the client reconnected."""

    ready: dict | None = None
    events: list[dict] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    reconnects: int = 0
    samples: int | None = None  # the samples the server says it took, in its end message


def pcm_bytes(audio: np.ndarray, dtype: str) -> bytes:
    """``(samples,)`` or ``(samples, channels)`` audio as little-endian PCM of ``dtype`` (float input is
    scaled to the integer types)."""
    audio = np.asarray(audio)
    if dtype != "float32" and audio.dtype.kind == "f":
        scale = float(-np.iinfo(DTYPES[dtype]).min)
        audio = np.clip(np.round(audio * scale), -scale, scale - 1)
    return audio.astype(DTYPES[dtype]).tobytes()


async def stream_audio(url: str, audio: np.ndarray, sample_rate: int, chunk_s: float = 0.1,
                       realtime: bool = True, hello: dict | None = None, end: bool = True, reconnect: int = 0,
                       result: StreamResult | None = None, speed: float = 1.0) -> StreamResult:
    """Send ``audio`` (int16, int32 or float32; ``(samples,)`` or ``(samples, channels)``) to ``url`` in chunks
    of ``chunk_s`` seconds, paced at ``speed`` times the speed of the audio if ``realtime``; with ``end``, ask
    for the last events and wait for the server to close. ``hello``: extra first-message fields (``stream``,
    ``level``...).

    ``reconnect``: how many times to reconnect when the connection drops (close codes
    :data:`RECONNECT_CODES`, or no connection): the client resumes its stream id, says which event it saw
    last, and sends its audio again from where the server's ``ready`` says it stands."""
    audio = np.asarray(audio)
    dtype = {"i": f"int{audio.dtype.itemsize * 8}", "f": "float32"}[audio.dtype.kind]
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    result = result if result is not None else StreamResult()
    step = max(1, int(round(chunk_s * sample_rate)))
    start = time.perf_counter()
    for attempt in range(reconnect + 1):
        fields = {"sample_rate": sample_rate, "dtype": dtype, "channels": channels, **(hello or {})}
        if result.ready is not None:  # resume
            fields["stream"] = result.ready["stream"]
            if result.events:
                fields["seen"] = result.events[-1]["t"]
        result.close_code = None
        try:
            await _stream_once(url, fields, audio, step, sample_rate * speed if realtime else 0, end, result, start)
        except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
            pass
        if result.close_code is not None and result.close_code not in RECONNECT_CODES:
            break
        if attempt < reconnect:
            result.reconnects += 1
            await asyncio.sleep(0.2 * (attempt + 1))
    return result


async def _stream_once(url: str, fields: dict, audio: np.ndarray, step: int, pace: float, end: bool,
                       result: StreamResult, start: float) -> None:
    """One connection: the hello, audio from the ``ready`` message's sample on (``pace`` samples a second,
    0: as fast as the socket takes them), the end."""
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps(fields))
        ready = asyncio.Event()
        reader = asyncio.get_running_loop().create_task(_read(socket, result, start, ready))
        try:
            waiting = asyncio.ensure_future(ready.wait())
            await asyncio.wait({reader, waiting}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():  # refused (the reader saw the close), or no answer: try again
                waiting.cancel()
                reader.cancel()
                return
            for at in range(result.ready["samples"], len(audio), step):
                if pace:  # a live source has a chunk once its last sample is heard
                    ready_at = start + min(at + step, len(audio)) / pace
                    await asyncio.sleep(max(0.0, ready_at - time.perf_counter()))
                await socket.send(pcm_bytes(audio[at:at + step], fields["dtype"]))
            if end:
                await socket.send(json.dumps({"end": True}))
        except websockets.ConnectionClosed:
            pass
        await reader if end else reader.cancel()


async def _read(socket, result: StreamResult, start: float, ready: asyncio.Event) -> None:
    try:
        async for text in socket:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "ready":
                result.ready = message
                ready.set()
            elif kind in ("warning", "closing"):
                result.warnings.append(message)
            elif kind == "end":
                result.samples = message["samples"]
            elif "keyword" in message:
                result.events.append({**message, "received": time.perf_counter() - start})
            elif "level" in message:
                result.levels.append(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        if socket.close_code is not None:
            result.close_code, result.close_reason = socket.close_code, socket.close_reason or ""
