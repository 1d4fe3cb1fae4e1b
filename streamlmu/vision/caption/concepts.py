"""LightCap's visual concept extractor and cross-modal modulator.

    extractor = ConceptExtractor(concept_text (N, D), k=20)
    concepts, scores = extractor(image_embedding (B, D))            # (B, K) concept indices, (B, N) logits
    gates = ChannelModulator(312, channels=2048)(concept_embeddings (B, K, 312))   # (B, C) in [0, 1]
    grid * gates[:, :, None, None]

Design choices where the paper (arXiv 2212.08985) leaves the details open:

* **Concept head.** CLIP's retrieval: the cosine between the image embedding, through a learnt ``D x D`` map that
  starts as the identity, and each concept's text embedding (``"a photo of a {concept}"``, computed once by the
  text tower), times a learnt scale, plus a learnt bias per concept; trained with a binary cross-entropy
  against the concepts the reference captions name. The top ``k`` (20 in the paper) go on.
* **Combining the K attentions.** The modulator gives each concept's token embedding its channel gates
  (two linear blocks, ``hidden -> hidden/8 -> C``: 312 -> 39 -> 2048 in the paper, sigmoid); the image's gates are
  their mean over the K concepts.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ConceptExtractor(nn.Module):
    """``image_embedding (B, D)`` -> ``(top (B, k) concept indices, logits (B, N))`` against the fixed concept text
    embeddings ``concept_text (N, D)`` (unit length)."""

    def __init__(self, concept_text: Tensor, k: int = 20):
        super().__init__()
        count, dim = concept_text.shape
        if not 1 <= k <= count:
            raise ValueError(f"k must be in [1, {count}] (the number of concepts; got {k})")
        self.k = k
        self.register_buffer("concept_text", F.normalize(concept_text.detach().float(), dim=-1))
        self.project = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.project.weight)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.zeros(count))

    def forward(self, image_embedding: Tensor) -> tuple[Tensor, Tensor]:
        if image_embedding.dim() != 2 or image_embedding.shape[1] != self.concept_text.shape[1]:
            raise ValueError(f"image_embedding must be (batch, {self.concept_text.shape[1]}) "
                             f"(got {tuple(image_embedding.shape)})")
        logits = self.scale * F.normalize(self.project(image_embedding), dim=-1) @ self.concept_text.T + self.bias
        return logits.topk(self.k, dim=-1).indices, logits

    @staticmethod
    def loss(logits: Tensor, present: Tensor) -> Tensor:
        """Binary cross-entropy of ``logits (B, N)`` against ``present (B, N)`` (1: a reference caption names it)."""
        return F.binary_cross_entropy_with_logits(logits, present.float())


class ChannelModulator(nn.Module):
    """``concept_embeddings (B, K, hidden)`` -> channel gates ``(B, channels)`` in [0, 1]: each concept's
    ``Linear(hidden, hidden // reduction) -> ReLU -> Linear(.., channels) -> sigmoid``, averaged over K."""

    def __init__(self, hidden: int, channels: int, reduction: int = 8):
        super().__init__()
        self.squeeze = nn.Linear(hidden, max(hidden // reduction, 1))
        self.excite = nn.Linear(max(hidden // reduction, 1), channels)

    def forward(self, concept_embeddings: Tensor) -> Tensor:
        return torch.sigmoid(self.excite(F.relu(self.squeeze(concept_embeddings)))).mean(dim=1)

    @staticmethod
    def modulate(grid: Tensor, gates: Tensor) -> Tensor:
        """``grid (B, C, h, w)`` re-weighted per channel by ``gates (B, C)``."""
        return grid * gates[:, :, None, None]
