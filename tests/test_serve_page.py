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
    audio, rate, _ = demo
    alone = StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL)
    alone.accept_waveform(audio, rate)
    expected = [e.keyword for e in alone.poll_events()]
    assert len(expected) >= 3
    seconds = len(audio) / rate

    async def watch(devtools_url: str) -> tuple[list, str, bytes]:
        async with websockets.connect(devtools_url, max_size=None) as socket:
            page = DevTools(socket)
            start, keywords = time.monotonic(), []
            while time.monotonic() - start < seconds + 15 and len(keywords) < len(expected):
                await asyncio.sleep(1.0)
                keywords = await page.evaluate(EVENTS)
            await asyncio.sleep(1.0)
            keywords = await page.evaluate(EVENTS)
            status = await page.evaluate("document.getElementById('status').textContent")
            shot = (await page.call("Page.captureScreenshot", format="png"))["data"]
            return keywords, status, base64.b64decode(shot)

    with running(model=DEFAULT_KWS_MODEL) as (base, _):
        browser, devtools_url = open_browser(base.replace("ws://", "http://") + "/?autostart=1", tmp_path / "profile")
        try:
            keywords, status, png = asyncio.run(watch(devtools_url))
        finally:
            browser.kill()
            browser.wait()
    (tmp_path / "page.png").write_bytes(png)
    print(f"screenshot: {tmp_path / 'page.png'}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert status.startswith("listening"), status
    assert keywords == expected
