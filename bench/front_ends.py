"""Which pretrained front end carries synthetic training to voices it never heard? A linear probe.

The same clips through each front end, one logistic regression per front end on its frames of each
1 s clip (standardised; the speech embedding's 13 frames concatenated, the ASR encoder's one pooled
window), trained on a corpus's training split and scored on its test split and on test-only corpora of
engines the corpus left out (e.g. ``--engines piper --testing-percent 100 --validation-percent 0``).
A linear model keeps the comparison about the features, not about a classifier's capacity.
Each front end's cost as a stream operator is measured too: the test clips in a row, 100 ms chunks, one
thread, as a real-time factor (seconds of compute per second of audio).

Results go to ``bench/results/front_ends.json``.

Usage: ``python bench/front_ends.py --train data/p3k --held-out data/piper20,data/kokoro20``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from streamlmu.audio.frontend import clip_features, frontend_config, streaming_frontend
from streamlmu.data.speech_commands import SpeechCommands

RESULTS = Path(__file__).resolve().parent / "results" / "front_ends.json"


def clips(root: str, subset: str) -> tuple[torch.Tensor, np.ndarray]:
    """Every clip of a split (no added noise): ``(n, 16000)`` waves and their 35-word labels."""
    data = SpeechCommands(root, subset, labels=35, noise_probability=0.0)
    items = [data[i] for i in range(len(data))]
    return torch.stack([wave.reshape(-1) for wave, _ in items]), np.array([label for _, label in items])


def features(waves: torch.Tensor, kind: str, threads: int, batch: int = 256) -> np.ndarray:
    """One row per clip: the front end's clip frames, flattened."""
    cfg = frontend_config(kind)
    rows = [clip_features(waves[i:i + batch], cfg, threads).flatten(1).numpy()
            for i in tqdm(range(0, len(waves), batch), desc=kind, leave=False)]
    return np.concatenate(rows)


def real_time_factor(waves: torch.Tensor, kind: str, seconds: float = 30.0, chunk: int = 1600) -> float:
    """Compute per second of audio of ``kind``'s stream operator on one thread, over ``seconds`` of clips in a row."""
    stream = waves[:int(seconds)].reshape(1, -1)
    operator = streaming_frontend(frontend_config(kind), threads=1)
    operator(stream[:, :operator.config.window_size], operator.init_state(1))  # loads the model
    state = operator.init_state(1)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for part in stream.split(chunk, dim=1):
            _, state = operator(part, state)
        return (time.perf_counter() - start) / (stream.shape[1] / 16000)
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="corpus whose training split the probes learn from")
    parser.add_argument("--held-out", default="", help="comma-separated test-only corpora of unheard engines")
    parser.add_argument("--features", default="speech-embedding,asr-encoder", help="front ends to compare")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the front ends")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    sets = {"training": clips(args.train, "training"), "test split": clips(args.train, "testing")}
    for root in filter(None, args.held_out.split(",")):
        sets[Path(root).name] = clips(root, "testing")
    results: dict = {"train": args.train, "clips": {name: len(y) for name, (_, y) in sets.items()}, "accuracy": {}}
    for kind in args.features.split(","):
        start = time.perf_counter()
        rows = {name: features(waves, kind, args.threads) for name, (waves, _) in sets.items()}
        scaler = StandardScaler().fit(rows["training"])
        probe = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(rows["training"]), sets["training"][1])
        results["accuracy"][kind] = {name: float((probe.predict(scaler.transform(x)) == sets[name][1]).mean())
                                     for name, x in rows.items() if name != "training"}
        results.setdefault("minutes", {})[kind] = round((time.perf_counter() - start) / 60, 1)
        results.setdefault("real_time_factor", {})[kind] = real_time_factor(sets["test split"][0], kind)
        print(kind, {name: f"{acc:.1%}" for name, acc in results["accuracy"][kind].items()},
              f"real-time factor {results['real_time_factor'][kind]:.3f}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
