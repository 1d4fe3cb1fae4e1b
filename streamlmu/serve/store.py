"""Where streams outlive the process that served them: a store of stream records.

A server with a store saves every live stream about once a second (:class:`StreamRecord`: its pool state
rows, the samples it consumed, its unsent messages) and looks a stream up there when a client resumes a
stream id this process does not hold: after the replica that held it died, on another replica. The client
then sends its audio again from the record's sample count and gives the time of the last event it received,
so events go on without a gap or a duplicate (the record keeps the stream's recent events, and the server
sends those the client did not see).

* :class:`MemoryStore`: one process's dict (several services of one process share it; tests);
* :class:`RayStore`: a named Ray actor that every replica of ``streamlmu serve --ray`` reaches
  (:mod:`streamlmu.serve.scale`).

Records expire ``ttl_s`` seconds after their last save, so a stream nobody resumes is forgotten.
"""
from __future__ import annotations

import io
from typing import NamedTuple, Protocol

import torch

from streamlmu.serve.pool import SlotState
from streamlmu.serve.records import ExpiringRecords


class StreamRecord(NamedTuple):
    """What a store keeps of a stream: ``state`` (:meth:`streamlmu.serve.pool.StreamPool.snapshot`), the
    client-rate samples ``consumed``, its ``hello`` fields (no token), ``keywords``, its ``recent`` events (JSON
    text, sent or not: a resuming client gets those after the last one it saw) and the stream time of its
    ``next_level`` report."""

    state: SlotState
    consumed: int
    hello: dict
    keywords: list
    recent: list
    next_level: float

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(tuple(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "StreamRecord":
        return cls(*torch.load(io.BytesIO(data), weights_only=True))


class StateStore(Protocol):
    async def put(self, records: dict[str, bytes]) -> None: ...

    async def get(self, stream: str) -> bytes | None: ...

    async def drop(self, stream: str) -> None: ...


class MemoryStore:
    """A store in this process."""

    def __init__(self, ttl_s: float = 60.0):
        self.records = ExpiringRecords(ttl_s)

    async def put(self, records: dict[str, bytes]) -> None:
        self.records.put(records)

    async def get(self, stream: str) -> bytes | None:
        return self.records.get(stream)

    async def drop(self, stream: str) -> None:
        self.records.drop(stream)
