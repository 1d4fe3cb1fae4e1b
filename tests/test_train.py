import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import streamlmu
from streamlmu import cpu
from streamlmu.apps.cli import main
from streamlmu.audio.asr_encoder import AsrEncoderConfig
from streamlmu.audio.embedding import SpeechEmbeddingConfig
from streamlmu.data.speech_commands import SpeechCommands, labels_for
from streamlmu.data.synth import read_metadata
from streamlmu.models import LMUFormerConfig
from streamlmu.models.registry import build_model
from streamlmu.train.distributed import parameter_digest
from streamlmu.train.evaluate import evaluate
from streamlmu.train.trainer import TrainConfig, train

# The tiny corpus has 6 of the 35 words; the fixture checks that warning once.
pytestmark = pytest.mark.filterwarnings("ignore:.*has no training clips")

# A small model keeps every run here to a few seconds.
SMALL = dict(dim=16, order=16)


def config(data, out, **kw) -> TrainConfig:
    kw = dict(dict(batch_size=16, tensorboard=False, overrides=SMALL), **kw)
    return TrainConfig(data=str(data), out=str(out), **kw)


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    """Two epochs, uninterrupted: the reference run."""
    out = tmp_path_factory.mktemp("run")
    with pytest.warns(UserWarning, match="no training clips of 29 of the 35 labels"):
        result = train(config(tiny_corpus, out, epochs=2, tensorboard=True), progress=False)
    return out, result


def test_run_writes_checkpoints_logs_and_learns_something(trained):
    out, result = trained
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "metrics.csv", "tb"}
    assert any(p.name.startswith("events.") for p in (out / "tb").iterdir())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert result["best_val_accuracy"] == max(h["val_accuracy"] for h in history)


def test_resumed_run_equals_uninterrupted_run(trained, tiny_corpus, tmp_path):
    out, reference = trained
    steps_per_epoch = reference["steps"] // 2
    # Killed one step into the second epoch: last.pt still holds the end of epoch 1.
    killed = train(config(tiny_corpus, tmp_path, epochs=2, max_steps=steps_per_epoch + 1), progress=False)
    assert len(killed["history"]) == 1
    resumed = train(config(tiny_corpus, tmp_path, epochs=2), resume=True, progress=False)
    assert without_time(resumed["history"]) == without_time(reference["history"])
    assert resumed["digests"] == reference["digests"]
    a, b = streamlmu.load_model(out / "last.pt"), streamlmu.load_model(tmp_path / "last.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_refuses_a_different_recipe_or_a_missing_run(trained, tiny_corpus, tmp_path):
    out, _ = trained
    shutil.copy(out / "last.pt", tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"seed \(0 vs 1\)"):
        train(config(tiny_corpus, tmp_path, epochs=3, seed=1), resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(config(tiny_corpus, tmp_path / "none", epochs=3), resume=True, progress=False)
    (tmp_path / "other").mkdir()
    shutil.copy(out / "best.pt", tmp_path / "other" / "last.pt")  # a model file, not a run
    with pytest.raises(ValueError, match="no training state"):
        train(config(tiny_corpus, tmp_path / "other", epochs=3), resume=True, progress=False)


def test_warmup_ramps_the_learning_rate_linearly(tiny_corpus, tmp_path):
    result = train(config(tiny_corpus, tmp_path, epochs=1, warmup_steps=100), progress=False)
    assert result["history"][0]["lr"] == pytest.approx(2.5e-3 * result["steps"] / 100)


def test_learning_rate_schedule_options(tiny_corpus, tmp_path):
    result = train(config(tiny_corpus, tmp_path, epochs=3, lr_step=1, lr_gamma=0.5), progress=False)
    assert [h["lr"] for h in result["history"]] == pytest.approx([2.5e-3, 1.25e-3, 6.25e-4])
    with pytest.raises(ValueError, match="lr_step must be >= 1 and lr_gamma in"):
        config(tiny_corpus, tmp_path, lr_step=0)
    with pytest.raises(ValueError, match="lr_step must be >= 1 and lr_gamma in"):
        config(tiny_corpus, tmp_path, lr_gamma=1.5)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        config(tiny_corpus, tmp_path, lr_schedule="linear")


def test_cosine_schedule_decays_towards_zero_over_the_epochs_and_a_resume_keeps_it(tiny_corpus, tmp_path):
    cosine = [2.5e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    whole = train(config(tiny_corpus, tmp_path / "whole", epochs=4, lr_schedule="cosine"), progress=False)
    assert [h["lr"] for h in whole["history"]] == pytest.approx(cosine)
    killed = config(tiny_corpus, tmp_path / "split", epochs=4, lr_schedule="cosine",
                    max_steps=2 * whole["steps"] // 4 + 1)  # one step into the third epoch
    assert len(train(killed, progress=False)["history"]) == 2
    with pytest.raises(ValueError, match="lr_schedule"):  # a resumed run keeps its schedule
        train(config(tiny_corpus, tmp_path / "split", epochs=4), resume=True, progress=False)
    resumed = train(config(tiny_corpus, tmp_path / "split", epochs=4, lr_schedule="cosine"), resume=True,
                    progress=False)
    assert without_time(resumed["history"]) == without_time(whole["history"])


def test_weight_average_follows_the_formula_and_copies_integer_buffers():
    from streamlmu.train.averaging import WeightAverage
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model(torch.randn(4, 3))  # batch norm: running statistics and the batch counter move
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18..., then the decay
        current = model.state_dict()
        expected = {k: d * v + (1 - d) * current[k] if v.is_floating_point() else current[k].clone()
                    for k, v in expected.items()}
        average.update(model)
    for name, value in average.model.state_dict().items():
        assert torch.allclose(value, expected[name]), name
    assert average.model.state_dict()["1.num_batches_tracked"] == 3 and average.updates == 3
    assert not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(model, decay=1.0)


def test_weight_average_is_validated_saved_and_resumed(tiny_corpus, tmp_path):
    whole = train(config(tiny_corpus, tmp_path / "whole", epochs=2, ema=0.9, lr=2e-2), progress=False)
    last = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    trained, averaged = last["training"]["model_weights"], last["weights"]
    assert last["training"]["average_updates"] == whole["steps"]
    assert not torch.equal(trained["head.weight"], averaged["head.weight"])  # the average is what was saved
    model = streamlmu.load_model(tmp_path / "whole" / "last.pt")
    validation = SpeechCommands(tiny_corpus, "validation")

    def val_loss(weights: dict) -> float:  # the trainer's validation loss (bce on one-hot targets)
        model.load_state_dict(weights)
        run = evaluate(model, validation, progress=False)
        targets = torch.nn.functional.one_hot(torch.from_numpy(run.targets), len(run.classes)).float()
        return float(torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(run.logits), targets))
    logged = whole["history"][-1]["val_loss"]
    assert val_loss(averaged) == pytest.approx(logged, rel=1e-4)  # validation ran on the average
    assert val_loss(trained) != pytest.approx(logged, rel=1e-2)
    killed = config(tiny_corpus, tmp_path / "split", epochs=2, ema=0.9, lr=2e-2, max_steps=whole["steps"] // 2 + 1)
    assert len(train(killed, progress=False)["history"]) == 1
    with pytest.raises(ValueError, match="ema"):  # a resumed run keeps its averaging
        train(config(tiny_corpus, tmp_path / "split", epochs=2, lr=2e-2), resume=True, progress=False)
    resumed = train(config(tiny_corpus, tmp_path / "split", epochs=2, ema=0.9, lr=2e-2), resume=True, progress=False)
    assert without_time(resumed["history"]) == without_time(whole["history"])
    again = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    for name, value in averaged.items():
        assert torch.equal(value, again["weights"][name]), name
    with pytest.raises(ValueError, match="ema must be a decay per step"):
        config(tiny_corpus, tmp_path, ema=1.5)


def test_frequency_warp_option(tiny_corpus, tmp_path):
    plain = train(config(tiny_corpus, tmp_path / "plain", epochs=1), progress=False)
    warped = train(config(tiny_corpus, tmp_path / "warp", epochs=1, freq_warp=0.1), progress=False)
    assert warped["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    with pytest.raises(ValueError, match="freq_warp"):  # a resumed run keeps its augmentation
        train(config(tiny_corpus, tmp_path / "warp", epochs=2), resume=True, progress=False)
    with pytest.raises(ValueError, match=r"freq_warp must be in \[0, 1\)"):
        config(tiny_corpus, tmp_path, freq_warp=1.5)


def test_audio_cache_and_bfloat16_options(tiny_corpus, tmp_path, monkeypatch):
    plain = train(config(tiny_corpus, tmp_path / "plain", epochs=1), progress=False)
    cached = train(config(tiny_corpus, tmp_path / "cached", epochs=1, cache_audio=True), progress=False)
    assert without_time(cached["history"]) == without_time(plain["history"])  # the same samples
    monkeypatch.setattr(cpu, "cpu_has", lambda flags: False)  # a CPU that emulates bfloat16 is told so
    with pytest.warns(RuntimeWarning, match="--bf16 on a CPU without bfloat16 instructions") as caught:
        mixed = train(config(tiny_corpus, tmp_path / "bf16", epochs=1, bf16=True), progress=False)
    assert [w.filename for w in caught if "--bf16" in str(w.message)] == [__file__]  # the caller's line
    loss = mixed["history"][0]["train_loss"]
    assert math.isfinite(loss) and loss != plain["history"][0]["train_loss"]
    weights = torch.load(tmp_path / "bf16" / "last.pt", weights_only=False)["weights"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    with pytest.raises(ValueError, match="bf16"):  # a resumed run keeps its precision
        train(config(tiny_corpus, tmp_path / "bf16", epochs=2), resume=True, progress=False)


def test_softmax_cross_entropy_option(tiny_corpus, tmp_path):
    result = train(config(tiny_corpus, tmp_path, epochs=1, loss="ce"), progress=False)
    assert result["history"][0]["train_loss"] > 0
    with pytest.raises(ValueError, match="loss must be one of"):
        config(tiny_corpus, tmp_path, loss="hinge")


def test_warm_start_and_distillation(trained, tiny_corpus, tmp_path):
    out, _ = trained
    teacher = streamlmu.load_model(out / "best.pt")
    # --init copies every tensor whose name and shape match; a spiking student shares most of them, and is told
    # which it does not (its memory is twice as long)
    with pytest.warns(UserWarning, match="tensors have other shapes here and are not copied"):
        result = train(config(tiny_corpus, tmp_path / "student", model="spiking-lmuformer", epochs=1, max_steps=1,
                              init=str(out / "best.pt")), progress=False)
    assert result["steps"] == 1
    student = build_model("spiking-lmuformer", "tiny", num_classes=35, **SMALL)
    from streamlmu.train.trainer import _warm_start
    with pytest.warns(UserWarning, match=r"e.g. \S+ \(\d+"):
        _warm_start(student, str(out / "best.pt"), labels_for(35))
    assert torch.equal(student.convs[1].weight, teacher.convs[1].weight)
    with pytest.raises(ValueError, match="shares no tensor"):
        _warm_start(build_model("kwt", "tiny", num_classes=12), str(out / "best.pt"), labels_for(12))
    # a model with other labels gets the output rows of the labels both have, the rest stay as they were
    other = build_model("lmuformer", "tiny", num_classes=12, **SMALL)
    fresh = other.head.weight.detach().clone()
    _warm_start(other, str(out / "best.pt"), labels_for(12))
    for i, name in enumerate(labels_for(12)):
        if name in teacher.labels:
            j = teacher.labels.index(name)
            assert torch.equal(other.head.weight[i], teacher.head.weight[j])
            assert other.head.bias[i] == teacher.head.bias[j]
        else:
            assert torch.equal(other.head.weight[i], fresh[i])
    # distillation: a teacher changes the loss; one with other labels is refused
    plain = train(config(tiny_corpus, tmp_path / "plain", epochs=1), progress=False)
    taught = train(config(tiny_corpus, tmp_path / "taught", epochs=1, teacher=str(out / "best.pt"),
                          distill_weight=0.5), progress=False)
    assert taught["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    with pytest.raises(ValueError, match="the run needs the same 12 labels"):
        train(config(tiny_corpus, tmp_path / "bad", labels=12, epochs=1, teacher=str(out / "best.pt")),
              progress=False)
    with pytest.raises(ValueError, match="fbank frames .* speech-embedding frames"):
        train(config(tiny_corpus, tmp_path / "bad", features="speech-embedding", epochs=1,
                     teacher=str(out / "best.pt")), progress=False)
    with pytest.raises(ValueError, match="distill_weight must be in"):
        config(tiny_corpus, tmp_path, distill_weight=2.0)


def test_twelve_label_task_keeps_every_unknown_clip_on_request(tiny_corpus, tmp_path):
    result = train(config(tiny_corpus, tmp_path, labels=12, unknown_fraction=None, epochs=1, max_steps=1),
                   progress=False)
    assert result["steps"] == 1
    every = SpeechCommands(tiny_corpus, "training", 12, unknown_fraction=None)
    few = SpeechCommands(tiny_corpus, "training", 12)
    assert len(every) > len(few)


def test_stream_windows_are_labelled_as_a_live_spotter_should_answer(tiny_corpus):
    from streamlmu.data.streams import StreamWindows
    windows = StreamWindows(SpeechCommands(tiny_corpus, "training", 35), keywords=("yes", "no", "up"))
    assert len(windows) == len(SpeechCommands(tiny_corpus, "training", 35))
    seen = set()
    for i in range(len(windows)):
        wave, label, words = windows.window(i)
        assert torch.equal(windows[i][0], torch.from_numpy(wave)) and windows[i][1] == label
        name = windows.classes[label]
        seen.add(name)
        assert wave.shape == (32000,)
        whole = [w for w in words if w.start >= 1.0]          # words wholly inside the last second
        if name == "_silence_":
            assert not words
        elif name in ("yes", "no", "up"):
            assert [w.word for w in whole] == [name] and whole[0].end >= 1.5
        else:  # another word inside, or only the tail of an earlier one
            assert all(w.word not in ("yes", "no", "up") for w in whole) and any(w.end > 1.0 for w in words)
        assert all(w.start < 1.0 for w in words if w not in whole)   # the rest began before the window
    assert {"_silence_", "_unknown_"} <= seen and seen & {"yes", "no", "up"}
    windows.set_epoch(1)
    assert not torch.equal(windows[0][0], StreamWindows(windows.builder.dataset, ("yes", "no", "up"))[0][0])
    with pytest.raises(ValueError, match="stream_windows trains the 12- or 37-label task"):
        config(tiny_corpus, "out", stream_windows=True)


def test_hard_negatives_fill_their_share_of_the_other_word_windows(tiny_corpus):
    from streamlmu.data.streams import StreamWindows
    split = SpeechCommands(tiny_corpus, "training", 35)
    keywords = ("yes", "no", "up")
    other = sorted({rel.split("/")[0] for rel in StreamWindows(split, keywords).clips} - set(keywords))
    hard = other[0]

    def words_in_last_second(windows):
        return [w.word for i in range(len(windows)) for w in windows.window(i)[2] if w.start >= 1.0]

    plain = words_in_last_second(StreamWindows(split, keywords))
    with_hard = words_in_last_second(StreamWindows(split, keywords, hard_negatives=(hard,), hard_negative_fraction=1.0))
    assert with_hard.count(hard) > plain.count(hard)
    assert not set(with_hard) - set(keywords) - {hard}   # every other-word window now holds the hard negative
    with pytest.raises(ValueError, match="hard negatives must be words of the training split that are not keywords"):
        StreamWindows(split, keywords, hard_negatives=("yes",))
    with pytest.raises(ValueError, match="nine is not"):
        StreamWindows(split, keywords, hard_negatives=("nine",))
    with pytest.raises(ValueError, match="hard_negative_fraction and word_heads must be in"):
        StreamWindows(split, keywords, hard_negatives=(hard,), hard_negative_fraction=1.5)
    with pytest.raises(ValueError, match="they need stream_windows"):
        config(tiny_corpus, "out", labels=12, hard_negatives=(hard,))


def test_word_heads_are_other_words_cut_off_mid_word_and_unknown(tiny_corpus):
    from streamlmu.data.streams import StreamWindows
    keywords = ("yes", "no", "up")
    windows = StreamWindows(SpeechCommands(tiny_corpus, "training", 35), keywords, word_heads=1.0)
    heads = 0
    for i in range(len(windows)):
        _, label, words = windows.window(i)
        last = [w for w in words if w.end > 1.0 and w.start >= 1.0]
        if last and last[-1].word not in keywords:  # another word in the last second: cut off, not finished
            heads += 1
            cut = last[-1]
            assert cut.start < 2.0 < cut.end and windows.classes[label] == "_unknown_"
            assert 0.1 - 1e-3 <= (2.0 - cut.start) / (cut.end - cut.start) <= 0.8 + 1e-3  # times kept to 0.1 ms
        elif last:
            assert last[-1].end <= 2.0 and windows.classes[label] == last[-1].word  # keywords are whole
    assert heads
    with pytest.raises(ValueError, match="they need stream_windows"):
        config(tiny_corpus, "out", labels=12, word_heads=0.3)


def test_phrase_windows_join_the_stream_windows_of_a_12_label_run(tiny_corpus, tmp_path, monkeypatch):
    from streamlmu.data.phrases import PhraseWindows
    from streamlmu.train import trainer
    with pytest.raises(ValueError, match="they need stream_windows"):
        config(tiny_corpus, "out", labels=12, phrase_windows=8)
    with pytest.raises(ValueError, match="12-label task"):
        config(tiny_corpus, "out", labels=37, stream_windows=True, phrase_windows=8)
    served = []

    class Counted(PhraseWindows):
        def __getitem__(self, index):
            served.append(index)
            return super().__getitem__(index)

    monkeypatch.setattr(trainer, "PhraseWindows", Counted)
    result = train(config(tiny_corpus, tmp_path, labels=12, stream_windows=True, phrase_windows=8, epochs=1),
                   progress=False)
    assert len(result["history"]) == 1 and sorted(served) == list(range(8))  # each phrase window trained once


def test_stream_windows_of_a_per_window_front_end_are_one_window(tiny_corpus, tmp_path, monkeypatch):
    """An ASR-encoder frame hears the spotter's whole second and the spotter scores it alone, so its stream and
    phrase windows are that second without context: one frame from the initial state, as in streaming."""
    from streamlmu.data.phrases import PhraseWindows
    from streamlmu.data.streams import StreamWindows
    from streamlmu.train import trainer
    lengths = []

    def counted(base):
        class Counted(base):
            def __getitem__(self, index):
                item = super().__getitem__(index)
                lengths.append(len(item[0]))
                return item
        return Counted

    monkeypatch.setattr(trainer, "StreamWindows", counted(StreamWindows))
    monkeypatch.setattr(trainer, "PhraseWindows", counted(PhraseWindows))
    result = train(config(tiny_corpus, tmp_path, labels=12, stream_windows=True, phrase_windows=4, epochs=1,
                          features="asr-encoder", feature_variants=1, spec_augment=False), progress=False)
    assert len(result["history"]) == 1 and lengths and set(lengths) == {16000}


def test_37_label_stream_windows_name_every_word(tiny_corpus, tmp_path):
    from streamlmu.data.streams import StreamWindows
    windows = StreamWindows(SpeechCommands(tiny_corpus, "training", 35), keywords=("yes", "no"), labels=37)
    assert windows.classes[:35] == SpeechCommands(tiny_corpus, "training", 35).classes
    words = {rel.split("/")[0] for rel in windows.clips}
    assert {windows.classes[i] for i in windows.labels_present()} == words | {"_unknown_", "_silence_"}
    seen = set()
    for i in range(len(windows)):
        _, label, placed = windows.window(i)
        name = windows.classes[label]
        seen.add(name)
        whole = [w.word for w in placed if w.start >= 1.0]
        if name == "_unknown_":  # only the tail of a word that began before the window
            assert not whole and placed
        elif name != "_silence_":
            assert whole == [name]
    assert seen - {"yes", "no", "_unknown_", "_silence_"}   # other words have classes of their own
    with pytest.raises(ValueError, match="12 or 37 labels"):
        StreamWindows(windows.builder.dataset, labels=35)
    with pytest.raises(ValueError, match="need stream_windows"):
        config(tiny_corpus, "out", labels=37)
    with pytest.raises(ValueError, match="clips come with 35 or 12 labels"):
        SpeechCommands(tiny_corpus, "training", 37)
    result = train(config(tiny_corpus, tmp_path, labels=37, stream_windows=True, epochs=1), progress=False)
    assert len(result["history"]) == 1   # trained and validated (on the 35 words' clips) for one epoch
    assert streamlmu.load_model(tmp_path / "best.pt").labels == windows.classes


def test_streaming_evaluation_equals_offline(trained, tiny_corpus):
    out, _ = trained
    model = streamlmu.load_model(out / "best.pt")
    data = SpeechCommands(tiny_corpus, "testing")
    offline = evaluate(model, data, "offline", progress=False)
    streaming = evaluate(model, data, "streaming", progress=False)
    assert len(offline.targets) == len(data) > 0
    assert np.array_equal(offline.predictions, streaming.predictions)
    assert np.abs(offline.logits - streaming.logits).max() < 1e-4
    assert offline.confusion().sum() == len(data)
    with pytest.raises(ValueError, match="--labels 35"):
        evaluate(model, SpeechCommands(tiny_corpus, "testing", labels=12), progress=False)


def test_training_skips_and_counts_a_corrupt_file(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    rel = SpeechCommands(root, "training").items[0][0]
    (root / rel).write_bytes(b"RIFF broken")
    result = train(config(root, tmp_path / "run", epochs=1), progress=False)
    assert result["history"][0]["skipped_files"] == 1
    items = SpeechCommands(root, "training").items
    for rel, _ in items:  # whole batches unreadable: zero steps, the run goes on
        (root / rel).write_bytes(b"RIFF broken")
    result = train(config(root, tmp_path / "run2", epochs=1), progress=False)
    assert result["history"][0]["skipped_files"] == len(items)


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Speech Commands"):
        train(config(tmp_path / "nowhere", tmp_path / "run", epochs=1), progress=False)


def test_cli_train_then_evaluate(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run), "--epochs", "1", "--batch-size", "16",
                 "--no-tensorboard", "--quiet", "--threads", "1"]) == 0
    assert main(["evaluate", "--model", str(run / "best.pt"), "--data", str(tiny_corpus), "--quiet",
                 "--plot", str(tmp_path / "c.png"), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "streaming vs offline: 0 predictions differ" in out
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accuracy"]["offline"] == report["accuracy"]["streaming"]
    assert main(["evaluate", "--model", str(run / "best.pt"), "--data", str(tiny_corpus), "--modes", "fast"]) == 2


def test_evaluate_breaks_accuracy_down_by_metadata_columns(trained, tiny_corpus, tmp_path, capsys):
    out, _ = trained
    assert main(["evaluate", "--model", str(out / "best.pt"), "--data", str(tiny_corpus), "--quiet", "--modes",
                 "offline", "--by", "engine,condition", "--plot", str(tmp_path / "c.png"),
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rows = read_metadata(tiny_corpus)
    tested = [rel for rel, _ in SpeechCommands(tiny_corpus, "testing").items]
    engines = report["by"]["engine"]["offline"]
    assert sum(g["clips"] for g in engines.values()) == len(tested) == report["clips"]
    assert set(engines) == {rows[rel]["engine"] for rel in tested}
    for value, group in engines.items():
        assert group["clips"] == sum(rows[rel]["engine"] == value for rel in tested)
    correct = sum(g["correct"] for g in report["by"]["condition"]["offline"].values())
    assert correct / len(tested) == pytest.approx(report["accuracy"]["offline"])
    assert "condition" in capsys.readouterr().out
    assert (tmp_path / "c.png").is_file()
    assert main(["evaluate", "--model", str(out / "best.pt"), "--data", str(tiny_corpus), "--quiet", "--modes",
                 "offline", "--plot", ""]) == 0                      # no plot asked, none written
    assert "confusion matrix" not in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out / "best.pt"), "--data", str(tiny_corpus), "--by", "accent"]) == 2
    assert "metadata.csv has the columns path, word" in capsys.readouterr().err


def test_an_empty_split_is_a_clear_error(trained, tiny_corpus, tmp_path, capsys):
    out, _ = trained
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    (root / "testing_list.txt").write_text("")
    data = SpeechCommands(root, "testing")
    with pytest.raises(ValueError, match="testing split of .* holds no clips"):
        evaluate(streamlmu.load_model(out / "best.pt"), data, progress=False)
    assert main(["evaluate", "--model", str(out / "best.pt"), "--data", str(root), "--quiet"]) == 2
    assert "holds no clips" in capsys.readouterr().err


@pytest.mark.parametrize("kind, options, config_type, size, frame_ms, refused", [
    ("speech-embedding", {"epochs": 2}, SpeechEmbeddingConfig, 96, 80, ({"freq_warp": 0.1}, "freq_warp warps mel")),
    ("asr-encoder", {"epochs": 1, "spec_augment": False}, AsrEncoderConfig, 832, 160,
     ({}, "--no-spec-augment")),
])
def test_pretrained_front_end_trains_and_streams_exactly(tiny_corpus, tmp_path, kind, options, config_type, size,
                                                        frame_ms, refused):
    result = train(config(tiny_corpus, tmp_path, features=kind, feature_variants=1, **options), progress=False)
    assert len(result["history"]) == options["epochs"]
    model = streamlmu.load_model(tmp_path / "best.pt")
    assert isinstance(model.features, config_type) and model.config.in_features == size
    assert model.config.theta == pytest.approx(LMUFormerConfig.preset("tiny").theta * 10 / frame_ms)
    data = SpeechCommands(tiny_corpus, "testing")
    offline = evaluate(model, data, "offline", progress=False)
    streaming = evaluate(model, data, "streaming", progress=False)
    assert np.array_equal(offline.predictions, streaming.predictions)
    assert np.abs(offline.logits - streaming.logits).max() < 1e-4
    with pytest.raises(ValueError, match=refused[1]):
        TrainConfig(data="x", features=kind, **refused[0])
    with pytest.raises(ValueError, match="features must be one of"):
        TrainConfig(data="x", features="mfcc")


def test_cli_model_settings(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run), "--dim", "8", "--lookahead", "1",
                 "--epochs", "1", "--batch-size", "16", "--no-tensorboard", "--quiet", "--threads", "1"]) == 0
    config = streamlmu.load_model(run / "last.pt").config
    assert (config.dim, config.lookahead) == (8, 1)
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "fast"), "--bf16", "--cache-audio",
                 "--dim", "8", "--epochs", "1", "--batch-size", "16", "--no-tensorboard", "--quiet",
                 "--threads", "1"]) == 0
    recipe = torch.load(tmp_path / "fast" / "last.pt", weights_only=False)["training"]["config"]
    assert recipe["bf16"] is True and recipe["cache_audio"] is True
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "kwt"), "--model", "kwt",
                 "--lookahead", "1", "--quiet"]) == 2
    assert "kwt has no setting ['lookahead']" in capsys.readouterr().err


_THREAD_COUNTING_CLI = """import os, sys
from streamlmu.apps.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1] + os.environ.get("RANK", "-alone"), "w") as f:
    f.write(str(len(os.listdir("/proc/self/task"))))
sys.exit(code)
"""


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_two_process_ddp_keeps_replicas_identical(tiny_corpus, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cli = tmp_path / "cli.py"
    cli.write_text(_THREAD_COUNTING_CLI)
    args = ["train", "--data", str(tiny_corpus), "--epochs", "1", "--batch-size", "8", "--max-steps", "3",
            "--no-tensorboard", "--quiet", "--threads", "1"]
    count = str(tmp_path / "threads-left-")
    done = subprocess.run([torchrun, "--nproc_per_node=2", "--standalone", str(cli), count, *args,
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    alone = subprocess.run([sys.executable, str(cli), count, *args, "--out", str(tmp_path / "alone")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    # gloo's worker threads must be joined before Python shuts down: one that outlives the group can abort
    # the process at exit, so each rank ends with the threads of a single-process run
    left = {rank: int(Path(count + rank).read_text()) for rank in ("0", "1", "-alone")}
    assert left["0"] == left["1"] == left["-alone"], left
    report = json.loads((tmp_path / "replicas.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 3
    assert report["digests"][0] == report["digests"][1]
    torch.manual_seed(0)
    untrained = build_model("lmuformer", "tiny", num_classes=35)
    assert report["digests"][0] != parameter_digest(untrained)  # the replicas moved, together


def test_cached_frames_compute_each_rendering_once_in_batches_and_equal_single_clips():
    from streamlmu.audio.frontend import clip_features
    from streamlmu.train.frames import CachedFrames

    class Clips(torch.utils.data.Dataset):
        def __init__(self):
            self.epoch, self.reads = 0, 0

        def __len__(self):
            return 5

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            self.reads += 1
            if index == 3:
                return None
            g = torch.Generator().manual_seed(100 * self.epoch + index)
            return 0.1 * torch.randn(12000 + 2000 * (index % 2), generator=g), index

    data = Clips()
    features = SpeechEmbeddingConfig()
    cached = CachedFrames(data, features, variants=2, batch_size=4)
    first = cached[1]
    assert data.reads == 4                                   # the neighbours 0..3 came with it
    assert cached[3] is None and data.reads == 4
    single = clip_features(data[1][0][None], features)[0]
    assert first[0].shape == (features.clip_frames, features.feature_size) and first[1] == 1
    assert torch.allclose(first[0], single, atol=1e-4)
    cached.set_epoch(1)
    assert not torch.equal(cached[1][0], first[0])           # a new rendering
    cached.set_epoch(2)
    assert cached[1][0] is first[0]                          # rendering 0 again, from the cache
    with pytest.raises(ValueError, match="variants"):
        CachedFrames(data, features, variants=0)
