"""The HTTP and WebSocket routes of ``streamlmu serve`` (FastAPI): one app for uvicorn and for Ray Serve.

* ``GET /``: the browser page (microphone, level meter, top label, events), plain HTML and JavaScript;
* ``GET /v1/info``: the spotter (labels, keywords, rate) and the streams held;
* ``WS /v1/kws``: one stream per socket, the protocol of :mod:`streamlmu.serve.protocol`.

No ``from __future__ import annotations`` here: with it, Ray Serve's WebSocket routes answer HTTP 403.
"""
import contextlib
from importlib import resources
from typing import Optional

from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response

from streamlmu.audio.kws import StreamingKWS
from streamlmu.serve.service import KWSService, ServeOptions
from streamlmu.serve.store import StateStore

PAGE = resources.files("streamlmu.serve") / "page"
_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def spotter(model: str, keywords: Optional[tuple] = None, threshold: Optional[float] = None,
            threads: int = 1) -> StreamingKWS:
    """The spotter a server shares among its streams: a bundled model name or a checkpoint file; ``threads``:
    of its speech-embedding front end, if it has one."""
    options = {} if threshold is None else {"threshold": threshold}
    kws = StreamingKWS.from_pretrained(model, keywords=keywords, threads=threads, **options)
    kws.model_name = str(model)
    return kws


def create_app(kws: StreamingKWS, options: ServeOptions = ServeOptions(), store: Optional[StateStore] = None
               ) -> FastAPI:
    """The app serving ``kws`` to every client, saving streams to ``store`` if given (see
    :mod:`streamlmu.serve.store`); the service is ``app.state.service``."""
    service = KWSService(kws, options, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await service.shutdown()

    app = FastAPI(title="streamlmu keyword spotting", lifespan=lifespan)
    app.state.service = service

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Response:
        return Response((PAGE / "index.html").read_bytes(), media_type=_MEDIA[".html"])

    @app.get("/page/{name}")
    async def page_file(name: str) -> Response:
        path = PAGE / name
        suffix = "." + name.rsplit(".", 1)[-1]
        if "/" in name or suffix not in _MEDIA or not path.is_file():
            return JSONResponse({"error": f"no page file {name!r}"}, status_code=404)
        return Response(path.read_bytes(), media_type=_MEDIA[suffix])

    @app.get("/v1/info")
    async def info() -> dict:
        return service.info()

    @app.websocket("/v1/kws")
    async def kws_stream(websocket: WebSocket, token: Optional[str] = None) -> None:
        await service.handle(websocket, token)

    return app
