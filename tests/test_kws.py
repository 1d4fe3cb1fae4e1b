import json
import os
import time

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import upfirdn

from streamlmu.audio.detect import DetectorConfig, detector_init, detector_reset, detector_run, keyword_thresholds
from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.kws_eval import replay, run_streams, score
from streamlmu.audio.resample import StreamingResampler, resample_filter
from streamlmu.audio.sources import FileSource, PCMSource
from streamlmu.data.speech_commands import AudioFileError
from streamlmu.data.streams import Occurrence

MODEL = "lmuformer-tiny-synth35"


# ------------------------------------------------------------------ resampling
@pytest.mark.parametrize("orig", [48000, 44100, 22050, 8000])
def test_streaming_resampler_equals_the_whole_signal(orig):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12000)).astype(np.float32)
    resampler = StreamingResampler(orig, 16000, streams=2)
    pieces, start = [], 0
    while start < x.shape[1]:
        size = int(rng.integers(1, 700))
        pieces.append(resampler(x[:, start:start + size]))
        start += size
    y = np.concatenate(pieces, axis=1)
    h = resample_filter(resampler.up, resampler.down)
    whole = np.stack([upfirdn(h, row, resampler.up, resampler.down) for row in x])
    whole = whole[:, resampler.delay:resampler.delay + y.shape[1]]
    assert abs(y.shape[1] - x.shape[1] * 16000 / orig) <= resampler.latency_samples * 16000 / orig + 2
    assert np.abs(y - whole).max() <= 1e-5


def test_resampler_passes_equal_rates_through_and_checks_shapes():
    x = np.ones((1, 100), np.float32)
    assert np.array_equal(StreamingResampler(16000, 16000)(x), x)
    with pytest.raises(ValueError, match=r"shape \(streams=2, samples\)"):
        StreamingResampler(48000, 16000, streams=2)(x)


# ------------------------------------------------------------------ detector
def _config(**kw):
    values = dict(thresholds=(0.5, 0.5, float("inf")), rearm_fraction=0.5, smooth_frames=1,
                  patience_frames=3, refractory_frames=5, speech_gate_frames=-1)
    values.update(kw)
    return DetectorConfig(**values)


def _run(cfg, posteriors):
    """Frame by frame, checked against one call over the whole chunk."""
    state = detector_init(1, cfg)
    energy = np.zeros((1, 1), np.float32)
    fired = [int(detector_run(p[None, None], energy, state, cfg)[0][0, 0]) for p in posteriors]
    whole = detector_run(posteriors[None], np.zeros((1, len(posteriors)), np.float32), detector_init(1, cfg), cfg)
    assert whole[0][0].tolist() == fired
    return fired


def test_detector_fires_once_after_patience_and_rearms():
    p = np.zeros((40, 3), np.float32)
    p[2:12, 0] = 0.9      # keyword 0 held for 10 frames: one event on the third frame over the threshold
    p[14:20, 0] = 0.9     # back above after falling below rearm: fires again
    p[25:35, 2] = 1.0     # a class with threshold inf never fires
    fired = _run(_config(), p)
    assert [i for i, f in enumerate(fired) if f >= 0] == [4, 16]
    assert fired[4] == 0 and fired[16] == 0


def test_detector_needs_rearming_and_respects_refractory_time():
    p = np.zeros((30, 3), np.float32)
    p[0:5, 0] = 0.9
    p[5:8, 0] = 0.4       # dips, but not below rearm 0.25: no second event
    p[8:12, 0] = 0.9
    p[3:10, 1] = 0.8      # keyword 1 qualifies at frame 5, inside keyword 0's refractory time (frames 3..7)
    fired = _run(_config(), p)
    events = [(i, f) for i, f in enumerate(fired) if f >= 0]
    assert events[0] == (2, 0)
    assert (8, 1) in events and all(f != 0 for i, f in events[1:])
    assert all(i >= 8 for i, _ in events[1:])


def test_detector_reset_rearms_one_stream():
    cfg = _config(refractory_frames=0)
    state = detector_init(2, cfg)
    high = np.zeros((2, 3, 3), np.float32)
    high[:, :, 0] = 0.9
    quiet = np.zeros((2, 3), np.float32)
    assert detector_run(high, quiet, state, cfg)[0][:, -1].tolist() == [0, 0]
    detector_reset(state, np.array([1]), cfg)
    assert detector_run(high, quiet, state, cfg)[0][:, -1].tolist() == [-1, 0]


def test_detector_warms_up_after_start_and_reset():
    cfg = _config(refractory_frames=0, warmup_frames=6)
    state = detector_init(2, cfg)
    high = np.zeros((2, 10, 3), np.float32)
    high[:, :, 0] = 0.9                                  # over the threshold from the first frame
    quiet = np.zeros((2, 10), np.float32)
    fired = detector_run(high, quiet, state, cfg)[0]
    assert [int(np.argmax(row >= 0)) for row in fired] == [6, 6]   # not before the warm-up ends
    detector_reset(state, np.array([0]), cfg)
    fired = detector_run(high, quiet, state, cfg)[0]
    assert (fired[0, :6] < 0).all() and fired[0, 6] == 0           # the reset stream warms up again
    with pytest.raises(ValueError, match="warmup_frames"):
        _config(warmup_frames=-1)


def test_speech_gate_stops_keywords_long_after_speech_and_on_silence():
    cfg = _config(speech_gate_frames=10, vad_margin=0.2, vad_rise=0.001)
    energy = np.full((1, 60), -1.0, np.float32)     # background
    energy[0, 5:15] = -0.5                            # a word, 0.5 above the floor
    p = np.zeros((1, 60, 3), np.float32)
    p[0, 12:20, 0] = 0.9                              # keyword 0 while the word ends: fires
    p[0, 40:50, 1] = 0.9                              # keyword 1 26 frames after speech: gated
    fired, _ = detector_run(p, energy, detector_init(1, cfg), cfg)
    assert [(t, int(k)) for t, k in enumerate(fired[0]) if k >= 0] == [(14, 0)]
    silence = np.full((1, 60), -3.0, np.float32)      # digital silence: never speech
    assert (detector_run(p, silence, detector_init(1, cfg), cfg)[0] < 0).all()
    ungated = _config(speech_gate_frames=-1)
    assert (detector_run(p, silence, detector_init(1, ungated), ungated)[0] >= 0).sum() == 2


def test_speech_gate_opens_for_a_quiet_word_by_default():
    energy = np.full((1, 40), -1.0, np.float32)      # background
    energy[0, 5:15] = -0.85                           # a quiet word, about 7 dB over the background
    p = np.zeros((1, 40, 3), np.float32)
    p[0, 12:20, 0] = 0.9
    default = _config(speech_gate_frames=10, vad_margin=DetectorConfig.vad_margin)
    fired, _ = detector_run(p, energy, detector_init(1, default), default)
    assert [(t, int(k)) for t, k in enumerate(fired[0]) if k >= 0] == [(14, 0)]
    strict = _config(speech_gate_frames=10, vad_margin=0.2)   # 10 dB: the word does not count as speech
    assert (detector_run(p, energy, detector_init(1, strict), strict)[0] < 0).all()


def test_keyword_thresholds_name_bad_keywords():
    labels = ("yes", "no", "_unknown_", "_silence_")
    assert keyword_thresholds(labels, None, 0.7) == (0.7, 0.7, float("inf"), float("inf"))
    assert keyword_thresholds(labels, ("no",), {"no": 0.8}) == (float("inf"), 0.8, float("inf"), float("inf"))
    with pytest.raises(ValueError, match="unknown keyword.*maybe"):
        keyword_thresholds(labels, ("maybe",), 0.5)
    with pytest.raises(ValueError, match=r"posterior in \(0, 1\]"):
        keyword_thresholds(labels, None, 1.5)


# ------------------------------------------------------------------ the spotter
def _events(kws, audio, rate, chunk):
    kws.reset()
    for start in range(0, len(audio), chunk):
        kws.accept_waveform(audio[start:start + chunk], rate)
    return [(e.keyword, round(e.t, 3)) for e in kws.poll_events()]


def test_spotter_finds_the_demo_keywords_for_any_chunk_size(demo):
    audio, rate, truth = demo
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]))
    reference = _events(kws, audio, rate, 1600)
    spoken = [w for w in truth["words"] if w["word"] in truth["keywords"]]
    found = [k for k, t in reference if any(w["word"] == k and w["start"] <= t <= w["end"] + 1 for w in spoken)]
    print("events", reference, "spoken keywords", [w["word"] for w in spoken])
    assert len(found) >= len(spoken) - 1 and len(reference) <= len(spoken) + 1
    assert _events(kws, audio, rate, 37) == reference
    int16 = np.round(audio * 32767).astype(np.int16)
    assert _events(kws, int16, rate, 1600) == _events(kws, int16.astype(np.float32) / 32768, rate, 1600)


@pytest.mark.parametrize("verified", [False, True])
def test_a_stream_state_saved_mid_word_resumes_with_the_same_events(demo, tmp_path, verified):
    from streamlmu.stream import load_state, save_state
    audio, rate, truth = demo
    options = dict(keywords=tuple(truth["keywords"]))
    if verified:
        options.update(verifier="lmuformer-tiny-synth35", verify_delay_s=0.3)
    whole = _events(StreamingKWS.from_pretrained(MODEL, **options), audio, rate, 1600)
    if verified:  # between a detection and its confirmation, 0.3 s later
        at = next(t for _, t in whole if t > 2.0) - 0.15
    else:  # in the middle of a keyword
        word = next(w for w in truth["words"] if w["word"] in options["keywords"] and w["start"] > 2.0)
        at = (word["start"] + word["end"]) / 2
    cut = int(round(at * rate))
    first = StreamingKWS.from_pretrained(MODEL, **options)
    for start in range(0, cut, 1600):
        first.accept_waveform(audio[start:min(start + 1600, cut)], rate)
    if verified:
        assert (first.state.verifier.waiting[..., 2] >= 0).sum() == 1  # one detection waits for its audio
    save_state(first.state, tmp_path / "kws.pt")
    before = [(e.keyword, round(e.t, 3)) for e in first.poll_events()]
    second = StreamingKWS.from_pretrained(MODEL, **options)
    second.state = load_state(tmp_path / "kws.pt")
    for start in range(cut, len(audio), 1600):
        second.accept_waveform(audio[start:start + 1600], rate)
    after = [(e.keyword, round(e.t, 3)) for e in second.poll_events()]
    assert after and before + after == whole


def test_int8_spotter_reports_the_same_demo_keywords(demo, capsys):
    from streamlmu.apps.cli import main
    audio, rate, truth = demo
    keywords = tuple(truth["keywords"])
    exact = _events(StreamingKWS.from_pretrained(MODEL, keywords=keywords), audio, rate, 1600)
    int8 = _events(StreamingKWS.from_pretrained(MODEL, keywords=keywords, int8_min_batch=1), audio, rate, 1600)
    print("float32", exact, "int8", int8)
    assert [k for k, _ in int8] == [k for k, _ in exact]
    assert all(abs(a[1] - b[1]) <= 0.05 for a, b in zip(int8, exact))
    capsys.readouterr()
    assert main(["listen", "demo", "--model", MODEL, "--int8", "--quiet", "--keywords", ",".join(keywords)]) == 0
    assert [json.loads(line)["keyword"] for line in capsys.readouterr().out.splitlines()] == [k for k, _ in int8]


def test_spotter_resamples_other_rates(demo):
    audio, rate, truth = demo
    from scipy.signal import resample_poly
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]))
    reference = _events(kws, audio, rate, 1600)
    at48 = resample_poly(audio, 3, 1).astype(np.float32)
    resampled = _events(kws, at48, 48000, 4800)
    assert [k for k, _ in resampled] == [k for k, _ in reference]
    assert all(abs(a - b) <= 0.05 for (_, a), (_, b) in zip(resampled, reference))


def test_bad_chunks_are_refused_without_losing_state(demo):
    audio, rate, truth = demo
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]))
    reference = _events(kws, audio, rate, 1600)
    kws.reset()
    bad = audio[:1600].copy()
    bad[100] = np.nan
    for start in range(0, len(audio), 1600):
        if start == 16000:
            with pytest.raises(ValueError, match="NaN or Inf.*sample 100.*unchanged"):
                kws.accept_waveform(bad, rate)
            with pytest.raises(ValueError, match=r"shape \(samples,\) or \(1, samples\)"):
                kws.accept_waveform(np.zeros((2, 160), np.float32), rate)
            with pytest.raises(TypeError, match="float or integer PCM"):
                kws.accept_waveform(np.array(["a"]), rate)
        kws.accept_waveform(audio[start:start + 1600], rate)
    assert [(e.keyword, round(e.t, 3)) for e in kws.poll_events()] == reference
    assert kws.stats.rejected_chunks == 1


def test_clipping_and_silence_are_handled(demo):
    audio, rate, truth = demo
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]))
    kws.accept_waveform(np.clip(audio[:32000] * 50, -1, 1), rate)
    assert kws.stats.clipped_samples > 0
    kws.reset()
    assert _events(kws, np.zeros(16000 * 60, np.float32), rate, 16000) == []


def test_streams_advance_together_and_reset_alone(demo):
    audio, rate, truth = demo
    keywords = tuple(truth["keywords"])
    single = StreamingKWS.from_pretrained(MODEL, keywords=keywords)
    reference = _events(single, audio, rate, 1600)
    kws = StreamingKWS.from_pretrained(MODEL, keywords=keywords, streams=3)
    batch = np.stack([audio, np.zeros_like(audio), audio])
    for start in range(0, len(audio), 1600):
        if start == 48000:
            kws.reset(2)  # stream 2 restarts: its clock starts again at 0
        kws.accept_waveform(batch[:, start:start + 1600], rate)
    events = kws.poll_events()
    first = [(e.keyword, round(e.t, 3)) for e in events if e.stream == 0]
    assert [k for k, _ in first] == [k for k, _ in reference]
    assert all(abs(a - b) <= 0.011 for (_, a), (_, b) in zip(first, reference))  # BLAS rounding may move a frame
    assert not [e for e in events if e.stream == 1]
    assert all(e.t < 30 - 3 for e in events if e.stream == 2)
    with pytest.raises(ValueError, match=r"stream must be in \[0, 3\)"):
        kws.reset(3)


def test_each_stream_warms_up_after_it_starts_or_is_reset():
    kws = StreamingKWS.from_pretrained(MODEL, streams=2, warmup_s=0.5)
    assert kws.detector.warmup_frames == 50
    kws.accept_waveform(np.zeros((2, 16000), np.float32), 16000)   # 98 frames: both warmed up
    assert kws.state.pipeline[-1].detector.quiet.tolist() == [0, 0]
    kws.reset(1)
    assert kws.state.pipeline[-1].detector.quiet.tolist() == [0, 50]
    assert StreamingKWS.from_pretrained(MODEL).detector.warmup_frames == 80   # the default, 0.8 s


def test_replay_gives_the_live_events(demo):
    audio, rate, truth = demo
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]), streams=2)
    events, posteriors, energy = run_streams(kws, np.stack([audio, audio[::-1].copy()]))
    replayed = replay(posteriors, energy, kws.detector, kws.labels, kws.features)
    assert [[(e.keyword, round(e.t, 4)) for e in s] for s in replayed] == \
        [[(e.keyword, round(e.t, 4)) for e in s] for s in events]


def test_calibration_keeps_false_alarms_within_the_budget(demo):
    from streamlmu.audio.kws_eval import THRESHOLD_GRID, _with_thresholds, calibrate
    audio, rate, truth = demo
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]), streams=2, threshold=0.3)
    # stream 1 plays the recording backwards: every event there is a false alarm
    _, posteriors, energy = run_streams(kws, np.stack([audio, audio[::-1].copy()]))
    truths = [[Occurrence(w["start"], w["end"], w["word"]) for w in truth["words"]], []]
    seconds = 2 * len(audio) / rate
    for budget in (0.0, 1e6):
        chosen, reached, rows = calibrate(kws, posteriors, energy, truths, seconds, budget)
        assert set(chosen) == set(truth["keywords"]) and set(chosen.values()) <= set(THRESHOLD_GRID)
        report = score(replay(posteriors, energy, _with_thresholds(kws, chosen), kws.labels, kws.features), truths,
                       kws.keywords, seconds)
        top = all(t == THRESHOLD_GRID[-1] for t in chosen.values())
        assert report.false_alarms_per_hour <= budget or top  # within budget, or as strict as the grid goes
        assert len(rows) == len(THRESHOLD_GRID) and reached == report.summary()
    assert report.hit_rate == max(r["hit_rate"] for r in rows)  # no budget: as many hits as any threshold gives


def test_score_counts_hits_false_alarms_and_latency():
    from streamlmu.audio.kws import Event
    truth = [[Occurrence(1.0, 1.5, "yes"), Occurrence(3.0, 3.4, "cat"), Occurrence(5.0, 5.5, "no")]]
    events = [[Event(1.4, "yes", 0.9), Event(1.9, "yes", 0.9), Event(3.3, "no", 0.9), Event(9.0, "no", 0.9)]]
    report = score(events, truth, ("yes", "no"), seconds=1800)
    assert report.keywords["yes"].hits == 1 and report.keywords["yes"].false_alarms == 1
    assert report.keywords["no"].hits == 0 and report.keywords["no"].false_alarms == 2
    assert report.hit_rate == 0.5 and report.false_alarms_per_hour == 6.0
    assert report.latency() == pytest.approx(-0.1)


# ------------------------------------------------------------------ sources
def test_sources_read_files_and_pcm(tmp_path, demo):
    audio, rate, _ = demo
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.stack([audio[:8000], audio[:8000]], axis=1), rate)
    chunks = list(FileSource(stereo, chunk_s=0.1))
    assert len(chunks) == 5 and np.allclose(np.concatenate([c for c, _ in chunks]), audio[:8000], atol=1e-4)
    import io
    pcm = np.round(audio[:3200] * 32767).astype(np.int16)
    got = np.concatenate([c for c, _ in PCMSource(io.BytesIO(pcm.tobytes() + b"\x01"), 16000)])
    assert np.allclose(got, pcm / 32768.0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioFileError, match="bad.wav"):
        FileSource(bad)


def test_pcm_from_a_pipe_comes_in_whole_chunks_and_ctrl_c_is_acted_on_while_it_waits():
    import signal
    import threading
    import time
    r, w = os.pipe()
    source = PCMSource(os.fdopen(r, "rb"), 16000, chunk_s=0.1)  # 3200 bytes a chunk
    raised, finished = [], threading.Event()

    def writer() -> None:
        for _ in range(21):  # 4200 bytes in small pieces: one whole chunk, then a part that waits for more
            os.write(w, b"\0" * 200)
            time.sleep(0.005)
        time.sleep(0.3)
        raised.append(time.perf_counter())
        signal.raise_signal(signal.SIGINT)  # handled in this thread: the reader's wait is not interrupted
        if not finished.wait(30):
            os.write(w, b"\0" * 3200)  # only when the reader missed it: wake it so the test fails, not hangs

    # Python's own Ctrl-C handler, also where this run inherited SIGINT as ignored (a job started with `&`)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    sizes = []
    try:
        with pytest.raises(KeyboardInterrupt):
            for chunk, _ in source:
                sizes.append(len(chunk))
    finally:
        signal.signal(signal.SIGINT, inherited)
    waited = time.perf_counter() - raised[0]
    finished.set()
    thread.join()
    os.close(w)
    assert sizes == [1600]
    assert waited < 10  # within a few select polls, not when the next audio arrives (30 s)


# ------------------------------------------------------------------ programs
def test_listen_prints_json_events_and_a_summary(capsys, demo):
    from streamlmu.apps.cli import main
    _, _, truth = demo
    assert main(["listen", "demo", "--keywords", ",".join(truth["keywords"])]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all(set(e) == {"t", "keyword", "score", "stream", "source"} for e in events)
    assert all(e["source"] == "demo" and e["keyword"] in truth["keywords"] for e in events)
    assert "listened to 30.0 s of audio" in err and "p99" in err


def test_listen_warmup_holds_back_events_at_the_start_of_each_input(tmp_path, capsys, demo):
    import soundfile
    from streamlmu.apps.cli import main
    audio, rate, truth = demo
    word = next(w for w in truth["words"] if w["word"] == "yes")
    clip = tmp_path / "yes.wav"                       # 1.2 s that start 0.3 s before the word
    soundfile.write(clip, audio[int((word["start"] - 0.3) * rate):int((word["start"] + 0.9) * rate)], rate)
    times = {}
    for warmup in ("0", "0.8"):
        assert main(["listen", str(clip), "--quiet", "--warmup", warmup, "--keywords", "yes"]) == 0
        times[warmup] = [json.loads(line)["t"] for line in capsys.readouterr().out.splitlines()]
    assert len(times["0"]) == 1 and times["0"][0] < 0.8 <= times["0.8"][0]
    assert main(["listen", str(clip), "--warmup", "-1"]) == 2
    assert "--warmup must be >= 0" in capsys.readouterr().err

def test_listen_reads_raw_pcm_on_stdin(demo):
    import subprocess
    import sys
    audio, _, truth = demo
    pcm = np.round(audio * 32767).astype(np.int16).tobytes()
    done = subprocess.run([sys.executable, "-m", "streamlmu.apps.cli", "listen", "-", "--quiet",
                           "--keywords", ",".join(truth["keywords"])], input=pcm, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    file_events = subprocess.run([sys.executable, "-m", "streamlmu.apps.cli", "listen", "demo", "--quiet",
                                  "--keywords", ",".join(truth["keywords"])], capture_output=True, timeout=300)
    keywords = [json.loads(line)["keyword"] for line in done.stdout.decode().splitlines()]
    assert keywords and keywords == [json.loads(line)["keyword"] for line in file_events.stdout.decode().splitlines()]


def test_listen_stops_cleanly_on_ctrl_c_and_shows_a_live_line_on_a_terminal(demo):
    import pty
    import re
    import select
    import signal
    import subprocess
    import sys
    import time
    audio, _, _ = demo
    primary, secondary = pty.openpty()  # stderr is a terminal: the live line appears
    listener = subprocess.Popen([sys.executable, "-m", "streamlmu.apps.cli", "listen", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=secondary,  # Ctrl-C reaches it even from a `&` job:
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(secondary)
    listener.stdin.write(np.round(audio[:48000] * 32767).astype(np.int16).tobytes())
    listener.stdin.flush()  # stdin stays open: listen waits for more audio, as with a live source
    terminal = b""
    deadline = time.time() + 120
    def heard_s() -> float:  # the live line's latest stream time
        times = re.findall(rb"(\d+\.\d\d) s ", terminal)
        return float(times[-1]) if times else 0.0

    while heard_s() < 2.9 and time.time() < deadline:  # the live line reaches the end of the audio
        if select.select([primary], [], [], 1.0)[0]:
            terminal += os.read(primary, 65536)
    listener.send_signal(signal.SIGINT)
    listener.wait(timeout=60)
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(primary)
    text = terminal.decode(errors="replace")
    assert listener.returncode == 0
    assert "dBFS" in text and "listened to 3.0 s of audio" in text


def test_listen_bad_input_is_a_clear_error(tmp_path, capsys):
    from streamlmu.apps.cli import main
    (tmp_path / "x.wav").write_bytes(b"not audio")
    assert main(["listen", str(tmp_path / "x.wav")]) == 2
    assert "x.wav: not a readable audio file" in capsys.readouterr().err
    assert main(["listen", "demo", "--keywords", "maybe"]) == 2
    assert "unknown keyword(s) maybe" in capsys.readouterr().err
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    data = whole.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])  # a recording cut off mid-way
    assert main(["listen", str(tmp_path / "cut.wav")]) == 0
    assert "listened to 1.0 s of audio" in capsys.readouterr().err  # what is there is heard


def test_kws_eval_reports_and_plots(tiny_corpus, tmp_path, capsys):
    from streamlmu.apps.cli import main
    assert main(["kws-eval", "--data", str(tiny_corpus), "--keywords", "yes,no", "--minutes", "2", "--streams", "2",
                 "--calibrate", "60", "--calibrate-minutes", "3", "--plot", str(tmp_path / "s.png"),
                 "--json", str(tmp_path / "r.json"), "--save-thresholds", str(tmp_path / "tuned.pt"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on" in out and "false alarms per hour" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["occurrences"] > 0 and 0 <= report["hit_rate"] <= 1 and report["hours"] == pytest.approx(2 / 60, abs=1e-4)
    assert report["validation"]["hours"] == pytest.approx(3 / 60, abs=1e-4)  # calibrated on its own length
    assert len(report["calibration"]) > 3 and set(report["per_keyword"]) >= {"yes", "no"}
    assert report["validation"]["false_alarms_per_hour"] <= 60 or set(report["thresholds"].values()) == {0.999}
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    tuned = StreamingKWS.from_pretrained(tmp_path / "tuned.pt")  # the calibrated keywords and thresholds by default
    assert set(tuned.keywords) == {"yes", "no"}
    assert [tuned.detector.thresholds[tuned.labels.index(k)] for k in ("yes", "no")] == \
        [report["thresholds"]["yes"], report["thresholds"]["no"]]
    assert main(["kws-eval", "--data", str(tiny_corpus), "--keywords", "yes,no", "--minutes", "1", "--streams", "2",
                 "--calibrate", "1000", "--min-threshold", "0.99", "--plot", "", "--json", str(tmp_path / "f.json"),
                 "--quiet"]) == 0
    floored = json.loads((tmp_path / "f.json").read_text())
    assert min(floored["thresholds"].values()) >= 0.99  # a large budget would have taken lower ones
    assert main(["kws-eval", "--data", str(tiny_corpus), "--calibrate-minutes", "3", "--quiet"]) == 2
    assert "--calibrate-minutes and --min-threshold need --calibrate" in capsys.readouterr().err
    assert main(["kws-eval", "--data", str(tiny_corpus), "--calibrate", "2", "--min-threshold", "1"]) == 2
    assert "--min-threshold must be at most 0.999" in capsys.readouterr().err
    assert main(["kws-eval", "--data", str(tiny_corpus), "--calibrate", "2", "--calibrate-minutes", "0"]) == 2
    assert "--calibrate-minutes must be > 0" in capsys.readouterr().err


def test_kws_eval_on_phrase_streams_counts_the_keywords_said_in_sentences(tiny_corpus, tmp_path):
    from streamlmu.apps.cli import main
    from streamlmu.data.phrases import PhraseConfig, PhraseStreamBuilder
    from streamlmu.data.speech_commands import SpeechCommands
    assert main(["kws-eval", "--data", str(tiny_corpus), "--phrases", "--minutes", "1", "--streams", "2",
                 "--plot", "", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    builder = PhraseStreamBuilder(SpeechCommands(tiny_corpus, "testing", 35), tuple(report["keywords"]),
                                  PhraseConfig(seconds=30.0))
    said = sum(w.word in report["keywords"] for seed in (0, 1) for w in builder.build(seed)[1])
    assert report["streams"] == "phrases" and report["occurrences"] == said > 0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read memory use")
def test_an_hour_of_audio_keeps_memory_bounded_and_events_correct(demo):
    """Soak: stream 0 hears the 30 s demo recording 120 times over (1 h), stream 1 an hour of digital silence,
    at full speed in 100 ms chunks."""
    audio, rate, truth = demo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as listen runs: small per-hop work is fastest on one thread
    try:
        _soak(audio, rate, truth)
    finally:
        torch.set_num_threads(threads)


def _soak(audio, rate, truth):
    kws = StreamingKWS.from_pretrained(MODEL, keywords=tuple(truth["keywords"]), streams=2)
    repeats, chunk, period = 120, 1600, len(audio) / rate
    batch = np.stack([audio, np.zeros_like(audio)])
    per_repeat, silent, rss = [], [], []
    for r in range(repeats):
        for start in range(0, len(audio), chunk):
            kws.accept_waveform(batch[:, start:start + chunk], rate)
        events = kws.poll_events()
        per_repeat.append([(e.keyword, e.t - r * period) for e in events if e.stream == 0])
        silent += [e for e in events if e.stream == 1]
        if r in (9, repeats - 1):  # after 5 min of warm-up, and at the end
            rss.append(_rss_mb())
    samples = repeats * len(audio)
    assert kws.stats.frames == 1 + (samples - 400) // 160  # every 10 ms hop was computed
    assert kws.stream_time() == pytest.approx(kws.stats.frames * 0.01)
    steady = per_repeat[1]
    print(f"soak: {kws.stats.audio_seconds / 3600:.2f} h per stream, {kws.stats.events} events, memory {rss} MB, "
          f"per repeat {[k for k, _ in steady]}, compute per hop {kws.hop_seconds.mean * 1e3:.3f} ms")
    assert steady and all([k for k, _ in events] == [k for k, _ in steady] for events in per_repeat[1:])
    assert all(abs(t - t0) <= 0.02 for events in per_repeat[1:] for (_, t), (_, t0) in zip(events, steady))
    assert not silent  # an hour of silence fires nothing
    assert rss[1] - rss[0] <= 10.0


class _FakeSoundDevice:
    """A stand-in for ``sounddevice`` with one input device that sends ``blocks`` blocks after ``delay_s``."""

    PortAudioError = RuntimeError

    def __init__(self, delay_s: float | None, blocks: int):
        self.delay_s, self.blocks = delay_s, blocks

    def query_devices(self, device=None, kind=None):
        info = {"name": "fake mic", "max_input_channels": 1, "default_samplerate": 16000.0}
        return info if kind else [info]

    def check_input_settings(self, **settings):
        pass

    def InputStream(self, blocksize, callback, **settings):
        import contextlib
        import threading
        import types

        def send():
            time.sleep(self.delay_s)
            for _ in range(self.blocks):
                status = types.SimpleNamespace(input_overflow=False)
                callback(np.zeros((blocksize, 1), np.float32), blocksize, None, status)

        @contextlib.contextmanager
        def stream():
            if self.delay_s is not None:
                threading.Thread(target=send, daemon=True).start()
            yield
        return stream()


@pytest.mark.parametrize("delay_s, blocks, waited", [(0.3, 3, 0.2), (None, 0, 0.5)])
def test_microphone_waits_longer_for_its_first_block_than_between_blocks(monkeypatch, delay_s, blocks, waited):
    from streamlmu.audio import sources
    monkeypatch.setattr(sources, "_sounddevice", lambda: _FakeSoundDevice(delay_s, blocks))
    monkeypatch.setattr(sources.MicrophoneSource, "start_s", 0.5)
    monkeypatch.setattr(sources.MicrophoneSource, "gap_s", 0.2)
    heard = []
    with pytest.raises(RuntimeError, match=f"'fake mic' delivered nothing for {waited:g} s"):
        for chunk, _ in sources.MicrophoneSource():
            heard.append(len(chunk))
    assert heard == [1600] * blocks  # 0.1 s blocks at 16 kHz, all of them, then the error


def _embedding_spotter(**kwargs) -> StreamingKWS:
    """A spotter over an untrained speech-embedding LMUFormer (its events are arbitrary, its mechanics are not)."""
    from streamlmu.audio.embedding import SpeechEmbeddingConfig
    from streamlmu.data.speech_commands import labels_for
    from streamlmu.models import LMUFormer, LMUFormerConfig
    torch.manual_seed(3)
    model = LMUFormer(LMUFormerConfig.preset("tiny", in_features=96, theta=16.0, num_classes=12)).eval()
    with torch.no_grad():
        model.head.weight *= 30  # confident answers, so that keywords fire
    model.labels, model.features, model.thresholds = labels_for(12), SpeechEmbeddingConfig(), None
    return StreamingKWS(model, threshold=0.2, warmup_s=0.0, speech_gate_s=-1, **kwargs)


def test_speech_embedding_spotter_is_exact_under_any_chunking_and_replays(demo):
    audio, rate, _ = demo
    kws = _embedding_spotter()
    assert kws.window_frames == 12 and kws.detector.vad_rise == pytest.approx(0.0048)
    reference = _events(kws, audio, rate, 1600)
    assert reference and _events(kws, audio, rate, 333) == reference
    assert all(abs((t - 0.032) / 0.08 - round((t - 0.032) / 0.08)) < 1e-3 for _, t in reference)  # frame ends
    two = _embedding_spotter(streams=2)
    events, posteriors, energy = run_streams(two, np.stack([audio, audio[::-1].copy()]))
    assert posteriors.shape[1] == two.features.num_frames(len(audio))
    replayed = replay(posteriors, energy, two.detector, two.labels, two.features)
    assert [[(e.keyword, round(e.t, 4)) for e in s] for s in replayed] == \
        [[(e.keyword, round(e.t, 4)) for e in s] for s in events]
    # the speech gate reads each frame's level: loud speech frames stand well above the quiet ones
    assert np.percentile(energy[0], 95) - np.percentile(energy[0], 5) > 0.3
