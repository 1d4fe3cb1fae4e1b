"""SparCL's dynamic data removal (DDR): count each training example's forgetting events and drop the examples
that are never forgotten.

    Forgetting(correct (N,), learnt (N,), events (N,))

Over the presentations since the last removal, a forgetting event is a presentation classified wrongly
right after one classified correctly. At each removal point of a task the examples with the fewest events go
first; an example never classified correctly counts as forgotten at every presentation, so it stays
(Toneva et al., ICLR 2019; the official SparCL code removes 30 % of a task's examples in four steps).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Forgetting(NamedTuple):
    """Per training example of a task: ``correct (N,)`` bool its last presentation was right, ``learnt (N,)``
    bool it has been right at least once, ``events (N,)`` int64 its forgetting events, ``shown (N,)`` int64
    its presentations, all since the last removal."""

    correct: Tensor
    learnt: Tensor
    events: Tensor
    shown: Tensor


def forgetting_init(examples: int) -> Forgetting:
    false = torch.zeros(examples, dtype=torch.bool)
    zeros = torch.zeros(examples, dtype=torch.int64)
    return Forgetting(false, false.clone(), zeros, zeros.clone())


def record(stats: Forgetting, index: Tensor, correct: Tensor) -> Forgetting:
    """The statistics after presenting examples ``index (B,)`` (distinct) that were classified ``correct (B,)``."""
    c, learnt, events, shown = (field.clone() for field in stats)
    events[index] += (c[index] & ~correct).long()
    c[index] = correct
    learnt[index] |= correct
    shown[index] += 1
    return Forgetting(c, learnt, events, shown)


def least_forgotten(stats: Forgetting, active: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices of the ``count`` active examples (``active (N,)`` bool) with the fewest forgetting events, the
    never-learnt ones counted as forgotten at each presentation; ties in random order (``generator``; None:
    the lower index first)."""
    score = torch.where(stats.learnt, stats.events, stats.shown.clamp(min=1) + stats.events.max() + 1)
    candidates = active.nonzero().squeeze(1)
    if generator is not None:
        candidates = candidates[torch.randperm(len(candidates), generator=generator)]
    order = torch.argsort(score[candidates], stable=True)
    return candidates[order[:max(0, min(count, len(candidates)))]]
