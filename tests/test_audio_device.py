"""``streamlmu listen`` on a real audio device: a PulseAudio null sink whose monitor acts as the microphone.

A private PulseAudio daemon plays the bundled demo recording into the sink
(``paplay``) while ``listen`` records from the monitor through PortAudio, as
it would from a microphone. Skipped where PulseAudio cannot run.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from streamlmu.pretrained import DEMO_RECORDING, DEMO_TRUTH

KEYWORDS = json.loads(DEMO_TRUTH.read_text())["keywords"]


@pytest.fixture
def pulse(tmp_path):
    if not (shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("pactl")):
        pytest.skip("PulseAudio (pulseaudio, pulseaudio-utils) is not installed")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path))
    started = subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                              "--load=module-null-sink sink_name=vmic", "--load=module-native-protocol-unix"],
                             env=env, capture_output=True, text=True, timeout=30)
    pid_file = runtime / "pulse" / "pid"
    for _ in range(50):
        if pid_file.exists():
            break
        time.sleep(0.1)
    if started.returncode != 0 or not pid_file.exists():
        pytest.skip(f"the PulseAudio daemon did not start: {started.stderr.strip()[-300:]}")
    pid = int(pid_file.read_text().split()[0])
    try:
        subprocess.run(["pactl", "set-default-source", "vmic.monitor"], env=env, check=True, timeout=30)
        yield env
    finally:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def _keywords(stdout: str) -> list[str]:
    return [json.loads(line)["keyword"] for line in stdout.splitlines() if line.strip()]


def test_listen_hears_keywords_played_into_an_audio_device(pulse):
    # the filterbank spotter: its scores on this recording sit well clear of its thresholds, so the check is of the
    # device path (the default spotter's "left" scores 0.9997 against 0.999 and can flip with the device's alignment)
    cli = [sys.executable, "-m", "streamlmu.apps.cli", "listen", "--model", "lmuformer-tiny-synth12-kws",
           "--keywords", ",".join(KEYWORDS)]
    from_file = subprocess.run(cli + [str(DEMO_RECORDING), "--quiet"], capture_output=True, text=True, timeout=300)
    expected = _keywords(from_file.stdout)
    devices = subprocess.run(cli + ["--list-devices"], env=pulse, capture_output=True, text=True, timeout=60)
    assert "pulse" in devices.stdout, devices.stdout + devices.stderr
    listener = subprocess.Popen(cli + ["--device", "pulse", "--seconds", "33"], env=pulse, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # let the recorder open the device
    subprocess.run(["paplay", "--device=vmic", str(DEMO_RECORDING)], env=pulse, check=True, timeout=120)
    out, err = listener.communicate(timeout=120)
    assert listener.returncode == 0, err
    heard = _keywords(out)
    print("file:", expected, "device:", heard, err.strip().splitlines()[-1:])
    assert len(expected) >= 3
    assert heard[:len(expected)] == expected  # the recording's keywords, in order, through the device
    assert "listened to 33.0 s of audio" in err
