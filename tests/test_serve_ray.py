"""streamlmu serve --ray: the same app on two Ray Serve replicas; a replica killed mid-stream and its
streams resume on the other one without losing or repeating an event."""
import asyncio
import socket

import numpy as np
import pytest

from streamlmu.serve.client import stream_audio
from streamlmu.serve.protocol import CLOSE
from streamlmu.serve.service import ServeOptions
from test_serve import HELLO, MODEL, close_of, expected_events, heard

ray = pytest.importorskip("ray")  # the serve extra, which make test installs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of two CPUs with the app on two replicas; yields its ws:// base URL."""
    from streamlmu.serve import scale
    ray.init(num_cpus=2, namespace=scale.NAMESPACE, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 2**20)
    port = free_port()
    try:
        scale.start(MODEL, options=ServeOptions(save_s=0.25), port=port, replicas=2, min_replicas=2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        scale.stop()
        ray.shutdown()


def replicas() -> list:
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_REPLICA::")]


def test_a_killed_replica_streams_reconnect_and_resume(cluster, demo):
    audio, rate, _ = demo
    int16 = np.round(audio[:int(24.5 * rate)] * 32768).clip(-32768, 32767).astype(np.int16)
    expected = expected_events(int16.astype(np.float32) / 32768, rate)
    assert len(expected) >= 3
    assert len(replicas()) == 2

    async def main():
        clients = [asyncio.ensure_future(stream_audio(f"{cluster}/v1/kws", int16, rate, speed=4.0, reconnect=5))
                   for _ in range(6)]
        await asyncio.sleep(2.5)  # 10 s into the audio: before the first keyword
        victim = replicas()[0]
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        return await asyncio.gather(*clients)

    results = asyncio.run(main())
    assert sum(r.reconnects for r in results) >= 1  # some streams were on the killed replica
    for result in results:
        assert heard(result) == expected
        assert result.close_code == CLOSE["normal"]
        assert result.ready["resumed"] == (result.reconnects > 0)


def test_close_codes_pass_through_the_ray_proxy(cluster):
    code, reason = asyncio.run(close_of(f"{cluster}/v1/kws", '{"sample_rate": 12345}'))
    assert code == CLOSE["unsupported"] and "12345 Hz is not supported" in reason
    code, reason = asyncio.run(close_of(f"{cluster}/v1/kws", HELLO, b"\x00" * 7))
    assert code == CLOSE["invalid"] and "not a multiple of 4" in reason
