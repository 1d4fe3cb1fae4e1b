"""The browser page in a real browser: headless Chromium plays the bundled demo recording into a fake
microphone, the page streams it to a live server, and the keywords must appear on the page in order."""
import asyncio
import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import websockets

from streamlmu.audio.kws import StreamingKWS
from streamlmu.pretrained import DEFAULT_KWS_MODEL, DEMO_RECORDING
from test_serve import running


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is missing: scripts/setup.sh (run by make test) installs it"
    return path


class DevTools:
    """The Chrome DevTools protocol of one page: evaluate JavaScript, take a screenshot."""

    def __init__(self, socket):
        self.socket, self.next_id = socket, 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") == self.next_id:
                return reply["result"]

    async def evaluate(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"]["value"]


def open_browser(url: str, profile) -> tuple[subprocess.Popen, str]:
    """Headless Chromium on ``url`` with the demo recording as its microphone; the page's DevTools socket."""
    browser = subprocess.Popen(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         f"--use-file-for-fake-audio-capture={DEMO_RECORDING}%noloop", "--autoplay-policy=no-user-gesture-required",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    for line in browser.stderr:
        found = re.search(r"DevTools listening on ws://([\d.:]+)/", line)
        if found:
            break
        assert time.monotonic() < deadline, "Chromium did not start its DevTools server"
    else:
        raise AssertionError(f"Chromium exited ({browser.wait()}) before its DevTools server started")
    while True:
        targets = json.loads(urllib.request.urlopen(f"http://{found.group(1)}/json/list").read())
        pages = [t for t in targets if t["type"] == "page" and t["url"].startswith(url.split("?")[0])]
        if pages:
            return browser, pages[0]["webSocketDebuggerUrl"]
        assert time.monotonic() < deadline, f"no page for {url} among {targets}"
        time.sleep(0.2)


EVENTS = "[...document.querySelectorAll('#events li')].map((li) => li.dataset.keyword).reverse()"


def test_the_page_spots_the_demo_keywords_in_a_real_browser(demo, tmp_path):
    """The page streams what the browser's microphone hears and shows the spotter's events on it, in order.

    The reference is the spotter alone on the audio the server received: the fake microphone starts playing
    before the page streams, and the spotter's events depend on where a recording starts (the demo's first
    word, *left*, is found from its start but not from 0.3 s in). That audio must be the recording (the
    browser resamples it twice on the way)."""
    import torch
    from scipy import signal
    from streamlmu.audio.features import fbank
    audio, rate, _ = demo
    seconds = len(audio) / rate

    async def watch(devtools_url: str, received: list) -> tuple[list, str, bytes]:
        async with websockets.connect(devtools_url, max_size=None) as socket:
            page = DevTools(socket)
            start = time.monotonic()
            while time.monotonic() - start < seconds + 15 and sum(map(len, received)) < 0.95 * len(audio):
                await asyncio.sleep(1.0)
            await asyncio.sleep(2.0)  # the last ticks and their events
            keywords = await page.evaluate(EVENTS)
            status = await page.evaluate("document.getElementById('status').textContent")
            shot = (await page.call("Page.captureScreenshot", format="png"))["data"]
            return keywords, status, base64.b64decode(shot)

    with running(model=DEFAULT_KWS_MODEL) as (base, s):
        received, push = [], s.service.pool.push

        def recording_push(slot: int, samples: np.ndarray) -> None:
            received.append(np.array(samples, dtype=np.float32))
            push(slot, samples)
        s.service.pool.push = recording_push
        browser, devtools_url = open_browser(base.replace("ws://", "http://") + "/?autostart=1", tmp_path / "profile")
        try:
            keywords, status, png = asyncio.run(watch(devtools_url, received))
        finally:
            browser.kill()
            browser.wait()
    (tmp_path / "page.png").write_bytes(png)
    print(f"screenshot: {tmp_path / 'page.png'}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert status.startswith("listening"), status

    heard = np.concatenate(received)
    assert len(heard) >= 0.9 * len(audio), f"the page streamed {len(heard) / rate:.1f} s of {seconds:.1f} s"
    # Where 5 s of the recording lie in what was heard, and that they are the recording: their log-mel spectra
    # agree (0.95 seen; against another 5 s of the recording 0.26), as samples do not after the browser's
    # resampling shifts them by a fraction of a sample.
    part = audio[rate:6 * rate]
    lag = int(np.argmax(signal.correlate(heard[:8 * rate], part, mode="valid")))
    spectra = [fbank(torch.from_numpy(x.copy())).flatten() for x in (heard[lag:lag + len(part)], part)]
    assert np.corrcoef(*spectra)[0, 1] > 0.9
    alone = StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL)
    alone.accept_waveform(heard, rate)
    expected = [e.keyword for e in alone.poll_events()]
    assert len(expected) >= 2 and set(expected) <= {"left", "no", "yes", "go"}
    assert keywords == expected
