"""The stages of ``streamlmu caption-train`` on one caption set, each saved into a run folder and resumable.

    stages = CaptionStages(Path("runs/caption"), "data/scenes/captions.json")
    stages.clip_stage(epochs=10)                                  # OUT/clip.pt
    teacher = stages.captioner_stage("teacher", epochs=10)        # OUT/teacher.pt
    student = stages.captioner_stage("student", epochs=10, teacher=teacher)
    stages.evaluate(student, "test")                              # scores, parameters, sample captions
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from streamlmu.vision.caption.clip import CLIPConfig, ClipTowers, build_clip, load_clip_weights
from streamlmu.vision.caption.data import CaptionSet
from streamlmu.vision.caption.fusion import FusionConfig
from streamlmu.vision.caption.metrics import caption_scores
from streamlmu.vision.caption.model import CaptionConfig, CaptionModel, load_captioner, save_captioner
from streamlmu.vision.caption.training import (Features, TrainConfig, encode_images, generate_captions, train_captioner,
                                               train_clip)
from streamlmu.vision.caption.vocab import Vocabulary


class CaptionStages:
    def __init__(self, out: Path, data: str | Path, images: str | Path | None = None, clip: str = "small",
                 clip_weights: str | Path | None = None, train: TrainConfig = TrainConfig(), progress: bool = True,
                 device: str | torch.device | None = None):
        """``train``: batch, learning rate, seed and distillation weights of every stage (the epochs are each
        stage's own); ``device``: where models train and caption (default: the GPU if there is one)."""
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no GPU here (use cpu)")
        self.out, self.progress = Path(out), progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = CaptionSet.load(data, images)
        self.clip_arch: str | CLIPConfig = CLIPConfig() if clip == "small" else clip
        self.clip_weights, self.train = clip_weights, train
        references = self.data.split_references("train")
        self.vocab = Vocabulary.from_captions(r for refs in references for r in refs)
        self.concepts = [c for c in self.data.concepts if c in self.vocab]
        self.towers: ClipTowers | None = None
        self._features: dict[str, tuple[Features, list[list[str]]]] = {}

    def clip_stage(self, epochs: int) -> ClipTowers:
        """CLIP from ``--clip-weights``, from the run's ``clip.pt``, or trained contrastively on the training split."""
        clip, path = build_clip(self.clip_arch), self.out / "clip.pt"
        if self.clip_weights:
            load_clip_weights(clip, self.clip_weights)
        elif path.is_file():
            load_clip_weights(clip, path)
        else:
            images, references = self.data.split("train", self._image_size(clip))
            train_clip(clip.to(self.device), images, references, replace(self.train, epochs=epochs), self.progress)
            torch.save({name: value.cpu() for name, value in clip.state_dict().items()}, path)
        clip.to(self.device)
        self.towers = ClipTowers(clip.eval())
        return self.towers

    def _image_size(self, clip: torch.nn.Module) -> int:
        size = clip.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else size

    def _clip(self) -> ClipTowers:
        if self.towers is None:
            raise RuntimeError("run clip_stage first")
        return self.towers

    def features(self, split: str) -> tuple[Features, list[list[str]]]:
        """CLIP's outputs for a split's images (computed once) and their references."""
        if split not in self._features:
            towers = self._clip()
            images, references = self.data.split(split, towers.image_size[0])
            self._features[split] = encode_images(towers, images), references
        return self._features[split]

    def captioner_stage(self, name: str, epochs: int, concepts: int = 20, teacher: CaptionModel | None = None,
                        modulator: bool = True, seed: int | None = None) -> CaptionModel:
        """The ``teacher`` (a larger fusion model) or any other captioner (TinyBERT-size), trained on the training
        split (distilled from ``teacher`` if given; ``seed``: the run's unless given) and saved as
        ``OUT/<name>.pt``; loaded if that file exists."""
        path = self.out / f"{name}.pt"
        if path.is_file():
            return load_captioner(path).to(self.device)
        fusion = FusionConfig.teacher() if name == "teacher" else FusionConfig()
        config = CaptionConfig(fusion, min(concepts, len(self.concepts)), modulator)
        model = CaptionModel(self._clip(), self.vocab, self.concepts, config).to(self.device)
        features, references = self.features("train")
        train_captioner(model, features, references, self.data.concept_targets("train")[:, self._concept_columns()],
                        replace(self.train, epochs=epochs, seed=self.train.seed if seed is None else seed), teacher,
                        self.progress, name)
        save_captioner(model, path, self.clip_arch)
        return model

    def _concept_columns(self) -> list[int]:
        return [self.data.concept_index[c] for c in self.concepts]

    def evaluate(self, model: CaptionModel, split: str, beam: int = 1, samples: int = 5) -> dict:
        """Scores on ``split``, the trainable parameters (and with CLIP), and the first ``samples`` captions."""
        features, references = self.features(split)
        captions = generate_captions(model, features, beam)
        trainable = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("towers."))
        return {"parameters": trainable, "parameters_with_clip": sum(p.numel() for p in model.parameters()),
                "scores": caption_scores(captions, references),
                "samples": [{"caption": c, "reference": r[0]} for c, r in zip(captions[:samples], references)]}
