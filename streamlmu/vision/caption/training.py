"""Training a captioner in stages: a small CLIP (contrastive), a teacher, then the student distilled from it.

    clip = train_clip(build_clip(CLIPConfig()), images, references, TrainConfig(epochs=10))
    features = encode_images(ClipTowers(clip), images)          # CLIP is frozen from here on: encoded once
    train_captioner(teacher, features, references, concept_targets, TrainConfig())
    train_captioner(student, features, references, concept_targets, TrainConfig(), teacher=teacher)
    captions = generate_captions(student, features, beam=1)

A captioner's concept head is first fitted alone on the frozen image embeddings (``concept_epochs``; seconds):
LightCap trains its concept extractor on its own data (Visual Genome; arXiv 2212.08985, appendix A.1). Then
the captioner learns the next word of a reference (one of the image's references, drawn anew each epoch;
teacher forcing, cross-entropy for each prediction head) and its concepts (binary cross-entropy of the head).
With a teacher it also learns the teacher's word distributions and, if their weights are set, its hidden states
and attention maps (:mod:`~streamlmu.vision.caption.distill`). AdamW with a cosine learning rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from streamlmu.vision.caption.clip import ClipTowers
from streamlmu.vision.caption.concepts import ConceptExtractor
from streamlmu.vision.caption.distill import attention_distillation, hidden_distillation, token_distillation
from streamlmu.vision.caption.model import CaptionModel
from streamlmu.vision.caption.vocab import PAD, Vocabulary
from streamlmu.vision.yolo import require


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    concept_weight: float = 1.0        # the concept head's BCE
    concept_epochs: int = 10           # the concept head alone first (AdamW at concept_lr); 0: off
    concept_lr: float = 1e-2
    token_weight: float = 1.0          # distillation, with a teacher: word distributions (KL)
    hidden_weight: float = 0.0         # hidden states (MSE); 0: off (it hurt on the scene set: docs/benchmarks.md)
    attention_weight: float = 0.0      # attention maps (MSE); 0: off (likewise)
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        weights = (self.concept_weight, self.token_weight, self.hidden_weight, self.attention_weight)
        if (min(self.epochs, self.concept_epochs) < 0 or self.batch < 1 or min(self.lr, self.concept_lr) <= 0
                or min(weights) < 0 or self.temperature <= 0):
            raise ValueError(f"need epochs >= 0, batch >= 1, learning rates > 0, weights >= 0 and temperature > 0 "
                             f"(got {self})")


class Features(NamedTuple):
    """CLIP's outputs for a set of images: ``grid (N, C, h, w)`` and ``embedding (N, D)``."""

    grid: Tensor
    embedding: Tensor


class _Optimizer:
    """AdamW with a linear warm-up and a cosine learning rate over ``steps``, and a progress bar."""

    def __init__(self, parameters: list[Tensor], cfg: TrainConfig, steps: int, name: str, progress: bool):
        self.optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = max(1, steps // 20)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup)
                                                          * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        self.bar = tqdm(total=steps, desc=name, disable=not progress)

    def step(self, loss: Tensor) -> float:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        value = float(loss.detach())
        self.bar.update()
        self.bar.set_postfix(loss=f"{value:.3f}")
        return value


def _epochs(references: list[list[str]], cfg: TrainConfig, rng: np.random.Generator
            ) -> Iterator[list[tuple[np.ndarray, list[str]]]]:
    """Per epoch, batches of image rows in a new order, each row with one of its references drawn anew."""
    for _ in range(cfg.epochs):
        order = rng.permutation(len(references))
        batches = [order[i:i + cfg.batch] for i in range(0, len(order), cfg.batch)]
        yield [(rows, [references[i][rng.integers(len(references[i]))] for i in rows]) for rows in batches]


def train_clip(clip: nn.Module, images: Tensor, references: list[list[str]], cfg: TrainConfig,
               progress: bool = True) -> list[float]:
    """Contrastive training of an open_clip ``clip`` on ``images (N, 3, H, W)`` and one of each image's references
    per epoch (open_clip's ``ClipLoss``); returns the mean loss of each epoch."""
    open_clip = require("open_clip")
    towers = ClipTowers(clip)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=clip.context_length)
    loss_fn = open_clip.loss.ClipLoss()
    rng = np.random.default_rng(cfg.seed)
    optimizer = _Optimizer(list(clip.parameters()), cfg, cfg.epochs * math.ceil(len(images) / cfg.batch), "CLIP",
                           progress)
    history = []
    clip.train()
    with optimizer.bar:
        for epoch in _epochs(references, cfg, rng):
            losses = []
            for rows, texts in epoch:
                image_features = F.normalize(clip.encode_image(towers.prepare(images[rows])), dim=-1)
                text_features = F.normalize(clip.encode_text(tokenizer(texts).to(clip.logit_scale.device)), dim=-1)
                losses.append(optimizer.step(loss_fn(image_features, text_features, clip.logit_scale.exp())))
                with torch.no_grad():
                    clip.logit_scale.clamp_(0, math.log(100))
            history.append(float(np.mean(losses)))
    clip.eval()
    return history


def encode_images(towers: ClipTowers, images: Tensor, batch: int = 256) -> Features:
    """CLIP's grid and embedding of every image, in batches."""
    grids, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            grid, embedding = towers.image(images[start:start + batch])
            grids.append(grid)
            embeddings.append(embedding)
    return Features(torch.cat(grids), torch.cat(embeddings))


def word_batch(references: list[str], vocab: Vocabulary, max_words: int) -> Tensor:
    """``<bos> words <eos>`` of each caption, cut to ``max_words`` words and padded: ``(B, T)`` int64."""
    rows = [vocab.encode(r) for r in references]
    rows = [r[:max_words + 1] + [r[-1]] if len(r) > max_words + 2 else r for r in rows]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.int64)


def fit_concepts(extractor: ConceptExtractor, embedding: Tensor, concept_targets: Tensor, cfg: TrainConfig) -> float:
    """Fit the concept head alone on the frozen image ``embedding (N, D)`` against ``concept_targets (N, concepts)``
    for ``cfg.concept_epochs`` (AdamW at ``cfg.concept_lr``, batches of ``cfg.batch``); returns the last epoch's
    mean binary cross-entropy."""
    optimizer = torch.optim.AdamW(extractor.parameters(), lr=cfg.concept_lr, weight_decay=cfg.weight_decay)
    rng, loss, targets = np.random.default_rng(cfg.seed), float("nan"), concept_targets.to(embedding.device)
    for _ in range(cfg.concept_epochs):
        order, losses = rng.permutation(len(embedding)), []
        for start in range(0, len(order), cfg.batch):
            rows = order[start:start + cfg.batch]
            step = ConceptExtractor.loss(extractor(embedding[rows])[1], targets[rows])
            optimizer.zero_grad()
            step.backward()
            optimizer.step()
            losses.append(float(step.detach()))
        loss = float(np.mean(losses))
    return loss


def train_captioner(model: CaptionModel, features: Features, references: list[list[str]], concept_targets: Tensor,
                    cfg: TrainConfig, teacher: CaptionModel | None = None, progress: bool = True,
                    name: str = "captioner") -> list[float]:
    """Train ``model``'s concept head (first alone: :func:`fit_concepts`), modulator and fusion model (with
    ``teacher``: distilled from it too); returns the mean loss of each epoch."""
    if len(features.grid) != len(references) or len(references) != len(concept_targets):
        raise ValueError(f"need features, references and concept targets of the same images (got "
                         f"{len(features.grid)}, {len(references)}, {len(concept_targets)})")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = features.grid.device
    if model.extractor is not None and cfg.concept_epochs:
        fit_concepts(model.extractor, features.embedding, concept_targets, cfg)
    project = None
    if teacher is not None:
        teacher.eval()
        project = nn.Linear(model.config.fusion.hidden, teacher.config.fusion.hidden).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad] + (list(project.parameters()) if project else [])
    optimizer = _Optimizer(trainable, cfg, cfg.epochs * math.ceil(len(references) / cfg.batch), name, progress)
    history, max_words = [], model.config.fusion.max_words - 2
    model.train()
    with optimizer.bar:
        for epoch in _epochs(references, cfg, rng):
            losses = []
            for rows, texts in epoch:
                words = word_batch(texts, model.vocab, max_words).to(device)
                inputs, targets = words[:, :-1], words[:, 1:]
                prefix = model.prefix(features.grid[rows], features.embedding[rows])
                out = model(prefix, inputs, attentions=teacher is not None and cfg.attention_weight > 0)
                loss = sum(F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD)
                           for logits in out.logits) / len(out.logits)
                if model.extractor is not None and cfg.concept_weight:
                    loss = loss + cfg.concept_weight * ConceptExtractor.loss(prefix.concept_logits,
                                                                             concept_targets[rows].to(device))
                if teacher is not None:
                    loss = loss + _distillation(out, teacher, features, rows, inputs, targets != PAD, project, cfg)
                losses.append(optimizer.step(loss))
            history.append(float(np.mean(losses)))
    model.eval()
    return history


def _distillation(out, teacher: CaptionModel, features: Features, rows: np.ndarray, inputs: Tensor, mask: Tensor,
                  project: nn.Linear, cfg: TrainConfig) -> Tensor:
    with torch.no_grad():
        taught = teacher(teacher.prefix(features.grid[rows], features.embedding[rows]), inputs,
                         attentions=cfg.attention_weight > 0)
    loss = cfg.token_weight * token_distillation(out.logits, taught.logits, mask.float(), cfg.temperature)
    if cfg.hidden_weight:
        loss = loss + cfg.hidden_weight * hidden_distillation(out.hidden, taught.hidden, project)
    if cfg.attention_weight:
        loss = loss + cfg.attention_weight * attention_distillation(out.attentions, taught.attentions)
    return loss


def generate_captions(model: CaptionModel, features: Features, beam: int = 1, batch: int = 128) -> list[str]:
    """One caption per image of ``features``."""
    model.eval()
    captions = []
    for start in range(0, len(features.grid), batch):
        prefix = model.prefix(features.grid[start:start + batch], features.embedding[start:start + batch])
        ids, _ = model.generate(prefix, beam)
        captions += [model.vocab.decode(row) for row in ids.tolist()]
    return captions
