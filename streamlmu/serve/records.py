"""Stream records by id that expire: the logic of every store of :mod:`streamlmu.serve.store`, wherever it
runs (in a server, or as the Ray actor of :mod:`streamlmu.serve.scale`, which imports nothing else)."""
from __future__ import annotations

import time


class ExpiringRecords:
    """Records by stream id that expire ``ttl_s`` after their last save (the store's logic, wherever it runs)."""

    def __init__(self, ttl_s: float):
        self.ttl_s, self.records = ttl_s, {}

    def put(self, records: dict[str, bytes]) -> None:
        now = time.monotonic()
        self.records.update({stream: (now, data) for stream, data in records.items()})
        for stream, (saved, _) in list(self.records.items()):
            if now - saved > self.ttl_s:
                del self.records[stream]

    def get(self, stream: str) -> bytes | None:
        saved, data = self.records.get(stream, (0.0, None))
        return data if data is not None and time.monotonic() - saved <= self.ttl_s else None

    def drop(self, stream: str) -> None:
        self.records.pop(stream, None)
