"""Sparse continual learning (SparCL on DER++, arXiv 2209.09476) as a learner over a stream of labelled images.

    learner = ContinualLearner(ResNet18(10), ContinualConfig(sparsity=0.75), tasks=split.tasks)
    state = learner.init_state()
    logits, state = learner.step(Labelled(images (B, C, H, W), labels (B,), task (B,), index (B,)), state)
    logits, state = learner(Labelled(images (B, T, C, H, W), ...), state)   # T steps
    predictor = learner.predictor(state)          # a stream operator: (B, T, C, H, W) -> (B, T, classes)

Each step is prequential: the network first predicts the batch (eval mode), then learns from its labelled
images (label -1: predict only). Learning is DER++ (Buzzega et al. 2020): the cross-entropy on the batch,
with the classes of other tasks masked when ``tasks`` is given, as SparCL's code does, plus ``alpha`` times
the MSE between the logits of a replayed batch and those stored with it and ``beta`` times the
cross-entropy on the labels of another, both drawn from a reservoir buffer once it holds images of an earlier
task (SparCL's code replays from the second task on); plain SGD, no momentum. With ``buffer_policy``
``"balanced"`` the buffer is avalanche-lib's instead: class-balanced, filled by :meth:`ContinualLearner.end_task`
at the end of each task with the logits of the network at that point; with ``shared_replay`` one replayed
batch serves both replay terms, as in avalanche-lib's DER. With ``joint_forward`` (the
default) the batch and its replays pass the network together, so BatchNorm normalises them as one batch,
as avalanche-lib's DER does; mammoth and SparCL's code pass them one by one (``joint_forward=False``). With
``sparsity`` > 0 the layers ``model.masked_weights()`` names are sparse: they start magnitude-pruned, their
gradients are masked (dynamic gradient masking: a new mask at the first step after each mask update and
every ``gradient_every`` steps after it, at ``gradient_percentile``)
and the weights re-masked after every update; :meth:`ContinualLearner.update_masks` (task-aware dynamic
masking) is called by the training loop at its epoch boundaries, with the last batch's gradient the state
keeps. Where the state's forgetting statistics are sized for a task's training set
(``state._replace(forgetting=forgetting_init(n))``) it counts each example's forgetting events by its
``index`` for dynamic data removal (:mod:`streamlmu.vision.forgetting`), and it counts the training FLOPs
that ran (:mod:`streamlmu.vision.train_flops`).

Unlike the stream contract's per-stream state, a learner's state is shared by the batch: the ``B`` images of
a time step form one training batch. The predictor has per-stream (empty) state and keeps the contract.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from streamlmu.stream import Frame, Map, StreamModule, register_state
from streamlmu.vision.forgetting import Forgetting, forgetting_init, record
from streamlmu.vision.rehearsal import (Buffer, balanced_fill, derpp_loss, empty_buffer, filled, replay,
                                        reservoir_add)
from streamlmu.vision.sparse_training import gradient_mask, magnitude_mask, prune_and_regrow
from streamlmu.vision.train_flops import layer_macs, training_flops

register_state(Buffer)
register_state(Forgetting)

BUFFER_POLICIES = ("reservoir", "balanced")


@dataclass(frozen=True)
class ContinualConfig:
    """DER++ and SparCL settings; the defaults are SparCL's runs (``alpha`` 0.1, ``beta`` 0.5, lr 0.03,
    buffer 500; TDM ``extra`` 0.01 and λ 0.5; DGM every 30 steps at the 80th percentile), except
    ``joint_forward`` (see the module docstring)."""

    lr: float = 0.03
    buffer: int = 500
    alpha: float = 0.1                   # alpha = beta = 0: plain fine-tuning
    beta: float = 0.5
    sparsity: float = 0.0                # of the masked layers; 0: dense DER++
    extra: float = 0.01                  # TDM: pruned beyond the target, then regrown
    lam: float = 0.5                     # TDM: importance |w| + lam |grad|
    gradient_percentile: float = 0.8     # DGM (with sparsity); 0: weight masks only
    gradient_every: int = 30
    joint_forward: bool = True           # current and replayed images in one forward (one BatchNorm batch)
    buffer_policy: str = "reservoir"     # or "balanced": class-balanced, filled at the end of each task
    shared_replay: bool = False          # one replayed batch for both replay terms (avalanche's DER), not two
    seed: int = 0

    def check(self) -> None:
        if self.lr <= 0 or self.buffer < 1 or self.alpha < 0 or self.beta < 0 or self.gradient_every < 1:
            raise ValueError("lr must be > 0, buffer and gradient_every >= 1, alpha and beta >= 0")
        if self.buffer_policy not in BUFFER_POLICIES:
            raise ValueError(f"buffer_policy must be one of {', '.join(BUFFER_POLICIES)} (got {self.buffer_policy!r})")
        if not 0 <= self.sparsity < 1 or not 0 <= self.gradient_percentile < 1:
            raise ValueError(f"sparsity and gradient_percentile must be in [0, 1) (got {self.sparsity}, "
                             f"{self.gradient_percentile})")


@register_state
class Labelled(NamedTuple):
    """A learner's input: ``images (B, [T,] C, H, W)`` float in [0, 1], ``labels (B, [T])`` int64 (-1: none),
    ``task (B, [T])`` int64, ``index (B, [T])`` int64 each image's index in its task's training set (-1: none)."""

    images: Tensor
    labels: Tensor
    task: Tensor
    index: Tensor


def labelled(images: Tensor, labels: Tensor | None = None, task: int = 0, index: Tensor | None = None) -> Labelled:
    """A :class:`Labelled` batch ``(B, C, H, W)`` of one task (no labels: predict only)."""
    batch = images.shape[0]
    none = torch.full((batch,), -1, dtype=torch.int64)
    return Labelled(images, none if labels is None else labels.long(), torch.full((batch,), task, dtype=torch.int64),
                    none if index is None else index.long())


@register_state
class LearnerState(NamedTuple):
    """Everything a learner changes: the network's ``params`` and BatchNorm ``statistics``, the weight and
    gradient ``masks`` of the masked layers and their last batch's ``grads``, the rehearsal ``memory``,
    the ``forgetting`` statistics, the random generator's state ``rng``, and ``steps``, ``task`` (the
    latest task id), ``since_masks`` (steps since the masks were last updated) and ``flops`` (training FLOPs
    so far, float64) as 0-d tensors."""

    params: dict[str, Tensor]
    statistics: dict[str, Tensor]
    masks: dict[str, Tensor]
    gradient_masks: dict[str, Tensor]
    grads: dict[str, Tensor]
    memory: Buffer
    forgetting: Forgetting
    rng: Tensor
    steps: Tensor
    task: Tensor
    since_masks: Tensor
    flops: Tensor


class ContinualLearner(StreamModule):
    """DER++ with SparCL's sparse training around ``model`` (an image classifier with ``masked_weights()``):
    :class:`Labelled` frames ``(B, T, C, H, W)`` -> logits ``(B, T, classes)``, predicted before learning."""

    output_frame = Frame((None,), ("classes",))
    shared_state = True

    def __init__(self, model: nn.Module, config: ContinualConfig = ContinualConfig(),
                 image_shape: tuple[int, int, int] = (3, 32, 32), tasks: tuple[tuple[int, ...], ...] | None = None):
        super().__init__()
        config.check()
        self.model, self.config, self.image_shape, self.tasks = model, config, tuple(image_shape), tasks
        self.input_frame = Frame(self.image_shape, ("channels", "height", "width"))
        with torch.no_grad():
            self.classes = int(model.eval()(torch.zeros(1, *self.image_shape)).shape[1])
        self.masked = list(model.masked_weights()) if config.sparsity > 0 else []
        self.macs = layer_macs(model, torch.zeros(1, *self.image_shape))
        self.first_layer = next(iter(self.macs))

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LearnerState:
        """The learner at its start: the model's weights, its masked layers magnitude-pruned to the target. The
        network, its masks and the buffer live on ``device`` (default: the CPU); the forgetting statistics,
        the random generator and the counters stay on the CPU."""
        params = {name: p.detach().to(device).clone() for name, p in self.model.named_parameters()}
        masks = {name: magnitude_mask(params[name], self.config.sparsity) for name in self.masked}
        for name, mask in masks.items():
            params[name] = params[name] * mask
        generator = torch.Generator().manual_seed(self.config.seed)
        zero = torch.zeros((), dtype=torch.int64)
        statistics = {name: b.detach().to(device).clone() for name, b in self.model.named_buffers()}
        return LearnerState(params, statistics, masks, dict(masks), {},
                            empty_buffer(self.config.buffer, self.image_shape, self.classes, device),
                            forgetting_init(0), generator.get_state(), zero, zero.clone(),
                            zero.clone(), torch.zeros((), dtype=torch.float64))

    def reset(self, state: LearnerState, mask: Tensor) -> LearnerState:
        raise TypeError("a learner's state is shared by the batch and cannot restart single streams; "
                        "start again from init_state()")

    def _check(self, x: object, state: object) -> Labelled:
        if type(x) is not Labelled:
            raise TypeError(f"input must be a Labelled record (images, labels, task, index); got {type(x).__name__}")
        if type(state) is not LearnerState:
            raise TypeError(f"state must be the LearnerState from ContinualLearner.init_state "
                            f"(got {type(state).__name__})")
        self.input_frame.check(x.images, time=False, name="images")
        batch = x.images.shape[0]
        if batch == 0:
            raise ValueError("the batch is empty: a step needs at least one image")
        if any(tuple(t.shape) != (batch,) for t in x[1:]):
            raise ValueError(f"labels, task and index must have shape (batch,) = ({batch},)")
        if bool(((x.labels < -1) | (x.labels >= self.classes)).any()):
            raise ValueError(f"labels must be class indices in [0, {self.classes}) or -1 (unlabelled); got "
                             f"{sorted(set(x.labels.tolist()))}")
        task = int(x.task.max())
        if int(x.task.min()) != task or task < int(state.task):
            raise ValueError(f"a batch holds one task, and tasks only move forward (latest task {int(state.task)}, "
                             f"got {sorted(set(x.task.tolist()))})")
        if self.tasks is not None:
            if not 0 <= task < len(self.tasks):
                raise ValueError(f"task ids must be in [0, {len(self.tasks)}) (got {task})")
            foreign = set(x.labels[x.labels >= 0].tolist()) - set(self.tasks[task])
            if foreign:
                raise ValueError(f"labels {sorted(foreign)} are not classes of task {task} {self.tasks[task]}")
        return x

    def _logits(self, params: dict, statistics: dict, images: Tensor, train: bool) -> Tensor:
        self.model.train(train)
        return functional_call(self.model, {**params, **statistics}, (images,))

    def step(self, x: Labelled, state: LearnerState) -> tuple[Tensor, LearnerState]:
        """One batch: ``(B, classes)`` logits predicted before learning, and the state after learning."""
        x = self._check(x, state)
        images = x.images.to(state.memory.images.device).float()
        with torch.no_grad():
            predicted = self._logits(state.params, state.statistics, images, train=False)
        learn = x.labels >= 0
        if not bool(learn.any()):
            return predicted, state._replace(steps=state.steps + 1, task=x.task[0].clone())
        return predicted, self._learn(images[learn.to(images.device)], x.labels[learn], int(x.task[0]),
                                      x.index[learn].cpu(), state)

    def _learn(self, images: Tensor, labels: Tensor, task: int, index: Tensor, state: LearnerState) -> LearnerState:
        generator = torch.Generator()
        generator.set_state(state.rng)
        with torch.enable_grad():  # learning needs gradients even where the caller turned them off
            return self._learn_batch(images, labels.to(images.device), task, index, state, generator)

    def _learn_batch(self, images: Tensor, labels: Tensor, task: int, index: Tensor, state: LearnerState,
                     generator: torch.Generator) -> LearnerState:
        cfg = self.config
        params = {name: p.detach().clone().requires_grad_(True) for name, p in state.params.items()}
        statistics = {name: b.clone() for name, b in state.statistics.items()}  # BatchNorm updates them in place
        earlier = bool((state.memory.tasks[:filled(state.memory)] < task).any())  # replay from the second task
        draws = (cfg.alpha + cfg.beta,) if cfg.shared_replay else (cfg.alpha, cfg.beta)
        picks = [replay(state.memory, len(labels) if weight > 0 and earlier else 0, generator).to(images.device)
                 for weight in draws]  # the last one's labels, the first one's logits
        if cfg.joint_forward:
            batches = [images] + [state.memory.images[p] for p in picks]
            logits, *replayed = self._logits(params, statistics, torch.cat(batches), train=True).split(
                [len(b) for b in batches])
        else:
            logits = self._logits(params, statistics, images, train=True)
            replayed = [self._logits(params, statistics, state.memory.images[p], train=True) if len(p) else
                        logits[:0] for p in picks]
        masked_logits = logits
        if self.tasks is not None:
            hidden = torch.ones(self.classes, dtype=torch.bool, device=logits.device)
            hidden[list(self.tasks[task])] = False
            masked_logits = logits.masked_fill(hidden, float("-inf"))
        loss = derpp_loss(masked_logits, labels, replayed[0], state.memory.logits[picks[0]], replayed[-1],
                          state.memory.labels[picks[-1]], cfg.alpha, cfg.beta)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
        gradient_masks = dict(state.gradient_masks)
        if self.masked and cfg.gradient_percentile > 0 and int(state.since_masks) % cfg.gradient_every == 0:
            gradient_masks = {name: gradient_mask(grads[name], state.masks[name], cfg.gradient_percentile)
                              for name in self.masked}
        new_params, kept = {}, {}
        with torch.no_grad():
            for name, p in params.items():
                g = grads[name]
                if g is None:
                    new_params[name] = p.detach()
                    continue
                if name in gradient_masks:
                    g = g * gradient_masks[name]
                if name in state.masks:
                    kept[name] = g
                updated = p.detach() - cfg.lr * g
                new_params[name] = updated * state.masks[name] if name in state.masks else updated
        memory = state.memory
        if (cfg.alpha > 0 or cfg.beta > 0) and cfg.buffer_policy == "reservoir":  # fine-tuning keeps no buffer
            memory = reservoir_add(memory, images, labels, logits, task, generator)
        forgetting = state.forgetting
        tracked = len(state.forgetting.shown)
        if tracked and bool(((index >= 0) & (index < tracked)).all()):
            forgetting = record(forgetting, index, (logits.argmax(1) == labels).cpu())
        samples = len(labels) + sum(len(p) for p in picks)
        density = {name: float(state.masks[name].float().mean()) for name in self.masked}
        grad_density = {name: float(gradient_masks[name].float().mean()) for name in self.masked}
        flops = training_flops(self.macs, samples, density, grad_density, first=self.first_layer)
        return LearnerState(new_params, statistics, state.masks, gradient_masks, kept, memory, forgetting,
                            generator.get_state(), state.steps + 1, torch.tensor(task), state.since_masks + 1,
                            state.flops + flops)

    def forward(self, x: Labelled, state: LearnerState | None = None) -> tuple[Tensor, LearnerState]:
        """``T`` steps: :class:`Labelled` fields ``(B, T, ...)`` -> logits ``(B, T, classes)``."""
        if type(x) is not Labelled or x.images.dim() != 5:
            raise ValueError(f"forward takes a Labelled record with images (batch, time, channels, height, width) "
                             f"(got {type(x).__name__})")
        state = self.init_state() if state is None else state
        outputs = []
        for t in range(x.images.shape[1]):
            y, state = self.step(Labelled(*(field[:, t] for field in x)), state)
            outputs.append(y)
        if not outputs:
            return x.images.new_zeros(x.images.shape[0], 0, self.classes), state
        return torch.stack(outputs, 1), state

    def update_masks(self, state: LearnerState, extra: float | None = None) -> LearnerState:
        """TDM at an epoch boundary: every masked layer re-pruned by |w| + λ|last grad| ``extra`` beyond the
        target and as many zero weights regrown from 0 (``extra`` 0: prune only, for a task's last epochs)."""
        if not self.masked:
            return state
        extra = self.config.extra if extra is None else extra
        generator = torch.Generator()
        generator.set_state(state.rng)
        masks = {name: prune_and_regrow(state.params[name], state.grads.get(name), self.config.sparsity, extra,
                                        self.config.lam, generator) for name in self.masked}
        params = {name: p * masks[name] if name in masks else p for name, p in state.params.items()}
        return state._replace(params=params, masks=masks, gradient_masks=dict(masks), rng=generator.get_state(),
                              since_masks=torch.zeros((), dtype=torch.int64))

    def end_task(self, state: LearnerState, images: Tensor, labels: Tensor, batch: int = 256) -> LearnerState:
        """The end of a task whose training images were ``images (N, C, H, W)`` with ``labels (N,)``: with the
        ``balanced`` buffer policy they are offered to the buffer with the logits of the network as it now is
        (eval mode), as avalanche-lib's DER stores them; nothing to do with the reservoir."""
        if self.config.buffer_policy != "balanced" or not (self.config.alpha > 0 or self.config.beta > 0):
            return state
        with torch.no_grad():
            logits = torch.cat([self._logits(state.params, state.statistics,
                                             images[i:i + batch].to(state.memory.images.device).float(), train=False)
                                for i in range(0, len(labels), batch)])
        generator = torch.Generator()
        generator.set_state(state.rng)
        memory = balanced_fill(state.memory, images, labels, logits, int(state.task), generator)
        return state._replace(memory=memory, rng=generator.get_state())

    def predictor(self, state: LearnerState) -> "Classifier":
        """The network with ``state``'s weights as a stream operator of its own (eval mode)."""
        return Classifier(self.model, state.params, state.statistics, self.input_frame, self.classes)


class Classifier(Map):
    """An image classifier frame by frame: ``(B, T, C, H, W)`` -> logits ``(B, T, classes)``; no state."""

    output_frame = Frame((None,), ("classes",))

    def __init__(self, model: nn.Module, params: dict, statistics: dict, input_frame: Frame, classes: int):
        super().__init__(self._logits, name=f"{type(model).__name__} classifier")
        self.model, self.weights, self.input_frame, self.classes = model, {**params, **statistics}, input_frame, classes
        self.device = next(iter(params.values())).device

    def _logits(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, classes)`` in eval mode, on the device of the weights."""
        self.input_frame.check(x, time=False)
        self.model.eval()
        with torch.no_grad():
            return functional_call(self.model, self.weights, (x.to(self.device).float(),))

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        self.input_frame.check(x)
        if x.shape[1] == 0:
            return torch.zeros(x.shape[0], 0, self.classes, device=self.device), ()
        return self._logits(x.flatten(0, 1)).view(x.shape[0], x.shape[1], -1), ()
