"""``streamlmu serve`` in one process: the app of :mod:`streamlmu.serve.app` on uvicorn.

Shutting down (Ctrl-C, SIGTERM) first sends every connected stream a ``closing`` message and closes it with
1001, then lets uvicorn stop (which would otherwise close the sockets with 1012 and no word).
"""
from __future__ import annotations

import sys

import uvicorn

from streamlmu.serve.app import create_app, spotter
from streamlmu.serve.service import KWSService, ServeOptions
from streamlmu.serve.store import StateStore


class Server(uvicorn.Server):
    """A uvicorn server that closes its streams politely before it stops."""

    def __init__(self, config: uvicorn.Config, service: KWSService):
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets=None) -> None:
        await self.service.shutdown()
        await super().shutdown(sockets)


def server(model: str, keywords: tuple[str, ...] | None = None, threshold: float | None = None,
           options: ServeOptions = ServeOptions(), host: str = "127.0.0.1", port: int = 8000,
           log_level: str = "info", store: StateStore | None = None, threads: int = 1) -> Server:
    """A server of ``model`` (not started: ``.run()`` blocks, or run it in a thread and set ``should_exit``);
    ``threads``: of the spotter's speech-embedding front end."""
    app = create_app(spotter(model, keywords, threshold, threads), options, store)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="websockets-sansio",
                            ws_max_size=4 * options.max_message_bytes)  # ours answers first, with the limit
    return Server(config, app.state.service)


def run_server(model: str, keywords: tuple[str, ...] | None, threshold: float | None, options: ServeOptions,
               host: str, port: int, threads: int = 1) -> int:
    s = server(model, keywords, threshold, options, host, port, threads=threads)
    print(f"streamlmu serve: {model} on http://{host}:{port}/ (page) and ws://{host}:{port}/v1/kws",
          file=sys.stderr)
    s.run()
    return 0
