"""Load on ``streamlmu serve``: N concurrent real-time clients, embedded (uvicorn) and on Ray Serve.

For each spotter, server and client count N, the server runs as its own process (``streamlmu serve``, or
``streamlmu serve --ray --replicas 2``) on a loopback port; N clients in this process each stream the bundled
demo recording (30 s, 12 words, 3 to 4 of them keywords) at the speed of the audio, in 100 ms messages, starting
at random moments within the first 100 ms, and end with ``{"end": true}``. It reports:

* event latency: from the end of the keyword in the audio (the recording's word times) to the event's arrival
  at the client, p50 and p99 over every event of every client (the model's own decision delay included;
  ``system`` latency: from the event's stream time ``t`` instead, which leaves that delay out);
* dropped audio: samples the clients sent that the server did not take (its end message counts them);
* the finish lag: the longest time from the end of a client's audio to the close of its stream (the last
  events, the end message, the close handshake; the server stops reading a client that is more than 5 s
  ahead of it, so a server that cannot keep up shows here, not as dropped audio);
* whether every client got exactly the events of ``StreamingKWS`` on the same audio;
* CPU: the machine's busy CPU time less this process's (the clients'), per stream and second of audio, and
  the clients' own.

Real time holds for N when no audio is dropped, no finish lags more than 0.5 s and the p99 latency stays
under 1 s. Target (issue 33): >= 200 real-time streams on 2 cores with the bundled spotter, p99 <= 300 ms.

Usage: ``python bench/serve.py [--streams 1,16,64,256] [--models M1,M2] [--servers embedded,ray] [--seconds S]``
Writes ``bench/results/serve.json``; ``bench/report.py`` makes the table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile

from streamlmu.audio.kws import StreamingKWS
from streamlmu.pretrained import DEFAULT_KWS_MODEL, DEMO_RECORDING, DEMO_TRUTH
from streamlmu.serve.client import stream_audio

RESULTS = Path(__file__).resolve().parent / "results"
CLI = Path(sys.executable).with_name("streamlmu")
FBANK_SPOTTER = "lmuformer-tiny-synth12-kws"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_seconds() -> float:
    """CPU seconds the machine has spent busy since boot (all cores, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Server:
    """``streamlmu serve`` in a subprocess until closed."""

    def __init__(self, model: str, kind: str, replicas: int = 2, threads: int = 1):
        self.port = free_port()
        command = [str(CLI), "serve", "--model", model, "--port", str(self.port), "--max-streams", "2048",
                   "--threads", str(threads)]
        if kind == "ray":
            command += ["--ray", "--replicas", str(replicas), "--min-replicas", str(replicas)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/info", timeout=2).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(command)} did not start") from None
                time.sleep(0.5)
        self.url = f"ws://127.0.0.1:{self.port}/v1/kws"

    def close(self) -> None:
        os.killpg(self.process.pid, 2)  # Ctrl-C: closes streams, stops Ray Serve
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


async def _client(url: str, audio: np.ndarray, rate: int, delay: float):
    """One client: its result, and how long after its audio ran out its stream was closed (seconds)."""
    await asyncio.sleep(delay)
    start = time.perf_counter()
    result = await stream_audio(url, audio, rate, chunk_s=0.1, realtime=True, reconnect=0)
    return result, time.perf_counter() - start - len(audio) / rate


def load(url: str, streams: int, audio: np.ndarray, rate: int, truth: list[dict], expected: list[tuple],
         seed: int = 0) -> dict:
    """N clients at once against ``url``; the row of the table."""
    rng = random.Random(seed)

    async def main():
        return await asyncio.gather(*[_client(url, audio, rate, rng.uniform(0, 0.1)) for _ in range(streams)])

    busy, own, wall = busy_seconds(), own_seconds(), time.perf_counter()
    results = asyncio.run(main())
    busy, own, wall = busy_seconds() - busy, own_seconds() - own, time.perf_counter() - wall
    keyword_ends = {w["word"]: w["end"] for w in truth}
    latency, system, exact, dropped, lag = [], [], 0, 0, 0.0
    for result, late in results:
        heard = [(e["t"], e["keyword"], e["score"]) for e in result.events]
        exact += heard == expected
        dropped += len(audio) - (result.samples or 0)
        lag = max(lag, late)
        for e in result.events:
            if e["keyword"] in keyword_ends:
                latency.append(e["received"] - keyword_ends[e["keyword"]])
            system.append(e["received"] - e["t"])
    audio_seconds = streams * len(audio) / rate
    q = (lambda xs, p: float(np.quantile(xs, p)) * 1000 if xs else None)
    row = {"streams": streams, "latency_p50_ms": q(latency, 0.5), "latency_p99_ms": q(latency, 0.99),
           "system_p50_ms": q(system, 0.5), "system_p99_ms": q(system, 0.99), "dropped_samples": int(dropped),
           "finish_lag_s": round(lag, 3), "exact_streams": exact, "events": sum(len(r.events) for r, _ in results),
           "server_cpu_ms_per_stream_s": (busy - own) / audio_seconds * 1000,
           "client_cpu_ms_per_stream_s": own / audio_seconds * 1000, "wall_s": round(wall, 1),
           "closed_normally": sum(r.close_code == 1000 for r, _ in results)}
    row["real_time"] = bool(row["dropped_samples"] == 0 and row["finish_lag_s"] <= 0.5
                            and row["latency_p99_ms"] is not None and row["latency_p99_ms"] <= 1000)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,16,64,256", help="client counts")
    parser.add_argument("--models", default=f"{FBANK_SPOTTER},{DEFAULT_KWS_MODEL}", help="spotters")
    parser.add_argument("--servers", default="embedded,ray", help="embedded, ray (2 replicas)")
    parser.add_argument("--seconds", type=float, default=None, help="stream only the recording's first SECONDS")
    parser.add_argument("--threads", type=int, default=1, help="the embedded server's threads (streamlmu serve "
                                                               "--threads)")
    parser.add_argument("--out", default=str(RESULTS / "serve.json"))
    parser.add_argument("--merge", action="store_true", help="add these rows to those already in --out")
    args = parser.parse_args(argv)
    audio, rate = soundfile.read(DEMO_RECORDING, dtype="int16")
    audio = audio[:None if args.seconds is None else int(args.seconds * rate)]
    truth = json.loads(DEMO_TRUTH.read_text())["words"]
    report = {"machine": {"processor": platform.machine(), "cores": os.cpu_count()},
              "recording_s": len(audio) / rate, "runs": []}
    for model in args.models.split(","):
        alone = StreamingKWS.from_pretrained(model)
        alone.accept_waveform(audio, rate)
        expected = [(e.t, e.keyword, round(e.score, 4)) for e in alone.poll_events()]
        for kind in args.servers.split(","):
            server = Server(model, kind, threads=args.threads)
            try:
                for n in (int(x) for x in args.streams.split(",")):
                    name = f"embedded, {args.threads} thread(s)" if kind == "embedded" else "ray, 2 replicas"
                    row = {"model": model, "server": name,
                           **load(server.url, n, audio, rate, truth, expected)}
                    report["runs"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(args.out).is_file():  # keep the rows of other runs
        done = {(r["model"], r["server"], r["streams"]) for r in report["runs"]}
        report["runs"] = [r for r in json.loads(Path(args.out).read_text())["runs"]
                          if (r["model"], r["server"], r["streams"]) not in done] + report["runs"]
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
