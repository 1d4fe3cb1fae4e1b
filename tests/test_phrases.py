import numpy as np
import pytest

from streamlmu.data.phrases import KEYWORD_SENTENCES, PLAIN_SENTENCES, PhraseConfig, PhraseStreamBuilder, PhraseWindows
from streamlmu.data.speech_commands import SAMPLE_RATE, UNKNOWN, WORDS_10, SpeechCommands
from streamlmu.data.synth import SynthConfig, generate, read_metadata
from streamlmu.data.voices import DECTALK, ESPEAK, ESPEAK_ACCENTS, FESTIVAL, KOKORO, Prosody, Voice, synthesize


def _all_sentences() -> list[str]:
    return sorted({s for table in (KEYWORD_SENTENCES, PLAIN_SENTENCES) for split in table.values() for s in split})


def test_keyword_sentences_hold_keywords_plain_ones_none_and_evaluation_has_sentences_of_its_own():
    for split in ("training", "testing"):
        said = [w for sentence in KEYWORD_SENTENCES[split] for w in sentence.split()]
        assert set(said) >= set(WORDS_10), split  # every keyword, in training and evaluation sentences
        assert all(set(sentence.split()) & set(WORDS_10) for sentence in KEYWORD_SENTENCES[split])
        assert not any(set(sentence.split()) & set(WORDS_10) for sentence in PLAIN_SENTENCES[split])
    training = set(KEYWORD_SENTENCES["training"] + PLAIN_SENTENCES["training"])
    for split in ("validation", "testing"):
        assert not training & set(KEYWORD_SENTENCES[split] + PLAIN_SENTENCES[split])


def test_every_engine_reports_every_word_of_every_sentence():
    """espeak-ng merges some pairs of small words into one word event ("in the"); such a sentence would lose its
    word times, so none of the sentences may have one, in any accent."""
    sentences = [tuple(s.split()) for s in _all_sentences()]
    requests = [(Voice(ESPEAK, accent, "m3"), words, Prosody()) for accent in ESPEAK_ACCENTS for words in sentences]
    requests += [(Voice(FESTIVAL, "kal_diphone"), words, Prosody()) for words in sentences]
    for (_, words, _), speech in zip(requests, synthesize(requests)):
        assert len(speech.spans) == len(words)
        assert all(a <= b for a, b in speech.spans)


@pytest.fixture(scope="module")
def builder(tiny_corpus):
    return PhraseStreamBuilder(SpeechCommands(tiny_corpus, "training", 35), WORDS_10, PhraseConfig(seconds=40.0,
                                                                                                   rooms=2))


def test_a_phrase_stream_is_a_function_of_its_seed(builder):
    audio, truth = builder.build(seed=5)
    again, truth_again = builder.build(seed=5)
    other, _ = builder.build(seed=6)
    assert audio.shape == (40 * SAMPLE_RATE,) and audio.dtype == np.float32
    assert np.array_equal(audio, again) and truth == truth_again and not np.array_equal(audio, other)


def test_phrase_stream_words_are_where_their_times_say(builder):
    audio, truth = builder.build(seed=5)
    assert any(w.word in WORDS_10 for w in truth)
    assert all(0 <= w.start < w.end <= len(audio) / SAMPLE_RATE for w in truth)
    assert all(a.start <= b.start for a, b in zip(truth, truth[1:]))
    inside = np.zeros(len(audio), bool)
    for w in truth:
        inside[int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)] = True
    # outside the words: pauses over the background bed, and the tails of rooms, a small share of the energy
    assert np.mean(audio[inside] ** 2) > 30 * np.mean(audio[~inside] ** 2)


def test_phrase_streams_need_a_corpus_that_lists_its_speakers(tmp_path, tiny_corpus):
    import shutil
    root = tmp_path / "plain"
    shutil.copytree(tiny_corpus, root)
    (root / "metadata.csv").unlink()
    with pytest.raises(ValueError, match="metadata.csv"):
        PhraseStreamBuilder(SpeechCommands(root, "training", 35), WORDS_10)


def test_phrase_streams_leave_out_the_engines_that_tell_no_word_times(tmp_path):
    cfg = SynthConfig(clips_per_word=4, background_seconds=2.0, rooms=1, engines=(DECTALK, KOKORO),
                      validation_percent=0.0, testing_percent=100.0, kokoro_share=0.5)
    root = generate(tmp_path / "timeless", cfg, ("yes", "bed"), progress=False)
    assert {row["engine"] for row in read_metadata(root).values()} == {DECTALK, KOKORO}
    with pytest.raises(ValueError, match="word times, which dectalk and kokoro do not tell"):
        PhraseStreamBuilder(SpeechCommands(root, "testing", 35), WORDS_10)


def test_phrase_windows_are_labelled_by_the_last_keyword_heard_near_their_end(tiny_corpus):
    windows = PhraseWindows(SpeechCommands(tiny_corpus, "training", 35), count=64, sentences=16, seed=1,
                            cfg=PhraseConfig(rooms=2))
    keyword_sentences = set(KEYWORD_SENTENCES["training"])
    assert len(windows) == 64 and windows.labels_present() == {windows.classes.index(k) for k in WORDS_10} | \
        {windows.classes.index(UNKNOWN)}
    seen = set()
    for index in range(64):
        audio, label, words = windows.window(index)
        assert audio.shape == (2 * SAMPLE_RATE,) and words
        name = windows.classes[label]
        seen.add(name)
        done = [w for w in words if 1.0 <= w.start and 1.5 < w.end <= 2.0]  # wholly in, ending in the last half
        underway = [w for w in words if w.start < 2.0 < w.end and 2.0 - w.start >= 0.7 * (w.end - w.start)]
        keywords = [w.word for w in sorted(done + underway, key=lambda w: w.end) if w.word in WORDS_10]
        assert name == (keywords[-1] if keywords else UNKNOWN)
    assert UNKNOWN in seen and len(seen) > 3
    assert all(" ".join(w.word for w in windows.pool[i][1]) in keyword_sentences | set(PLAIN_SENTENCES["training"])
               for i in range(len(windows.pool)))
    again = PhraseWindows(SpeechCommands(tiny_corpus, "training", 35), count=64, sentences=16, seed=1,
                          cfg=PhraseConfig(rooms=2))
    assert np.array_equal(again[5][0].numpy(), windows[5][0].numpy()) and again[5][1] == windows[5][1]
    windows.set_epoch(1)
    assert not np.array_equal(again[5][0].numpy(), windows[5][0].numpy())  # heard anew in another epoch
