"""The vision wing: generated data, YOLOv8 pruning and distillation, the detector and tracker operators."""
import copy
import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamlmu.stream import load_state, save_state
from streamlmu.testing import check_stream_op
from streamlmu.vision.detect import Boxes, Detector, empty_boxes, load_detector
from streamlmu.vision.track import Tracker, clear_mot


def untrained_detector(nc: int = 5) -> torch.nn.Module:
    """A YOLOv8n with random weights and varied BatchNorm scales (so |gamma| ranks channels)."""
    from streamlmu.vision.yolo import ultralytics
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.weight.data.uniform_(0.05, 1.0)
    return model.eval()


def moving_boxes(batch: int = 2, frames: int = 12) -> Boxes:
    """Two boxes moving at constant speeds; the first is missed in frame 5."""
    x = empty_boxes(batch, frames, 5)
    for b in range(batch):
        for t in range(frames):
            n = 0
            for j, (x0, y0, v) in enumerate([(10, 10, 3), (60, 40, -2)]):
                if t == 5 and j == 0:
                    continue
                x.boxes[b, t, n] = torch.tensor([x0 + v * t + b, y0, x0 + v * t + 20 + b, y0 + 15.0])
                x.scores[b, t, n], x.classes[b, t, n] = 0.9, j
                n += 1
            x.count[b, t] = n
    return x


@pytest.fixture(scope="module")
def detection_set(tmp_path_factory):
    from streamlmu.vision.synth import DetectionSetConfig, write_detection_set
    return write_detection_set(tmp_path_factory.mktemp("det"), DetectionSetConfig(train=8, val=4, imgsz=64),
                               progress=False)


def _no_network(monkeypatch) -> list:
    """Record (and refuse) every attempt to open a network connection."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture(scope="module")
def compressed(detection_set, tmp_path_factory):
    """A reduced three-stage run: 64 px images, one epoch per training stage."""
    from streamlmu.vision.compress import CompressConfig, compress
    run = tmp_path_factory.mktemp("compress")
    monkeypatch = pytest.MonkeyPatch()
    attempts = _no_network(monkeypatch)
    try:
        report = compress(CompressConfig(data=str(detection_set), imgsz=64, batch=4, sparse_epochs=1,
                                         finetune_epochs=1, prune_mode="uniform", progress=False), run)
    finally:
        monkeypatch.undo()
    return run, report, attempts


def test_the_generated_set_is_deterministic_and_its_labels_are_valid(detection_set, tmp_path):
    from streamlmu.vision.synth import CLASSES, DetectionSetConfig, write_detection_set
    again = write_detection_set(tmp_path, DetectionSetConfig(train=8, val=4, imgsz=64), progress=False)
    root, other = detection_set.parent, again.parent
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    assert len(labels) == 8 and len(list((root / "images" / "val").glob("*.png"))) == 4
    rows = [list(map(float, line.split())) for p in labels for line in p.read_text().splitlines()]
    assert len(rows) >= 8
    for cls, cx, cy, w, h in rows:
        assert cls in range(len(CLASSES)) and 0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1
    for name in ("labels/train/00003.txt", "images/val/00001.png"):
        assert (root / name).read_bytes() == (other / name).read_bytes()
    assert "names:" in detection_set.read_text()


def test_c2f_split_computes_the_same_and_pruning_keeps_every_output_shape():
    from streamlmu.vision.prune import C2fSplit, parameter_count, prune_detector, split_c2f
    model = untrained_detector()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        whole = model(x)[0]
        split = split_c2f(copy.deepcopy(model))
        assert any(isinstance(m, C2fSplit) for m in split.modules())
        assert torch.equal(split(x)[0], whole)
    sizes = {}
    for mode in ("global", "uniform"):
        pruned = prune_detector(copy.deepcopy(model), 0.5, mode, imgsz=64)
        with torch.no_grad():
            out = pruned.eval()(x)
        assert out[0].shape == whole.shape
        sizes[mode] = parameter_count(pruned)
        assert sizes[mode] < 0.6 * parameter_count(model)
    assert sizes["global"] != sizes["uniform"]
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\)"):
        prune_detector(model, 1.5)


def test_cwd_adapters_of_a_pruned_copy_start_as_its_kept_channels():
    from streamlmu.vision.prune import detect_head, prune_detector
    from streamlmu.vision.trainer import kept_channels, neck_adapters, neck_channels
    teacher = untrained_detector()
    student = prune_detector(copy.deepcopy(teacher), 0.5, "uniform", imgsz=64)
    kept = kept_channels(student, teacher)
    assert [len(k) for k in kept] == neck_channels(student) != neck_channels(teacher)
    adapters = neck_adapters(student, teacher)
    for level, (index, adapter) in enumerate(zip(kept, adapters)):
        s_conv, t_conv = detect_head(student).cv2[level][0].conv, detect_head(teacher).cv2[level][0].conv
        assert torch.equal(s_conv.weight, t_conv.weight[:, index])  # the head reads each kept channel as before
        features = torch.randn(2, len(index), 4, 4)
        mapped = adapter(features)
        assert torch.equal(mapped[:, index], features)
        others = torch.ones(mapped.shape[1], dtype=torch.bool)
        others[index] = False
        assert not mapped[:, others].any()
    unrelated = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in unrelated.parameters():
            p.add_(torch.randn_like(p))
    assert kept_channels(unrelated, teacher) is None  # not a copy: PyTorch's initialisation
    assert neck_adapters(unrelated, teacher)[0].weight.std() > 0


def test_cwd_loss_is_zero_for_identical_maps_and_positive_otherwise():
    from streamlmu.vision.trainer import cwd_loss, sparsity_rate
    teacher = torch.randn(2, 8, 5, 7)
    assert cwd_loss(teacher, teacher.clone()).item() == 0.0
    student = torch.randn(2, 8, 5, 7, requires_grad=True)
    loss = cwd_loss(student, teacher, tau=2.0)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    assert cwd_loss(teacher + 3.0, teacher).item() == pytest.approx(0.0, abs=1e-6)  # a per-channel shift is free
    with pytest.raises(ValueError, match="one shape"):
        cwd_loss(torch.randn(2, 4, 5, 7), teacher)
    assert [sparsity_rate(0.01, e, 10) for e in (0, 5, 10)] == pytest.approx([0.01, 0.0055, 0.001])


def test_sparsity_training_drives_batchnorm_scales_down(detection_set, tmp_path):
    from streamlmu.vision.compress import CompressConfig, gammas, train_stage
    medians = {}
    for rate in (0.0, 0.05):  # four optimizer steps (one per batch), the L1 term clipped with the rest
        cfg = CompressConfig(data=str(detection_set), imgsz=64, batch=4, lr0=0.1, progress=False,
                             extra={"warmup_epochs": 0, "nbs": 4})
        best = train_stage(cfg, tmp_path / str(rate), "sparse", "yolov8n.yaml", 2, sparsity=rate)
        medians[rate] = float(np.median(gammas(load_detector(best))))
    print(medians)
    assert medians[0.05] < medians[0.0] - 0.003, medians


def test_the_three_stages_compress_offline_and_the_result_reloads(compressed, detection_set):
    run, report, attempts = compressed
    assert attempts == []
    for name in ("pruned.pt", "compressed.pt", "gamma.png", "report.md", "report.json", "sparse.json"):
        assert (run / name).is_file(), name
    assert report["pruned"]["params"] < 0.6 * report["sparse"]["params"]
    assert report["finetune"]["params"] == report["pruned"]["params"]
    assert report["pruned"]["gflops"] < report["sparse"]["gflops"]
    model = load_detector(run / "compressed.pt")
    assert next(model.parameters()).dtype == torch.float32
    # the pruned model still trains a step and validates, with CWD from the unpruned one
    from streamlmu.vision.compress import CompressConfig, train_stage, validate
    cfg = CompressConfig(data=str(detection_set), imgsz=64, batch=4, progress=False)
    best = train_stage(cfg, run / "again", "cwd", str(run / "pruned.pt"), 1,
                       teacher=load_detector(report["sparse"]["weights"]), cwd_weight=1.0)
    assert validate(best, cfg)["params"] == report["pruned"]["params"]
    # ... predicts and exports with ultralytics as any YOLOv8 (ONNX, run by onnxruntime)
    import onnxruntime
    from ultralytics import YOLO
    yolo = YOLO(str(run / "compressed.pt"))
    assert len(yolo.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False)) == 1
    exported = yolo.export(format="onnx", imgsz=64, simplify=False)
    session = onnxruntime.InferenceSession(exported)
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})
    assert out.shape == (1, 4 + 5, 84)
    # a rerun finds every stage done
    from streamlmu.vision.compress import compress
    again = compress(CompressConfig(data=str(detection_set), imgsz=64, batch=4, sparse_epochs=1, finetune_epochs=1,
                                    prune_mode="uniform", progress=False), run)
    assert again["finetune"] == report["finetune"]


def test_detector_keeps_the_contract_and_names_bad_frames(compressed):
    run, _, _ = compressed
    detector = Detector(run / "compressed.pt", conf=0.001, imgsz=64)
    frames = torch.randint(0, 256, (2, 3, 3, 48, 80), dtype=torch.uint8)
    check_stream_op(detector, frames)
    found, state = detector(frames)
    assert found.boxes.shape == (2, 3, 100, 4) and state.tolist() == [3, 3]
    assert (found.boxes[..., 2] <= 80).all() and (found.boxes[..., 3] <= 48).all()
    floats, _ = detector(frames.float() / 255)
    assert torch.allclose(floats.scores, found.scores, atol=1e-4)
    for bad, error in [(frames[:, :, :1], r"channels=3"), (frames.int(), "floating-point or uint8"),
                       (frames[:, 0], r"\(batch, time, channels=3, height, width\)"),
                       (frames[..., :0, :], "at least one pixel")]:
        with pytest.raises((ValueError, TypeError), match=error):
            detector(bad)


def test_missing_or_corrupt_weights_and_data_are_named(tmp_path):
    from streamlmu.vision.compress import CompressConfig, compress
    with pytest.raises(FileNotFoundError, match="no detector weights"):
        Detector(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a detector checkpoint"):
        Detector(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="YOLO dataset yaml"):
        compress(CompressConfig(data=str(tmp_path / "nowhere.yaml")), tmp_path / "run")
    (tmp_path / "moved.yaml").write_text(f"path: {tmp_path / 'gone'}\ntrain: images/train\nval: images/val\n"
                                         "names:\n  0: car\n")
    with pytest.raises(FileNotFoundError, match="train images .* do not exist"):
        compress(CompressConfig(data=str(tmp_path / "moved.yaml")), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_tracker_keeps_ids_through_a_missed_frame_and_resumes_exactly(tmp_path):
    tracker = Tracker(max_tracks=4)
    boxes = moving_boxes()
    check_stream_op(tracker, boxes)
    tracks, state = tracker(boxes)
    assert tracks.ids[0, :, :2].tolist() == [[1, 2]] * 5 + [[2, 0]] + [[1, 2]] * 6
    first = Boxes(*(v[:, :7] for v in boxes))
    rest = Boxes(*(v[:, 7:] for v in boxes))
    _, middle = tracker(first)
    save_state(middle, tmp_path / "tracks.pt")
    resumed, _ = tracker(rest, load_state(tmp_path / "tracks.pt"))
    assert torch.equal(resumed.ids, tracks.ids[:, 7:]) and torch.equal(resumed.boxes, tracks.boxes[:, 7:])
    restarted = tracker.reset(middle, torch.tensor([True, False]))  # stream 0 starts afresh
    again, _ = tracker(rest, restarted)
    assert again.ids[0, 0, :2].tolist() == [1, 2] and torch.equal(again.ids[1], resumed.ids[1])
    with pytest.raises(TypeError, match="Boxes a Detector gives"):
        tracker(torch.zeros(2, 3, 4))


def test_clear_mot_counts_misses_false_alarms_and_id_switches():
    truth = [[(1, (0, 0, 10, 10)), (2, (20, 20, 30, 30))]] * 3
    perfect = [[(7, (0, 0, 10, 10)), (8, (20, 20, 30, 30))]] * 3
    assert clear_mot(truth, perfect)["mota"] == 1.0
    swapped = perfect[:2] + [[(9, (0, 0, 10, 10)), (8, (20, 20, 30, 30)), (5, (50, 50, 60, 60))]]
    scores = clear_mot(truth, swapped)
    assert (scores["id_switches"], scores["false_positives"], scores["misses"]) == (1, 1, 0)
    assert scores["mota"] == pytest.approx(1 - 2 / 6)


def test_visdrone_annotations_become_yolo_labels(tmp_path):
    from PIL import Image
    from streamlmu.vision.visdrone import convert_visdrone
    split = tmp_path / "VisDrone2019-DET-val"
    (split / "images").mkdir(parents=True)
    (split / "annotations").mkdir()
    Image.new("RGB", (200, 100)).save(split / "images" / "0001.jpg")
    (split / "annotations" / "0001.txt").write_text(
        "10,20,40,10,1,4,0,0\n0,0,5,5,0,1,0,0\n50,50,10,10,1,11,0,0\n100,0,20,50,1,1,0,1,\n")
    data = convert_visdrone(tmp_path, tmp_path / "yolo", progress=False)
    lines = (tmp_path / "yolo" / "labels" / "val" / "0001.txt").read_text().splitlines()
    assert lines == ["3 0.150000 0.250000 0.200000 0.100000", "0 0.550000 0.250000 0.100000 0.500000"]
    assert "9: motor" in data.read_text() and (tmp_path / "yolo" / "images" / "val" / "0001.jpg").exists()
    (split / "annotations" / "0001.txt").write_text("10,20,40\n")
    with pytest.raises(ValueError, match="expected left,top,width,height"):
        convert_visdrone(tmp_path, tmp_path / "yolo2", progress=False)


def test_detect_app_tracks_a_generated_video(compressed, tmp_path, capsys):
    from streamlmu.apps.cli import main
    run, _, _ = compressed
    assert main(["detect", "--source", "moving", "--weights", str(run / "compressed.pt"), "--out", str(tmp_path),
                 "--track", "--frames", "6", "--png", "--imgsz", "64", "--quiet"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(6)) and all("tracks" in x for x in lines)
    assert len(list(tmp_path.glob("frame_*.png"))) == 6
    scores = json.loads((tmp_path / "tracking.json").read_text())
    assert scores["objects"] == 6 * 8 and "frames/s" in capsys.readouterr().out
    assert main(["detect", "--source", str(tmp_path / "nothing"), "--weights", str(run / "compressed.pt"),
                 "--out", str(tmp_path / "o")]) == 2


def test_the_core_imports_without_the_vision_extra():
    code = ("import sys; sys.modules['ultralytics'] = None; sys.modules['torch_pruning'] = None\n"
            "import streamlmu, streamlmu.vision.detect, streamlmu.vision.track, streamlmu.stream\n"
            "from streamlmu.vision.detect import Detector\n"
            "try:\n    Detector('x.pt')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'streamlmu[vision]'" in out


def test_video_files_and_image_folders_are_frame_sources(tmp_path):
    import cv2
    from PIL import Image
    from streamlmu.vision.frames import folder_frames, video_frames, video_rate
    video = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, (64, 48))
    for i in range(5):
        video.write(np.full((48, 64, 3), (0, 0, 40 * i), np.uint8))  # BGR: ever redder
    video.release()
    frames = list(video_frames(tmp_path / "clip.mp4"))
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and video_rate(tmp_path / "clip.mp4") == 12
    assert frames[4][..., 0].mean() > 120 > frames[4][..., 2].mean()  # RGB order
    (tmp_path / "shots").mkdir()
    Image.new("L", (30, 20), 128).save(tmp_path / "shots" / "b.png")    # grey becomes RGB
    Image.new("RGB", (30, 20), (9, 9, 9)).save(tmp_path / "shots" / "a.jpg")
    shots = list(folder_frames(tmp_path / "shots"))
    assert [f.shape for f in shots] == [(20, 30, 3)] * 2 and shots[1][0, 0].tolist() == [128, 128, 128]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        list(folder_frames(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no video"):
        list(video_frames(tmp_path / "none.mp4"))


def test_detector_then_tracker_is_one_operator():
    pipe = Detector(untrained_detector(), conf=0.001, imgsz=64) | Tracker(max_tracks=8)
    frames = torch.randint(0, 256, (2, 4, 3, 48, 64), dtype=torch.uint8)
    check_stream_op(pipe, frames)
    tracks, (frames_seen, track_state) = pipe(frames)
    assert tracks.ids.shape == (2, 4, 8) and frames_seen.tolist() == [4, 4]
    assert (tracks.ids[:, -1, 0] > 0).all() and track_state.issued.min() >= 1
