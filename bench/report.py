"""Write ``bench/README.md``: what each benchmark measures and its latest tables, from ``bench/results/*.json``.

Usage: ``python bench/report.py`` (writes the file) or ``--check`` (exit 1 if it is out of date). Each
benchmark script writes its JSON; this script only reads them, so the tables never drift from the results.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

INTRO = """# Benchmarks

Each script prints a table and writes `results/<name>.json`; `python bench/report.py` turns those into this
file. Timings are ratios measured side by side in one run on one thread (these machines are noisy); the
accuracy benchmarks take hours and reuse what their JSON already holds. Narrative and history:
`docs/benchmarks.md`, `docs/voices.md`.

| script | what it measures | run |
| --- | --- | --- |
| `lmu_memory.py` | the Legendre memory: Numba kernel, public `step`, torch eager, FFT forward | `make bench` |
| `model_step.py` | one LMUFormer frame: the engine against eager torch and re-running a 1 s window | `make bench` |
| `kws_stream.py` | live spotting per 10 ms hop for 1, 16 and 256 streams; streams per core | `make bench` |
| `train_step.py` | a distillation step: the teacher batched against per-frame kernels; bfloat16 | `make bench` |
| `voices.py` | leave one voice out: clips and streams on a voice no model heard, pocketsphinx beside | hours |
| `engines.py` | whole engines no model heard (DECtalk, Piper, Kokoro): clips and word streams | hours |
| `phrases.py` | keywords said inside sentences | an hour |
| `streamlmu truncation` | accuracy by frames heard (`results/truncation/truncation.md`) | minutes |
| `detect.py` | YOLOv8n compressed: sparsity, pruning, three fine-tunings; size, mAP, frames/s; the tracker | < 45 min |
| `continual.py` | class-incremental learning: fine-tuning, DER++, SparCL-DER++, joint; avalanche's DER | < 45 min |
| `sparse_kernel.py` | a masked dense convolution against unfold + CSR products at 75 and 90 % sparsity | a minute |
| `caption.py` | the captioner: teacher, student, three ablations; a scene video with and without the trigger | < 45 min |
| `serve.py` | `streamlmu serve` under N real-time clients, embedded and on Ray: latency, dropped audio, CPU | half an hour |
| `export.py` | a frame through the engine, the exported ONNX step in onnxruntime, and `model.step` | a minute |
"""


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _targets(report: dict) -> list[str]:
    settings = ("preset", "batch", "order", "streams")
    rows = [[t["target"], ", ".join(f"{k} {t[k]}" for k in settings if k in t) or "-",
             f"{t['ratio']:.2f}x", f">= {t['minimum']:.3g}x", "met" if t["met"] else "**missed**"]
            for t in report["targets"]]
    machine = report.get("machine", {})
    return [f"Measured on {machine.get('processor', '?')}, torch {machine.get('torch', '?')}, numba "
            f"{machine.get('numba', '?')}.", ""] + _table(["target", "setting", "measured", "required", ""], rows)


def _kws_stream(report: dict) -> list[str]:
    rows = [[r["preset"], r["streams"], f"{r['spotter_ms_per_hop']:.3f}", f"{r['int8_ms_per_hop']:.3f}",
             f"{r['window_ms_per_hop']:.1f}" if r.get("window_ms_per_hop") else "-", f"{r['rtf']:.4f}",
             f"{r['streams_per_core']:.0f}", f"{r['int8_streams_per_core']:.0f}"] for r in report["rows"]]
    return (_table(["preset", "streams", "spotter ms / hop", "int8 ms / hop", "1 s window ms / hop", "real-time factor",
                    "streams / core", "int8 streams / core"], rows)
            + ["", f"Target: >= {report['target_streams_per_core']} real-time paper-size streams per core: float32 "
                   f"{report['paper_streams_per_core']:.0f}, int8 {report['paper_streams_per_core_int8']:.0f}."])


def _train_step(report: dict) -> list[str]:
    rows = [[name, f"{ms:.1f}"] for name, ms in report["ms_per_batch"].items()]
    return _table(["step", "ms per batch"], rows) + [""] + _targets(report)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _streams(row: dict | None) -> str:
    if not row:
        return "-"
    return f"{_percent(row['hit_rate'])} of {row['occurrences']} at {row['false_alarms_per_hour']:g} FA/h"


def _voices(report: dict) -> list[str]:
    rows = []
    for holdout, cells in report.items():
        for front, cell in cells.items():
            clips, streams = cell.get("clips", {}), cell.get("streams")
            rows.append([holdout, front, _percent(clips.get("heldout_accuracy")),
                         _percent(clips.get("other_voices_accuracy")), _streams(streams)])
    return _table(["held-out voice", "front end", "clips (held out)", "clips (other voices)", "stream keywords"], rows)


def _engine(report: dict) -> list[str]:
    clips = [[f"`{name}`", _percent(row["accuracy"]), row["clips"]] for name, row in report["clips"].items()]
    streams = [[f"`{name}`", _streams(row), f"{row['real_time_factor']:.4f}"] for name, row in report["streams"].items()]
    return (_table(["35-word model", "clips right", "clips"], clips) + [""]
            + _table(["detector", "stream keywords", "real-time factor"], streams))


def _front_ends(report: dict) -> list[str]:
    names = list(next(iter(report["accuracy"].values())))
    rtf = report.get("real_time_factor", {})
    rows = [[f"`{kind}`"] + [_percent(acc[name]) for name in names] + [f"{rtf[kind]:.3f}" if kind in rtf else "-"]
            for kind, acc in report["accuracy"].items()]
    return ([f"Linear probes trained on `{report['train']}` "
             f"({report['clips']['training']:,} clips); clips right, and the stream operator's real-time factor "
             f"(one thread):", ""]
            + _table(["front end"] + [f"{name} ({report['clips'][name]})" for name in names]
                     + ["real-time factor"], rows))


def _phrases(report: dict) -> list[str]:
    rows = [[name, _streams(row.get("bundled")), _streams(row["calibrated"]), f"{row['real_time_factor']:.4f}"]
            for name, row in report.items()]
    return _table(["detector", "as bundled", "calibrated on phrase streams", "real-time factor"], rows)


def _detect(report: dict) -> list[str]:
    names = {"baseline": "baseline", "sparse": "sparsity-trained", "pruned": "pruned, no fine-tuning",
             "plain": "pruned + fine-tuning", "feature": "pruned + feature distillation", "cwd": "pruned + CWD"}
    rows = [[names[n], f"{r['params'] / 1e6:.2f} M", f"{r['gflops']:.2f}", f"{r['map50']:.3f}", f"{r['map50_95']:.3f}",
             f"{r['fps_1']:.1f}", f"{r['fps_all']:.1f}"] for n, r in report["rows"].items()]
    targets = [[t["target"], f"{t['ratio']:.2f}", next(f"{op} {t[k]:g}" for k, op in
                (("minimum", ">="), ("maximum", "<="), ("above", ">")) if k in t), "met" if t["met"] else "**missed**"]
               for t in report["targets"]]
    s, track = report["settings"], report["tracking"]
    return (_table(["variant", "parameters", "GFLOPs", "mAP50", "mAP50-95", "frames/s, 1 thread", "frames/s, all"],
                   rows)
            + ["", f"{s['imgsz']} px, {s['train']} training images, epochs {s['epochs']}, pruning {s['prune']} "
                   f"({s.get('prune_mode', 'global')}); "
                   f"{report['minutes']} minutes on {report['machine']['processor']} "
                   f"({report['machine']['threads']} threads). GFLOPs as ultralytics counts them (2 x MACs).", ""]
            + _table(["target", "measured", "required", ""], targets)
            + ([""] + [f"{names[kind]}, mAP50 by seed: {', '.join(f'{m:.3f}' for m in runs)} (mean "
                       f"{sum(runs) / len(runs):.3f})." for kind, runs in report["seeds"].items()]
               if report.get("seeds") else [])
            + ([""] + [f"CWD with w = {w}: mAP50 {r['map50']:.3f}, mAP50-95 {r['map50_95']:.3f}."
                       for w, r in report["cwd_sweep"].items()] if report.get("cwd_sweep") else [])
            + ["", f"Tracker (CWD model) on a generated video: MOTA {track['mota']:.3f}, {track['id_switches']} ID "
                   f"switches, {track['misses']} misses, {track['false_positives']} false positives."])


def _continual(report: dict) -> list[str]:
    lines: list[str] = []
    for data, entry in report["datasets"].items():
        rows = [[name, f"{s['class_il']:.3f} ± {s['class_il_std']:.3f}", f"{s['task_il']:.3f}",
                 "-" if s["bwt"] != s["bwt"] else f"{s['bwt']:+.3f}",
                 "-" if s["flops_vs_dense"] != s["flops_vs_dense"] else f"{s['flops_vs_dense']:.2f}x",
                 f"{s['seconds']:.0f}"] for name, s in entry["summary"].items()]
        lines += [f"{data}: {entry['network']} network (width {entry['width']}), {entry['epochs']} epochs a task, "
                  f"batch {entry['batch']}, lr {entry.get('lr', 0.03)}, {report['settings']['seeds']} seeds.", ""]
        lines += _table(["method", "class-IL", "task-IL", "backward transfer",
                         "fewer training FLOPs than class-masked DER++", "seconds"], rows) + [""]
    targets = [[t["target"], f"{t['ratio']:.2f}",
                f"<= {t['maximum']:g}" if "maximum" in t else f">= {t['minimum']:g}",
                "met" if t["met"] else "**missed**"] for t in report["targets"]]
    return lines + _table(["target", "measured", "required", ""], targets) + [
        "", f"{report['minutes']} minutes on {report['machine']['processor']} ({report['machine']['threads']} threads)."]


def _sparse_kernel(report: dict) -> list[str]:
    rows = [[r["channels"], r["map"], f"{r['sparsity']:.0%}", f"{r['ms']['dense']:.3f}", f"{r['ms']['im2col']:.3f}",
             f"{r['ms']['csr']:.3f}", f"{r['csr_speedup']:.2f}x"] for r in report["rows"]]
    return [f"Batch {report['batch']}, one thread, forward only.", ""] + _table(
        ["channels", "map", "sparsity", "dense conv ms", "unfold + dense ms", "unfold + CSR ms", "CSR vs dense"], rows)


def _caption(report: dict) -> list[str]:
    rows = [[name, f"{s['cider']:.3f} ± {s['cider_std']:.3f}", f"{s['BLEU-4']:.3f}", f"{s['METEOR']:.3f}",
             f"{s['ROUGE-L']:.3f}", f"{s['parameters'] / 1e6:.2f} M", f"{s['gflops']:.3f}", f"{s['latency_ms']:.1f}"]
            for name, s in report["summary"].items()]
    video = [[name, v["frames"], v["decoder_runs"], f"{v['frames_per_second']:.1f}", f"{v['longest_wait_s']:.2f} s"]
             for name, v in report["video"].items()]
    targets = [[t["target"], f"{t['ratio']:.3f}" + (f" (per seed {', '.join(f'{d:+.1f}' for d in t['per_seed'])})"
                                                     if "per_seed" in t else ""),
                f"<= {t['maximum']:g}" if "maximum" in t else f">= {t['minimum']:g}",
                "met" if t["met"] else "**missed**"] for t in report["targets"]]
    settings = report["settings"]
    return ([f"{settings['train']} training and {settings['test']} test images of the generated set, "
             f"{settings['seeds']} seed(s), beam 1; parameters after the shared frozen CLIP.", ""]
            + _table(["model", "CIDEr-D", "BLEU-4", "METEOR", "ROUGE-L", "parameters", "GFLOPs / image",
                      "ms / image (1 thread)"], rows) + [""]
            + _table(["scene video", "frames", "decoder runs", "frames / s", "longest wait for a new caption"], video)
            + [""] + _table(["target", "measured", "required", ""], targets)
            + ["", f"{report['minutes']} minutes on {report['machine']['processor']}" + _resumed(report) + "."])


def _serve(report: dict) -> list[str]:
    ms = (lambda x: "-" if x is None else f"{x:.0f}")
    rows = [[r["model"], r["server"], r["streams"], ms(r["latency_p50_ms"]), ms(r["latency_p99_ms"]),
             ms(r["system_p99_ms"]), r["dropped_samples"], f"{r['finish_lag_s']:.2f}",
             f"{r['exact_streams']} / {r['streams']}", f"{r['server_cpu_ms_per_stream_s']:.1f}",
             "yes" if r["real_time"] else "**no**"]
            for r in sorted(report["runs"], key=lambda r: (r["model"], r["server"], r["streams"]))]
    best: dict[tuple, list[int]] = {}
    for r in report["runs"]:
        held = best.setdefault((r["model"], r["server"]), [0, 0])
        if r["real_time"]:
            held[0] = max(held[0], r["streams"])
            if r["latency_p99_ms"] <= 300:
                held[1] = max(held[1], r["streams"])
    summary = [[model, server, n, n300] for (model, server), (n, n300) in sorted(best.items())]
    machine = report["machine"]
    return ([f"Every client streams the {report['recording_s']:.0f} s demo recording at the speed of the audio in "
             f"100 ms messages; server and clients share one machine ({machine['cores']} cores, "
             f"{machine['processor']}). Latency: from the keyword's end in the audio to the event at the client "
             f"(system: from the event's own time); CPU: the machine's less the clients', per second of stream "
             f"audio.", ""]
            + _table(["spotter", "server", "streams", "latency p50 ms", "p99 ms", "system p99 ms", "dropped samples",
                      "finish lag s", "exact events", "server CPU ms / stream s", "real time"], rows)
            + ["", "The most streams measured to hold real time (no audio dropped, every stream closed within 0.5 s of "
               "its audio's end, p99 latency under 1 s), and with p99 <= 300 ms (target for the embedded server "
               "with the bundled spotter: >= 200):", ""]
            + _table(["spotter", "server", "real-time streams", "with p99 <= 300 ms"], summary))


def _export(report: dict) -> list[str]:
    rows = [[r["model"], r["batch"], *(f"{r['us_per_stream_frame'][k]:.1f}" for k in ("engine", "onnxruntime", "step")),
             f"{r['file_mb']:.2f}"] for r in report["rows"]]
    return ["One thread; microseconds per frame of one stream (batch 64: per stream and frame). The filterbank is "
            "`HopFbank` (one 10 ms hop per step); its engine is `StreamingFbank` on the hop.", ""] + _table(
        ["model", "streams", "engine µs", "onnxruntime µs", "model.step µs", "ONNX file MB"], rows)


def _resumed(report: dict) -> str:
    reused = report.get("reused_checkpoints")
    return f", resumed: {len(reused)} trained stages loaded from an earlier run ({', '.join(reused)})" if reused else ""


SECTIONS = [
    ("lmu_memory", "Legendre memory (`lmu_memory.py`)", _targets),
    ("model_step", "One model frame (`model_step.py`)", _targets),
    ("kws_stream", "Live spotting (`kws_stream.py`)", _kws_stream),
    ("train_step", "Distillation step (`train_step.py`)", _train_step),
    ("voices", "Leave one voice out (`voices.py`)", _voices),
    ("engines", "DECtalk, an engine no model heard (`engines.py`)", _engine),
    ("engines_piper", "Piper, a voice learnt from a person (`engines.py --engine piper`)", _engine),
    ("engines_kokoro", "Kokoro, accented neural voices (`engines.py --engine kokoro`)", _engine),
    ("front_ends", "Front ends on unheard engines, a linear probe (`front_ends.py`)", _front_ends),
    ("phrases", "Keywords inside sentences (`phrases.py`)", _phrases),
    ("detect", "YOLOv8 compression (`detect.py`)", _detect),
    ("continual", "Sparse continual learning (`continual.py`)", _continual),
    ("sparse_kernel", "Sparse convolution on CPU (`sparse_kernel.py`)", _sparse_kernel),
    ("caption", "Image captioning (`caption.py`)", _caption),
    ("serve", "The keyword service under load (`serve.py`)", _serve),
    ("export", "Exported steps (`export.py`)", _export),
]


def render() -> str:
    lines = [INTRO.rstrip("\n")]
    for name, title, table in SECTIONS:
        report = _load(name)
        if report is not None:
            lines += ["", f"## {title}", ""] + table(report)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if bench/README.md differs from the results")
    args = parser.parse_args(argv)
    target, text = BENCH / "README.md", render()
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print("bench/README.md is out of date: run python bench/report.py")
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
