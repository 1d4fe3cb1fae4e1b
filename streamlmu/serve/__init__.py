"""Keyword spotting as a service: many live audio streams over WebSocket (``streamlmu serve``).

* :mod:`~streamlmu.serve.pool`: ``StreamPool``, the stream slots stepped together in one engine call per tick;
* :mod:`~streamlmu.serve.protocol`: the ``/v1/kws`` messages and close codes (``docs/protocol.md``);
* :mod:`~streamlmu.serve.service`: ``KWSService``, the protocol over a pool, for one process;
* :mod:`~streamlmu.serve.store`: where streams are saved so that another process can resume them;
* :mod:`~streamlmu.serve.app`: the FastAPI routes and the browser page; :mod:`~streamlmu.serve.server`:
  uvicorn; :mod:`~streamlmu.serve.scale`: Ray Serve;
* :mod:`~streamlmu.serve.client`: a Python client.

``app``, ``server``, ``scale`` and ``client`` need the ``serve`` extra (FastAPI, uvicorn, websockets, Ray
Serve); the other modules and this package import none of them.
"""
