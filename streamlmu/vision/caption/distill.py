"""Distillation of a student captioner from a teacher (LightCap's sequential and ensemble distillation).

Both read the same grid cells and words; their sequences ``[concepts | grid cells | words]`` line up from the
end, so where one has fewer concepts (an ablation without them) hidden states and attention maps are compared
over the tokens both have (the last ``min(L_student, L_teacher)``).

* :func:`token_distillation`: each student prediction head's word distribution against the teacher's
  (KL divergence at ``temperature``, over the word positions ``mask`` keeps);
* :func:`hidden_distillation`: the student's hidden states, mapped by a learnt ``Linear(student, teacher)``,
  against the teacher's layer ``map[i]`` (MSE; TinyBERT's uniform layer map by default);
* :func:`attention_distillation`: the student's attention probabilities, averaged over heads, against the
  teacher's of the mapped layer (MSE).
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based; 0 = embeddings) for each student layer 1..n: uniform, the last onto the last."""
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def token_distillation(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                       temperature: float = 1.0) -> Tensor:
    """``student_logits (heads, B, T, V)`` against the teacher's ensemble ``(heads', B, T, V)``; ``mask (B, T)``."""
    teacher = F.softmax(teacher_logits.float() / temperature, dim=-1).mean(0).detach()
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (teacher * (teacher.clamp_min(1e-12).log() - student)).sum(-1)       # (heads, B, T)
    return (kl * mask).sum() / (mask.sum().clamp_min(1) * len(student_logits)) * temperature ** 2


def hidden_distillation(student_hidden: list[Tensor], teacher_hidden: list[Tensor], project: nn.Linear) -> Tensor:
    """MSE of the student's layers 1..n (``project``-ed) against the teacher's mapped layers."""
    pairs = layer_map(len(student_hidden) - 1, len(teacher_hidden) - 1)
    n = min(student_hidden[0].shape[1], teacher_hidden[0].shape[1])
    return sum(F.mse_loss(project(student_hidden[i + 1][:, -n:]), teacher_hidden[j][:, -n:].detach())
               for i, j in enumerate(pairs)) / len(pairs)


def attention_distillation(student_attentions: list[Tensor], teacher_attentions: list[Tensor]) -> Tensor:
    """MSE of each student layer's head-averaged attention ``(B, heads, L, L)`` against the mapped teacher layer's."""
    pairs = layer_map(len(student_attentions), len(teacher_attentions))
    n = min(student_attentions[0].shape[-1], teacher_attentions[0].shape[-1])
    return sum(F.mse_loss(student_attentions[i][..., -n:, -n:].mean(1), teacher_attentions[j - 1][..., -n:, -n:]
                          .mean(1).detach()) for i, j in enumerate(pairs)) / len(pairs)
