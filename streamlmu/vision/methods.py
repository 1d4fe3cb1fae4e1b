"""The continual-learning methods compared by ``streamlmu continual`` and ``bench/continual.py``, built one way.

* ``finetune``: SGD on each task in turn, nothing kept (the lower bound);
* ``derpp``: dense DER++, every class in the cross-entropy (as mammoth and avalanche-lib; the config's
  ``buffer_policy`` picks mammoth's reservoir or avalanche-lib's class-balanced buffer);
* ``derpp-masked``: dense DER++ with the current batch's other-task classes masked, as SparCL's code does;
* ``sparcl``: ``derpp-masked`` with SparCL's three parts: weight masks at ``sparsity`` (TDM), gradient masks
  (DGM) and dynamic data removal of each task's images;
* ``joint``: every task's images at once (the upper bound).

Data: ``digits`` (Split-Digits, 16 px), ``shapes`` (Split-Shapes, 32 px), ``cifar10:DIR`` or ``cifar100:DIR``
(the official python archives in DIR). Networks: ``small`` (:class:`SmallCNN`) or ``resnet18`` (reduced
width, CIFAR stem).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamlmu.vision.backbones import ResNet18, SmallCNN
from streamlmu.vision.continual import ContinualConfig, ContinualLearner
from streamlmu.vision.splits import Split, split_cifar, split_digits
from streamlmu.vision.task_sequence import Schedule, evaluate, train_tasks

METHODS = ("finetune", "derpp", "derpp-masked", "sparcl", "joint")
NETWORKS = ("small", "resnet18")


def load_split(spec: str, seed: int = 0) -> Split:
    """``digits``, ``shapes`` or ``cifar10:DIR`` / ``cifar100:DIR``."""
    name, _, folder = spec.partition(":")
    if name == "digits":
        return split_digits(size=16, seed=seed)
    if name == "shapes":
        from streamlmu.vision.shapes import split_shapes
        return split_shapes(seed=seed)
    if name in ("cifar10", "cifar100") and folder:
        return split_cifar(folder, classes=10 if name == "cifar10" else 100)
    raise ValueError(f"--data must be digits, shapes, cifar10:DIR or cifar100:DIR (got {spec!r})")


def network(kind: str, split: Split, width: int):
    """A fresh classifier for ``split``'s images and classes."""
    channels = split.image_shape[0]
    if kind == "small":
        return SmallCNN(split.classes, width=width, channels=channels)
    if kind == "resnet18":
        return ResNet18(split.classes, width=width, channels=channels)
    raise ValueError(f"the network must be one of {', '.join(NETWORKS)} (got {kind!r})")


def run_method(method: str, split: Split, schedule: Schedule, config: ContinualConfig = ContinualConfig(),
               net: str = "small", width: int = 32, progress: bool = False) -> dict:
    """Train ``method`` on ``split`` with ``schedule`` and ``config`` (its sparsity used by ``sparcl`` only), on
    the GPU when there is one: final class-IL and task-IL accuracy, backward transfer, training FLOPs, wall
    time, the accuracy matrix."""
    import torch
    if method not in METHODS:
        raise ValueError(f"the method must be one of {', '.join(METHODS)} (got {method!r})")
    torch.manual_seed(config.seed)
    model = network(net, split, width)
    if method == "sparcl":
        if not config.sparsity:
            raise ValueError("sparcl needs a sparsity in (0, 1)")
    else:
        config = replace(config, sparsity=0.0)
        schedule = replace(schedule, removal=0.0)
    if method in ("finetune", "joint"):
        config = replace(config, alpha=0.0, beta=0.0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if method == "joint":
        together = Split(split.name, split.train, split.test, (tuple(range(split.classes)),))
        learner = ContinualLearner(model, config, split.image_shape, None)
        result = train_tasks(learner, together, schedule, learner.init_state(device=device), progress=progress)
        class_il, task_il = evaluate(learner, result.state, split)
        matrix, bwt = np.array([class_il]), 0.0
    else:
        masked = method in ("derpp-masked", "sparcl")
        learner = ContinualLearner(model, config, split.image_shape, split.tasks if masked else None)
        result = train_tasks(learner, split, schedule, learner.init_state(device=device), progress=progress)
        class_il, task_il, matrix, bwt = result.class_il[-1], result.task_il[-1], result.class_il, \
            result.backward_transfer
    return {"method": method, "sparsity": config.sparsity, "buffer_policy": config.buffer_policy,
            "shared_replay": config.shared_replay, "seed": config.seed,
            "class_il": float(np.mean(class_il)), "task_il": float(np.mean(task_il)), "bwt": bwt,
            "flops": result.flops, "seconds": round(result.seconds, 2), "kept": result.kept,
            "class_il_matrix": np.asarray(matrix).tolist()}
