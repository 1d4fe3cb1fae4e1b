"""``streamlmu serve --ray``: the app of :mod:`streamlmu.serve.app` as a Ray Serve deployment.

Each replica is one process with its own :class:`streamlmu.serve.service.KWSService` (its own pool: a
WebSocket stays on the replica it reached for its whole life). Replicas save their streams every second to
one named Ray actor (``StreamStates``), so when a replica dies its clients reconnect through the proxy
to another replica and resume (:mod:`streamlmu.serve.store`). Ray Serve scales the replicas between
``min_replicas`` and ``replicas`` on open streams per replica (a WebSocket counts as one ongoing request).
"""
from __future__ import annotations

import sys
import time

import ray
from ray import serve

from streamlmu.serve.service import ServeOptions
from streamlmu.serve.records import ExpiringRecords

STORE_NAME, NAMESPACE = "streamlmu-kws-states", "streamlmu"
APP_NAME = "streamlmu-kws"


# The stream records of every replica: one actor in the cluster. Its class lives in a module that imports no
# torch, so the actor process stays small.
StreamStates = ray.remote(num_cpus=0)(ExpiringRecords)


class RayStore:
    """The ``StreamStates`` actor as a :class:`streamlmu.serve.store.StateStore` of a replica."""

    def __init__(self, actor):
        self.actor = actor

    async def put(self, records: dict[str, bytes]) -> None:
        await self.actor.put.remote(records)

    async def get(self, stream: str) -> bytes | None:
        return await self.actor.get.remote(stream)

    async def drop(self, stream: str) -> None:
        await self.actor.drop.remote(stream)


def application(model: str, keywords: tuple[str, ...] | None = None, threshold: float | None = None,
                options: ServeOptions = ServeOptions(), replicas: int = 2, min_replicas: int = 1,
                streams_per_replica: int = 64):
    """The Ray Serve application (bound, not running); the ``StreamStates`` actor must exist."""
    if not 1 <= min_replicas <= replicas:
        raise ValueError(f"need 1 <= min_replicas <= replicas (got {min_replicas} and {replicas})")

    def build():
        import torch
        from streamlmu.serve.app import create_app, spotter
        torch.set_num_threads(1)
        store = RayStore(ray.get_actor(STORE_NAME, namespace=NAMESPACE))
        return create_app(spotter(model, keywords, threshold), options, store)

    deployment = serve.deployment(
        serve.ingress(build)(), name="kws", ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=options.max_streams,
        autoscaling_config={"min_replicas": min_replicas, "initial_replicas": replicas, "max_replicas": replicas,
                            "target_ongoing_requests": streams_per_replica})
    return deployment.bind()


def start(model: str, keywords: tuple[str, ...] | None = None, threshold: float | None = None,
          options: ServeOptions = ServeOptions(), host: str = "127.0.0.1", port: int = 8000, replicas: int = 2,
          min_replicas: int = 1, address: str | None = None) -> None:
    """Start Ray (or join ``address``), the store actor and the application on ``host:port``; returns once
    every replica is up."""
    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    StreamStates.options(name=STORE_NAME, namespace=NAMESPACE, lifetime="detached",
                         get_if_exists=True).remote(options.grace_s + 2 * options.save_s)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(model, keywords, threshold, options, replicas, min_replicas), name=APP_NAME,
              route_prefix="/")


def stop() -> None:
    """Shut the application and the store down (Ray itself stays up if it was joined)."""
    serve.shutdown()
    try:
        ray.kill(ray.get_actor(STORE_NAME, namespace=NAMESPACE))
    except ValueError:
        pass


def run_ray(model: str, keywords: tuple[str, ...] | None, threshold: float | None, options: ServeOptions,
            host: str, port: int, replicas: int, min_replicas: int, address: str | None) -> int:
    start(model, keywords, threshold, options, host, port, replicas, min_replicas, address)
    print(f"streamlmu serve --ray: {model} on {replicas} replica(s) at http://{host}:{port}/ and "
          f"ws://{host}:{port}/v1/kws; Ctrl-C stops", file=sys.stderr)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
