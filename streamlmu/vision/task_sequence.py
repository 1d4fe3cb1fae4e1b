"""Training a :class:`ContinualLearner` on a class-incremental split, task after task, as SparCL's code does.

Per task: ``epochs`` passes over the task's training images in shuffled batches. At every
``mask_every``-th epoch (epoch 0 included, so at every task boundary) the learner's masks are updated
(TDM), regrowing ``extra`` of each layer except in the last ``still_epochs`` epochs of the task; from epoch
``removal_every`` on, every ``removal_every`` epochs for ``removal_steps`` times, the ``removal`` fraction
of the task's images (in equal parts) that were forgotten least since the last removal leaves the
training set (DDR). After each task the network is tested on the test images of every task: class-IL
accuracy (all classes compete) and task-IL accuracy (only the task's own classes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu.vision.continual import ContinualLearner, LearnerState, labelled
from streamlmu.vision.forgetting import forgetting_init, least_forgotten
from streamlmu.vision.splits import Split


@dataclass(frozen=True)
class Schedule:
    """How a task is trained (SparCL's official run: 50 epochs a task, batch 32, masks every 5 epochs, no
    regrowth in the last 5, 30 % of the data removed in four steps every 5 epochs)."""

    epochs: int = 50
    batch: int = 32
    mask_every: int = 5
    still_epochs: int = 5
    removal: float = 0.0
    removal_steps: int = 4
    removal_every: int = 5
    seed: int = 0

    @classmethod
    def scaled(cls, epochs: int, batch: int = 32, removal: float = 0.3, seed: int = 0) -> "Schedule":
        """The official proportions for ``epochs`` a task: masks every tenth of them and still in the last
        tenth, data removal every tenth but at least every second epoch (a forgetting event needs two
        presentations)."""
        tenth = max(1, round(epochs / 10))
        return cls(epochs=epochs, batch=batch, mask_every=tenth, still_epochs=tenth, removal=removal,
                   removal_every=max(2, tenth), seed=seed)

    def check(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.mask_every < 1 or self.removal_every < 1:
            raise ValueError("epochs, batch, mask_every and removal_every must be >= 1")
        if not 0.0 <= self.removal < 1.0:
            raise ValueError(f"removal must be a fraction in [0, 1) (got {self.removal})")


class SequenceResult(NamedTuple):
    """``class_il[i, j]`` and ``task_il[i, j]``: accuracy on task j's test images after training task i
    (nan for j > i); ``kept[i]`` task i's training images left after data removal; ``flops`` the training
    FLOPs, ``seconds`` the wall time of training, ``state`` the learner's last state."""

    class_il: np.ndarray
    task_il: np.ndarray
    kept: list[int]
    flops: float
    seconds: float
    state: LearnerState

    @property
    def final_class_il(self) -> float:
        return float(np.nanmean(self.class_il[-1]))

    @property
    def final_task_il(self) -> float:
        return float(np.nanmean(self.task_il[-1]))

    @property
    def backward_transfer(self) -> float:
        """Mean change of each earlier task's class-IL accuracy from just after it was learnt to the end."""
        last = len(self.class_il) - 1
        if last == 0:
            return 0.0
        return float(np.mean([self.class_il[last, j] - self.class_il[j, j] for j in range(last)]))


def evaluate(learner: ContinualLearner, state: LearnerState, split: Split, tasks: int | None = None,
             batch: int = 256) -> tuple[list, list]:
    """Class-IL and task-IL accuracy on the test images of each of the first ``tasks`` tasks (default: all)."""
    predictor = learner.predictor(state)
    class_il, task_il = [], []
    for t, classes in enumerate(split.tasks[:tasks]):
        images, labels = split.task(t, "test")
        logits = torch.cat([predictor(images[i:i + batch, None])[0][:, 0].cpu()
                            for i in range(0, len(labels), batch)])
        class_il.append(float((logits.argmax(1) == labels).float().mean()))
        own = torch.tensor(classes)
        task_il.append(float((own[logits[:, own].argmax(1)] == labels).float().mean()))
    return class_il, task_il


def train_tasks(learner: ContinualLearner, split: Split, schedule: Schedule = Schedule(),
                state: LearnerState | None = None, progress: bool = False) -> SequenceResult:
    """Train ``learner`` on every task of ``split`` in order (see the module docstring)."""
    from tqdm import tqdm
    schedule.check()
    tasks = len(split.tasks)
    class_il, task_il = np.full((tasks, tasks), np.nan), np.full((tasks, tasks), np.nan)
    state = learner.init_state() if state is None else state
    rng = np.random.default_rng(schedule.seed)
    ties = torch.Generator().manual_seed(schedule.seed)  # the order of equally forgotten images
    seconds, kept = 0.0, []
    for t in range(tasks):
        images, labels = split.task(t)
        active = torch.ones(len(labels), dtype=torch.bool)
        per_removal = int(round(schedule.removal * len(labels) / max(schedule.removal_steps, 1)))
        removals = 0
        state = state._replace(forgetting=forgetting_init(len(labels)))
        start = time.perf_counter()
        for epoch in tqdm(range(schedule.epochs), desc=f"{split.name} task {t + 1}/{tasks}", disable=not progress,
                          leave=False):
            if epoch % schedule.mask_every == 0:
                still = epoch >= schedule.epochs - schedule.still_epochs
                state = learner.update_masks(state, 0.0 if still else None)
            if (schedule.removal and epoch and epoch % schedule.removal_every == 0
                    and removals < schedule.removal_steps):
                active[least_forgotten(state.forgetting, active, per_removal, ties)] = False
                state = state._replace(forgetting=forgetting_init(len(labels)))
                removals += 1
            state = _epoch(learner, state, images, labels, active, t, schedule.batch, rng)
        state = learner.end_task(state, images[active], labels[active])
        seconds += time.perf_counter() - start
        kept.append(int(active.sum()))
        class_il[t, :t + 1], task_il[t, :t + 1] = evaluate(learner, state, split, t + 1)
    return SequenceResult(class_il, task_il, kept, float(state.flops), seconds, state)


def _epoch(learner: ContinualLearner, state: LearnerState, images: Tensor, labels: Tensor, active: Tensor,
           task: int, batch: int, rng: np.random.Generator) -> LearnerState:
    order = torch.from_numpy(rng.permutation(active.nonzero().squeeze(1).numpy()))
    for i in range(0, len(order) - batch + 1, batch):  # full batches, as the official loop
        rows = order[i:i + batch]
        _, state = learner.step(labelled(images[rows], labels[rows], task, rows), state)
    return state


def plot_accuracy(matrices: dict[str, list | np.ndarray], path, title: str = "") -> object:
    """Mean class-IL accuracy over the tasks seen after each task, one line per method (a one-row matrix,
    as joint training gives, as a dashed level)."""
    from streamlmu.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, matrix in matrices.items():
        m = np.asarray(matrix, dtype=float)
        if len(m) == 1:
            ax.axhline(float(np.nanmean(m)), linestyle="--", color="grey", label=name)
            continue
        ax.plot(range(1, len(m) + 1), [np.nanmean(m[i, :i + 1]) for i in range(len(m))], marker="o", label=name)
    ax.set_xlabel("tasks learnt")
    ax.set_ylabel("class-IL accuracy, tasks seen")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
