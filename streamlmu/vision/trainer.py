"""The detector's training stages on ultralytics' ``DetectionTrainer``: sparsity training and CWD fine-tuning.

:class:`DetectorTrainer` trains a model given whole (a ``.pt`` that holds it, as
pruning leaves it) without rebuilding it from its yaml, and adds, when asked:

* **sparsity training** (network slimming): ``rate(e) · sign(γ)`` on the
  gradient of every prunable BatchNorm scale γ, per image of the optimizer step
  (ultralytics' loss is a sum over images, and over the batches a step
  accumulates), after the gradients are unscaled and before they are clipped;
  ``rate(e) = r0 · (1 − 0.9 · e / E)`` at epoch ``e`` of ``E`` (arXiv 2509.12918);
* **channel-wise distillation** (CWD, Shu et al., ICCV 2021) from a frozen
  teacher on the neck outputs P3/P4/P5 (the Detect head's inputs): per channel a
  softmax over the H·W positions at temperature τ, and
  ``w · τ² / (N · C) · Σ KL(teacher ‖ student)`` per level, after a trainable
  1×1 convolution maps the student's channels onto the teacher's (for a pruned
  copy of the teacher it starts as the copy of each kept channel to the one it
  came from). It is added
  to the detection loss inside the training step (per image, as ultralytics'
  loss terms are) and shown as ``cwd_loss``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.vision.prune import detect_head, prunable_batchnorms
from streamlmu.vision.yolo import ultralytics

ultralytics()
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils.torch_utils import unwrap_model  # noqa: E402


def sparsity_rate(r0: float, epoch: int, epochs: int) -> float:
    """The L1 rate on γ at ``epoch`` (from 0) of ``epochs``: decays linearly from r0 to 0.1 r0."""
    return r0 * (1.0 - 0.9 * epoch / max(epochs, 1))


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Channel-wise distillation between feature maps ``(N, C, H, W)``: ``τ²/(N·C) Σ_{n,c} KL(p_t ‖ p_s)`` with
    ``p`` the softmax over the H·W positions of one channel at temperature τ."""
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher maps must have one shape (got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)})")
    n, c = teacher.shape[:2]
    s = student.reshape(n * c, -1).float() / tau
    t = teacher.reshape(n * c, -1).float() / tau
    log_t = F.log_softmax(t, dim=1)
    return (log_t.exp() * (log_t - F.log_softmax(s, dim=1))).sum() * tau ** 2 / (n * c)


def neck_channels(model: nn.Module) -> list[int]:
    """Channels of each neck output the Detect head takes (P3, P4, P5)."""
    return [branch[0].conv.in_channels for branch in detect_head(model).cv2]


def kept_channels(student: nn.Module, teacher: nn.Module) -> list[Tensor] | None:
    """Per neck output (P3, P4, P5), the teacher channel each student channel was kept from, when the student is
    a pruned copy of the teacher (each of its channels enters the unpruned Detect head through the same weights
    as one teacher channel); None otherwise."""
    kept = []
    for s_branch, t_branch in zip(detect_head(student).cv2, detect_head(teacher).cv2):
        s_w, t_w = (b[0].conv.weight.detach().float().cpu().transpose(0, 1).flatten(1) for b in (s_branch, t_branch))
        if s_w.shape[1] != t_w.shape[1]:
            return None
        distance, index = torch.cdist(s_w, t_w, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        copies = bool((distance <= 1e-6 * t_w.norm(dim=1)[index]).all()) and index.unique().numel() == len(index)
        if not copies:
            return None
        kept.append(index)
    return kept


def neck_adapters(student: nn.Module, teacher: nn.Module) -> nn.ModuleList:
    """The 1x1 convolutions that map the student's neck outputs onto the teacher's channels. For a pruned copy
    of the teacher (:func:`kept_channels`) each starts as the copy of every kept channel to its origin and zero
    elsewhere, so CWD first compares each kept channel with the one it came from; otherwise as PyTorch
    initialises them."""
    pairs = list(zip(neck_channels(student), neck_channels(teacher)))
    adapters = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in pairs)
    kept = kept_channels(student, teacher)
    if kept is not None:
        with torch.no_grad():
            for adapter, index in zip(adapters, kept):
                adapter.weight.zero_()
                adapter.bias.zero_()
                adapter.weight[index, torch.arange(len(index)), 0, 0] = 1.0
    return adapters


class _Distillation:
    """Wraps a model's detection criterion: adds CWD against ``teacher`` while the model trains."""

    def __init__(self, student: nn.Module, teacher: nn.Module, adapters: nn.ModuleList, tau: float, weight: float):
        self.student, self.teacher, self.adapters, self.tau, self.weight = student, teacher, adapters, tau, weight
        self.base = student.init_criterion()
        self.features: dict[str, list[Tensor]] = {}
        self._hooks: list = []

    def capture(self) -> None:
        """Record the Detect head's inputs of the next forward of student and teacher."""
        self.release()
        for name, model in (("student", self.student), ("teacher", self.teacher)):
            def hook(_, inputs, name=name):
                self.features[name] = list(inputs[0])
            self._hooks.append(detect_head(model).register_forward_pre_hook(hook))

    def release(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def __call__(self, preds, batch: dict) -> tuple[Tensor, dict]:
        loss, items = self.base(preds, batch)
        if not self.student.training or "student" not in self.features:
            return torch.cat([loss, loss.new_zeros(1)]), {**items, "cwd_loss": loss.new_zeros(())}
        with torch.no_grad():
            self.teacher(batch["img"])
        student, teacher = self.features.pop("student"), self.features.pop("teacher")
        self.release()
        cwd = sum(cwd_loss(align(s), t, self.tau) for align, s, t in zip(self.adapters, student, teacher))
        cwd = self.weight * cwd
        return torch.cat([loss, (cwd * batch["img"].shape[0]).reshape(1)]), {**items, "cwd_loss": cwd.detach()}


class DetectorTrainer(DetectionTrainer):
    """ultralytics' detection trainer for the compression stages.

    Args (besides ultralytics' ``overrides``):
        sparsity: r0 of the L1 rate on the prunable BatchNorm γ (0: none).
        teacher: a frozen model to distil from with CWD (None: none).
        cwd_weight, cwd_tau: w and τ of the CWD loss.
    """

    def __init__(self, overrides: dict, sparsity: float = 0.0, teacher: nn.Module | None = None,
                 cwd_weight: float = 1.0, cwd_tau: float = 1.0, _callbacks=None):
        super().__init__(overrides=overrides, _callbacks=_callbacks)
        if sparsity < 0:
            raise ValueError(f"the sparsity rate must be >= 0 (got {sparsity})")
        if teacher is not None and (cwd_weight <= 0 or cwd_tau <= 0):
            raise ValueError(f"cwd_weight and cwd_tau must be > 0 (got {cwd_weight}, {cwd_tau})")
        self.sparsity, self.teacher, self.cwd_weight, self.cwd_tau = sparsity, teacher, cwd_weight, cwd_tau
        self.adapters: nn.ModuleList | None = None
        self._images = 0  # images since the last optimizer step
        self._gammas: list[nn.BatchNorm2d] | None = None  # the penalised BatchNorm layers, found once
        self._distillation: _Distillation | None = None

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """A yaml builds a new model; a saved model is trained as it is (a pruned one keeps its channels)."""
        if weights is None:
            return super().get_model(cfg, weights, verbose)
        if getattr(weights, "nc", self.data["nc"]) != self.data["nc"]:
            raise ValueError(f"the model detects {weights.nc} classes but the data has {self.data['nc']}")
        model = weights.float()
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def build_optimizer(self, model, *args, **kwargs):
        optimizer = super().build_optimizer(model, *args, **kwargs)
        if self.teacher is not None:  # the 1x1 convolutions that map the student's channels onto the teacher's
            self.teacher = self.teacher.float().to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.adapters = neck_adapters(unwrap_model(model), self.teacher).to(self.device)
            optimizer.add_param_group({"params": list(self.adapters.parameters()), "weight_decay": 0.0})
        return optimizer

    def preprocess_batch(self, batch: dict) -> dict:
        batch = super().preprocess_batch(batch)
        self._images += batch["img"].shape[0]
        if self.teacher is not None:
            model = unwrap_model(self.model)
            if self._distillation is None:  # after the EMA copy was taken: the copy keeps the plain loss
                self._distillation = _Distillation(model, self.teacher, self.adapters, self.cwd_tau, self.cwd_weight)
                model.criterion = self._distillation
            self._distillation.capture()
        return batch

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.sparsity:
            rate = sparsity_rate(self.sparsity, self.epoch, self.epochs) * self._images
            if self._gammas is None:
                self._gammas = prunable_batchnorms(unwrap_model(self.model))
            with torch.no_grad():
                for bn in self._gammas:
                    if bn.weight.grad is not None:
                        bn.weight.grad.add_(torch.sign(bn.weight), alpha=rate)
        self._images = 0
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    def final_eval(self):
        if self._distillation is not None:
            self._distillation.release()
        return super().final_eval()
