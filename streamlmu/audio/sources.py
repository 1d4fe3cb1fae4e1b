"""Audio sources for live keyword spotting: files, raw PCM on stdin, and microphones.

Each source is an iterator of ``(chunk, sample_rate)`` with ``chunk`` mono
float32 ``(samples,)`` in [-1, 1] (several channels are averaged), and
counts what it lost in ``overflows`` (dropped input buffers) so a caller
can warn about it.
"""
from __future__ import annotations

import queue
import select
import sys
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile

from streamlmu.data.speech_commands import AudioFileError

POLL_S = 0.2  # longest wait on a silent pipe before pending signals (Ctrl-C) are checked


def pcm_to_float(audio: np.ndarray) -> np.ndarray:
    """Integer PCM (full scale -> 1.0) or float samples as float32; other dtypes are a ``TypeError``."""
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        return (audio.astype(np.float32) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    if audio.dtype.kind != "f":
        raise TypeError(f"samples must be float or integer PCM (got dtype {audio.dtype})")
    return audio.astype(np.float32, copy=False)


class FileSource:
    """A sound file in chunks of ``chunk_s`` seconds; ``realtime`` paces them at the speed of the audio."""

    def __init__(self, path: str | Path, chunk_s: float = 0.1, realtime: bool = False):
        self.path, self.chunk_s, self.realtime = Path(path), chunk_s, realtime
        self.overflows = 0
        try:
            info = soundfile.info(str(self.path))
        except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
            raise AudioFileError(f"{self.path}: not a readable audio file ({err})") from None
        if info.frames == 0:
            raise AudioFileError(f"{self.path}: the file holds no samples")
        self.sample_rate, self.channels, self.frames = info.samplerate, info.channels, info.frames
        self.name = str(path)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        block = max(1, int(self.chunk_s * self.sample_rate))
        start = time.perf_counter()
        done = 0
        try:
            for data in soundfile.blocks(str(self.path), blocksize=block, dtype="float32", always_2d=True):
                if self.realtime:
                    time.sleep(max(0.0, start + done / self.sample_rate - time.perf_counter()))
                done += len(data)
                yield data.mean(axis=1), self.sample_rate
        except (RuntimeError, soundfile.LibsndfileError) as err:  # a file cut short or damaged mid-way
            raise AudioFileError(f"{self.path}: unreadable after {done / self.sample_rate:.2f} s ({err})") from None


class PCMSource:
    """Raw interleaved PCM from a binary stream (stdin by default): ``dtype`` int16, int32 or float32."""

    def __init__(self, stream: BinaryIO | None = None, sample_rate: int = 16000, channels: int = 1,
                 dtype: str = "int16", chunk_s: float = 0.1):
        if dtype not in ("int16", "int32", "float32"):
            raise ValueError(f"raw PCM dtype must be int16, int32 or float32 (got {dtype!r})")
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.sample_rate, self.channels, self.dtype = sample_rate, channels, np.dtype(dtype)
        self.chunk_s, self.overflows, self.name = chunk_s, 0, "stdin"

    def _blocks(self, want: int) -> Iterator[bytes]:
        """Blocks of ``want`` bytes until the end of the stream (the last may be shorter). A descriptor is
        waited on in ``select`` polls of ``POLL_S``, so a Ctrl-C that lands just before a read is acted on
        within a poll rather than at the next audio; ``read1`` never reads ahead, so no byte waits unseen in
        the stream's buffer while ``select`` waits on the descriptor."""
        read = getattr(self.stream, "read1", self.stream.read)
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream never blocks
            fd = None
        data, more = b"", read(want)  # the first read also returns what the stream object buffered before
        while more:
            data += more
            if len(data) == want:
                yield data
                data = b""
            while fd is not None and not select.select([fd], [], [], POLL_S)[0]:
                pass
            more = read(want - len(data))
        if data:
            yield data

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        frame_bytes = self.dtype.itemsize * self.channels
        want = max(1, int(self.chunk_s * self.sample_rate)) * frame_bytes
        rest = b""
        for data in self._blocks(want):
            data = rest + data
            usable = len(data) // frame_bytes * frame_bytes
            rest = data[usable:]
            pcm = pcm_to_float(np.frombuffer(data[:usable], self.dtype).reshape(-1, self.channels))
            yield pcm.mean(axis=1), self.sample_rate


def _sounddevice():
    try:
        import sounddevice
    except OSError as err:  # the PortAudio library is missing
        raise RuntimeError(f"no audio input: PortAudio is not installed ({err}); install libportaudio2, or read "
                           f"a file or stdin instead of the microphone") from None
    return sounddevice


def input_devices() -> list[dict]:
    """The audio input devices PortAudio sees: ``[{"index", "name", "channels", "default_rate"}]``."""
    sd = _sounddevice()
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_rate": int(d["default_samplerate"])}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


class MicrophoneSource:
    """Audio from an input device through ``sounddevice``, at 16 kHz when the device takes it, else at its
    default rate (the spotter resamples). Buffers the device dropped are counted in ``overflows``.

    A device that delivers nothing for ``gap_s`` seconds (``start_s`` before its first block: opening a
    stream may take a while) is reported as an error rather than waited on for ever."""

    start_s = 10.0
    gap_s = 2.0

    def __init__(self, device: int | str | None = None, sample_rate: int = 16000, chunk_s: float = 0.1,
                 max_seconds: float | None = None):
        sd = self._sd = _sounddevice()
        if not input_devices():
            raise RuntimeError("no audio input device found; pass a WAV file or '-' for raw PCM on stdin")
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as err:
            raise RuntimeError(f"audio input device {device!r} not found ({err}); see --list-devices") from None
        self.device, self.name = device, str(info["name"])
        try:
            sd.check_input_settings(device=device, samplerate=sample_rate, channels=1, dtype="float32")
            self.sample_rate = sample_rate
        except sd.PortAudioError:  # the device rejects 16 kHz: record at its own rate
            self.sample_rate = int(info["default_samplerate"])
        self.chunk_s, self.max_seconds, self.overflows = chunk_s, max_seconds, 0
        self._queue: queue.Queue = queue.Queue()

    def _callback(self, data, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        self._queue.put(data[:, 0].copy())

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        block = max(1, int(self.chunk_s * self.sample_rate))
        heard = 0
        with self._sd.InputStream(device=self.device, samplerate=self.sample_rate, channels=1, dtype="float32",
                                  blocksize=block, callback=self._callback):
            while self.max_seconds is None or heard < self.max_seconds * self.sample_rate:
                wait = self.gap_s if heard else self.start_s
                try:
                    chunk = self._queue.get(timeout=wait)
                except queue.Empty:
                    raise RuntimeError(f"the audio device {self.name!r} delivered nothing for {wait:g} s") from None
                heard += len(chunk)
                yield chunk, self.sample_rate
