"""The server's stream pool: many asynchronous streams stepped in shared engine calls give each stream the
events of the same audio through StreamingKWS alone."""
import numpy as np
import pytest
import torch

from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.resample import Resample
from streamlmu.serve.pool import SlotState, StreamPool
from streamlmu.stream import load_state, save_state, tree_leaves


def alone(name: str, audio: np.ndarray, rate: int) -> list[tuple]:
    kws = StreamingKWS.from_pretrained(name)
    kws.accept_waveform(audio, rate)
    return [(e.t, e.keyword, round(e.score, 4)) for e in kws.poll_events()]


def run_pool(pool: StreamPool, sources: dict, chunks: dict, starts: dict) -> dict:
    """Feed every slot its audio in its own chunk size from its own start tick; tick after each round; flush."""
    got = {slot: [] for slot in sources}
    pos = {slot: 0 for slot in sources}
    for it in range(10_000):
        for slot, audio in sources.items():
            if it >= starts[slot] and pos[slot] < len(audio):
                pool.push(slot, audio[pos[slot]:pos[slot] + chunks[slot]])
                pos[slot] += chunks[slot]
        for slot, events in (pool.tick() or {}).items():
            got[slot] += events
        if all(pos[s] >= len(a) for s, a in sources.items()) and not pool.ready():
            break
    for slot in sources:
        got[slot] += pool.flush(slot)
    return {slot: [(e.t, e.keyword, round(e.score, 4)) for e in events] for slot, events in got.items()}


@pytest.mark.parametrize("name", ["lmuformer-tiny-synth12-kws", "lmuformer-tiny-phrases12-kws"])
def test_pooled_streams_equal_each_stream_alone(name, demo):
    """Four streams (one at 48 kHz) that start at different ticks and send different chunk sizes: each gets
    exactly the events StreamingKWS gives its audio alone (both front ends: fbank and speech embedding)."""
    audio, rate, _ = demo
    audio48 = Resample(rate, 48000)(torch.from_numpy(audio)[None])[0][0].numpy()
    expected, expected48 = alone(name, audio, rate), alone(name, audio48, 48000)
    assert len(expected) >= 3 and len(expected48) >= 3  # the recording has keywords both spotters find
    pool = StreamPool(StreamingKWS.from_pretrained(name), capacity=2)  # grows while streams open
    slots = [pool.open(), pool.open(), pool.open(), pool.open(48000)]
    sources = dict(zip(slots, [audio, audio, audio, audio48]))
    got = run_pool(pool, sources, dict(zip(slots, [1600, 777, 3000, 4800])), dict(zip(slots, [0, 5, 11, 3])))
    for slot in slots[:3]:
        assert got[slot] == expected
    assert got[slots[3]] == expected48
    assert len(pool) == 0 and pool.capacity >= 4


def test_a_stream_without_audio_keeps_its_state_and_time(demo):
    audio, rate, _ = demo
    pool = StreamPool(StreamingKWS.from_pretrained("lmuformer-tiny-synth12-kws"))
    busy, idle = pool.open(), pool.open()
    pool.push(idle, audio[:pool.tick_samples * 3])
    while pool.tick():
        pass
    before, idle_time = pool.snapshot(idle), pool.stream_time(idle)
    pool.push(busy, audio[:rate * 2])
    while pool.tick():
        pass
    after = pool.snapshot(idle)
    features = pool.features
    assert pool.stream_time(idle) == idle_time == features.num_frames(3 * pool.tick_samples) * features.hop / rate
    assert pool.stream_time(busy) == features.num_frames(rate * 2 // pool.tick_samples * pool.tick_samples) \
        * features.hop / rate
    for a, b in zip(tree_leaves(before), tree_leaves(after)):
        assert torch.equal(a, b)


def test_a_snapshot_resumes_a_stream_in_another_pool(demo, tmp_path):
    """Save a stream's state mid-recording, load it into a new pool's slot: the rest gives the same events."""
    audio, rate, _ = demo
    name = "lmuformer-tiny-synth12-kws"
    expected = alone(name, audio, rate)
    first = StreamPool(StreamingKWS.from_pretrained(name))
    slot = first.open()
    cut = 200 * first.tick_samples + 1000  # 16 s and 1000 samples waiting for the next tick
    before = []
    for at in range(0, cut, 1600):
        first.push(slot, audio[at:min(at + 1600, cut)])
        before += [(e.t, e.keyword, round(e.score, 4)) for e in (first.tick() or {}).get(slot, [])]
    while first.ready():
        before += [(e.t, e.keyword, round(e.score, 4)) for e in first.tick()[slot]]
    assert first.waiting(slot) == 1000
    save_state(first.snapshot(slot), str(tmp_path / "stream.pt"))
    second = StreamPool(StreamingKWS.from_pretrained(name))
    resumed = second.open(state=load_state(str(tmp_path / "stream.pt")))
    after = run_pool(second, {resumed: audio[cut:]}, {resumed: 1600}, {resumed: 0})[resumed]
    assert before == [e for e in expected if e[0] <= cut / rate] and len(before) >= 1
    assert after == [e for e in expected if e[0] > cut / rate] and len(after) >= 2


def test_bad_input_leaves_the_stream_as_it_was():
    pool = StreamPool(StreamingKWS.from_pretrained("lmuformer-tiny-synth12-kws"))
    slot = pool.open()
    pool.push(slot, np.zeros(100, np.float32))
    bad = np.zeros(100, np.float32)
    bad[7] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf .sample 7"):
        pool.push(slot, bad)
    with pytest.raises(ValueError, match="mono audio"):
        pool.push(slot, np.zeros((2, 100), np.float32))
    with pytest.raises(TypeError, match="float or integer PCM"):
        pool.push(slot, np.array(["a"]))
    assert pool.waiting(slot) == 100
    with pytest.raises(KeyError, match="no open stream in slot 5"):
        pool.push(5, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="positive"):
        pool.open(0)
    with pytest.raises(TypeError, match="SlotState"):
        pool.restore(slot, (1, 2))
    other = StreamPool(StreamingKWS.from_pretrained("lmuformer-tiny-phrases12-kws"))
    with pytest.raises(ValueError, match="not a one-stream state of this pool's spotter"):
        pool.restore(slot, other.snapshot(other.open()))
    assert isinstance(pool.snapshot(slot), SlotState)


def test_stored_records_expire_after_their_last_save():
    import time
    from streamlmu.serve.records import ExpiringRecords
    records = ExpiringRecords(ttl_s=0.2)
    records.put({"a": b"1", "b": b"2"})
    assert records.get("a") == b"1" and records.get("missing") is None
    records.drop("b")
    assert records.get("b") is None
    time.sleep(0.25)
    assert records.get("a") is None
    records.put({"c": b"3"})  # a save also forgets what expired
    assert set(records.records) == {"c"}
