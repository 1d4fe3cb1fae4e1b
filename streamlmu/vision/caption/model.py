"""A LightCap-style captioner: frozen CLIP towers, concept extractor, modulator, fusion model, decoding.

    model = CaptionModel(ClipTowers(build_clip("small")), vocab, concept_words, CaptionConfig())
    prefix = model.encode(images)                     # (B, 3, H, W) -> Prefix
    out = model(prefix, words)                        # FusionOutput, for training
    ids, lengths = model.generate(prefix, beam=1)     # (B, max_words + 1), (B,)
    model.captions(images)                            # ["a red circle left of a blue square", ...]

The CLIP towers stay frozen (LightCap trains only the concept head, the modulator and the fusion model).
``CaptionConfig(concepts=0)`` drops the concept extractor and the modulator, ``modulator=False`` the modulator
alone: the ablations of the paper's Table 4.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from streamlmu.vision.caption.clip import CLIPConfig, ClipTowers, build_clip
from streamlmu.vision.caption.concepts import ChannelModulator, ConceptExtractor
from streamlmu.vision.caption.decode import beam_search, greedy
from streamlmu.vision.caption.fusion import FusionConfig, FusionModel, FusionOutput
from streamlmu.vision.caption.vocab import Vocabulary

CONCEPT_PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class CaptionConfig:
    fusion: FusionConfig = field(default_factory=FusionConfig)
    concepts: int = 20          # K concepts per image; 0: no concept extractor and no modulator
    modulator: bool = True


class Prefix(NamedTuple):
    """What the fusion model reads before the words: ``concepts (B, K)`` word ids, ``grid (B, C, h, w)`` (modulated),
    ``embedding (B, D)`` the image embedding, ``concept_logits (B, N)``."""

    concepts: Tensor
    grid: Tensor
    embedding: Tensor
    concept_logits: Tensor


class CaptionModel(nn.Module):
    def __init__(self, towers: ClipTowers, vocab: Vocabulary, concept_words: Sequence[str],
                 config: CaptionConfig = CaptionConfig()):
        super().__init__()
        self.towers, self.vocab, self.config = towers.eval().requires_grad_(False), vocab, config
        self.concept_words = tuple(concept_words)
        self.register_buffer("concept_ids", torch.tensor([vocab.id(w) for w in self.concept_words], dtype=torch.int64))
        self.extractor = self.modulator = None
        if config.concepts:
            with torch.no_grad():
                text = towers.text([CONCEPT_PROMPT.format(w) for w in self.concept_words])
            self.extractor = ConceptExtractor(text, config.concepts)
            if config.modulator:
                self.modulator = ChannelModulator(config.fusion.hidden, towers.grid_channels)
        cells = towers.grid_size[0] * towers.grid_size[1]
        self.fusion = FusionModel(config.fusion, len(vocab), towers.grid_channels, cells)

    def train(self, mode: bool = True) -> "CaptionModel":
        super().train(mode)
        self.towers.eval()                      # frozen, BatchNorm statistics included
        return self

    def encode(self, images: Tensor) -> Prefix:
        """``(B, 3, H, W)`` images -> their :class:`Prefix`."""
        with torch.no_grad():
            grid, embedding = self.towers.image(images)
        return self.prefix(grid, embedding)

    def prefix(self, grid: Tensor, embedding: Tensor) -> Prefix:
        """The prefix of CLIP's ``grid (B, C, h, w)`` and ``embedding (B, D)``: concepts, modulated grid."""
        if self.extractor is None:
            concepts, logits = grid.new_zeros(grid.shape[0], 0, dtype=torch.int64), grid.new_zeros(grid.shape[0], 0)
        else:
            top, logits = self.extractor(embedding)
            concepts = self.concept_ids[top]
            if self.modulator is not None:
                grid = self.modulator.modulate(grid, self.modulator(self.fusion.words(concepts)))
        return Prefix(concepts, grid, embedding, logits)

    def forward(self, prefix: Prefix, words: Tensor, attentions: bool = False) -> FusionOutput:
        """``words (B, T)``: ``<bos>`` and the caption so far -> the next word's logits at every position."""
        return self.fusion(prefix.concepts, prefix.grid, words, attentions)

    def generate(self, prefix: Prefix, beam: int = 1, max_words: int | None = None,
                 length_penalty: float = 0.0) -> tuple[Tensor, Tensor]:
        """Word ids ``(B, max_words + 1)`` and lengths ``(B,)``: greedy for ``beam`` 1, else beam search;
        ``max_words`` at most (default) the fusion model's ``max_words - 2`` (room for ``<bos>`` and ``<eos>``)."""
        most = self.config.fusion.max_words - 2
        max_words = most if max_words is None else max_words
        if not 1 <= max_words <= most:
            raise ValueError(f"max_words must be in [1, {most}] (got {max_words})")

        def next_log_probs(rows: Tensor, words: Tensor) -> Tensor:
            out = self.fusion(prefix.concepts[rows], prefix.grid[rows], words)
            return FusionModel.log_probs(out.logits[:, :, -1])
        batch, device = prefix.grid.shape[0], prefix.grid.device
        with torch.no_grad():
            if beam == 1:
                return greedy(next_log_probs, batch, max_words, device)
            return beam_search(next_log_probs, batch, beam, max_words, length_penalty, device)

    def captions(self, images: Tensor, beam: int = 1, max_words: int | None = None) -> list[str]:
        ids, _ = self.generate(self.encode(images), beam, max_words)
        return [self.vocab.decode(row) for row in ids.tolist()]


def save_captioner(model: CaptionModel, path: str | Path, clip_arch: str | CLIPConfig) -> None:
    """The whole captioner in one file: CLIP's architecture and weights, vocabularies, settings, weights."""
    arch = asdict(clip_arch) if isinstance(clip_arch, CLIPConfig) else clip_arch
    torch.save({"format": "streamlmu-captioner-1", "clip_arch": arch, "vocab": list(model.vocab.tokens[4:]),
                "concept_words": list(model.concept_words), "config": asdict(model.config),
                "state": model.state_dict()}, path)


def load_captioner(path: str | Path) -> CaptionModel:
    """A captioner written by :func:`save_captioner`, in eval mode."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no captioner at {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != "streamlmu-captioner-1":
        raise ValueError(f"{path} is not a captioner written by streamlmu (save_captioner)")
    arch = saved["clip_arch"]
    if isinstance(arch, dict):
        arch = CLIPConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})
    config = dict(saved["config"])
    config = CaptionConfig(fusion=FusionConfig(**config.pop("fusion")), **config)
    model = CaptionModel(ClipTowers(build_clip(arch)), Vocabulary(saved["vocab"]), saved["concept_words"], config)
    model.load_state_dict(saved["state"])
    return model.eval()
