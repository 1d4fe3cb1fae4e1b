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
