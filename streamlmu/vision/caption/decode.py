"""Greedy and beam-search decoding of a next-word model.

    next_log_probs(rows (R,), words (R, t)) -> (R, V)     # rows: which input each partial caption belongs to
    ids, lengths = greedy(next_log_probs, batch, max_words)
    ids, lengths = beam_search(next_log_probs, batch, beam=5, max_words=20)

``ids (B, max_words + 1)`` int64: the words, ``<eos>`` (forced after ``max_words`` words), then ``<pad>``;
``lengths (B,)`` the number of words. Beam search keeps the ``beam`` best partial captions by summed log
probability and returns the best finished one, its score divided by ``length ** length_penalty``; beam 1 is
greedy decoding.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from streamlmu.vision.caption.vocab import BOS, EOS, PAD

NextLogProbs = Callable[[Tensor, Tensor], Tensor]


def _finish(words: Tensor, max_words: int) -> tuple[Tensor, Tensor]:
    """Captions ``(R, 1 + n)``, ``<bos>`` first and each with its ``<eos>`` -> ``ids (R, max_words + 1)``, lengths."""
    body = words[:, 1:]
    ids = torch.full((words.shape[0], max_words + 1), PAD, dtype=torch.int64, device=words.device)
    ids[:, :body.shape[1]] = body
    return ids, (body == EOS).int().argmax(1).long()


def _only_eos(log_probs: Tensor) -> Tensor:
    ended = torch.full_like(log_probs, float("-inf"))
    ended[:, EOS] = 0.0
    return ended


def greedy(next_log_probs: NextLogProbs, batch: int, max_words: int = 20,
           device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    rows = torch.arange(batch, device=device)
    words = torch.full((batch, 1), BOS, dtype=torch.int64, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_words + 1):
        log_probs = next_log_probs(rows, words)
        best = (_only_eos(log_probs) if step == max_words else log_probs).argmax(-1)
        best = torch.where(done, torch.full_like(best, PAD), best)
        words = torch.cat([words, best[:, None]], dim=1)
        done |= best == EOS
        if bool(done.all()):
            break
    return _finish(words, max_words)


def beam_search(next_log_probs: NextLogProbs, batch: int, beam: int = 5, max_words: int = 20,
                length_penalty: float = 0.0, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    if beam < 1:
        raise ValueError(f"beam must be >= 1 (got {beam})")
    rows = torch.arange(batch, device=device).repeat_interleave(beam)
    words = torch.full((batch * beam, 1), BOS, dtype=torch.int64, device=device)
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0                                   # every beam starts as the one empty caption
    done = torch.zeros(batch * beam, dtype=torch.bool, device=device)
    for position in range(max_words + 1):
        step = next_log_probs(rows, words)
        if position == max_words:
            step = _only_eos(step)
        vocab = step.shape[-1]
        ended = torch.full_like(step, float("-inf"))
        ended[:, PAD] = 0.0                              # a finished caption only pads, at no cost
        step = torch.where(done[:, None], ended, step)
        total = (scores[:, :, None] + step.view(batch, beam, vocab)).view(batch, beam * vocab)
        scores, pick = total.topk(beam, dim=1)
        origin = (pick // vocab + torch.arange(batch, device=device)[:, None] * beam).view(-1)
        token = (pick % vocab).view(-1)
        words = torch.cat([words[origin], token[:, None]], dim=1)
        done = done[origin] | (token == EOS)
        if bool(done.all()):
            break
    ids, lengths = _finish(words, max_words)
    normalised = scores.view(-1) / (lengths.float() + 1).pow(length_penalty)
    best = normalised.view(batch, beam).argmax(1) + torch.arange(batch, device=device) * beam
    return ids[best], lengths[best]
