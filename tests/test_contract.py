"""Contract v2: any frame layout, rate-changing operators, pytree states and structured outputs; every
operator of the package passes ``check_stream_op``."""
import importlib
import pkgutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import streamlmu
from streamlmu.audio.detect import DetectorConfig
from streamlmu.audio.asr_encoder import AsrEncoderConfig, StreamingAsrEncoder
from streamlmu.audio.embedding import StreamingSpeechEmbedding
from streamlmu.audio.features import FbankConfig, HopFbank, StreamingFbank, StreamingLevel
from streamlmu.audio.kws_pipeline import (KeywordDetector, KeywordScores, SpeechFrames, SpeechFrontEnd,
                                          keyword_pipeline)
from streamlmu.audio.resample import Resample
from streamlmu.engine import StreamRunner
from streamlmu.export import FramePooled, OnnxStream, WithSpikes, to_onnx
from streamlmu.models import KWT, Ensemble, KWTConfig, LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.nn import LIF, CausalConv1d, Delay, LMUCell, LMUMemory
from streamlmu.stream import (IMAGES, SAMPLES, Frame, Map, Pipeline, State, StreamModule, feature_frame, tree_leaves,
                              tree_map, tree_paths)
from streamlmu.testing import check_stream_op, randomize_batchnorm


class Brightness(StreamModule):
    """Test operator on image frames with a dict state and a structured output: the running mean brightness
    of each image, and the count of images brighter than it so far."""

    input_frame = IMAGES
    output_frame = Frame((), (), "float")

    class Out(NamedTuple):
        mean: torch.Tensor      # (B, T)
        brighter: torch.Tensor  # (B, T) int64

    def init_state(self, batch_size=1, dtype=torch.float32, device=None):
        return {"sum": torch.zeros(batch_size, dtype=torch.float64, device=device),
                "count": torch.zeros(batch_size, dtype=torch.int64, device=device),
                "brighter": [torch.zeros(batch_size, dtype=torch.int64, device=device)], "unused": None}

    def forward(self, x, state=None):
        self.input_frame.check(x)
        state = self.init_state(x.shape[0], device=x.device) if state is None else state
        level = x.double().mean(dim=(2, 3, 4))                             # (B, T)
        sums = state["sum"][:, None] + level.cumsum(1)
        counts = state["count"][:, None] + torch.arange(1, x.shape[1] + 1)
        mean = sums / counts
        brighter = state["brighter"][0][:, None] + (level > mean).long().cumsum(1)
        new = {"sum": sums[:, -1] if x.shape[1] else state["sum"], "count": state["count"] + x.shape[1],
               "brighter": [brighter[:, -1] if x.shape[1] else state["brighter"][0]], "unused": None}
        return self.Out(mean.float(), brighter), new

    def step(self, x, state):
        y, state = self(x.unsqueeze(1), state)
        return tree_map(lambda t: t[:, 0], y), state


class Peaks(StreamModule):
    """Test operator with padded outputs and a count per frame: the indices of the features that rose above
    ``level`` since the frame before (at most ``most`` per frame, -1 padding)."""

    class Out(NamedTuple):
        index: torch.Tensor  # (B, T, most) int64, -1 where there is none
        count: torch.Tensor  # (B, T) int64

    def __init__(self, features: int, level: float = 0.5, most: int = 3):
        super().__init__()
        self.input_frame, self.level, self.most = feature_frame(features), level, most

    def init_state(self, batch_size=1, dtype=torch.float32, device=None):
        return torch.zeros(batch_size, self.input_frame.shape[0], dtype=dtype, device=device)

    def forward(self, x, state=None):
        self.input_frame.check(x)
        state = self.init_state(x.shape[0], x.dtype) if state is None else state
        before = torch.cat([state[:, None], x[:, :-1]], dim=1)
        rose = (x > self.level) & (before <= self.level)                       # (B, T, F)
        order = torch.argsort((~rose).to(torch.int8), dim=-1, stable=True)[..., :self.most]
        count = rose.sum(-1).clamp(max=self.most)
        index = torch.where(torch.arange(self.most) < count[..., None], order, torch.full_like(order, -1))
        return self.Out(index, count), (x[:, -1] if x.shape[1] else state)

    def step(self, x, state):
        y, state = self(x.unsqueeze(1), state)
        return tree_map(lambda t: t[:, 0], y), state


def test_padded_outputs_with_a_count_per_frame_join_along_time():
    x = torch.rand(2, 30, 6)
    check_stream_op(Peaks(6), x)
    out, _ = Peaks(6)(x)
    assert out.index.shape == (2, 30, 3) and int(out.count.max()) <= 3
    assert bool(((out.index >= 0).sum(-1) == out.count).all())


def test_trees_take_dicts_lists_and_none():
    tree = {"a": (torch.ones(2), None), "b": [torch.zeros(2, 3)]}
    doubled = tree_map(lambda t: 2 * t, tree)
    assert doubled["a"][1] is None and torch.equal(doubled["a"][0], torch.full((2,), 2.0))
    assert [p for p, _ in tree_paths(tree)] == [("a", 0), ("b", 0)]
    assert len(tree_leaves(doubled)) == 2
    with pytest.raises(TypeError, match="a tensor, None, or a tuple, NamedTuple, list or dict"):
        tree_leaves({"a": 3})


def test_image_frames_dict_state_and_structured_output():
    images = torch.randint(0, 256, (2, 7, 3, 4, 5), dtype=torch.uint8)
    op = Brightness()
    errors = check_stream_op(op, images)
    assert set(errors) >= {"step", "chunks0", "batch"}
    y, _ = op(images)
    assert y.brighter.dtype == torch.int64 and y.mean.shape == (2, 7)


def test_checks_name_the_declared_layout():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, channels=3, height, width\) "
                                         r"float\|uint8 \(got \(2, 7, 4, 5\)\)"):
        Brightness()(torch.zeros(2, 7, 4, 5))
    with pytest.raises(TypeError, match=r"must be a floating-point or uint8 tensor"):
        Brightness()(torch.zeros(2, 7, 3, 4, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, samples\)"):
        check_stream_op(StreamingFbank(), torch.zeros(2, 10, 3))
    assert feature_frame(96).layout(time=False) == "(batch, features=96)"
    assert SAMPLES.layout() == "(batch, samples)"


def test_a_filterbank_feeds_a_model_when_stepped_sample_by_sample():
    model = randomize_batchnorm(LMUFormer(LMUFormerConfig.preset("tiny")), spiking=False).eval()
    pipe = StreamingFbank() | model
    assert pipe.changes_rate and pipe.input_frame == SAMPLES and pipe.output_frame == feature_frame(35)
    assert pipe.latency_frames == 0 and pipe.latency_s == pytest.approx(0.025)
    state = pipe.init_state(2)
    audio = torch.randn(2, 720) * 0.1
    steps = []
    for t in range(audio.shape[1]):
        y, state = pipe.step(audio[:, t], state)
        steps.append(y)
    assert [y.shape[1] for y in steps].count(1) == 3  # frames complete at samples 400, 560 and 720
    whole, _ = pipe(audio)
    assert torch.allclose(torch.cat(steps, dim=1), whole, atol=1e-5)


def _examples() -> dict[type, tuple]:
    """One instance and input per operator class of the package."""
    torch.manual_seed(0)
    lmu = randomize_batchnorm(LMUFormer(LMUFormerConfig.preset("tiny")), spiking=False).eval()
    spiking = randomize_batchnorm(SpikingLMUFormer(LMUFormerConfig.preset("tiny", spiking=True)), spiking=True).eval()
    other = randomize_batchnorm(LMUFormer(LMUFormerConfig.preset("tiny", order=32)), spiking=False).eval()
    frames, audio = torch.randn(2, 20, 128), torch.randn(2, 4200) * 0.1
    lmu.features = FbankConfig()
    detector = DetectorConfig((0.3,) * 34 + (float("inf"),), smooth_frames=2, patience_frames=2, refractory_frames=3,
                              speech_gate_frames=4, warmup_frames=2)
    posteriors = torch.softmax(4 * torch.randn(2, 60, 35), dim=-1)
    return {
        LMUMemory: (LMUMemory(3, 8, 10.0), torch.randn(2, 30, 3)),
        LMUCell: (LMUCell(3, 5, order=8, theta=10.0), torch.randn(2, 30, 3)),
        CausalConv1d: (CausalConv1d(3, 4, 3, lookahead=1), torch.randn(2, 30, 3)),
        Delay: (Delay(3, 2), torch.randn(2, 30, 3)),
        LIF: (LIF(3), 2 * torch.rand(2, 30, 3)),
        Map: (Map(torch.tanh), torch.randn(2, 30, 3)),
        LMUFormer: (lmu, frames),
        SpikingLMUFormer: (spiking, frames),
        KWT: (KWT(KWTConfig.preset("tiny", window=8)).eval(), frames),
        Ensemble: (Ensemble([lmu, other]).eval(), frames),
        StreamRunner: (lmu.streaming(), frames),
        StreamingFbank: (StreamingFbank(), audio),
        StreamingLevel: (StreamingLevel(400, 160, 16000), audio),
        HopFbank: (HopFbank(), audio[:, :4000].reshape(2, 25, 160)),
        StreamingSpeechEmbedding: (StreamingSpeechEmbedding(), audio),
        StreamingAsrEncoder: (StreamingAsrEncoder(AsrEncoderConfig(window_samples=2000, hop_samples=700)), audio),
        Resample: (Resample(48000, 16000), torch.randn(2, 900)),
        SpeechFrontEnd: (SpeechFrontEnd(FbankConfig()), audio),
        KeywordScores: (KeywordScores(lmu, window_frames=5), SpeechFrames(frames, torch.randn(2, 20))),
        KeywordDetector: (KeywordDetector(detector), SpeechFrames(posteriors, torch.randn(2, 60))),
        Pipeline: (keyword_pipeline(lmu, detector, window_frames=5, sample_rate=48000), 0.1 * torch.randn(2, 6000)),
        OnnxStream: (OnnxStream(to_onnx(lmu, Path(tempfile.mkdtemp()) / "lmuformer.onnx")), frames),
        FramePooled: (FramePooled(lmu), frames),
        WithSpikes: (WithSpikes(spiking), frames),
        **_vision_examples(),
    }


def _vision_examples() -> dict[type, tuple]:
    from streamlmu.vision.backbones import SmallCNN
    from streamlmu.vision.caption.captioner import Captioner
    from streamlmu.vision.continual import Classifier, ContinualConfig, ContinualLearner, Labelled
    from streamlmu.vision.detect import Detector
    from streamlmu.vision.track import Tracker
    from test_caption import _captioner
    from test_vision import moving_boxes, untrained_detector
    images = torch.randint(0, 256, (2, 3, 3, 48, 64), dtype=torch.uint8)
    torch.manual_seed(0)
    learner = ContinualLearner(SmallCNN(4, width=4), ContinualConfig(sparsity=0.5, buffer=4, gradient_every=2),
                               (3, 8, 8), ((0, 1), (2, 3)))
    stream = Labelled(torch.rand(2, 6, 3, 8, 8), torch.tensor([[0, 1, -1, 2, 3, 2]] * 2),
                      torch.tensor([[0, 0, 0, 1, 1, 1]] * 2), torch.full((2, 6), -1))
    return {Detector: (Detector(untrained_detector(), conf=0.001, imgsz=64), images),
            Tracker: (Tracker(max_tracks=4), moving_boxes()),
            ContinualLearner: (learner, stream),  # shared_state: one training batch per time step
            Classifier: (learner.predictor(learner.init_state()), torch.rand(2, 3, 3, 8, 8)),
            Captioner: (_captioner(high=0.01, low=0.005, patience=1), torch.rand(2, 4, 3, 32, 32))}


BASES = {"LMUFormerBase", "AudioFrames"}  # shared code of the operators below, not operators


def _operator_classes() -> set[type]:
    for module in pkgutil.walk_packages(streamlmu.__path__, "streamlmu."):
        importlib.import_module(module.name)
    found, todo = set(), [StreamModule]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("streamlmu.") and sub.__name__ not in BASES:
                found.add(sub)
    return found


EXAMPLES = _examples()


def test_the_detector_example_fires():
    op, x = EXAMPLES[KeywordDetector]
    found, _ = op(x)
    assert (found.keyword >= 0).sum() >= 4 and found.frame[:, -1].tolist() == [59, 59]


def _bitwise_equal(a: State, b: State) -> bool:  # NaN (a detector's floor before any frame) equals itself
    return all(x.shape == y.shape and x.numpy().tobytes() == y.numpy().tobytes()
               for x, y in zip(tree_leaves(a), tree_leaves(b)))


def test_a_donated_keyword_state_is_updated_in_place_with_the_copied_results():
    lmu, detector = EXAMPLES[LMUFormer][0], EXAMPLES[KeywordDetector][0].config
    copied, donated = (keyword_pipeline(lmu, detector, window_frames=5, sample_rate=48000, donate_state=d)
                       for d in (False, True))
    audio = 0.1 * torch.randn(2, 9000)
    kept, given = copied.init_state(2), donated.init_state(2)
    for i, chunk in enumerate(audio.split(700, dim=1)):
        if i == 6:  # a state the pipeline did not return last: one stream restarted
            restart = torch.tensor([True, False])
            kept, given = copied.reset(kept, restart), donated.reset(given, restart)
        snapshot = tree_map(torch.clone, kept)
        found, kept_next = copied(chunk, kept)
        assert _bitwise_equal(snapshot, kept)  # copied: the given state is untouched
        ring = given[-2][1].ring
        same, given = donated(chunk, given)
        assert _bitwise_equal(found, same)
        assert given[-2][1].ring.data_ptr() == ring.data_ptr()  # donated: the window's memory is reused
        kept = kept_next
    assert _bitwise_equal(kept, given)


def test_every_operator_of_the_package_has_an_example():
    missing = {c.__module__ + "." + c.__name__ for c in _operator_classes() - set(EXAMPLES)}
    assert not missing, f"add these operators to EXAMPLES: {sorted(missing)}"


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_every_operator_keeps_the_contract(cls):
    op, x = EXAMPLES[cls]
    check_stream_op(op, x, atol=1e-4, chunkings=2)
