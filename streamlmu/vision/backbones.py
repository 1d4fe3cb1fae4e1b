"""Image classifiers for continual learning: a reduced-width ResNet-18 with the CIFAR stem, and a small CNN.

    ResNet18(classes, width=20)(x) : (B, 3, H, W) float -> (B, classes) logits
    SmallCNN(classes, width=32)(x) : (B, C, H, W) float -> (B, classes) logits

``ResNet18`` is the network of SparCL's experiments (arXiv 2209.09476) and of the rehearsal methods it
builds on: a 3×3 stride-1 stem (no max-pooling), four stages of two basic blocks with ``width``, 2, 4 and
8 times ``width`` channels, average pooling and a linear classifier; ``width`` 64 is the full network, 20
the reduced one of GEM and mammoth. ``masked_weights`` names the weights sparse training masks: as in the
official SparCL profiles, the residual blocks' 3×3 convolutions (the stem, the 1×1 shortcuts, BatchNorm
and the classifier stay dense).
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a shortcut (a 1×1 convolution where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: ``(B, channels, H, W) -> (B, classes)``."""

    def __init__(self, classes: int, width: int = 20, channels: int = 3):
        super().__init__()
        if classes < 1 or width < 1:
            raise ValueError(f"classes and width must be >= 1 (got {classes}, {width})")
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for index in range(2):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage and not index else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in, classes)

    def features(self, x: Tensor) -> Tensor:
        """``(B, channels, H, W) -> (B, 8 width)``: the pooled features the classifier reads."""
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def masked_weights(self) -> list[str]:
        return [name for name, p in self.named_parameters()
                if name.startswith("blocks.") and name.endswith(("conv1.weight", "conv2.weight"))]


class SmallCNN(nn.Module):
    """Three 3×3 convolutions (``width``, 2, 4 times ``width`` channels; the last two stride 2) with
    BatchNorm, average pooling and a linear classifier, for tiny images: ``(B, channels, H, W) -> (B, classes)``."""

    def __init__(self, classes: int, width: int = 32, channels: int = 3):
        super().__init__()
        if classes < 1 or width < 1:
            raise ValueError(f"classes and width must be >= 1 (got {classes}, {width})")
        layers, c_in = [], channels
        for index, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c_out, 3, 2 if index else 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, classes)

    def features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def masked_weights(self) -> list[str]:
        """The 3×3 convolutions after the first (which, like ResNet-18's stem, stays dense)."""
        return [f"body.{index}.weight" for index in (3, 6)]
