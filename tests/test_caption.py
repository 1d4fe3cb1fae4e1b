"""The captioner's parts: CLIP towers, concepts, modulator, fusion model, decoding, distillation, checkpoints."""
import pytest
import torch

from streamlmu.vision.caption.clip import CLIPConfig, ClipTowers, build_clip, load_clip_weights
from streamlmu.vision.caption.concepts import ChannelModulator, ConceptExtractor
from streamlmu.vision.caption.distill import attention_distillation, hidden_distillation, layer_map, token_distillation
from streamlmu.vision.caption.fusion import FusionConfig
from streamlmu.vision.caption.model import CaptionConfig, CaptionModel, load_captioner, save_captioner
from streamlmu.vision.caption.vocab import BOS, EOS, PAD, Vocabulary

TINY_CLIP = CLIPConfig(embed_dim=32, image_size=64, width=8, text_width=32, text_heads=2, text_layers=1,
                       context_length=12)
TINY_FUSION = FusionConfig(hidden=32, layers=2, attention_heads=4, intermediate=64, max_words=12,
                           prediction_heads=2, dropout=0.0)
WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "left", "of", "right", "two", "small"]
CONCEPTS = ["red", "blue", "green", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def towers():
    torch.manual_seed(0)
    return ClipTowers(build_clip(TINY_CLIP))


def _model(towers, **options):
    torch.manual_seed(1)
    config = CaptionConfig(fusion=TINY_FUSION, concepts=3, **options)
    return CaptionModel(towers, Vocabulary(WORDS), CONCEPTS, config).eval()


def test_towers_give_a_grid_and_a_unit_embedding_for_any_image_size(towers):
    images = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8)
    grid, embedding = towers.image(images)
    assert grid.shape == (2, 8 * 32, 2, 2) and towers.grid_size == (2, 2)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    same, _ = towers.image(images.float() / 255)
    assert torch.allclose(grid, same, atol=1e-4)   # uint8 and [0, 1] floats are the same image
    text = towers.text(["a red circle", "a blue square"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(1, 1, 64, 64), "convert grayscale to RGB"),
    (torch.zeros(1, 4, 64, 64), r"\(batch, 3, height, width\)"),
    (torch.zeros(3, 64, 64), r"\(batch, 3, height, width\)"),
    (torch.zeros(0, 3, 64, 64), "must not be empty"),
    (torch.zeros(1, 3, 0, 64), "must not be empty")])
def test_bad_images_are_named(towers, images, message):
    with pytest.raises(ValueError, match=message):
        towers.image(images)


def test_a_clip_checkpoint_of_another_architecture_is_refused(towers, tmp_path):
    torch.save(towers.clip.state_dict(), tmp_path / "same.pt")
    clip = build_clip(TINY_CLIP)
    load_clip_weights(clip, tmp_path / "same.pt")
    assert torch.equal(clip.visual.conv1.weight, towers.clip.visual.conv1.weight)
    other = build_clip(CLIPConfig(embed_dim=32, image_size=64, width=16, text_width=32, text_heads=2,
                                  text_layers=1, context_length=12))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="another architecture"):
        load_clip_weights(clip, tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_clip_weights(clip, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        build_clip("RN49")


def test_vocabulary_round_trips_and_names_unknown_words():
    vocab = Vocabulary.from_captions(["A red circle.", "a blue circle, left of a square"])
    assert vocab.tokens[4:7] == ("a", "circle", "blue")  # most frequent first
    ids = vocab.encode("a red circle")
    assert ids[0] == BOS and ids[-1] == EOS and vocab.decode(ids + [PAD, PAD]) == "a red circle"
    assert vocab.encode("a purple circle")[2] == vocab.index["<unk>"]
    with pytest.raises(KeyError, match="'purple' is not in the captioner's vocabulary"):
        vocab.encode("a purple circle", unknown="error")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([len(vocab)])


def test_concept_extractor_ranks_by_similarity_and_learns_from_present_concepts():
    text = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    extractor = ConceptExtractor(text, k=2)
    with torch.no_grad():
        top, logits = extractor(text[[4, 1]] * 3)
    assert top[:, 0].tolist() == [4, 1] and logits.shape == (2, 6)
    present = torch.zeros(2, 6)
    present[0, 4] = present[1, 1] = 1
    assert float(ConceptExtractor.loss(logits, present)) < float(ConceptExtractor.loss(logits, 1 - present))
    with pytest.raises(ValueError, match="k must be in"):
        ConceptExtractor(text, k=7)


def test_the_concept_head_fitted_alone_finds_the_concepts_an_embedding_encodes():
    from streamlmu.vision.caption.training import TrainConfig, fit_concepts
    torch.manual_seed(0)
    present = (torch.rand(256, 6) < 0.3).float()
    embedding = torch.nn.functional.normalize(present @ torch.randn(6, 8) + 0.1 * torch.randn(256, 8), dim=1)
    extractor = ConceptExtractor(torch.nn.functional.normalize(torch.randn(6, 8), dim=1), k=1)
    before = float(ConceptExtractor.loss(extractor(embedding)[1], present))
    after = fit_concepts(extractor, embedding, present, TrainConfig(concept_epochs=30, batch=32))
    with torch.no_grad():
        top, logits = extractor(embedding)
    assert after < before / 2 and float(ConceptExtractor.loss(logits, present)) == pytest.approx(after, rel=0.2)
    has_one = present.sum(1) > 0
    assert present.gather(1, top)[has_one].mean() > 0.9     # its first choice is present in the image
    with pytest.raises(ValueError, match="learning rates > 0"):
        TrainConfig(concept_lr=0)


def test_modulator_is_the_identity_when_its_gates_are_one():
    modulator = ChannelModulator(16, channels=10)
    grid = torch.randn(2, 10, 3, 3)
    with torch.no_grad():
        torch.nn.init.constant_(modulator.excite.bias, 50.0)   # sigmoid(50) == 1 in float32
        gates = modulator(torch.randn(2, 4, 16))
        assert gates.shape == (2, 10) and torch.equal(ChannelModulator.modulate(grid, gates), grid)
        torch.nn.init.constant_(modulator.excite.bias, -50.0)
        assert float(ChannelModulator.modulate(grid, modulator(torch.randn(2, 4, 16))).abs().max()) < 1e-10


def test_a_word_sees_the_prefix_and_earlier_words_only(towers):
    model = _model(towers)
    prefix = model.encode(torch.rand(2, 3, 64, 64))
    words = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 8, 9]])
    logits = model(prefix, words).logits
    changed = words.clone()
    changed[:, 3] = 10
    again = model(prefix, changed).logits
    assert torch.allclose(logits[:, :, :3], again[:, :, :3], atol=1e-6)
    assert not torch.allclose(logits[:, :, 3], again[:, :, 3], atol=1e-4)
    with pytest.raises(ValueError, match="word ids must be in"):
        model(prefix, torch.tensor([[BOS, 99]] * 2))


def test_beam_one_is_greedy(towers):
    model = _model(towers)
    prefix = model.encode(torch.rand(3, 3, 64, 64))
    greedy_ids, greedy_lengths = model.generate(prefix, beam=1, max_words=8)
    assert greedy_ids.shape == (3, 9) and (greedy_ids.gather(1, greedy_lengths[:, None]) == EOS).all()
    from streamlmu.vision.caption.decode import beam_search
    from streamlmu.vision.caption.fusion import FusionModel

    def next_log_probs(rows, words):
        return FusionModel.log_probs(model.fusion(prefix.concepts[rows], prefix.grid[rows], words).logits[:, :, -1])
    beam_ids, beam_lengths = beam_search(next_log_probs, 3, beam=1, max_words=8)
    assert torch.equal(beam_ids, greedy_ids) and torch.equal(beam_lengths, greedy_lengths)

    assert all(isinstance(c, str) for c in model.captions(torch.rand(2, 3, 64, 64), beam=2, max_words=5))


def test_ablations_drop_the_concepts_and_the_modulator(towers):
    plain = _model(towers, modulator=False)
    assert plain.modulator is None and plain.extractor is not None
    none = CaptionModel(towers, Vocabulary(WORDS), CONCEPTS, CaptionConfig(fusion=TINY_FUSION, concepts=0)).eval()
    prefix = none.encode(torch.rand(2, 3, 64, 64))
    assert prefix.concepts.shape == (2, 0) and none(prefix, torch.tensor([[BOS]] * 2)).logits.shape == (2, 2, 1, 16)


def test_distillation_losses_vanish_for_a_student_equal_to_its_teacher(towers):
    model = _model(towers)
    with torch.no_grad():
        out = model(model.encode(torch.rand(2, 3, 64, 64)), torch.tensor([[BOS, 4, 5], [BOS, 6, 7]]), attentions=True)
    mask = torch.ones(2, 3)
    same = token_distillation(out.logits[:1], out.logits[:1], mask)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    assert float(token_distillation(out.logits[:1], out.logits[:1] * 3, mask)) > 1e-4
    identity = torch.nn.Linear(32, 32, bias=False)
    torch.nn.init.eye_(identity.weight)
    assert float(hidden_distillation(out.hidden, out.hidden, identity).detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(attention_distillation(out.attentions, out.attentions)) == 0.0
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 3 + 4 + 3, 3 + 4 + 3)
    assert layer_map(4, 12) == [3, 6, 9, 12] and layer_map(2, 6) == [3, 6]


def test_a_captioner_checkpoint_round_trips(towers, tmp_path):
    model = _model(towers)
    save_captioner(model, tmp_path / "captioner.pt", TINY_CLIP)
    loaded = load_captioner(tmp_path / "captioner.pt")
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded.generate(loaded.encode(images))[0], model.generate(model.encode(images))[0])
    assert loaded.concept_words == model.concept_words and loaded.vocab.tokens == model.vocab.tokens
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a captioner"):
        load_captioner(tmp_path / "other.pt")


def test_beam_search_finds_the_caption_greedy_decoding_misses():
    from streamlmu.vision.caption.decode import beam_search, greedy
    x, y = 4, 5
    after = {BOS: {x: 0.6, y: 0.4}, x: {EOS: 0.35, x: 0.33, y: 0.32}, y: {EOS: 1.0}}

    def next_log_probs(rows, words):
        table = torch.full((len(rows), 6), 1e-9)
        for r, last in enumerate(words[:, -1].tolist()):
            for token, p in after.get(last, {EOS: 1.0}).items():
                table[r, token] = p
        return table.log()
    ids, lengths = greedy(next_log_probs, 1, max_words=3)
    assert ids[0, :2].tolist() == [x, EOS] and lengths.tolist() == [1]           # 0.6 x 0.35 = 0.21
    ids, lengths = beam_search(next_log_probs, 1, beam=2, max_words=3)
    assert ids[0].tolist() == [y, EOS, PAD, PAD] and lengths.tolist() == [1]      # 0.4 x 1.0
    ids, _ = beam_search(next_log_probs, 1, beam=1, max_words=3)
    assert ids[0, :2].tolist() == [x, EOS]
    chatty = torch.tensor([[-9.0, -9.0, -3.0, -9.0, -0.1, -9.0]])   # <eos> is never the likeliest word
    for ids, lengths in (greedy(lambda rows, words: chatty, 1, max_words=3),
                         beam_search(lambda rows, words: chatty.expand(len(rows), -1), 1, beam=2, max_words=3)):
        assert ids[0].tolist() == [x, x, x, EOS] and lengths.tolist() == [3]     # cut after max_words


def test_generated_scenes_are_deterministic_and_their_captions_name_their_concepts(tmp_path):
    import json

    from streamlmu.apps import cli
    from streamlmu.vision.caption.data import CaptionSet
    from streamlmu.vision.caption.scenes import concept_words
    assert cli.main(["synth-captions", "--out", str(tmp_path / "a"), "--train", "12", "--val", "3", "--test", "3",
                     "--size", "48", "--quiet"]) == 0
    cli.main(["synth-captions", "--out", str(tmp_path / "b"), "--train", "12", "--val", "3", "--test", "3",
              "--size", "48", "--quiet"])
    first, second = (json.loads((tmp_path / d / "captions.json").read_text()) for d in "ab")
    assert first == second and (tmp_path / "a" / "images" / "00000.png").read_bytes() == \
        (tmp_path / "b" / "images" / "00000.png").read_bytes()
    captions = CaptionSet.load(tmp_path / "a" / "captions.json")
    images, references = captions.split("test")
    assert images.shape == (3, 3, 48, 48) and images.dtype == torch.uint8
    assert all(len(r) == 5 and len(set(r)) == 5 for r in references)
    assert captions.concepts == concept_words()
    targets = captions.concept_targets("train")
    assert targets.shape == (12, len(concept_words())) and (targets.sum(1) >= 4).all()
    for item, row in zip(captions.of("train"), targets):
        said = " ".join(item.references)
        colours = [c for c, on in zip(captions.concepts[:8], row[:8]) if on]   # every colour shown is said
        assert colours and all(c in said for c in colours), (colours, said)
    assert cli.main(["synth-captions", "--out", str(tmp_path / "c"), "--train", "0"]) == 2


def test_a_coco_karpathy_folder_is_read_with_its_concepts_from_the_captions(tmp_path):
    import json

    from PIL import Image

    from streamlmu.vision.caption.data import CaptionSet
    (tmp_path / "val2014").mkdir()
    Image.new("L", (40, 30), 128).save(tmp_path / "val2014" / "grey.jpg")          # greyscale is read as RGB
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "val2014" / "red.jpg")
    images = [{"filepath": "val2014", "filename": "grey.jpg", "split": "restval", "cocoid": 1,
               "sentences": [{"raw": "A grey wall.", "tokens": ["a", "grey", "wall"]}]},
              {"filepath": "val2014", "filename": "red.jpg", "split": "test", "cocoid": 2,
               "sentences": [{"raw": "A red square on a wall", "tokens": []}, {"raw": "red paint", "tokens": []}]}]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    captions = CaptionSet.load(tmp_path / "dataset_coco.json")
    assert captions.concepts == ["red", "wall", "grey", "paint", "square"]       # by count, function words out
    train, references = captions.split("train", size=32)
    assert train.shape == (1, 3, 32, 32) and references == [["A grey wall."]]
    assert captions.concept_targets("test").tolist() == [[1.0, 1.0, 0.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="no 'val' images"):
        captions.split("val")
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"file": "x"}]}))
    with pytest.raises(ValueError, match="Karpathy split format"):
        CaptionSet.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="dataset_coco.json"):
        CaptionSet.load(tmp_path / "missing.json")


class _ColourTowers(ClipTowers):
    """CLIP towers whose image embedding is the frame's mean colour (centred, unit length): a known distance."""

    def image(self, images):
        grid, _ = super().image(images)
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        colour = x.mean(dim=(2, 3)) - 0.5
        embedding = torch.nn.functional.pad(colour, (0, self.clip.visual.output_dim - 3))
        return grid, torch.nn.functional.normalize(embedding, dim=-1)


def _scene(colour, frames, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(colour).view(1, 3, 1, 1).expand(frames, 3, 32, 32)
    return (base + noise * torch.randn(frames, 3, 32, 32, generator=g)).clamp(0, 1)


def _captioner(**options):
    from streamlmu.vision.caption.captioner import Captioner
    torch.manual_seed(0)
    towers = _ColourTowers(build_clip(TINY_CLIP))
    return Captioner(_model(towers), **options)


def test_the_captioner_decodes_on_a_cut_and_not_on_sensor_noise():
    captioner = _captioner(high=0.3, low=0.05, patience=2)
    frames = torch.cat([_scene((0.9, 0.1, 0.1), 6, noise=0.05), _scene((0.1, 0.2, 0.9), 6, noise=0.05, seed=1)])
    out, state = captioner(frames[None])
    assert out.decoded[0].nonzero().squeeze(1).tolist() == [0, 7]       # the first frame, then the cut + patience
    assert out.changed[0, 0] and not out.changed[0, 1:7].any()
    assert (out.tokens[0, 1:7] == out.tokens[0, 0]).all() and out.tokens.shape == (1, 12, 11)
    assert bool(state.started[0]) and int(state.above[0]) == 0


def test_the_captioner_recaptions_once_a_gradual_change_settles():
    captioner = _captioner(high=0.3, low=0.05, patience=1)
    red, blue = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.2, 0.9])
    fade = torch.stack([(red + (blue - red) * k / 8).view(3, 1, 1).expand(3, 32, 32) for k in range(9)])
    frames = torch.cat([_scene(red.tolist(), 3), fade, _scene(blue.tolist(), 4)])
    out, state = captioner(frames[None])
    decoded = out.decoded[0].nonzero().squeeze(1).tolist()
    assert decoded[0] == 0 and 3 <= decoded[1] <= 3 + 6 and len(decoded) <= 4     # noticed during the fade
    _, ends = captioner.model.towers.image(torch.cat([_scene(blue.tolist(), 1), _scene(red.tolist(), 1)]))
    distance = 1 - ends @ state.reference[0]
    assert float(distance[0]) < 0.05 < float(distance[1])     # the last caption is of the scene it settled on
    still, _ = captioner(_scene(red.tolist(), 8)[None])
    assert still.decoded[0].tolist() == [True] + [False] * 7


def test_the_captioner_names_bad_frames():
    captioner = _captioner()
    with pytest.raises(ValueError, match=r"\(batch, time, channels=3"):
        captioner(torch.zeros(1, 2, 1, 32, 32))
    with pytest.raises(ValueError, match="must not be empty"):
        captioner(torch.zeros(1, 2, 3, 0, 32))
    with pytest.raises(ValueError, match="CaptionerState of 2 streams"):
        captioner(torch.zeros(2, 1, 3, 32, 32), captioner.init_state(1))


def test_caption_train_runs_in_stages_resumes_and_captions_a_scene_video(tmp_path, capsys):
    import json

    from streamlmu.apps import cli
    data, run = tmp_path / "scenes", tmp_path / "run"
    assert cli.main(["synth-captions", "--out", str(data), "--train", "32", "--val", "8", "--test", "4", "--size", "48",
                     "--quiet"]) == 0
    train = ["caption-train", "--data", str(data / "captions.json"), "--out", str(run), "--clip-epochs", "1",
             "--teacher-epochs", "1", "--student-epochs", "1", "--concepts", "5", "--batch", "16", "--quiet",
             "--hidden-weight", "0.5", "--attention-weight", "0.5"]             # every distillation term
    assert cli.main(train[:-4] + ["--temperature", "0"]) == 2                # named, before any stage runs
    if not torch.cuda.is_available():
        assert cli.main(train[:-4] + ["--device", "cuda"]) == 2
    assert not run.exists()
    assert cli.main(train) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["parameters"] * 3 < report["teacher"]["parameters"]
    assert set(report["student"]["scores"]) == {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert report["student"]["scores"]["CIDEr-D"] >= 0 and len(report["student"]["samples"]) == 5
    stamps = {name: (run / name).stat().st_mtime_ns for name in ("clip.pt", "teacher.pt", "student.pt")}
    assert cli.main(train) == 0                                            # every stage is there: nothing retrains
    assert stamps == {name: (run / name).stat().st_mtime_ns for name in stamps}
    capsys.readouterr()
    assert cli.main(["caption", "--source", "scenes", "--model", str(run / "student.pt"), "--frames", "30",
                     "--scene-seconds", "0.4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    assert events[0]["frame"] == 0 and all({"t", "caption", "scene"} <= set(e) for e in events)
    assert lines[-1].startswith("30 frames,") and "decoder runs" in lines[-1]
    assert cli.main(["caption", "--source", str(tmp_path / "nothing"), "--model", str(run / "student.pt")]) == 2


def test_the_caption_benchmark_runs_reduced(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "bench" / "caption.py"
    done = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decoder runs without / with the trigger" in done.stdout
    table = (tmp_path / "runs" / "bench-caption-quick" / "table.md").read_text()
    for name in ("teacher", "student", "without concepts", "without modulator", "without distillation", "trigger"):
        assert f"| {name} |" in table
    assert not (tmp_path / "bench").exists()       # a reduced run publishes nothing


def test_distillation_lines_up_a_student_without_concepts_with_its_teacher(towers):
    teacher = _model(towers)
    plain = CaptionModel(towers, Vocabulary(WORDS), CONCEPTS, CaptionConfig(fusion=TINY_FUSION, concepts=0)).eval()
    images, words = torch.rand(2, 3, 64, 64), torch.tensor([[BOS, 4, 5], [BOS, 6, 7]])
    with torch.no_grad():
        taught = teacher(teacher.encode(images), words, attentions=True)
        out = plain(plain.encode(images), words, attentions=True)
    assert taught.hidden[0].shape[1] == 3 + 4 + 3 and out.hidden[0].shape[1] == 4 + 3
    identity = torch.nn.Linear(32, 32, bias=False)
    torch.nn.init.eye_(identity.weight)
    shared = [h[:, -7:] for h in taught.hidden]
    assert float(hidden_distillation(shared, taught.hidden, identity).detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(hidden_distillation(out.hidden, taught.hidden, identity).detach()) > 0
    assert float(attention_distillation(out.attentions, taught.attentions)) > 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_caption_stages_train_on_a_device_and_save_checkpoints_the_cpu_loads(tmp_path, device):
    from streamlmu.vision.caption.scenes import SceneSetConfig, write_scene_set
    from streamlmu.vision.caption.stages import CaptionStages
    from streamlmu.vision.caption.training import TrainConfig
    write_scene_set(tmp_path / "data", SceneSetConfig(16, 4, 4, size=48), progress=False)
    stages = CaptionStages(tmp_path / "run", tmp_path / "data" / "captions.json", train=TrainConfig(batch=8),
                           progress=False, device=device)
    stages.clip_stage(1)
    teacher = stages.captioner_stage("teacher", 1, 3)
    student = stages.captioner_stage("student", 1, 3, teacher=teacher)
    assert next(student.parameters()).device.type == device
    assert stages.evaluate(student, "test")["scores"]["CIDEr-D"] >= 0
    loaded = load_captioner(tmp_path / "run" / "student.pt")                # on the CPU, whatever trained it
    assert next(loaded.parameters()).device.type == "cpu"
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(images).grid, student.encode(images.to(device)).grid.cpu(), atol=1e-4)
