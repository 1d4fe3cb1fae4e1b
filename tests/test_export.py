"""ONNX export of a stream operator's step with explicit state (streamlmu.export)."""
import json

import numpy as np
import onnx
import pytest
import torch

from streamlmu import LMUCell, LMUMemory, Map, load_model
from streamlmu.audio.features import HopFbank
from streamlmu.export import OnnxStream, WithSpikes, to_onnx
from streamlmu.models import KWT, KWTConfig, LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.stream import tree_map
from streamlmu.testing import randomize_batchnorm


def tiny_lmuformer(spiking: bool = False):
    cfg = LMUFormerConfig.preset("tiny", spiking=spiking, in_features=20, num_classes=5)
    model = (SpikingLMUFormer if spiking else LMUFormer)(cfg)
    randomize_batchnorm(model, spiking)
    return model.eval()


OPERATORS = {
    "memory": lambda: LMUMemory(input_size=3, order=16, theta=20.0),
    "cell": lambda: LMUCell(input_size=3, hidden_size=8, order=16, theta=20.0, hidden_to_memory=True,
                            memory_to_memory=True).eval(),
    "lmuformer": tiny_lmuformer,
    "spiking-lmuformer": lambda: tiny_lmuformer(spiking=True),
    "kwt": lambda: KWT(KWTConfig.preset("tiny", in_features=20, num_classes=5, window=16)).eval(),
    "filterbank": HopFbank,
}
CLASSIFIERS = {"lmuformer", "spiking-lmuformer", "kwt"}


@pytest.mark.parametrize("name", OPERATORS)
def test_an_export_steps_like_the_operator_for_many_frames_and_any_batch(name, demo, tmp_path):
    """1,000 frames (beyond the memories' windows) for 3 streams at once, though exported with one: outputs
    within 1e-4, the same predictions, states that resume the operator. The filterbank hears the demo recording
    (its thirds as 3 streams): on white noise its faintest bins lie 80 dB below the frame, where float32
    leaves both the FFT and the export's DFT about 1e-3 from the exact log energy."""
    op = OPERATORS[name]()
    exported = OnnxStream(to_onnx(op, tmp_path / f"{name}.onnx"))
    if name == "filterbank":
        frames = torch.from_numpy(demo[0][:3 * 1000 * 160]).reshape(3, 1000, 160)
    else:
        frames = torch.randn(3, 1000, *exported.frame_shape, generator=torch.Generator().manual_seed(1))
    state, onnx_state = op.init_state(3), exported.init_state(3)
    worst = 0.0
    with torch.no_grad():
        for t in range(frames.shape[1]):
            y, state = op.step(frames[:, t], state)
            y_onnx, onnx_state = exported.step(frames[:, t], onnx_state)
            worst = max(worst, float((y - y_onnx).abs().max()))
            if name in CLASSIFIERS:
                assert torch.equal(y.argmax(-1), y_onnx.argmax(-1))
    assert worst <= 1e-4
    with torch.no_grad():  # the export's state, put back into the operator's tree, resumes the operator
        it = iter(onnx_state)
        back = tree_map(lambda _: next(it).clone(), op.init_state(3))
        y_a, _ = op.step(frames[:, 0], state)
        y_b, _ = op.step(frames[:, 0], back)
    assert float((y_a - y_b).abs().max()) <= 1e-4 * max(1.0, float(y_a.abs().max()))


def test_the_file_carries_what_a_runtime_needs(tmp_path):
    model = load_model("lmuformer-tiny-synth35")
    path = to_onnx(model, tmp_path / "kws.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["streamlmu.labels"]) == list(model.labels)
    assert json.loads(meta["streamlmu.features"])["num_mel_bins"] == 128
    assert float(meta["streamlmu.frame_rate_hz"]) == 100.0
    layout = json.loads(meta["streamlmu.state"])
    assert all(entry["name"].startswith("state_in.") for entry in layout)
    names = {i.name for i in onnx.load(str(path)).graph.input}
    assert names == {"x"} | {entry["name"] for entry in layout}
    stream = OnnxStream(path)
    assert stream.labels == list(model.labels)


def test_an_operator_onnx_cannot_express_is_refused_and_no_file_is_written(tmp_path):
    """A step that leaves torch (NumPy inside) is frozen by the tracer: the check against step catches it."""
    op = Map(lambda x: torch.from_numpy(np.tanh(x.numpy()) * 2), name="numpy_tanh")
    with pytest.raises(ValueError, match="Map 'numpy_tanh'.step disagrees with step"):
        to_onnx(op, tmp_path / "map.onnx", frame=torch.zeros(1, 4))
    pipe = LMUCell(input_size=4, hidden_size=4, order=8, theta=10.0).eval() | op | Map(torch.tanh)
    with pytest.raises(ValueError, match=r"first stage that fails alone: stage 1 \(Map 'numpy_tanh'\)"):
        to_onnx(pipe, tmp_path / "pipe.onnx")
    spectrum = Map(lambda x: torch.fft.rfft(x).abs(), name="spectrum")
    with pytest.raises(ValueError, match="Map 'spectrum'.step cannot be expressed in ONNX.*aten::fft_rfft"):
        to_onnx(spectrum, tmp_path / "fft.onnx", frame=torch.zeros(1, 4))
    assert not list(tmp_path.glob("*.onnx"))


def test_a_corrupt_or_foreign_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        OnnxStream(bad)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(foreign), dynamo=False)
    with pytest.raises(ValueError, match="without streamlmu's state layout"):
        OnnxStream(foreign)
    stream = OnnxStream(to_onnx(OPERATORS["memory"](), tmp_path / "memory.onnx"))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        stream.step(torch.zeros(1, 4), stream.init_state(1))


def test_a_spiking_export_fires_the_same_spikes_on_the_demo_recording(demo, tmp_path):
    """1,000 frames (10 s) of the demo recording through the bundled spiking model and its export with
    ``spikes=True``: logits within 1e-4 and, in every LIF layer, the identical spike train."""
    from streamlmu.audio.features import fbank
    audio, rate, _ = demo
    model = load_model("spiking-lmuformer-tiny-synth35")
    exported = OnnxStream(to_onnx(model, tmp_path / "spiking.onnx", spikes=True))
    reference = WithSpikes(model)
    assert exported.output_names == ["y.output"] + [f"y.spikes.{name}" for name, _ in reference.layers]
    frames = fbank(torch.from_numpy(audio[:rate * 11]))[None, :1000]
    state, onnx_state = reference.init_state(1), exported.init_state(1)
    fired = 0
    with torch.no_grad():
        for t in range(frames.shape[1]):
            y, state = reference.step(frames[:, t], state)
            (logits, *spikes), onnx_state = exported.step(frames[:, t], onnx_state)
            assert float((y["output"] - logits).abs().max()) <= 1e-4
            for (name, z), z_onnx in zip(y["spikes"].items(), spikes):
                assert torch.equal(z, z_onnx), f"{name} fires other spikes at frame {t}"
                fired += int(z.sum())
    assert fired > 10_000  # the neurons fire
    with pytest.raises(ValueError, match="no LIF neurons"):
        to_onnx(load_model("lmuformer-tiny-synth35"), tmp_path / "none.onnx", spikes=True)


def _docs_runtime() -> type:
    """The ``ExportedStream`` class of docs/export.md's Python block, executed as written."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/export.md", "exec"), namespace)
    return namespace["ExportedStream"]


def test_the_export_command_with_audio_takes_samples_like_the_filterbank_and_model(demo, tmp_path, capsys):
    """`streamlmu export --audio`: one file from 10 ms hops of samples to logits, equal to the model on
    StreamingFbank's frames of the recording after HopFbank's lead of silence, and run alike by the runtime of
    docs/export.md, which knows only the file; a model on another front end is refused."""
    from streamlmu.apps.cli import main
    from streamlmu.audio.features import StreamingFbank
    from streamlmu.export import FramePooled
    path = tmp_path / "audio.onnx"
    assert main(["export", "--model", "lmuformer-tiny-synth35", "--audio", "--pooling", "frame",
                 "--out", str(path)]) == 0
    stream = OnnxStream(path)
    assert stream.frame_shape == (160,)
    assert json.loads(stream.metadata["features"])["num_mel_bins"] == 128
    alone = OnnxStream(to_onnx(HopFbank(), tmp_path / "fbank.onnx")).metadata
    assert json.loads(alone["features"])["frame_shift_ms"] == 10.0 and float(alone["frame_rate_hz"]) == 100.0
    audio, _, _ = demo
    hops = torch.from_numpy(audio[:160 * 300]).reshape(1, 300, 160)
    logits, _ = stream(hops)
    lead = HopFbank().lead
    frames, _ = StreamingFbank()(torch.cat([torch.zeros(1, lead), hops.reshape(1, -1)], dim=1))
    with torch.no_grad():
        expected, _ = FramePooled(load_model("lmuformer-tiny-synth35"))(frames)
    assert float((logits - expected).abs().max()) <= 1e-4
    runtime = _docs_runtime()(str(path), streams=2)  # docs/export.md's runtime: numpy and onnxruntime only
    assert runtime.labels == list(load_model("lmuformer-tiny-synth35").labels)
    two = torch.cat([hops, hops.flip(1)]).numpy()
    outputs = np.stack([runtime.step(two[:, t])[0] for t in range(two.shape[1])], axis=1)
    assert float(np.abs(outputs[:1] - logits.numpy()).max()) <= 1e-5
    assert main(["export", "--model", "lmuformer-tiny-phrases12-kws", "--audio", "--out",
                 str(tmp_path / "embedding.onnx")]) == 2
    assert "needs a model on fbank features" in capsys.readouterr().err
    assert not (tmp_path / "embedding.onnx").exists()


def test_the_export_command_writes_a_checked_file_or_says_why_not(tmp_path, capsys):
    from streamlmu.apps.cli import main
    assert main(["export", "--model", "lmuformer-tiny-synth35", "--out", str(tmp_path / "m.onnx")]) == 0
    assert OnnxStream(tmp_path / "m.onnx").labels[0] == load_model("lmuformer-tiny-synth35").labels[0]
    assert main(["export", "--model", "kwt-tiny-synth35", "--out", str(tmp_path / "k.onnx")]) == 0
    assert main(["export", "--model", "no-such-model", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no-such-model" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_the_export_benchmark_runs_and_writes_json(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    out = tmp_path / "export.json"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "bench" / "export.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    models = ("lmuformer-tiny-synth35", "spiking-lmuformer-tiny-synth35", "filterbank")
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in models for b in (1, 64)}
    assert all(v > 0 for r in rows for v in r["us_per_stream_frame"].values())


def test_an_onnx_stream_keeps_the_stream_operator_contract(tmp_path):
    from streamlmu.testing import check_stream_op
    stream = OnnxStream(to_onnx(load_model("lmuformer-tiny-synth35"), tmp_path / "m.onnx"))
    errors = check_stream_op(stream, torch.randn(3, 40, 128, generator=torch.Generator().manual_seed(2)), atol=1e-4)
    assert max(errors.values()) <= 1e-4


def test_a_pipeline_exports_and_a_rate_changing_stage_is_refused_by_name(tmp_path):
    from streamlmu.audio.features import StreamingFbank
    pipe = LMUCell(input_size=3, hidden_size=5, order=8, theta=10.0).eval() | Map(torch.tanh)
    stream = OnnxStream(to_onnx(pipe, tmp_path / "pipe.onnx"))
    x = torch.randn(2, 3)
    y, _ = pipe.step(x, pipe.init_state(2))
    assert float((stream.step(x, stream.init_state(2))[0] - y).abs().max()) <= 1e-5
    for op in (StreamingFbank(), StreamingFbank() | load_model("lmuformer-tiny-synth35")):
        with pytest.raises(ValueError, match="StreamingFbank changes the frame rate.*export HopFbank"):
            to_onnx(op, tmp_path / "fbank.onnx")
    assert not (tmp_path / "fbank.onnx").exists()


def test_listen_runs_an_exported_spotter_with_the_same_events(tmp_path, capsys):
    """`streamlmu export --pooling frame` of the default spotter, then `listen --onnx` on the demo recording:
    the events of the model itself."""
    from streamlmu.apps.cli import main
    from streamlmu.pretrained import DEFAULT_KWS_MODEL
    path = tmp_path / "spotter.onnx"
    assert main(["export", "--model", DEFAULT_KWS_MODEL, "--out", str(path), "--pooling", "frame"]) == 0
    capsys.readouterr()
    events = []
    for extra in ([], ["--onnx", str(path)]):
        assert main(["listen", "demo", "--quiet", *extra]) == 0
        events.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert events[0] == events[1] and len(events[0]) >= 3
    with pytest.raises(ValueError, match="pooling='frame'"):
        from streamlmu.export import OnnxKeywordModel
        OnnxKeywordModel(to_onnx(load_model(DEFAULT_KWS_MODEL), tmp_path / "mean.onnx"))
