"""The peer of our dense DER++: avalanche-lib's ``DER`` strategy on the same split, network and schedule.

Not a dependency of streamlmu: ``pip install avalanche-lib==0.6.0`` (it installs beside the project's pins);
without it :func:`available` is False and ``bench/continual.py`` leaves the column out.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import torch

from streamlmu.vision.methods import network
from streamlmu.vision.splits import Split


def available() -> bool:
    return importlib.util.find_spec("avalanche") is not None


def avalanche_der(split: Split, net: str, width: int, epochs: int, batch: int, seed: int, lr: float = 0.03,
                  buffer: int = 500, alpha: float = 0.1, beta: float = 0.5) -> dict:
    """Final class-IL and task-IL accuracy and training seconds of avalanche's DER (DER++ with ``beta``)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import tensors_benchmark
        from avalanche.training import DER
        from avalanche.training.plugins import EvaluationPlugin
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = network(net, split, width)
    tasks = range(len(split.tasks))
    bench = tensors_benchmark([list(split.task(t)) for t in tasks], [list(split.task(t, "test")) for t in tasks],
                              task_labels=[0] * len(split.tasks))
    strategy = DER(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), mem_size=buffer,
                   batch_size_mem=batch, alpha=alpha, beta=beta, train_mb_size=batch, train_epochs=epochs,
                   eval_mb_size=256, device=device, evaluator=EvaluationPlugin(loggers=[]))
    start = time.perf_counter()
    for experience in bench.train_stream:
        strategy.train(experience, num_workers=0)
    seconds = time.perf_counter() - start
    model.eval()
    class_il, task_il = [], []
    with torch.no_grad():
        for t, classes in enumerate(split.tasks):
            images, labels = split.task(t, "test")
            logits = model(images.to(device)).cpu()
            own = torch.tensor(classes)
            class_il.append(float((logits.argmax(1) == labels).float().mean()))
            task_il.append(float((own[logits[:, own].argmax(1)] == labels).float().mean()))
    return {"method": "avalanche-der", "sparsity": 0.0, "seed": seed, "class_il": float(np.mean(class_il)),
            "task_il": float(np.mean(task_il)), "seconds": round(seconds, 2)}
