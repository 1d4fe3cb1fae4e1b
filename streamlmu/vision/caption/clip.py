"""CLIP towers from open_clip for captioning: grid features and an image embedding in one pass, text embeddings.

    clip = build_clip("small")                      # or "RN50", any open_clip name, or a CLIPConfig
    load_clip_weights(clip, "clip.pt")              # any checkpoint of that architecture (open_clip's loader)
    towers = ClipTowers(clip)
    grid, embedding = towers.image(images)          # (B, 3, H, W) uint8 or [0, 1] -> (B, C, h, w), (B, D)
    text = towers.text(["a red circle"])            # (N, D), unit length

No pretrained CLIP weights ship with any package and none can be downloaded here: architectures are built with
random weights (``pretrained=None``) and trained on our own data, or loaded from a checkpoint the user has.
``RN50`` without its attention pooler gives LightCap's 2048-channel 7×7 grid at 224 px; ``small`` is a
ModifiedResNet of the same design (layers 1-1-1-1, width 16: 512 channels, 3×3 at 96 px) for the bundled demo.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.vision.yolo import require

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation (open_clip's OPENAI_DATASET_*)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPConfig:
    """A ModifiedResNet image tower and a text transformer (open_clip's ``CLIPVisionCfg``/``CLIPTextCfg``
    fields of the same names); ``layers`` per ResNet stage, ``width`` the stem's channels (grid: 32×)."""

    embed_dim: int = 128
    image_size: int = 96
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    width: int = 16
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 2
    context_length: int = 24


def build_clip(arch: str | CLIPConfig = "small") -> nn.Module:
    """An open_clip ``CLIP`` with random weights: ``"small"`` (:class:`CLIPConfig` defaults), a
    :class:`CLIPConfig`, or any model name of ``open_clip.list_models()`` (e.g. ``"RN50"``)."""
    open_clip = require("open_clip")
    if arch == "small":
        arch = CLIPConfig()
    if isinstance(arch, CLIPConfig):
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
        model = CLIP(arch.embed_dim,
                     CLIPVisionCfg(layers=arch.layers, width=arch.width, image_size=arch.image_size,
                                   head_width=max(arch.width, 16)),
                     CLIPTextCfg(context_length=arch.context_length, width=arch.text_width,
                                 heads=arch.text_heads, layers=arch.text_layers))
        model.streamlmu_config = asdict(arch)
        return model
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown CLIP architecture {arch!r}: 'small', a CLIPConfig or one of open_clip's "
                         f"models ({', '.join(open_clip.list_models()[:6])}, ...)")
    return open_clip.create_model(arch, pretrained=None)  # logs that no pretrained weights were loaded


def load_clip_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an open_clip checkpoint (``.pt``/``.bin``/``.safetensors``; a state dict, possibly under
    ``"state_dict"``) into ``model``; a checkpoint of another architecture is an error naming what differs."""
    require("open_clip")
    from open_clip.factory import load_state_dict
    if not Path(path).is_file():
        raise FileNotFoundError(f"no CLIP checkpoint at {path}")
    state = load_state_dict(str(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"other shapes {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shapes[:2]]}" if shapes
            else "") if part)
        raise ValueError(f"{path} is a CLIP checkpoint of another architecture than the model's "
                         f"({type(model.visual).__name__} image tower): {detail}")
    model.load_state_dict(state)
    return model


class ClipTowers(nn.Module):
    """The image tower's grid features and pooled embedding in one pass, and the text tower.

    ``image``: ``(B, 3, H, W)`` uint8 RGB or float in [0, 1], any size (resized to the tower's) ->
    ``grid (B, C, h, w)`` (the last stage, before pooling) and ``embedding (B, D)`` unit length.
    ``text``: strings -> ``(N, D)`` unit length, with open_clip's bundled BPE tokenizer.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        size = clip.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            grid, embedding = self.image(torch.zeros(1, 3, *self.image_size))
        self.grid_channels, self.grid_size, self.embed_dim = grid.shape[1], tuple(grid.shape[2:]), embedding.shape[1]

    def prepare(self, images: Tensor) -> Tensor:
        """Check, scale to [0, 1], resize and normalise ``(B, 3, H, W)`` images for the image tower."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be (batch, 3, height, width) RGB, uint8 or float in [0, 1] (got {shape}; "
                             f"convert grayscale to RGB first)")
        if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
            raise ValueError(f"images must not be empty (got {tuple(images.shape)})")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if tuple(x.shape[2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return (x.to(self.mean.device) - self.mean) / self.std

    def image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.clip.visual.forward_intermediates(self.prepare(images), indices=1)
        return out["image_intermediates"][-1], F.normalize(out["image_features"], dim=-1)

    def text(self, texts: list[str]) -> Tensor:
        tokenizer = require("open_clip").tokenizer.SimpleTokenizer(context_length=self.clip.context_length)
        tokens = tokenizer(list(texts)).to(self.clip.logit_scale.device)
        return F.normalize(self.clip.encode_text(tokens), dim=-1)
