import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamlmu.apps import cli

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_apps(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for app in cli.APPS:
        assert app in out


@pytest.mark.parametrize("app", list(cli.APPS))
def test_every_app_has_help(app, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([app, "--help"])
    assert exit_.value.code == 0
    assert "usage: streamlmu " + app in capsys.readouterr().out


def test_no_app_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "APP" in capsys.readouterr().out


def test_lmu_demo_recalls_the_delayed_signal(capsys):
    assert cli.main(["lmu-demo", "--fps", "0", "--frames", "300", "--every", "50"]) == 0
    out = capsys.readouterr().out
    corr = float(re.search(r"correlation ([0-9.]+)", out).group(1))
    assert corr > 0.99, out


def test_lmu_demo_bad_argument_is_a_clear_error(capsys):
    assert cli.main(["lmu-demo", "--delay", "2"]) == 2
    assert "--delay must lie in [0, 1] (got 2.0)" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "streamlmu"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "lmu-demo" in result.stdout


def run_benchmark(name: str, tmp_path) -> tuple[dict, str]:
    """Run ``bench/<name>.py --quick``; its JSON report and stdout."""
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def test_benchmark_runs_and_writes_json(tmp_path):
    report, stdout = run_benchmark("lmu_memory", tmp_path)
    assert {(r["batch"], r["order"]) for r in report["results"]} == {(1, 64), (64, 64), (1, 256), (64, 256)}
    assert all(t > 0 for r in report["results"] for t in r["us_per_call"].values())
    assert len(report["targets"]) == 6 and "targets" in stdout


def test_model_benchmark_runs_and_writes_json(tmp_path):
    report, _ = run_benchmark("model_step", tmp_path)
    rows = {(r["model"], r["preset"], r["batch"]) for r in report["results"]}
    assert ("LMUFormer", "paper", 64) in rows and ("SpikingLMUFormer", "tiny", 1) in rows
    assert all(t > 0 for r in report["results"] for t in r["us_per_frame"].values())
    assert {t["target"] for t in report["targets"]} >= {"engine vs torch eager step", "engine within 2x of the floor"}


def test_keyword_spotting_benchmark_runs_and_writes_json(tmp_path):
    report, stdout = run_benchmark("kws_stream", tmp_path)
    assert {(r["preset"], r["streams"]) for r in report["rows"]} == {(p, n) for p in ("paper", "tiny")
                                                                     for n in (1, 16, 256)}
    assert all(r["rtf"] > 0 and r["streams_per_core"] > 0 and r["products_streams_per_core"] > 0
               for r in report["rows"])
    assert report["paper_products_streams_per_core"] > 0 and "matrix products alone" in stdout


def test_training_step_benchmark_runs_and_writes_json(tmp_path):
    report, stdout = run_benchmark("train_step", tmp_path)
    assert set(report["ms_per_batch"]) == {"teacher_kernels", "teacher_batched", "student", "teacher_bf16",
                                           "student_bf16"}
    assert all(ms > 0 for ms in report["ms_per_batch"].values())
    assert report["bf16_step_speedup"] > 0 and "bfloat16 autocast" in stdout
    assert report["targets"][0]["target"] == "batched teacher vs kernel teacher" and "teacher share" in stdout


def _voice_counts(corpus: Path) -> dict[str, int]:
    """Clips per ``voice`` in a synthetic corpus's metadata.csv, in file order."""
    import csv
    with open(Path(corpus) / "metadata.csv") as f:
        voices = [row["voice"] for row in csv.DictReader(f)]
    return {v: voices.count(v) for v in dict.fromkeys(voices)}


def _leave_out(corpus: Path, voice: str, work: Path, out: Path, *extra: str) -> None:
    """Run ``bench/voices.py`` on the clips task of the speech-embedding front end with ``voice`` held out."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "voices.py"), "--data", str(corpus), "--holdout", f"voice={voice}",
         "--features", "speech-embedding", "--tasks", "clips", "--feature-variants", "1", "--threads", "1",
         "--work", str(work), "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def test_leave_one_voice_out_benchmark_merges_its_cells(tiny_corpus, tmp_path):
    """Two hold-outs run one after the other into one results file: both cells stay, each held-out voice is
    scored on all of its clips, and the table lists both."""
    counts = _voice_counts(tiny_corpus)
    voices = sorted(counts, key=counts.get)[-2:]  # the two voices with the most clips
    out = tmp_path / "voices.json"
    for voice in voices:
        _leave_out(tiny_corpus, voice, tmp_path / "work", out, "--quick")
    report = json.loads(out.read_text())
    assert set(report) == {f"voice={v}" for v in voices}
    for voice in voices:
        clips = report[f"voice={voice}"]["speech-embedding"]["clips"]
        assert clips["heldout_clips"] == counts[voice] and 0.0 <= clips["heldout_accuracy"] <= 1.0
        assert clips["other_voices_clips"] > 0
    table = out.with_suffix(".md").read_text()
    assert all(f"| voice={v} | speech-embedding |" in table for v in voices)


def test_leave_one_voice_out_benchmark_resumes_a_short_run(tiny_corpus, tmp_path):
    """A model trained for fewer epochs than asked (a run killed part way) is resumed, not taken as done or
    trained again: its first epoch's row stays as it was and the second is added."""
    voice = next(iter(_voice_counts(tiny_corpus)))
    metrics = tmp_path / "work" / f"voice-{voice}" / "clips-speech-embedding" / "metrics.csv"
    _leave_out(tiny_corpus, voice, tmp_path / "work", tmp_path / "voices.json", "--epochs", "1")
    first = metrics.read_text().splitlines()
    _leave_out(tiny_corpus, voice, tmp_path / "work", tmp_path / "voices.json", "--epochs", "2", "--force")
    rows = metrics.read_text().splitlines()
    assert len(first) == 2 and len(rows) == 3 and rows[:2] == first


def test_phrase_benchmark_scores_a_spotter_as_bundled_and_calibrated(tiny_corpus, tmp_path):
    """bench/phrases.py on the tiny corpus: both rows count every keyword said in the test phrase streams, the
    calibrated thresholds come from the grid, and a second run keeps the row instead of measuring it again."""
    out = tmp_path / "phrases.json"
    command = [sys.executable, str(ROOT / "bench" / "phrases.py"), "--data", str(tiny_corpus), "--spotter",
               "lmuformer-tiny-phrases12-kws", "--no-pocketsphinx", "--minutes", "1", "--calibrate-minutes", "1",
               "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())["lmuformer-tiny-phrases12-kws"]
    assert row["bundled"]["occurrences"] == row["calibrated"]["occurrences"] > 0
    assert set(row["thresholds"]) == {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
    out.write_text(json.dumps({"lmuformer-tiny-phrases12-kws": {**row, "real_time_factor": 123.0}}))
    assert subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0
    assert "| 123.0000 |" in out.with_suffix(".md").read_text()  # kept, not measured again


def test_pocketsphinx_peer_takes_a_threshold_per_keyword(tiny_corpus, monkeypatch):
    """bench/voices.py's peer: only the keywords given listen, each at its own threshold, and calibration
    returns one threshold of its grid per keyword within the false-alarm budget (or the strictest)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import numpy as np
    import pocketsphinx_kws

    from streamlmu.data.speech_commands import SpeechCommands
    from streamlmu.data.streams import StreamBuilder, StreamConfig
    keywords = ("yes", "no", "up")
    builder = StreamBuilder(SpeechCommands(tiny_corpus, "training", 35), keywords, StreamConfig(seconds=20.0))
    built = [builder.build(seed=i) for i in range(2)]
    audio, truths = np.stack([a for a, _ in built]), [t for _, t in built]
    loose = pocketsphinx_kws.spot(audio[0], {"yes": 1e-30})
    strict = pocketsphinx_kws.spot(audio[0], {"yes": 1e30})
    assert loose and {e.keyword for e in loose} == {"yes"} and len(strict) < len(loose)
    chosen, summary = pocketsphinx_kws.calibrate(audio, truths, keywords, 2.0)
    assert set(chosen) == set(keywords) and set(chosen.values()) <= set(pocketsphinx_kws.THRESHOLDS)
    assert summary["false_alarms_per_hour"] <= 2.0 or set(chosen.values()) == {max(pocketsphinx_kws.THRESHOLDS)}
