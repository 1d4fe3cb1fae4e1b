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


@dataclass
class StreamResult:
    """What a stream got back: the ``ready`` message, events (each with ``received``: seconds since the
    stream's first audio was sent), level reports, warnings and the close code and reason."""

    ready: dict | None = None
    events: list[dict] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


def pcm_bytes(audio: np.ndarray, dtype: str) -> bytes:
    """``(samples,)`` or ``(samples, channels)`` audio as little-endian PCM of ``dtype`` (float input is
    scaled to the integer types)."""
    audio = np.asarray(audio)
    if dtype != "float32" and audio.dtype.kind == "f":
        scale = float(-np.iinfo(DTYPES[dtype]).min)
        audio = np.clip(np.round(audio * scale), -scale, scale - 1)
    return audio.astype(DTYPES[dtype]).tobytes()


async def stream_audio(url: str, audio: np.ndarray, sample_rate: int, chunk_s: float = 0.1,
                       realtime: bool = True, hello: dict | None = None, end: bool = True,
                       result: StreamResult | None = None) -> StreamResult:
    """Send ``audio`` (int16, int32 or float32; ``(samples,)`` or ``(samples, channels)``) to ``url`` in chunks
    of ``chunk_s`` seconds, paced at the speed of the audio if ``realtime``; with ``end``, ask for the last
    events and wait for the server to close. ``hello``: extra first-message fields (``stream``, ``level``...)."""
    audio = np.asarray(audio)
    dtype = {"i": f"int{audio.dtype.itemsize * 8}", "f": "float32"}[audio.dtype.kind]
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    result = result if result is not None else StreamResult()
    step = max(1, int(round(chunk_s * sample_rate)))
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps({"sample_rate": sample_rate, "dtype": dtype, "channels": channels,
                                      **(hello or {})}))
        start = time.perf_counter()
        reader = asyncio.get_running_loop().create_task(_read(socket, result, start))
        try:
            for i, at in enumerate(range(0, len(audio), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, start + i * chunk_s - time.perf_counter()))
                await socket.send(pcm_bytes(audio[at:at + step], dtype))
            if end:
                await socket.send(json.dumps({"end": True}))
            await reader if end else reader.cancel()
        except websockets.ConnectionClosed:
            await reader
    return result


async def _read(socket, result: StreamResult, start: float) -> None:
    try:
        async for text in socket:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "ready":
                result.ready = message
            elif kind in ("warning", "closing"):
                result.warnings.append(message)
            elif "keyword" in message:
                result.events.append({**message, "received": time.perf_counter() - start})
            elif "level" in message:
                result.levels.append(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        if socket.close_code is not None:
            result.close_code, result.close_reason = socket.close_code, socket.close_reason or ""
