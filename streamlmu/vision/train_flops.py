"""Training FLOPs counted from what runs: per layer, the forward, the input gradient and the weight gradient,
each thinned by the masks that apply to it.

For a convolution or linear layer of ``M`` multiply-accumulates per sample (dense), weight density ``d_w``
(kept weights / all) and gradient density ``d_g`` (weight-gradient entries computed / all), one training
sample costs

    forward 2·M·d_w  +  input gradient 2·M·d_w  +  weight gradient 2·M·d_g   FLOPs

(a FLOP is one multiply or one add; the input gradient of the network's first layer is not needed and not
counted). A dense layer has ``d_w = d_g = 1``: 6·M, the usual three forwards. Layers other than
convolutions and linear maps (BatchNorm, activations, pooling) are left out, as SparCL and RigL count.
"""
from __future__ import annotations

import torch
from torch import nn


def layer_macs(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per sample of every convolution and linear layer of ``model`` (by its weight's
    parameter name) on ``sample (1, C, H, W)``, dense."""
    macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(layer, _, out, name=name):
                per_output = layer.weight[0].numel() // (layer.groups if isinstance(layer, nn.Conv2d) else 1)
                macs[f"{name}.weight"] = int(out[0].numel()) * per_output
            handles.append(module.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(sample[:1])
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return macs


def training_flops(macs: dict[str, int], samples: int, weight_density: dict[str, float] | None = None,
                   grad_density: dict[str, float] | None = None, first: str | None = None) -> float:
    """FLOPs of ``samples`` training samples (forward and backward) through layers of ``macs``, with the
    densities of masked layers (others dense); ``first``: the layer whose input gradient is not computed."""
    weight_density, grad_density = weight_density or {}, grad_density or {}
    total = 0.0
    for name, m in macs.items():
        d_w, d_g = weight_density.get(name, 1.0), grad_density.get(name, weight_density.get(name, 1.0))
        total += 2.0 * m * (d_w * (1 if name == first else 2) + d_g)
    return total * samples
