"""The captioner as a stream operator: image frames in, the current caption of each stream out.

    captioner = Captioner(model)                                  # a CaptionModel
    out, state = captioner(frames (B, T, 3, H, W), state)         # Caption: tokens (B, T, L), length, changed, decoded

Every frame goes through CLIP's image tower (one pass: its embedding decides, its grid is kept); the decoder
runs only when the scene changed, so a still scene costs one encoder pass per frame and no decoding. The
change trigger compares each frame's embedding with that of the frame last captioned (cosine distance):

* a cut: the distance stays above ``high`` for ``patience`` frames in a row -> caption this frame;
* hysteresis: if the scene was still moving when it was captioned (the distance to the previous frame at
  least ``low``), the stream re-captions once it settles (distance to the previous frame below ``low``) unless
  it settled where it was captioned (distance to that frame below ``low``);
* sensor noise, lighting flicker and slow drift below ``high`` change nothing.

``trigger=False`` decodes every frame (the baseline the trigger is measured against).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from streamlmu.stream import IMAGES, Frame, StreamModule, register_state
from streamlmu.vision.caption.model import CaptionModel
from streamlmu.vision.caption.vocab import PAD


class Caption(NamedTuple):
    """Per frame: ``tokens (B, T, L)`` int64 the current caption's word ids (then ``<eos>``, ``<pad>``),
    ``length (B, T)`` its words, ``changed (B, T)`` bool whether its text differs from the frame before's,
    ``decoded (B, T)`` bool whether the decoder ran for this frame."""

    tokens: Tensor
    length: Tensor
    changed: Tensor
    decoded: Tensor


@register_state
class CaptionerState(NamedTuple):
    """Per stream: ``reference (B, D)`` embedding of the frame last captioned, ``previous (B, D)`` the last
    frame's, ``above (B,)`` frames in a row far from the reference, ``unsettled (B,)`` bool captioned while
    moving, ``tokens (B, L)`` and ``length (B,)`` the caption, ``started (B,)`` bool a caption exists."""

    reference: Tensor
    previous: Tensor
    above: Tensor
    unsettled: Tensor
    tokens: Tensor
    length: Tensor
    started: Tensor


class Captioner(StreamModule):
    input_frame = IMAGES
    output_frame = Frame((None,), ("words",), "float", "frames")

    def __init__(self, model: CaptionModel, high: float = 0.15, low: float = 0.05, patience: int = 2,
                 beam: int = 1, max_words: int | None = None, trigger: bool = True):
        super().__init__()
        if not 0 <= low < high or patience < 1:
            raise ValueError(f"need 0 <= low < high and patience >= 1 (got low {low}, high {high}, patience {patience})")
        self.model = model.eval()
        self.high, self.low, self.patience, self.beam, self.trigger = high, low, patience, beam, trigger
        self.max_words = model.config.fusion.max_words - 2 if max_words is None else max_words

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> CaptionerState:
        dim = self.model.towers.embed_dim
        zeros = torch.zeros(batch_size, dtype=torch.int64, device=device)
        return CaptionerState(torch.zeros(batch_size, dim, device=device), torch.zeros(batch_size, dim, device=device),
                              zeros, zeros.bool(), torch.full((batch_size, self.max_words + 1), PAD, device=device),
                              zeros.clone(), zeros.bool())

    def _check_state(self, state: object, batch: int) -> CaptionerState:
        if type(state) is not CaptionerState or state.reference.shape != (batch, self.model.towers.embed_dim) \
                or state.tokens.shape != (batch, self.max_words + 1):
            raise ValueError(f"state must be the CaptionerState of {batch} streams from Captioner.init_state "
                             f"(got {type(state).__name__})")
        return state

    def forward(self, x: Tensor, state: CaptionerState | None = None) -> tuple[Caption, CaptionerState]:
        self.input_frame.check(x)
        batch, time = x.shape[:2]
        state = self._check_state(self.init_state(batch, device=x.device) if state is None else state, batch)
        outputs = []
        for t in range(time):
            caption, state = self._frame(x[:, t], state)
            outputs.append(caption)
        if not outputs:
            empty = torch.zeros(batch, 0, dtype=torch.int64, device=x.device)
            return Caption(torch.zeros(batch, 0, self.max_words + 1, dtype=torch.int64, device=x.device), empty,
                           empty.bool(), empty.bool()), state
        return Caption(*(torch.stack(field, 1) for field in zip(*outputs))), state

    def _frame(self, images: Tensor, state: CaptionerState) -> tuple[Caption, CaptionerState]:
        with torch.no_grad():
            grid, embedding = self.model.towers.image(images)
        to_reference = 1 - (embedding * state.reference).sum(-1)
        to_previous = 1 - (embedding * state.previous).sum(-1)
        above = torch.where(to_reference > self.high, state.above + 1, torch.zeros_like(state.above))
        settled = state.unsettled & (to_previous < self.low)
        fire = ~state.started | (above >= self.patience) | (settled & (to_reference >= self.low)) | (not self.trigger)
        unsettled = torch.where(fire, state.started & (to_previous >= self.low), state.unsettled & ~settled)
        tokens, length = state.tokens, state.length
        if bool(fire.any()):
            rows = fire.nonzero().squeeze(1)
            new_tokens, new_length = self._decode(grid[rows], embedding[rows])
            tokens, length = tokens.clone(), length.clone()
            tokens[rows], length[rows] = new_tokens, new_length
        changed = (tokens != state.tokens).any(1) | (fire & ~state.started)
        new = CaptionerState(torch.where(fire[:, None], embedding, state.reference), embedding,
                             torch.where(fire, torch.zeros_like(above), above), unsettled, tokens, length,
                             state.started | fire)
        return Caption(tokens, length, changed, fire), new

    def _decode(self, grid: Tensor, embedding: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self.model.generate(self.model.prefix(grid, embedding), self.beam, self.max_words)
