"""``Ensemble``: the mean of the logits of several trained LMUFormers, as one stream operator.

Every member sees the same input frames and keeps its own state; the engine
compiles them into one program, so a batch of streams still takes one engine
step per frame. The heads are affine, so the mean of the members' logits is
one dense layer on their concatenated features (how the engine runs it).

Shapes: forward x ``(batch, time, in_features)`` -> logits ``(batch, time, classes)``;
step x ``(batch, in_features)`` -> ``(batch, classes)``; state ``EnsembleState``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from streamlmu.engine import DEFAULT_BLAS_MIN_BATCH, ProgramBuilder, StreamRunner
from streamlmu.models.lmuformer import LMUFormerBase
from streamlmu.nn.linear import FrameLinear
from streamlmu.stream import StreamModule, check_input, register_state, step_by_forward


@dataclass(frozen=True)
class EnsembleConfig:
    """The members as ``(registry name, config dict)`` pairs, in order."""

    members: tuple[tuple[str, dict], ...]

    def to_dict(self) -> dict:
        return {"members": [[name, dict(config)] for name, config in self.members]}


@register_state
class EnsembleState(NamedTuple):
    members: tuple  # each member's own state


class Ensemble(StreamModule):
    """Mean logits of ``members``: LMUFormer or Spiking LMUFormer models with the same input
    features, classes and latency (each may differ in width, order or depth).

    >>> from streamlmu.models import LMUFormer, LMUFormerConfig
    >>> pair = Ensemble([LMUFormer(LMUFormerConfig.preset("tiny")), LMUFormer(LMUFormerConfig.preset("tiny"))])
    >>> tuple(pair.eval()(torch.randn(2, 10, 128))[0].shape)
    (2, 10, 35)
    """

    registry_name = "ensemble"

    def __init__(self, members: list[StreamModule]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members (got {len(members)})")
        for i, member in enumerate(members):
            if not isinstance(member, LMUFormerBase):
                raise TypeError(f"ensemble members must be LMUFormer models (member {i} is {type(member).__name__})")
        first = members[0]
        for i, member in enumerate(members[1:], 1):
            for name, mine, theirs in (("input features", member.config.in_features, first.config.in_features),
                                       ("classes", member.config.num_classes, first.config.num_classes),
                                       ("latency frames", member.latency_frames, first.latency_frames)):
                if mine != theirs:
                    raise ValueError(f"ensemble members must agree on {name}: member 0 has {theirs}, "
                                     f"member {i} has {mine}")
        self.members = nn.ModuleList(members)
        self.in_features, self.num_classes = first.config.in_features, first.config.num_classes
        self.input_frame, self.output_frame = first.input_frame, first.output_frame
        self.latency_frames = first.latency_frames

    @property
    def config(self) -> EnsembleConfig:
        return EnsembleConfig(tuple((m.registry_name, m.config.to_dict()) for m in self.members))

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> EnsembleState:
        return EnsembleState(tuple(m.init_state(batch_size, dtype, device) for m in self.members))

    def forward(self, x: Tensor, state: EnsembleState | None = None) -> tuple[Tensor, EnsembleState]:
        check_input(x, 3, self.in_features)
        if state is None:
            state = self.init_state(x.shape[0], x.dtype, x.device)
        if type(state) is not EnsembleState or len(state.members) != len(self.members):
            raise TypeError(f"state must be an EnsembleState of {len(self.members)} members from "
                            f"Ensemble.init_state (got {type(state).__name__})")
        outputs = [m(x, s) for m, s in zip(self.members, state.members)]
        logits = torch.stack([y for y, _ in outputs]).mean(dim=0)
        return logits, EnsembleState(tuple(s for _, s in outputs))

    def step(self, x: Tensor, state: EnsembleState) -> tuple[Tensor, EnsembleState]:
        """One frame: x ``(batch, in_features)`` -> logits ``(batch, classes)``."""
        return step_by_forward(self, x, state, self.in_features)

    def classify(self, x: Tensor) -> Tensor:
        """Logits of whole clips (each member's mean over all frames): ``(batch, time, in) -> (batch, classes)``."""
        return self.forward(x)[0][:, -1]

    def streaming(self, blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH, pooling: str = "mean",
                  int8_min_batch: int | None = None) -> StreamRunner:
        """The (eval-mode) ensemble compiled for the streaming engine; see :mod:`streamlmu.engine`."""
        return StreamRunner(self, blas_min_batch=blas_min_batch, pooling=pooling, int8_min_batch=int8_min_batch)

    def _head(self) -> FrameLinear:
        """The members' heads as one layer on their concatenated features: weights side by side, over n."""
        heads = [m.head for m in self.members]
        head = FrameLinear(sum(h.in_features for h in heads), self.num_classes)
        with torch.no_grad():
            head.weight.copy_(torch.cat([h.weight for h in heads], dim=1) / len(heads))
            head.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))
        return head

    def _emit(self, b: ProgramBuilder, pooling: str = "mean") -> None:
        """The members' features side by side, then the joint head (``pooling`` as in ``LMUFormerBase._emit``)."""
        x = b.input(self.in_features)
        features = b.concat(*[m._frame(b, x) for m in self.members])
        if pooling == "frame":
            b.output(b.linear(features, self._head()))
            return
        b.output(b.linear(b.running_mean(features, self.latency_frames), self._head()))
