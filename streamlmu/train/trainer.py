"""Keyword-spotting training on a Speech Commands v2 layout: one loop for one process or many.

The recipe is the LMUFormer paper's: 128-mel Kaldi fbank padded to 128 frames,
binary cross-entropy on one-hot targets (``loss="ce"`` for softmax cross-entropy), Adam (lr 2.5e-3, betas 0.95/0.999),
StepLR x0.85 every 10 epochs (or, with ``lr_schedule="cosine"``, a cosine decay from ``lr`` towards 0
over ``epochs``; either after an optional linear warm-up over the first ``warmup_steps`` steps, as the
official code has), SpecAugment and mixup; optionally vocal tract length perturbation (``freq_warp``).
The loss is taken on the last frame's logits, the running mean over the whole (padded) clip.

``stream_windows`` trains for continuous keyword spotting (12 or 37 labels), where
the model runs on without resets and a sliding window of its per-frame logits
decides (:class:`streamlmu.audio.kws.StreamingKWS`): training items are
excerpts of streams whose last second is labelled as a live spotter should
answer then (:class:`streamlmu.data.streams.StreamWindows`): a keyword wholly
inside, ``_unknown_`` for other words (with 37 labels each word is its own
class) and for the tail of an earlier word, ``_silence_`` for background; the
loss takes the mean logits of that second. A front end whose one frame hears
the whole second (the ASR encoder) gets that second alone: one frame from the
initial state, as the spotter scores it. ``phrase_windows`` adds that many
excerpts of whole sentences with the keywords inside them
(:class:`streamlmu.data.phrases.PhraseWindows`, 12 labels).

Two options help a model that is hard to optimise (the Spiking LMUFormer on a
small corpus): ``init`` starts from another checkpoint's weights (every tensor
whose name and shape match; of the head, the rows of shared labels), and
``teacher`` adds knowledge distillation, the KL divergence to a trained model's
softened posteriors on the same augmented batch (Hinton et al. 2015), weighted
by ``distill_weight``. The teacher and validation run on torch's batched path
(:func:`streamlmu.nn.inference.batched_torch`), not the frame-exact kernels.
With ``ema`` (a decay per step, e.g. 0.999) validation and both checkpoints use
an exponential moving average of the weights
(:class:`streamlmu.train.averaging.WeightAverage`) instead of the last step's.
With ``bf16`` the training forward passes (student and teacher) run under
bfloat16 autocast: products and convolutions in bfloat16, while LIF membranes,
LMU memories, the running mean and the head stay float32; weights, validation
and checkpoints are float32.

Every random choice of an epoch (sample order, noise, SpecAugment, mixup) is
drawn from generators seeded by ``(seed, epoch, rank)``, and ``last.pt`` is
written after every epoch; so a run killed at any point and resumed with
``resume=True`` redoes the unfinished epoch exactly and ends with the same
weights and metrics as an uninterrupted one.

Under ``torchrun`` each process trains on its own shard of every epoch with
``batch_size`` clips per step; gradients are averaged by DDP, validation counts
are summed over ranks, and only rank 0 writes files.

Files in ``out``:
    last.pt       weights, optimiser, scheduler, epoch, history (``resume`` reads it; with ``ema`` the
                  weights are the average and the training weights are kept beside them)
    best.pt       the model of the best validation accuracy (for ``load_model``)
    metrics.csv   one row per epoch
    tb/           TensorBoard scalars
    replicas.json (DDP) the parameter digest of every rank at the end
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from streamlmu import cpu
from streamlmu.audio.augment import freq_warp, mixup, spec_augment
from streamlmu.audio.window import window_logits
from streamlmu.audio.frontend import (FEATURE_KINDS, FrontEndConfig, clip_features, frame_hears, frontend_config,
                                      signal_features)
from streamlmu.data.speech_commands import SAMPLE_RATE, SpeechCommands, collate, labels_for
from streamlmu.data.phrases import PhraseWindows
from streamlmu.data.streams import StreamWindows, WindowSets
from streamlmu.models.registry import build_model, preset_config
from streamlmu.nn.inference import batched_torch
from streamlmu.train.averaging import WeightAverage
from streamlmu.audio.bundle import load_model, read_checkpoint, save_checkpoint
from streamlmu.train.frames import CachedFrames
from streamlmu.train.distributed import (World, broadcast_buffers, close_world, gather_strings, init_world,
                                         parameter_digest, sum_over_ranks)
from streamlmu.warn import warn_caller

LOSSES = ("bce", "ce")  # the paper's binary cross-entropy on one-hot targets, or softmax cross-entropy
LR_SCHEDULES = ("step", "cosine")  # StepLR (lr_step, lr_gamma), or a cosine decay over the run's epochs

# Fields that must agree between a run and the run it resumes.
_RESUME_KEYS = ("model", "preset", "labels", "batch_size", "lr", "betas", "lr_schedule", "lr_step", "lr_gamma",
                "warmup_steps", "loss", "mixup_alpha", "spec_augment", "freq_warp", "noise_probability", "seed",
                "overrides", "teacher", "distill_weight", "distill_temperature", "unknown_fraction", "silence_fraction",
                "stream_windows", "hard_negatives", "hard_negative_fraction", "word_heads", "phrase_windows",
                "ema", "bf16", "features", "feature_variants")


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is per process; ``overrides`` change the model preset's fields."""

    data: str
    model: str = "lmuformer"
    preset: str = "tiny"
    features: str = "fbank"                # the front end (streamlmu.audio.frontend.FEATURE_KINDS)
    feature_variants: int = 4              # pretrained front ends: epochs draw from this many cached renderings
    labels: int = 35
    unknown_fraction: float | None = 0.1   # 12 labels: _unknown_ clips kept per word clip (None: all)
    silence_fraction: float = 0.1          # 12 labels: _silence_ clips added per word clip
    out: str = "runs/kws"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2.5e-3
    betas: tuple[float, float] = (0.95, 0.999)
    lr_schedule: str = "step"
    lr_step: int = 10
    lr_gamma: float = 0.85
    warmup_steps: int = 0
    loss: str = "bce"
    mixup_alpha: float = 0.2
    spec_augment: bool = True
    freq_warp: float = 0.0                 # frequency-warp factors drawn from [1 - freq_warp, 1 + freq_warp]
    noise_probability: float = 0.8
    seed: int = 0
    workers: int = 0
    max_steps: int | None = None
    tensorboard: bool = True
    overrides: dict = field(default_factory=dict)
    stream_windows: bool = False
    hard_negatives: tuple[str, ...] = ()   # stream windows: other words drawn more often (see StreamWindows)
    hard_negative_fraction: float = 0.5
    word_heads: float = 0.0                # stream windows: other words cut off mid-word, as _unknown_
    phrase_windows: int = 0                # stream windows: this many windows of whole sentences added (PhraseWindows)
    init: str | None = None
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    ema: float | None = None               # weight-average decay per step (None: evaluate the last weights)
    bf16: bool = False                     # train under bfloat16 autocast (validation stays float32)
    cache_audio: bool = False              # keep the training clips in memory once read

    def __post_init__(self) -> None:
        self.betas, self.hard_negatives = tuple(self.betas), tuple(self.hard_negatives)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        labels_for(self.labels)  # an unknown task raises here
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} (got {self.loss!r})")
        if self.stream_windows and self.labels == 35:
            raise ValueError("stream_windows trains the 12- or 37-label task (it needs _unknown_ and _silence_)")
        if (self.hard_negatives or self.word_heads or self.phrase_windows) and not self.stream_windows:
            raise ValueError("hard_negatives, word_heads and phrase_windows shape the stream windows; they need "
                             "stream_windows")
        if self.phrase_windows and self.labels != 12:
            raise ValueError(f"phrase_windows label keywords and _unknown_: they train the 12-label task (got "
                             f"labels={self.labels})")
        if self.phrase_windows < 0:
            raise ValueError(f"phrase_windows must be >= 0 (got {self.phrase_windows})")
        if self.labels == 37 and not self.stream_windows:
            raise ValueError("37 labels (every word, _unknown_ for word tails, _silence_) need stream_windows")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES} (got {self.lr_schedule!r})")
        if self.lr_step < 1 or not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"lr_step must be >= 1 and lr_gamma in (0, 1] (got {self.lr_step}, {self.lr_gamma})")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise ValueError(f"distill_weight must be in [0, 1] and distill_temperature > 0 "
                             f"(got {self.distill_weight}, {self.distill_temperature})")
        if not 0.0 <= self.freq_warp < 1.0:
            raise ValueError(f"freq_warp must be in [0, 1), e.g. 0.1 (got {self.freq_warp})")
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS} (got {self.features!r})")
        if self.freq_warp and self.features != "fbank":
            raise ValueError("freq_warp warps mel bins; it needs features='fbank'")
        if self.spec_augment and self.features == "asr-encoder":
            raise ValueError("SpecAugment masks time and mel bands; the asr-encoder's frames are encoder states "
                             "pooled over 1 s windows: train them with spec_augment=False (--no-spec-augment)")
        if self.feature_variants < 1:
            raise ValueError(f"feature_variants must be >= 1 (got {self.feature_variants})")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be a decay per step in (0, 1), e.g. 0.999 (got {self.ema})")


def frontend_overrides(model: str, preset: str, features: FrontEndConfig) -> dict:
    """The preset's settings that depend on the front end: its input size, and its time spans (counted in
    frames of 10 ms in the presets) in the front end's frames."""
    config = preset_config(model, preset)
    scale = 10.0 / features.frame_shift_ms
    overrides: dict = {"in_features": features.feature_size}
    if hasattr(config, "theta"):
        overrides["theta"] = config.theta * scale
    if hasattr(config, "window"):
        overrides["window"] = max(1, round(config.window * scale))
    return overrides


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (counted from 0) after warm-up, as ``cfg.lr_schedule`` gives it."""
    if cfg.lr_schedule == "cosine":  # towards 0 over cfg.epochs (a resumed run with more epochs stretches it)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.epochs) / cfg.epochs))
    return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step)


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*keys))


def _epoch_batches(size: int, cfg: TrainConfig, epoch: int, world: World) -> list[list[int]]:
    """This rank's batches of one epoch: a shuffle fixed by (seed, epoch), split evenly over ranks."""
    order = torch.randperm(size, generator=_generator(cfg.seed, epoch)).tolist()
    order = order[:size // world.size * world.size][world.rank::world.size]
    return _chunks(order, cfg.batch_size)


class _Run:
    """The mutable pieces of one run."""

    def __init__(self, cfg: TrainConfig, world: World, progress: bool = False):
        self.cfg, self.world = cfg, world
        self.out = Path(cfg.out)
        self.classes = labels_for(cfg.labels)
        self.features = frontend_config(cfg.features)
        # validation clips: the 37-label model is checked on the 35 words, whose indices it shares
        task = dict(labels=35 if cfg.labels == 37 else cfg.labels, unknown_fraction=cfg.unknown_fraction,
                    silence_fraction=cfg.silence_fraction, skip_bad_files=True, seed=cfg.seed)
        if cfg.stream_windows:
            # a spotter scores a frame that hears the whole second alone (StreamingKWS), so it learns from that second
            context_s = 0.0 if frame_hears(self.features, 1.0) else 1.0
            self.train_set = StreamWindows(SpeechCommands(cfg.data, "training", 35), seed=cfg.seed,
                                           skip_bad_files=True, labels=cfg.labels, hard_negatives=cfg.hard_negatives,
                                           hard_negative_fraction=cfg.hard_negative_fraction,
                                           word_heads=cfg.word_heads, context_s=context_s)
            if cfg.phrase_windows:
                phrases = PhraseWindows(SpeechCommands(cfg.data, "training", 35), count=cfg.phrase_windows,
                                        seed=cfg.seed, progress=progress and world.is_main, context_s=context_s)
                self.train_set = WindowSets([self.train_set, phrases])
        else:
            self.train_set = SpeechCommands(cfg.data, "training", noise_probability=cfg.noise_probability,
                                            cache_audio=cfg.cache_audio, **task)
        self.val_set = SpeechCommands(cfg.data, "validation", **task)
        # A pretrained front end is computed once per item and rendering (see streamlmu.train.frames)
        self.cached = cfg.features != "fbank"
        self.train_data = CachedFrames(self.train_set, self.features, cfg.feature_variants,
                                       clips=not cfg.stream_windows) if self.cached else self.train_set
        self.val_data = CachedFrames(self.val_set, self.features) if self.cached else self.val_set
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"{cfg.data} has {len(self.train_set)} training and {len(self.val_set)} validation "
                             f"clips; both splits must be non-empty")
        present = self.train_set.labels_present() if cfg.stream_windows else \
            {label for _, label in self.train_set.items}
        missing = [name for i, name in enumerate(self.classes) if i not in present]
        if missing and world.is_main:
            warn_caller(f"{cfg.data} has no training clips of {len(missing)} of the {len(self.classes)} labels "
                        f"({', '.join(missing)}); the model will never predict them")
        if cfg.bf16 and world.device.type == "cpu" and cpu.cpu_has(cpu.BF16_FLAGS) is False and world.is_main:
            warn_caller(f"--bf16 on a CPU without bfloat16 instructions ({', '.join(cpu.BF16_FLAGS)}): autocast "
                        f"emulates them, and a training step gets slower, not faster (about 7 times on an "
                        f"AVX2-only AMD EPYC); leave it off here", RuntimeWarning)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, cfg.preset, num_classes=len(self.classes),
                                 **{**frontend_overrides(cfg.model, cfg.preset, self.features), **cfg.overrides})
        if cfg.init is not None:
            _warm_start(self.model, cfg.init, self.classes)
        self.model.to(world.device)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema is not None else None
        self.teacher = _teacher(cfg.teacher, self.classes, self.features, world.device) if cfg.teacher else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)
        if cfg.lr_schedule == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step, cfg.lr_gamma)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: epoch_lr(cfg, e) / cfg.lr)
        self.epoch, self.history, self.steps = 0, [], 0

    # ------------------------------------------------------------- state
    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved: the weight average with ``ema``, else the training model."""
        return self.average.model if self.average is not None else self.model

    def training_state(self) -> dict:
        state = {"config": asdict(self.cfg), "epoch": self.epoch, "history": self.history,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.average is not None:
            state.update(model_weights=self.model.state_dict(), average_updates=self.average.updates)
        return state

    def restore(self, path: Path) -> None:
        payload = read_checkpoint(path)
        training = payload.get("training")
        if training is None or "optimizer" not in training:
            raise ValueError(f"{path} holds no training state (a bare model file); resume needs a last.pt")
        old = training["config"]
        defaults = asdict(TrainConfig(data=""))  # a field newer than the checkpoint has its default there
        old = {k: old.get(k, defaults[k]) for k in _RESUME_KEYS}
        differ = [k for k in _RESUME_KEYS if _as_tuple(old[k]) != _as_tuple(getattr(self.cfg, k))]
        if differ:
            raise ValueError(f"cannot resume {path}: it was trained with different " + ", ".join(
                f"{k} ({old.get(k)!r} vs {getattr(self.cfg, k)!r})" for k in differ))
        self.model.load_state_dict(training.get("model_weights", payload["weights"]))
        if self.average is not None:
            self.average.model.load_state_dict(payload["weights"])
            self.average.updates = training["average_updates"]
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.epoch, self.history = training["epoch"], training["history"]

    # ------------------------------------------------------------- loops
    def frames(self, waves: Tensor, clips: bool) -> Tensor:
        """The front end's frames of a batch: whole clips padded to ``clip_frames``, or whole stream excerpts."""
        return clip_features(waves, self.features) if clips else signal_features(waves, self.features)

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast on the run's device with ``bf16``, else a context that changes nothing."""
        return torch.autocast(self.world.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def loader(self, dataset: SpeechCommands, batches: list[list[int]]) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=self.cfg.workers)

    def train_epoch(self, net: nn.Module, progress: bool) -> dict:
        cfg, world = self.cfg, self.world
        self.model.train()
        self.train_data.set_epoch(self.epoch)
        torch.manual_seed(_seed(cfg.seed, self.epoch, world.rank, 1))
        augment = _generator(cfg.seed, self.epoch, world.rank, 2)
        batches = _epoch_batches(len(self.train_set), cfg, self.epoch, world)
        loss_sum = correct = count = skipped = 0.0
        bar = tqdm(self.loader(self.train_data, batches), total=len(batches), leave=False, unit="batch",
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not (progress and world.is_main))
        scheduled = epoch_lr(cfg, self.epoch)  # what the scheduler gives this epoch
        for index, (waves, labels, bad) in enumerate(bar):
            skipped += bad
            step = self.epoch * len(batches) + index
            if step <= cfg.warmup_steps and cfg.warmup_steps:  # linear warm-up, then the schedule
                for group in self.optimizer.param_groups:
                    group["lr"] = scheduled * min(1.0, (step + 1) / cfg.warmup_steps)
            waves, labels = waves.to(world.device), labels.to(world.device)
            x = waves if self.cached else self.frames(waves, clips=not cfg.stream_windows)
            window = self.features.num_frames(SAMPLE_RATE) if cfg.stream_windows else None  # stream excerpts' ends
            if cfg.freq_warp:
                x = freq_warp(x, augment, self.features, cfg.freq_warp)
            if cfg.spec_augment and len(x):  # time masks of up to 240 ms, whatever the frame rate
                x = spec_augment(x, augment, time_width=max(1, round(240 / self.features.frame_shift_ms)))
            targets = F.one_hot(labels, len(self.classes)).to(x.dtype)
            x, targets = mixup(x, targets, cfg.mixup_alpha, augment) if len(x) > 1 else (x, targets)
            if len(x):
                with self.autocast():
                    logits = window_logits(net(x)[0], self.model.head.bias, window).float()
                loss = _loss(logits, targets, cfg.loss)
                if self.teacher is not None:
                    with torch.no_grad(), batched_torch(), self.autocast():
                        taught = window_logits(self.teacher(x)[0], self.teacher.head.bias, window).float()
                    loss = ((1 - cfg.distill_weight) * loss
                            + cfg.distill_weight * _distillation(logits, taught, cfg.distill_temperature))
            else:  # every clip of the batch was unreadable: a zero step keeps DDP's ranks in lock step
                loss = net(x.new_zeros(1, *x.shape[1:]))[0].sum() * 0.0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
            self.steps += 1
            if len(x):
                loss_sum += loss.item() * len(x)
                correct += float((logits.argmax(1) == labels).sum())
                count += len(x)
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}")
            if cfg.max_steps is not None and self.steps >= cfg.max_steps:
                break
        broadcast_buffers(self.model, world)
        if self.average is not None:
            broadcast_buffers(self.average.model, world)
        loss_sum, correct, count, skipped = sum_over_ranks([loss_sum, correct, count, skipped], world)
        return {"train_loss": loss_sum / max(count, 1), "train_accuracy": correct / max(count, 1),
                "skipped_files": int(skipped)}

    @torch.no_grad()
    @batched_torch()
    def validate(self) -> dict:
        model = self.evaluated.eval()
        loss_sum = correct = count = 0.0
        shard = list(range(self.world.rank, len(self.val_set), self.world.size))
        for waves, labels, _ in self.loader(self.val_data, _chunks(shard, 256)):
            if not len(waves):
                continue
            waves, labels = waves.to(self.world.device), labels.to(self.world.device)
            logits = model.classify(waves if self.cached else self.frames(waves, clips=True))
            targets = F.one_hot(labels, len(self.classes)).to(logits.dtype)
            loss_sum += float(_loss(logits, targets, self.cfg.loss)) * len(labels)
            correct += float((logits.argmax(1) == labels).sum())
            count += len(labels)
        loss_sum, correct, count = sum_over_ranks([loss_sum, correct, count], self.world)
        return {"val_loss": loss_sum / max(count, 1), "val_accuracy": correct / max(count, 1)}

    # ------------------------------------------------------------- output
    def best(self, epochs: int | None = None) -> float:
        """The best validation accuracy of the first ``epochs`` epochs (all by default); -1 before any."""
        return max((h["val_accuracy"] for h in self.history[:epochs]), default=-1.0)

    def save(self, metrics: dict) -> None:
        """Write last.pt, metrics.csv and, when ``metrics`` (the newest epoch's) beat every earlier epoch, best.pt."""
        self.out.mkdir(parents=True, exist_ok=True)
        if metrics["val_accuracy"] > self.best(-1):
            save_checkpoint(self.out / "best.pt", self.evaluated, self.classes, self.features,
                            training={"epoch": self.epoch, "metrics": metrics, "config": asdict(self.cfg)})
        save_checkpoint(self.out / "last.pt", self.evaluated, self.classes, self.features, self.training_state())
        with open(self.out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)


def _loss(logits: Tensor, targets: Tensor, kind: str) -> Tensor:
    """Mean loss of ``(batch, classes)`` logits against (mixed) one-hot ``targets`` of the same shape."""
    if kind == "ce":
        return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.binary_cross_entropy_with_logits(logits, targets)


def _distillation(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of ``(batch, classes)`` logits softened by ``temperature``, scaled by its square."""
    student = F.log_softmax(logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature ** 2


def _warm_start(model: nn.Module, path: str, classes: tuple[str, ...]) -> None:
    """Copy every tensor of checkpoint ``path`` whose name and shape match ``model``'s, and of the head (other
    labels) the rows of the labels both have; error when nothing matches, a warning naming the tensors of the same
    name whose shapes differ (another width, a spiking model's longer memory), which keep their fresh values."""
    payload = read_checkpoint(path)
    weights, theirs = payload["weights"], list(payload["labels"])
    own = model.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    shared = [(i, theirs.index(c)) for i, c in enumerate(classes) if c in theirs]
    head = ("head.weight", "head.bias")
    if shared and all(k in own and k in weights for k in head) and "head.weight" not in matched \
            and own["head.weight"].shape[1:] == weights["head.weight"].shape[1:]:
        mine, other = map(list, zip(*shared))
        for name in head:
            rows = own[name].clone()
            rows[mine] = weights[name][other]
            matched[name] = rows
    if not matched:
        raise ValueError(f"{path} shares no tensor (same name and shape) with a {type(model).__name__}; "
                         f"nothing to start from")
    reshaped = [k for k in weights if k in own and k not in matched]
    if reshaped:
        k = reshaped[0]
        warn_caller(f"{path}: {len(reshaped)} of its tensors have other shapes here and are not copied, e.g. {k} "
                    f"{tuple(weights[k].shape)} there, {tuple(own[k].shape)} here (its settings: "
                    f"{payload.get('config')}; to start from all of it, build the same, e.g. --dim)")
    model.load_state_dict(matched, strict=False)


def _teacher(path: str, classes: tuple[str, ...], features: FrontEndConfig, device: torch.device) -> nn.Module:
    """A frozen trained model whose labels are ``classes`` and front end ``features``, in eval mode on ``device``."""
    teacher = load_model(path)
    if tuple(teacher.labels) != tuple(classes):
        raise ValueError(f"teacher {path} has labels {list(teacher.labels)[:5]}... ({len(teacher.labels)}); "
                         f"the run needs the same {len(classes)} labels in the same order")
    if teacher.features != features:
        raise ValueError(f"teacher {path} hears {teacher.features.kind} frames ({teacher.features}); the run "
                         f"trains on {features.kind} frames ({features}): both must share one front end")
    return teacher.requires_grad_(False).to(device)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) one run; returns ``{"history", "best_val_accuracy", "out", "steps", "digests"}``.

    ``cfg.max_steps`` stops the run after that many optimiser steps in total,
    without writing the unfinished epoch (a smoke test, or a simulated kill).
    """
    world = init_world()
    finished = False
    try:
        result = _train(cfg, world, resume, progress)
        finished = True
        return result
    finally:
        close_world(world, together=finished)


def _train(cfg: TrainConfig, world: World, resume: bool, progress: bool) -> dict:
    """The body of :func:`train`; the DDP wrapper it makes, which holds the process group, dies with this frame."""
    run = _Run(cfg, world, progress)
    if resume:
        run.restore(run.out / "last.pt")
    net: nn.Module = run.model
    if world.distributed:
        net = DistributedDataParallel(run.model, device_ids=[world.device.index] if world.device.type == "cuda"
                                      else None)
    writer = None
    log = tqdm.write if progress else (lambda s: None)
    if cfg.tensorboard and world.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(run.out / "tb"), purge_step=run.epoch + 1)
        except ImportError:
            log("tensorboard is not installed: logging to metrics.csv only (pip install tensorboard)")
    if world.is_main and run.epoch:
        log(f"resuming {run.out / 'last.pt'} after epoch {run.epoch}")
    while run.epoch < cfg.epochs:
        start = time.perf_counter()
        metrics = run.train_epoch(net, progress)
        if cfg.max_steps is not None and run.steps >= cfg.max_steps:
            break
        metrics.update(run.validate())
        metrics = {"epoch": run.epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], **metrics,
                   "seconds": round(time.perf_counter() - start, 2)}
        run.scheduler.step()
        run.history.append(metrics)
        run.epoch += 1  # epochs done: what last.pt records
        if world.is_main:
            run.save(metrics)
            if writer is not None:
                for key, value in metrics.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, metrics["epoch"])
                writer.flush()
            log(f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.4f}  train {metrics['train_accuracy']:.4f}"
                f"  val {metrics['val_accuracy']:.4f}  lr {metrics['lr']:.2e}  {metrics['seconds']:.1f} s"
                + (f"  skipped {metrics['skipped_files']} bad files" if metrics["skipped_files"] else ""))
    if writer is not None:
        writer.close()
    digests = gather_strings(parameter_digest(run.model), world)
    if world.distributed and world.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "replicas.json").write_text(json.dumps({"world_size": world.size, "steps": run.steps,
                                                           "digests": digests}, indent=1))
    return {"history": run.history, "best_val_accuracy": run.best(), "out": str(run.out), "steps": run.steps,
            "digests": digests}
