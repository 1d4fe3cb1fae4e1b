"""The streams of one server process: ``KWSService`` runs the WebSocket protocol of
:mod:`streamlmu.serve.protocol` over a :class:`streamlmu.serve.pool.StreamPool`.

One asyncio task steps the pool whenever some stream has a tick of audio (the engine call runs in a worker
thread, so sockets keep being read meanwhile) and hands each stream's events to its outbox; each connection
has a sender task that drains its outbox in order. A stream whose socket drops keeps its slot, its waiting
audio and its last events for ``grace_s`` seconds: a client that reconnects with its stream id resumes it
(the state rows live in this process's pool): it gets the events after the last one it says it saw, and the
``ready`` message says how many samples the server has consumed, so it sends on from there.

Framework-free apart from the WebSocket object (Starlette's, as FastAPI and Ray Serve hand it over).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from streamlmu.audio.kws import StreamingKWS
from streamlmu.serve.pool import DEFAULT_TICK_S, StreamPool
from streamlmu.serve.protocol import CLOSE, Hello, ProtocolError, decode_pcm, parse_hello
from streamlmu.serve.store import StateStore, StreamRecord

log = logging.getLogger(__name__)
RECENT_EVENTS = 64  # events a stream keeps to send again to a client that resumes
BUSY_WINDOW_S = 2.0  # how far back the stepping loop's busy share looks


@dataclass(frozen=True)
class ServeOptions:
    """Limits and policies of a server (all per process).

    ``max_streams``: streams held at once (connected or waiting for a reconnect); ``max_busy``: the share of
    its time the stepping loop may spend stepping (over the last seconds) and still take new streams (a
    server near it cannot keep one more stream in real time); ``max_message_bytes``: the
    largest binary message; ``max_backlog_s``: audio a stream may have waiting before the server stops
    reading its socket (it is told once); ``max_outbox`` and ``stall_s``: a client that does not read is
    closed once that many messages wait for it, or a message has waited that long to be sent; ``grace_s``: how
    long a dropped stream waits for its client; ``save_s``: how often streams are saved to the service's
    store, if it has one; ``token``: the secret clients must give (the ``token`` query parameter or hello
    field), None: none."""

    max_streams: int = 256
    max_busy: float = 0.9
    max_message_bytes: int = 1 << 20
    max_backlog_s: float = 5.0
    max_outbox: int = 1000
    stall_s: float = 10.0
    grace_s: float = 30.0
    tick_s: float = DEFAULT_TICK_S
    save_s: float = 1.0
    token: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_message_bytes", "max_outbox"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0 <= self.max_busy <= 1:
            raise ValueError(f"max_busy must be a share of the time, from 0 to 1 (got {self.max_busy})")
        for name in ("max_backlog_s", "stall_s", "grace_s", "tick_s", "save_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds (got {getattr(self, name)})")


@dataclass
class _Stream:
    id: str
    slot: int
    hello: Hello
    keywords: frozenset[str]
    outbox: deque = field(default_factory=deque)
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # set when the outbox has something
    consumed: int = 0  # samples (at the client's rate) taken from the client's messages
    next_level: float = 0.0
    socket: object | None = None
    dropped_at: float | None = None
    warned: bool = False
    ending: asyncio.Future | None = None  # set by {"end": true}; done once the last audio is stepped
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))  # the last events, sent or not
    seen: float = -1.0  # events up to this stream time were received by the client already
    saved: int = -1  # consumed when last saved to the store
    sending_since: float | None = None  # when the message being sent now was handed to the socket
    receiver: asyncio.Task | None = None  # the task reading the client's messages
    kicked: tuple[int, str] | None = None  # the close code and reason of a client that stopped reading

    def put(self, message: dict) -> None:
        if "keyword" in message:
            if message["t"] <= self.seen:
                return
            self.recent.append(message)
        self.outbox.append(json.dumps(message))
        self.sent.set()

    def resume(self, seen: float | None) -> None:
        """A client is back, having received the events up to stream time ``seen`` (None: it does not say): the
        outbox becomes the recent events after ``seen``, whether or not they were sent before."""
        self.seen, self.sending_since, self.kicked = (-1.0 if seen is None else seen), None, None
        self.outbox = deque(json.dumps(e) for e in self.recent if e["t"] > self.seen)


class KWSService:
    """Keyword spotting for every stream of one process (see the module docstring).

    ``kws``: the spotter whose model and detector settings every stream shares (no verifier); ``store``: where
    streams are saved for other processes to resume (:mod:`streamlmu.serve.store`; None: only here)."""

    def __init__(self, kws: StreamingKWS, options: ServeOptions = ServeOptions(), store: StateStore | None = None):
        self.kws, self.options, self.store = kws, options, store
        self._saving: asyncio.Task | None = None
        self._saved_at = 0.0
        self.pool = StreamPool(kws, options.tick_s, capacity=min(options.max_streams, 64))
        self.streams: dict[str, _Stream] = {}
        self._by_slot: dict[int, _Stream] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self.closing = False
        self.ticks = 0
        self._busy, self._busy_at = 0.0, time.monotonic()

    # ------------------------------------------------------------ info
    def info(self) -> dict:
        features = self.kws.features
        return {"model": getattr(self.kws, "model_name", None), "labels": list(self.kws.labels),
                "keywords": list(self.kws.keywords), "sample_rate": features.sample_rate,
                "frame_shift_ms": features.frame_shift_ms, "tick_s": self.pool.tick_samples / features.sample_rate,
                "streams": len(self.streams), "connected": sum(s.socket is not None for s in self.streams.values()),
                "max_streams": self.options.max_streams, "ticks": self.ticks, "busy": round(self.busy, 3)}

    @property
    def busy(self) -> float:
        """The share of the last seconds the stepping loop spent stepping (an exponential average over
        ``BUSY_WINDOW_S``)."""
        return self._busy * math.exp(-(time.monotonic() - self._busy_at) / BUSY_WINDOW_S)

    def _count_busy(self, seconds: float) -> None:
        self._busy = self.busy + seconds / BUSY_WINDOW_S
        self._busy_at = time.monotonic()

    # ------------------------------------------------------------ the stepping loop
    def _start(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self.closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.options.tick_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._step()
            except Exception:  # one bad step must not stall every stream
                log.exception("stepping the streams failed")

    async def _step(self) -> None:
        """One tick of the pool (in a worker thread), its events delivered; then the streams that end or were
        dropped too long ago leave (between ticks, so no tick in flight holds their rows)."""
        started = time.perf_counter()
        events = await asyncio.to_thread(self.pool.tick)
        if events is not None:
            self._count_busy(time.perf_counter() - started)
            self.ticks += 1
            for slot, found in events.items():
                stream = self._by_slot.get(slot)
                if stream is not None:
                    self._deliver(stream, found)
            if self.pool.ready():
                self._wake.set()
        now = time.monotonic()
        for stream in list(self.streams.values()):
            if stream.ending is not None and self.pool.waiting(stream.slot) < self.pool.tick_samples:
                self._remove(stream)
                self._deliver(stream, self.pool.flush(stream.slot), level=False)
                stream.put({"type": "end", "samples": stream.consumed})
                stream.ending.set_result(None)
            elif stream.dropped_at is not None and now - stream.dropped_at > self.options.grace_s:
                self._remove(stream)
                self.pool.close(stream.slot)
            else:
                self._check_reading(stream)
        if self.store is not None and now - self._saved_at >= self.options.save_s and \
                (self._saving is None or self._saving.done()):
            self._saved_at = now
            records = self._records()
            if records:
                self._saving = asyncio.get_running_loop().create_task(self.store.put(records))

    def _records(self) -> dict[str, bytes]:
        """Records of every stream that heard audio since its last save: made here, between ticks, while no
        tick holds audio that is neither in a state nor waiting."""
        records = {}
        for stream in self.streams.values():
            if stream.consumed != stream.saved and stream.ending is None:
                records[stream.id] = self._record(stream).to_bytes()
                stream.saved = stream.consumed
        return records

    def _record(self, stream: _Stream) -> StreamRecord:
        hello = {k: v for k, v in asdict(stream.hello).items() if k not in ("token", "seen")}
        return StreamRecord(self.pool.snapshot(stream.slot), stream.consumed, hello, sorted(stream.keywords),
                            [json.dumps(e) for e in stream.recent], stream.next_level)

    def _resumed(self, record: StreamRecord, hello: Hello, socket) -> _Stream:
        """A stream saved by another process, in a new slot here."""
        slot = self.pool.open(state=record.state)
        saved = Hello(**record.hello)
        stream = _Stream(hello.stream, slot, saved, frozenset(record.keywords), consumed=record.consumed,
                         next_level=record.next_level, socket=socket, saved=record.consumed)
        stream.recent.extend(json.loads(e) for e in record.recent)
        stream.resume(hello.seen)
        self.streams[stream.id] = self._by_slot[slot] = stream
        return stream

    def _deliver(self, stream: _Stream, events: list, level: bool = True) -> None:
        for event in events:
            if event.keyword in stream.keywords:
                stream.put({**event.to_dict(), "stream": stream.id})
        if level and stream.hello.level:
            now = self.pool.stream_time(stream.slot)
            peak = self.pool.take_peak(stream.slot) if now >= stream.next_level else None
            if peak is not None and len(stream.outbox) < self.options.max_outbox // 2:
                top, score = self.pool.top(stream.slot)
                stream.put({"t": round(now, 3), "level": round(20 * float(np.log10(max(peak, 1e-6))), 1),
                            "top": top, "top_score": round(score, 4)})
                stream.next_level = now + stream.hello.level

    def _check_reading(self, stream: _Stream) -> None:
        """Close the socket of a client that does not read (too many messages wait, or one has waited too long);
        its stream stays for ``grace_s`` like any dropped stream."""
        blocked = 0.0 if stream.sending_since is None else time.monotonic() - stream.sending_since
        if stream.socket is None or (len(stream.outbox) <= self.options.max_outbox and blocked <= self.options.stall_s):
            return
        stream.socket, stream.dropped_at = None, time.monotonic()
        stream.kicked = (CLOSE["policy"], f"the client stopped reading ({len(stream.outbox)} messages wait, for "
                                          f"{blocked:.0f} s); resume stream {stream.id} within "
                                          f"{self.options.grace_s:g} s")
        stream.receiver.cancel()

    def _remove(self, stream: _Stream) -> None:
        """Forget ``stream`` here and in the store (its slot stays open: the caller closes or flushes it)."""
        self.streams.pop(stream.id, None)
        self._by_slot.pop(stream.slot, None)
        if self.store is not None:
            asyncio.get_running_loop().create_task(self.store.drop(stream.id))

    # ------------------------------------------------------------ one connection
    async def handle(self, socket, token: str | None = None) -> None:
        """Serve one WebSocket connection (accepted here) until it ends; ``token``: one given out of band
        (the URL's query)."""
        await socket.accept()
        if self.closing:
            await _close(socket, CLOSE["going_away"], "the server is shutting down")
            return
        self._start()
        try:
            first = await socket.receive()
            if first["type"] == "websocket.disconnect":
                return
            hello = parse_hello(first.get("text") if first.get("text") is not None else first.get("bytes"),
                                self.kws.labels)
            self._check_token(token or hello.token)
            stream, resumed = await self._attach(hello, socket)
        except ProtocolError as err:
            await _close(socket, err.code, err.reason)
            return
        ready = {"type": "ready", "stream": stream.id, "sample_rate": hello.sample_rate,
                 "keywords": sorted(stream.keywords, key=self.kws.labels.index), "resumed": resumed,
                 "samples": stream.consumed}
        stream.outbox.appendleft(json.dumps(ready))  # before the events kept while it was away
        stream.sent.set()
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._send(stream, socket))
        stream.receiver = receiver = loop.create_task(self._receive(stream, socket))
        try:
            await receiver
        except ProtocolError as err:
            await self._drain(stream, socket, sender)
            await _close(socket, err.code, err.reason)
        except asyncio.CancelledError:
            if stream.kicked is None or not receiver.cancelled():
                raise
            sender.cancel()  # the close frame waits behind what the client has not read: as long as the grace
            await _close(socket, *stream.kicked, timeout=self.options.grace_s)
        finally:
            sender.cancel()
            receiver.cancel()
            if stream.socket is socket:
                stream.socket, stream.dropped_at = None, time.monotonic()

    def _check_token(self, given: str | None) -> None:
        expected = self.options.token
        if expected is not None and (given is None or not hmac.compare_digest(given.encode(), expected.encode())):
            raise ProtocolError(CLOSE["policy"], "a valid token is required (the token query parameter or the "
                                                 "hello's token field)")

    async def _attach(self, hello: Hello, socket) -> tuple[_Stream, bool]:
        if hello.stream is not None and hello.stream not in self.streams and self.store is not None:
            data = await self.store.get(hello.stream)
            if data is not None and hello.stream not in self.streams:
                record = StreamRecord.from_bytes(data)
                self._check_format(hello, Hello(**record.hello))
                self._check_room()
                return self._resumed(record, hello, socket), True
        if hello.stream is not None and hello.stream in self.streams:
            stream = self.streams[hello.stream]
            if stream.socket is not None:
                raise ProtocolError(CLOSE["policy"], f"stream {hello.stream} is connected already")
            self._check_format(hello, stream.hello)
            stream.socket, stream.dropped_at, stream.warned = socket, None, False
            stream.resume(hello.seen)
            return stream, True
        self._check_room()
        keywords = frozenset(hello.keywords if hello.keywords is not None else self.kws.keywords)
        slot = self.pool.open(hello.sample_rate)
        stream = _Stream(hello.stream or uuid.uuid4().hex[:12], slot, hello, keywords, socket=socket)
        self.streams[stream.id] = self._by_slot[slot] = stream
        return stream, False

    def _check_room(self) -> None:
        """Refuse a stream this process has no room for: its maximum of streams, or an engine that is busy."""
        if len(self.streams) >= self.options.max_streams:
            raise ProtocolError(CLOSE["try_later"], f"the server holds its maximum of {self.options.max_streams} "
                                                    f"streams; try again later")
        if self.busy > self.options.max_busy:
            raise ProtocolError(CLOSE["try_later"], f"the server is busy ({self.busy:.0%} of its time stepping "
                                                    f"{len(self.streams)} streams); try again later")

    @staticmethod
    def _check_format(hello: Hello, held: Hello) -> None:
        if (hello.sample_rate, hello.dtype, hello.channels) != (held.sample_rate, held.dtype, held.channels):
            raise ProtocolError(CLOSE["invalid"], f"stream {hello.stream} carries {held.sample_rate} Hz {held.dtype} "
                                                  f"x {held.channels}: resume it in that format")

    async def _receive(self, stream: _Stream, socket) -> None:
        limit = self.options.max_message_bytes
        backlog = int(self.options.max_backlog_s * self.kws.features.sample_rate)
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                await self._finish(stream, message.get("text"))
                await self._drain(stream, socket, None)
                await _close(socket, CLOSE["normal"], "end of stream")
                return
            if len(data) > limit:
                raise ProtocolError(CLOSE["too_big"], f"a message may hold at most {limit} bytes (got {len(data)})")
            audio = decode_pcm(data, stream.hello)
            self.pool.push(stream.slot, audio)
            stream.consumed += len(audio)
            if self.pool.waiting(stream.slot) >= self.pool.tick_samples:
                self._wake.set()
            if self.pool.waiting(stream.slot) > backlog:
                if not stream.warned:
                    stream.put({"type": "warning", "reason": f"more than {self.options.max_backlog_s:g} s of audio "
                                                             f"waits: reading slows to real time"})
                    stream.warned = True
                while self.pool.waiting(stream.slot) > backlog // 2 and not self.closing:
                    await asyncio.sleep(self.options.tick_s)

    async def _finish(self, stream: _Stream, text: str | None) -> None:
        """The end of a stream: the stepping loop steps its whole ticks, then the rest, and forgets it."""
        try:
            end = json.loads(text or "").get("end") is True
        except (ValueError, AttributeError):
            end = False
        if not end:
            raise ProtocolError(CLOSE["unsupported"], 'after the hello, send binary PCM, or {"end": true} to finish')
        stream.ending = asyncio.get_running_loop().create_future()
        self._wake.set()
        await stream.ending

    async def _send(self, stream: _Stream, socket) -> None:
        while True:
            await stream.sent.wait()
            stream.sent.clear()
            while stream.outbox and stream.socket is socket:
                stream.sending_since = time.monotonic()
                await socket.send_text(stream.outbox[0])
                stream.sending_since = None
                stream.outbox.popleft()

    async def _drain(self, stream: _Stream, socket, sender: asyncio.Task | None, timeout: float = 2.0) -> None:
        """Send what waits in the outbox (the sender task stops first)."""
        if sender is not None:
            sender.cancel()
        try:
            async with asyncio.timeout(timeout):
                while stream.outbox:
                    await socket.send_text(stream.outbox[0])
                    stream.outbox.popleft()
        except (TimeoutError, RuntimeError, OSError):
            pass

    # ------------------------------------------------------------ shutdown
    async def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Tell every connected client, close its socket (1001) and stop stepping."""
        self.closing = True
        for stream in list(self.streams.values()):
            socket = stream.socket
            if socket is not None:
                stream.socket = None
                stream.put({"type": "closing", "reason": reason})
                await self._drain(stream, socket, None, timeout=1.0)
                await _close(socket, CLOSE["going_away"], reason)
        if self._runner is not None:
            self._wake.set()
            await asyncio.gather(self._runner, return_exceptions=True)


async def _close(socket, code: int, reason: str, timeout: float = 1.0) -> None:
    """Close ``socket`` with ``code`` and ``reason`` (cut to the protocol's 123 bytes); a socket that is gone
    or does not take the close frame within ``timeout`` seconds is left to the server."""
    data = reason.encode()[:123].decode(errors="ignore")
    try:
        await asyncio.wait_for(socket.close(code=code, reason=data), timeout=timeout)
    except (asyncio.TimeoutError, RuntimeError, OSError):
        pass
