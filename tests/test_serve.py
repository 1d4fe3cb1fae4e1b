"""streamlmu serve over real sockets: a uvicorn server in a thread, clients of the websockets library."""
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import websockets

from streamlmu.audio.kws import StreamingKWS
from streamlmu.serve.client import pcm_bytes, stream_audio
from streamlmu.serve.protocol import CLOSE
from streamlmu.serve.server import server
from streamlmu.serve.service import KWSService, ServeOptions
from streamlmu.serve.store import MemoryStore

MODEL = "lmuformer-tiny-synth12-kws"  # the filterbank spotter: the fastest to step
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running(model: str = MODEL, store=None, **options):
    """A server of ``model`` on a free loopback port with ``options``; yields its ws:// base URL and the server."""
    s = server(model, options=ServeOptions(**options), port=0, log_level="warning", store=store)
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not s.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = s.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}", s
    finally:
        s.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def url():
    with running(max_message_bytes=64 * 1024) as (base, _):
        yield base


def expected_events(audio: np.ndarray, rate: int) -> list[tuple]:
    kws = StreamingKWS.from_pretrained(MODEL)
    kws.accept_waveform(audio, rate)
    return [(e.t, e.keyword, round(e.score, 4)) for e in kws.poll_events()]


def heard(result) -> list[tuple]:
    return [(e["t"], e["keyword"], e["score"]) for e in result.events]


def test_concurrent_streams_get_the_events_of_streamingkws(url, demo):
    """Three clients at once, in three formats (int16 at 16 kHz, stereo float32 at 48 kHz, int32): each gets
    the events StreamingKWS gives its (decoded, mono) audio, a ready message and a normal close."""
    audio, rate, _ = demo
    from streamlmu.audio.resample import Resample
    import torch
    audio48 = Resample(rate, 48000)(torch.from_numpy(audio)[None])[0][0].numpy()
    int16 = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    stereo = np.stack([audio48, audio48 * 0.5], axis=1).astype(np.float32)
    int32 = int16.astype(np.int32) << 16

    async def main():
        return await asyncio.gather(
            stream_audio(f"{url}/v1/kws", int16, rate, realtime=False, hello={"level": 1.0}),
            stream_audio(f"{url}/v1/kws", stereo, 48000, chunk_s=0.05, realtime=False),
            stream_audio(f"{url}/v1/kws", int32, rate, chunk_s=0.3, realtime=False, hello={"keywords": ["yes"]}))

    plain, mixed, only_yes = asyncio.run(main())
    expected = expected_events(int16.astype(np.float32) / 32768, rate)
    assert len(expected) >= 3
    assert heard(plain) == expected
    assert heard(mixed) == expected_events(stereo.mean(axis=1), 48000)
    assert heard(only_yes) == [e for e in expected if e[1] == "yes"] != []
    for result, sent in ((plain, len(int16)), (mixed, len(stereo)), (only_yes, len(int32))):
        assert result.ready["type"] == "ready" and not result.ready["resumed"] and result.samples == sent
        assert result.close_code == CLOSE["normal"]
        assert {e["stream"] for e in result.events} <= {result.ready["stream"]}
    assert len(plain.levels) >= 25 and {"t", "level", "top", "top_score"} <= set(plain.levels[0])
    assert not mixed.levels


async def close_of(url: str, first, *then) -> tuple[int, str]:
    """Send ``first`` and ``then`` (text or bytes); the close code and reason the server answers with."""
    async with websockets.connect(url, max_size=None) as socket:
        with contextlib.suppress(websockets.ConnectionClosed):
            await socket.send(first)
            for message in then:
                await socket.send(message)
            async for _ in socket:
                pass
        return socket.close_code, socket.close_reason


HELLO = json.dumps({"sample_rate": 16000, "dtype": "float32"})
NAN = np.zeros(160, np.float32)
NAN[3] = np.nan


@pytest.mark.parametrize("first, then, code, reason", [
    ("not json", (), "invalid", "not JSON"),
    (b"\x00\x01", (), "invalid", "must be JSON text"),
    ('["a"]', (), "invalid", "JSON object"),
    ('{"sample_rate": 16000, "colour": 1}', (), "invalid", "unknown field"),
    ('{"dtype": "int16"}', (), "invalid", "sample_rate must be an integer"),
    ('{"sample_rate": 12345}', (), "unsupported", "12345 Hz is not supported"),
    ('{"sample_rate": 16000, "dtype": "int8"}', (), "unsupported", "dtype 'int8' is not supported"),
    ('{"sample_rate": 16000, "channels": 0}', (), "unsupported", "channels must be"),
    ('{"sample_rate": 16000, "keywords": ["banana"]}', (), "invalid", "unknown keyword"),
    ('{"sample_rate": 16000, "stream": "a b"}', (), "invalid", "stream must be an id"),
    (HELLO, (b"\x00" * 7,), "invalid", "7 bytes is not a multiple of 4"),
    (HELLO, (NAN.tobytes(),), "invalid", "NaN or Inf (sample 3"),
    (HELLO, (b"\x00" * (64 * 1024 + 4),), "too_big", "at most 65536 bytes"),
    (HELLO, ("hello again",), "unsupported", "send binary PCM"),
])
def test_bad_input_gets_a_clear_close_code_and_reason(url, first, then, code, reason):
    got_code, got_reason = asyncio.run(close_of(f"{url}/v1/kws", first, *then))
    assert got_code == CLOSE[code] and reason in got_reason


def test_a_token_is_required_when_the_server_has_one(demo):
    audio, rate, _ = demo
    clip = audio[:rate]
    with running(token="s3cret") as (base, _):
        no_token = asyncio.run(close_of(f"{base}/v1/kws", HELLO))
        wrong = asyncio.run(close_of(f"{base}/v1/kws?token=guess", HELLO))
        by_query = asyncio.run(stream_audio(f"{base}/v1/kws?token=s3cret", clip, rate, realtime=False))
        by_hello = asyncio.run(stream_audio(f"{base}/v1/kws", clip, rate, realtime=False, hello={"token": "s3cret"}))
    for code, reason in (no_token, wrong):
        assert code == CLOSE["policy"] and "a valid token is required" in reason
    for result in (by_query, by_hello):
        assert result.ready is not None and result.close_code == CLOSE["normal"]


def test_too_many_streams_are_refused_and_the_others_go_on(demo):
    audio, rate, _ = demo

    async def main(base):
        first = asyncio.ensure_future(stream_audio(f"{base}/v1/kws", audio[:rate * 3], rate, realtime=True))
        second = asyncio.ensure_future(stream_audio(f"{base}/v1/kws", audio[:rate * 3], rate, realtime=True))
        await asyncio.sleep(1.0)
        refused = await close_of(f"{base}/v1/kws", HELLO)
        return refused, await first, await second

    with running(max_streams=2) as (base, _):
        (code, reason), first, second = asyncio.run(main(base))
    assert code == CLOSE["try_later"] and "maximum of 2 streams" in reason
    assert first.close_code == second.close_code == CLOSE["normal"]


def test_a_busy_server_refuses_new_streams_and_keeps_its_own(demo):
    """With max_busy 0 any stepping makes the server busy: a stream already there goes on to its end and may
    resume, a new one is refused with 1013 and the reason."""
    audio, rate, _ = demo

    async def main(base):
        first = asyncio.ensure_future(stream_audio(f"{base}/v1/kws", audio[:rate * 3], rate, speed=2.0))
        await asyncio.sleep(0.8)
        refused = await close_of(f"{base}/v1/kws", HELLO)
        return refused, await first

    with running(max_busy=0.0) as (base, s):
        (code, reason), first = asyncio.run(main(base))
        busy = s.service.info()["busy"]
    assert code == CLOSE["try_later"] and "the server is busy" in reason
    assert first.close_code == CLOSE["normal"] and first.samples == rate * 3 and busy > 0


def test_a_dropped_stream_resumes_without_a_gap_or_a_duplicate_and_disturbs_no_other(url, demo):
    """One client drops its socket 21.0 s into the recording, in the middle of the word *yes* (20.92-21.14 s),
    and reconnects with its stream id and the time of the last event it saw: its events before and after
    equal StreamingKWS on the whole recording. Another client streaming meanwhile gets exactly its own."""
    audio, rate, _ = demo
    int16 = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    expected = expected_events(int16.astype(np.float32) / 32768, rate)
    cut = int(21.0 * rate)

    async def dropped():
        async with websockets.connect(f"{url}/v1/kws") as socket:
            await socket.send(json.dumps({"sample_rate": rate, "stream": "dropper"}))
            for at in range(0, cut, 1600):
                await socket.send(pcm_bytes(int16[at:min(at + 1600, cut)], "int16"))
            await asyncio.sleep(0.3)
            before = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    before.append(json.loads(await asyncio.wait_for(socket.recv(), 0.5)))
            socket.transport.abort()  # no close handshake: the network went away
        await asyncio.sleep(0.5)
        seen = [e["t"] for e in before if "keyword" in e][-1:]
        result = await stream_audio(f"{url}/v1/kws", int16, rate, realtime=False,  # sent from ready["samples"]
                                    hello={"stream": "dropper", **({"seen": seen[0]} if seen else {})})
        return before, result

    async def main():
        return await asyncio.gather(dropped(), stream_audio(f"{url}/v1/kws", int16, rate, chunk_s=0.08))

    (before, after), other = asyncio.run(main())
    assert before[0]["type"] == "ready" and not before[0]["resumed"]
    assert after.ready["resumed"] and after.ready["samples"] == cut and after.ready["stream"] == "dropper"
    events = [(e["t"], e["keyword"], e["score"]) for e in before if "keyword" in e] + heard(after)
    assert events == expected
    assert heard(other) == expected


def test_a_stream_resumes_on_another_server_from_their_shared_store(demo):
    """Two servers share a store (as Ray replicas do): a stream dropped by one resumes on the other, which
    never held it, from the last record saved; the client sends again from the record's sample count and
    says which event it saw last: no gap, no duplicate."""
    audio, rate, _ = demo
    int16 = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    expected = expected_events(int16.astype(np.float32) / 32768, rate)
    store = MemoryStore()
    cut = int(22.2 * rate)

    async def main(first, second):
        dropped = await stream_audio(f"{first}/v1/kws", int16[:cut], rate, realtime=False, end=False,
                                     hello={"stream": "traveller"})
        await asyncio.sleep(0.6)  # the first server saves it meanwhile
        assert (await store.get("traveller")) is not None
        resumed = await stream_audio(f"{second}/v1/kws", int16, rate, realtime=False, result=dropped)
        return resumed

    with running(store=store, save_s=0.1) as (first, _), running(store=store, save_s=0.1) as (second, _):
        result = asyncio.run(main(first, second))
    assert result.ready["resumed"] and 0 < result.ready["samples"] <= cut
    assert heard(result) == expected


def test_a_client_faster_than_real_time_is_told_and_loses_no_audio(demo):
    """A client sends 1 s messages as fast as it can: it is told once, read at the pace its stream is stepped,
    and loses nothing; a real-time client beside it gets exactly its events."""
    audio, rate, _ = demo
    clip = audio[:int(14 * rate)]  # with the keyword "no" 13.1 s in

    async def main(base):
        return await asyncio.gather(stream_audio(f"{base}/v1/kws", audio, rate, chunk_s=1.0, realtime=False),
                                    stream_audio(f"{base}/v1/kws", clip, rate, speed=2.0))

    with running(max_backlog_s=0.5) as (base, _):
        fast, beside = asyncio.run(main(base))
    assert [w["type"] for w in fast.warnings] == ["warning"] and "real time" in fast.warnings[0]["reason"]
    assert heard(fast) == expected_events(audio, rate) and fast.samples == len(audio)
    assert heard(beside) == expected_events(clip, rate) != [] and not beside.warnings


def test_shutdown_tells_every_stream_and_closes_it_going_away(demo):
    audio, rate, _ = demo

    async def main(base, s):
        client = asyncio.ensure_future(stream_audio(f"{base}/v1/kws", audio, rate, realtime=True))
        await asyncio.sleep(1.5)
        s.should_exit = True
        return await client

    with running() as (base, s):
        result = asyncio.run(main(base, s))
    assert result.close_code == CLOSE["going_away"]
    assert [w["type"] for w in result.warnings] == ["closing"] and "shutting down" in result.warnings[0]["reason"]


def test_the_page_and_the_info_are_served(url):
    http = url.replace("ws://", "http://")
    page = urllib.request.urlopen(f"{http}/").read().decode()
    assert "<html" in page and "/v1/kws" in page
    worklet = urllib.request.urlopen(f"{http}/page/capture.js").read().decode()
    assert "registerProcessor" in worklet
    info = json.loads(urllib.request.urlopen(f"{http}/v1/info").read())
    assert info["sample_rate"] == 16000 and "yes" in info["keywords"] and info["model"] == MODEL
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"{http}/page/missing.js")


class FakeSocket:
    """A WebSocket as KWSService sees it, fed from a list: after ``sendable`` messages its sends block until
    ``reading`` is set (a client that stopped reading: its buffers are full)."""

    def __init__(self, messages: list, sendable: int = 10**9):
        self.incoming, self.sent, self.sendable = list(messages), [], sendable
        self.reading, self.closed, self.more = asyncio.Event(), None, asyncio.Event()

    async def accept(self):
        pass

    async def receive(self) -> dict:
        if not self.incoming:
            await self.more.wait()  # the client sends nothing more, and stays
        message = self.incoming.pop(0)
        return {"type": "websocket.receive", "text" if isinstance(message, str) else "bytes": message}

    async def _wait_to_send(self):
        if len(self.sent) >= self.sendable:
            await self.reading.wait()

    async def send_text(self, text: str):
        await self._wait_to_send()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str):
        await self._wait_to_send()
        self.closed = (code, reason)


def test_a_client_that_stops_reading_is_closed_and_others_go_on(demo):
    """A client asks for a level report every tick and stops reading after three messages: once a message
    has waited 0.3 s to be sent, the service drops its socket, keeps its stream for a resume, and closes it
    with 1008 and the reason as soon as the client reads again. A client served meanwhile gets exactly its
    events."""
    audio, rate, _ = demo
    service = KWSService(StreamingKWS.from_pretrained(MODEL), ServeOptions(stall_s=0.3))
    chunks = [pcm_bytes(audio[at:at + 1600], "float32") for at in range(0, len(audio), 1600)]
    stalled = FakeSocket([json.dumps({"sample_rate": rate, "dtype": "float32", "level": 0.01, "stream": "sleepy"}),
                          *chunks[:50]], sendable=3)
    reader = FakeSocket([json.dumps({"sample_rate": rate, "dtype": "float32"}), *chunks, '{"end": true}'])

    async def main():
        stalling = asyncio.ensure_future(service.handle(stalled))
        await service.handle(reader)
        await asyncio.sleep(1.0)
        held = service.streams["sleepy"]
        kicked, outbox = held.kicked, len(held.outbox)
        stalled.reading.set()
        await asyncio.wait_for(stalling, 5.0)
        await service.shutdown()
        return held, kicked, outbox

    held, kicked, waiting = asyncio.run(main())
    assert kicked is not None and held.socket is None and waiting > 0
    assert stalled.closed == kicked and kicked[0] == CLOSE["policy"] and "stopped reading" in kicked[1]
    assert [(m["t"], m["keyword"], m["score"]) for m in reader.sent if "keyword" in m] == expected_events(audio, rate)
    assert reader.closed == (CLOSE["normal"], "end of stream")


def test_the_command_serves_until_ctrl_c_and_the_load_benchmark_runs(tmp_path):
    """bench/serve.py starts `streamlmu serve` as a process, streams two clients through it and stops it with
    Ctrl-C; both clients get the events of StreamingKWS and the server takes every sample."""
    out = tmp_path / "serve.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "serve.py"), "--streams", "2", "--models", MODEL,
                             "--servers", "embedded", "--seconds", "14", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    row, = json.loads(out.read_text())["runs"]
    assert row["exact_streams"] == row["closed_normally"] == 2 and row["dropped_samples"] == 0
    assert row["events"] == 2 and row["latency_p50_ms"] is not None  # "no", 13.1 s in, on each stream
