"""Rehearsal for continual learning: a reservoir buffer of past examples and the DER++ loss.

    Buffer(images (S, C, H, W), labels (S,), logits (S, K), tasks (S,), seen ())

DER++ (Buzzega et al., NeurIPS 2020; mammoth) keeps a uniform sample of every example seen so far (reservoir
sampling, :func:`reservoir_add`) with its label and the logits the network gave it then (avalanche-lib's DER
instead fills a class-balanced buffer at the end of each task, :func:`balanced_fill`), and adds to the loss on
the current batch ``alpha`` times the mean squared error between the network's logits on one replayed batch and the
stored ones, and ``beta`` times the cross-entropy on the labels of another. Slots not yet filled hold label
-1. The buffer is a state of tensors: :func:`reservoir_add` returns a new one and leaves its input as it was.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F


class Buffer(NamedTuple):
    """``images (S, C, H, W)`` the un-augmented inputs, ``labels (S,)`` int64 (-1: empty), ``logits (S, K)``
    float32 the network's logits when stored, ``tasks (S,)`` int64, ``seen ()`` int64 examples offered so far."""

    images: Tensor
    labels: Tensor
    logits: Tensor
    tasks: Tensor
    seen: Tensor


def empty_buffer(size: int, image_shape: tuple[int, ...], classes: int,
                 device: torch.device | str | None = None) -> Buffer:
    """An empty buffer of ``size`` slots, its images, labels, logits and tasks on ``device`` (``seen`` on the CPU)."""
    if size < 1:
        raise ValueError(f"the buffer needs at least one slot (got {size})")
    empty = torch.full((size,), -1, dtype=torch.int64, device=device)
    return Buffer(torch.zeros(size, *image_shape, device=device), empty, torch.zeros(size, classes, device=device),
                  empty.clone(), torch.zeros((), dtype=torch.int64))


def filled(buffer: Buffer) -> int:
    return int(min(int(buffer.seen), len(buffer.labels)))


def reservoir_add(buffer: Buffer, images: Tensor, labels: Tensor, logits: Tensor, task: int,
                  generator: torch.Generator) -> Buffer:
    """Offer a batch (``images (B, C, H, W)``, ``labels (B,)``, ``logits (B, K)``) to the reservoir: the n-th
    example seen (from 0) fills slot n while there is room, then replaces a slot drawn uniformly from 0..n
    if that draw is a slot (so every example seen stays with probability size / seen)."""
    size, seen = len(buffer.labels), int(buffer.seen)
    rows: dict[int, int] = {}  # slot -> row; a slot drawn twice in a batch keeps the later example
    for row in range(len(labels)):
        slot = seen if seen < size else int(torch.randint(seen + 1, (), generator=generator))
        if slot < size:
            rows[slot] = row
        seen += 1
    if not rows:
        return buffer._replace(seen=torch.tensor(seen))
    device = buffer.images.device
    at, pick = torch.tensor(list(rows), device=device), torch.tensor(list(rows.values()), device=device)
    new = [field.clone() for field in buffer[:4]]
    for field, values in zip(new, (images.detach(), labels, logits.detach(), torch.full_like(labels, task))):
        field[at] = values.to(device)[pick].to(field.dtype)
    return Buffer(*new, torch.tensor(seen))


def balanced_fill(buffer: Buffer, images: Tensor, labels: Tensor, logits: Tensor, task: int,
                  generator: torch.Generator) -> Buffer:
    """Avalanche-lib's class-balanced buffer, filled once at the end of a task: of the examples held and the
    task's (``images (B, C, H, W)``, ``labels (B,)``, ``logits (B, K)``), every class keeps an equal share of
    the slots, drawn at random (a class with fewer examples leaves its spare slots to the others)."""
    held = filled(buffer)
    pool = [torch.cat([old[:held], new.detach().to(old.device, old.dtype)]) for old, new in
            zip(buffer[:4], (images, labels, logits, torch.full_like(labels, task)))]
    classes = pool[1].unique()
    rank = torch.empty(len(pool[1]), dtype=torch.int64)
    for c in classes.tolist():  # each class's examples in random order: 0, 1, 2, ...
        rows = (pool[1] == c).nonzero().squeeze(1).cpu()
        rank[rows[torch.randperm(len(rows), generator=generator)]] = torch.arange(len(rows))
    position = torch.searchsorted(classes.cpu(), pool[1].cpu())
    keep = torch.argsort(rank * len(classes) + position)[:len(buffer.labels)].to(buffer.images.device)
    new = [field.clone() for field in buffer[:4]]
    for field, values in zip(new, pool):
        field[:len(keep)] = values[keep]
    return Buffer(*new, buffer.seen + len(labels))


def replay(buffer: Buffer, batch: int, generator: torch.Generator) -> Tensor:
    """Indices of ``batch`` filled slots drawn without replacement (all of them if fewer)."""
    count = filled(buffer)
    return torch.randperm(count, generator=generator)[:batch]


def derpp_loss(logits: Tensor, labels: Tensor, replay_logits: Tensor, stored_logits: Tensor,
               replay_label_logits: Tensor, replay_labels: Tensor, alpha: float, beta: float) -> Tensor:
    """``CE(logits, labels) + alpha·MSE(replay_logits, stored_logits) + beta·CE(replay_label_logits,
    replay_labels)``; empty replays add nothing."""
    loss = F.cross_entropy(logits, labels)
    if len(replay_logits):
        loss = loss + alpha * F.mse_loss(replay_logits, stored_logits)
    if len(replay_label_logits):
        loss = loss + beta * F.cross_entropy(replay_label_logits, replay_labels)
    return loss
