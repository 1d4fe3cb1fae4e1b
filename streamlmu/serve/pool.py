"""Many live audio streams of one keyword spotter, stepped together: ``StreamPool``.

Streams come and go and their audio arrives at its own pace. The pool keeps every stream's state as one
row of a batched state (a slot); each :meth:`StreamPool.tick` advances every stream that has a tick of
audio waiting by exactly one tick: their rows are gathered into one batch, stepped in one call of the
spotter's pipeline, and scattered back. Streams without a full tick keep their rows untouched.

The front end's sample clock (its state's ``samples``) is shared by the streams of a batch. Streams here
only ever advance by whole ticks (a multiple of the front end's hop, at least one analysis window), so every
stream past its first tick is in the same phase of that clock and computes the same frames: a gathered
batch gets the clock of its first row, and each row gets its own clock back, advanced by the tick. Streams
still at sample 0 form a batch of their own. A stream's detections are therefore those of the same audio
through :class:`streamlmu.audio.kws.StreamingKWS` alone (``tests/test_serve_pool.py``).

Audio at another rate is resampled per stream on arrival (a :class:`streamlmu.audio.resample.Resample`
state per slot). Thread safety: :meth:`push`, :meth:`open`, :meth:`close`, :meth:`snapshot` and
:meth:`restore` may be called from one thread while another runs :meth:`tick`; a slot closed (or reopened)
during a tick drops that tick's results.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from streamlmu.audio.kws import Event, StreamingKWS, detection_events
from streamlmu.audio.kws_pipeline import Detections
from streamlmu.audio.resample import Resample
from streamlmu.audio.sources import pcm_to_float
from streamlmu.stream import State, register_state, tree_map, tree_map_paths, tree_paths

DEFAULT_TICK_S = 0.08


@register_state
class SlotState(NamedTuple):
    """One stream's whole state, batch 1: the spotter pipeline's rows, the resampler's (None at the model's
    rate), the ``rate`` its audio arrives at ``(1,)`` int64, and the audio ``waiting`` for its next tick
    ``(1, n)`` float32 at the model's rate. Save it with :func:`streamlmu.stream.save_state`."""

    pipeline: State
    resample: State | None
    rate: torch.Tensor
    waiting: torch.Tensor


@dataclass
class _Slot:
    generation: int
    rate: int
    resample: Resample | None = None
    resample_state: State | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    waiting: int = 0  # samples at the model's rate not yet stepped
    peak: float = 0.0  # largest |sample| stepped since the last take_peak


class StreamPool:
    """A pool of stream slots over one spotter (``kws``: a :class:`StreamingKWS` whose model, keywords,
    thresholds and detector settings every stream shares; its own streams are not used).

    ``tick_s``: audio every stepped stream advances by per tick (rounded up to whole hops of the front end,
    at least one analysis window). ``capacity``: initial slots (the pool grows by doubling).

    >>> pool = StreamPool(StreamingKWS.from_pretrained("lmuformer-tiny-synth12-kws"))
    >>> slot = pool.open()
    >>> pool.push(slot, np.zeros(16000, np.float32))
    >>> sum(pool.tick() is not None for _ in range(12)), pool.stream_time(slot)
    (12, 0.94)
    """

    def __init__(self, kws: StreamingKWS, tick_s: float = DEFAULT_TICK_S, capacity: int = 16):
        if kws.verifier is not None:
            raise ValueError("StreamPool does not run a verifier: give it a StreamingKWS without one")
        features = kws.features
        hops = max(1, int(np.ceil(tick_s * features.sample_rate / features.hop)))
        self.tick_samples = hops * features.hop
        while self.tick_samples < features.window_size:
            self.tick_samples += features.hop
        self.kws, self.features, self.labels = kws, features, kws.labels
        self.pipeline = kws.pipeline if len(kws.pipeline) == 3 else type(kws.pipeline)(*kws.pipeline.stages[-3:])
        self._clock_fields = set(self.pipeline.clock_fields)
        self._state = self.pipeline.init_state(max(1, capacity))
        self._slots: dict[int, _Slot] = {}
        self._generation = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ slots
    @property
    def capacity(self) -> int:
        return int(self._state[-1].frames.shape[0])

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, sample_rate: int | None = None, state: SlotState | None = None) -> int:
        """A new stream's slot for audio at ``sample_rate`` Hz (default: the model's), from a fresh state or a
        saved :class:`SlotState` (see :meth:`snapshot`; it carries its own rate)."""
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz (got {sample_rate})")
        with self._lock:
            slot = next(i for i in range(self.capacity + 1) if i not in self._slots)
            if slot == self.capacity:
                grown = self.pipeline.init_state(self.capacity)
                self._state = tree_map(lambda old, new: torch.cat([old, new]), self._state, grown)
            self._generation += 1
            self._slots[slot] = _Slot(self._generation, self.features.sample_rate)
            self._set_rate(self._slots[slot], sample_rate or self.features.sample_rate)
            self._write(slot, self.pipeline.init_state(1))
        if state is not None:
            self.restore(slot, state)
        return slot

    def close(self, slot: int) -> None:
        """Free ``slot``; its audio still waiting is dropped."""
        with self._lock:
            self._slot(slot)
            del self._slots[slot]

    def snapshot(self, slot: int) -> SlotState:
        """A copy of ``slot``'s whole state, the audio waiting for its next tick included."""
        with self._lock:
            s = self._slot(slot)
            rows = tree_map(lambda t: t[slot:slot + 1].clone(), self._state)
            resample = None if s.resample_state is None else tree_map(torch.clone, s.resample_state)
            waiting = np.concatenate(s.chunks) if s.chunks else np.zeros(0, np.float32)  # a new array either way
            return SlotState(rows, resample, torch.tensor([s.rate]), torch.from_numpy(waiting)[None])

    def restore(self, slot: int, state: SlotState) -> None:
        """Put a :meth:`snapshot` into ``slot`` (what it held is replaced)."""
        if type(state) is not SlotState:
            raise TypeError(f"state must be a SlotState from StreamPool.snapshot (got {type(state).__name__})")
        layout = (lambda tree: [(path, t.shape, t.dtype) for path, t in tree_paths(tree)])
        if layout(state.pipeline) != layout(self.pipeline.init_state(1)):
            raise ValueError("state.pipeline is not a one-stream state of this pool's spotter")
        rate = int(state.rate[0])
        with self._lock:
            s = self._slot(slot)
            self._set_rate(s, rate)
            s.resample_state = None if state.resample is None else tree_map(torch.clone, state.resample)
            waiting = state.waiting[0].numpy().astype(np.float32, copy=True)
            s.chunks, s.waiting = ([waiting] if len(waiting) else []), len(waiting)
            s.generation = self._generation = self._generation + 1
            self._write(slot, tree_map(torch.clone, state.pipeline))

    def _slot(self, slot: int) -> _Slot:
        if slot not in self._slots:
            raise KeyError(f"no open stream in slot {slot}")
        return self._slots[slot]

    def _write(self, slot: int, rows: State) -> None:
        tree_map(lambda t, row: t[slot:slot + 1].copy_(row), self._state, rows)

    def _set_rate(self, s: _Slot, rate: int) -> None:
        if rate == s.rate:
            return
        s.rate = rate
        s.resample = None if rate == self.features.sample_rate else Resample(rate, self.features.sample_rate)
        s.resample_state = None if s.resample is None else s.resample.init_state(1)

    # ------------------------------------------------------------ audio in
    def push(self, slot: int, samples: np.ndarray) -> None:
        """Queue mono audio ``(samples,)`` (float in [-1, 1] or integer PCM, at the slot's rate) for ``slot``.

        A chunk with NaN or Inf raises ``ValueError`` and is not used."""
        audio = pcm_to_float(np.asarray(samples))
        if audio.ndim != 1:
            raise ValueError(f"samples must be one stream's mono audio, shape (samples,) (got {audio.shape})")
        if not np.isfinite(audio).all():
            raise ValueError(f"samples contain NaN or Inf (sample {int(np.argmin(np.isfinite(audio)))}); "
                             f"the chunk was not used and the stream's state is unchanged")
        with self._lock:
            s = self._slot(slot)
            if s.resample is not None:
                out, s.resample_state = s.resample(torch.from_numpy(audio)[None], s.resample_state)
                audio = out[0].numpy()
            if len(audio):
                s.chunks.append(audio)
                s.waiting += len(audio)

    def waiting(self, slot: int) -> int:
        """Samples (at the model's rate) queued for ``slot`` and not yet stepped."""
        with self._lock:
            return self._slot(slot).waiting

    def ready(self) -> bool:
        """Whether some stream has a tick of audio waiting."""
        with self._lock:
            return any(s.waiting >= self.tick_samples for s in self._slots.values())

    # ------------------------------------------------------------ stepping
    def tick(self) -> dict[int, list[Event]] | None:
        """Advance every stream with a tick of audio by one tick; their events (``stream`` = slot), or None when
        no stream was ready."""
        with self._lock:
            batch = {}
            for slot, s in self._slots.items():
                if s.waiting >= self.tick_samples:
                    audio = np.concatenate(s.chunks) if len(s.chunks) > 1 else s.chunks[0]
                    rest = audio[self.tick_samples:]
                    s.chunks, s.waiting = ([rest] if len(rest) else []), len(rest)
                    s.peak = max(s.peak, float(np.abs(audio[:self.tick_samples]).max()))
                    batch[slot] = (audio[:self.tick_samples], s.generation)
            state = self._state
        if not batch:
            return None
        clock = next(t for path, t in tree_paths(state) if path[-1] in self._clock_fields)
        groups: dict[bool, list[int]] = {}
        for slot in batch:  # streams at sample 0 still fill their first window: a batch of their own
            groups.setdefault(bool(clock[slot] == 0), []).append(slot)
        events: dict[int, list[Event]] = {slot: [] for slot in batch}
        for slots in groups.values():
            rows = torch.tensor(slots)
            audio = torch.from_numpy(np.stack([batch[slot][0] for slot in slots]))
            found, new = self._step(audio, rows, state)
            with self._lock:
                live = [i for i, slot in enumerate(slots)
                        if slot in self._slots and self._slots[slot].generation == batch[slot][1]]
                keep = torch.tensor(live, dtype=torch.long)
                tree_map(lambda t, n: t.index_copy_(0, rows[keep], n.index_select(0, keep)), self._state, new)
            for _, event in detection_events(found, self.labels, self.features):
                if event.stream in live:
                    slot = slots[event.stream]
                    events[slot].append(event._replace(stream=slot))
        return events

    def flush(self, slot: int) -> list[Event]:
        """Step all of ``slot``'s waiting audio (less than a tick after :meth:`tick`) alone and close the slot:
        the end of a stream. Its last events."""
        with self._lock:
            s = self._slot(slot)
            audio = np.concatenate(s.chunks) if s.chunks else np.zeros(0, np.float32)
            s.peak = max(s.peak, float(np.abs(audio).max()) if len(audio) else 0.0)
            del self._slots[slot]
            state = self._state
        found, _ = self._step(torch.from_numpy(audio)[None], torch.tensor([slot]), state)
        return [event._replace(stream=slot) for _, event in detection_events(found, self.labels, self.features)]

    def _step(self, audio: torch.Tensor, rows: torch.Tensor, state: State) -> tuple[Detections, State]:
        """One pipeline call on the gathered ``rows`` (clock set to the first row's), and their new rows with each
        row's own clock advanced by the chunk."""
        gathered = tree_map(lambda t: t.index_select(0, rows), state)

        def shared(path: tuple, t: torch.Tensor) -> torch.Tensor:
            return t[:1].expand_as(t).clone() if path[-1] in self._clock_fields else t

        found, new = self.pipeline(audio, tree_map_paths(shared, gathered))

        def own(path: tuple, t: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
            return before + audio.shape[1] if path[-1] in self._clock_fields else t

        return found, tree_map_paths(own, new, gathered)

    # ------------------------------------------------------------ what a stream looks like now
    def top(self, slot: int) -> tuple[str, float]:
        """The label with the highest smoothed posterior on ``slot`` now, and that posterior."""
        with self._lock:
            self._slot(slot)
            smoothed = self._state[-1].detector.smoothed[slot]
            k = int(smoothed.argmax())
            return self.labels[k], float(smoothed[k])

    def stream_time(self, slot: int) -> float:
        """Seconds of audio (at the model's rate) ``slot`` has been stepped through."""
        with self._lock:
            self._slot(slot)
            return float(self._state[-1].frames[slot]) * self.features.hop / self.features.sample_rate

    def take_peak(self, slot: int) -> float:
        """The largest ``|sample|`` stepped on ``slot`` since the last call."""
        with self._lock:
            s = self._slot(slot)
            peak, s.peak = s.peak, 0.0
            return peak
