import hashlib
import shutil

import numpy as np
import pytest
import soundfile
import torch

from conftest import TINY_WORDS
from streamlmu.apps.cli import main
from streamlmu.data import speech_commands
from streamlmu.data.speech_commands import (SILENCE, UNKNOWN, WORDS_10, AudioFileError, SpeechCommands, collate,
                                            labels_for, read_audio)
from streamlmu.data.synth import SynthConfig, generate, read_metadata, split_of


def digest(root, rel):
    return hashlib.sha1((root / rel).read_bytes()).hexdigest()


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path):
    cfg = SynthConfig(clips_per_word=3, background_seconds=2.0, seed=5)
    a = generate(tmp_path / "a", cfg, ("yes", "two"), progress=False)
    b = generate(tmp_path / "b", cfg, ("yes", "two"), progress=False)
    c = generate(tmp_path / "c", SynthConfig(clips_per_word=3, background_seconds=2.0, seed=6), ("yes", "two"),
                 progress=False)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert all(digest(a, f) == digest(b, f) for f in files)
    assert read_metadata(a) != read_metadata(c)


def test_layout_splits_and_metadata(tiny_corpus):
    meta = read_metadata(tiny_corpus)
    assert len(meta) == 12 * len(TINY_WORDS)
    assert sorted(p.name for p in (tiny_corpus / "_background_noise_").glob("*.wav")) == \
        ["babble_noise.wav", "brown_noise.wav", "hum_noise.wav", "pink_noise.wav", "white_noise.wav"]
    listed = {}
    for name in ("validation", "testing"):
        for rel in (tiny_corpus / f"{name}_list.txt").read_text().split():
            assert (tiny_corpus / rel).is_file()
            listed[rel] = name
    speakers = {}
    for rel, row in meta.items():
        split = listed.get(rel, "training")
        assert split == row["split"] == split_of(row["speaker"])
        speakers.setdefault(row["speaker"], set()).add(split)
        wave, rate = soundfile.read(str(tiny_corpus / rel))
        assert rate == 16000 and wave.shape == (16000,)
        onset, end = float(row["onset_s"]), float(row["end_s"])
        assert 0 <= onset < end <= 1
        inside = wave[int(onset * 16000):int(end * 16000)]
        outside = np.concatenate([wave[:int(onset * 16000)], wave[int(end * 16000):]])
        if outside.size > 1600:  # the word is louder than the noise around it (SNR >= 5 dB)
            assert np.sqrt(np.mean(inside ** 2)) > np.sqrt(np.mean(outside ** 2))
    assert all(len(splits) == 1 for splits in speakers.values()), "a speaker in two splits"
    assert len(speakers) > 30


def test_dataset_35_labels(tiny_corpus):
    subsets = {s: SpeechCommands(tiny_corpus, s, labels=35) for s in ("training", "validation", "testing")}
    assert sum(len(d) for d in subsets.values()) == 12 * len(TINY_WORDS)
    wave, label = subsets["training"][0]
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    assert labels_for(35)[label] in TINY_WORDS
    # held-out clips are the same every time; training clips get new noise each epoch
    held = subsets["testing"]
    assert torch.equal(held[0][0], held[0][0])
    train = subsets["training"]
    first = train[0][0]
    train.set_epoch(1)
    assert not torch.equal(first, train[0][0]) or train.noise_probability == 0


def test_audio_cache_reads_each_file_once_and_changes_no_sample(tiny_corpus, monkeypatch):
    plain = SpeechCommands(tiny_corpus, "training")
    expected = []
    for epoch in (0, 1):  # noise differs by epoch: the cached clip must not keep an earlier epoch's
        plain.set_epoch(epoch)
        expected.append([plain[i][0] for i in range(len(plain))])
    cached = SpeechCommands(tiny_corpus, "training", cache_audio=True)
    reads = []
    real = speech_commands.read_audio
    monkeypatch.setattr(speech_commands, "read_audio", lambda path, *args: reads.append(path) or real(path, *args))
    for epoch in (0, 1):
        cached.set_epoch(epoch)
        assert all(torch.equal(cached[i][0], wave) for i, wave in enumerate(expected[epoch]))
    assert len(reads) == len(set(reads)) == len(cached)


def test_dataset_12_labels(tiny_corpus):
    data = SpeechCommands(tiny_corpus, "training", labels=12, unknown_fraction=None)
    names = [labels_for(12)[label] for _, label in data.items]
    known = sum(n in WORDS_10 for n in names)
    assert names.count(UNKNOWN) > 0 and names.count(SILENCE) == int(np.ceil(0.1 * known))
    silence = next(i for i, (rel, _) in enumerate(data.items) if rel is None)
    wave, label = data[silence]
    assert labels_for(12)[label] == SILENCE and wave.shape == (16000,)
    fewer = SpeechCommands(tiny_corpus, "training", labels=12, unknown_fraction=0.1)
    assert [labels_for(12)[l] for _, l in fewer.items].count(UNKNOWN) == int(np.ceil(0.1 * known))


def test_missing_or_malformed_root_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="speech_commands_v0.02.tar.gz.*synth-speech-commands"):
        SpeechCommands(tmp_path / "nowhere")
    (tmp_path / "yes").mkdir()
    with pytest.raises(FileNotFoundError, match="validation_list.txt, testing_list.txt"):
        SpeechCommands(tmp_path)
    with pytest.raises(ValueError, match="35 or 12"):
        SpeechCommands(tmp_path, labels=10)


def test_bad_audio_files(tmp_path):
    sine = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    soundfile.write(str(tmp_path / "eight_khz.wav"), sine, 8000)
    assert read_audio(tmp_path / "eight_khz.wav").shape == (16000,)  # resampled to 16 kHz
    soundfile.write(str(tmp_path / "stereo.wav"), np.stack([sine, -sine], axis=1), 8000)
    assert read_audio(tmp_path / "stereo.wav").abs().max() < 1e-4  # mixed down (16-bit rounding left)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioFileError, match="text.wav"):
        read_audio(tmp_path / "text.wav")
    soundfile.write(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    with pytest.raises(AudioFileError, match="empty.wav.*no samples"):
        read_audio(tmp_path / "empty.wav")
    data = (tmp_path / "eight_khz.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[:30])
    with pytest.raises(AudioFileError, match="truncated.wav"):
        read_audio(tmp_path / "truncated.wav")


def test_training_skips_and_counts_bad_clips(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    data = SpeechCommands(root, "training", skip_bad_files=True)
    rel = data.items[0][0]
    (root / rel).write_bytes(b"RIFF broken")
    assert data[0] is None
    waves, labels, skipped = collate([data[0], data[1], data[2]])
    assert waves.shape == (2, 16000) and labels.shape == (2,) and skipped == 1
    with pytest.raises(AudioFileError, match=rel.split("/")[1]):
        SpeechCommands(root, "training")[0]


def test_cli_writes_a_corpus(tmp_path, capsys):
    assert main(["synth-speech-commands", "--out", str(tmp_path / "c"), "--words", "yes,go",
                 "--clips-per-word", "2", "--background-seconds", "2", "--workers", "1"]) == 0
    assert "wrote 4 clips of 2 words" in capsys.readouterr().out
    assert len(list((tmp_path / "c").glob("*/*.wav"))) == 4 + 5
    assert main(["synth-speech-commands", "--out", str(tmp_path / "d"), "--words", "yes,hello"]) == 2
    assert main(["synth-speech-commands", "--out", str(tmp_path / "e"), "--words", "no", "--engines", "dectalk",
                 "--testing-percent", "100", "--validation-percent", "0", "--clips-per-word", "3",
                 "--background-seconds", "2", "--workers", "1"]) == 0
    assert len((tmp_path / "e" / "testing_list.txt").read_text().split()) == 3
    assert main(["synth-speech-commands", "--out", str(tmp_path / "f"), "--engines", "no-such-engine"]) == 2
    assert "engines must be a non-empty subset" in capsys.readouterr().err
    assert main(["synth-speech-commands", "--out", str(tmp_path / "g"), "--testing-percent", "95"]) == 2
